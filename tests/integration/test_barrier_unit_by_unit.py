"""The barrier decided unit by unit (exact and near dedup from the partition outputs, no frame of
every record; near duplicates resolved by many group tasks) writes byte for byte what the
whole-frame barrier with one group of components writes: decisions, shard plan, shards and
ledger, across units, partitions, images, a repeated id and a second run against the corpus
index; and `fail_on_reject` reports the same rejections."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.dedup import near_groups, near_merge
from pipeline.dedup.repoint import repoint_path
from pipeline.errors import RejectionsError
from pipeline.executor import run_local
from pipeline.run import barrier as barrier_module
from pipeline.run import barrier_parts
from pipeline.run import near_groups as run_near_groups
from pipeline.run import tasks
from tests.conftest import REPO, build_config
from tests.integration.test_barrier_parts import _WORDS, _edit, adversarial_corpus
from tests.integration.test_run import file_digests

IMAGES = REPO / "data_samples" / "images"


def _sources(corpus: Path) -> list[dict]:
    return [{"name": "c", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"},
            {"name": "img", "kind": "image_dir", "paths": [str(IMAGES)], "keep": "path"}]


def _config(out: Path, corpus: Path, state: Path, **kw):
    return build_config(out, _sources(corpus), output={"dir": str(out), "shard_max_rows": 150},
                        runner={"max_workers": 2}, state={"dir": str(state)}, **kw)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _paths(monkeypatch, whole_frame: bool, keep: Path | None = None) -> list[str]:
    """Force the barrier's path; returns the list the path taken is appended to. `keep`: a copy of
    each barrier's decisions and shard plan goes to `keep/<n>` (the scratch space goes at publish)."""
    taken: list[str] = []
    original = barrier_module.barrier

    def forced(work_dir: str) -> dict:
        result = original(work_dir, whole_frame=whole_frame)
        if keep is not None:
            copy = keep / str(len(list(keep.glob("*"))) if keep.exists() else 0)
            shutil.copytree(Path(work_dir) / "decisions", copy)
            shutil.copy(Path(work_dir) / "shards.json", copy / "shards.json")
        return result

    monkeypatch.setattr(barrier_module, "barrier", forced)
    for name in ("_decide_whole_frame", "_decide_unit_by_unit"):
        inner = getattr(barrier_module, name)
        monkeypatch.setattr(barrier_module, name, lambda *a, _f=inner, _n=name: taken.append(_n) or _f(*a))
    return taken


def _second_corpus(first: Path, folder: Path) -> Path:
    """Copies (exact, near, upper-cased) of records of `first`, and new records, in two files."""
    rng = random.Random(7)
    old = [json.loads(line) for p in sorted(first.glob("*.jsonl")) for line in p.read_text().splitlines()]
    folder.mkdir()
    for k in range(2):
        with open(folder / f"b{k}.jsonl", "w") as f:
            for i, d in enumerate(rng.sample(old, 90)):
                words = d["text"].split()
                text = [d["text"], " ".join(_edit(rng, words)), d["text"].upper(), " ".join(rng.choices(_WORDS, k=40))][i % 4]
                f.write(json.dumps({"id": f"b{k}-{i:04d}", "text": text}) + "\n")
    return folder


def test_unit_by_unit_decides_byte_for_byte_what_the_whole_frame_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(barrier_parts, "PART_RECORDS", 60)       # several ids/exact partitions
    monkeypatch.setattr(barrier_parts, "LSH_DOC_BANDS", 400)     # several LSH tasks
    first = adversarial_corpus(tmp_path / "in1", n=600)
    second = _second_corpus(first, tmp_path / "in2")
    results = {}
    # the whole frame with one group of components, unit by unit with many group tasks whose
    # verdict files are read a few rows at a time (so each unit takes rows from several batches)
    for path, whole, group_records, file_rows in (("whole", True, 10**9, 8_192), ("units", False, 8, 3)):
        with monkeypatch.context() as m:
            m.setattr(near_groups, "GROUP_RECORDS", group_records)
            m.setattr(near_merge, "GROUP_FILE_ROWS", file_rows)
            taken = _paths(m, whole, tmp_path / f"{path}-barrier")
            one = run_local(_config(tmp_path / f"{path}-1", first, tmp_path / f"state-{path}"))
            # the second run of both paths against the same published run (the whole path's first)
            shutil.copytree(tmp_path / "state-whole", tmp_path / f"state-{path}-2", dirs_exist_ok=True)
            two = run_local(_config(tmp_path / f"{path}-2", second, tmp_path / f"state-{path}-2"))
        assert taken == ["_decide_whole_frame" if whole else "_decide_unit_by_unit"] * 2
        results[path] = (one, two)
    for run in ("1", "2"):
        copy = str(int(run) - 1)
        assert _digests(tmp_path / "units-barrier" / copy) == _digests(tmp_path / "whole-barrier" / copy)
        assert file_digests(tmp_path / f"units-{run}") == file_digests(tmp_path / f"whole-{run}")
    for a, b in zip(results["units"], results["whole"]):
        tasks = {p["name"]: p["items"] for p in a["timings"]["phases"]}
        assert tasks["near-group"] == a["near_dedup"]["groups"]["groups"] > 10
        assert b["near_dedup"]["groups"]["groups"] == 1
        a["near_dedup"].pop("groups"), b["near_dedup"].pop("groups")
        assert a["near_dedup"] == b["near_dedup"] and a["conservation"] == b["conservation"]
        assert a["stages"] == b["stages"] and a["corpus_index"]["runs"] == b["corpus_index"]["runs"]
    # What the comparison covered: clusters across units and runs, images, the repeated ids.
    ledger1 = pl.read_parquet(str(tmp_path / "units-1" / "ledger" / "*.parquet"))
    counts = dict(ledger1.group_by("decision").len().iter_rows())
    assert counts["dropped_duplicate"] > 40 and counts["dropped_near_duplicate"] > 40 and counts["rejected"] == 3
    img = dict(ledger1.filter(pl.col("source") == "img").select("location", "decision").iter_rows())
    assert img["field-2.png"] == "dropped_duplicate" and img["field-1-small.jpg"] == "dropped_near_duplicate"
    shards = json.loads((tmp_path / "units-barrier" / "0" / "shards.json").read_text())
    assert len(shards) >= 3 and any(s["first_unit"] != s["last_unit"] for s in shards)
    ledger2 = pl.read_parquet(str(tmp_path / "units-2" / "ledger" / "*.parquet"))
    run1 = results["whole"][0]["run_id"]
    assert ledger2.filter(pl.col("duplicate_of").str.starts_with(run1 + "/")).height > 40
    # An exact copy whose survivor went as a near duplicate names the record finally kept (the
    # near stage keeps a re-pointing row only for such survivors).
    kept = set(ledger1.filter(pl.col("decision") == "kept")["record_id"].to_list())
    exact = ledger1.filter(pl.col("decision") == "dropped_duplicate")
    assert set(exact["duplicate_of"].to_list()) <= kept
    near_dropped = ledger1.filter(pl.col("decision") == "dropped_near_duplicate")
    assert exact.join(near_dropped, on="content_sha256", how="semi").height > 5  # copies of near-dropped records


