"""Near-duplicate resolution a group of connected components at a time (each group its own task)
decides exactly what one group of every record decides: the same decisions, candidate pairs and
statistics, with the survivor rules, a second hop, the short-document pass and records published
by an earlier run."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.dedup import near_groups, near_merge
from pipeline.dedup.near_groups import merge_groups
from pipeline.errors import PipelineError
from pipeline.executor import run_local
from pipeline.run.near_groups import run_near_group, run_near_repoint
from pipeline.stages import near as near_stage
from tests.conftest import build_config
from tests.integration.test_barrier_parts import adversarial_corpus, run_clean_and_killed, run_script
from tests.integration.test_barrier_unit_by_unit import _second_corpus
from tests.integration.test_run import file_digests

DEDUP = {"near": {"second_hop": "threshold", "short_pass_max_words": 30}}


def _word_swaps(folder: Path) -> None:
    """Short texts and copies with two words swapped, which only the short-document pass pairs."""
    rng = random.Random(3)
    with open(folder / "part-swaps.jsonl", "w") as f:
        for k in range(4):
            words = [f"s{rng.randrange(10**6)}" for _ in range(14)]
            f.write(json.dumps({"id": f"swap{k}", "text": " ".join(words)}) + "\n")
            words[5], words[6] = words[6], words[5]
            f.write(json.dumps({"id": f"swap{k}b", "text": " ".join(words)}) + "\n")


def _config(out: Path, corpus: Path, state: Path, prefer: str):
    return build_config(out, [{"name": "c", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
                        output={"dir": str(out), "shard_max_rows": 150}, state={"dir": str(state)},
                        dedup={**DEDUP, "survivor": {"near_prefer": prefer}})


def _keep_near_files(monkeypatch, keep: Path) -> None:
    """Copy each resolution's near folder (the groups' files, the merged near decisions) to
    `keep/<n>` (the scratch space goes at publish)."""
    original = near_stage.merge_groups

    def kept(work, *args, **kwargs):
        result = original(work, *args, **kwargs)
        copy = keep / str(len(list(keep.glob("*"))) if keep.exists() else 0)
        shutil.copytree(work / "near", copy)
        return result

    monkeypatch.setattr(near_stage, "merge_groups", kept)


def _near_files(folder: Path) -> tuple[str, pl.DataFrame]:
    """The near decisions' digest and every group's candidate pairs, in pair order."""
    pairs = pl.concat([pl.read_parquet(p) for p in sorted((folder / "groups").glob("g*.candidates.parquet"))])
    return hashlib.sha256((folder / "decisions.parquet").read_bytes()).hexdigest(), pairs.sort("doc_a", "doc_b")


@pytest.mark.parametrize("prefer", ["central", "longest"])
def test_many_small_groups_decide_byte_for_byte_what_one_group_decides(tmp_path, monkeypatch, prefer):
    first = adversarial_corpus(tmp_path / "in1", n=600)
    _word_swaps(first)
    second = _second_corpus(first, tmp_path / "in2")
    stats = {}
    # many groups: their verdict files read two rows at a time, `near/decisions.parquet` merged
    # three clusters at a time (its bytes, in row groups of 16 rows, must not depend on either)
    for label, records, file_rows, merged in (("one", 10**9, 8_192, 65_536), ("many", 4, 2, 3)):
        with monkeypatch.context() as m:
            m.setattr(near_groups, "GROUP_RECORDS", records)
            m.setattr(near_merge, "GROUP_FILE_ROWS", file_rows)
            m.setattr(near_merge, "MERGE_CLUSTERS", merged)
            m.setattr(near_merge, "DECISIONS_FILE_ROWS", 16)
            _keep_near_files(m, tmp_path / f"{label}-near")
            one = run_local(_config(tmp_path / f"{label}-1", first, tmp_path / f"state-{label}", prefer))
            # the second run of both against the same published run (the one-group run's)
            shutil.copytree(tmp_path / "state-one", tmp_path / f"state-{label}-2", dirs_exist_ok=True)
            two = run_local(_config(tmp_path / f"{label}-2", second, tmp_path / f"state-{label}-2", prefer))
        stats[label] = [one["near_dedup"], two["near_dedup"]]
    for run in ("1", "2"):
        assert file_digests(tmp_path / f"many-{run}") == file_digests(tmp_path / f"one-{run}")
    for copy in ("0", "1"):  # the near decisions and candidate pairs of each run's resolution
        (many_digest, many_pairs), (one_digest, one_pairs) = (_near_files(tmp_path / f"{label}-near" / copy)
                                                              for label in ("many", "one"))
        assert many_digest == one_digest
        assert many_pairs.equals(one_pairs) and one_pairs.height > 100
    for many, one in zip(stats["many"], stats["one"]):
        grouping_many, grouping_one = many.pop("groups"), one.pop("groups")
        assert many == one
        assert grouping_one["groups"] == 1 and grouping_many["groups"] > 20
        assert grouping_many["components"] == grouping_one["components"]
        assert grouping_many["components_over_max"] > 0   # components above the bound stay whole
    # What the comparison covered: several clusters, second hops, the short pass, published survivors.
    first_run, second_run = stats["one"]
    assert first_run["clusters"] > 20 and first_run["dropped_second_hop"] > 0
    assert first_run["short_pass"]["dropped"] + second_run["short_pass"]["dropped"] > 0
    assert second_run["dropped_against_index"] > 10 and second_run["index_records"] > 0


def test_a_run_with_boilerplate_counted_and_no_candidate_pair_keeps_every_record(tmp_path, run_pipeline):
    rng = random.Random(8)
    rows = [{"id": f"u{k}", "text": " ".join(f"w{rng.randrange(10**6)}" for _ in range(60))} for k in range(30)]
    path = tmp_path / "distinct.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(path)], "id_field": "id"}],
                                       dedup={"near": {"boilerplate_min_docs": 20}})
    assert set(ledger["decision"]) == {"kept"}
    assert manifest["near_dedup"]["candidate_pairs"] == 0 and manifest["near_dedup"]["groups"]["groups"] == 0


_KILLABLE = textwrap.dedent("""
    import sys
    from pipeline.config import parse_config
    from pipeline.dedup import near_groups, near_merge
    from pipeline.executor import run_local
    near_groups.GROUP_RECORDS = 20
    corpus, out = sys.argv[1], sys.argv[2]
    run_local(parse_config({"sources": [{"name": "c", "kind": "jsonl", "paths": [corpus], "id_field": "id"}],
                            "output": {"dir": out, "shard_max_rows": 150}, "runner": {"max_workers": 1}}, "test"))
