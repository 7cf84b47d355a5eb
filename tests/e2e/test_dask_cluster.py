"""A real Dask cluster on 127.0.0.1 (a scheduler and two workers started with the `dask` command
line): one worker killed with SIGKILL while pass 1 runs, the scheduler killed and restarted, workers
that share no filesystem: every run publishes shards and a ledger byte-identical to the thread
runner's."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.config import parse_config
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

UNITS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus(root: Path) -> Path:
    """UNITS small JSONL files (one unit each) with exact and near duplicates across files."""
    root.mkdir()
    for f in range(UNITS):
        with open(root / f"part-{f:03d}.jsonl", "w", encoding="utf-8") as out:
            for r in range(60):
                topic = (f * 60 + r) % 900  # every text appears about 2.7 times over the corpus
                words = " ".join(f"w{(topic * 7 + k * 13) % 997}" for k in range(40))
                tail = "" if r % 3 else f" variant {f}"  # a near duplicate of the plain text
                out.write(json.dumps({"id": f"f{f}-r{r}", "text": f"document {topic} {words}{tail}"}) + "\n")
    return root


def _config(corpus: Path, out: Path, runner: dict):
    return parse_config({
        "sources": [{"name": "web", "kind": "jsonl", "paths": [str(corpus)], "text_field": "text", "id_field": "id"}],
        "dedup": {"exact": {"enabled": True}, "near": {"enabled": True, "threshold": 0.7}},
        "output": {"dir": str(out)},
        "runner": runner,
    }, "test-dask-cluster")


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def _dask_cli(command: str) -> list[str]:
    """`dask scheduler` / `dask worker` of this interpreter's environment (its module if the
    `dask` script is not installed beside it)."""
    script = Path(sys.executable).parent / "dask"
    return [str(script), command] if script.exists() else [sys.executable, "-m", f"distributed.cli.dask_{command}"]


def _wait_for_workers(address: str, n: int, procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        deadline = time.monotonic() + timeout
        while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"the Dask cluster did not come up (exited: {dead})")
            time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two nanny-less workers (a killed worker stays dead); always stopped."""
    yield from _cluster(tmp_path)


class _Cluster:
    """A scheduler and nanny-less workers (a killed worker stays dead) started with the `dask`
    command line on one port of 127.0.0.1; `stop()` stops exactly the processes it started."""

    def __init__(self, tmp_path: Path, worker_env: list[dict] | None = None) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        # No PREFECT_API_URL needed: each task carries the flow's Prefect settings to its worker.
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.worker_env = worker_env or [{}, {}]
        self.cwd = tmp_path
        self.logs = tmp_path / "dask-logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, command: str, *args: str, extra: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([*_dask_cli(command), *args], env={**self.env, **(extra or {})}, cwd=str(self.cwd),
                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        return p

    def scheduler(self) -> subprocess.Popen:
        return self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                           "--dashboard-address", ":0", "--no-show")

    def workers(self) -> list[subprocess.Popen]:
        """Two workers, started and connected."""
        started = [self._start(f"worker{i}", "worker", self.address, "--nthreads", "1", "--no-nanny", "--name",
                               f"w{i}", "--host", "127.0.0.1", "--dashboard-address", ":0", extra=self.worker_env[i])
                   for i in range(2)]
        _wait_for_workers(self.address, 2, started)
        return started

    def stop(self) -> None:
        for p in self.procs:  # only what this cluster started, by its own handle
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)


def _cluster(tmp_path, worker_env: list[dict] | None = None):
    """Start the scheduler and two workers (`worker_env[i]`: variables of worker i), yield
    (address, worker processes), and stop exactly those processes."""
    cluster = _Cluster(tmp_path, worker_env)
    try:
        cluster.scheduler()
        yield cluster.address, cluster.workers()
    finally:
        cluster.stop()


