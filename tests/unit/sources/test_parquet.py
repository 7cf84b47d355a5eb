"""ParquetReader: row-group units, continuous row numbers, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ParquetSourceConfig, UnitConfig
from pipeline.errors import SourceError
from pipeline.sources import reader_for
from pipeline.sources.parquet import ParquetReader

from tests.unit.sources.support import plan_source, read_source, read_units


def parquet(tmp_path: Path, table: pa.Table, name: str = "data.parquet", row_group_size: int | None = None) -> Path:
    p = tmp_path / name
    pq.write_table(table, p, row_group_size=row_group_size)
    return p


def texts(n: int, prefix: str = "doc") -> pa.Table:
    return pa.table({"text": [f"{prefix} {i}" for i in range(n)], "n": list(range(n))})


def source(*paths: Path, **kw) -> ParquetSourceConfig:
    return ParquetSourceConfig(kind="parquet", name="s", paths=tuple(str(p) for p in paths), **kw)


def test_the_reader_is_registered_under_its_kind():
    assert isinstance(reader_for("parquet"), ParquetReader)


def test_every_row_is_read_with_its_columns_and_types(tmp_path):
    table = pa.table({"text": ["a", "b"], "score": [0.5, 1.5], "tags": [["x"], []], "meta": [{"k": 1}, {"k": 2}]})
    p = parquet(tmp_path, table)

    result = read_source(source(p))

    assert result.records == table.to_pylist()
    assert result.rows == [0, 1]
    assert result.schemas[0] == table.schema


def test_units_are_runs_of_whole_row_groups_up_to_target_rows(tmp_path):
    p = parquet(tmp_path, texts(100), row_group_size=10)

    planned = plan_source(source(p), UnitConfig(target_rows=25))

    # Row groups of 10 rows are taken until a unit holds at least 25 rows: 30 rows, 3 groups.
    assert [(u.part, u.start, u.stop, u.row_offset) for u in planned] == [
        (0, 0, 3, 0),
        (1, 3, 6, 30),
        (2, 6, 9, 60),
        (3, 9, 10, 90),
    ]
    assert {(u.relpath, u.path) for u in planned} == {("data.parquet", str(p.resolve()))}


def test_row_numbers_are_continuous_across_units(tmp_path):
    p = parquet(tmp_path, texts(100), row_group_size=7)
    units = UnitConfig(target_rows=20)

    result = read_source(source(p), units)

    assert len(result.units) > 3
    assert result.rows == list(range(100))
    assert result.texts() == [f"doc {i}" for i in range(100)]


def test_each_unit_read_on_its_own_numbers_its_rows_from_its_offset(tmp_path):
    p = parquet(tmp_path, texts(50), row_group_size=10)
    src, units = source(p), UnitConfig(target_rows=10)
    planned = plan_source(src, units)

    for unit in planned:
        got = read_units(src, [unit], units)
        assert got.rows == list(range(unit.row_offset, unit.row_offset + 10))
        assert got.records == texts(50).slice(unit.row_offset, 10).to_pylist()


def test_target_bytes_also_closes_a_unit(tmp_path):
    table = pa.table({"text": [f"{i} " + "x" * 200 for i in range(40)]})
    p = parquet(tmp_path, table, row_group_size=10)

    planned = plan_source(source(p), UnitConfig(target_bytes=1024, target_rows=1_000_000))

    assert [(u.start, u.stop) for u in planned] == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_small_files_are_one_unit_each(tmp_path):
    parquet(tmp_path, texts(3, "a"), "a.parquet")
    parquet(tmp_path, texts(2, "b"), "b.parquet")

    result = read_source(source(tmp_path))

    assert [(u.relpath, u.start, u.stop) for u in result.units] == [("a.parquet", 0, 1), ("b.parquet", 0, 1)]
    assert result.rows == [0, 1, 2, 0, 1]
    assert result.texts() == ["a 0", "a 1", "a 2", "b 0", "b 1"]


def test_an_empty_file_is_one_unit_without_records(tmp_path):
    p = parquet(tmp_path, texts(0))

    result = read_source(source(p))

    assert len(result.units) == 1
    assert (result.records, result.rejects) == ([], [])


def test_a_file_that_is_not_parquet_gets_a_unit_with_a_file_error_and_reading_it_raises(tmp_path):
    p = tmp_path / "fake.parquet"
    p.write_bytes(b"this is not a parquet file at all")
    src = source(p)

    (unit,) = plan_source(src)

    assert unit.file_error is not None and "fake.parquet" in unit.file_error
    with pytest.raises(SourceError, match="fake.parquet.*not a readable Parquet file"):
        list(reader_for("parquet").read(unit, src, UnitConfig()))


def test_a_bad_file_does_not_stop_the_good_files_of_the_source_from_being_planned(tmp_path):
    parquet(tmp_path, texts(3), "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 truncated")

    planned = plan_source(source(tmp_path))

    assert [(u.relpath, u.file_error is None) for u in planned] == [("a.parquet", True), ("b.parquet", False)]


def test_corrupt_data_pages_raise_a_source_error_naming_the_file(tmp_path):
    p = parquet(tmp_path, texts(1000, "row " + "y" * 40), "corrupt.parquet", row_group_size=100)
    data = bytearray(p.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    p.write_bytes(bytes(data))

    with pytest.raises(SourceError, match="corrupt.parquet"):
        read_source(source(p))


@pytest.mark.parametrize("column", [pa.array([1, 2, 3]), pa.array([b"a", b"b", b"c"]), pa.array([["a"], ["b"], ["c"]])])
def test_a_text_column_that_is_not_a_string_rejects_every_row(tmp_path, column):
    p = parquet(tmp_path, pa.table({"text": column}))

    result = read_source(source(p))

    stored_type = pq.read_schema(p).field("text").type
    assert result.records == []
    assert result.reasons() == {i: f"text field 'text' is not a string ({stored_type})" for i in range(3)}


def test_a_file_without_the_text_column_rejects_every_row(tmp_path):
    p = parquet(tmp_path, pa.table({"body": ["a", "b"]}))

    result = read_source(source(p))

    assert result.reasons() == {0: "missing text field 'text'", 1: "missing text field 'text'"}


def test_null_and_blank_texts_are_rejected_with_their_row_numbers_across_units(tmp_path):
    values = [None if i % 10 == 3 else (" " if i % 10 == 7 else f"t{i}") for i in range(40)]
    p = parquet(tmp_path, pa.table({"text": values}), row_group_size=10)

    result = read_source(source(p), UnitConfig(target_rows=10))

    assert result.rows == [i for i in range(40) if i % 10 not in (3, 7)]
    assert result.reasons() == {
        **{i: "text field 'text' is missing or null" for i in range(3, 40, 10)},
        **{i: "empty or whitespace-only text" for i in range(7, 40, 10)},
    }


@pytest.mark.parametrize("text_type", [pa.large_string(), pa.string_view()])
def test_other_string_types_are_text(tmp_path, text_type):
    p = parquet(tmp_path, pa.table({"text": pa.array(["a", "", "c"]).cast(text_type)}))

    result = read_source(source(p))

    assert result.texts() == ["a", "c"]
    assert result.reasons() == {1: "empty or whitespace-only text"}


def test_integer_ids_become_strings(tmp_path):
    p = parquet(tmp_path, pa.table({"text": ["a", "b"], "id": pa.array([10, 11], pa.int64())}))

    result = read_source(source(p, id_field="id"))

    assert [r["id"] for r in result.records] == ["10", "11"]


def test_a_missing_id_rejects_its_row_and_a_missing_id_column_rejects_the_file(tmp_path):
    with_ids = parquet(tmp_path, pa.table({"text": ["a", "b"], "id": ["x", None]}), "ids.parquet")
    without = parquet(tmp_path, pa.table({"text": ["c"]}), "no_ids.parquet")

    result = read_source(source(with_ids, without, id_field="id"))

    assert [r["id"] for r in result.records] == ["x"]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (1, "id field 'id' is missing or null"),
        (0, "missing id field 'id'"),
    ]


# --- units.limits ----------------------------------------------------------------------------------

def test_a_huge_cell_becomes_a_rejected_row_and_its_neighbours_are_read(tmp_path):
    table = pa.table({"text": ["a", "b" * (3 << 20), "c"], "n": [0, 1, 2]})
    p = parquet(tmp_path, table)
    result = read_source(source(p), UnitConfig(limits={"max_record_bytes": 1 << 20}))
    assert result.texts() == ["a", "c"] and result.rows == [0, 2]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (1, "record of 3,145,728 bytes exceeds units.limits.max_record_bytes (1,048,576)")]


def test_a_file_whose_row_groups_inflate_past_the_budget_stops_after_the_groups_before(tmp_path):
    # 64 rows of 64 KiB of one character: about 4 MiB in memory, a few KiB on disk.
    table = pa.table({"text": ["z" * 65536] * 64, "n": list(range(64))})
    p = tmp_path / "bomb.parquet"
    pq.write_table(table, p, row_group_size=8, compression="zstd", use_dictionary=False)
    assert p.stat().st_size < 40_000
    units = UnitConfig(limits={"max_compression_ratio": 10, "ratio_exempt_bytes": 1 << 20})
    (unit,) = plan_source(source(p), units)
    rows = []
    with pytest.raises(SourceError, match=r"bomb.parquet: decompresses to more than 1,048,576 bytes"):
        for batch in ParquetReader().read(unit, source(p), units):
            rows.extend(batch.rows.tolist())
    assert rows == list(range(8))  # row groups of 512 KiB: the second takes the file past 1 MiB
    with_ratio_off = UnitConfig(limits={"max_compression_ratio": None})
    assert len(read_units(source(p), [unit], with_ratio_off).rows) == 64


def test_image_cells_over_max_image_bytes_are_rejected(tmp_path):
    table = pa.table({"image": pa.array([b"\x89PNG small", b"\x89PNG" + b"\0" * 5000], pa.binary()), "caption": ["a", "b"]})
    p = parquet(tmp_path, table)
    result = read_source(source(p, image_column="image"), UnitConfig(limits={"max_image_bytes": 4096}))
    assert result.rows == [0]
    assert [r.reason for r in result.rejects] == ["image of 5,004 bytes exceeds units.limits.max_image_bytes (4,096)"]
