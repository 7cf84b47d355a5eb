"""Pass 1 keeps the parsed batches for pass 2: same output as parsing twice, and the input is read once."""

from __future__ import annotations

import shutil

import pytest

import pipeline.executor as executor
import pipeline.spill as spill_mod
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.plan import RunPlan, make_plan
from pipeline.publish import finalize
from pipeline.sources.jsonl import JsonlReader
from pipeline.run.barrier import barrier
from pipeline.run.pass1 import pass1
from pipeline.run.pass2 import pass2
from pipeline.run.workdir import shard_ids
from tests.conftest import REPO, build_config
from tests.integration.test_run import file_digests, sample_config


def test_the_sample_run_gives_byte_identical_shards_and_ledger_with_and_without_the_spill(tmp_path):
    with_spill = run_local(sample_config(tmp_path / "spill"))
    without = run_local(sample_config(tmp_path / "parse-twice", units={"spill": False}))
    assert file_digests(tmp_path / "spill") == file_digests(tmp_path / "parse-twice")
    assert with_spill["conservation"]["overall"] == without["conservation"]["overall"]


def _sample_source(tmp_path):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    return [{"name": "w", "kind": "jsonl", "paths": [str(src)]}]


def _finish(work: str, out, reference_dir, reference: dict) -> dict:
    """The barrier, pass 2 and finalize of a run whose pass 1 is done; its outputs must equal the reference run's."""
    barrier(work)
    for s in shard_ids(work):
        pass2(work, s)
    manifest = finalize(work)
    assert file_digests(out) == file_digests(reference_dir)
    assert manifest["conservation"]["overall"] == reference["conservation"]["overall"]
    return manifest


def test_pass_2_reads_the_spilled_batches_and_not_the_input_again(tmp_path, monkeypatch):
    sources = _sample_source(tmp_path)
    reference = run_local(build_config(tmp_path / "reference", sources, units={"target_bytes": 4096}))

    plan = make_plan(build_config(tmp_path / "run", sources, units={"target_bytes": 4096}))
    work = str(plan.work_dir)
    results = [pass1(work, u.unit_id) for u in plan.units]
    assert len(results) > 3 and all(r["spilled"] for r in results)

    def no_second_read(*_a, **_k):
        raise AssertionError("pass 2 read the input again")

    with monkeypatch.context() as m:
        m.setattr(JsonlReader, "read", no_second_read)
        _finish(work, tmp_path / "run", tmp_path / "reference", reference)
    assert not (tmp_path / "run" / "_work").exists()  # the spill goes with the scratch space
    assert not plan.spill_root.exists()


def test_a_killed_pass_1_leaves_no_spill_that_a_rerun_would_trust(tmp_path):
    cfg = build_config(tmp_path / "run", _sample_source(tmp_path))
    plan = make_plan(cfg)
    stale = plan.spill_root / "u00000"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "b00000.arrow").write_bytes(b"half-written")  # what a killed attempt could leave
    (stale / "b00099.arrow").write_bytes(b"stray")
    result = pass1(str(plan.work_dir), 0)
    assert sorted(p.name for p in stale.iterdir()) == [f"b{k:05d}.arrow" for k in range(result["spilled"])]
    for d in (stale.parent, stale):  # record content: owner-only
        assert d.stat().st_mode & 0o077 == 0


needs_shm = pytest.mark.skipif(not spill_mod._shm_is_tmpfs(), reason="no tmpfs at /dev/shm")


@needs_shm
def test_a_memory_spill_lives_on_dev_shm_gives_the_same_outputs_and_goes_at_publish(tmp_path):
    sources = _sample_source(tmp_path)
    on_disk = run_local(build_config(tmp_path / "disk", sources, units={"target_bytes": 4096, "spill_to": "output"}))
    cfg = build_config(tmp_path / "mem", sources, units={"target_bytes": 4096, "spill_to": "memory"})
    plan = make_plan(cfg)
    assert plan.spill_dir and plan.spill_root.parent == spill_mod.memory_spill_base()
    work = str(plan.work_dir)
    for u in plan.units:
        pass1(work, u.unit_id)
    assert sorted(p.name for p in plan.spill_root.iterdir())[:2] == ["owner.json", "u00000"]
    for d in (plan.spill_root.parent, plan.spill_root, plan.spill_root / "u00000"):
        assert d.stat().st_mode & 0o077 == 0  # record content in a world-writable place: owner-only
    _finish(work, tmp_path / "mem", tmp_path / "disk", on_disk)
    assert not plan.spill_root.exists()
    assert RunPlan.from_json(plan.to_json()).spill_dir == plan.spill_dir


