"""The corpus index: later runs drop copies of published records; incremental runs skip old inputs."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.dedup.index import CorpusIndexError, rebuild
from pipeline.errors import OutputError, RejectionsError
from pipeline.executor import run_local
from tests.conftest import REPO, build_config

WEB = REPO / "data_samples" / "web"


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(WEB / "part-2.jsonl", d / "a.jsonl")
    return d


def cfg(tmp_path, corpus, out, **kw):
    state = {"dir": str(tmp_path / "state"), **kw.pop("state", {})}
    return build_config(tmp_path / out, [{"name": "w", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
                        state=state, **kw)


def ledger(run):
    return pl.read_parquet(str(run / "ledger" / "*.parquet"))


def publish_then_copy(tmp_path, corpus, config_for) -> tuple[dict, dict]:
    """Publish run r1 over a.jsonl, then run r2 with b.jsonl added: a near and an exact copy of a
    published record (long-001) and a fresh one. Checks r2's decisions; returns both manifests."""
    first = run_local(config_for("r1"))
    lines = (corpus / "a.jsonl").read_text().splitlines()
    orig = json.loads(lines[1])                      # long-001: not edited in part-2
    near = {**orig, "id": "new-near", "text": orig["text"].replace("Field notes", "Field notes, revised,")}
    exact = {**orig, "id": "new-exact"}
    fresh = {"id": "new-fresh", "text": "a record nobody has published before, with enough words to shingle it"}
    (corpus / "b.jsonl").write_text("\n".join(json.dumps(r) for r in (near, exact, fresh)) + "\n")
    second = run_local(config_for("r2"))
    rows = {r["record_id"]: r for r in ledger(tmp_path / "r2").to_dicts()}
    assert set(rows) == {"new-near", "new-exact", "new-fresh"}          # a.jsonl was skipped
    assert rows["new-exact"]["decision"] == "dropped_duplicate"
    assert rows["new-exact"]["duplicate_of"] == f"{first['run_id']}/long-001"
    assert rows["new-near"]["decision"] == "dropped_near_duplicate"
    assert rows["new-near"]["duplicate_of"] == f"{first['run_id']}/long-001"
    assert rows["new-fresh"]["decision"] == "kept"
    return first, second


def test_a_later_run_drops_exact_and_near_copies_of_published_records(tmp_path, corpus):
    first, second = publish_then_copy(tmp_path, corpus, lambda out: cfg(tmp_path, corpus, out))
    assert second["skipped_inputs"][0]["processed_in_run"] == first["run_id"]
    assert second["near_dedup"]["dropped_against_index"] == 1
    assert second["corpus_index"]["runs"] == [first["run_id"]]


def test_full_reprocesses_inputs_already_published(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    again = run_local(cfg(tmp_path, corpus, "r2", state={"incremental": False}))
    assert again["skipped_inputs"] == []
    # Survivors of run 1 are exact copies now; its near duplicates are near copies of them.
    assert set(ledger(tmp_path / "r2")["decision"]) == {"dropped_duplicate", "dropped_near_duplicate"}


def test_a_failed_run_leaves_the_index_unchanged(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    before = (tmp_path / "state" / "index.json").read_bytes()
    (corpus / "bad.jsonl").write_text("{broken\n")
    with pytest.raises(RejectionsError):
        run_local(cfg(tmp_path, corpus, "r2", errors={"fail_on_reject": True}))
    assert (tmp_path / "state" / "index.json").read_bytes() == before


def test_a_corrupted_index_file_is_a_clear_error_with_the_rebuild_command(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    part = next((tmp_path / "state" / "exact").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(CorpusIndexError, match=r"corrupted.*hygiene index rebuild") as e:
        run_local(cfg(tmp_path, corpus, "r2"))
    assert part.name in str(e.value)


def test_an_index_of_another_format_version_is_refused(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    p = tmp_path / "state" / "index.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "format_version": 99}))
    with pytest.raises(CorpusIndexError, match="format 99"):
        run_local(cfg(tmp_path, corpus, "r2"))


def test_an_indexed_run_is_never_overwritten(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    with pytest.raises(OutputError, match="in the corpus index"):
        run_local(cfg(tmp_path, corpus, "r1"))


def test_rebuild_from_published_runs_recreates_the_same_index_files(tmp_path, corpus):
    r1 = run_local(cfg(tmp_path, corpus, "r1"))
    (corpus / "b.jsonl").write_text(json.dumps({"id": "x", "text": "one more fresh record for the second run"}) + "\n")
    run_local(cfg(tmp_path, corpus, "r2"))
    live = json.loads((tmp_path / "state" / "index.json").read_text())
    result = CliRunner().invoke(main, ["index", "rebuild", str(tmp_path / "rebuilt"), str(tmp_path / "r2"), str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((tmp_path / "rebuilt" / "index.json").read_text())
    assert [r["run_id"] for r in rebuilt["runs"]][0] == r1["run_id"]
    assert [r["files"] for r in rebuilt["runs"]] == [r["files"] for r in live["runs"]]


def test_rebuild_refuses_a_run_whose_shard_was_altered(tmp_path, corpus):
    run_local(cfg(tmp_path, corpus, "r1"))
    shard = next((tmp_path / "r1" / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")
    with pytest.raises(CorpusIndexError, match="does not match its manifest"):
        rebuild(tmp_path / "rebuilt", [tmp_path / "r1"])
