"""Remote state directories: which URLs are remote, and index.json written last and whole."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from pipeline.dedup import index_store
from pipeline.dedup.index_store import CorpusIndexError, RemoteStateDir, is_url, local_state_dir


@pytest.fixture
def url():
    root = f"/hygiene-{uuid.uuid4().hex}"
    yield f"memory://{root}/state"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_paths_and_file_urls_are_local_and_other_urls_remote(tmp_path):
    assert not is_url(tmp_path) and not is_url("state/dir")
    assert local_state_dir(tmp_path) == tmp_path
    assert local_state_dir(tmp_path.as_uri()) == tmp_path
    assert RemoteStateDir.parse(tmp_path.as_uri()) is None
    assert local_state_dir("memory://x/state") is None
    assert RemoteStateDir.parse("memory://x/state/").url == "memory://x/state"


def test_an_unknown_protocol_is_a_clear_error():
    with pytest.raises(CorpusIndexError, match=r"^nosuchproto://b/state: cannot open this state directory.*fsspec backend"):
        RemoteStateDir.parse("nosuchproto://b/state")


def test_a_missing_index_reads_as_none_and_a_missing_file_as_absent(url, tmp_path):
    remote = RemoteStateDir.parse(url)
    assert remote.read_index() is None
    assert remote.fetch("exact/r.parquet", tmp_path / "m" / "exact" / "r.parquet") is False


def test_an_index_naming_a_file_outside_the_state_directory_is_refused(url, tmp_path):
    with pytest.raises(CorpusIndexError, match="outside the state directory.*hygiene index rebuild"):
        RemoteStateDir.parse(url).fetch("../elsewhere/x.sig", tmp_path / "m" / "x.sig")


@pytest.mark.parametrize("atomic_put", [True, False])
def test_commit_writes_index_json_whole_and_leaves_no_temporary_file(url, tmp_path, monkeypatch, atomic_put):
    if not atomic_put:  # the temp-name-and-move path other filesystems (sftp, ftp, ...) take
        monkeypatch.setattr(index_store, "_ATOMIC_PUT", frozenset())
    remote = RemoteStateDir.parse(url)
    (tmp_path / "f.bin").write_bytes(b"abc")
    remote.upload(Path(tmp_path / "f.bin"), "near/f.bin")
    remote.commit_index(b'{"runs": []}\n')
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/state/", 1)[1] for p in fs.find(remote.path)) == ["index.json", "near/f.bin"]
    assert remote.read_index() == b'{"runs": []}\n'
