"""The contract every reader keeps, run over each kind of source with the same records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import RunConfig, UnitConfig, parse_config
from pipeline.errors import SourceError
from pipeline.sources import IMAGE_KINDS, READERS, Unit

from tests.unit.sources.support import plan_source, read_units

datasets.disable_progress_bars()

# Twelve records; the fourth and the ninth have an empty text and must be rejected.
TEXTS = [f"record number {i} " + "w" * (i * 41 % 300) if i not in (3, 8) else "" for i in range(12)]
SMALL = UnitConfig(target_bytes=1024, target_rows=4, batch_bytes=1024)
WHOLE = UnitConfig()


def _jsonl(root: Path, texts: list[str] = TEXTS) -> dict:
    (root / "data.jsonl").write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    return {"kind": "jsonl", "paths": [str(root / "data.jsonl")]}


def _csv(root: Path, texts: list[str] = TEXTS) -> dict:
    (root / "data.csv").write_text("text,n\n" + "".join(f'"{t}",{i}\n' for i, t in enumerate(texts)))
    return {"kind": "csv", "paths": [str(root / "data.csv")]}


def _parquet(root: Path, texts: list[str] = TEXTS) -> dict:
    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), root / "data.parquet", row_group_size=3)
    return {"kind": "parquet", "paths": [str(root / "data.parquet")]}


def _text_dir(root: Path, texts: list[str] = TEXTS) -> dict:
    for i, t in enumerate(texts):
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / f"{i:02d}.txt").write_text(t)
    return {"kind": "text_dir", "paths": [str(root / "docs")]}


def _hf_disk(root: Path, texts: list[str] = TEXTS) -> dict:
    datasets.Dataset.from_dict({"text": texts, "n": list(range(len(texts)))}).save_to_disk(str(root / "ds"))
    return {"kind": "hf_disk", "paths": [str(root / "ds")]}


def _hf_load(root: Path, texts: list[str] = TEXTS) -> dict:
    _jsonl(root, texts)
    return {"kind": "hf_load", "builder": "json", "paths": [str(root / "data.jsonl")]}


BUILDERS: dict[str, Callable[[Path], dict]] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "parquet": _parquet,
    "text_dir": _text_dir,
    "hf_disk": _hf_disk,
    "hf_load": _hf_load,
}


@pytest.fixture(params=sorted(BUILDERS))
def case(request, tmp_path):
    """(source config, work dir) of one kind of source holding TEXTS."""
    spec = BUILDERS[request.param](tmp_path)
    cfg: RunConfig = parse_config({"sources": [{"name": "s", **spec}], "output": {"dir": str(tmp_path / "out")}})
    return cfg.sources[0], tmp_path / "work"


def read(source, units: UnitConfig, work: Path):
    return read_units(source, plan_source(source, units, work), units)


def test_every_kind_of_source_has_a_builder_here():
    # Image sources carry bytes, not text: their readers have their own tests (test_image_reader.py,
    # test_webdataset_reader.py).
    assert set(BUILDERS) == set(READERS) - set(IMAGE_KINDS)


def test_every_record_is_either_valid_or_rejected_exactly_once(case):
    source, work = case

    result = read(source, WHOLE, work)

    assert result.texts() == [t for t in TEXTS if t]
    assert len(result.records) + len(result.rejects) == len(TEXTS)
    assert {r.reason for r in result.rejects} == {"empty or whitespace-only text"}


def test_small_units_give_the_same_records_as_one_big_unit(case):
    source, work = case

    whole = read(source, WHOLE, work)
    small = read(source, SMALL, work)

    assert (small.records, small.rows, small.relpaths) == (whole.records, whole.rows, whole.relpaths)
    assert [(r.row, r.reason, r.relpath) for r in small.rejects] == [(r.row, r.reason, r.relpath) for r in whole.rejects]


def test_reading_is_deterministic(case):
    source, work = case
    planned = plan_source(source, SMALL, work)

    first, second = read_units(source, planned, SMALL), read_units(source, planned, SMALL)

    assert (first.records, first.rows, first.rejects) == (second.records, second.rows, second.rejects)
    assert plan_source(source, SMALL, work) == planned


def test_units_read_the_same_after_a_round_trip_through_json(case):
    source, work = case
    planned = plan_source(source, SMALL, work)

    revived = [Unit.from_dict(json.loads(json.dumps(u.to_dict()))) for u in planned]

    assert revived == planned
    assert read_units(source, revived, SMALL).records == read_units(source, planned, SMALL).records


def test_planned_units_name_their_source_and_kind_and_await_an_id(case):
    source, work = case

    planned = plan_source(source, SMALL, work)

    assert planned
    assert {(u.source, u.kind, u.unit_id) for u in planned} == {("s", source.kind, -1)}
    assert all(u.file_error is None for u in planned)


def test_describe_is_stable_for_unchanged_inputs(case):
    source, _ = case
    reader = READERS[source.kind]
    listed = reader.list_inputs(source)

    first = [reader.describe(source, p, r) for p, r in listed]
    second = [reader.describe(source, p, r) for p, r in listed]

    assert first == second
    assert all(len(f.sha256) == 64 and f.source == "s" for f in first)


# The same records with the sixth made longer than the limit below.
LONG = [t if i != 5 else "x" * 5000 for i, t in enumerate(TEXTS)]
LIMITED = UnitConfig(limits={"max_record_bytes": 2000})


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_a_record_over_max_record_bytes_is_rejected_with_its_size_and_the_rest_is_read(kind, tmp_path):
    spec = BUILDERS[kind](tmp_path, LONG)
    source = parse_config({"sources": [{"name": "s", **spec}], "output": {"dir": str(tmp_path / "out")}}).sources[0]
    if kind == "hf_load":  # datasets would read the line whole: the file is refused before it starts
        with pytest.raises(SourceError, match=r"data.jsonl: line 5 holds more than units.limits.max_record_bytes \(2,000\)"):
            read(source, LIMITED, tmp_path / "work")
        return

    result = read(source, LIMITED, tmp_path / "work")

    assert result.texts() == [t for t in LONG if t and len(t) < 2000]
    (over,) = [r for r in result.rejects if r.row == 5]
    assert re.fullmatch(r"record of 5,\d\d\d bytes exceeds units.limits.max_record_bytes \(2,000\)", over.reason)
    assert len(result.rejects) == 3
