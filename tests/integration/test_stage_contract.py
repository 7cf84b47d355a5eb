"""The stage contract, tested once for every registered stage (built-in and the shipped example):
empty in -> empty out, conservation, determinism (same bytes twice and across unit splits), the
input batch not mutated, statistics that add up."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.core.registry import BUILTIN, decision_table, run_stages, stage_class
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import BatchContext, Placement, RecordStage, StageStats, Verdicts
from pipeline.executor import run_local
from pipeline.run.tasks import StageTask
from tests.conftest import REPO

EXAMPLE = "short_docs:ShortDocsFilter"
EXAMPLE_DIR = str(REPO / "examples" / "stages")
KINDS = [*BUILTIN, EXAMPLE]
# Options for the built-in stages that have no usable default (a term list is the user's own).
OPTIONS = {"adult_text": {"terms": ["w7", "w13"], "min_matches": 1},
           "decontaminate": {"benchmarks": [{"name": "humaneval", "builtin": "humaneval"}], "action": "cut"}}


def _corpus(folder: Path, n: int = 120) -> Path:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(300)]
    rows = []
    for i in range(n):
        if rows and i % 5 == 0:
            text = rows[rng.randrange(len(rows))]["text"]  # exact copies
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 40)))
            if i % 7 == 0:
                text += f" write to person{i}@example.com"
        rows.append({"id": f"r{i:04d}", "text": text})
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        (folder / f"p{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[k::3]))
    return folder


def _config(kind: str, corpus: Path, out: Path, target_bytes: int) -> dict:
    data = {"sources": [{"name": "t", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
            "output": {"dir": str(out)}, "units": {"target_bytes": target_bytes},
            "dedup": {"near": {"enabled": True}}, "pii": {"entities": ["EMAIL_ADDRESS"]}}
    if kind == "safety":
        data["safety"] = {"hash_lists": [{"name": "sample", "path": str(REPO / "data_samples/hashlists/sample-list.csv"),
                                          "version": "1"}]}
    entry = {"kind": kind, "search_path": EXAMPLE_DIR} if kind == EXAMPLE else {"kind": kind}
    if kind in OPTIONS:
        entry["config"] = OPTIONS[kind]
    data["stages"] = [entry] if kind == "safety" else [{"kind": "safety"}, entry]
    return data


def _digests(run: Path) -> dict:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


@pytest.mark.parametrize("kind", KINDS)
def test_every_stage_keeps_the_contract(tmp_path, kind):
    corpus = _corpus(tmp_path / "in")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "e.jsonl").write_text("")

    # empty in -> empty out
    m = run_local(parse_config(_config(kind, empty, tmp_path / "e", 64 * 1024 * 1024)))
    assert m["conservation"]["overall"]["input"] == 0 and m["conservation"]["balanced"]
    cls = stage_class(kind, EXAMPLE_DIR)[0]
    assert m["stages"][cls.kind] == {"seen": 0, "kept": 0, "dropped": 0}

    # conservation, and the stage appears in the funnel, the decision table and the stage list
    m1 = run_local(parse_config(_config(kind, corpus, tmp_path / "a", 64 * 1024 * 1024)))
    assert m1["conservation"]["balanced"] and m1["conservation"]["overall"]["input"] == 120
    for name, st in m1["stages"].items():
        assert st["seen"] == st["kept"] + st["dropped"], name
    assert cls.kind in m1["pipeline"]["funnel"]
    assert {d.name for d in cls.decisions} <= set(m1["pipeline"]["decisions"])

    # determinism: the same bytes again, and with the inputs cut into many units
    m2 = run_local(parse_config(_config(kind, corpus, tmp_path / "b", 1024)))
    assert m2["units"] > m1["units"]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    shutil.rmtree(tmp_path / "b")
    run_local(parse_config(_config(kind, corpus, tmp_path / "b", 64 * 1024 * 1024)))
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


@pytest.mark.parametrize("kind", [k for k in KINDS if Placement.RECORD in stage_class(k, EXAMPLE_DIR)[0].placements
                                  or Placement.UNIT in stage_class(k, EXAMPLE_DIR)[0].placements])
def test_a_batch_stage_returns_one_verdict_per_row_and_leaves_its_input_alone(tmp_path, kind):
    from pipeline.plan import make_plan

    cfg = parse_config(_config(kind, _corpus(tmp_path / "in"), tmp_path / "out", 64 * 1024 * 1024))
    plan = make_plan(cfg)
    spec = next(s for s in run_stages(cfg) if s.kind == stage_class(kind, EXAMPLE_DIR)[0].kind)
    stage = stage_instance(spec, plan)
    texts = ["a b c", "", "mail me at someone@example.com please " * 3, "x " * 60]
    table = pa.table({"id": [f"i{i}" for i in range(len(texts))], "text": texts})
    before = table.to_pydict()
    import numpy as np

    from pipeline.sources.base import string_digests

    extra = {"digests": string_digests(table["text"]), "locations": ["l"] * 4, "uris": ["u"] * 4, "incidents": []}
    ctx = BatchContext("t", "text", np.arange(4, dtype=np.int64), before["id"], 0, plan.work_dir, extra, task=0)
    task = StageTask(0, 0, 0, 3, 4, sum(len(t) for t in texts))
    if spec.placement == Placement.UNIT:
        _plan_one_task(plan.work_dir, spec.kind, task)
        stage.begin_task(task, plan.work_dir)
    v = stage.process(table, ctx)
    empty = stage.process(table.slice(0, 0), BatchContext("t", "text", np.arange(0, dtype=np.int64), [], 0,
                                                          plan.work_dir, {k: ([] if isinstance(x, list) else x)
                                                                          for k, x in extra.items()}, task=0))
    if spec.placement == Placement.UNIT:
        stage.end_task(task, plan.work_dir)
    assert isinstance(v, Verdicts) and len(v) == 4 and len(v.reason) == 4
    assert all(len(col) == 4 for col in v.evidence.values())
    assert table.to_pydict() == before
    table_d = decision_table(cfg)
    assert all(d is None or d in table_d for d in v.decision)
    assert len(empty) == 0


def _plan_one_task(work_dir, kind: str, task) -> None:
    """A task plan of one task, as `plan_tasks` would write it after the barrier."""
    from pipeline.fileio import atomic_write_json

    path = work_dir / "stages" / kind / "tasks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"stage": kind, "target_bytes": 1 << 20, "records": task.records,
                             "text_bytes": task.text_bytes, "tasks": [task.to_dict()]})


def test_stage_statistics_add_up():
    a = StageStats(10, 7, 3, {"x": 1})
    b = StageStats(5, 5, 0, {"x": 2, "y": 1})
    c = a + b
    assert (c.seen, c.kept, c.dropped, c.counts) == (15, 12, 3, {"x": 3, "y": 1})
    assert c.seen == c.kept + c.dropped
    assert StageStats.from_dict(c.to_dict()) == c


class _Raises(RecordStage):
    kind = "raises"

    def process(self, table, ctx):
        raise ValueError("boom")


class _WrongCount(RecordStage):
    kind = "wrong_count"

    def process(self, table, ctx):
        return Verdicts.keep_all(table.num_rows + 1)


class _UnknownDecision(RecordStage):
    kind = "unknown_decision"

    def process(self, table, ctx):
        return Verdicts.from_rows([("dropped_by_magic", "magic")] * table.num_rows)


@pytest.mark.parametrize("cls, message", [
    ("_Raises", "stage 'raises' raised ValueError in process()"),
    ("_WrongCount", "stage 'wrong_count' returned 41 verdicts for a batch of 40 rows"),
    ("_UnknownDecision", "stage 'unknown_decision' returned the unknown decision 'dropped_by_magic'"),
])
def test_a_broken_user_stage_fails_the_run_before_anything_is_published(tmp_path, cls, message):
    from pipeline.core.verdicts import StageError

    corpus = _corpus(tmp_path / "in", 40)
    (tmp_path / "in" / "p1.jsonl").unlink()
    (tmp_path / "in" / "p2.jsonl").unlink()
    data = {"sources": [{"name": "t", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
            "output": {"dir": str(tmp_path / "out")},
            "stages": [{"kind": "safety"}, {"kind": f"tests.integration.test_stage_contract:{cls}"}]}
    # 40 rows written, one file kept: 14 rows remain in p0
    (tmp_path / "in" / "p0.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": f"t {i}"}) + "\n" for i in range(40)))
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_local(parse_config(data))
    assert not (tmp_path / "out" / "manifest.json").exists()


class _TagsOnly(RecordStage):
    kind = "tags_only"

    def process(self, table, ctx):
        return Verdicts([None] * table.num_rows, [None] * table.num_rows,
                        {"chars": [len(t) for t in table[ctx.text_field].to_pylist()]})


def test_a_user_stage_s_evidence_on_kept_records_reaches_the_ledger(tmp_path):
    import polars as pl

    corpus = _corpus(tmp_path / "in", 30)
    data = {"sources": [{"name": "t", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
            "output": {"dir": str(tmp_path / "out")}, "dedup": {"near": {"enabled": False}},
            "stages": [{"kind": "safety"}, {"kind": "tests.integration.test_stage_contract:_TagsOnly"},
                       {"kind": "exact_dedup"}]}
    run_local(parse_config(data))
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    kept = ledger.filter(pl.col("decision") == "kept")
    assert kept.height > 0 and kept["evidence"].is_not_null().all()
    assert {"chars"} == set(json.loads(kept["evidence"][0]))
