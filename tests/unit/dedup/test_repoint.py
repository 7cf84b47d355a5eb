"""The partitioned join that re-points exact copies past a near-dropped survivor: every partition
file has a row group per partition, the join matches full ids only, and a file cut under another
plan is refused."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.repoint import (COPIES_SCHEMA, DROPS_SCHEMA, read_partition, repoint, repoint_rows,
                                    write_partitioned)
from pipeline.errors import PipelineError

COPIES = pl.DataFrame({"_i": [9, 3, 7, 5], "duplicate_of": ["s1", "s2", "s1", "kept"]}, schema=COPIES_SCHEMA)
DROPS = pl.DataFrame({"_i": [1, 2, 4], "record_id": ["s1", "s2", "other"], "duplicate_of": ["t1", "t2", "t3"]},
                     schema=DROPS_SCHEMA)


def _joined(tmp_path, parts: int) -> pl.DataFrame:
    write_partitioned(COPIES, "duplicate_of", parts, tmp_path / "copies.parquet")
    write_partitioned(DROPS.slice(0, 1), "record_id", parts, tmp_path / "g0.parquet")  # two producers of drops
    write_partitioned(DROPS.slice(1), "record_id", parts, tmp_path / "g1.parquet")
    drops = [tmp_path / "g0.parquet", tmp_path / "g1.parquet"]
    return pl.concat([repoint_rows(read_partition([tmp_path / "copies.parquet"], p, parts, COPIES_SCHEMA),
                                   read_partition(drops, p, parts, DROPS_SCHEMA)) for p in range(parts)]).sort("_i")


@pytest.mark.parametrize("parts", [1, 2, 7])
def test_copies_are_re_pointed_the_same_in_any_number_of_partitions(tmp_path, parts):
    assert _joined(tmp_path, parts).rows() == [(3, "t2"), (7, "t1"), (9, "t1")]
    # a row group per partition, empty ones too, so partition p is row group p of every file
    assert pq.ParquetFile(tmp_path / "copies.parquet").num_row_groups == parts


def test_ids_sharing_a_partition_are_matched_on_the_full_id(tmp_path):
    # One partition holds every id, as a hash collision would: "kept" and "other" never match.
    assert 5 not in _joined(tmp_path, 1)["_i"].to_list()


def test_the_first_drop_of_an_id_in_input_order_names_the_survivor():
    drops = pl.DataFrame({"_i": [8, 2], "record_id": ["s1", "s1"], "duplicate_of": ["late", "early"]},
                         schema=DROPS_SCHEMA)
    assert repoint_rows(COPIES, drops).rows() == [(7, "early"), (9, "early")]


def test_a_file_cut_into_another_number_of_partitions_is_refused(tmp_path):
    write_partitioned(COPIES, "duplicate_of", 3, tmp_path / "copies.parquet")
    with pytest.raises(PipelineError, match="3 partition.*plan 4.*run the barrier again"):
        read_partition([tmp_path / "copies.parquet"], 0, 4, COPIES_SCHEMA)


def test_repoint_writes_the_new_survivor_at_the_rows_positions_only():
    records = pl.DataFrame({"_i": [0, 1, 2], "duplicate_of": ["s1", None, "s2"]})
    rows = pl.DataFrame({"_i": [0], "duplicate_of": ["t1"]}, schema=COPIES_SCHEMA)
    assert repoint(records, rows)["duplicate_of"].to_list() == ["t1", None, "s2"]
    assert records["duplicate_of"].to_list() == ["s1", None, "s2"]  # the input is not changed
    assert repoint(records, rows.clear()).equals(records)
