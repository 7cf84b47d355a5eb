"""paragraph_dedup's byte kernels agree with the polars and Python definitions they replace: the
lines-mode split (units, spans, words, hashes and record summaries), the write-time span removal
and the barrier's first occurrence, on any text (Unicode case and whitespace, nulls, slices)."""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dedup.paragraphs import DOC_SCHEMA, UNIT_SCHEMA, _is_first, cut_spans, remove_spans, split_units

# ASCII letters of both cases, every whitespace `\s` knows (ASCII and not), newlines, separators
# Python splits lines on but Rust does not treat as whitespace (\x1c), and letters whose lowercase
# is longer (İ) or depends on context (Σ).
ALPHABET = "aZ é€漢😀İΣ \t\r\n\n\x0b\x0c\x1c\x85\xa0\u1680\u2003\u2028\u202f\u3000"
OPTIONS = st.tuples(st.booleans(), st.booleans(), st.integers(0, 3))


def _reference(texts: list[str | None], lowercase: bool, collapse: bool, min_chars: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines mode as polars expressions: split on \\n, lowercase, collapse `\\s+` to one space and strip."""
    frame = pl.DataFrame({"row": pl.Series(range(len(texts)), dtype=pl.Int64),
                          "text": pl.Series(texts, dtype=pl.String).fill_null("")})
    parts = (frame.select("row", pl.col("text").str.len_chars().alias("chars"), pl.col("text").str.split("\n").alias("p"))
             .explode("p").with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("row").alias("idx"),
                                        (pl.col("p").str.len_chars() + 1).alias("_len")))
    lower = pl.col("p").str.to_lowercase() if lowercase else pl.col("p")
    collapsed = lower.str.replace_all(r"\s+", " ").str.strip_chars()
    words = pl.col("p").str.replace_all(r"\s+", " ").str.strip_chars()
    parts = parts.with_columns(
        (pl.col("_len").cum_sum().over("row") - pl.col("_len")).alias("start"),
        (collapsed if collapse else lower).alias("n"),
        pl.when(words != "").then(words.str.count_matches(" ") + 1).otherwise(0).cast(pl.Int32).alias("words"),
    ).with_columns(pl.min_horizontal(pl.col("start") + pl.col("_len"), pl.col("chars")).alias("end"),
                   (pl.col("n").str.len_chars() >= min_chars).alias("_long"))
    docs = parts.group_by("row", maintain_order=True).agg(
        pl.col("chars").first(), pl.col("words").sum(), pl.len().alias("units"),
        (~pl.col("_long")).sum().alias("short_units")).cast(DOC_SCHEMA)
    units = parts.filter("_long").select("row", "idx", "start", "end", "words",
                                         plh.col("n").nchash.xxh3_64().alias("hash")).cast(UNIT_SCHEMA)
    return units, docs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=ALPHABET, max_size=40)), max_size=12), OPTIONS)
def test_the_lines_kernel_splits_normalises_and_hashes_as_the_polars_definition(texts, options):
    units, docs = split_units(np.arange(len(texts), dtype=np.int64), pa.array(texts, pa.string()), "line", *options)
    want_units, want_docs = _reference(texts, *options)
    assert units.equals(want_units)
    assert docs.equals(want_docs)


@given(st.lists(st.text(alphabet=ALPHABET, max_size=30), min_size=3, max_size=10), OPTIONS)
def test_a_slice_or_chunks_of_a_larger_column_are_read_at_their_own_offsets(texts, options):
    rows = np.arange(1, len(texts) - 1, dtype=np.int64)
    want = _reference(texts[1:-1], *options)
    want = (want[0].with_columns(pl.col("row") + 1), want[1].with_columns(pl.col("row") + 1))
    for column in (pa.array(texts, pa.large_string()).slice(1, len(texts) - 2),
                   pa.chunked_array([pa.array(texts[1:2], pa.string()), pa.array(texts[2:-1], pa.string())]),
                   pa.array(texts[1:-1], pa.string_view())):
        units, docs = split_units(rows, column, "line", *options)
        assert units.equals(want[0]) and docs.equals(want[1])


@st.composite
def _texts_and_spans(draw):
    texts = draw(st.lists(st.one_of(st.none(), st.text(alphabet=ALPHABET, max_size=30)), max_size=8))
    spans = []
    for i, t in enumerate(texts):
        cuts = sorted(draw(st.sets(st.integers(0, len(t or "") + 1), max_size=6)))
        spans += [(i, s, e) for s, e in zip(cuts[::2], cuts[1::2])]
    return texts, spans


@given(_texts_and_spans(), st.sampled_from([pa.string(), pa.large_string()]))
def test_cutting_spans_from_a_column_is_remove_spans_on_each_text(case, kind):
    texts, spans = case
    record = np.array([r for r, _s, _e in spans], np.int64)
    start = np.array([s for _r, s, _e in spans], np.int64)
    end = np.array([e for _r, _s, e in spans], np.int64)
    new, records, chars = cut_spans(pa.array(texts, kind), record, start, end)
    want = [None if t is None else remove_spans(t, [(s, e) for r, s, e in spans if r == i]) for i, t in enumerate(texts)]
    assert new.type == kind and new.to_pylist() == want
    assert records == len({r for r, _s, _e in spans if texts[r] is not None})
    assert chars == sum(len(t) - len(w) for t, w in zip(texts, want) if t is not None)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=30,
                unique_by=lambda x: (x[1], x[2])), st.booleans())
def test_the_first_occurrence_is_the_lowest_rank_then_position_packed_or_not(occurrences, huge):
    # `huge`: ranks too wide to pack with the positions into 63 bits, the unpacked expression.
    scale = 1 << 60 if huge else 1
    frame = pl.DataFrame({"hash": [h for h, _r, _i in occurrences], "rank": [r * scale for _h, r, _i in occurrences],
                          "idx": [i << 20 if huge else i for _h, _r, i in occurrences]},
                         schema={"hash": pl.UInt64, "rank": pl.Int64, "idx": pl.Int32})
    first = frame.select(_is_first(frame)).to_series().to_list()
    lowest = {}
    for h, r, i in frame.iter_rows():
        lowest[h] = min(lowest.get(h, (r, i)), (r, i))
    assert first == [lowest[h] == (r, i) for h, r, i in frame.iter_rows()]
