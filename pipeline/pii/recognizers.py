"""Our own Presidio recognizers for types where Presidio's defaults miss too much.

Usage::

    from pipeline.pii.recognizers import builtin_recognizers

    for rec in builtin_recognizers("en"):
        for name in rec.replaces:           # the Presidio recognizers ours stands in for
            registry.remove_recognizer(name)
        registry.add_recognizer(rec)

- `HygieneCreditCardRecognizer` replaces Presidio's `CreditCardRecognizer`: every IIN range of
  the major schemes (Presidio's regex misses Mastercard 2221-2720, 19-digit Visa, 12-digit
  Maestro), each with its own lengths, and a Luhn check; a valid number scores 1.0, except an
  ungrouped run of a length the scheme rarely uses with no card word nearby (0.3: in code such
  runs are mostly seeds and 64-bit ids).
- `HygienePhoneRecognizer` replaces Presidio's `PhoneRecognizer` (phonenumbers' matcher over
  eight regions, which misses most national formats): it finds runs of digit groups, rejects
  what is shaped like something else (dates, versions, IP addresses, card numbers, SSNs, ranges,
  lists of years) and scores the rest by how phone-like the shape is; words such as "phone" or
  "fax" next to the number raise the score. Weak shapes (a bare digit run, space-separated
  groups) stay under the 0.4 threshold unless such a word is near.
- `StreetAddressRecognizer` (pipeline/pii/address.py) adds STREET_ADDRESS, which Presidio has no
  recognizer for: street lines, units, places and postal codes, P.O. boxes, military addresses.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional

from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult

log = logging.getLogger(__name__)

# -- credit cards ----------------------------------------------------------------------------

# (scheme, lowest IIN, highest IIN, card lengths); IINs compared on as many leading digits as
# the bounds have. Sources: the schemes' published IIN ranges (ISO/IEC 7812 registrations).
CARD_SCHEMES: tuple[tuple[str, str, str, tuple[int, ...]], ...] = (
    ("visa", "4", "4", (13, 16, 19)),
    ("mastercard", "51", "55", (16,)),
    ("mastercard", "2221", "2720", (16,)),
    ("amex", "34", "34", (15,)),
    ("amex", "37", "37", (15,)),
    ("discover", "6011", "6011", (16, 17, 18, 19)),
    ("discover", "644", "649", (16, 17, 18, 19)),
    ("discover", "65", "65", (16, 17, 18, 19)),
    # JCB's registered range is 3528-3589, but card generators (Faker) use all of 35xx and
    # Presidio's own pattern accepts any 3xxx; Luhn keeps the wider range precise.
    ("jcb", "35", "35", (16, 17, 18, 19)),
    ("jcb", "1800", "1800", (15,)),      # legacy JCB ranges, still issued by some generators
    ("jcb", "2131", "2131", (15,)),
    ("diners", "300", "305", (14, 15, 16, 17, 18, 19)),
    ("diners", "36", "36", (14, 15, 16, 17, 18, 19)),
    ("diners", "38", "39", (14, 15, 16, 17, 18, 19)),
    ("unionpay", "62", "62", tuple(range(16, 20))),
    ("maestro", "50", "50", tuple(range(12, 20))),
    ("maestro", "56", "69", tuple(range(12, 20))),
    ("mir", "2200", "2204", tuple(range(16, 20))),
)

CARD_CONTEXT = ["credit", "card", "visa", "mastercard", "cc ", "amex", "discover", "jcb", "diners",
                "maestro", "instapayment"]   # Presidio's CreditCardRecognizer.CONTEXT
# The length most cards of a scheme have. An ungrouped run of another length (a 19-digit
# "Visa", a 17-digit "Maestro") is as often a random seed or a 64-bit id in code, one in ten
# of which passes Luhn: it needs a card word nearby.
COMMON_CARD_LENGTHS = {"visa": 16, "mastercard": 16, "amex": 15, "discover": 16, "jcb": 16,
                       "diners": 14, "unionpay": 16, "maestro": 16, "mir": 16}
UNSURE_CARD_SCORE = 0.3     # under the stage's default threshold of 0.5
CARD_WORDS = ("credit", "card", "visa", "mastercard", "cc", "amex", "discover", "jcb", "diners",
              "maestro", "unionpay", "debit", "payment", "pan")

# A maximal run of digit groups joined by single spaces or hyphens, not glued to a longer token.
_CARD_RUN = re.compile(r"(?:(?<=\\[ntr])|(?<![\w+#@$€£.,/\-]))(?>\d+(?:[ \-]\d+)*)(?!\w)(?![.,/\-]\d)")
_GROUP = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_scheme(digits: str) -> Optional[str]:
    """The scheme whose IIN range and lengths fit a digit string, or None."""
    for scheme, low, high, lengths in CARD_SCHEMES:
        if len(digits) in lengths and low <= digits[:len(low)] <= high:
            return scheme
    return None


def is_card_number(digits: str) -> bool:
    """True for a digit string with a card scheme's IIN and length that passes Luhn."""
    return 12 <= len(digits) <= 19 and card_scheme(digits) is not None and luhn_valid(digits)


