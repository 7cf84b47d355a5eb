"""Shard writer and shard planning: the output depends only on the rows, never on how they arrived."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.fileio import sha256_path
from pipeline.sinks.shards import ShardPlanner, ShardWriter, plan_shards

SCHEMA = pa.schema([("record_id", pa.string()), ("text", pa.large_string())])


def table(n, start=0, width=10):
    return pa.table({"record_id": [f"r{i}" for i in range(start, start + n)], "text": ["x" * width] * n}, schema=SCHEMA)


def writer(d, **kw):
    kw.setdefault("max_rows", 4)
    kw.setdefault("row_group_rows", 3)
    return ShardWriter(d, SCHEMA, name=lambda k: f"part-{k:05d}.parquet", **kw)


def test_files_roll_over_at_the_row_target_and_keep_every_row_in_order(tmp_path):
    with writer(tmp_path) as w:
        w.write(table(5))
        w.write(table(6, start=5))
    assert [f.rows for f in w.files] == [4, 4, 3]
    got = pa.concat_tables([pq.read_table(f.path) for f in w.files])
    assert got["record_id"].to_pylist() == [f"r{i}" for i in range(11)]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_the_same_rows_give_byte_identical_files_however_they_are_batched(tmp_path_factory, cuts):
    total = 40
    a_dir, b_dir = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    with writer(a_dir, max_rows=17) as a:
        a.write(table(total))
    with writer(b_dir, max_rows=17) as b:
        start = 0
        for c in cuts + [total]:
            n = min(c, total - start)
            b.write(table(n, start=start))
            start += n
            if start >= total:
                break
    assert [f.sha256 for f in a.files] == [f.sha256 for f in b.files]


def test_row_groups_have_the_configured_size(tmp_path):
    with writer(tmp_path, max_rows=100, row_group_rows=7) as w:
        w.write(table(20))
    meta = pq.ParquetFile(w.files[0].path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7, 7, 6]


def test_written_files_report_their_true_digest_and_leave_no_temporary_file(tmp_path):
    with writer(tmp_path) as w:
        w.write(table(7))
    for f in w.files:
        assert sha256_path(f.path) == f.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failure_mid_file_removes_the_partial_file_but_keeps_finished_ones(tmp_path):
    w = writer(tmp_path, max_rows=3, row_group_rows=1)
    try:
        with w:
            w.write(table(4))
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["part-00000.parquet"]


def test_no_rows_means_no_file(tmp_path):
    with writer(tmp_path) as w:
        w.write(table(0))
    assert w.files == []


def test_shards_close_at_the_row_or_byte_target():
    assert plan_shards(np.array([1] * 7), 3, 10**9).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert plan_shards(np.array([4, 4, 4, 20, 1]), 100, 10).tolist() == [0, 0, 1, 2, 3]
    assert plan_shards(np.array([], dtype=np.int64), 3, 10).tolist() == []


def test_text_columns_are_written_plain_and_without_statistics_the_others_with_both(tmp_path):
    with writer(tmp_path, plain_columns=frozenset({"text"})) as w:
        w.write(table(4))
    meta = pq.ParquetFile(w.files[0].path).metadata.row_group(0)
    rid, text = meta.column(0), meta.column(1)
    assert rid.is_stats_set and rid.statistics.min == "r0" and rid.statistics.max == "r2"
    assert "RLE_DICTIONARY" in rid.encodings
    assert not text.is_stats_set
    assert "RLE_DICTIONARY" not in text.encodings
    assert pq.read_table(w.files[0].path)["text"].to_pylist() == ["x" * 10] * 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=60), st.lists(st.integers(0, 60), max_size=6),
       st.integers(1, 7), st.integers(1, 120))
def test_shards_planned_piece_by_piece_equal_one_plan_over_all(sizes, cuts, max_rows, max_bytes):
    sizes = np.array(sizes, dtype=np.int64)
    bounds = [0, *sorted(min(c, len(sizes)) for c in cuts), len(sizes)]
    planner = ShardPlanner(max_rows, max_bytes)
    pieces = [planner.plan(sizes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    assert np.concatenate(pieces).tolist() == plan_shards(sizes, max_rows, max_bytes).tolist()
