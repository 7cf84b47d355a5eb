"""Runs that share a state directory take turns from barrier to index update.

A run takes `state_lock` on its state directory just before its barrier and holds it until its
index update in finalize is done, so a second run's barrier sees the first run's committed
survivors (and drops its copies of them) and two index updates never interleave; reading
(pass 1), the expensive part, still overlaps. On a local filesystem the lock is an flock on
`STATE/.hygiene-state.lock`, released by the kernel when the process exits, however it exits.
In an object store it is a `Lease`: numbered objects created only if absent (a conditional put),
renewed while held, taken over once expired.

Usage::

    with state_lock(cfg.state):      # cfg.state None: nothing to hold
        ...                          # barrier .. pass 2 .. publish .. CorpusIndex.add_run
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.dedup.index_store import CorpusIndexError, local_state_dir

STATE_LOCK = ".hygiene-state.lock"   # held by a run from its barrier to its index update
INDEX_LOCK = ".hygiene-index.lock"   # held around add_run's read-modify-write of index.json
# TEST HOOK, for the forced-interleaving tests only: a runner pauses after its barrier (holding
# the state lock) for this many seconds, or, given a file path, while that file exists (at most
# 5 minutes). Unset in production: nothing happens.
PAUSE_ENV = "HYGIENE_TEST_PAUSE_AFTER_BARRIER"
# How long a run waits for another run that holds the state directory before it stops with an
# error (seconds; `inf`: no limit).
TIMEOUT_ENV = "HYGIENE_STATE_LOCK_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600.0

log = logging.getLogger(__name__)


def acquire_flock(path: Path, timeout_s: float | None, what: str, level: int = logging.WARNING) -> int:
    """An open fd holding an exclusive flock on `path`; waits (saying so at `level`) up to `timeout_s` seconds."""
    import fcntl

    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        log.log(level, "%s: waiting for another run that holds this state directory (%s)", path.parent, what)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                log.log(level, "%s: the other run is done; this run goes on", path.parent)
                return fd
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise CorpusIndexError(
                        f"{path.parent}: another run has held this state directory for over {timeout_s:g} s "
                        f"(its lock {path.name}); wait for it and run again, or raise ${TIMEOUT_ENV}") from None
                time.sleep(0.1)
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def state_lock(state, lock_file: str = STATE_LOCK) -> Iterator[None]:
    """Hold the state directory of `state` (a StateConfig, or None: nothing to hold) exclusively.

    Why a lock and not an optimistic re-check: a run whose barrier saw the index as it was must
    not publish after another run changed it, and re-deciding after the fact would mean redoing
    the barrier and pass 2; holding the directory from barrier to index update is simpler, costs
    the second run only the first run's barrier, pass 2 and publish, and cannot lose a run.
    """
    if state is None:
        yield
        return
    root = local_state_dir(state.dir)
    if root is None:
        from pipeline.dedup.index_store import RemoteStateDir

        lease = Lease(RemoteStateDir.parse(state.dir))
        held = lease.acquire(lock_timeout_s())
        try:
            yield
        finally:
            if held:
                lease.release()
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = acquire_flock(root / lock_file, lock_timeout_s(), "it is between its barrier and its index update")
    try:
        yield
    finally:
        os.close(fd)  # the kernel releases the flock with the fd, or when the process dies


def lock_timeout_s() -> float:
    """Seconds a run waits for the state directory: ${HYGIENE_STATE_LOCK_TIMEOUT_S}, default an hour."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise CorpusIndexError(f"${TIMEOUT_ENV}={value!r}: give a number of seconds (or inf)")
    return seconds


