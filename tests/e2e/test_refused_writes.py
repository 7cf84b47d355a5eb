"""A write the file system refuses (here a file-size limit, RLIMIT_FSIZE, set on the `hygiene run`
process: the kernel then fails writes with EFBIG, as a full disk fails them with ENOSPC): one clear
message and exit 1, nothing published, and the same command resumes once the limit is gone,
publishing what an undisturbed run publishes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as on Linux")]

LIMIT = 1 << 20  # bytes a file may grow to: pass 1's spilled batches of the input below are larger


def _corpus(path: Path) -> None:
    rng = random.Random(7)
    texts = [" ".join(f"w{rng.randrange(4000)}" for _ in range(60)) for _ in range(6000)]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(9000):  # a third are exact copies
            f.write(json.dumps({"id": f"r{i}", "text": texts[i % 6000]}) + "\n")


def _config(root: Path, corpus: Path) -> Path:
    path = root / "config.yaml"
    path.write_text(json.dumps({
        "sources": [{"name": "web", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
        "output": {"dir": str(root / "unused")},
        "dedup": {"exact": {"enabled": True}, "near": {"enabled": True}},
    }))
    return path


def _run(config: Path, out: Path, limit: int | None) -> subprocess.CompletedProcess:
    def limited() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    hygiene = Path(sys.executable).parent / "hygiene"
    return subprocess.run([str(hygiene), "run", str(config), "--output", str(out), "--no-prefect"],
                          preexec_fn=limited if limit else None, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def test_a_refused_write_says_what_to_do_publishes_nothing_and_the_same_command_resumes(tmp_path):
    corpus = tmp_path / "in.jsonl"
    _corpus(corpus)
    config = _config(tmp_path, corpus)
    out = tmp_path / "out"

    refused = _run(config, out, LIMIT)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "the file system refused a write: File too large" in refused.stderr
    assert f"The run writes under {out}" in refused.stderr and "run the same command again" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (out / "manifest.json").exists() and not list(out.glob("shards/*.parquet"))  # nothing published
    assert (out / "_work" / "plan.json").exists()  # the scratch space the rerun resumes from

    resumed = _run(config, out, None)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = tmp_path / "reference"
    assert _run(config, reference, None).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["conservation"]["balanced"] and manifest["conservation"]["overall"]["input"] == 9000
    assert _digests(out) == _digests(reference) and _digests(out)