def test_a_killed_worker_does_not_change_the_published_run(cluster, tmp_path):
    from flows.clean import run_flow

    address, workers = cluster
    corpus = _corpus(tmp_path / "corpus")
    ref = tmp_path / "thread"
    run_flow(_config(corpus, ref, {"kind": "thread"}))

    out = tmp_path / "dask"
    cfg = _config(corpus, out, {"kind": "dask", "dask_address": address})
    from distributed import Client

    with Client(address) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_flow, cfg)
        work = out / "_work"
        finished_at_kill = victim = spill_dir = None
        deadline = time.monotonic() + 120
        while victim is None and not running.done() and time.monotonic() < deadline:
            finished = len(list((work / "pass1").glob("u*.json"))) if (work / "pass1").is_dir() else 0
            if finished >= 3:
                spill_dir = json.loads((work / "plan.json").read_text())["spill_dir"]
                names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
                busy = [names[a] for a, keys in client.processing().items() if keys]
                if busy:  # kill a worker while it holds a task, so the scheduler must run that task again
                    victim = int(str(busy[0])[1:])
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].wait(timeout=30)
                    finished_at_kill = finished
            time.sleep(0.02)
        manifest = running.result(timeout=300)

    assert victim is not None and finished_at_kill < UNITS, "no worker was killed mid-run"
    assert workers[victim].returncode == -signal.SIGKILL and workers[1 - victim].poll() is None
    # With a scheduler address the parsed batches are spilled into the shared scratch space, not
    # into one machine's /dev/shm (spill_dir None: `_work/spill/`).
    assert spill_dir is None
    assert manifest == json.loads((out / "manifest.json").read_text()) and manifest["conservation"]["balanced"]
    assert manifest["conservation"]["overall"]["input"] == UNITS * 60
    assert 0 < manifest["conservation"]["overall"]["kept"] < UNITS * 60  # the duplicates were dropped
    assert _digests(out) == _digests(ref) and _digests(out)
    assert not (out / "_work").exists()


def test_workers_that_share_no_filesystem_publish_the_same_run_through_the_store(s3_server, tmp_path, monkeypatch):
    """Inputs, run directory and scratch space (`runner.scratch: store`) in buckets of a real S3
    server; each worker has its own cache directory (its own copies, as on another machine): the
    run published through Prefect on the cluster equals the thread runner's on local files."""
    import fsspec

    from flows.clean import run_flow
    from pipeline.executor import run_local

    s3_server.reset()
    monkeypatch.setenv("HYGIENE_CACHE_DIR", str(tmp_path / "flow-cache"))
    corpus = _corpus(tmp_path / "corpus")
    fs = fsspec.filesystem("s3")
    for bucket in ("in-bucket", "out-bucket"):
        fs.mkdir(bucket)
    fs.put(str(corpus), "in-bucket/corpus", recursive=True)
    ref = tmp_path / "thread"
    run_local(_config(corpus, ref, {"kind": "thread"}))

    caches = [tmp_path / f"worker{i}-cache" for i in range(2)]
    gen = _cluster(tmp_path, [{"HYGIENE_CACHE_DIR": str(c)} for c in caches])
    address, _workers = next(gen)
    try:
        cfg = _config("s3://in-bucket/corpus", "s3://out-bucket/runs/dask",
                      {"kind": "dask", "dask_address": address, "scratch": "store"})
        manifest = run_flow(cfg)
    finally:
        gen.close()

    fs.invalidate_cache()
    stored = {p.split("/runs/dask/", 1)[1]: hashlib.sha256(fs.cat_file(p)).hexdigest()
              for p in fs.find("out-bucket/runs/dask") if p.endswith(".parquet")}
    assert stored == _digests(ref) and stored
    assert manifest["conservation"]["overall"]["input"] == UNITS * 60
    assert not fs.exists("out-bucket/runs/dask/_work")  # the shared scratch is removed once published
    # Both workers ran steps on their own copies of the scratch space (keys of pass 1, no spill).
    for c in caches:
        copy = c / "scratch" / "s3" / "out-bucket" / "runs" / "dask" / "_work"
        assert list((copy / "pass1").glob("u*.json")), f"{c}: this worker ran no step on its copy"
        assert not (copy / "spill").exists()