@needs_shm
def test_a_lost_memory_spill_is_read_again_from_the_input(tmp_path):
    sources = _sample_source(tmp_path)
    reference = run_local(build_config(tmp_path / "ref", sources, units={"target_bytes": 4096, "spill_to": "output"}))
    plan = make_plan(build_config(tmp_path / "mem", sources, units={"target_bytes": 4096, "spill_to": "memory"}))
    work = str(plan.work_dir)
    for u in plan.units:
        pass1(work, u.unit_id)
    shutil.rmtree(plan.spill_root / "u00001")  # as a reboot between the passes would leave it
    _finish(work, tmp_path / "mem", tmp_path / "ref", reference)


@needs_shm
def test_memory_spills_no_run_can_use_are_swept_and_a_failed_run_frees_its_own(tmp_path, monkeypatch):
    sources = _sample_source(tmp_path)
    orphan = make_plan(build_config(tmp_path / "orphan", sources, units={"spill_to": "memory"}))
    pass1(str(orphan.work_dir), 0)
    assert orphan.spill_root.exists()
    shutil.rmtree(orphan.work_dir)  # its scratch space is gone: no run can resume it
    kept = make_plan(build_config(tmp_path / "kept", sources, units={"spill_to": "memory"}))
    pass1(str(kept.work_dir), 0)
    make_plan(build_config(tmp_path / "third", sources, units={"spill_to": "memory"}))  # sweeps
    assert not orphan.spill_root.exists()
    assert kept.spill_root.exists()  # its run can still be resumed
    spill_mod.remove_spill(kept.spill_root)

    def boom(*_a, **_k):
        raise RuntimeError("the barrier failed")

    import pipeline.run.barrier as barrier_mod

    monkeypatch.setattr(barrier_mod, "barrier", boom)  # run_step resolves it at call time
    cfg = build_config(tmp_path / "failed", sources, units={"spill_to": "memory"})
    with pytest.raises(RuntimeError):
        executor.run_local(cfg)
    assert not any(spill_mod.memory_spill_base().glob(f"{RunPlan.load(tmp_path / 'failed' / '_work').run_id}*"))


def test_auto_keeps_the_spill_on_disk_when_memory_is_short(tmp_path, monkeypatch):
    monkeypatch.setattr(spill_mod, "_mem_available", lambda: 1024)
    plan = make_plan(build_config(tmp_path / "run", _sample_source(tmp_path)))
    assert plan.spill_dir is None and plan.spill_root == plan.work_dir / "spill"
    monkeypatch.setattr(spill_mod, "_shm_is_tmpfs", lambda: False)
    with pytest.raises(ConfigError, match="tmpfs"):
        make_plan(build_config(tmp_path / "run2", _sample_source(tmp_path), units={"spill_to": "memory"}))


@pytest.mark.parametrize("where", ["auto", "memory"])
def test_with_a_scheduler_address_the_spill_goes_to_the_shared_scratch_space(tmp_path, where, caplog):
    """Workers of a cluster may sit on other machines, each with its own /dev/shm."""
    cfg = build_config(tmp_path / "run", _sample_source(tmp_path), units={"spill_to": where},
                       runner={"kind": "dask", "dask_address": "tcp://127.0.0.1:8786"})
    with caplog.at_level("WARNING", logger="pipeline.plan"):
        plan = make_plan(cfg)
    assert plan.spill_dir is None and plan.spill_root == plan.work_dir / "spill"
    assert ("spill_to: memory is ignored" in caplog.text) == (where == "memory")


@needs_shm
def test_a_local_dask_cluster_keeps_the_memory_spill(tmp_path):
    """A LocalCluster (no scheduler address) is one machine with one /dev/shm: unchanged."""
    plan = make_plan(build_config(tmp_path / "local", _sample_source(tmp_path), units={"spill_to": "memory"},
                                  runner={"kind": "dask"}))
    assert plan.spill_dir is not None and plan.spill_root.parent == spill_mod.memory_spill_base()
