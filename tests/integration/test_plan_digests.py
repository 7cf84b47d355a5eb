"""Input digests are computed in the background after pass 1, and the manifest always has them right."""

from __future__ import annotations

import hashlib
import shutil

from pipeline.plan import DIGESTS_FILE, RunPlan, _DIGEST_THREADS, make_plan, start_input_digests
from pipeline.publish import finalize
from pipeline.run.barrier import barrier
from pipeline.run.pass1 import pass1
from pipeline.run.pass2 import pass2
from pipeline.run.workdir import shard_ids
from tests.conftest import REPO, build_config


def _sources(tmp_path):
    a = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "a.jsonl")
    b = shutil.copy(REPO / "data_samples" / "web" / "part-1.jsonl.gz", tmp_path / "b.jsonl.gz")
    return [{"name": "w", "kind": "jsonl", "paths": [str(a), str(b)]}]


def _run_steps(work: str) -> dict:
    plan = RunPlan.load(work)
    for u in plan.units:
        pass1(work, u.unit_id)
    barrier(work)
    for s in shard_ids(work):
        pass2(work, s)
    return finalize(work)


def test_the_plan_defers_digests_and_the_manifest_records_the_true_ones(tmp_path):
    plan = make_plan(build_config(tmp_path / "run", _sources(tmp_path)))
    assert all(f.sha256 is None for f in plan.inputs)
    assert str(plan.work_dir) not in _DIGEST_THREADS  # not while pass 1 needs both cores
    start_input_digests(plan.work_dir)
    _DIGEST_THREADS[str(plan.work_dir)].join()
    assert (plan.work_dir / DIGESTS_FILE).exists()
    manifest = _run_steps(str(plan.work_dir))
    for entry in manifest["inputs"]:
        with open(entry["path"], "rb") as f:
            assert entry["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_digests_lost_with_a_killed_process_are_computed_when_the_run_finishes(tmp_path):
    plan = make_plan(build_config(tmp_path / "run", _sources(tmp_path)))
    start_input_digests(plan.work_dir)
    _DIGEST_THREADS.pop(str(plan.work_dir)).join()
    (plan.work_dir / DIGESTS_FILE).unlink()  # as if the process that hashed them was killed first
    manifest = _run_steps(str(plan.work_dir))
    for entry in manifest["inputs"]:
        with open(entry["path"], "rb") as f:
            assert entry["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_an_incremental_run_still_digests_its_inputs_when_planning(tmp_path):
    cfg = build_config(tmp_path / "run", _sources(tmp_path),
                       state={"dir": str(tmp_path / "state"), "incremental": True})
    plan = make_plan(cfg)
    assert all(f.sha256 is not None for f in plan.inputs)


def test_a_changed_input_discards_the_unfinished_plan(tmp_path):
    sources = _sources(tmp_path)
    cfg = build_config(tmp_path / "run", sources)
    first = make_plan(cfg)
    with open(tmp_path / "a.jsonl", "ab") as f:
        f.write(b'{"text": "one more line"}\n')
    second = make_plan(cfg)
    assert second.run_id != first.run_id and not second.resumed
    assert make_plan(cfg).resumed  # unchanged since: resumed


def test_a_digest_thread_finishing_after_publication_writes_nothing_into_the_run(tmp_path):
    from pipeline.plan import _digest_inputs, wait_for_digests

    plan = make_plan(build_config(tmp_path / "run", _sources(tmp_path)))
    wait_for_digests(plan.work_dir)
    _run_steps(str(plan.work_dir))  # publishes and removes _work
    _digest_inputs(plan.work_dir, plan.inputs)  # a late thread of another process
    assert not plan.work_dir.exists()