def _card_grouping(lengths: list[int]) -> bool:
    """Groupings cards are printed in: one run, 4-4-4-x(-3), or Amex/Diners 4-6-4/5."""
    if len(lengths) == 1:
        return True
    if lengths[0] == 4 and len(lengths) == 3 and lengths[1] == 6 and lengths[2] in (4, 5):
        return True
    head, last = lengths[:-1], lengths[-1]
    if len(lengths) == 5:
        return all(n == 4 for n in lengths[:4]) and last == 3
    return all(n == 4 for n in head) and 1 <= last <= 4


def card_spans(text: str) -> List[tuple[int, int, str]]:
    """(start, end, scheme) of Luhn-valid card numbers in a text.

    A run of groups may hold a card number plus a neighbouring number (a CVV, a zip code)
    separated by a space; the longest valid window that is cut only at spaces is taken.
    """
    found = []
    for m in _CARD_RUN.finditer(text):
        groups = [(m.start() + g.start(), m.start() + g.end()) for g in _GROUP.finditer(m.group())]
        i = 0
        while i < len(groups):
            hit = None
            if i == 0 or text[groups[i][0] - 1] == " ":
                for j in range(len(groups), i, -1):
                    if j < len(groups) and text[groups[j - 1][1]] != " ":
                        continue
                    window = groups[i:j]
                    seps = {text[a[1]:b[0]] for a, b in zip(window, window[1:])}
                    if len(seps) > 1:
                        continue
                    digits = "".join(text[s:e] for s, e in window)
                    if not 12 <= len(digits) <= 19 or not _card_grouping([e - s for s, e in window]):
                        continue
                    scheme = card_scheme(digits)
                    if scheme is not None and luhn_valid(digits):
                        hit = (window[0][0], window[-1][1], scheme, j)
                        break
            if hit is None:
                i += 1
                continue
            found.append(hit[:3])
            i = hit[3]
    return found


def _result(rec: LocalRecognizer, start: int, end: int, score: float, why: str,
            enhanced: bool) -> RecognizerResult:
    return RecognizerResult(
        entity_type=rec.supported_entities[0], start=start, end=end, score=score,
        analysis_explanation=AnalysisExplanation(recognizer=rec.name, original_score=score,
                                                 textual_explanation=why),
        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: rec.name,
                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id,
                              RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: enhanced})


class HygieneCreditCardRecognizer(LocalRecognizer):
    """Card numbers of the major schemes (12-19 digits, optionally grouped), Luhn-checked."""

    replaces = ("CreditCardRecognizer",)
    SCORE = 1.0

    def __init__(self, supported_language: str = "en", supported_entity: str = "CREDIT_CARD",
                 name: str = "HygieneCreditCardRecognizer"):
        super().__init__(supported_entities=[supported_entity], name=name,
                         supported_language=supported_language, context=list(CARD_CONTEXT))

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: List[str], nlp_artifacts=None) -> List[RecognizerResult]:
        """A result per valid card number; the score is 1.0 (Luhn plus IIN is strong evidence)."""
        if self.supported_entities[0] not in entities:
            return []
        results = []
        for s, e, scheme in card_spans(text):
            score, why = self.SCORE, f"{scheme} card number, Luhn-valid"
            if text[s:e].isdigit() and e - s != COMMON_CARD_LENGTHS[scheme] and not _near(_CARD_WORD, text, s, e):
                score, why = UNSURE_CARD_SCORE, why + f", unusual length {e - s} and no card word nearby"
            results.append(_result(self, s, e, score, why, True))
        return results


