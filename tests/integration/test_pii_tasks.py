"""Per-unit stages on tasks of a few MiB of kept text, the sampled residual scan, and timings."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pytest

from pipeline.audit.signoff import SignoffPolicy, evaluate
from pipeline.config import load_config
from pipeline.executor import run_local
from pipeline.run.tasks import TASK_MAX_BYTES, TASK_MIN_BYTES, cut_rows, task_bytes
from tests.conftest import REPO, build_config


def test_rows_are_cut_into_consecutive_tasks_of_about_the_target():
    rows = np.arange(10, 110, dtype=np.int64)
    cost = np.full(100, 100, dtype=np.int64)
    cuts = cut_rows(rows, cost, 1_000)
    assert cuts[0] == (0, 9) and cuts[-1][1] == 99 and len(cuts) == 10
    assert all(b + 1 == c for (_, b), (c, _) in zip(cuts, cuts[1:]))       # consecutive, nothing skipped
    assert cut_rows(rows, cost, 10**9, max_records=30) == [(0, 29), (30, 59), (60, 89), (90, 99)]
    assert cut_rows(rows[:0], cost[:0], 1_000) == []
    assert task_bytes(0, 2) == TASK_MIN_BYTES and task_bytes(10**12, 2) == TASK_MAX_BYTES
    assert task_bytes(40 * 2**20, 2) == int(2.5 * 2**20)                   # 8 tasks per worker


def _digests(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.parquet"))
            } | {p.name + "-ledger": hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "ledger").glob("*.parquet"))}


def test_one_unit_cut_into_many_tasks_on_worker_processes_publishes_the_same_bytes(tmp_path, monkeypatch):
    import pipeline.run.procpool as pool
    import pipeline.run.tasks as tasks

    names = ["Ann Lee", "Omar Haddad", "Mei Chen", "John Clark"]
    rows = [{"id": f"r{i}", "text": f"Record {i}: {names[i % 4]} wrote to person{i}@example.com about the plan. "
                                    f"Then {names[(i + 1) % 4]} answered from Detroit." * (1 + i % 3)}
            for i in range(120)]
    d = tmp_path / "in"
    d.mkdir()
    (d / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))   # one file: one unit
    sources = [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]
    pii = {"second_pass": True}
    a = run_local(build_config(tmp_path / "a", sources, pii=pii, runner={"max_workers": 2}))
    monkeypatch.setattr(tasks, "TASK_MIN_BYTES", 2_000)
    monkeypatch.setattr(tasks, "TASK_MAX_BYTES", 2_000)
    monkeypatch.setattr(pool, "POOL_MIN_BYTES", 0)
    b = run_local(build_config(tmp_path / "b", sources, pii=pii, runner={"max_workers": 2}))
    phase = {p["name"]: p for p in b["timings"]["phases"]}
    assert a["units"] == 1 and phase["pii"]["items"] > 5              # one unit, many tasks
    assert {p["name"]: p for p in a["timings"]["phases"]}["pii"]["items"] == 1
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert a["pii"]["residual_scan"]["records"] == b["pii"]["residual_scan"]["records"] == 120


def test_the_sampled_residual_scan_bounds_the_full_scan_s_rate_on_the_sample_data(tmp_path):
    """configs/sample.yaml on data_samples/: every kept record scanned, then a 30% sample; the sampled
    scan's upper bound covers the full scan's rate, and the sign-off rule reads the bound."""
    base = load_config(REPO / "configs" / "sample.yaml")
    runs = {}
    for name, fraction in (("full", 1.0), ("sampled", 0.3)):
        pii = base.pii.model_copy(update={"residual_scan": base.pii.residual_scan.model_copy(
            update={"sample_fraction": fraction})})
        cfg = base.model_copy(update={"pii": pii, "output": base.output.model_copy(update={"dir": str(tmp_path / name)})})
        runs[name] = run_local(cfg)
    full, sampled = runs["full"]["pii"]["residual_scan"], runs["sampled"]["pii"]["residual_scan"]
    assert full["full"] and full["records"] == full["population"] > sampled["records"] > 0
    assert not sampled["full"] and sampled["sample_fraction"] == 0.3
    assert full["rate"] <= sampled["upper_bound"] and full["rate"] <= full["upper_bound"]
    assert sampled["upper_bound"] > sampled["rate"]
    policy = SignoffPolicy.model_validate({"name": "bound", "pii": {"require_scan": True, "max_residual_rate": sampled["upper_bound"] / 2}})
    rule = next(r for r in evaluate(tmp_path / "sampled", policy)["rules"] if r["rule"] == "residual_pii")
    assert not rule["passed"] and rule["value"] == sampled["upper_bound"] and "upper bound" in rule["detail"]

    t = runs["sampled"]["timings"]
    names = [p["name"] for p in t["phases"]]
    assert names[:3] == ["plan", "read", "digests"] and {"barrier", "pii", "pii-fold", "write", "publish"} <= set(names)
    assert {"safety", "exact_dedup", "near_dedup", "pii", "pii (write)"} <= set(t["stages"])
    pii_phase = t["phases"][names.index("pii")]
    assert pii_phase["wall_s"] > 0 and pii_phase["cpu_s"] > 0 and pii_phase["text_mb"] > 0
    assert t["residual_scan"]["cpu_s"] > 0 and t["cores"] >= 1
    ledger = pl.read_parquet(str(tmp_path / "sampled" / "ledger" / "*.parquet"))
    assert ledger.height == runs["sampled"]["conservation"]["overall"]["input"]


def test_the_fold_decides_unit_by_unit_what_one_unit_decides(tmp_path):
    """The fold after PII goes one unit at a time, carrying the shard plan across units: a run cut
    into many units, beside a source PII never scans (images: no task, no PII evidence), with
    shards that span units, publishes what the same run in one unit per input publishes."""
    names = ["Ann Lee", "Omar Haddad", "Mei Chen", "John Clark"]
    rows = [{"id": f"r{i}", "text": f"Note {i}: {names[i % 4]} mailed person{i}@example.com. " * (1 + i % 4)
             if i % 3 else f"Note {i}: nothing personal here, only the weather of day {i}."} for i in range(150)]
    d = tmp_path / "in"
    d.mkdir()
    (d / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"},
               {"name": "img", "kind": "image_dir", "paths": [str(REPO / "data_samples" / "images")]}]
    pii = {"entities": ["EMAIL_ADDRESS", "PERSON"], "residual_scan": {"enabled": False}}
    a = run_local(build_config(tmp_path / "a", sources, pii=pii, output={"dir": str(tmp_path / "a"), "shard_max_rows": 23}))
    b = run_local(build_config(tmp_path / "b", sources, pii=pii, output={"dir": str(tmp_path / "b"), "shard_max_rows": 23},
                               units={"target_bytes": 2_000}))
    assert a["units"] == 2 and b["units"] > 6
    assert len(list((tmp_path / "b" / "shards").glob("*.parquet"))) > 4
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
