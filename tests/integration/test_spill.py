"""Pass 1 keeps the parsed batches for pass 2: same output as parsing twice, and the input is read once."""

from __future__ import annotations

import shutil

from pipeline.executor import run_local
from pipeline.plan import make_plan
from pipeline.publish import finalize
from pipeline.sources.jsonl import JsonlReader
from pipeline.steps import barrier, pass1, pass2, shard_ids
from tests.conftest import REPO, build_config
from tests.integration.test_run import file_digests, sample_config


def test_the_sample_run_gives_byte_identical_shards_and_ledger_with_and_without_the_spill(tmp_path):
    with_spill = run_local(sample_config(tmp_path / "spill"))
    without = run_local(sample_config(tmp_path / "parse-twice", units={"spill": False}))
    assert file_digests(tmp_path / "spill") == file_digests(tmp_path / "parse-twice")
    assert with_spill["conservation"]["overall"] == without["conservation"]["overall"]


def test_pass_2_reads_the_spilled_batches_and_not_the_input_again(tmp_path, monkeypatch):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(src)]}]
    reference = run_local(build_config(tmp_path / "reference", sources, units={"target_bytes": 4096}))

    plan = make_plan(build_config(tmp_path / "run", sources, units={"target_bytes": 4096}))
    work = str(plan.work_dir)
    results = [pass1(work, u.unit_id) for u in plan.units]
    assert len(results) > 3 and all(r["spilled"] for r in results)

    def no_second_read(*_a, **_k):
        raise AssertionError("pass 2 read the input again")

    with monkeypatch.context() as m:
        m.setattr(JsonlReader, "read", no_second_read)
        barrier(work)
        for s in shard_ids(work):
            pass2(work, s)
    manifest = finalize(work)

    assert file_digests(tmp_path / "run") == file_digests(tmp_path / "reference")
    assert manifest["conservation"]["overall"] == reference["conservation"]["overall"]
    assert not (tmp_path / "run" / "_work").exists()  # the spill goes with the scratch space


def test_a_killed_pass_1_leaves_no_spill_that_a_rerun_would_trust(tmp_path):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    cfg = build_config(tmp_path / "run", [{"name": "w", "kind": "jsonl", "paths": [str(src)]}])
    plan = make_plan(cfg)
    stale = plan.work_dir / "spill" / "u00000"
    stale.mkdir(parents=True)
    (stale / "b00000.arrow").write_bytes(b"half-written")  # what a killed attempt could leave
    (stale / "b00099.arrow").write_bytes(b"stray")
    result = pass1(str(plan.work_dir), 0)
    assert sorted(p.name for p in stale.iterdir()) == [f"b{k:05d}.arrow" for k in range(result["spilled"])]
    for d in (stale.parent, stale):  # record content: owner-only
        assert d.stat().st_mode & 0o077 == 0
