"""The run's scratch space on an object store, for workers that share no filesystem (`runner.scratch: store`).

Every step reads and writes its scratch files (`pipeline.run.workdir`) on a local disk. With the
scratch on a store (`<output.dir>/_work/` when `output.dir` is a URL), each machine keeps a local
copy of it and exchanges files with the store at step boundaries:

- a worker that runs a step (`run_step` called with the scratch URL) first brings its copy up to
  date (`pull`: objects it has not seen, or whose ETag changed), runs the step on the copy, then
  uploads what the step wrote and removes what it deleted (`push`);
- the flow's machine does the same around the steps it runs itself (plan, barrier, folds,
  finalize) and before it reads what the workers wrote (the shard plan, task plans).

Written files are complete when they appear (every step writes through a temporary name and a
rename), so a copy never holds half a file; temporary files are never exchanged. Workers do not
fetch the record content of other steps (output shards, ledger parts): only the flow's machine
does, to publish them. Pass 1 keeps no spill with a shared scratch: pass 2 reads its units again
from the inputs (on the store), which every worker can reach.

Each copy records, per file, the ETag it was exchanged at and the local size and modification time
(`<copy>.sync.json`, beside the copy, guarded by a file lock): a file is uploaded when it no longer
matches that record, downloaded when the store's ETag differs from it.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import OutputError
from pipeline.storage import cache_root
from pipeline.storefs import StoreFS

# Never exchanged: temporary names, spill, caches. Not fetched by workers: record content that only
# the flow's machine reads (to publish it).
_NEVER = ("spill/", "hf_cache/", "final/")
_CONTENT = ("shards/", "ledger/")


def _skip(rel: str, content: bool) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if name.startswith(".") and ".tmp" in name:
        return True
    if rel.startswith(_NEVER):
        return True
    return not content and rel.startswith(_CONTENT)


class SharedScratch:
    """One run's scratch space on a store, and this machine's copy of it."""

    def __init__(self, url: str, local: Path | None = None) -> None:
        import fsspec.core

        self.url = url.rstrip("/")
        fs, path = fsspec.core.url_to_fs(self.url)
        self.fs = StoreFS(fs)
        self.path = path.rstrip("/")
        proto = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        self.local = Path(local) if local is not None else cache_root() / "scratch" / proto / self.path
        self.record = self.local.with_name(self.local.name + ".sync.json")

    def _fail(self, rel: str, doing: str, e: Exception) -> OutputError:
        from pipeline.storage import explain_store_error

        return OutputError(f"{self.url}/{rel}: cannot {doing} the run's shared scratch space: {explain_store_error(e, self.url)}")

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        self.local.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.local.with_name(self.local.name + ".sync.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = json.loads(self.record.read_text()) if self.record.exists() else {}
            yield state
            tmp = self.record.with_name(self.record.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.record)
        finally:
            os.close(fd)

    def _remote(self) -> dict[str, str]:
        """rel -> ETag of every object of the scratch space."""
        from pipeline.storage import info_of

        self.fs.invalidate_cache(self.path)
        try:
            found = self.fs.find(self.path, detail=True) if self.fs.exists(self.path) else {}
        except OSError as e:
            raise self._fail("", "list", e) from e
        return {p[len(self.path):].lstrip("/"): info_of(self.fs, p, i).etag for p, i in found.items()
                if i.get("type") != "directory"}

    def _local_files(self, content: bool) -> dict[str, tuple[int, int]]:
        out = {}
        if not self.local.exists():
            return out
        for p in self.local.rglob("*"):
            if p.is_file():
                rel = p.relative_to(self.local).as_posix()
                if not _skip(rel, content) and rel != ".hygiene.lock":
                    st = p.stat()
                    out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def pull(self, content: bool = False) -> dict[str, tuple[int, int]]:
        """Bring this copy up to date with the store (`content`: the output shards and ledger parts
        too); returns the copy's files as they are now (the baseline of `push`)."""
        with self._locked() as state:
            remote = self._remote()
            for rel in sorted(set(state) - set(remote)):  # exchanged once, since removed by another machine
                (self.local / rel).unlink(missing_ok=True)
                state.pop(rel)
            for rel, etag in sorted(remote.items()):
                if _skip(rel, content) or state.get(rel, {}).get("etag") == etag:
                    continue
                dest = self.local / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.tmp-sync{os.getpid()}")
                try:
                    self.fs.get_file(f"{self.path}/{rel}", str(tmp))
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise self._fail(rel, "download a file of", e) from e
                os.replace(tmp, dest)
                st = dest.stat()
                state[rel] = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            return self._local_files(content)

    def push(self, baseline: dict[str, tuple[int, int]] | None = None, content: bool = True) -> None:
        """Upload the files of this copy that changed since they were last exchanged, and remove from
        the store those that were in `baseline` and are gone from the copy."""
        from pipeline.storage import info_of

        with self._locked() as state:
            now = self._local_files(content)
            for rel, (size, mtime_ns) in sorted(now.items()):
                known = state.get(rel)
                if known is not None and (known["size"], known["mtime_ns"]) == (size, mtime_ns):
                    continue
                target = f"{self.path}/{rel}"
                try:
                    self.fs.put_file(str(self.local / rel), target)
                    self.fs.invalidate_cache(target.rsplit("/", 1)[0])
                    etag = info_of(self.fs, target, self.fs.info(target)).etag
                except OSError as e:
                    raise self._fail(rel, "upload a file to", e) from e
                state[rel] = {"etag": etag, "size": size, "mtime_ns": mtime_ns}
            for rel in sorted(set(baseline or ()) - set(now)):
                try:
                    self.fs.rm_file(f"{self.path}/{rel}")
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise self._fail(rel, "remove a file from", e) from e
                state.pop(rel, None)

    def remove(self) -> None:
        """Delete the scratch space from the store and this machine's copy (after publishing)."""
        import shutil

        try:
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
        except OSError as e:
            raise self._fail("", "remove", e) from e
        if self.local.exists() and self.local != self.local.parent:
            shutil.rmtree(self.local, ignore_errors=True)
        self.record.unlink(missing_ok=True)


