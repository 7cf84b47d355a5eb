"""Runs that share a state directory take turns from barrier to index update.

A run takes `state_lock` on its state directory just before its barrier and holds it until its
index update in finalize is done, so a second run's barrier sees the first run's committed
survivors (and drops its copies of them) and two index updates never interleave; reading
(pass 1), the expensive part, still overlaps. On a local filesystem the lock is an flock on
`STATE/.hygiene-state.lock`, released by the kernel when the process exits, however it exits.

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
        log.warning("%s: a state directory in an object store has no lock yet: runs that share it must not "
                    "overlap (two at once may both keep the same records; the index keeps both runs)", state.dir)
        yield
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
