"""Whitespace collapsing and word counts of paragraph_dedup's units: the byte scan that spares most
lines the regex agrees with the regex definition on any text, Unicode whitespace included."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from pipeline.dedup.paragraphs import _collapsed_words

# Letters of one to four UTF-8 bytes (é, €, 漢, 😀: the lead bytes of some share a prefix with
# whitespace's) and every whitespace `\s` knows, ASCII and not.
ALPHABET = "ab é€漢😀 \t\r\x0b\x0c\x1c\x85\xa0\u1680\u2003\u2028\u2029\u202f\u205f\u3000"


def _reference(texts: list[str]) -> tuple[list[str], list[int]]:
    flat = pl.Series(texts, dtype=pl.String).str.replace_all(r"\s+", " ").str.strip_chars()
    return flat.to_list(), [t.count(" ") + 1 if t else 0 for t in flat.to_list()]


@given(st.lists(st.text(alphabet=ALPHABET, max_size=30), max_size=40))
def test_lines_scan_and_regex_agree(texts):
    for lines in (True, False):
        text, words = _collapsed_words(pl.Series(texts, dtype=pl.String), lines)
        assert (text.to_list(), words.to_list()) == _reference(texts)


def test_a_slice_of_a_larger_column_is_read_at_its_own_offsets():
    column = pl.Series(["  lead", "plain words here", "tail  ", "", "x\u00a0y"], dtype=pl.String)
    text, words = _collapsed_words(column.slice(1, 4), True)
    assert text.to_list() == ["plain words here", "tail", "", "x y"]
    assert words.to_list() == [3, 1, 0, 2]