# -- phone numbers ---------------------------------------------------------------------------

PHONE_MIN_DIGITS = 6    # "32 12 34" (Greenland, Faroe Islands); other shapes need 7 ("555 0134")
PHONE_MAX_DIGITS = 15   # E.164 maximum
MAX_GROUPS = 8          # +41 (0)27 240 04 99 has six
MAX_SPLIT_GROUPS = 24   # a longer run of space-separated numbers is data, not a few phone numbers

# Scores by shape; the PII stage's threshold for PHONE_NUMBER is 0.4 and context adds 0.35.
STRONG = 0.6    # +CC, (area code), extension, 3+ groups joined by "-" or "." (555-010-0134)
MEDIUM = 0.45   # groups where the first starts with a trunk 0 (07700 900 123), two hyphen groups
WEAK = 0.25     # other space-separated groups (20 7946 0958): needs a context word
BARE = 0.15     # an unseparated digit run (2025550134): needs a phone-specific context word
SHORT = 0.15    # six digits in pairs (32 12 34): needs a phone-specific context word
CONTEXT_BOOST = 0.35

# Words that mark a nearby number as a phone number; "number" alone is too common (order number,
# case number) to raise a bare digit run.
PHONE_WORDS = ("phone", "telephone", "tel", "mobile", "mob", "cell", "cellphone", "fax", "call",
               "contact", "reach", "text", "sms", "whatsapp", "dial", "landline", "hotline",
               "office", "desk", "voicemail")
WEAK_PHONE_WORDS = ("number", "no.", "nr", "num", "message", "answer", "answering")
PHONE_CONTEXT = list(PHONE_WORDS + WEAK_PHONE_WORDS)
# Words right before a number that say it is some other identifier.
NOT_PHONE_WORDS = ("license", "licence", "passport", "zip", "postal", "postcode", "account", "acct",
                   "iban", "ssn", "social", "order", "invoice", "serial", "isbn", "issn", "version",
                   "build", "id", "pin", "tracking", "routing", "tax", "vat", "port", "page", "pages",
                   "identification", "ein", "tin", "std", "standard", "iso", "rfc", "ieee")
# A number followed by one of these within three words is a street address.
STREET_WORDS = ("street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "drive", "dr", "boulevard",
                "blvd", "way", "court", "ct", "place", "pl", "terrace", "crescent", "highway", "hwy",
                "parkway", "pkwy", "square", "sq", "rue", "via", "strasse", "straße", "str", "calle",
                "avenida", "alley", "trail", "circle")


def _words_re(words: tuple[str, ...], suffixes: str = "") -> re.Pattern:
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(r"(?<!\w)(?:" + alts + ")" + suffixes + r"(?!\w)", re.IGNORECASE)


_PHONE_WORD = _words_re(PHONE_WORDS, r"(?:s|es|ed|er|ing)?")
_CARD_WORD = _words_re(CARD_WORDS, r"s?")
_WEAK_WORD = _words_re(WEAK_PHONE_WORDS, r"(?:s|es)?")
_NOT_PHONE_WORD = _words_re(NOT_PHONE_WORDS, r"(?:s|es)?")
_STREET_WORD = _words_re(STREET_WORDS)
_WORD = re.compile(r"[^\W\d]+\.?|\d+")     # check_call is one word, not "call"
_ESCAPE = re.compile(r"\\[ntr]")
# "1.331 025 0394": digits of a decimal grouped in threes (SI style), not a separate number.
_DECIMAL_BEFORE = re.compile(r"\d[.,]\d+[ ]$")
# A tag the redaction's second pass put in place of a found value, within two words after the
# number: it may hide the street name ("at 171 3890 <LOCATION>", "171 3890 Creekside <PERSON>").
_TAG_AFTER = re.compile(r"(?:[ ]+[^\W\d_]+){0,2}[ ]*<[A-Z_]+>")
# "DE89 3704 0044 0532 0130 00": the rest of an IBAN printed in groups.
_IBAN_BEFORE = re.compile(r"\b[A-Z]{2}\d{2}[ ]$")