def test_a_scheduler_restart_publishes_nothing_half_done_and_the_rerun_resumes(tmp_path):
    """The scheduler is killed while pass 1 runs and started again on the same address with new
    workers (a cluster manager restarting it): the run either completes on the new scheduler or
    fails with nothing published (Dask cancels the futures of a lost scheduler); then the same
    command resumes it and publishes a run byte-identical to the thread runner's."""
    from flows.clean import run_flow
    from pipeline.executor import run_local

    corpus = _corpus(tmp_path / "corpus")
    ref = tmp_path / "thread"
    run_local(_config(corpus, ref, {"kind": "thread"}))

    cluster = _Cluster(tmp_path)
    out = tmp_path / "dask"
    cfg = _config(corpus, out, {"kind": "dask", "dask_address": cluster.address})
    work = out / "_work"
    try:
        first = cluster.scheduler()
        cluster.workers()
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_flow, cfg)
            deadline = time.monotonic() + 120
            read_before = 0
            while not running.done() and time.monotonic() < deadline:
                read_before = len(list((work / "pass1").glob("u*.json"))) if (work / "pass1").is_dir() else 0
                if read_before >= 3:
                    break
                time.sleep(0.02)
            assert 3 <= read_before < UNITS and not running.done(), "the scheduler was not restarted mid-run"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            cluster.scheduler()
            cluster.workers()
            try:
                manifest = running.result(timeout=300)
            except Exception:  # noqa: BLE001 - the run may fail: what matters is what it left
                manifest = None
        if manifest is None:
            assert not (out / "manifest.json").exists()  # nothing published by the failed run
            manifest = run_flow(cfg)  # the same command again, on the restarted cluster
    finally:
        cluster.stop()

    assert manifest == json.loads((out / "manifest.json").read_text()) and manifest["conservation"]["balanced"]
    assert manifest["conservation"]["overall"]["input"] == UNITS * 60
    assert _digests(out) == _digests(ref) and _digests(out)
    assert not work.exists()


def test_a_record_split_into_pii_parts_on_the_cluster_publishes_what_one_thread_task_publishes(cluster, tmp_path,
                                                                                               monkeypatch):
    """One huge record among small ones, its PII work split into part tasks (rounds and a join) that
    the two worker processes run: shards, ledger and PII counts equal the thread runner's run with
    the record in one task."""
    import pipeline.run.tasks as tasks
    from flows.clean import run_flow
    from pipeline.executor import run_local
    from tests.conftest import build_config
    from tests.integration.test_pii_split_record import PII, TASK_BYTES, prose

    address, _workers = cluster
    d = tmp_path / "in"
    d.mkdir()
    rows = [{"id": f"s{i}", "text": prose(400 + 30 * i, 20 + i)} for i in range(12)]
    rows.insert(5, {"id": "huge", "text": prose(100_000, 9)})
    (d / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]
    pii = {**PII, "second_pass": True, "residual_scan": {"sample_fraction": 1.0}}
    ref = run_local(build_config(tmp_path / "thread", sources, pii=pii, runner={"max_workers": 2}))

    # The task plan is made by the flow, in this process: small tasks split the huge record.
    monkeypatch.setattr(tasks, "TASK_MIN_BYTES", TASK_BYTES)
    monkeypatch.setattr(tasks, "TASK_MAX_BYTES", TASK_BYTES)
    out = tmp_path / "dask"
    manifest = run_flow(build_config(out, sources, pii=pii, runner={"kind": "dask", "dask_address": address}))

    phases = {p["name"]: p for p in manifest["timings"]["phases"]}
    assert phases["pii-join"]["items"] == 1 and phases["pii-round2"]["items"] >= 2   # the record was split
    assert "pii-join" not in {p["name"] for p in ref["timings"]["phases"]}   # nothing split: not listed
    assert _digests(out) == _digests(tmp_path / "thread") and _digests(out)
    assert manifest["pii"]["by_entity"] == ref["pii"]["by_entity"] and manifest["pii"]["by_entity"]["PERSON"] > 100
    assert manifest["pii"]["residual_scan"]["records"] == ref["pii"]["residual_scan"]["records"] == 13
