"""Our card and phone recognizers, called directly (no spaCy model): formats found, prose left alone."""

from __future__ import annotations

import types

import pytest

from pipeline.pii.config import PiiConfig
from pipeline.pii.engine import PiiEngine
from pipeline.pii.recognizers import (
    PHONE_MIN_DIGITS,
    HygieneCreditCardRecognizer,
    HygienePhoneRecognizer,
    builtin_recognizers,
    luhn_valid,
)

CARD = HygieneCreditCardRecognizer()
PHONE = HygienePhoneRecognizer()
PHONE_THRESHOLD = PiiConfig().threshold_for("PHONE_NUMBER")
CARD_THRESHOLD = PiiConfig().threshold_for("CREDIT_CARD")


def card_number(prefix: str, length: int) -> str:
    """A Luhn-valid number with the given prefix and length (the last digit is the check digit)."""
    body = prefix + "3" * (length - len(prefix) - 1)
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def luhn_invalid(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def cards(text: str) -> list[tuple[str, float]]:
    return [(text[r.start:r.end], r.score) for r in CARD.analyze(text, entities=["CREDIT_CARD"], nlp_artifacts=None)]


def phones(text: str) -> list[tuple[str, float]]:
    return [(text[r.start:r.end], r.score) for r in PHONE.analyze(text, entities=["PHONE_NUMBER"], nlp_artifacts=None)]


def reported_phones(text: str) -> list[str]:
    return [span for span, score in phones(text) if score >= PHONE_THRESHOLD]


# -- credit cards -------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "prefix", "length"), [
    ("visa", "4", 16), ("mastercard 51-55", "53", 16), ("mastercard 2-series", "2242", 16),
    ("mastercard 2-series top", "2720", 16), ("amex", "37", 15), ("discover", "6011", 16),
    ("discover 644-649", "646", 16), ("jcb", "3561", 16), ("diners", "3036", 14),
    ("diners 36", "36", 14), ("unionpay", "6212", 16), ("maestro", "5018", 16),
])
def test_a_luhn_valid_number_of_a_major_scheme_is_a_credit_card_with_score_one(scheme, prefix, length):
    number = card_number(prefix, length)
    assert cards(f"Charge it to {number} please.") == [(number, 1.0)], scheme


def test_a_luhn_invalid_number_is_not_a_credit_card():
    number = luhn_invalid(card_number("4", 16))
    assert not luhn_valid(number)
    assert cards(f"My card is {number}.") == []


def test_a_number_outside_every_iin_range_is_not_a_credit_card():
    assert cards(f"Ticket {card_number('9', 16)} and {card_number('72', 16)}") == []


def test_a_2_series_mastercard_is_accepted():
    number = card_number("2243", 16)
    assert cards(f"mastercard {number}") == [(number, 1.0)]


def test_a_19_digit_visa_is_accepted_next_to_a_card_word():
    number = card_number("48", 19)
    assert cards(f"Please block card no {number}") == [(number, 1.0)]


def test_a_12_digit_maestro_is_accepted_next_to_a_card_word():
    number = card_number("5876", 12)
    assert cards(f"my debit card {number} was declined") == [(number, 1.0)]


def test_an_ungrouped_number_of_an_unusual_length_without_a_card_word_stays_under_the_threshold():
    # random seeds and 64-bit ids in code: one in ten passes Luhn
    number = card_number("4", 19)
    [(span, score)] = cards(f"rng = default_rng({number})")
    assert span == number and score < CARD_THRESHOLD


@pytest.mark.parametrize("sep", [" ", "-"])
def test_a_card_grouped_in_fours_is_found_whole(sep):
    number = card_number("4", 16)
    grouped = sep.join(number[i:i + 4] for i in range(0, 16, 4))
    assert cards(f"Card: {grouped}, exp 12/29") == [(grouped, 1.0)]


def test_an_amex_grouped_four_six_five_is_found_whole():
    number = card_number("34", 15)
    grouped = f"{number[:4]} {number[4:10]} {number[10:]}"
    assert cards(f"amex {grouped}") == [(grouped, 1.0)]