""")


def test_a_run_killed_among_the_group_tasks_resumes_without_redoing_finished_groups(tmp_path):
    corpus, clean, killed, markers = run_clean_and_killed(_KILLABLE, tmp_path, "_work/near/groups", "g*.json")
    total = json.loads((markers / "plan.json").read_text())["groups"]
    finished = {p: p.stat().st_mtime_ns for p in markers.glob("g*.json")}
    assert 3 <= len(finished) < total
    # the global step names what is missing rather than deciding without it
    with pytest.raises(PipelineError, match="group task"):
        merge_groups(killed / "_work", parse_config({"sources": [{"name": "c", "kind": "jsonl", "paths": [str(corpus)]}],
                                                     "output": {"dir": str(killed)}}, "test").dedup.near, "longest", 0)
    # the rest of the step, task by task as a runner would: the finished tasks are not run again
    for g in range(total):
        run_near_group(str(killed / "_work"), g)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    run_script(_KILLABLE, corpus, killed)
    assert file_digests(killed) == file_digests(clean)


_KILLABLE_REPOINT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.config import parse_config
    from pipeline.executor import run_local
    from pipeline.run import barrier_parts, near_groups
    barrier_parts.REPOINT_RECORDS = 100
    join = near_groups.run_near_repoint

    def slow(work_dir, p):  # each join task that runs takes long enough to be killed among them
        if not (Path(work_dir) / "near" / "repoint" / f"p{p:05d}.json").exists():
            time.sleep(0.2)
        return join(work_dir, p)

    near_groups.run_near_repoint = slow
    corpus, out = sys.argv[1], sys.argv[2]
    run_local(parse_config({"sources": [{"name": "c", "kind": "jsonl", "paths": [corpus], "id_field": "id"}],
                            "output": {"dir": out, "shard_max_rows": 150}, "runner": {"max_workers": 1}}, "test"))
""")


def test_a_run_killed_among_the_repoint_tasks_resumes_without_redoing_finished_ones(tmp_path):
    corpus, clean, killed, markers = run_clean_and_killed(_KILLABLE_REPOINT, tmp_path, "_work/near/repoint", "p*.json")
    total = json.loads((killed / "_work" / "barrier" / "parts.json").read_text())["near-repoint"]
    finished = {p: p.stat().st_mtime_ns for p in markers.glob("p*.json")}
    assert 3 <= len(finished) < total
    for p in range(total):  # the rest of the step, task by task as a runner would
        run_near_repoint(str(killed / "_work"), p)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    run_script(_KILLABLE_REPOINT, corpus, killed)
    assert file_digests(killed) == file_digests(clean)
