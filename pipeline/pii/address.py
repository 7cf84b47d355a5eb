"""Street addresses: a recognizer for postal addresses in running text (Presidio ships none).

(About 620 lines, over the ~500 of STYLE.md, on purpose: one recognizer whose parts, the street
line, its extension over units, places and postal codes, and the scoring, read the same word
lists and are tested together against the labelled sets; the word lists live in a data file.)

Usage::

    from pipeline.pii.address import address_spans

    text = "Send it to 1234 Oak Street, Apt 5, Springfield, IL 62704 today."
    [text[s:e] for s, e, score, why in address_spans(text)]
    # ['1234 Oak Street, Apt 5, Springfield, IL 62704']

An address is assembled from parts found in the text, and scored by the evidence the parts give
together (the stage reports STREET_ADDRESS at 0.5):

- a street line: a house number, one to five names and a street type ("12 Timms Drive"); a type
  before the name ("Via Leopardi 83", "29 Rue de Tanger"); a type after the name and before the
  number ("Wilhelmsens vei 83"); a type glued to the name ("Hadikgasse 49", "780 Lynnway"); a
  highway number ("250 Rt 59"); a P.O. box; a US military address (PSC/Unit ... APO/FPO/DPO);
  or, weakest, two numbers around one to three names ("5100 Quadra 104");
- what follows the line: units ("Apt. 5", "Suite 900"), places ("Springfield"), a region and a
  postal code ("IL 62704"), on the same line after commas or on the next lines, and a second
  street of a corner ("... and Kishiev Avenue");
- words before it that say an address follows ("lives at", "ship to", "Address:").

Street types (pipeline/pii/data/street_words.yaml) come in two strengths: "Street" or "strasse"
are rarely anything else, "Way" or "Union" often are, so a line built on a weak type needs more
evidence. Names must be capitalised (or the whole address lower-cased, which scores lower), and
a number after "Chapter", "Figure", "version" ... is no house number, so "Chapter 12 Street
Fighter" is not an address.

Every address holds a digit and a street, unit, box or address word (`ADDRESS_HINT`); only
windows of text around such words are looked at. Literal "\\n" escapes (JSON-ish text) count as
line breaks. An address split over lines is one span when the following lines look like address
lines (a unit, a place, a region, a postal code); a longer line, a colon or an "@" ends it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import yaml
from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult

LEXICON = Path(__file__).with_name("data") / "street_words.yaml"

# Base scores of a street line, and what each further part adds (capped at 1.0).
STRONG_LINE = 0.6      # number + names + strong type; P.O. box
TYPED_LINE = 0.55      # a strong type before the name, after it with the number last, glued to it
CAPITAL_WEAK = 0.45    # a weak prefix type, capitalised ("Via Roma 12"); a highway number
LOWER_LINE = 0.4       # a strong line in lower-cased text: no capitals to tell names apart
WEAK_LINE = 0.3        # a weak type ("12 Timms Way", "Puruntie 82")
BARE_LINE = 0.2        # number + names + number and no type ("5100 Quadra 104")
MILITARY = 0.9         # PSC 1234, Box 5678 / APO AE 12345
UNIT_BONUS = 0.3       # "Apt. 5", "Suite 900", a P.O. box
POSTAL_BONUS = 0.3     # a region and a postal code ("IL 62704", ", ON\n 82269")
PLACE_BONUS = 0.15     # a place after a comma or on a line of its own
CODE_BONUS = 0.15      # a postal code after a place or on a line of its own
NUMBER_BONUS = 0.1     # a second house number before the line ("9660 Paul-Nevermann-Platz 77")
CORNER_BONUS = 0.15    # "... and Kishiev Avenue"
CONTEXT_BONUS = 0.3    # an address word among the six words before

MAX_NAMES = 5          # words in a street name ("Via Santa Teresa degli Scalzi" has four)
MAX_PARTS = 8          # units, places, regions and codes after a street line
MAX_LINES = 5          # lines after the street line
MAX_GAP = 60           # characters between two parts (separators, bullets)
MAX_CHARS = 300        # an address span is never longer
WINDOW_BEFORE, WINDOW_AFTER = 160, 320   # text looked at around each hint


@functools.lru_cache(maxsize=1)
def lexicon() -> dict[str, frozenset[str]]:
    """The word lists of street_words.yaml, lower-cased, without trailing dots; "dotted" holds
    the abbreviations that count only when written with their dot ("ul.", "al.")."""
    raw = yaml.safe_load(LEXICON.read_text(encoding="utf-8"))
    out = {k: frozenset(str(w).lower().rstrip(".") for w in v) for k, v in raw.items()}
    out["dotted"] = frozenset(str(w).lower().rstrip(".") for v in raw.values() for w in v if str(w).endswith("."))
    for kind in ("after", "foreign", "prefix", "compound"):
        out[f"{kind}_weak"] = out[f"{kind}_weak"] - out[f"{kind}_strong"]   # strong wins
        out[kind] = out[f"{kind}_strong"] | out[f"{kind}_weak"]
    out["hint"] = (out["after"] | out["foreign"] | out["prefix"] | out["units"] | out["highway"]
                   | out["context"] | {"box", "postbox", "apo", "fpo", "dpo"})
    return out


@functools.lru_cache(maxsize=1)
def _glued() -> tuple[re.Pattern, tuple[str, ...]]:
    """Glued street types: a pattern that splits a word into a name and its type, and the types."""
    types = tuple(sorted(lexicon()["compound"], key=len, reverse=True))
    return re.compile(r"[^\W\d_]{3,}?(" + "|".join(re.escape(w) for w in types) + ")"), types


_LETTERS = re.compile(r"[^\W\d_]+")


def address_hints(text: str) -> list[int]:
    """Offsets of the words an address needs one of: a street, unit, box or address word, or a
    word with a glued street type; none when the text has no digit (every address has one)."""
    if not any(ch.isdigit() for ch in text):
        return []
    lx = lexicon()
    hint, glued = lx["hint"], _glued()[1]
    return [m.start() for m in _LETTERS.finditer(text.lower())
            if m.group() in hint or (len(m.group()) > 5 and m.group().endswith(glued))]


def address_hint(text: str) -> bool:
    """False when the text cannot hold an address (see `address_hints`): the engine's prefilter."""
    return bool(address_hints(text))