def test_a_security_code_after_a_grouped_card_is_not_part_of_it():
    number = card_number("5", 16)
    grouped = " ".join(number[i:i + 4] for i in range(0, 16, 4))
    assert cards(f"card {grouped} 123") == [(grouped, 1.0)]


def test_a_card_number_inside_a_longer_digit_run_is_not_matched():
    number = card_number("4", 16)
    assert cards(f"id 99{number}") == []
    assert cards(f"ref {number}7") == []
    assert cards(f"token a{number}") == []


def test_mixed_separators_do_not_make_a_card():
    number = card_number("4", 16)
    assert cards(f"{number[:4]} {number[4:8]}-{number[8:12]} {number[12:]}") == []


# -- phone numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [
    "(555) 010-0134",            # US with area code in parentheses
    "555-010-0199",              # US hyphenated
    "555.010.0142",              # US dotted
    "+1-555-010-0188",           # international, hyphens
    "001-555-010-0177",          # international access code
    "555-010-0123x549",          # extension
    "555-010-0123 ext. 12",      # extension, spelled
    "+44 20 7946 0321",          # UK London drama range
    "+447700900461",             # UK mobile, one run after the +
    "(07700) 900461",            # UK national with parentheses
    "+41 (0)27 555 01 23",       # trunk 0 in parentheses
    "+46 (0)8 555 012 34",       # one-digit area code
    "01.99.00.12.34",            # French, dotted pairs
    "(55) 5555-0123",            # Brazilian style
    "06-55501234",               # Dutch mobile style
    "0491 570 156",              # Australian fictional range
])
def test_phone_formats_are_found_without_any_context(number):
    assert reported_phones(f"Details: {number}.") == [number]


@pytest.mark.parametrize("number", [
    "555 0134",                  # seven digits, local
    "730 555 218",               # groups of three
    "96 555012",                 # two groups
    "55 501 23 45",              # Swiss national, no trunk 0
    "5550100134",                # a bare run
    "32 12 34",                  # six digits in pairs (Greenland)
])
def test_weak_shapes_are_reported_only_next_to_a_phone_word(number):
    assert reported_phones(f"It is {number} I think") == []
    assert reported_phones(f"Mobile: {number}") == [number]
    assert reported_phones(f"Please call me on {number} tomorrow") == [number]


def test_a_phone_word_after_the_number_counts():
    assert reported_phones("55 501 23 45 office\n555 0134 fax") == ["55 501 23 45", "555 0134"]


def test_number_alone_does_not_raise_a_bare_digit_run():
    assert reported_phones("Your order number is 5550100134") == []
    assert reported_phones("my number is 5550100134") == []
    assert reported_phones("my number is 730 555 218") == ["730 555 218"]


def test_context_is_scored_by_the_recognizer_itself():
    [result] = PHONE.analyze("Tel: 555 0134", entities=["PHONE_NUMBER"], nlp_artifacts=None)
    assert result.score == pytest.approx(0.6)
    assert result.recognition_metadata[result.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] is True


def test_a_literal_backslash_n_escape_counts_as_a_space():
    assert reported_phones(r"Phone:\n555 0134\nE-mail: jo@example.com") == ["555 0134"]


def test_a_postal_code_before_a_phone_number_is_left_out():
    assert reported_phones("Springfield 55501 0555 0123 4567 office") == ["0555 0123 4567"]


def test_two_phone_numbers_side_by_side_are_two_results():
    assert reported_phones("try one of these phones 055 5552606 074-5550123") == ["055 5552606", "074-5550123"]


def test_an_address_with_a_postal_code_is_not_a_phone_number():
    assert reported_phones("Call the office at 171 3890 Creekside Lane") == []
    assert reported_phones("Call the office at 14161 124 North Street") == []
    assert reported_phones("ZIP: 90010-170") == []


