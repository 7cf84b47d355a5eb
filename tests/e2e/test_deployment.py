"""A served deployment really runs on its cron schedule against a real Prefect server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_served_deployment_creates_and_completes_scheduled_runs(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # The server's scheduler service looks for deployments to schedule every 5 s instead of 60, and
    # the served deployment asks for due runs every 2 s instead of 10: the first run then starts
    # at the first minute boundary after the deployment exists, not up to two minutes later.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    cfg = yaml.safe_load((REPO / "configs" / "sample.yaml").read_text())
    for s in cfg["sources"]:
        s["paths"] = [str((REPO / "configs" / p).resolve()) for p in s["paths"]]
    for h in cfg["safety"]["hash_lists"]:
        h["path"] = str((REPO / "configs" / h["path"]).resolve())
    cfg["output"]["dir"] = str(tmp_path / "out-{date}")
    cfg["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}
    config = tmp_path / "every-minute.yaml"
    config.write_text(yaml.safe_dump(cfg))
    bin_dir = Path(sys.executable).parent
    procs = []
    try:
        procs.append(subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

        def healthy():
            try:
                return urllib.request.urlopen(f"{api}/health", timeout=2).read() == b"true"
            except OSError:
                return False

        wait_for(healthy, 120, "the Prefect server")
        procs.append(subprocess.Popen([str(bin_dir / "hygiene"), "schedule", str(config)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        outputs = lambda: [p for p in tmp_path.glob("out-*/manifest.json")]  # noqa: E731
        (manifest_path,) = wait_for(outputs, 200, "a scheduled run to publish its output")
        manifest = json.loads(manifest_path.read_text())
        assert manifest["conservation"]["balanced"] and manifest["conservation"]["overall"]["kept"] > 0

        query = subprocess.run(
            [sys.executable, "-c", (
                "import asyncio, json\n"
                "from prefect.client.orchestration import get_client\n"
                "async def main():\n"
                "    async with get_client() as c:\n"
                "        runs = await c.read_flow_runs()\n"
                "        print(json.dumps(sorted(r.state_name for r in runs)))\n"
                "asyncio.run(main())\n")],
            env=env, capture_output=True, text=True, timeout=60)
        states = json.loads(query.stdout.strip().splitlines()[-1])
        assert "Scheduled" in states
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
