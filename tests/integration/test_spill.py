"""Pass 1 keeps the parsed batches for pass 2: same output as parsing twice, and the input is read once."""

from __future__ import annotations

import shutil

import pytest

from pipeline import spill as spill_mod
from pipeline.executor import run_local
from pipeline.plan import make_plan
from pipeline.publish import finalize
from pipeline.sources.jsonl import JsonlReader
from pipeline.steps import barrier, pass1, pass2, shard_ids
from tests.conftest import REPO, build_config
from tests.integration.test_run import file_digests, sample_config


def test_the_sample_run_gives_byte_identical_shards_and_ledger_with_and_without_the_spill(tmp_path):
    in_memory = run_local(sample_config(tmp_path / "memory"))
    on_disk = run_local(sample_config(tmp_path / "disk", units={"spill_memory_bytes": 0}))
    without = run_local(sample_config(tmp_path / "parse-twice", units={"spill": False}))
    assert file_digests(tmp_path / "memory") == file_digests(tmp_path / "parse-twice")
    assert file_digests(tmp_path / "disk") == file_digests(tmp_path / "parse-twice")
    assert in_memory["conservation"]["overall"] == without["conservation"]["overall"]
    assert on_disk["conservation"]["overall"] == without["conservation"]["overall"]
    assert not spill_mod._HELD.units and not any(spill_mod._HELD.used.values())  # released after the run


@pytest.mark.parametrize("memory", [1 << 30, 6000, 0], ids=["in-memory", "part-in-memory", "on-disk"])
def test_pass_2_reads_the_spilled_batches_and_not_the_input_again(tmp_path, monkeypatch, memory):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(src)]}]
    reference = run_local(build_config(tmp_path / "reference", sources, units={"target_bytes": 4096}))

    units = {"target_bytes": 4096, "batch_bytes": 1024, "spill_memory_bytes": memory}
    plan = make_plan(build_config(tmp_path / "run", sources, units=units))
    work = str(plan.work_dir)
    results = [pass1(work, u.unit_id) for u in plan.units]
    assert len(results) > 3 and all(r["spilled"] for r in results)
    held = sum(len(r["held"]) for r in results)
    on_disk = len(list((plan.work_dir / "spill").glob("*/*.arrow")))
    assert held + on_disk == sum(r["spilled"] for r in results)
    assert (held > 0, on_disk > 0) == {1 << 30: (True, False), 6000: (True, True), 0: (False, True)}[memory]

    def no_second_read(*_a, **_k):
        raise AssertionError("pass 2 read the input again")

    with monkeypatch.context() as m:
        m.setattr(JsonlReader, "read", no_second_read)
        barrier(work)
        for s in shard_ids(work):
            pass2(work, s)
    spill_mod.release_held(work)
    manifest = finalize(work)

    assert file_digests(tmp_path / "run") == file_digests(tmp_path / "reference")
    assert manifest["conservation"]["overall"] == reference["conservation"]["overall"]
    assert not (tmp_path / "run" / "_work").exists()  # the spill goes with the scratch space


def test_a_killed_pass_1_leaves_no_spill_that_a_rerun_would_trust(tmp_path):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    cfg = build_config(tmp_path / "run", [{"name": "w", "kind": "jsonl", "paths": [str(src)]}],
                       units={"spill_memory_bytes": 0})
    plan = make_plan(cfg)
    stale = plan.work_dir / "spill" / "u00000"
    stale.mkdir(parents=True)
    (stale / "b00000.arrow").write_bytes(b"half-written")  # what a killed attempt could leave
    (stale / "b00099.arrow").write_bytes(b"stray")
    result = pass1(str(plan.work_dir), 0)
    assert sorted(p.name for p in stale.iterdir()) == [f"b{k:05d}.arrow" for k in range(result["spilled"])]
    for d in (stale.parent, stale):  # record content: owner-only
        assert d.stat().st_mode & 0o077 == 0


def test_batches_held_by_another_process_are_read_from_the_input_again(tmp_path):
    """A resumed run (or a Dask worker) cannot see what pass 1 held in memory elsewhere: pass 2
    reads those units again and publishes the same bytes."""
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(src)]}]
    reference = run_local(build_config(tmp_path / "reference", sources, units={"target_bytes": 4096}))

    plan = make_plan(build_config(tmp_path / "run", sources, units={"target_bytes": 4096}))
    work = str(plan.work_dir)
    results = [pass1(work, u.unit_id) for u in plan.units]
    assert all(r["held"] and r["holder"] == spill_mod.PROCESS_TOKEN for r in results)
    spill_mod.release_held(work)  # as if this were another process
    barrier(work)
    for s in shard_ids(work):
        pass2(work, s)
    finalize(work)
    assert file_digests(tmp_path / "run") == file_digests(tmp_path / "reference")


def test_the_memory_budget_counts_every_unit_of_the_run(tmp_path):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(src)]}]
    plan = make_plan(build_config(tmp_path / "run", sources, units={"target_bytes": 4096, "spill_memory_bytes": 20000}))
    work = str(plan.work_dir)
    for u in plan.units:
        pass1(work, u.unit_id)
    try:
        assert 0 < spill_mod._HELD.used[spill_mod.os.path.abspath(work)] <= 20000
    finally:
        spill_mod.release_held(work)
    assert spill_mod.os.path.abspath(work) not in spill_mod._HELD.used
