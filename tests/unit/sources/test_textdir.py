"""TextDirReader: one file is one record, grouped into units, identified by relative path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import TextDirSourceConfig, UnitConfig
from pipeline.sources import reader_for
from pipeline.sources.textdir import TextDirReader

from tests.unit.sources.support import plan_source, read_source, read_units, sha256


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def source(*paths: Path, **kw) -> TextDirSourceConfig:
    return TextDirSourceConfig(kind="text_dir", name="s", paths=tuple(str(p) for p in paths), **kw)


def test_the_reader_is_registered_under_its_kind():
    assert isinstance(reader_for("text_dir"), TextDirReader)


def test_each_file_is_one_record_with_its_text_and_relative_path(tmp_path):
    root = write(tmp_path / "docs", {"b.txt": b"second file\nwith two lines\n", "a.txt": b"first", "sub/c.txt": b"third"})

    result = read_source(source(root))

    assert result.records == [
        {"text": "first", "path": "a.txt"},
        {"text": "second file\nwith two lines\n", "path": "b.txt"},
        {"text": "third", "path": "sub/c.txt"},
    ]
    assert result.relpaths == ["a.txt", "b.txt", "sub/c.txt"]
    assert result.rows == [0, 1, 2]


def test_only_files_ending_like_the_glob_are_listed(tmp_path):
    root = write(tmp_path, {"a.txt": b"a", "b.md": b"b", "c.txt.bak": b"c", "d/e.txt": b"e"})

    listed = TextDirReader().list_inputs(source(root))

    assert [rel for _, rel in listed] == ["a.txt", "d/e.txt"]


def test_another_glob_suffix_selects_other_files(tmp_path):
    root = write(tmp_path, {"a.txt": b"a", "b.md": b"b"})

    listed = TextDirReader().list_inputs(source(root, glob="**/*.md"))

    assert [rel for _, rel in listed] == ["b.md"]


def test_a_file_that_is_not_valid_utf8_is_rejected_with_its_relative_path(tmp_path):
    root = write(tmp_path, {"a.txt": b"fine", "b.txt": b"caf\xe9 latin-1", "c.txt": b"also fine"})

    result = read_source(source(root))

    assert result.texts() == ["fine", "also fine"]
    assert result.relpaths == ["a.txt", "c.txt"]
    (reject,) = result.rejects
    assert (reject.row, reject.reason, reject.relpath) == (1, "invalid UTF-8", "b.txt")
    assert reject.raw_sha256 == sha256(b"caf\xe9 latin-1")


@pytest.mark.parametrize("data", [b"", b"  \n\t\n"])
def test_an_empty_or_blank_file_is_rejected_with_its_relative_path(tmp_path, data):
    root = write(tmp_path, {"a.txt": b"fine", "blank.txt": data})

    result = read_source(source(root))

    assert result.relpaths == ["a.txt"]
    assert [(r.row, r.reason, r.relpath) for r in result.rejects] == [(1, "empty or whitespace-only text", "blank.txt")]


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    root = write(tmp_path, {"bom.txt": b"\xef\xbb\xbfhello"})

    assert read_source(source(root)).texts() == ["hello"]


def test_the_text_column_is_named_after_the_text_field(tmp_path):
    root = write(tmp_path, {"a.txt": b"content"})

    result = read_source(source(root, text_field="body"))

    assert result.records == [{"body": "content", "path": "a.txt"}]


def test_files_are_grouped_into_units_of_about_target_bytes(tmp_path):
    root = write(tmp_path, {f"f{i:02d}.txt": b"x" * 400 for i in range(10)})

    planned = plan_source(source(root), UnitConfig(target_bytes=1024))

    # A unit closes once it holds at least 1024 bytes: three files of 400 bytes.
    assert [len(u.files) for u in planned] == [3, 3, 3, 1]
    assert [u.part for u in planned] == [0, 1, 2, 3]
    assert [(u.start, u.stop, u.row_offset) for u in planned] == [(0, 3, 0), (0, 3, 3), (0, 3, 6), (0, 1, 9)]
    assert [entry.split("\t")[1] for u in planned for entry in u.files] == [f"f{i:02d}.txt" for i in range(10)]


def test_files_are_grouped_into_units_of_at_most_target_rows_files(tmp_path):
    root = write(tmp_path, {f"f{i}.txt": b"tiny" for i in range(5)})

    planned = plan_source(source(root), UnitConfig(target_rows=2))

    assert [len(u.files) for u in planned] == [2, 2, 1]


def test_every_file_is_read_once_across_units_with_its_own_relative_path(tmp_path):
    files = {f"d{i % 3}/f{i:02d}.txt": f"text of file {i}".encode() for i in range(12)}
    root = write(tmp_path, files)
    units = UnitConfig(target_rows=5, batch_bytes=1024)

    result = read_source(source(root), units)

    assert sorted(zip(result.relpaths, result.texts())) == sorted((rel, data.decode()) for rel, data in files.items())
    assert all(r["path"] == rel for r, rel in zip(result.records, result.relpaths))


def test_a_unit_split_into_several_batches_keeps_rows_and_relative_paths_aligned(tmp_path):
    files = {f"f{i:02d}.txt": (f"{i} " + "z" * 700).encode() for i in range(8)}
    files["f03.txt"] = b"\xff bad"
    root = write(tmp_path, files)
    src = source(root)
    (unit,) = plan_source(src)

    batches = list(reader_for("text_dir").read(unit, src, UnitConfig(batch_bytes=1024)))
    result = read_units(src, [unit], UnitConfig(batch_bytes=1024))

    assert len(batches) > 2
    assert result.rows == [0, 1, 2, 4, 5, 6, 7]
    assert [t.split(" ")[0] for t in result.texts()] == ["0", "1", "2", "4", "5", "6", "7"]
    assert result.relpaths == [f"f{i:02d}.txt" for i in (0, 1, 2, 4, 5, 6, 7)]
    assert [(r.row, r.relpath) for r in result.rejects] == [(3, "f03.txt")]


def test_a_file_named_directly_is_read_even_without_the_glob_suffix(tmp_path):
    p = write(tmp_path, {"notes.md": b"markdown"}) / "notes.md"

    result = read_source(source(p))

    assert result.records == [{"text": "markdown", "path": "notes.md"}]


def test_a_file_keeps_its_row_number_whatever_the_grouping_into_units(tmp_path):
    root = write(tmp_path, {f"f{i}.txt": (b"bad \xff" if i == 4 else f"file {i}".encode()) for i in range(7)})

    one_unit = read_source(source(root))
    small_units = read_source(source(root), UnitConfig(target_rows=2))

    assert len(small_units.units) == 4
    assert small_units.rows == one_unit.rows == [0, 1, 2, 3, 5, 6]
    assert [(r.row, r.relpath) for r in small_units.rejects] == [(4, "f4.txt")]


def test_a_text_file_over_max_record_bytes_is_rejected_with_its_size_without_being_kept(tmp_path):
    root = write(tmp_path / "docs", {"a.txt": b"small", "b.txt": b"y" * 5000, "c.txt": b"also small"})
    result = read_source(source(root), UnitConfig(limits={"max_record_bytes": 1000}))
    assert result.texts() == ["small", "also small"]
    assert [(r.relpath, r.reason, r.raw_sha256) for r in result.rejects] == [
        ("b.txt", "record of 5,000 bytes exceeds units.limits.max_record_bytes (1,000)", sha256(b"y" * 5000))]
