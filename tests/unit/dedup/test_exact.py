"""Exact dedup: normalisation, keys, and the deterministic survivor rule."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import NormalizeConfig
from pipeline.dedup.exact import exact_keys, normalize_text, resolve_exact
from pipeline.sources.base import string_digests

DEFAULT = NormalizeConfig()


def keys(texts, cfg=DEFAULT):
    return exact_keys(pa.array(texts, pa.large_string()), cfg)


def test_whitespace_variants_share_a_key_by_default():
    k = keys(["Hello  world", " Hello\n\tworld ", "Hello world"])
    assert k[0] == k[1] == k[2]


def test_case_matters_unless_lowercase_is_configured():
    assert len(set(keys(["Hello", "hello"]))) == 2
    assert len(set(keys(["Hello", "hello"], NormalizeConfig(lowercase=True)))) == 1


def test_nfc_folds_composed_and_decomposed_accents():
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert len(set(keys([composed, decomposed]))) == 1
    assert len(set(keys([composed, decomposed], NormalizeConfig(unicode="none")))) == 2


def test_without_normalisation_the_key_is_the_content_digest():
    arr = pa.array(["a b", "a  b"], pa.large_string())
    cfg = NormalizeConfig(unicode="none", collapse_whitespace=False)
    digests = string_digests(arr)
    assert exact_keys(arr, cfg, digests) == digests
    assert digests[0] != digests[1]


@given(st.lists(st.text(max_size=40), min_size=1, max_size=20))
def test_normalisation_is_idempotent(texts):
    arr = pa.array(texts, pa.large_string())
    once = normalize_text(arr, DEFAULT)
    assert normalize_text(once, DEFAULT).to_pylist() == once.to_pylist()


@given(st.text(max_size=60), st.sampled_from([" ", "  ", "\n", "\t ", "\r\n"]))
def test_any_whitespace_run_yields_the_same_key(text, ws):
    words = text.split()
    assert keys([" ".join(words)]) == keys([ws.join(words) + ws])


def test_string_digests_match_hashlib_including_slices_and_empty_strings():
    import hashlib

    arr = pa.array(["", "x", "héllo", "end"], pa.large_string()).slice(1)
    assert string_digests(arr) == [hashlib.sha256(s.encode()).digest() for s in ["x", "héllo", "end"]]


def frame(rows):
    return pl.DataFrame(
        rows, schema={"unit": pl.Int64, "row": pl.Int64, "record_id": pl.String, "key": pl.Binary,
                      "priority": pl.Int64, "order_str": pl.String, "order_int": pl.Int64}, orient="row")


def test_the_higher_priority_source_survives():
    dups = resolve_exact(frame([(0, 0, "a/x:0", b"k", 0, "a/x", 0), (1, 5, "b/y:5", b"k", 1, "b/y", 5)]))
    assert dups.to_dicts() == [{"unit": 0, "row": 0, "duplicate_of": "b/y:5"}]


def test_positional_ids_compare_by_row_number_not_as_text():
    dups = resolve_exact(frame([(0, 10, "a/x:10", b"k", 0, "a/x", 10), (0, 9, "a/x:9", b"k", 0, "a/x", 9)]))
    assert dups.to_dicts() == [{"unit": 0, "row": 10, "duplicate_of": "a/x:9"}]


def test_every_dropped_copy_names_the_same_survivor_and_input_order_does_not_matter():
    rows = [(0, i, f"s/f:{i}", b"k" if i % 2 else b"j", 0, "s/f", i) for i in range(8)]
    forward = resolve_exact(frame(rows)).sort("row")
    backward = resolve_exact(frame(rows[::-1])).sort("row")
    assert forward.equals(backward)
    assert set(forward.filter(pl.col("row") % 2 == 1)["duplicate_of"]) == {"s/f:1"}
    assert set(forward.filter(pl.col("row") % 2 == 0)["duplicate_of"]) == {"s/f:0"}
    assert forward.height == 6


def test_no_records_means_no_duplicates():
    assert resolve_exact(frame([])).height == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aZ \t\n\r\x0b\x0c\x1c.é\u00a0\u3000 ")), max_size=30), max_size=12),
       st.booleans(), st.booleans())
def test_the_compiled_ascii_path_gives_the_same_keys_as_the_general_path(texts, lowercase, collapse):
    import hashlib

    cfg = NormalizeConfig(lowercase=lowercase, collapse_whitespace=collapse)
    arr = pa.array(texts, pa.large_string())
    general = [hashlib.sha256(s.encode()).digest() for s in normalize_text(arr, cfg).to_pylist()]
    assert exact_keys(arr, cfg) == general
    # With the content digests at hand, a row normalisation leaves alone reuses its digest.
    assert exact_keys(arr, cfg, string_digests(arr)) == general


# Characters around every rule of the compiled non-ASCII path: composed and combining, Maybe
# (second halves of composites, Hangul V/T jamo), NFC singletons, compatibility forms, every kind
# of whitespace, supplementary characters inside and outside the emoji blocks.
_UNICODE = list("aZ \t\n.é") + ["e\u0301", "\u0301", "\u0327", "\u1100", "\u1161", "\u11a8", "\uac00", "\u0cc6",
            "\u0cc2", "\u2000", "\u2001", "\u2002", "\u00a0", "\u0085", "\u3000", "\u1680", "\u202f", "\u1e9b",
            "\uf900", "\uff21", "\u212b", "\u00c5", "\u0591", "\u05d0", "\u4e2d", "\U0001f600", "\U0001f1e6",
            "\U00010000", "\U0001d15e", "\x1c", "\u00df", "\u03a3"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_UNICODE), max_size=12).map("".join), max_size=10),
       st.sampled_from(["NFC", "NFKC", "none"]), st.booleans(), st.booleans())
def test_the_compiled_unicode_path_gives_the_same_keys_as_the_general_path(texts, form, lowercase, collapse):
    import hashlib

    cfg = NormalizeConfig(unicode=form, lowercase=lowercase, collapse_whitespace=collapse)
    arr = pa.array(texts, pa.large_string())
    general = [hashlib.sha256(s.encode()).digest() for s in normalize_text(arr, cfg).to_pylist()]
    assert exact_keys(arr, cfg) == general
    # With the content digests at hand, a row normalisation leaves alone reuses its digest.
    assert exact_keys(arr, cfg, string_digests(arr)) == general


# Long rows of words: the compiled paths take aligned eight-byte words whole, so the rules must
# hold across word edges (a space ending one word and starting the next, a tab or a capital or a
# non-ASCII character anywhere in a word) and at every alignment of the rows (slices).
_WORDS = st.sampled_from(["the", "Quick", "brown", "FOX", "jumps", "over", "a", "lazy", "dog.", "caf\u00e9", "na\u00efve",
                          "e\u0301", "\u4e2d\u6587", "x" * 9, "don\u2019t"])
_GAPS = st.sampled_from([" ", " ", " ", "  ", "\t", "\n\n", " \n", "\u00a0", "\u3000 ", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(_WORDS, _GAPS), max_size=60).map(lambda ws: "".join(a + b for a, b in ws)), max_size=8),
       st.integers(0, 7), st.sampled_from(["NFC", "none"]), st.booleans(), st.booleans())
def test_the_word_at_a_time_paths_give_the_same_keys_as_the_general_path(texts, skip, form, lowercase, collapse):
    import hashlib

    cfg = NormalizeConfig(unicode=form, lowercase=lowercase, collapse_whitespace=collapse)
    arr = pa.array(["pad" * skip] + texts, pa.large_string()).slice(1)  # rows start off the first one's alignment
    shifted = pa.array([" " * skip + "".join(texts)] + texts, pa.large_string()).slice(1)
    general = [hashlib.sha256(s.encode()).digest() for s in normalize_text(arr, cfg).to_pylist()]
    assert exact_keys(arr, cfg) == general
    assert exact_keys(shifted, cfg) == general
    assert exact_keys(arr, cfg, string_digests(arr)) == general
