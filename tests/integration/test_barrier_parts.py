"""The barrier's partitioned steps (record ids, exact keys, LSH bands) decide exactly what one
partition of each decides, on corpora built to cross partitions, and a killed partition resumes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.builder import build_steps
from pipeline.dedup import near_groups
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.run import barrier_parts
from tests.conftest import REPO, build_config
from tests.integration.test_run import file_digests

_WORDS = [f"w{i}" for i in range(3000)]
MANY = {"PART_RECORDS": 40, "LSH_DOC_BANDS": 150}       # dozens of partitions per step
ONE = {"PART_RECORDS": 10**9, "LSH_DOC_BANDS": 10**9}   # one partition per step (one band group)


def _edit(rng: random.Random, words: list[str]) -> list[str]:
    out = list(words)
    for _ in range(2):
        out[rng.randrange(len(out))] = rng.choice(_WORDS)
    return out


def adversarial_corpus(folder: Path, seed: int = 19, n: int = 900, prefix: str = "") -> Path:
    """Three files: originals; exact copies, copies of copies and near copies of near copies spread
    over the files (so clusters cross every partition); case and spacing variants; ids repeated
    across files (one with the same text, one with another)."""
    rng = random.Random(seed)
    docs: list[dict] = []
    for i in range(n):
        if docs and rng.random() < 0.45:
            src = rng.choice(docs)
            kind = rng.randrange(4)
            words = src["text"].split()
            text = {0: src["text"], 1: " ".join(_edit(rng, words)), 2: "  ".join(words).upper(),
                    3: " ".join(_edit(rng, _edit(rng, words)))}[kind]
        else:
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(12, 90)))
        docs.append({"id": f"{prefix}d{i:05d}", "text": text})
    docs.append({**docs[3], "text": docs[3]["text"]})         # a repeated id, same text
    docs.append({**docs[10], "text": "another text entirely for a repeated id with words enough"})
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        with open(folder / f"part-{k}.jsonl", "w") as f:
            for d in docs[k::3]:
                f.write(json.dumps(d) + "\n")
    return folder


def _config(out: Path, corpus: Path, state: Path | None = None, **kw):
    extra = {"state": {"dir": str(state)}} if state is not None else {}
    return build_config(out, [{"name": "c", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
                        output={"dir": str(out), "shard_max_rows": 150}, runner={"max_workers": 2}, **extra, **kw)


def _run(monkeypatch, sizes: dict, cfg) -> dict:
    for name, value in sizes.items():
        monkeypatch.setattr(barrier_parts, name, value)
    return run_local(cfg)


def _decisions(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(str(run_dir / "ledger" / "*.parquet")).drop("run_id", strict=False)


def _parts(manifest_dir: Path) -> dict:
    return json.loads((manifest_dir / "_work" / "barrier" / "parts.json").read_text())


@pytest.mark.parametrize("prefer", ["longest", "central"])
def test_many_partitions_decide_byte_for_byte_what_one_partition_decides(tmp_path, monkeypatch, prefer):
    corpus = adversarial_corpus(tmp_path / "in")
    dedup = {"survivor": {"near_prefer": prefer}}
    one = _run(monkeypatch, ONE, _config(tmp_path / "one", corpus, dedup=dedup))
    many = _run(monkeypatch, MANY, _config(tmp_path / "many", corpus, dedup=dedup))
    assert file_digests(tmp_path / "many") == file_digests(tmp_path / "one")
    ledger = _decisions(tmp_path / "many")
    counts = ledger["decision"].value_counts()
    dropped = dict(zip(counts["decision"].to_list(), counts["count"].to_list()))
    assert dropped["dropped_duplicate"] > 50 and dropped["dropped_near_duplicate"] > 50 and dropped["rejected"] == 2
    assert many["near_dedup"] == one["near_dedup"]
    assert many["conservation"]["overall"] == one["conservation"]["overall"]


def test_the_runner_runs_each_partition_and_each_group_of_components_as_its_own_task(tmp_path, monkeypatch):
    corpus = adversarial_corpus(tmp_path / "in", n=300)
    monkeypatch.setattr(barrier_parts, "PART_RECORDS", 40)
    monkeypatch.setattr(barrier_parts, "LSH_DOC_BANDS", 150)
    monkeypatch.setattr(barrier_parts, "REPOINT_RECORDS", 100)
    monkeypatch.setattr(near_groups, "GROUP_RECORDS", 10)
    cfg = _config(tmp_path / "run", corpus)
    steps = [s.name for s in build_steps(cfg)]
    assert steps[2:12] == ["ids-part", "exact-part", "lsh-band", "boilerplate-part", "near-groups", "near-group",
                           "near-number", "near-relabel", "near-repoint", "barrier"]
    manifest = run_local(cfg)
    timed = {p["name"]: p for p in manifest["timings"]["phases"]}
    assert timed["ids-part"]["items"] == timed["exact-part"]["items"] >= 7
    assert timed["lsh-band"]["items"] >= 16  # one band per task, in several key ranges
    assert timed["near-group"]["items"] == manifest["near_dedup"]["groups"]["groups"] >= 5
    assert timed["near-relabel"]["items"] == timed["near-group"]["items"] and timed["near-number"]["items"] == 1
    assert timed["near-repoint"]["items"] == 4  # 302 records, at most 100 per partition of the join


@pytest.mark.parametrize("kind, drop", [("exact_dedup", "dropped_duplicate"), ("near_dedup", "dropped_near_duplicate")])
def test_a_run_with_one_dedup_stage_has_no_copies_to_re_point_and_no_join_step(tmp_path, monkeypatch, kind, drop):
    corpus = adversarial_corpus(tmp_path / "in", n=200)
    cfg = _config(tmp_path / "run", corpus, stages=[{"kind": "safety"}, {"kind": kind}])
    assert "near-repoint" not in [s.name for s in build_steps(cfg)]
    written = []  # the exact side of the join: no exact-part task writes it
    monkeypatch.setattr(barrier_parts, "write_partitioned", lambda *a: written.append(a))
    manifest = run_local(cfg)
    assert "near-repoint" not in [p["name"] for p in manifest["timings"]["phases"]] and written == []
    assert _decisions(tmp_path / "run").filter(pl.col("decision") == drop).height > 10


def test_cross_run_index_hits_are_the_same_in_many_partitions_and_in_one(tmp_path, monkeypatch):
    first = adversarial_corpus(tmp_path / "in1", seed=5, n=400, prefix="a")
    state_one, state_many = tmp_path / "state-one", tmp_path / "state-many"
    published = _run(monkeypatch, ONE, _config(tmp_path / "r1", first, state_one))
    shutil.copytree(state_one, state_many)
    # the second run: copies (exact, near, case-changed) of published records, and new records
    rng = random.Random(11)
    old = [json.loads(line) for p in sorted(first.glob("*.jsonl")) for line in p.read_text().splitlines()]
    second = tmp_path / "in2"
    second.mkdir()
    with open(second / "b.jsonl", "w") as f:
        for i, d in enumerate(rng.sample(old, 120)):
            words = d["text"].split()
            text = [d["text"], " ".join(_edit(rng, words)), d["text"].upper(), " ".join(rng.choices(_WORDS, k=40))][i % 4]
            f.write(json.dumps({"id": f"b{i:04d}", "text": text}) + "\n")
    one = _run(monkeypatch, ONE, _config(tmp_path / "r2-one", second, state_one))
    many = _run(monkeypatch, MANY, _config(tmp_path / "r2-many", second, state_many))
    a, b = _decisions(tmp_path / "r2-one"), _decisions(tmp_path / "r2-many")
    assert a.equals(b)
    assert file_digests(tmp_path / "r2-many") == file_digests(tmp_path / "r2-one")
    against = a.filter(pl.col("duplicate_of").str.starts_with(published["run_id"] + "/"))
    assert against.height >= 50  # the hits really crossed runs
    assert many["corpus_index"]["runs"] == one["corpus_index"]["runs"] == [published["run_id"]]


def test_another_barrier_stage_before_the_dedup_stages_is_refused(tmp_path):
    cfg = build_config(tmp_path / "run", [{"name": "c", "kind": "jsonl", "paths": [str(tmp_path)]}],
                       stages=[{"kind": "safety"}, {"kind": "containment"}, {"kind": "exact_dedup"}])
    with pytest.raises(ConfigError, match="exact_dedup and near_dedup run first"):
        build_steps(cfg)


_KILLABLE = textwrap.dedent("""
    import sys
    from pipeline.config import parse_config
    from pipeline.executor import run_local
    from pipeline.run import barrier_parts
    barrier_parts.PART_RECORDS, barrier_parts.LSH_DOC_BANDS = 300, 600
    corpus, out = sys.argv[1], sys.argv[2]
    run_local(parse_config({"sources": [{"name": "c", "kind": "jsonl", "paths": [corpus], "id_field": "id"}],
                            "output": {"dir": out, "shard_max_rows": 150}, "runner": {"max_workers": 1}}, "test"))
