"""The persistent local Prefect API that `hygiene run` starts on demand and reuses across runs.

Prefect with no API URL starts a temporary API in every process ("ephemeral mode"): 10-15 s of
every run on a 2-core machine. This module keeps one `prefect server start` running on 127.0.0.1
instead, detached from the run that started it, so the next run only pays a health check.

Everything lives in one per-user directory (`server_home()`): the Prefect database and home,
`server.json` (pid, port, the process's start time, Prefect's version), `server.log` and
`server.lock`. The lock makes two runs starting at once share one server; a recorded server whose
process is gone, whose pid now belongs to another process, that stopped answering `/health` or
that runs another Prefect version is replaced.

Usage::

    from flows.api_server import ensure_server, server_status, stop_server
    record = ensure_server()          # reuse the running server or start one; record.url is the API
    server_status()["healthy"]        # what `hygiene prefect-server status` prints
    stop_server()                     # stop it (only a process this module started)

No Prefect import here: the status and stop commands stay fast.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import psutil

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json

log = logging.getLogger(__name__)

HOME_ENV = "HYGIENE_PREFECT_HOME"
HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0  # a first start creates the database: 10-30 s here, far more on a loaded machine
HEALTH_GRACE_S = 5.0  # a busy server may miss one health check; a hung one is replaced after this
STOP_TIMEOUT_S = 20.0  # Prefect's graceful shutdown took 2-5 s here
PORT_ATTEMPTS = 3  # the free port can be taken between choosing it and the server binding it
# A record's start time and the process's differ by rounding only (both come from /proc).
START_TIME_TOLERANCE_S = 1.0

# The server runs with these whatever the caller's environment says: offline, no telemetry, and
# its own SQLite database (a PREFECT_API_DATABASE_CONNECTION_URL meant for the user's own server
# must not be migrated by this one).
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_API_HOST": HOST,
}
# Settings that would point the server itself at another API or profile.
SERVER_ENV_DROPPED = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


class PrefectServerError(PipelineError):
    """The local Prefect API could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServerRecord:
    """What `server.json` says about the server this module started."""

    pid: int
    port: int
    create_time: float  # the process's start time (epoch s): a reused pid has another
    prefect_version: str
    python: str
    started_at: str

    @property
    def url(self) -> str:
        """The API URL (what PREFECT_API_URL is set to)."""
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The Prefect UI of this server."""
        return f"http://{HOST}:{self.port}"


def server_home() -> Path:
    """$HYGIENE_PREFECT_HOME, else $XDG_CACHE_HOME/hygiene/prefect, else ~/.cache/hygiene/prefect.

    Not the user's own PREFECT_HOME: their profiles and database stay untouched."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "hygiene" / "prefect"


def prefect_version() -> str:
    """The installed Prefect's version (without importing Prefect)."""
    return metadata.version("prefect")


def _record_path(home: Path) -> Path:
    return home / "server.json"


def read_record(home: Path) -> ServerRecord | None:
    """The recorded server, or None when there is none or the file is unreadable (then replaced)."""
    try:
        data = json.loads(_record_path(home).read_text())
        return ServerRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("ignoring the unreadable server record %s (%s): a new server will be started",
                    _record_path(home), type(e).__name__)
        return None


def owned_process(record: ServerRecord) -> psutil.Process | None:
    """The recorded server's process if it is still running; None when the pid is gone, a zombie,
    or now belongs to another process (its start time differs): that one is never signalled."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > START_TIME_TOLERANCE_S:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the API at `url` answers its /health endpoint."""
    try:
        with _NO_PROXY.open(f"{url}/health", timeout=timeout) as r:
            return r.status == 200 and r.read().strip() == b"true"
    except (OSError, ValueError):
        return False


def _healthy_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if is_healthy(url):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


@contextmanager
def home_lock(home: Path, timeout: float) -> Iterator[None]:
    """Hold `server.lock` (an flock: released by the kernel if the holder dies) while the record
    is checked, a server started or stopped, so that two runs never start two servers."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / "server.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PrefectServerError(
                        f"{path}: another hygiene process has been starting or stopping the local Prefect API "
                        f"for over {timeout:.0f} s; wait for it, or run with --prefect-api ephemeral") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(port: int) -> list[str]:
    """`prefect server start` of this interpreter's Prefect, on 127.0.0.1:`port`."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]