def pause_after_barrier_if_asked() -> None:
    """TEST HOOK: pause as ${HYGIENE_TEST_PAUSE_AFTER_BARRIER} says (the state lock held); unset: nothing."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return
    log.warning("%s=%s: pausing between barrier and publish (a test hook)", PAUSE_ENV, value)
    try:
        time.sleep(float(value))
    except ValueError:  # a gate file: wait while it exists
        deadline = time.monotonic() + 300
        while Path(value).exists() and time.monotonic() < deadline:
            time.sleep(0.05)


LEASE_DIR = ".hygiene-lease"  # in a remote state directory: g000000000001, g000000000002, ... (JSON)
LEASE_TTL_S = 120.0           # a holder renews every TTL/4; a crashed holder's lease lapses after TTL


class Lease:
    """The state directory held in an object store, without a lock server.

    Generation k of the lease is the object LEASE_DIR/g<k>; whoever creates it (a put that fails
    if the object exists: fsspec's `pipe_file(mode="create")`, S3's `If-None-Match: *`) holds the
    directory. The newest generation is free once its holder marked it released, or once its
    `expires_at` passed (the holder died: it renews every TTL/4 while it lives); a waiter then
    creates generation k+1, and of two waiters only one create succeeds. Assumes clocks agree to
    well within the TTL (two minutes). A filesystem that cannot create only-if-absent is detected
    (a second create of the same object must fail) and then the run goes on unheld, with a warning.
    """

    def __init__(self, remote) -> None:
        self.remote = remote
        self.generation: int | None = None
        self.token = os.urandom(16).hex()
        self._stop = None

    def _path(self, k: int) -> str:
        return f"{self.remote.path}/{LEASE_DIR}/g{k:012d}"

    def _newest(self) -> tuple[int, dict | None]:
        import json

        fs = self.remote.fs
        fs.invalidate_cache(f"{self.remote.path}/{LEASE_DIR}")  # fsspec caches listings: other runs write here
        try:
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(f"{self.remote.path}/{LEASE_DIR}", detail=False)]
        except FileNotFoundError:
            return 0, None
        gens = sorted(int(n[1:]) for n in names if n.startswith("g") and n[1:].isdigit())
        if not gens:
            return 0, None
        try:
            return gens[-1], json.loads(fs.cat_file(self._path(gens[-1])))
        except (FileNotFoundError, ValueError):
            return gens[-1], {"expires_at": time.time() + 1}  # being written: look again shortly

    def _body(self, released: bool = False) -> bytes:
        import json
        import socket

        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "released": released,
                           "expires_at": time.time() + LEASE_TTL_S}).encode()

    def acquire(self, timeout_s: float) -> bool:
        """Hold the directory (True), or go on unheld where the store cannot create only-if-absent (False)."""
        fs, where = self.remote.fs, self.remote.url
        deadline, said = time.monotonic() + timeout_s, False
        while True:
            k, info = self._newest()
            if info is not None and not info.get("released") and info.get("expires_at", 0) > time.time():
                if not said:
                    log.warning("%s: waiting for another run that holds this state directory (lease %s/g%012d, "
                                "host %s)", where, LEASE_DIR, k, info.get("host"))
                    said = True
                if time.monotonic() >= deadline:
                    raise CorpusIndexError(f"{where}: another run has held this state directory for over {timeout_s:g} s "
                                           f"(its lease {LEASE_DIR}/g{k:012d}); wait for it and run again, "
                                           f"or raise ${TIMEOUT_ENV}")
                time.sleep(0.5)
                continue
            try:
                fs.makedirs(f"{self.remote.path}/{LEASE_DIR}", exist_ok=True)
                fs.pipe_file(self._path(k + 1), self._body(), mode="create")
            except FileExistsError:
                continue  # another run took generation k+1 first
            except (OSError, TypeError, NotImplementedError) as e:
                return self._unheld(f"{e.__class__.__name__}: {e}")
            try:  # a store that ignored mode="create" would overwrite here instead of refusing
                fs.pipe_file(self._path(k + 1), self._body(), mode="create")
            except FileExistsError:
                pass
            else:
                # Left unreleased, this probe would hold off every later run for a whole TTL.
                fs.pipe_file(self._path(k + 1), self._body(released=True))
                return self._unheld("a second create of the same object succeeded")
            self.generation = k + 1
            if k > 8:  # older generations are history: about eight are kept (best effort)
                try:
                    fs.rm_file(self._path(k - 8))
                except OSError:
                    pass
            if said:
                log.warning("%s: the other run is done; this run goes on", where)
            self._renew_in_background()
            return True

    def _unheld(self, why: str) -> bool:
        log.warning("%s: this store cannot create an object only if it is absent (%s): the state directory is not "
                    "locked, so runs that share it must not overlap", self.remote.url, why)
        return False

    def _renew_in_background(self) -> None:
        import threading

        stop = self._stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE_TTL_S / 4):
                try:
                    self.remote.fs.pipe_file(self._path(self.generation), self._body())
                except OSError as e:
                    log.warning("%s: cannot renew the state lease (%s)", self.remote.url, e.__class__.__name__)

        threading.Thread(target=renew, name="hygiene-state-lease", daemon=True).start()

    def release(self) -> None:
        """Mark this generation released (only its holder writes it); a failure leaves it to expire."""
        self._stop.set()
        try:
            self.remote.fs.pipe_file(self._path(self.generation), self._body(released=True))
        except OSError as e:
            log.warning("%s: cannot release the state lease (%s); it expires in %g s", self.remote.url,
                        e.__class__.__name__, LEASE_TTL_S)
