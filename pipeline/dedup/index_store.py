"""Where a corpus index lives when its state directory is an fsspec URL (s3://, gs://, memory://, ...).

The index code reads local files (it memory-maps signatures and reads Parquet), so a remote
state directory is mirrored: `CorpusIndex.open` fetches index.json and every file it names into
a local temporary directory and verifies their digests there; `add_run` writes the new run's
files into that mirror, uploads them, and writes index.json last. index.json is the commit point:
a run that fails before it is written leaves the remote index as it was. Plain paths and
`file://` URLs never come here: they keep the local code path and its atomic renames.

Usage::

    remote = RemoteStateDir.parse("s3://bucket/hygiene/state")   # None for a local path
    raw = remote.read_index()                                    # bytes, or None if there is none yet
    remote.fetch("exact/RUN.parquet", mirror / "exact/RUN.parquet")
    remote.upload(mirror / "exact/RUN.parquet", "exact/RUN.parquet")
    remote.commit_index(data)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.storefs import StoreFS

INDEX_FILE = "index.json"

# Filesystems whose single-object write replaces an object whole (readers see the old or the new
# bytes, never a part): index.json is written in place. Others get a temporary name and a move.
_ATOMIC_PUT = frozenset({"memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "r2"})


class CorpusIndexError(PipelineError):
    """The corpus index is missing a file, corrupted, of another version or configuration, or unreachable."""


def is_url(state_dir: str | os.PathLike) -> bool:
    """True for an fsspec URL (`proto://...` or a chained `a::b://...`), false for a plain path."""
    s = os.fspath(state_dir)
    return isinstance(s, str) and ("://" in s or "::" in s)


def local_state_dir(state_dir: str | os.PathLike) -> Path | None:
    """The local directory `state_dir` names (a path or a file:// URL), or None for a remote URL."""
    if not is_url(state_dir):
        return Path(state_dir)
    remote = RemoteStateDir.parse(state_dir)
    if remote is not None:
        return None
    import fsspec.core

    return Path(fsspec.core.url_to_fs(os.fspath(state_dir))[1])


@dataclass
class RemoteStateDir:
    """A state directory on a non-local fsspec filesystem."""

    url: str
    fs: object
    path: str

    @classmethod
    def parse(cls, state_dir: str | os.PathLike) -> "RemoteStateDir | None":
        """The remote state directory `state_dir` names, or None when it is local (a path or file://)."""
        if not is_url(state_dir):
            return None
        import fsspec.core
        from fsspec.implementations.local import LocalFileSystem

        url = os.fspath(state_dir).rstrip("/")
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise CorpusIndexError(
                f"{url}: cannot open this state directory ({e.__class__.__name__}: {e}); install the fsspec "
                "backend for its protocol (e.g. s3fs for s3://) or use a local path") from e
        if isinstance(fs, LocalFileSystem):
            return None
        return cls(url, StoreFS(fs), path.rstrip("/"))

    def where(self, rel: str) -> str:
        """The URL of a file of the index, for messages."""
        return f"{self.url}/{rel}"

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def read_index(self) -> bytes | None:
        """The bytes of index.json, or None if the directory has no index yet."""
        try:
            return self.fs.cat_file(self._p(INDEX_FILE))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CorpusIndexError(f"{self.where(INDEX_FILE)}: cannot read the corpus index ({e.__class__.__name__}: {e})") from e

    def fetch(self, rel: str, local: Path) -> bool:
        """Copy one file of the index into the local mirror; False if it does not exist."""
        if rel.startswith("/") or ".." in rel.split("/"):
            # index.json names files relative to the state directory; never write outside the mirror.
            raise CorpusIndexError(f"{self.where(INDEX_FILE)}: names a file outside the state directory ({rel!r}); "
                                   f"recreate it with `hygiene index rebuild {self.url} RUN_DIR...`")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(self._p(rel), str(local))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise CorpusIndexError(f"{self.where(rel)}: cannot read a file of the corpus index ({e.__class__.__name__}: {e})") from e
        return local.exists()

    def upload(self, local: Path, rel: str) -> None:
        """Copy one new file of the index from the local mirror to the state directory."""
        target = self._p(rel)
        try:
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(local), target)
        except OSError as e:
            raise CorpusIndexError(f"{self.where(rel)}: cannot write a file of the corpus index ({e.__class__.__name__}: {e}); "
                                "the index is unchanged (index.json was not written)") from e

    def commit_index(self, data: bytes) -> None:
        """Write index.json: the commit point, after every file it names is in place."""
        target = self._p(INDEX_FILE)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            if _ATOMIC_PUT.intersection(protocols):
                self.fs.pipe_file(target, data)
            else:
                tmp = self._p(f".{INDEX_FILE}.tmp-{os.getpid()}")
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, target)
        except OSError as e:
            raise CorpusIndexError(f"{self.where(INDEX_FILE)}: cannot write the corpus index ({e.__class__.__name__}: {e})") from e

    def remove_index(self) -> None:
        """Delete index.json (a rebuild starts from an empty index)."""
        self.fs.invalidate_cache(self.path)
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            if self.fs.exists(self._p(INDEX_FILE)):
                self.fs.rm_file(self._p(INDEX_FILE))
        except OSError as e:
            raise CorpusIndexError(f"{self.where(INDEX_FILE)}: cannot remove the old corpus index ({e.__class__.__name__}: {e})") from e
