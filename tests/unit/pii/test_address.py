"""The street-address recognizer, called directly (no spaCy model): addresses found whole, prose left alone.

All addresses here are made up (street names of the kind Faker generates, example postal codes).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pii.address import StreetAddressRecognizer, address_hint, address_spans
from pipeline.pii.config import DEFAULT_ENTITIES, PiiConfig
from pipeline.pii.recognizers import builtin_recognizers

THRESHOLD = PiiConfig().threshold_for("STREET_ADDRESS")


def found(text: str) -> list[str]:
    """The addresses the stage would report (score at or above its threshold)."""
    return [text[s:e] for s, e, score, _ in address_spans(text) if score >= THRESHOLD]


@pytest.mark.parametrize(("text", "address"), [
    ("Please send the forms to 1234 Oak Street, Apt 5, Springfield, IL 62704 by Friday.",
     "1234 Oak Street, Apt 5, Springfield, IL 62704"),
    ("She lives at 77 Maple Ave. in a blue house.", "77 Maple Ave."),
    ("Deliveries go to 1470 S Washington St, North Attleboro MA 02760 on weekdays.",
     "1470 S Washington St, North Attleboro MA 02760"),
    ("Our office moved to 2914 184th Street last spring.", "2914 184th Street"),
    ("Ship it to 12 Timms Way, Springfield, IL 62704.", "12 Timms Way, Springfield, IL 62704"),
    ("The corner of 50 Point Walter Road and Kishiev Avenue is busy.", "50 Point Walter Road and Kishiev Avenue"),
    ("Write to Hauptstraße 5, 10115 Berlin, Germany.", "Hauptstraße 5, 10115 Berlin, Germany"),
    ("Our shop: 12 Rue de la Paix, 75002 Paris", "12 Rue de la Paix, 75002 Paris"),
    ("The studio is at Via Leopardi 83, Lirone", "Via Leopardi 83, Lirone"),
    ("He had given her his address: 9660 Paul-Nevermann-Platz 77", "9660 Paul-Nevermann-Platz 77"),
    ("Nina lives in Wilhelmsens vei 83, Oslo", "Wilhelmsens vei 83, Oslo"),
    ("Meet me at 250 Rt 59, Airmont NY 10901", "250 Rt 59, Airmont NY 10901"),
])
def test_an_address_in_prose_is_found_whole(text, address):
    assert found(text) == [address]


def test_an_address_split_over_lines_is_one_span_that_stops_before_the_next_field():
    text = "Jane Roe\n742 Evergreen Terrace\nApt 3B\nSpringfield, OR 97403\nPhone: 555-0100"
    assert found(text) == ["742 Evergreen Terrace\nApt 3B\nSpringfield, OR 97403"]


def test_literal_newline_escapes_count_as_line_breaks():
    text = r"Jane Roe\n742 Evergreen Terrace\nSuite 900\nSpringfield\nUnited States 97403\nFax: 555-0100"
    assert found(text) == [r"742 Evergreen Terrace\nSuite 900\nSpringfield\nUnited States 97403"]


def test_bulleted_address_lines_are_one_address():
    text = ">Alma Jensen\n>Imedicare\n>91215 Harjukuja 54\n>Suite 318\n>Seinäjoki\n>Finland 38524"
    assert found(text) == ["91215 Harjukuja 54\n>Suite 318\n>Seinäjoki\n>Finland 38524"]


@pytest.mark.parametrize("unit", ["Apt 5", "Apt. 827", "Suite 181", "Unit 7", "# 12", "Ste 4B", "Floor 3"])
def test_apartment_and_suite_numbers_belong_to_the_address(unit):
    text = f"Mail it to 88 Birch Lane, {unit}, Dover, DE 19901 please."
    assert found(text) == [f"88 Birch Lane, {unit}, Dover, DE 19901"]


@pytest.mark.parametrize(("text", "address"), [
    ("Send the cheque to P.O. Box 1234, Anytown, TX 75001.", "P.O. Box 1234, Anytown, TX 75001"),
    ("Returns: PO Box 77", "PO Box 77"),
    ("Our offices are located at PSC 4355, Box 4187\nAPO AP 28906", "PSC 4355, Box 4187\nAPO AP 28906"),
    ("It's in USNS Ujvary\nFPO AP 24796", "USNS Ujvary\nFPO AP 24796"),
])
def test_po_boxes_and_military_addresses_are_found(text, address):
    assert found(text) == [address]


def test_a_house_number_before_foreign_names_needs_more_evidence_than_a_street_word():
    # two numbers around a name and nothing else: too weak alone
    assert found("The restaurant is at 777 Mannikko 63") == []
    # with an address word before it, or a unit after it, it is an address
    assert found("Maja lives at 90833 Penteli 210, Mela") == ["90833 Penteli 210, Mela"]
    assert found("5100 Quadra 104\n Suite 845\n Evionnaz") == ["5100 Quadra 104\n Suite 845\n Evionnaz"]


def test_a_weak_street_word_alone_is_below_the_threshold():
    # "Way", "Union", "Park" are everyday words: a unit, a place or a postal code must back them
    assert found("We met 3 Union Square cafes") == []
    assert found("It is at 12 Timms Way") == []
    assert found("It is at 12 Timms Way, Apt 4") == ["12 Timms Way, Apt 4"]


@pytest.mark.parametrize("text", [
    "Chapter 12 Street Fighter",
    "CHAPTER 12\nStreet Fighter II: the arcade years",
    "Figure 3 Main Street diagram",
    "Route 66 is a long road.",
    "Highway 61 Revisited was released in 1965.",
    "In 2019 The Road won a prize.",
    "Python 3.11 on Windows 10 with 16 GB of RAM.",
    "There are 1234 items in 12 boxes.",
    "We walked 5 blocks down Main Street.",
    "The test suite 3 passed; see issue 42.",
    "Step 2 Drive the car to the garage.",
    "Set constr0 = 5 and OS_WIN32 = 1; seed 0x1F2E3D Street",
    "Prices rose 12% on Wall Street in 2008.",
    "Version 2 Road map: 3 Milestones, 12 Tasks",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 Downing",
    "Table 4 Lane widths, in 3 Court cases",
])
def test_prose_with_numbers_and_street_words_is_not_an_address(text):
    assert found(text) == []


@pytest.mark.parametrize("text", [
    "", " ", "\n\n\n", "12345", "Apt.", "Suite", "#", "P.O. Box", "\\n\\n12 Main St\\n", "12 Main St\\",
    "\x00\x01 12 Main Street \x02", "١٢ Main Street", "12 Main Street" * 2_000, ("12\n" * 5_000) + "Oak Street",
    "Straße 5 " * 500, "Apt 1 Apt 2 Apt 3 Suite 4 # 5 " * 200,
])
def test_odd_input_never_crashes_and_spans_stay_in_bounds(text):
    spans = address_spans(text)
    assert all(0 <= s < e <= len(text) for s, e, _, _ in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


_PIECES = st.sampled_from(["12", "4B", "66-4", "Oak", "Street", "St.", "Apt", "Suite", "#", ",", ".", "\n", "\\n",
                           "Via", "Rue", "de", "straße", "Hadikgasse", "PO", "Box", "APO", "AE", "IL", "62704",
                           "Springfield", "the", "and", "é", "🙂", "\x00", " ", "  ", "\t"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40).map(" ".join), st.text(max_size=80))
def test_any_mix_of_address_parts_gives_sorted_disjoint_spans_in_bounds(pieces, noise):
    for text in (pieces, noise + pieces, pieces + noise):
        spans = address_spans(text)
        assert all(0 <= s < e <= len(text) and 0.0 < score <= 1.0 for s, e, score, _ in spans)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_the_prefilter_needs_a_digit_and_an_address_word():
    assert address_hint("12 Oak Street") and address_hint("Hadikgasse 49") and address_hint("P.O. Box 5")
    assert not address_hint("Oak Street, Springfield")          # no digit
    assert not address_hint("Quadra 104 and 5100 others")       # no street, unit, box or address word
    assert found("Quadra 104 and 5100 others") == []


def test_street_address_is_a_default_entity_served_by_a_builtin_recognizer():
    assert "STREET_ADDRESS" in DEFAULT_ENTITIES and "STREET_ADDRESS" in PiiConfig().all_entities()
    assert any(isinstance(r, StreetAddressRecognizer) for r in builtin_recognizers("en"))
    rec = StreetAddressRecognizer()
    text = "Send it to 1234 Oak Street, Apt 5, Springfield, IL 62704."
    results = rec.analyze(text, entities=["STREET_ADDRESS"])
    assert [(r.entity_type, text[r.start:r.end]) for r in results] == [
        ("STREET_ADDRESS", "1234 Oak Street, Apt 5, Springfield, IL 62704")]
    assert rec.analyze(text, entities=["PERSON"]) == []


def test_a_name_overlapping_an_address_keeps_only_its_part_outside_it():
    """The engine cuts NER names back to their part outside an address, so the union is labelled
    an address (a street named after a person, the city of an address, a name run on into the
    address lines below it)."""
    from pipeline.pii.engine import Span, _names_cut_at_addresses

    text = "Thea Kokshoorn\n1765 Nelson Mandela Drive\nSpringfield and Ann Lee in Paris"
    street = text.index("1765")
    end = text.index(" and Ann")
    spans = [Span("STREET_ADDRESS", street, end, 0.75),
             Span("PERSON", 0, text.index("Drive"), 0.85),                       # runs into the address
             Span("PERSON", text.index("Nelson"), text.index(" Drive"), 0.85),   # inside it
             Span("LOCATION", text.index("Springfield"), end, 0.85),             # inside it
             Span("PERSON", text.index("Ann"), text.index(" in"), 0.85),         # outside
             Span("EMAIL_ADDRESS", street, street + 4, 1.0)]                    # not a NER type: kept
    got = [(s.entity, text[s.start:s.end]) for s in _names_cut_at_addresses(text, spans)]
    assert got == [("STREET_ADDRESS", text[street:end]), ("PERSON", "Thea Kokshoorn"), ("PERSON", "Ann Lee"),
                   ("EMAIL_ADDRESS", "1765")]


def test_a_phone_number_on_the_line_after_an_address_is_not_its_postal_code():
    text = "Jane Roe\n742 Evergreen Terrace\nSuite 900\nSpringfield\n07700 900123 mobile"
    assert found(text) == ["742 Evergreen Terrace\nSuite 900\nSpringfield"]
