"""The steward's tools: inspect, explain, diff (CLI and library), never showing content."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.audit.inspect import RecordNotFound, diff_runs, explain, summarize
from pipeline.cli import main
from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from tests.conftest import REPO


def sample(out, **dedup):
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(out)
    if dedup:
        data["dedup"]["near"] = {**data["dedup"]["near"], **dedup}
    return parse_config(data)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("steward")
    run_local(sample(root / "a"))
    run_local(sample(root / "b", enabled=False))
    return root / "a", root / "b"


def test_inspect_summarises_funnel_removals_and_verification(two_runs):
    s = summarize(two_runs[0])
    assert list(s["funnel"]) == ["read", "safety", "identity", "exact_dedup", "near_dedup", "pii", "output"]
    assert s["totals"]["input"] == 471 and s["verification"]["ok"]
    by_source = {(r["source"], r["reason"]): r["records"] for r in s["removals"] if r["decision"] == "dropped_duplicate"}
    assert by_source == {("web", "exact duplicate after normalisation"): 33, ("notes", "exact duplicate after normalisation"): 1,
                         ("images", "exact duplicate (identical image bytes)"): 1}
    result = CliRunner().invoke(main, ["inspect", str(two_runs[0])])
    assert result.exit_code == 0 and "funnel" in result.output and "verification: ok" in result.output


def test_explain_tells_the_story_of_a_near_duplicate_without_content(two_runs):
    st = explain(two_runs[0], "long-002")
    assert st["decision"] == "dropped_near_duplicate" and st["evidence"]["duplicate_of"] == "long-002-edit"
    assert [s["stage"] for s in st["stages"]] == ["read", "safety", "identity", "exact_dedup", "near_dedup"]
    assert {m["record_id"] for m in st["evidence"]["cluster"]} == {"long-002", "long-002-edit"}
    text = json.loads((REPO / "data_samples" / "web" / "part-2.jsonl").read_text().splitlines()[2])["text"]
    out = CliRunner().invoke(main, ["explain", str(two_runs[0]), "long-002", "--json"]).output
    assert text[:40] not in out and "long-002-edit" in out


def test_explain_finds_the_shard_of_a_kept_record_and_rejects_unknown_ids(two_runs):
    assert explain(two_runs[0], "web-0001")["evidence"]["shard"]["path"].startswith("shards/part-")
    with pytest.raises(RecordNotFound, match="no-such-id"):
        explain(two_runs[0], "no-such-id")
    assert CliRunner().invoke(main, ["explain", str(two_runs[0]), "no-such-id"]).exit_code == 1


def test_diff_names_changed_counts_decisions_and_config(two_runs):
    d = diff_runs(*two_runs)
    assert d["totals"]["kept"] == {"a": 415, "b": 426}
    assert d["decision_changes"]["total"] == 11
    assert {r["a"] for r in d["decision_changes"]["records"]} == {"dropped_near_duplicate"}
    assert d["config_changes"]["dedup.near.enabled"] == {"a": True, "b": False}
    result = CliRunner().invoke(main, ["diff", *map(str, two_runs)])
    assert result.exit_code == 0 and "dropped_near_duplicate → kept" in result.output