# Tokens: a line break, a number (12, 12B, 66-4, 184th), a word (inner apostrophes, hyphens and
# dots: P.O., Paul-Nevermann-Platz; a dot after an abbreviation of up to four letters: St., u.),
# an identifier or code mixing letters, digits and underscores (constr0, OS_WIN32, 0x1F), or one
# other character.
_TOKEN = re.compile(r"(\n)|(\d+(?:[A-Za-z]{1,2})?(?:[-/]\d+[A-Za-z]?)?(?!\w))"
                    r"|([^\W\d_]+(?:['’\-.][^\W\d_]+)*(?:(?<![^\W\d_]{5})\.)?(?!\w))|(\w+)|([^\s\w])")
NL, NUM, WORD, IDENT, PUNCT = 1, 2, 3, 4, 5
_ESCAPE = re.compile(r"\\[ntr]")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)$", re.IGNORECASE)

FUNCTION_WORDS = frozenset("""a an the and or but of in on at to for from by with as is was are were be been
this that these those it its he she we they you i my our your his her their if then than so not no
into onto over under after before about between while when where which who whom what why how all any
each every some such one two three four five six seven eight nine ten per via""".split())
# Lower-case words inside street and place names ("Rue de la Paix", "Ústí nad Labem").
PARTICLES = frozenset("""de da do dos das del della delle dei degli di du des la le les van von der den
het ter te à al el y e i nad pod na am an im auf bei zum zur z ze v u pri dalla dello alla ai sul
sulla""".split())
# Elided articles that start a capitalised name ("Avenue d'Ouchy", "Rue l'Abbé").
_ELISION = re.compile(r"[dlDL]['’][^\W\d_]")
# A number after one of these is no house number ("Chapter 12 Street Fighter", "Figure 3 Road map").
NOT_HOUSE_BEFORE = frozenset("""chapter section sec page p pp figure fig table tab version v ver step
part volume vol episode ep season level lvl grade class item line lines issue pr rfc no nr number
hours hour minutes minute seconds days weeks months years year top""".split())
DIRECTIONS = frozenset("n s e w ne nw se sw north south east west".split())
# Capitalised words that open a line after an address but are no place: greetings, sign-offs.
NOT_PLACES = frozenset("""thanks thank regards sincerely best cheers yours dear hi hello kind warm many
phone tel fax mobile email e-mail web website note please""".split())

