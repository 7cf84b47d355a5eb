"""Our own Presidio recognizers for types where Presidio's defaults miss too much.

Usage::

    from pipeline.pii.recognizers import builtin_recognizers

    for rec in builtin_recognizers("en"):
        registry.remove_recognizer(*rec.replaces) if rec.replaces else None
        registry.add_recognizer(rec)

- `HygieneCreditCardRecognizer` replaces Presidio's `CreditCardRecognizer`: every IIN range of
  the major schemes (Presidio's regex misses Mastercard 2221-2720, 19-digit Visa, 12-digit
  Maestro), each with its own lengths, and a Luhn check; a valid number scores 1.0.
- `HygienePhoneRecognizer` replaces Presidio's `PhoneRecognizer` (phonenumbers' matcher over
  eight regions, which misses most national formats): it finds runs of digit groups, rejects
  what is shaped like something else (dates, versions, IP addresses, card numbers, SSNs, ranges,
  lists of years) and scores the rest by how phone-like the shape is; words such as "phone" or
  "fax" next to the number raise the score. Weak shapes (a bare digit run, space-separated
  groups) stay under the 0.4 threshold unless such a word is near.
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
    ("jcb", "3528", "3589", (16, 17, 18, 19)),
    ("jcb", "1800", "1800", (15,)),      # legacy JCB ranges, still issued by some generators
    ("jcb", "2131", "2131", (15,)),
    ("diners", "300", "305", (14, 15, 16, 17, 18, 19)),
    ("diners", "36", "36", (14, 15, 16, 17, 18, 19)),
    ("diners", "38", "39", (14, 15, 16, 17, 18, 19)),
    ("maestro", "50", "50", tuple(range(12, 20))),
    ("maestro", "56", "69", tuple(range(12, 20))),
    ("unionpay", "62", "62", tuple(range(16, 20))),
    ("mir", "2200", "2204", tuple(range(16, 20))),
)

CARD_CONTEXT = ["credit", "card", "visa", "mastercard", "cc ", "amex", "discover", "jcb", "diners",
                "maestro", "instapayment"]   # Presidio's CreditCardRecognizer.CONTEXT

# A maximal run of digit groups joined by single spaces or hyphens, not glued to a longer token.
_CARD_RUN = re.compile(r"(?<![\w+#@$€£.,/\-])(?>\d+(?:[ \-]\d+)*)(?!\w)(?![.,/\-]\d)")
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
        return [_result(self, s, e, self.SCORE, f"{scheme} card number, Luhn-valid", True)
                for s, e, scheme in card_spans(text)]


# -- phone numbers ---------------------------------------------------------------------------

PHONE_MIN_DIGITS = 7    # local numbers without area code ("555 0134") have seven
PHONE_MAX_DIGITS = 15   # E.164 maximum

# Scores by shape; the PII stage's threshold for PHONE_NUMBER is 0.4 and context adds 0.35.
STRONG = 0.6    # +CC, (area code), extension, 3+ groups joined by "-" or "." (555-010-0134)
MEDIUM = 0.45   # groups where the first starts with a trunk 0 (07700 900 123), two hyphen groups
WEAK = 0.25     # other space-separated groups (20 7946 0958): needs a context word
BARE = 0.15     # an unseparated digit run (2025550134): needs a phone-specific context word
CONTEXT_BOOST = 0.35

# Words that mark a nearby number as a phone number; "number" alone is too common (order number,
# case number) to raise a bare digit run.
PHONE_WORDS = ("phone", "telephone", "tel", "mobile", "mob", "cell", "cellphone", "fax", "call",
               "contact", "reach", "text", "sms", "whatsapp", "dial", "landline", "hotline",
               "office", "desk", "voicemail", "answer", "home", "work")
WEAK_PHONE_WORDS = ("number", "no", "nr", "num")
PHONE_CONTEXT = list(PHONE_WORDS + WEAK_PHONE_WORDS)

_SUFFIXES = r"(?:s|es|ed|ing|able|ph)?"
_PHONE_WORD = re.compile(r"(?<![^\W\d_])(?:" + "|".join(PHONE_WORDS) + ")" + _SUFFIXES + r"(?![^\W\d_])",
                         re.IGNORECASE)
_WEAK_WORD = re.compile(r"(?<![^\W\d_])(?:" + "|".join(WEAK_PHONE_WORDS) + r")(?:s|\.)?(?![^\W\d_])",
                        re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+\.?|\d+")

_PHONE = re.compile(r"""
    (?<![\w@#$€£¥%=/\\&*^~+])         # not glued to a token, an amount, a path
    (?<!\d[.,:/\-])                   # not the tail of 1,000,000 / 3.14 / 12:30 / 1/2 / 1-2
    (?<![^\W\d_][\-_.])               # not the number part of an id such as ABC-1234567
    (?P<body>(?>
        (?:\+[ ]?\d{1,3}(?:[ .\-]?\(0\))?[ .\-]?)?     # +41, +41 (0), +1-
        (?:\(\d{1,5}\)[ .\-]?)?                        # (073), (1)
        \d+(?:(?:[ .\-]|[ ]-[ ])\d+)*
    ))
    (?P<ext>[ ]?(?:x|ext\.?|extension|\#)[ ]?\d{1,6})?
    (?![\w@%/])(?![.,:/\-]\d)
""", re.VERBOSE | re.IGNORECASE)
_TOKEN = re.compile(r"\+[ ]?\d+|\(\d+\)|\d+")


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1900 <= int(group) <= 2099


def _is_date(groups: list[str]) -> bool:
    """Three groups read as Y-M-D, D.M.Y or M/D/Y with a 4-digit year 1900-2099."""
    if len(groups) != 3:
        return False
    a, b, c = groups
    if _is_year(a) and len(b) <= 2 and len(c) <= 2:
        return 1 <= int(b) <= 12 and 1 <= int(c) <= 31
    if _is_year(c) and len(a) <= 2 and len(b) <= 2:
        x, y = int(a), int(b)
        return 1 <= x <= 31 and 1 <= y <= 31 and (x <= 12 or y <= 12)
    return False


def _is_compact_date(digits: str) -> bool:
    """YYYYMMDD or DDMMYYYY."""
    if len(digits) != 8:
        return False
    return _is_date([digits[:4], digits[4:6], digits[6:]]) or _is_date([digits[:2], digits[2:4], digits[4:]])


def phone_shape(body: str, has_ext: bool) -> tuple[Optional[float], str]:
    """(base score, reason) of a candidate phone number; score None when it is not one."""
    tokens = [(t.group(), t.start(), t.end()) for t in _TOKEN.finditer(body)]
    digits = "".join(ch for ch in body if ch.isdigit())
    if not PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS:
        return None, "digit count"
    plus = tokens[0][0].startswith("+")
    parens = [t for t, _, _ in tokens if t.startswith("(")]
    area = [t for t in parens if t != "(0)"]
    # Plain groups are those after the country code and any parenthesised part.
    k = 0
    while k < len(tokens) and (tokens[k][0][0] in "+("):
        k += 1
    plain = tokens[k:]
    if parens and any(t.startswith("(") for t, _, _ in plain):
        return None, "parentheses in the middle"
    groups = [t for t, _, _ in plain]
    if not groups:
        return None, "no digits after the prefix"
    kinds = set()
    for (_, _, e), (_, s, _) in zip(plain, plain[1:]):
        gap = body[e:s].strip()
        kinds.add(gap if gap else " ")
    prefixed = plus or bool(area)
    if "." in kinds:
        if len(kinds) > 1 or len(groups) < 3 or any(not 2 <= len(g) <= 4 for g in groups):
            return None, "dotted number that is not a phone (version, decimal)"
        if not prefixed and len(groups) == 4 and all(len(g) <= 3 and int(g) <= 255 for g in groups):
            return None, "IP address"
    if any(len(g) == 1 for g in groups):
        nanp = not prefixed and groups[0] == "1" and len(digits) == 11 and all(len(g) > 1 for g in groups[1:])
        if not nanp:
            return None, "a one-digit group"
    if not prefixed:
        if _is_date(groups) or sum(_is_year(g) for g in groups) >= 2:
            return None, "date or years"
        if [len(g) for g in groups] == [3, 2, 4]:
            return None, "SSN-shaped"
        if (len(groups) == 2 and kinds == {"-"} and len(groups[0]) == len(groups[1])
                and "0" not in (groups[0][0], groups[1][0]) and int(groups[0]) < int(groups[1])):
            return None, "a range"
        if len(digits) >= 12 and _card_grouping([len(g) for g in groups]) and is_card_number(digits):
            return None, "card number"
    if plus:
        cc_ok = _country_code_ok(digits)
        return (STRONG, "international number") if cc_ok else (WEAK, "unknown country code")
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
    if groups[0].startswith("0"):
        return MEDIUM, "national number with trunk prefix"
    if kinds == {"-"}:
        return MEDIUM, "two hyphen-separated groups"
    return WEAK, "space-separated groups"


def _country_code_ok(digits: str) -> bool:
    """True when the digits after "+" start with an assigned country calling code."""
    import phonenumbers

    for n in (1, 2, 3):
        if phonenumbers.region_code_for_country_code(int(digits[:n])) != phonenumbers.UNKNOWN_REGION:
            return True
    return False


def _context_words(text: str, start: int, end: int) -> tuple[bool, bool]:
    """(phone word near, weak word near): up to six words before, two words after the number."""
    before = _WORD.findall(text[max(0, start - 60):start])[-6:]
    after = _WORD.findall(text[end:end + 30])[:2]
    near = " ".join(before + after)
    return bool(_PHONE_WORD.search(near)), bool(_WEAK_WORD.search(near))


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
            score, why = phone_shape(m.group("body"), m.group("ext") is not None)
            if score is None:
                continue
            strong_word, weak_word = _context_words(text, m.start(), m.end())
            if strong_word or (weak_word and score > BARE):
                score = min(1.0, max(score + CONTEXT_BOOST, 0.4))
                why += ", context word nearby"
            results.append(_result(self, m.start(), m.end(), round(score, 4), why, True))
        return results


def builtin_recognizers(language: str) -> list:
    """Our recognizers for a language; each lists the Presidio recognizers it `replaces`."""
    if language != "en":
        return []
    return [HygieneCreditCardRecognizer(supported_language=language),
            HygienePhoneRecognizer(supported_language=language)]
