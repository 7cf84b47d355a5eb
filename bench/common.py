"""Helpers the benchmarks share: machine description, result file names, medians.

Usage::

    from common import machine_info, results_path
    info = machine_info(("spacy", "polars"))
    out = results_path("pii-speed", None)        # bench/results/pii-speed-<date>[-N].json
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cmd_out(args: list[str]) -> str | None:
    """A command's stripped stdout, or None if it fails."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=str(REPO))
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions(libs: tuple[str, ...]) -> dict:
    """Python's version and each installed distribution's (None when missing)."""
    d = {"python": platform.python_version()}
    for lib in libs:
        try:
            d[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            d[lib] = None
    return d


def machine_info(libs: tuple[str, ...] = ()) -> dict:
    """CPU, memory, load, versions and the git state, for a result file."""
    cpu_model, mem = None, None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 2**20, 2)
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model,
            "nproc": os.cpu_count(), "nproc_affinity": len(os.sched_getaffinity(0)), "memory_total_gib": mem,
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "uptime_before": cmd_out(["uptime"]),
            "versions": versions(libs), "python_executable": sys.executable,
            "git_commit": cmd_out(["git", "rev-parse", "HEAD"]),
            "git_status_porcelain": (cmd_out(["git", "status", "--porcelain"]) or "").splitlines()}


def results_path(prefix: str, explicit: str | None, directory: str | Path | None = None) -> Path:
    """`explicit`, or <directory, default bench/results>/<prefix>-<date>.json, suffixed -2, -3 ... when taken."""
    if explicit:
        return Path(explicit)
    d = Path(directory) if directory is not None else HERE / "results"
    d.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}-{dt.date.today().isoformat()}"
    p, n = d / f"{base}.json", 2
    while p.exists():
        p = d / f"{base}-{n}.json"
        n += 1
    return p


def median(xs):
    """The median of the values that are not None (None when there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def jsonl_texts(paths) -> list[str]:
    """The string "text" of every JSON-object line of the files, in order; other lines (the
    samples hold malformed ones on purpose) are skipped."""

    texts = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                texts.append(rec["text"])
    return texts


def finished_run(proc: subprocess.Popen, out_dir: Path) -> tuple[str, dict]:
    """The stdout and the manifest of a `hygiene run` child once it has exited; its stderr's tail
    on failure."""
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"hygiene run failed ({proc.returncode}):\n{stderr[-3000:]}")
    return stdout, json.loads((Path(out_dir) / "manifest.json").read_text())