_MILITARY = re.compile(
    r"(?:(?:PSC|CMR|Unit)[ ]\d{1,5},?[ ]Box[ ]\d{1,5}|(?:USNS|USS|USCGC|USNV|USAV)[ ][^\W\d_](?:[^\W\d_]|['’.\- ]){0,40}?)"
    r"[ ]*\n[^\w\n]*(?:APO|FPO|DPO)[ ](?:AA|AE|AP)[ ]\d{5}(?:-\d{4})?")
_PO_BOX = re.compile(r"(?<![^\W\d_])(?:P\.?[ ]?O\.?|Post[ ]Office|Postal)[ ]?Box[ ]#?\d{1,7}(?!\w)"
                     r"|(?<![^\W\d_])Postbox[ ]\d{1,7}(?!\w)", re.IGNORECASE)
# US ZIP (+4), other 4-6 digit codes, Swedish/Czech "920 25", Canadian and British codes.
_POSTAL = re.compile(r"\d{4,6}(?:-\d{3,4})?|\d{3}[ ]\d{2}|[A-Z]\d[A-Z][ ]?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?[ ]\d[A-Z]{2}")


@dataclass
class _Line:
    """A candidate address as token indices (inclusive), its score and its reasons."""

    first: int
    last: int
    score: float
    why: list = field(default_factory=list)

    def add(self, part: str, bonus: float) -> None:
        if part not in self.why:
            self.score += bonus
        self.why.append(part)


