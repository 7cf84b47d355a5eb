"""Concurrent runs sharing one state directory lose nothing (issue 19, part 4).

Real processes (`hygiene run --no-prefect`) on ~2,000 records: both runs end up in the index, and
across them every distinct record is kept exactly once; a forced interleaving (the documented
test hook HYGIENE_TEST_PAUSE_AFTER_BARRIER) makes the second run wait; a failed or killed run
releases the state directory; `add_run` from many writers at once never loses a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from pipeline.dedup.index import CorpusIndex, CorpusIndexError
from pipeline.dedup.state_lock import PAUSE_ENV, STATE_LOCK, TIMEOUT_ENV, state_lock
from pipeline.errors import RejectionsError
from pipeline.executor import run_local
from tests.conftest import REPO, build_config

N_DISTINCT = 1800
N_COPIES = 200  # exact copies inside the corpus: each run drops these itself


@pytest.fixture
def corpus(tmp_path) -> Path:
    """~2,000 records: 1,800 distinct documents (random words) and 200 exact in-run copies."""
    rng = random.Random(19)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [{"id": f"d{i:05d}", "text": " ".join(rng.choices(vocab, k=40))} for i in range(N_DISTINCT)]
    copies = [{"id": f"c{i:05d}", "text": docs[i]["text"]} for i in range(N_COPIES)]
    d = tmp_path / "in"
    d.mkdir()
    for k, part in enumerate((docs[:1000], docs[1000:] + copies)):
        (d / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return d


def write_config(tmp_path: Path, corpus: Path, **state) -> Path:
    cfg = {"version": 1, "name": "concurrent",
           "sources": [{"name": "web", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
           "state": {"dir": str(tmp_path / "state"), **state}, "output": {"dir": str(tmp_path / "unused")}}
    path = tmp_path / "config.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(cfg))
    return path


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_started_runs():
    """A test that fails midway (a run that did not wait) leaves no run of its own behind: the
    processes `start` began and that still run are ended after each test."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(config: Path, out: Path, pause: Path | None = None) -> subprocess.Popen:
    """`hygiene run --no-prefect` in a process (ended after the test if still running); `pause`: a
    gate file it waits on after its barrier."""
    env = {**os.environ, "PYTHONPATH": str(REPO), TIMEOUT_ENV: "60"}
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    log = open(out.parent / f"{out.name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--no-prefect", "--output", str(out)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    _STARTED.append(proc)
    return proc


def log_of(out: Path) -> str:
    return (out.parent / f"{out.name}.log").read_text()


def wait_for_log(out: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_of(out):
        assert proc.poll() is None, f"the run exited before logging {text!r}:\n{log_of(out)}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log_of(out)}"
        time.sleep(0.1)


def finish(proc: subprocess.Popen, out: Path) -> None:
    assert proc.wait(timeout=120) == 0, log_of(out)


def index_runs(tmp_path: Path) -> list[str]:
    return [r["run_id"] for r in json.loads((tmp_path / "state" / "index.json").read_text())["runs"]]


def run_id(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["run_id"]


def kept_texts(out: Path) -> list[str]:
    return pl.read_parquet(str(out / "shards" / "*.parquet"))["text"].to_list()


def assert_second_drops_the_first(tmp_path: Path, first: Path, second: Path, may_skip: bool = False) -> None:
    """The index lists both runs, in commit order; each distinct text is kept once across both runs,
    and the later run dropped its copies as cross-run duplicates naming the earlier run (or, when
    `may_skip` and it planned after the first had committed, skipped the inputs as processed)."""
    assert index_runs(tmp_path) == [run_id(first), run_id(second)]
    texts = kept_texts(first) + (kept_texts(second) if list((second / "shards").glob("*.parquet")) else [])
    assert len(texts) == len(set(texts)) == N_DISTINCT
    manifest = json.loads((second / "manifest.json").read_text())
    if may_skip and manifest["skipped_inputs"]:
        assert {s["processed_in_run"] for s in manifest["skipped_inputs"]} == {run_id(first)}
        assert len(manifest["skipped_inputs"]) == 2
        return
    ledger = pl.read_parquet(str(second / "ledger" / "*.parquet"))
    assert ledger.height == N_DISTINCT + N_COPIES
    assert set(ledger["decision"]) == {"dropped_duplicate"}
    distinct = ledger.filter(pl.col("record_id").str.starts_with("d"))
    assert distinct["duplicate_of"].str.starts_with(run_id(first) + "/").all()
    assert manifest["corpus_index"]["runs"] == [run_id(first)]


def test_two_processes_started_together_keep_each_record_once(tmp_path, corpus):
    config = write_config(tmp_path, corpus)
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [start(config, o) for o in outs]
    for p, o in zip(procs, outs):
        finish(p, o)
    first, second = sorted(outs, key=lambda o: index_runs(tmp_path).index(run_id(o)))
    assert_second_drops_the_first(tmp_path, first, second, may_skip=True)


def test_a_run_paused_after_its_barrier_makes_the_next_one_wait(tmp_path, corpus):
    config = write_config(tmp_path, corpus)
    a, b, gate = tmp_path / "a", tmp_path / "b", tmp_path / "gate"
    gate.touch()
    pa = start(config, a, pause=gate)
    wait_for_log(a, "pausing between barrier and publish", pa)
    pb = start(config, b)  # it plans (A has not committed) and reads while A holds the state
    wait_for_log(b, "waiting for another run that holds this state directory", pb)
    gate.unlink()
    finish(pa, a)
    finish(pb, b)
    assert "the other run is done" in log_of(b)
    assert_second_drops_the_first(tmp_path, a, b)


def test_a_killed_run_releases_the_state_and_its_resume_decides_again(tmp_path, corpus):
    # Not incremental: A's resume keeps its plan (B has processed the same inputs).
    config = write_config(tmp_path, corpus, incremental=False)
    a, b, gate = tmp_path / "a", tmp_path / "b", tmp_path / "gate"
    gate.touch()
    pa = start(config, a, pause=gate)
    wait_for_log(a, "pausing between barrier and publish", pa)  # A holds the state, its barrier done
    pa.send_signal(signal.SIGKILL)
    pa.wait()
    pb = start(config, b)
    finish(pb, b)
    assert "waiting for another run" not in log_of(b)
    assert index_runs(tmp_path) == [run_id(b)]
    # A resumes from its scratch space: its cached barrier predates B's commit, so it decides again.
    pa = start(config, a)
    finish(pa, a)
    assert "were added to the corpus index since its barrier" in log_of(a)
    assert_second_drops_the_first(tmp_path, b, a)


def test_a_run_that_fails_after_taking_the_state_releases_it(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "2")
    state = {"dir": str(tmp_path / "state")}
    src = [{"name": "web", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}]
    (corpus / "bad.jsonl").write_text("{broken\n")
    with pytest.raises(RejectionsError):  # raised in the barrier, with the state lock held
        run_local(build_config(tmp_path / "r1", src, state=state, errors={"fail_on_reject": True}))
    (corpus / "bad.jsonl").unlink()
    manifest = run_local(build_config(tmp_path / "r2", src, state=state))  # would time out if still held
    assert index_runs(tmp_path) == [manifest["run_id"]]


def test_a_held_state_directory_times_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    cfg = build_config(tmp_path / "r", [{"name": "w", "kind": "jsonl", "paths": [str(tmp_path)]}],
                       state={"dir": str(tmp_path / "state")})
    with state_lock(cfg.state):
        done = []
        t = threading.Thread(target=lambda: done.append(pytest.raises(CorpusIndexError, _enter, cfg.state)))
        t.start()
        t.join(10)
    assert done and TIMEOUT_ENV in str(done[0].value) and STATE_LOCK in str(done[0].value)


def _enter(state) -> None:
    with state_lock(state):
        pass


def test_add_run_from_many_writers_at_once_loses_no_run(tmp_path):
    cfg = build_config(tmp_path / "r", [{"name": "w", "kind": "jsonl", "paths": [str(tmp_path)]}],
                       state={"dir": str(tmp_path / "state")})
    # Every writer opens the index before any adds: each one's view is stale by the time it writes.
    indexes = [CorpusIndex.open(cfg.state.dir, cfg) for _ in range(12)]
    exact = pl.DataFrame({"key": [b"k"], "record_id": ["r"]}, schema={"key": pl.Binary, "record_id": pl.String})
    inputs = pl.DataFrame({"source": ["w"], "path": ["p"], "sha256": ["0" * 64]})
    barrier = threading.Barrier(len(indexes))

    def add(k: int) -> None:
        barrier.wait()
        indexes[k].add_run(f"run-{k:02d}", f"out-{k}", exact, None, None, inputs)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(len(indexes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(index_runs(tmp_path)) == [f"run-{k:02d}" for k in range(len(indexes))]
    assert len(CorpusIndex.open(cfg.state.dir, cfg).runs) == len(indexes)  # every file digest verifies


def test_an_object_store_lease_serialises_holders_and_lapses_when_its_holder_dies(tmp_path, monkeypatch):
    import fsspec

    from pipeline.dedup.state_lock import LEASE_DIR, LEASE_TTL_S

    state = SimpleNamespace(dir=f"memory://lease-{tmp_path.name}/state")
    monkeypatch.setenv(TIMEOUT_ENV, "20")
    events = []

    def second() -> None:
        with state_lock(state):
            events.append(("b holds", time.monotonic()))

    with state_lock(state):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(1.0)
        assert not events  # B waits while A holds the lease
        events.append(("a releases", time.monotonic()))
    t.join(20)
    assert [e[0] for e in events] == ["a releases", "b holds"]

    # A holder that died without releasing: its lease lapses after the TTL and the next run takes over.
    fs = fsspec.filesystem("memory")
    lease = f"/lease-{tmp_path.name}/state/{LEASE_DIR}"
    newest = max(fs.ls(lease, detail=False))
    dead = json.dumps({"token": "x", "host": "gone", "pid": 1, "released": False, "expires_at": time.time() - 1})
    fs.pipe_file(newest[: -12] + f"{int(newest[-12:]) + 1:012d}", dead.encode())
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    with state_lock(state):
        pass
    # A live holder: the wait times out with an error naming the lease.
    alive = json.dumps({"token": "y", "host": "busy", "pid": 1, "released": False, "expires_at": time.time() + LEASE_TTL_S})
    newest = max(fs.ls(lease, detail=False))
    fs.pipe_file(newest[: -12] + f"{int(newest[-12:]) + 1:012d}", alive.encode())
    with pytest.raises(CorpusIndexError, match=LEASE_DIR):
        with state_lock(state):
            pass


@pytest.mark.parametrize("scheme, server", [("s3", "s3_server"), ("gs", "fake_gcs_server")])
def test_on_an_object_store_a_paused_run_makes_the_next_one_wait(tmp_path, corpus, scheme, server, request, monkeypatch):
    """The same interleaving with the state directory in a bucket of a real S3 server, and of a GCS
    server that honours preconditions (fake-gcs-server; gcp-storage-emulator ignores them): the lease (a create-only-if-absent object: S3's `If-None-Match: *`, GCS's
    `ifGenerationMatch=0`) makes B wait, and the index on the store lists both runs."""
    import fsspec

    request.getfixturevalue(server).reset()
    monkeypatch.setenv("HYGIENE_CACHE_DIR", str(tmp_path / "cache"))
    fsspec.filesystem(scheme).mkdir("state-bucket")
    config = write_config(tmp_path, corpus)
    data = json.loads(config.read_text())
    data["state"]["dir"] = f"{scheme}://state-bucket/hygiene/state"
    config.write_text(json.dumps(data))
    a, b, gate = tmp_path / "a", tmp_path / "b", tmp_path / "gate"
    gate.touch()
    pa = start(config, a, pause=gate)
    wait_for_log(a, "pausing between barrier and publish", pa)
    pb = start(config, b)
    wait_for_log(b, "waiting for another run that holds this state directory", pb)
    gate.unlink()
    finish(pa, a)
    finish(pb, b)
    fs = fsspec.filesystem(scheme)
    fs.invalidate_cache()
    runs = [r["run_id"] for r in json.loads(fs.cat_file("state-bucket/hygiene/state/index.json"))["runs"]]
    assert runs == [run_id(a), run_id(b)]
    texts = kept_texts(a) + (kept_texts(b) if list((b / "shards").glob("*.parquet")) else [])
    assert len(texts) == len(set(texts)) == N_DISTINCT
