"""The corpus index in a remote (fsspec) state directory: same decisions, same files, same commit point."""

from __future__ import annotations

import gc
import json
import tempfile
import uuid

import fsspec
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.dedup.index import CorpusIndexError
from pipeline.dedup.state_lock import LEASE_DIR
from pipeline.errors import RejectionsError
from pipeline.executor import run_local
from tests.conftest import build_config
from tests.integration.test_index import corpus, publish_then_copy  # noqa: F401 - `corpus` is a fixture



@pytest.fixture
def state():
    """A fresh memory:// state directory, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/hygiene-{uuid.uuid4().hex}"
    yield f"memory://{root}/state"
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def mirrors(tmp_path, monkeypatch):
    """Local mirrors go into a folder of this test, to check that they are removed."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def cfg(tmp_path, corpus, out, state, **kw):
    return build_config(tmp_path / out, [{"name": "w", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
                        state={"dir": state, **kw.pop("state", {})}, **kw)


def remote_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def test_a_later_run_drops_copies_of_records_published_to_a_remote_index(tmp_path, corpus, state, mirrors):
    first, second = publish_then_copy(tmp_path, corpus, lambda out: cfg(tmp_path, corpus, out, state))
    assert second["near_dedup"]["dropped_against_index"] == 1
    assert second["corpus_index"] == {**second["corpus_index"], "path": state, "runs": [first["run_id"]]}
    index = json.loads(remote_bytes(f"{state}/index.json"))
    assert [r["run_id"] for r in index["runs"]] == [first["run_id"], second["run_id"]]
    gc.collect()
    assert list(mirrors.iterdir()) == []                                 # every local mirror was removed


def test_an_incremental_run_skips_inputs_a_remote_index_has_seen(tmp_path, corpus, state):
    first = run_local(cfg(tmp_path, corpus, "r1", state))
    again = run_local(cfg(tmp_path, corpus, "r2", state))
    assert [s["processed_in_run"] for s in again["skipped_inputs"]] == [first["run_id"]]
    assert again["inputs"] == []


def test_a_failed_run_leaves_the_remote_index_unchanged(tmp_path, corpus, state):
    run_local(cfg(tmp_path, corpus, "r1", state))
    fs, root = fsspec.core.url_to_fs(state)
    index_files = lambda: sorted(f for f in fs.find(root) if f"/{LEASE_DIR}/" not in f)  # noqa: E731 (not the lease)
    before, files = remote_bytes(f"{state}/index.json"), index_files()
    (corpus / "bad.jsonl").write_text("{broken\n")
    with pytest.raises(RejectionsError):
        run_local(cfg(tmp_path, corpus, "r2", state, errors={"fail_on_reject": True}))
    assert remote_bytes(f"{state}/index.json") == before
    assert index_files() == files


def test_rebuild_into_a_url_writes_the_same_index_as_a_local_rebuild(tmp_path, corpus, state):
    local = str(tmp_path / "state")
    run_local(cfg(tmp_path, corpus, "r1", local))
    (corpus / "b.jsonl").write_text(json.dumps({"id": "x", "text": "one more fresh record for the second run"}) + "\n")
    run_local(cfg(tmp_path, corpus, "r2", local))
    runs = [str(tmp_path / "r2"), str(tmp_path / "r1")]
    for target in (str(tmp_path / "rebuilt"), state):
        result = CliRunner().invoke(main, ["index", "rebuild", target, *runs])
        assert result.exit_code == 0, result.output
    assert f"index {state}:" in result.output

    def without_times(meta: dict) -> dict:
        return {**meta, "runs": [{k: v for k, v in r.items() if k != "added_at"} for r in meta["runs"]]}

    here = json.loads((tmp_path / "rebuilt" / "index.json").read_text())
    there = json.loads(remote_bytes(f"{state}/index.json"))
    assert without_times(there) == without_times(here)
    for run in here["runs"]:
        for rel in run["files"]:
            assert remote_bytes(f"{state}/{rel}") == (tmp_path / "rebuilt" / rel).read_bytes()


def test_a_corrupted_remote_index_is_a_clear_error_naming_the_url(tmp_path, corpus, state):
    run_local(cfg(tmp_path, corpus, "r1", state))
    fs, root = fsspec.core.url_to_fs(state)
    part = next(p for p in fs.find(root) if "/exact/" in p)
    fs.pipe_file(part, fs.cat_file(part)[:-10])
    with pytest.raises(CorpusIndexError, match=rf"corrupted.*hygiene index rebuild {state} ") as e:
        run_local(cfg(tmp_path, corpus, "r2", state))
    assert str(e.value).startswith(f"memory://{part}: ")


def test_an_unreadable_remote_index_json_names_the_url(tmp_path, corpus, state):
    fsspec.filesystem("memory").pipe_file(fsspec.core.url_to_fs(state)[1] + "/index.json", b"{not json")
    with pytest.raises(CorpusIndexError, match=rf"^{state}/index.json: the corpus index is unreadable.*hygiene index rebuild"):
        run_local(cfg(tmp_path, corpus, "r1", state))


def test_a_file_url_is_the_local_state_directory(tmp_path, corpus):
    first = run_local(cfg(tmp_path, corpus, "r1", (tmp_path / "state").as_uri()))
    index = json.loads((tmp_path / "state" / "index.json").read_text())
    assert [r["run_id"] for r in index["runs"]] == [first["run_id"]]
    assert first["corpus_index"]["path"] == str(tmp_path / "state")


def test_a_store_that_ignores_create_only_if_absent_leaves_no_lease_to_hold_off_the_next_run(state, monkeypatch):
    """The GCS emulator overwrites on `mode="create"`: the lease is then unheld (with a warning), and
    the object its probe wrote must not make the next run wait for it to expire."""
    from fsspec.implementations.memory import MemoryFileSystem

    from pipeline.dedup.index_store import RemoteStateDir
    from pipeline.dedup.state_lock import Lease

    real = MemoryFileSystem.pipe_file
    monkeypatch.setattr(MemoryFileSystem, "pipe_file",
                        lambda self, path, value, mode="overwrite", **kw: real(self, path, value, **kw))
    remote = RemoteStateDir.parse(state)
    assert Lease(remote).acquire(timeout_s=3) is False
    assert Lease(remote).acquire(timeout_s=3) is False  # before the fix: waited, then "another run has held"