def _view(text: str) -> str:
    """The text with literal "\\n" escapes read as a space and a line break (same length)."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: " \n" if m.group()[1] in "nr" else "  ", text)


def address_spans(text: str) -> list[tuple[int, int, float, str]]:
    """(start, end, score, reasons) of the street addresses in a text, in order, not overlapping."""
    hints = address_hints(text) if text else []
    if not hints:
        return []
    view = _view(text)
    spans = []
    for a, b in _windows(view, hints):
        spans += [(s + a, e + a, score, why) for s, e, score, why in _Finder(view[a:b]).find()]
    return _merge(spans)


def _windows(view: str, hints: list[int]) -> list[tuple[int, int]]:
    """Disjoint stretches of text around the hints, cut at white space."""
    out: list[list[int]] = []
    for h in hints:
        a, b = max(0, h - WINDOW_BEFORE), min(len(view), h + WINDOW_AFTER)
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    cut = []
    for a, b in out:
        if a > 0:
            sp = max(view.rfind(" ", 0, a), view.rfind("\n", 0, a))
            a = sp + 1
        if b < len(view):
            sp = [x for x in (view.find(" ", b), view.find("\n", b)) if x >= 0]
            b = min(sp) if sp else len(view)
        if cut and a <= cut[-1][1]:
            cut[-1] = (cut[-1][0], max(cut[-1][1], b))
        else:
            cut.append((a, b))
    return cut


def _merge(spans: list[tuple[int, int, float, str]]) -> list[tuple[int, int, float, str]]:
    """Overlapping candidates become one span with the best score and its reasons."""
    out: list[list] = []
    for s, e, score, why in sorted(spans):
        e = min(e, s + MAX_CHARS)
        if out and s < out[-1][1]:
            last = out[-1]
            last[1] = max(last[1], e)
            if score > last[2]:
                last[2], last[3] = score, why
        else:
            out.append([s, e, score, why])
    return [(s, e, round(min(1.0, score), 4), why) for s, e, score, why in out]


class _Finder:
    """One window of text: street lines and boxes, grown over the parts after them, scored."""

    def __init__(self, view: str):
        self.view = view
        self.lx = lexicon()
        kind, start, end, text = [], [], [], []
        for m in _TOKEN.finditer(view):
            kind.append(m.lastindex)
            start.append(m.start())
            end.append(m.end())
            text.append(m.group())
        self.kind, self.start, self.end, self.text = kind, start, end, text
        self.low = [t.lower().rstrip(".") for t in text]
        self.n = len(kind)
        # a window with no capital at all: names cannot be told by their capitals
        self.lower_text = view == view.lower()

    # -- token tests -----------------------------------------------------------------------

    def word(self, i: int) -> bool:
        return 0 <= i < self.n and self.kind[i] == WORD

    def punct(self, i: int, chars: str) -> bool:
        return 0 <= i < self.n and self.kind[i] == PUNCT and self.text[i] in chars

    def typed(self, i: int, kind: str) -> bool:
        """Token i is a word of the lexicon list `kind`, with its dot if the word needs one."""
        low = self.low[i]
        return low in self.lx[kind] and (low not in self.lx["dotted"] or self.text[i].endswith("."))

    def adjacent(self, a: int, b: int) -> bool:
        """Tokens a < b on one line with spaces, and only spaces, between them."""
        if not 0 <= a < b < self.n:
            return False
        gap = self.view[self.end[a]:self.start[b]]
        return gap != "" and not gap.strip(" \t")

    def house_number(self, i: int) -> bool:
        """A number that may be a house number: not an amount, a decimal, a time, a ratio, a
        percentage, and not after "Chapter", "version" and the like."""
        if not (0 <= i < self.n and self.kind[i] == NUM) or _ORDINAL.match(self.text[i]):
            return False
        s, e = self.start[i], self.end[i]
        prev, after = self.view[s - 1] if s else " ", self.view[e:e + 2]
        if prev in "$€£¥/:+-=#.,":
            return False
        if after[:1] in ("%", ":", "/", "€", "$") or (after[:1] in ".," and after[1:2].isdigit()):
            return False
        if len(re.split(r"[-/]", self.text[i])[0]) > 6:
            return False
        return not (self.word(i - 1) and self.adjacent(i - 1, i) and self.low[i - 1] in NOT_HOUSE_BEFORE)

    def name(self, i: int, lower: bool) -> bool:
        """A token of a street or place name: a capitalised word, a particle, an ordinal (184th),
        or any word when the address is written in lower case."""
        if 0 <= i < self.n and self.kind[i] == NUM:
            return bool(_ORDINAL.match(self.text[i]))
        if not self.word(i):
            return False
        w, low = self.text[i], self.low[i]
        if low in PARTICLES:
            return True
        if low in FUNCTION_WORDS or low in self.lx["units"]:
            return False
        return w[0].isupper() or (lower and w.islower()) or (_ELISION.match(w) is not None and w[2].isupper())

    def names_before_mixed(self, i: int) -> int:
        """Like `names_before`, with lower-case words inside the name ("Árpád fejedelem útja",
        "Boriñaur enparantza") as long as the name starts with a capital."""
        j = self.names_before(i, True)
        while j < i and not (self.text[j][0].isupper() or self.lower_text):
            j += 1
        return j

    def names_before(self, i: int, lower: bool) -> int:
        """Index of the first of the name tokens that end right before token i (i if none)."""
        j = i
        while j - 1 >= 0 and i - j < MAX_NAMES and self.adjacent(j - 1, j) and self.name(j - 1, lower):
            j -= 1
        return j

    def names_after(self, i: int, lower: bool, most: int = MAX_NAMES) -> int:
        """Index one past the name tokens that start at token i (i if none)."""
        j = i
        while j < self.n and j - i < most and (j == i or self.adjacent(j - 1, j)) and self.name(j, lower):
            j += 1
        return j

    def lower_case(self, a: int, b: int) -> bool:
        return all(self.text[k].islower() for k in range(a, b + 1) if self.kind[k] == WORD)

    # -- street lines ----------------------------------------------------------------------

    def lines(self) -> list[_Line]:
        lx, out = self.lx, []
        glued, _ = _glued()
        for i in range(self.n):
            if self.kind[i] == NUM:
                out += self._numbered(i)
                continue
            if self.kind[i] != WORD:
                continue
            low, lower = self.low[i], self.text[i].islower() and self.lower_text
            if low not in lx["hint"] and not (len(low) > 5 and low.endswith(_glued()[1])):
                continue
            if self.typed(i, "after"):
                # number + names + type ("12 Timms Drive", "1470 S Washington St N")
                j = self.names_before(i, lower)
                if j < i and self.house_number(j - 1) and self.adjacent(j - 1, j):
                    strong = low in lx["after_strong"]
                    score = (LOWER_LINE if self.lower_case(j, i) else STRONG_LINE) if strong else WEAK_LINE
                    last = i + 1 if (self.word(i + 1) and self.low[i + 1] in DIRECTIONS and self.adjacent(i, i + 1)
                                     and self.text[i + 1][0].isupper()) else i
                    out.append(_Line(j - 1, last, score, ["street type" if strong else "weak street type"]))
            if self.typed(i, "foreign") and self.house_number(i + 1) and self.adjacent(i, i + 1):
                # names + type + number ("Wilhelmsens vei 83", "Victor Hugo u. 49")
                j = self.names_before_mixed(i)
                if j < i:
                    strong = low in lx["foreign_strong"]
                    out.append(_Line(j, i + 1, TYPED_LINE if strong else WEAK_LINE,
                                     ["street type" if strong else "weak street type"]))
            if self.typed(i, "prefix"):
                # type + names + number ("Via Leopardi 83"), number + type + names ("29 Rue de Tanger")
                j = self.names_after(i + 1, lower or self.typed(i, "prefix_strong"))
                if j > i + 1:
                    before = self.house_number(i - 1) and self.adjacent(i - 1, i)
                    after = self.house_number(j) and self.adjacent(j - 1, j)
                    if before or after:
                        if low in lx["prefix_strong"]:
                            score = LOWER_LINE if self.lower_case(i + 1, j - 1) else TYPED_LINE
                        else:
                            score = CAPITAL_WEAK if self.text[i][0].isupper() else WEAK_LINE
                        line = _Line(i - 1 if before else i, j if after else j - 1, score,
                                     ["street type" if score >= CAPITAL_WEAK else "weak street type"])
                        if before and after:
                            line.add("second number", NUMBER_BONUS)
                        out.append(line)
            m = glued.fullmatch(low)
            if m is not None and self.house_number(i + 1) and self.adjacent(i, i + 1):
                # a type glued to the name, number after ("Hadikgasse 49", "Hugo de Grootlaan 177")
                strong = m.group(1) in lx["compound_strong"]
                j = self.names_before(i, False) if self.text[i][0].isupper() else i
                out.append(_Line(max(j, i - 2), i + 1, TYPED_LINE if strong else WEAK_LINE,
                                 ["street type" if strong else "weak street type"]))
        return out

    def _numbered(self, i: int) -> list[_Line]:
        """Lines that start with a house number and have no separate type word after the names:
        "780 Lynnway", "250 Rt 59", "5100 Quadra 104"."""
        if not self.house_number(i) or not self.adjacent(i, i + 1):
            return []
        out = []
        k = i + 1
        if self.word(k) and self.low[k] in self.lx["highway"] and self.house_number(k + 1) and self.adjacent(k, k + 1):
            last = k + 1
            if self.word(k + 2) and self.low[k + 2] in DIRECTIONS and self.adjacent(k + 1, k + 2):
                last = k + 2
            out.append(_Line(i, last, CAPITAL_WEAK, ["highway number"]))
        j = self.names_after(k, self.text[k].islower() if self.word(k) else False, most=3)
        if j == k:
            return out
        m = _glued()[0].fullmatch(self.low[j - 1])
        if m is not None and self.low[j - 1] not in self.lx["after"]:
            strong = m.group(1) in self.lx["compound_strong"]
            out.append(_Line(i, j - 1, TYPED_LINE if strong else WEAK_LINE,
                             ["street type" if strong else "weak street type"]))
        # no type at all: the names must look like names (a lower-case letter, three letters or more)
        proper = any(self.kind[x] == WORD and len(self.text[x]) >= 3 and not self.text[x].isupper() for x in range(k, j))
        if proper and self.house_number(j) and self.adjacent(j - 1, j):
            out.append(_Line(i, j, BARE_LINE, ["two numbers around names"]))
        return out

    def boxes(self) -> list[_Line]:
        out = []
        for pattern, score, why in ((_MILITARY, MILITARY, "military address"), (_PO_BOX, STRONG_LINE, "P.O. box")):
            for m in pattern.finditer(self.view):
                first = next(k for k in range(self.n) if self.end[k] > m.start())
                last = max(k for k in range(self.n) if self.start[k] < m.end())
                out.append(_Line(first, last, score, [why]))
        return out

    # -- the parts after a line --------------------------------------------------------------

    def skip_separators(self, k: int) -> tuple[int, bool, bool]:
        """The next token after commas, line breaks and line-start bullets, and whether a line
        break or a comma was crossed."""
        nl = comma = False
        while k < self.n:
            if self.kind[k] == NL:
                nl = True
            elif self.punct(k, ","):
                comma = True
            elif not (self.kind[k] == PUNCT and nl and self.text[k] not in "#(@:"):
                break       # bullets and quote marks at the start of a line are skipped
            k += 1
        return k, nl, comma

    def unit(self, k: int) -> int | None:
        """Last token of a unit at k ("Apt. 5", "Suite 900", "# 12", "apt 4B"), or None."""
        if self.punct(k, "#"):
            glued = k + 1 < self.n and self.end[k] == self.start[k + 1]
            return k + 1 if k + 1 < self.n and self.kind[k + 1] == NUM and (glued or self.adjacent(k, k + 1)) else None
        if not self.word(k) or self.low[k] not in self.lx["units"]:
            return None
        j = k + 1 + self.punct(k + 1, "#")
        if j < self.n and (self.adjacent(k, j) or j == k + 2 and self.end[k + 1] == self.start[j]) and (self.kind[j] == NUM or (self.kind[j] == WORD and len(self.text[j]) <= 2
                                                           and self.text[j].isupper())):
            return j
        return None

    def box(self, k: int) -> int | None:
        m = _PO_BOX.match(self.view, self.start[k]) if k < self.n else None
        if m is None:
            return None
        j = k
        while j + 1 < self.n and self.start[j + 1] < m.end():
            j += 1
        return j

    def postal(self, k: int) -> int | None:
        """Last token of a postal code at k, or None."""
        if k >= self.n or self.kind[k] not in (NUM, WORD, IDENT):
            return None
        m = _POSTAL.match(self.view, self.start[k])
        if m is None or (m.end() < len(self.view) and self.view[m.end()].isalnum()):
            return None
        if re.match(r"[ \t]*[-.(]?[ \t]*\d", self.view[m.end():m.end() + 4]):
            return None     # more digit groups follow: a phone number ("07700 900123"), not a postal code
        j = k
        while j + 1 < self.n and self.start[j + 1] < m.end():
            j += 1
        return j if self.end[j] == m.end() else None

    def region(self, k: int) -> bool:
        """A region code: two or three capitals ("IL", "ON", "WBR")."""
        return self.word(k) and 2 <= len(self.text[k]) <= 3 and self.text[k].isupper()

    def place(self, k: int, lower: bool) -> int | None:
        """Last token of a place name of up to four words at k ("North Oxford", "Ústí nad
        Labem", "Cyprus (Greek)" stops at the parenthesis), or None."""
        j = k
        while j < self.n and j - k < 4 and (j == k or self.adjacent(j - 1, j)) and self.word(j):
            w, low = self.text[j], self.low[j]
            if low in self.lx["units"] or low in NOT_PLACES or (low in FUNCTION_WORDS and not (j > k and low in ("and", "of"))):
                break
            if j > k and self.region(j) and self.postal(j + 1) is not None and self.adjacent(j, j + 1):
                break       # "North Attleboro MA 02760": the region starts the next part
            if not (w[0].isupper() or (j > k and low in PARTICLES) or (lower and w.islower())):
                break
            j += 1
        while j > k and self.low[j - 1] in PARTICLES | {"and", "of"}:
            j -= 1
        return j - 1 if j > k else None

    def ends_part(self, k: int) -> bool:
        """The token after a part: the end, a line break, a comma, a sentence mark or a bracket."""
        return k >= self.n or self.kind[k] == NL or self.punct(k, ",.;!?()")

    def corner(self, k: int, lower: bool) -> int | None:
        """Last token of "and Kishiev Avenue" / "& 5th St" at k, or None."""
        if not (self.word(k) and self.low[k] == "and" or self.punct(k, "&")):
            return None
        j = self.names_after(k + 1, lower)
        if j > k + 1 and self.low[j - 1] in self.lx["after"] and j - 1 > k + 1:
            return j - 1
        if j > k + 1 and self.word(j) and self.low[j] in self.lx["after"] and self.adjacent(j - 1, j):
            return j
        return None

    def extend(self, c: _Line) -> None:
        """Grow a line forward over units, boxes, places, regions, postal codes and a corner."""
        lower = self.lower_case(c.first, c.last)
        k, lines, parts, after_unit = c.last + 1, 0, 0, False
        while k < self.n and parts < MAX_PARTS:
            prev_end = self.end[c.last]
            if self.punct(k, ".") and self.kind[c.last] == NUM and self.start[k] == prev_end and (
                    k + 1 >= self.n or self.kind[k + 1] == NL or self.unit(k + 1) is not None):
                k += 1      # "Erzsébet tér 19.", "Victor Hugo u. 49. Suite 638"
            k, nl, comma = self.skip_separators(k)
            if k >= self.n or self.start[k] - prev_end > MAX_GAP:
                break
            if nl:
                lines += 1
                if lines > MAX_LINES or self.view.count("\n", prev_end, self.start[k]) > 2:
                    break
            last = self.unit(k)
            if last is None:
                last = self.box(k)
            if last is not None:
                c.last, k, parts, after_unit = last, last + 1, parts + 1, True
                c.add("unit", UNIT_BONUS)
                continue
            if not nl and not comma:
                last = self.corner(k, lower)
                if last is not None:
                    c.last, k, parts = last, last + 1, parts + 1
                    c.add("corner", CORNER_BONUS)
                    continue
            if self.region(k):
                n2, nl2, comma2 = self.skip_separators(k + 1)
                code = self.postal(n2) if (n2 == k + 1 or not comma2) else None
                if code is not None and (nl or comma or after_unit or "place" in c.why or n2 == k + 1):
                    c.last, k, parts = code, code + 1, parts + 1
                    c.add("postal", POSTAL_BONUS)
                    continue
                if (nl or comma) and self.ends_part(k + 1):
                    c.last, k, parts = k, k + 1, parts + 1
                    continue
            code = self.postal(k)
            if code is not None and (nl or comma or after_unit or "place" in c.why):
                if self.ends_part(code + 1):
                    c.last, k, parts = code, code + 1, parts + 1
                    c.add("code", CODE_BONUS)
                    continue
                # a postal code before the place ("10115 Berlin", "75002 Paris", "110 00 Praha 1")
                place = self.place(code + 1, lower) if self.adjacent(code, code + 1) else None
                if place is not None and (self.ends_part(place + 1) or self.postal(place + 1) is not None):
                    last = place + 1 if self.postal(place + 1) is not None and self.adjacent(place, place + 1) else place
                    c.last, k, parts = last, last + 1, parts + 1
                    c.add("postal", POSTAL_BONUS)
                    continue
            place = self.place(k, lower)
            if place is None:
                break
            nxt = place + 1
            followed = self.region(nxt) or self.postal(nxt) is not None
            caps = all(self.text[x].isupper() for x in range(k, nxt) if len(self.text[x]) > 1)
            if not ((nl or comma or after_unit or caps) and (self.ends_part(nxt) or followed)):
                break
            if nl and self.punct(nxt, "!?"):
                break       # a line of its own that ends a sentence ("Thanks!") is no place
            c.last, k, parts = place, nxt, parts + 1
            c.add("place", PLACE_BONUS)

    def extend_back(self, c: _Line) -> None:
        """Take in a house number or a unit right before the line ("9660 Paul-Nevermann-Platz 77",
        "Suite 541 6343 Skogstien 106")."""
        j = c.first - 1
        if self.house_number(j) and self.adjacent(j, c.first):
            c.first = j
            c.add("second number", NUMBER_BONUS)
        j = c.first - 1
        if 0 <= j and self.kind[j] == NUM and self.adjacent(j, c.first):
            k = j - 1 - self.punct(j - 1, "#")
            if self.word(k) and self.low[k] in self.lx["units"] and self.text[k][0].isupper() and self.adjacent(k, k + 1):
                c.first = k
                c.add("unit", UNIT_BONUS)

    def context(self, c: _Line) -> None:
        start = self.start[c.first]
        before = _LETTERS.findall(self.view[max(0, start - 60):start].lower())[-6:]
        words = self.lx["context"]
        if any(w in words or (len(w) > 4 and w.rstrip("s") in words) or w.endswith("address") for w in before):
            c.add("address word nearby", CONTEXT_BONUS)

    def find(self) -> list[tuple[int, int, float, str]]:
        out = []
        for c in self.lines() + self.boxes():
            self.extend_back(c)
            self.extend(c)
            self.context(c)
            out.append((self.start[c.first], self.end[c.last], c.score, ", ".join(dict.fromkeys(c.why))))
        return out


class StreetAddressRecognizer(LocalRecognizer):
    """Street addresses: street lines (number, names, street type), units, places and postal
    codes, P.O. boxes and US military addresses, scored by the evidence they give together."""

    replaces: tuple[str, ...] = ()

    def __init__(self, supported_language: str = "en", supported_entity: str = "STREET_ADDRESS",
                 name: str = "StreetAddressRecognizer"):
        super().__init__(supported_entities=[supported_entity], name=name,
                         supported_language=supported_language, context=sorted(lexicon()["context"]))

    def load(self) -> None:
        """Read the word lists now, not at the first address."""
        _glued()

    def analyze(self, text: str, entities: List[str], nlp_artifacts=None) -> List[RecognizerResult]:
        """A result per address; context words are scored here, so results are marked enhanced."""
        if self.supported_entities[0] not in entities:
            return []
        out = []
        for s, e, score, why in address_spans(text):
            out.append(RecognizerResult(
                entity_type=self.supported_entities[0], start=s, end=e, score=score,
                analysis_explanation=AnalysisExplanation(recognizer=self.name, original_score=score,
                                                         textual_explanation=why),
                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                                      RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True}))
        return out
