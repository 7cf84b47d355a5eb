"""Shard writer: rollover targets and atomic files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fileio import sha256_path
from pipeline.sinks.shards import ShardWriter

SCHEMA = pa.schema([("record_id", pa.string()), ("text", pa.large_string())])


def table(n, start=0, width=10):
    return pa.table({"record_id": [f"r{i}" for i in range(start, start + n)], "text": ["x" * width] * n}, schema=SCHEMA)


def test_shards_roll_over_at_the_row_target_and_keep_every_row_in_order(tmp_path):
    with ShardWriter(tmp_path, "shard", SCHEMA, max_rows=4, max_bytes=1 << 30) as w:
        w.write(table(5))
        w.write(table(6, start=5))
    assert [f.rows for f in w.files] == [4, 4, 3]
    got = pa.concat_tables([pq.read_table(f.path) for f in w.files])
    assert got["record_id"].to_pylist() == [f"r{i}" for i in range(11)]


def test_shards_roll_over_at_the_byte_target(tmp_path):
    with ShardWriter(tmp_path, "shard", SCHEMA, max_rows=10_000, max_bytes=1024 * 8) as w:
        w.write(table(100, width=500))
    assert len(w.files) > 1 and sum(f.rows for f in w.files) == 100


def test_written_files_report_their_true_digest_and_size_and_leave_no_temporary_file(tmp_path):
    with ShardWriter(tmp_path, "shard", SCHEMA, max_rows=3, max_bytes=1 << 30) as w:
        w.write(table(7))
    for f in w.files:
        assert sha256_path(f.path) == f.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failure_mid_shard_removes_the_partial_file_but_keeps_finished_shards(tmp_path):
    w = ShardWriter(tmp_path, "shard", SCHEMA, max_rows=3, max_bytes=1 << 30)
    try:
        with w:
            w.write(table(4))
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["shard-0000.parquet"]


def test_no_rows_means_no_shard(tmp_path):
    with ShardWriter(tmp_path, "shard", SCHEMA, max_rows=3, max_bytes=1 << 30) as w:
        w.write(table(0))
    assert w.files == []
