"""`hygiene run` through the persistent local Prefect API, as a user runs it (real processes): the
first run starts the server, the second reuses it (same pid and port), both publish shards and a
ledger byte-identical to `--no-prefect`, and the server holds both flow runs and their artifacts.

The server lives in a temporary home and is stopped at the end: never the user's, never left running."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path) -> Path:
    """configs/dedup-only.yaml on data_samples/web, without a corpus index (runs stay independent)."""
    cfg = yaml.safe_load((REPO / "configs" / "dedup-only.yaml").read_text())
    cfg.pop("state")
    cfg["sources"][0]["paths"] = [str(REPO / "data_samples" / "web")]
    path = tmp_path / "dedup.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hygiene(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=400)


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as r:
        return json.loads(r.read())


def test_two_runs_share_one_local_server_and_publish_what_the_plain_executor_does(tmp_path):
    from flows.api_server import owned_process, read_record, stop_server

    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"HYGIENE_PREFECT_HOME": str(home), "HYGIENE_PREFECT_API": "local", "PREFECT_LOGGING_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    config = str(_config(tmp_path))
    try:
        first = _hygiene(env, "run", config, "--output", str(tmp_path / "first"))
        assert first.returncode == 0, first.stderr[-3000:]
        assert "starting the local Prefect API" in first.stderr
        started = read_record(home)
        assert started is not None and owned_process(started) is not None  # it outlives the run

        second = _hygiene(env, "run", config, "--output", str(tmp_path / "second"))
        assert second.returncode == 0, second.stderr[-3000:]
        assert "starting the local Prefect API" not in second.stderr
        status = json.loads(_hygiene(env, "prefect-server", "status", "--json").stdout)
        assert (status["pid"], status["port"]) == (started.pid, started.port) and status["healthy"]

        plain = _hygiene(env, "run", config, "--output", str(tmp_path / "plain"), "--no-prefect")
        assert plain.returncode == 0, plain.stderr[-3000:]
        reference = _digests(tmp_path / "plain")
        assert reference and _digests(tmp_path / "first") == reference == _digests(tmp_path / "second")

        runs = _post(f"{started.url}/flow_runs/filter", {})
        assert sorted(r["state_name"] for r in runs) == ["Completed", "Completed"]
        artifacts = _post(f"{started.url}/artifacts/filter", {})
        summaries = {a["flow_run_id"] for a in artifacts if a["key"] == "hygiene-run-summary"}
        assert summaries == {r["id"] for r in runs}
        # Task-run states reach the server as events, recorded a moment later.
        deadline = time.monotonic() + 60
        while True:
            tasks = _post(f"{started.url}/task_runs/filter", {})
            finals = [t for t in tasks if t["state_name"] == "Completed"]
            if ({t["flow_run_id"] for t in finals} == summaries and len(finals) == len(tasks)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert {t["flow_run_id"] for t in finals} == summaries and len(finals) == len(tasks) > 2
    finally:
        stopped = stop_server(home)
    assert stopped is not None and stopped.pid == started.pid
    assert owned_process(started) is None
    assert _hygiene(env, "prefect-server", "status").returncode == 1