_PHONE = re.compile(r"""
    (?:(?<=\\[ntr])|(?<![\w@#$€£¥%=/\\&*^~+\-]))  # not glued to a token, an amount, a path
                                                  # (a literal "\n" escape counts as a space)
    (?<!\d[.,:/\-])                   # not the tail of 1,000,000 / 3.14 / 12:30 / 1/2 / 1-2
    (?<![^\W\d_][\-_.])               # not the number part of an id such as ABC-1234567
    (?P<body>(?>
        (?:\+\d{1,3}(?:[ .\-]?\(0\))?[ .\-]?)?         # +41, +41 (0), +1-
        (?:\(\d{1,5}\)[ .\-]?)?                        # (073), (1)
        \d+(?:[ .\-]\d+)*
    ))
    (?P<ext>[ ]?(?:x|ext\.?|extension|\#)[ ]?\d{1,6})?
    (?![\w@%/])(?![.,:/\-]\d)(?![.][\w{\[(])
""", re.VERBOSE | re.IGNORECASE)
_TOKEN = re.compile(r"\+\d+|\(\d+\)|\d+")


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1900 <= int(group) <= 2099


def _is_date(groups: list[str]) -> bool:
    """Three groups shaped like Y-M-D (any 4-5 digit year), D.M.Y or M/D/Y."""
    if len(groups) != 3:
        return False
    a, b, c = groups
    if len(a) in (4, 5) and len(b) <= 2 and len(c) <= 2:
        return int(b) <= 12 and int(c) <= 39
    if len(c) == 4 and len(a) <= 2 and len(b) <= 2:
        return int(a) <= 31 and int(b) <= 31
    return False


def _is_compact_date(digits: str) -> bool:
    """YYYYMMDD or DDMMYYYY with a year 1900-2099."""
    if len(digits) != 8:
        return False
    return ((_is_year(digits[:4]) and _is_date([digits[:4], digits[4:6], digits[6:]]))
            or (_is_year(digits[4:]) and _is_date([digits[:2], digits[2:4], digits[4:]])))


# Reasons for which a run may be two numbers side by side ("33324 077 3141 2203": a postal
# code and a phone number; "052 5552606 074-7111234": two phone numbers).
_TOO_LONG = "more than 15 digits"
_MIXED = "dots mixed with other separators"