@contextmanager
def worker_copy(url: str) -> Iterator[str]:
    """A worker's side of one step: its up-to-date copy of the scratch space, and the step's
    writes uploaded when the step returns (nothing is uploaded when it raises)."""
    scratch = SharedScratch(url)
    baseline = scratch.pull()
    yield str(scratch.local)
    scratch.push(baseline, content=True)


def scratch_url(cfg) -> str | None:
    """The URL of the run's shared scratch space, or None when it is on a local or shared filesystem."""
    if getattr(cfg.runner, "scratch", "local") != "store":
        return None
    return f"{cfg.output.dir.rstrip('/')}/_work"


class DriverSync:
    """The flow's machine's exchanges with a shared scratch space around the steps it runs and
    dispatches (every method does nothing when the scratch is local)."""

    def __init__(self, cfg, work: str) -> None:
        url = scratch_url(cfg)
        self.scratch = SharedScratch(url, Path(work)) if url else None
        self.task_work = url or work
        self._baseline: dict | None = None

    def send(self) -> None:
        """Before workers run: upload what this machine wrote (the plan, the barrier's decisions, ...)."""
        if self.scratch is not None:
            self.scratch.push(self._baseline, content=True)
            self._baseline = self.scratch._local_files(True)

    def receive(self, content: bool = False) -> None:
        """After workers ran (or before this machine reads what they wrote): download their files."""
        if self.scratch is not None:
            self._baseline = self.scratch.pull(content=content)

    def done(self) -> None:
        """After publishing: remove the scratch space from the store, and this machine's copies
        (a worker on another machine keeps its copy until a later run to the same output, whose
        first exchange removes what the store no longer has)."""
        if self.scratch is not None:
            self.scratch.remove()
            SharedScratch(self.scratch.url).remove()