@pytest.mark.parametrize("text", [
    "Requires Python version 3.8.0 or later.",
    "The limit is 1,000,000 characters per document.",
    "It was used between 2019 and 2020.",
    "Listen on port 8080 and 8443.",
    "The step took 50.2 s, the AUC was 0.996.",
    "See RFC 6962 and RFC 9162.",
    "Released on 2024-01-05, 05.01.2024 and 01/05/2024.",
    "The job ran at 12:30:45 and finished at 23:59:59.",
    "Build 10.0.19041.1234 of the installer.",
    "Connect to 192.168.100.200 or 10.20.30.40.",
    "Pages 1200-1350 of the report.",
    "Years 2019 2020 2021 are included.",
    "Use 3.14159265 for pi.",
    "Issue #1234567 and commit a1234567 and $1234567.",
    "Part ABC-1234567 is in stock.",
    "Vol. 20 (1982) 171-184 of the journal.",
    "IEEE Std 754-2008 defines it.",
    "The constant is 1.331 025 0394 e-15 with error 0.000 000 0019.",
    "Binary 0100 0000 and 0010 0000.",
    "y = x + 12345678.0 and z = 2000 - 1024.",
    "ISBN 978-3-16-148410-0.",
    "My SSN is 078-05-1120.",
    "IBAN DE89 3704 0044 0532 0130 00",
    "Timestamps 1700000000 and 20240105 were logged.",
    "sp.check_call(['truncate', '-s', '5368709120'])",
    "There were 12 345 678 rows.",
])
def test_numbers_in_technical_prose_are_not_phone_numbers(text):
    assert reported_phones(text) == []


def test_a_card_number_is_not_also_a_phone_number():
    number = card_number("37", 15)
    assert phones(f"{number[:4]} {number[4:10]} {number[10:]}") == []
    assert phones(f"Card {number}") == []


def test_other_identifiers_named_before_a_number_are_not_phone_numbers():
    assert reported_phones("my driver's license number is 2270-55-1551") == []
    assert reported_phones("Passport 555-010-0134") == []


def test_a_long_table_of_numbers_is_not_split_into_phone_numbers():
    table = " ".join(str(100 + i) for i in range(200))
    assert phones(f"call {table}") == []


# -- wiring -------------------------------------------------------------------------------------


def test_builtin_recognizers_name_the_presidio_recognizers_they_replace():
    recs = {r.supported_entities[0]: r for r in builtin_recognizers("en")}
    assert recs["CREDIT_CARD"].replaces == ("CreditCardRecognizer",)
    assert recs["PHONE_NUMBER"].replaces == ("PhoneRecognizer",)
    # cards and phones are shapes in any language; the address recognizer reads English only
    other = {r.supported_entities[0]: r for r in builtin_recognizers("de")}
    assert sorted(other) == ["CREDIT_CARD", "PHONE_NUMBER"]
    assert {r.supported_language for r in other.values()} == {"de"}


def test_recognizers_return_nothing_for_entities_not_asked_for():
    assert CARD.analyze(card_number("4", 16), entities=["PHONE_NUMBER"]) == []
    assert PHONE.analyze("(555) 010-0134", entities=["CREDIT_CARD"]) == []


def test_the_engine_prefilter_for_phones_uses_the_recognizers_fewest_digits():
    from presidio_analyzer import Pattern, PatternRecognizer

    ours = types.SimpleNamespace(recognizers=[PHONE, CARD])
    assert PiiEngine._phone_digits(ours) == PHONE_MIN_DIGITS == 6
    custom = PatternRecognizer(supported_entity="PHONE_NUMBER", name="short",
                               patterns=[Pattern("ext", r"\bx\d{3}\b", 0.6)])
    assert PiiEngine._phone_digits(types.SimpleNamespace(recognizers=[PHONE, custom])) == 1


def test_a_number_before_an_address_tag_of_the_second_pass_is_not_a_phone_number():
    assert reported_phones("Call the office at 171 3890 <LOCATION>") == []
    assert reported_phones("Call the office at 171 3890 Creekside <PERSON>") == []
    assert reported_phones("Call (555) 010-0134 <PERSON>") == ["(555) 010-0134"]
