"""The local Prefect API's bookkeeping: reuse, replacement of dead, stale, sick or outdated
servers, one server for concurrent callers, and never a signal to a process it did not start.

A tiny HTTP server that answers /api/health stands in for `prefect server start`: the logic under
test is the record, the lock and the process checks, not Prefect (tests/e2e runs the real one)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import psutil
import pytest

from flows import api_server
from flows.api_server import (PrefectServerError, ensure_server, home_lock, owned_process, read_record, server_env,
                              server_status, stop_server)

FAKE_SERVER = r"""
import http.server, os, sys
port, home = int(sys.argv[1]), sys.argv[2]
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.path.join(home, f"sick-{os.getpid()}"))
        ok = self.path == "/api/health" and not sick
        body = b"true" if ok else b"unavailable"
        self.send_response(200 if ok else 503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A server home in tmp_path; every fake server this test started is killed afterwards."""
    monkeypatch.setattr(api_server, "HEALTH_GRACE_S", 0.5)
    before = {p.pid for p in psutil.Process().children()}
    yield tmp_path / "prefect"
    for p in psutil.Process().children():
        if p.pid not in before:
            p.kill()
            p.wait(timeout=10)


def fake(home):
    return lambda port: [sys.executable, "-c", FAKE_SERVER, str(port), str(home)]


def start(home, **kw):
    return ensure_server(home, timeout=30, command=fake(home), **kw)


def test_a_second_call_reuses_the_running_server(home):
    started = []
    first = start(home, notify=started.append)
    second = start(home, notify=started.append)
    assert (second.pid, second.port) == (first.pid, first.port)
    assert len(started) == 1 and str(home) in started[0]
    assert server_status(home)["healthy"] and read_record(home) == first


def test_a_dead_server_is_replaced(home):
    first = start(home)
    psutil.Process(first.pid).kill()
    psutil.Process(first.pid).wait(timeout=10)
    second = start(home)
    assert second.pid != first.pid and owned_process(second) is not None
    assert read_record(home) == second and server_status(home)["healthy"]


def test_a_recorded_pid_now_held_by_another_process_is_left_alone(home):
    innocent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        home.mkdir(parents=True)
        stale = {"pid": innocent.pid, "port": 1, "create_time": 1.0, "prefect_version": api_server.prefect_version(),
                 "python": sys.executable, "started_at": "2020-01-01T00:00:00+0000"}
        (home / "server.json").write_text(json.dumps(stale))
        assert owned_process(read_record(home)) is None
        assert stop_server(home) is None and not (home / "server.json").exists()
        (home / "server.json").write_text(json.dumps(stale))
        record = start(home)
        assert record.pid != innocent.pid
        assert innocent.poll() is None  # never signalled
    finally:
        innocent.kill()
        innocent.wait()


def test_a_server_that_stops_answering_is_stopped_and_replaced(home):
    first = start(home)
    (home / f"sick-{first.pid}").touch()
    second = start(home)
    assert second.pid != first.pid
    assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE


def test_a_server_of_another_prefect_version_is_replaced(home):
    first = start(home)
    (home / "server.json").write_text(json.dumps(asdict(replace(first, prefect_version="0.0.1"))))
    second = start(home)
    assert second.pid != first.pid and second.prefect_version == api_server.prefect_version()


def test_concurrent_callers_share_one_server(home):
    started = []
    with ThreadPoolExecutor(4) as pool:
        records = list(pool.map(lambda _: start(home, notify=started.append), range(4)))
    assert len({(r.pid, r.port) for r in records}) == 1 and len(started) == 1


def test_a_held_lock_makes_a_second_caller_wait_then_fail_with_what_to_do(home):
    with home_lock(home, timeout=1):
        t0 = time.monotonic()
        with pytest.raises(PrefectServerError, match="another hygiene process.*--prefect-api ephemeral"):
            with home_lock(home, timeout=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3
    with home_lock(home, timeout=0.3):  # released with its holder
        pass


def test_a_corrupt_record_is_ignored_and_replaced(home):
    home.mkdir(parents=True)
    (home / "server.json").write_text("{not json")
    assert read_record(home) is None
    record = start(home)
    assert read_record(home) == record


def test_a_server_that_exits_while_starting_names_its_log(home):
    with pytest.raises(PrefectServerError, match=r"exited with code 3.*server\.log"):
        ensure_server(home, timeout=30, command=lambda port: [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert read_record(home) is None


def test_stop_stops_the_server_and_forgets_it(home):
    record = start(home)
    assert stop_server(home) == record
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    assert read_record(home) is None and not server_status(home)["running"]
    assert stop_server(home) is None


def test_the_server_gets_its_own_database_and_never_the_users_api(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://example.invalid/api")
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://someone/else")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    env = server_env(tmp_path)
    assert "PREFECT_API_URL" not in env and env["PREFECT_HOME"] == str(tmp_path)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


def test_the_home_is_per_user_unless_chosen(monkeypatch, tmp_path):
    monkeypatch.delenv(api_server.HOME_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert api_server.server_home() == tmp_path / "cache" / "hygiene" / "prefect"
    monkeypatch.setenv(api_server.HOME_ENV, str(tmp_path / "mine"))
    assert api_server.server_home() == tmp_path / "mine"
