"""Crash safety: a run killed with SIGKILL and started again finishes with the same result."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.executor import run_local
from pipeline.config import load_config

KILL_POINTS = {"pass1": ("pass1", 30), "pass2": ("pass2", 4)}


def make_corpus(d: Path) -> None:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(3000)]
    lines = []
    for i in range(12_000):
        text = " ".join(rng.choices(words, k=rng.randint(20, 60)))
        lines.append(json.dumps({"id": f"d{i}", "text": text}))
        if i % 50 == 0:
            lines.append(json.dumps({"id": f"copy{i}", "text": text}))
        if i % 997 == 0:
            lines.append("{broken")
    d.mkdir(parents=True, exist_ok=True)
    (d / "corpus.jsonl").write_text("\n".join(lines) + "\n")


def write_config(tmp: Path, out: Path) -> Path:
    cfg = {
        "sources": [{"name": "c", "kind": "jsonl", "paths": [str(tmp / "in")], "id_field": "id"}],
        "output": {"dir": str(out), "shard_max_rows": 700},
        "units": {"target_bytes": 16 * 1024, "batch_bytes": 8 * 1024},
        "runner": {"max_workers": 1},
    }
    p = tmp / f"{out.name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    make_corpus(tmp / "in")
    clean = tmp / "clean"
    run_local(load_config(write_config(tmp, clean)))
    return tmp, digests(clean)


@pytest.mark.parametrize("phase", sorted(KILL_POINTS))
def test_a_run_killed_midway_resumes_to_the_same_result(corpus, phase):
    tmp, expected = corpus
    out = tmp / f"killed-{phase}"
    cfg = write_config(tmp, out)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--no-prefect"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    marker_dir, count = out / "_work" / KILL_POINTS[phase][0], KILL_POINTS[phase][1]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if marker_dir.exists() and len(list(marker_dir.glob("*.json"))) >= count:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed"] is True
    assert manifest["conservation"]["balanced"]
    assert digests(out) == expected
    assert not (out / "_work").exists()


def test_a_crash_between_the_publishing_renames_is_repaired_by_the_next_run(corpus, monkeypatch):
    tmp, expected = corpus
    out = tmp / "publish-crash"
    cfg = load_config(write_config(tmp, out))
    import pipeline.publish as publish

    real_replace = os.replace

    def crash_after_first_directory(src, dst):
        if Path(dst) == out / "ledger":
            raise KeyboardInterrupt("simulated kill between the renames of shards/ and ledger/")
        return real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", crash_after_first_directory)
    with pytest.raises(KeyboardInterrupt):
        run_local(cfg)
    assert (out / "shards").exists() and not (out / "manifest.json").exists()
    monkeypatch.setattr(publish.os, "replace", real_replace)
    manifest = run_local(cfg)
    assert manifest["resumed"] is True and digests(out) == expected