def phone_shape(body: str, has_ext: bool) -> tuple[Optional[float], str]:
    """(base score, reason) of a candidate phone number; score None when it is not one."""
    tokens = [(t.group(), t.start(), t.end()) for t in _TOKEN.finditer(body)]
    digits = "".join(ch for ch in body if ch.isdigit())
    if len(digits) > PHONE_MAX_DIGITS:
        return None, _TOO_LONG
    if len(digits) < PHONE_MIN_DIGITS:
        return None, "too few digits"
    if len(set(digits)) == 1 or set(digits) <= {"0", "1"}:
        return None, "one repeated digit or binary"
    if len(digits) == PHONE_MIN_DIGITS:
        if re.fullmatch(r"\d\d([ .\-])\d\d\1\d\d", body) and not _is_date(body.split(body[2])):
            return SHORT, "six digits in pairs"
        return None, "too few digits"
    plus = tokens[0][0].startswith("+")
    if plus and not _country_code_ok(digits):
        return None, "no such country code"
    area = [t for t, _, _ in tokens if t.startswith("(") and t != "(0)"]
    if any(_is_year(t[1:-1]) for t in area):
        return None, "a year in parentheses (a citation: 20 (1982) 171-184)"
    # Plain groups are those after the country code and any parenthesised part.
    k = 0
    while k < len(tokens) and tokens[k][0][0] in "+(":
        k += 1
    plain = tokens[k:]
    if any(t.startswith("(") for t, _, _ in plain):
        return None, "parentheses in the middle"
    if not plain:                       # +447700900123: one run after the "+"
        return (STRONG, "international number") if plus else (None, "no digits after the prefix")
    groups = [t for t, _, _ in plain]
    # Separators between plain groups; after the prefix only "-" and "." count (+1-555-..., +1.555...).
    kinds = {body[a[2]:b[1]].strip() or " " for a, b in zip(plain, plain[1:])}
    if k and body[tokens[k - 1][2]:plain[0][1]].strip():
        kinds.add(body[tokens[k - 1][2]:plain[0][1]].strip())
    prefixed = plus or bool(area)
    if "." in kinds:
        if len(kinds) > 1:
            return None, _MIXED
        if len(groups) < 3 or any(not 2 <= len(g) <= 4 for g in groups):
            return None, "dotted number that is not a phone (version, decimal)"
        if not prefixed and len(groups) in (3, 4) and all(len(g) <= 3 and int(g) <= 255 for g in groups):
            return None, "IP address"
    if any(len(g) == 1 for g in groups[1:]):
        return None, "a one-digit group"
    if len(groups[0]) == 1 and not plus:      # +46 (0)8 123 45 67 has a one-digit area code
        if not (groups[0] == "1" and len(digits) == 11 and not area):    # 1-800-555-0134
            return None, "a one-digit group"
    if not prefixed:
        if _is_date(groups) or sum(_is_year(g) for g in groups) >= 2:
            return None, "date or years"
        if [len(g) for g in groups] == [3, 2, 4]:
            return None, "SSN-shaped"
        if len(groups) == 2:
            a, b = groups
            if len(b) < len(a):
                return None, "two groups, the second shorter: a postal code or a house number"
            if kinds == {"-"} and (_is_year(b) or (len(a) == len(b) and "0" not in (a[0], b[0])
                                                   and int(a) < int(b))):
                return None, "a range or a standard's year (754-2008)"
        if len(digits) >= 12 and _card_grouping([len(g) for g in groups]) and is_card_number(digits):
            return None, "card number"
    if plus:
        return STRONG, "international number"
    if has_ext:
        return STRONG, "number with extension"
    if area:
        return STRONG, "number with area code in parentheses"
    if len(groups) == 1:
        if len(digits) > 11 or _is_compact_date(digits):
            return None, "long or date-like digit run"
        return BARE, "bare digit run"
    if kinds <= {"-", "."} and len(groups) >= 3:
        return STRONG, "hyphen- or dot-separated groups"
    if groups[0].startswith("0") and not groups[0].startswith("00"):
        return MEDIUM, "national number with trunk prefix"
    if kinds == {"-"}:
        return MEDIUM, "two hyphen-separated groups"
    return WEAK, "space-separated groups"


_GAP = re.compile(r"(?<=\d)[ ](?=[\d(+])")


def split_run(body: str, has_ext: bool) -> list[tuple[int, int, float, str]]:
    """(start, end, base score, reason) of the phone numbers in a run of digit groups.

    A run that is not one phone number because it is too long or mixes separators is cut at
    single spaces into the pieces that score highest in total; other rejected runs give nothing.
    """
    score, why = phone_shape(body, has_ext)
    if score is not None:
        return [(0, len(body), score, why)]
    if why not in (_TOO_LONG, _MIXED):
        return []
    cuts = [0, *(g.start() for g in _GAP.finditer(body)), len(body)]
    if len(cuts) - 1 > MAX_SPLIT_GROUPS:    # a table of numbers, not contact details
        return []
    lengths = [len(g) for g in _GROUP.findall(body)]
    if len(lengths) >= 4 and all(n == 4 for n in lengths[:-1]):    # a card or account number in fours
        return []
    # best[i]: (total score, pieces) over body[:cuts[i]]; a piece is a phone number or skipped.
    # A phone number has at most MAX_GROUPS groups, which bounds the work on long runs.
    best: list[tuple[float, list]] = [(0.0, [])]
    for i in range(1, len(cuts)):
        total, pieces = best[i - 1]
        options = [(total, pieces)]                     # the group(s) before cuts[i] skipped
        for j in range(max(0, i - MAX_GROUPS), i):
            a, b = cuts[j] + (j > 0), cuts[i]
            score, why = phone_shape(body[a:b], has_ext and i == len(cuts) - 1)
            if score is not None:
                total, pieces = best[j]
                options.append((total + score, pieces + [(a, b, score, why)]))
        # Highest total score, then the most text covered, then the fewest pieces.
        best.append(max(options, key=lambda o: (round(o[0], 6), sum(p[1] - p[0] for p in o[1]), -len(o[1]))))
    return best[-1][1]


