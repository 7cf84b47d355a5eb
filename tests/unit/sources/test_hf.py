"""HfDiskReader and HfLoadReader: saved datasets and load_dataset over local files, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pytest

from pipeline.config import HfDiskSourceConfig, HfLoadSourceConfig, UnitConfig
from pipeline.errors import SourceError
from pipeline.sources import reader_for
from pipeline.sources.hf import HfDiskReader, HfLoadReader

from tests.unit.sources.support import plan_source, read_source, read_units

datasets.disable_progress_bars()


def saved(tmp_path: Path, name: str, data: dict | datasets.Dataset | datasets.DatasetDict) -> Path:
    ds = data if isinstance(data, (datasets.Dataset, datasets.DatasetDict)) else datasets.Dataset.from_dict(data)
    ds.save_to_disk(str(tmp_path / name))
    return tmp_path / name


def disk(*paths: Path, **kw) -> HfDiskSourceConfig:
    return HfDiskSourceConfig(kind="hf_disk", name="s", paths=tuple(str(p) for p in paths), **kw)


def load(*paths: Path, builder: str = "json", **kw) -> HfLoadSourceConfig:
    return HfLoadSourceConfig(kind="hf_load", name="s", paths=tuple(str(p) for p in paths), builder=builder, **kw)


def test_hub_access_is_switched_off_for_every_test():
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_readers_are_registered_under_their_kinds():
    assert isinstance(reader_for("hf_disk"), HfDiskReader)
    assert isinstance(reader_for("hf_load"), HfLoadReader)


# hf_disk


def test_a_saved_dataset_is_read_row_by_row(tmp_path):
    path = saved(tmp_path, "corpus", {"text": ["alpha", "beta", "gamma"], "lang": ["en", "el", "el"]})

    result = read_source(disk(path))

    assert result.records == [
        {"text": "alpha", "lang": "en"},
        {"text": "beta", "lang": "el"},
        {"text": "gamma", "lang": "el"},
    ]
    assert result.rows == [0, 1, 2]
    assert [u.relpath for u in result.units] == ["corpus"]


def test_a_saved_dataset_is_split_into_units_of_target_rows_with_continuous_rows(tmp_path):
    path = saved(tmp_path, "corpus", {"text": [f"doc {i}" for i in range(23)]})
    units = UnitConfig(target_rows=5)

    result = read_source(disk(path), units)

    assert [(u.part, u.start, u.stop, u.row_offset) for u in result.units] == [
        (0, 0, 5, 0),
        (1, 5, 10, 5),
        (2, 10, 15, 10),
        (3, 15, 20, 15),
        (4, 20, 23, 20),
    ]
    assert result.rows == list(range(23))
    assert result.texts() == [f"doc {i}" for i in range(23)]


def test_one_unit_read_on_its_own_gives_its_slice(tmp_path):
    path = saved(tmp_path, "corpus", {"text": [f"doc {i}" for i in range(10)]})
    src, units = disk(path), UnitConfig(target_rows=4)
    planned = plan_source(src, units)

    got = read_units(src, [planned[1]], units)

    assert got.rows == [4, 5, 6, 7]
    assert got.texts() == ["doc 4", "doc 5", "doc 6", "doc 7"]


def test_a_dataset_saved_after_shuffle_and_select_is_read_in_its_own_order(tmp_path):
    base = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(20)]})
    picked = base.shuffle(seed=7).select(range(6))
    path = saved(tmp_path, "picked", picked)

    result = read_source(disk(path), UnitConfig(target_rows=4))

    assert result.texts() == picked["text"]
    assert result.rows == list(range(6))


def test_bad_rows_of_a_saved_dataset_are_rejected_with_their_row_numbers(tmp_path):
    path = saved(tmp_path, "corpus", {"text": ["ok", "", None, "   ", "fine"]})

    result = read_source(disk(path), UnitConfig(target_rows=2))

    assert result.rows == [0, 4]
    assert result.reasons() == {
        1: "empty or whitespace-only text",
        2: "text field 'text' is missing or null",
        3: "empty or whitespace-only text",
    }


def test_a_dataset_whose_text_is_not_a_string_rejects_every_row(tmp_path):
    path = saved(tmp_path, "numbers", {"text": [1, 2]})

    result = read_source(disk(path))

    assert result.reasons() == {0: "text field 'text' is not a string (int64)", 1: "text field 'text' is not a string (int64)"}


def test_integer_ids_of_a_saved_dataset_become_strings_and_missing_ids_are_rejected(tmp_path):
    path = saved(tmp_path, "corpus", {"text": ["a", "b", "c"], "id": [7, None, 9]})

    result = read_source(disk(path, id_field="id"))

    assert [r["id"] for r in result.records] == ["7", "9"]
    assert result.reasons() == {1: "id field 'id' is missing or null"}


def test_a_dataset_dict_requires_a_split(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["t0", "t1", "t2"]}),
            "test": datasets.Dataset.from_dict({"text": ["e0"]}),
        }
    )
    path = saved(tmp_path, "splits", dd)

    with pytest.raises(SourceError, match=r"splits \['test', 'train'\]; set `split`"):
        read_source(disk(path))
    with pytest.raises(SourceError, match="set `split`"):
        read_source(disk(path, split="validation"))

    result = read_source(disk(path, split="train"))

    assert result.texts() == ["t0", "t1", "t2"]
    assert [u.relpath for u in result.units] == ["splits/train"]


def test_a_path_that_is_not_a_directory_is_a_source_error(tmp_path):
    f = tmp_path / "data.arrow"
    f.write_bytes(b"")

    with pytest.raises(SourceError, match="data.arrow: not a directory"):
        read_source(disk(f))
    with pytest.raises(SourceError, match="missing"):
        read_source(disk(tmp_path / "missing"))


def test_a_directory_not_written_by_save_to_disk_is_a_source_error(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")

    with pytest.raises(SourceError, match="plain: cannot load the saved dataset"):
        read_source(disk(tmp_path / "plain"))


def test_describe_digests_every_file_of_the_dataset_directory(tmp_path):
    path = saved(tmp_path, "corpus", {"text": ["a", "b"]})
    reader, src = HfDiskReader(), disk(path)

    before = reader.describe(src, str(path), "corpus")
    again = reader.describe(src, str(path), "corpus")
    (path / "extra.txt").write_text("changed")
    after = reader.describe(src, str(path), "corpus")

    assert before == again
    assert before.bytes == sum(q.stat().st_size for q in path.rglob("*") if q.is_file() and q.name != "extra.txt")
    assert after.sha256 != before.sha256
    assert after.bytes == before.bytes + len("changed")


def test_an_empty_saved_dataset_is_a_source_error_rather_than_a_crash(tmp_path):
    features = datasets.Features({"text": datasets.Value("string")})
    path = saved(tmp_path, "empty", datasets.Dataset.from_dict({"text": []}, features=features))

    with pytest.raises(SourceError, match="empty: datasets cannot load this saved dataset .*holds no rows"):
        read_source(disk(path))


# hf_load


def jsonl_files(tmp_path: Path, files: dict[str, list[dict]]) -> Path:
    root = tmp_path / "raw"
    root.mkdir(exist_ok=True)
    for name, rows in files.items():
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_load_dataset_over_local_json_lines_files_reads_every_row_offline(tmp_path):
    root = jsonl_files(tmp_path, {"a.jsonl": [{"text": "a0"}, {"text": "a1"}], "b.jsonl": [{"text": "b0"}]})
    work = tmp_path / "work"

    result = read_source(load(root), UnitConfig(), work_dir=work)

    assert result.texts() == ["a0", "a1", "b0"]
    assert result.rows == [0, 1, 2]
    (unit,) = result.units
    assert unit.relpath == "train"
    assert unit.files == (str((root / "a.jsonl").resolve()), str((root / "b.jsonl").resolve()))


def test_load_dataset_keeps_its_cache_in_the_work_dir(tmp_path):
    root = jsonl_files(tmp_path, {"a.jsonl": [{"text": "x"}]})
    work = tmp_path / "work"

    (unit,) = plan_source(load(root), UnitConfig(), work_dir=work)

    assert unit.path == str(work / "hf_cache")
    assert any((work / "hf_cache").iterdir())


def test_load_dataset_rows_are_split_into_units_of_target_rows(tmp_path):
    root = jsonl_files(tmp_path, {"a.jsonl": [{"text": f"d{i}"} for i in range(7)]})
    units = UnitConfig(target_rows=3)

    result = read_source(load(root), units, work_dir=tmp_path / "work")

    assert [(u.start, u.stop, u.row_offset) for u in result.units] == [(0, 3, 0), (3, 6, 3), (6, 7, 6)]
    assert result.rows == list(range(7))
    assert result.texts() == [f"d{i}" for i in range(7)]


def test_load_dataset_with_the_csv_builder_reads_csv_files(tmp_path):
    (tmp_path / "a.csv").write_text("text,id\nhello,1\nworld,2\n")

    result = read_source(load(tmp_path / "a.csv", builder="csv", id_field="id"), work_dir=tmp_path / "work")

    assert result.records == [{"text": "hello", "id": "1"}, {"text": "world", "id": "2"}]


def test_load_dataset_over_a_broken_file_is_a_source_error_naming_the_source(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')

    with pytest.raises(SourceError, match="source 's': load_dataset\\('json'\\) failed"):
        plan_source(load(tmp_path / "broken.jsonl"), work_dir=tmp_path / "work")


# --- units.limits ----------------------------------------------------------------------------------

def test_a_saved_dataset_row_over_the_limit_is_rejected_by_its_cell_sizes(tmp_path):
    path = saved(tmp_path, "ds", {"text": ["a", "b" * 5000, "c"], "meta": ["m", "", "m" * 3000]})
    result = read_source(disk(path), UnitConfig(limits={"max_record_bytes": 2000}), tmp_path / "work")
    assert result.texts() == ["a"]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (1, "record of 5,000 bytes exceeds units.limits.max_record_bytes (2,000)"),
        (2, "record of 3,001 bytes exceeds units.limits.max_record_bytes (2,000)"),
    ]


def test_load_dataset_files_are_checked_before_datasets_reads_them(tmp_path):
    import gzip

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(3)))
    assert read_source(load(good), UnitConfig(limits={"max_record_bytes": 100}), tmp_path / "w1").texts() == ["t0", "t1", "t2"]
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b'{"text": "x"}\n' * 400_000))  # 5.6 MB in about 30 KB
    with pytest.raises(SourceError, match=r"bomb.jsonl.gz: decompresses to more than [\d,]+ bytes \(over 100 times"):
        plan_source(load(bomb), UnitConfig(limits={"ratio_exempt_bytes": 1 << 20}), tmp_path / "w2")
    text = tmp_path / "long.txt"
    text.write_text("short\n" + "y" * 5000 + "\n")
    with pytest.raises(SourceError, match=r"long.txt: line 1 holds more than units.limits.max_record_bytes \(1,000\)"):
        plan_source(load(text, builder="text"), UnitConfig(limits={"max_record_bytes": 1000}), tmp_path / "w3")