""")


def run_clean_and_killed(script: str, tmp_path: Path, markers_under: str, pattern: str) -> tuple[Path, Path, Path, Path]:
    """Run `script` (argv: corpus, run directory) over the adversarial corpus to its end into
    `clean`, then again into `killed`, killed with SIGKILL once three files matching `pattern`
    (a step's done-markers) exist under `killed/markers_under`. Returns (corpus, clean, killed, markers)."""
    corpus = adversarial_corpus(tmp_path / "in", n=3000)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_script(script, corpus, clean)
    proc = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(killed)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, start_new_session=True)
    markers = killed / markers_under
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(list(markers.glob(pattern))) < 3:
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return corpus, clean, killed, markers


def run_script(script: str, corpus: Path, out: Path) -> None:
    """Run `script` (argv: corpus, run directory) to its end."""
    subprocess.run([sys.executable, "-c", script, str(corpus), str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_a_run_killed_inside_a_partitioned_step_resumes_without_redoing_finished_partitions(tmp_path, monkeypatch):
    corpus, clean, killed, markers = run_clean_and_killed(_KILLABLE, tmp_path, "_work/barrier/lsh", "p*.json")
    total = _parts(killed)["lsh-band"]
    finished = {p: p.stat().st_mtime_ns for p in markers.glob("p*.json")}
    assert 3 <= len(finished) < total
    # the rest of the step, task by task as a runner would: the finished tasks are not run again
    for name, value in {"PART_RECORDS": 300, "LSH_DOC_BANDS": 600}.items():
        monkeypatch.setattr(barrier_parts, name, value)
    for item in range(total):
        barrier_parts.run_part(str(killed / "_work"), "lsh-band", item)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    run_script(_KILLABLE, corpus, killed)
    assert file_digests(killed) == file_digests(clean)
    assert json.loads((killed / "manifest.json").read_text())["resumed"] is True


def test_the_boilerplate_sketch_counted_over_ranges_of_units_decides_as_one_range(tmp_path, monkeypatch):
    """The sketch of recurring minima is counted by a task per range of units and added up: one
    task per unit decides byte for byte what one task per two workers' share decides, and the
    sketch mattered (copies of copies make minima recur in 3 records and more)."""
    corpus = adversarial_corpus(tmp_path / "in", n=600)
    dedup = {"near": {"boilerplate_min_docs": 3}}
    few = _run(monkeypatch, {"SKETCH_RECORDS": 10**9}, _config(tmp_path / "few", corpus, dedup=dedup))
    many = _run(monkeypatch, {"SKETCH_RECORDS": 1}, _config(tmp_path / "many", corpus, dedup=dedup))
    tasks = [{p["name"]: p["items"] for p in m["timings"]["phases"]}["boilerplate-part"] for m in (few, many)]
    assert tasks == [2, 3]
    assert file_digests(tmp_path / "many") == file_digests(tmp_path / "few")
    assert many["near_dedup"] == few["near_dedup"] and many["near_dedup"]["involved_with_boilerplate"] > 0


def test_a_worker_whose_polars_hashes_otherwise_is_refused_before_it_partitions(tmp_path, monkeypatch):
    """Record ids are partitioned by polars' hash: a task on a worker that hashes otherwise than the
    planner (another polars build) would put an id into another partition and miss its copies, so
    it stops with what to do instead."""
    from pipeline.errors import PipelineError
    from pipeline.plan import make_plan
    from pipeline.run.pass1 import pass1

    corpus = adversarial_corpus(tmp_path / "in", n=60)
    cfg = _config(tmp_path / "run", corpus)
    work = str(make_plan(cfg, max_workers=2).work_dir)
    for unit in range(3):  # one unit per input file
        pass1(work, unit)
    barrier_parts.plan_parts(work)
    barrier_parts.run_part(work, "ids-part", 0)   # the planner's hash: fine
    monkeypatch.setattr(barrier_parts, "hash_probe", lambda: 12345)
    with pytest.raises(PipelineError, match=r"hashes ids differently .* install the same polars version"):
        barrier_parts.run_part(work, "ids-part", 1)
