"""Where a run's time goes: wall and CPU seconds per step (phase) and per stage, for the manifest.

The runner (the local executor or the Prefect flow) times each step as a whole, wall clock and
the CPU of its process tree (this process and its worker processes: the thread runner's pool,
the PII worker processes, a local Dask cluster's workers), and records it in the scratch space;
each task also reports the CPU of the thread that ran it (`cpu_seconds`), which is what a remote
Dask cluster can tell. The steps measure their stages inside (pass 1 per record stage, the
barrier per barrier stage, pass 2 per write-time stage) and `finalize` adds publishing.

    clock = StepClock()                              # around one step
    record_step(work_dir, step, clock, results)      # work/timings.json
    timings_section(work_dir, pass1, barrier, pass2, publish)   # the manifest's `timings`
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from pipeline.fileio import atomic_write_json

_LOCK = threading.Lock()


def tree_cpu() -> float | None:
    """User + system CPU seconds of this process and its live descendants (None without psutil)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the project's dependencies
        return None
    me = psutil.Process(os.getpid())
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a worker that just exited: its time is lost to this measure
            continue
    return total


class StepClock:
    """Wall and process-tree CPU seconds from creation to `stop()`."""

    def __init__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), tree_cpu()
        self.wall: float | None = None
        self.cpu: float | None = None

    def stop(self) -> "StepClock":
        if self.wall is None:
            self.wall = time.perf_counter() - self.t0
            c1 = tree_cpu()
            self.cpu = (c1 - self.c0) if c1 is not None and self.c0 is not None else None
        return self


def _path(work_dir: str) -> Path:
    return Path(work_dir) / "timings.json"


def start_run(work_dir: str, clock: StepClock | None = None) -> None:
    """Mark the start of a run (or of a resumed attempt: its steps are added to the earlier ones);
    `clock` started before planning, so the total includes it."""
    with _LOCK:
        p = _path(work_dir)
        data = json.loads(p.read_text()) if p.exists() else {"attempts": 0, "steps": []}
        data["attempts"] += 1
        data.setdefault("started", time.time() - (time.perf_counter() - clock.t0 if clock is not None else 0.0))
        atomic_write_json(p, data)


def record_step(work_dir: str, name: str, scope: str, clock: StepClock, results: list | None = None) -> dict:
    """Add one step's timing (and what its tasks reported) to the scratch space; returns the entry."""
    clock.stop()
    results = [r for r in (results or []) if isinstance(r, dict)]
    entry = {"step": name, "scope": scope, "items": len(results) if scope not in ("global", "background") else 1,
             "wall_s": round(clock.wall, 3),
             "cpu_s": round(clock.cpu, 3) if clock.cpu is not None else None,
             "task_cpu_s": round(sum(r.get("cpu_seconds", 0.0) for r in results), 3) if results else None}
    text = sum(r.get("text_bytes", 0) for r in results)
    if text:
        entry["text_bytes"] = int(text)
    with _LOCK:
        p = _path(work_dir)
        data = json.loads(p.read_text()) if p.exists() else {"attempts": 1, "steps": [], "started": time.time()}
        data["steps"].append(entry)
        atomic_write_json(p, data)
    return entry


def _add(into: dict, kind: str, wall: float, cpu: float) -> None:
    t = into.setdefault(kind, {"wall_s": 0.0, "cpu_s": 0.0})
    t["wall_s"] += wall
    t["cpu_s"] += cpu


def timings_section(work_dir: str, pass1: list[dict], barrier: dict | None, pass2: list[dict],
                    unit_stages: dict[str, list[dict]], publish_s: float) -> dict:
    """The manifest's `timings`: per phase (as the runner measured it) and per stage (as the steps
    measured it; a stage's wall time sums its tasks, which overlap on several workers)."""
    p = _path(work_dir)
    data = json.loads(p.read_text()) if p.exists() else {"attempts": 1, "steps": []}
    phases = []
    for s in data["steps"]:
        if s["items"] == 0 and _later_round(s["step"]):
            continue  # a split stage's rounds when no record was split: nothing ran
        ph = {"name": s["step"], "scope": s["scope"], "items": s["items"], "wall_s": s["wall_s"], "cpu_s": s["cpu_s"]}
        if s.get("task_cpu_s") is not None:
            ph["task_cpu_s"] = s["task_cpu_s"]
        if s["cpu_s"] is not None and s["wall_s"] > 0:
            ph["cpu_per_wall"] = round(s["cpu_s"] / s["wall_s"], 2)
        if s.get("text_bytes") and s["wall_s"] > 0:
            ph["text_mb"] = round(s["text_bytes"] / 1e6, 3)
            ph["mb_per_s"] = round(s["text_bytes"] / 1e6 / s["wall_s"], 3)
        phases.append(ph)
    phases.append({"name": "publish", "scope": "global", "items": 1, "wall_s": round(publish_s, 3), "cpu_s": None})
    stages: dict[str, dict] = {}
    for r in pass1:
        for kind, (wall, cpu) in (r or {}).get("stage_seconds", {}).items():
            _add(stages, kind, wall, cpu)
    for kind, (wall, cpu) in ((barrier or {}).get("stage_seconds") or {}).items():
        _add(stages, kind, wall, cpu)
    for kind, results in unit_stages.items():
        for r in results:
            _add(stages, kind, r.get("seconds", 0.0), r.get("cpu_seconds", 0.0))
    for r in pass2:
        for kind, (wall, cpu) in (r or {}).get("stage_seconds", {}).items():
            _add(stages, f"{kind} (write)", wall, cpu)
    residual = {"wall_s": 0.0, "cpu_s": 0.0}
    for r in unit_stages.get("pii", []):
        res = r.get("residual") or {}
        residual["wall_s"] += res.get("seconds", 0.0)
        residual["cpu_s"] += res.get("cpu_seconds", 0.0)
    out = {
        "total_wall_s": round(time.time() - data["started"], 3) if "started" in data else None,
        "attempts": data.get("attempts", 1),
        "phases": phases,
        "stages": {k: {"wall_s": round(v["wall_s"], 3), "cpu_s": round(v["cpu_s"], 3)} for k, v in stages.items()},
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
    }
    if "pii" in unit_stages:
        out["residual_scan"] = {k: round(v, 3) for k, v in residual.items()}
    return out


def _later_round(step: str) -> bool:
    """True for a per-unit stage's later round or join step (`pii-round2`, `pii-join`)."""
    from pipeline.run.tasks import task_step

    return task_step(step)[1] != 1


def cpu_name() -> str | None:
    """The processor's model name (Linux), for reading timings beside the machine they came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