def server_env(home: Path) -> dict[str, str]:
    """The caller's environment with the server's home, database and offline settings."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROPPED}
    env.update(SERVER_ENV)
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return env


# Popen objects of the servers this process started: kept so that they are not collected (and
# warned about) while the detached server runs on.
_STARTED: list = []


def _start(home: Path, timeout: float, command: Callable[[int], list[str]]) -> ServerRecord:
    """Start a detached server on a free port, record it at once (so that a run killed during the
    start-up leaves a record the next run can clean up), and wait until it answers /health."""
    import subprocess

    attempt = 0
    while True:
        attempt += 1
        port = free_port()
        logfile = home / "server.log"
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(command(port), env=server_env(home), cwd=str(home), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _STARTED.append(proc)
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # it died at once: the wait below reports why
        record = ServerRecord(pid=proc.pid, port=port, create_time=create_time, prefect_version=prefect_version(),
                              python=sys.executable, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(_record_path(home), asdict(record))
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if is_healthy(record.url):
                log.info("local Prefect API started: %s (pid %d)", record.url, record.pid)
                return record
            time.sleep(0.25)
        _record_path(home).unlink(missing_ok=True)
        if proc.poll() is None:
            _terminate(psutil.Process(proc.pid))
            raise PrefectServerError(f"the local Prefect API did not answer within {timeout:.0f} s; see {logfile}, "
                                     f"or run with --prefect-api ephemeral")
        if attempt < PORT_ATTEMPTS and _port_taken(logfile):
            continue
        raise PrefectServerError(f"the local Prefect API exited with code {proc.returncode} while starting; "
                                 f"see {logfile}, or run with --prefect-api ephemeral")


def _port_taken(logfile: Path) -> bool:
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return False
    return "already in use" in text or "address already in use" in text.lower()


def _terminate(proc: psutil.Process, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server and what it started, then SIGKILL what is left after `timeout`."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def ensure_server(home: Path | None = None, timeout: float = START_TIMEOUT_S,
                  command: Callable[[int], list[str]] = server_command,
                  notify: Callable[[str], None] | None = None) -> ServerRecord:
    """The running local server, started first if there is none or the recorded one is dead,
    stale (its pid reused), unhealthy or of another Prefect version; `notify` hears about a start
    (a person waiting at a terminal wants to know why the run has not begun)."""
    home = home or server_home()
    with home_lock(home, timeout + 30):
        record = read_record(home)
        if record is not None:
            proc = owned_process(record)
            current = record.prefect_version == prefect_version()
            if proc is not None and current and _healthy_within(record.url, HEALTH_GRACE_S):
                return record
            if proc is not None:
                log.warning("replacing the local Prefect API (pid %d): %s", record.pid,
                            "it runs Prefect " + record.prefect_version if not current else "it does not answer /health")
                _terminate(proc)
            _record_path(home).unlink(missing_ok=True)
        if notify is not None:
            notify(f"starting the local Prefect API in {home} (kept for the next runs; the first start takes 10-30 s)")
        return _start(home, timeout, command)


def stop_server(home: Path | None = None) -> ServerRecord | None:
    """Stop the recorded server; returns its record, or None when none was running (a stale
    record is removed, and a pid that now belongs to another process is left alone)."""
    home = home or server_home()
    if not _record_path(home).exists():
        return None
    with home_lock(home, STOP_TIMEOUT_S + 30):
        record = read_record(home)
        proc = owned_process(record) if record is not None else None
        if proc is not None:
            _terminate(proc)
        _record_path(home).unlink(missing_ok=True)
        return record if proc is not None else None


def server_status(home: Path | None = None) -> dict:
    """What is known about the local server: recorded, running, healthy, where, which version."""
    home = home or server_home()
    record = read_record(home)
    running = record is not None and owned_process(record) is not None
    status = {"home": str(home), "log": str(home / "server.log"), "recorded": record is not None,
              "running": running, "healthy": running and is_healthy(record.url)}
    if record is not None:
        status.update(asdict(record), url=record.url, ui_url=record.ui_url)
    return status