def _country_code_ok(digits: str) -> bool:
    """True when the digits after "+" start with an assigned country calling code."""
    import phonenumbers

    if digits[0] == "0":
        return False
    for n in (1, 2, 3):
        if phonenumbers.region_code_for_country_code(int(digits[:n])) != phonenumbers.UNKNOWN_REGION:
            return True
    return False


def _window(text: str, start: int, end: int) -> tuple[list[str], list[str]]:
    """Up to six words before and three after a span (literal "\\n" escapes read as spaces)."""
    before = _WORD.findall(_ESCAPE.sub(" ", text[max(0, start - 60):start]))[-6:]
    after = _WORD.findall(_ESCAPE.sub(" ", text[end:end + 40]))[:3]
    return before, after


def _near(words: re.Pattern, text: str, start: int, end: int) -> bool:
    """True when one of `words` is among the six words before or the two after a span."""
    before, after = _window(text, start, end)
    return bool(words.search(" ".join(before + after[:2])))


def _context(text: str, start: int, end: int) -> tuple[bool, bool, bool, bool]:
    """(phone word near, weak phone word near, other-identifier word just before, street word or
    address tag just after): six words before and two after the number count as near."""
    before, after = _window(text, start, end)
    near = " ".join(before + after[:2])
    street = bool(_STREET_WORD.search(" ".join(after))) or bool(_TAG_AFTER.match(text, end))
    return (bool(_PHONE_WORD.search(near)), bool(_WEAK_WORD.search(near)),
            bool(_NOT_PHONE_WORD.search(" ".join(before[-4:]))), street)


class HygienePhoneRecognizer(LocalRecognizer):
    """Phone numbers in international and national formats, scored by shape and nearby words.

    Context is applied here, from the raw text around the number (Presidio's lemma enhancer
    only looks before a number, and "office" or "fax" often follows one); results are marked
    as enhanced so Presidio does not add its boost a second time.
    """

    replaces = ("PhoneRecognizer",)
    min_digits = PHONE_MIN_DIGITS

    def __init__(self, supported_language: str = "en", supported_entity: str = "PHONE_NUMBER",
                 name: str = "HygienePhoneRecognizer"):
        super().__init__(supported_entities=[supported_entity], name=name,
                         supported_language=supported_language, context=list(PHONE_CONTEXT))

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: List[str], nlp_artifacts=None) -> List[RecognizerResult]:
        """A result per candidate that passes `phone_shape`, its score raised by context words."""
        if self.supported_entities[0] not in entities:
            return []
        results = []
        for m in _PHONE.finditer(text):
            if _IBAN_BEFORE.search(text, max(0, m.start() - 8), m.start()):
                continue
            body_end = m.end("body")
            for a, b, score, why in split_run(m.group("body"), m.group("ext") is not None):
                start, end = m.start() + a, (m.end() if m.start() + b == body_end else m.start() + b)
                if _DECIMAL_BEFORE.search(text, max(0, start - 24), start):
                    continue
                strong_word, weak_word, other_id, street = _context(text, start, end)
                if other_id and not strong_word:
                    continue
                if street and score < STRONG:
                    continue
                if strong_word or (weak_word and score > max(BARE, SHORT)):
                    score = min(1.0, max(score + CONTEXT_BOOST, 0.4))
                    why += ", context word nearby"
                results.append(_result(self, start, end, round(score, 4), why, True))
        return results


def builtin_recognizers(language: str) -> list:
    """Our recognizers for a language; each lists the Presidio recognizers it `replaces`.

    Card numbers and phone numbers are shapes and checksums, the same in any language (their
    context words are English: elsewhere only the shape scores); the street-address recognizer
    reads English (US, UK) address words and formats, so it serves English only."""
    from pipeline.pii.address import StreetAddressRecognizer

    recs = [HygieneCreditCardRecognizer(supported_language=language), HygienePhoneRecognizer(supported_language=language)]
    if language == "en":
        recs.append(StreetAddressRecognizer(supported_language=language))
    return recs