@pytest.mark.parametrize("whole", [True, False])
def test_fail_on_reject_reports_the_same_rejections_on_both_paths(tmp_path, monkeypatch, whole):
    corpus = adversarial_corpus(tmp_path / "in", n=200)
    _paths(monkeypatch, whole)
    with pytest.raises(RejectionsError, match="3 record"):
        run_local(_config(tmp_path / "out", corpus, tmp_path / "state", errors={"fail_on_reject": True}))
    report = pl.read_parquet(tmp_path / "out" / "_work" / "rejections.parquet")
    assert report.columns == ["record_id", "location", "row", "stage", "reason"]
    assert sorted(report["reason"].to_list())[:2] == ["duplicate record_id", "duplicate record_id"]
    assert not (tmp_path / "out" / "_work" / "barrier.json").exists()
    shutil.rmtree(tmp_path / "out")


def _repoint_spy(monkeypatch) -> list[tuple[int, list[int]]]:
    """Record, for each `near-repoint` task, its partition and the units of the exact copies it
    re-points (read from its output before the scratch space goes at publish)."""
    seen: list[tuple[int, list[int]]] = []
    original = run_near_groups.run_near_repoint

    def spy(work_dir: str, p: int) -> dict:
        result = original(work_dir, p)
        at = pl.read_parquet(repoint_path(Path(work_dir), p, ".parquet"))["_i"].to_numpy()
        starts = np.cumsum(barrier_parts.planned_parts(Path(work_dir))["unit_records"])
        seen.append((p, sorted(set(np.searchsorted(starts, at, side="right").tolist()))))
        return result

    monkeypatch.setattr(run_near_groups, "run_near_repoint", spy)
    return seen


def test_exact_copies_re_pointed_in_many_partitions_decide_what_one_partition_and_the_whole_frame_decide(
        tmp_path, monkeypatch):
    monkeypatch.setattr(barrier_parts, "PART_RECORDS", 60)
    monkeypatch.setattr(near_groups, "GROUP_RECORDS", 8)     # many group tasks: drops from many producers
    corpus = adversarial_corpus(tmp_path / "in", n=600)
    runs = {}
    for name, whole, repoint_records in (("many", False, 50), ("one", False, 10**9), ("whole", True, 50)):
        with monkeypatch.context() as m:
            m.setattr(barrier_parts, "REPOINT_RECORDS", repoint_records)
            if name == "one":  # the partitions are at least the runner's workers
                m.setattr(tasks, "runner_workers", lambda _cfg: 1)
            taken = _paths(m, whole)
            seen = _repoint_spy(m)
            runs[name] = run_local(_config(tmp_path / name, corpus, tmp_path / f"state-{name}"))
        assert taken == ["_decide_whole_frame" if whole else "_decide_unit_by_unit"]
        assert runs[name]["near_dedup"]["groups"]["groups"] > 10
        runs[name]["seen"] = seen
    assert file_digests(tmp_path / "many") == file_digests(tmp_path / "one") == file_digests(tmp_path / "whole")
    # What the comparison covered: one partition, and many whose re-pointed copies lie in several
    # partitions and several units (an exact copy in one unit, its survivor near-dropped elsewhere).
    one, many = dict(runs["one"]["seen"]), dict(runs["many"]["seen"])  # a task called again reads its result
    assert list(one) == [0] and len(one[0]) >= 2
    with_rows = [units for units in many.values() if units]
    assert len(many) >= 10 and len(with_rows) >= 3
    assert len(set().union(*with_rows)) >= 3
    ledger = pl.read_parquet(str(tmp_path / "many" / "ledger" / "*.parquet"))
    kept = set(ledger.filter(pl.col("decision") == "kept")["record_id"].to_list())
    exact = ledger.filter(pl.col("decision") == "dropped_duplicate")
    near = ledger.filter(pl.col("decision") == "dropped_near_duplicate")
    assert set(exact["duplicate_of"].to_list()) <= kept
    assert exact.join(near, on="content_sha256", how="semi").height > 5  # copies of near-dropped records
