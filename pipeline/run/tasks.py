"""The tasks of a per-unit stage: slices of the kept records of about the same amount of text.

Pass 1 works per unit (an input file or a part of one, `units.target_bytes`: 64 MiB by default),
so a corpus smaller than one unit is one unit. A per-unit stage such as PII detection costs far
more per byte than reading, so it is scheduled by the amount of kept text instead: each unit's
kept records are cut, in row order, into tasks of a few MiB, and every worker gets several tasks
whatever the inputs' sizes and unit layout. A task never spans two units (a unit is read once per
task from its spill or its input, and a stage's artifacts stay per unit and row range).

The cut depends only on the kept records and the worker count, and every record is decided on
its own, so the stage's verdicts do not depend on it.

    plan_tasks(work_dir, kind)        stages/<kind>/tasks.json, made once (later calls read it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.decisions import Category
from pipeline.core.registry import decision_table, run_stages
from pipeline.core.runtime import stage_instance
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.workdir import read_done, unit_name

MIB = 1024 * 1024
# Bounds of a task's text: below 1 MiB the per-task overhead (reading the unit again, a batch
# that is not full) shows; above 8 MiB two workers no longer share the tail of a run evenly.
TASK_MIN_BYTES = 1 * MIB
TASK_MAX_BYTES = 8 * MIB
# Aim for this many tasks per worker, so a worker that drew slow texts does not hold the run up
# (the last task of a run runs alone: the smaller the tasks, the shorter that tail).
TASKS_PER_WORKER = 8
# A record's cost beyond its text (empty or image records are not free).
RECORD_OVERHEAD_BYTES = 64
TASK_MAX_RECORDS = 50_000


@dataclass(frozen=True)
class StageTask:
    """One task of a per-unit stage: the kept records of unit `unit_id` in rows `first_row`..`last_row`."""

    task_id: int
    unit_id: int
    first_row: int
    last_row: int
    records: int
    text_bytes: int

    @property
    def name(self) -> str:
        """The task's name in artifact file names: `t00003`."""
        return f"t{self.task_id:05d}"

    @classmethod
    def from_dict(cls, d: dict) -> "StageTask":
        """Inverse of `to_dict`."""
        return cls(d["task"], d["unit"], d["first_row"], d["last_row"], d["records"], d["text_bytes"])

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"task": self.task_id, "unit": self.unit_id, "first_row": self.first_row, "last_row": self.last_row,
                "records": self.records, "text_bytes": self.text_bytes}


def runner_workers(cfg) -> int:
    """How many workers the run's runner has."""
    return cfg.runner.dask_workers if cfg.runner.kind == "dask" else cfg.runner.max_workers


def task_bytes(kept_bytes: int, workers: int) -> int:
    """The target text of one task for `kept_bytes` of kept text over `workers` workers."""
    return int(min(TASK_MAX_BYTES, max(TASK_MIN_BYTES, kept_bytes / max(1, workers * TASKS_PER_WORKER))))


def cut_rows(rows: np.ndarray, cost: np.ndarray, target: int, max_records: int = TASK_MAX_RECORDS) -> list[tuple[int, int]]:
    """Cut sorted `rows` with per-row `cost` into consecutive ranges of about `target` cost each
    (at most `max_records` rows); returns (first index, last index) pairs, inclusive."""
    out = []
    lo, acc = 0, 0
    for i, c in enumerate(cost.tolist()):
        acc += c
        if acc >= target or i - lo + 1 >= max_records:
            out.append((lo, i))
            lo, acc = i + 1, 0
    if lo < len(rows):
        out.append((lo, len(rows) - 1))
    return out


def _tasks_path(work: Path, kind: str) -> Path:
    return work / "stages" / kind / "tasks.json"


def plan_tasks(work_dir: str, kind: str) -> list[StageTask]:
    """The tasks of the per-unit stage `kind`, planned on first call from the kept records."""
    work = Path(work_dir)
    path = _tasks_path(work, kind)
    if (cached := read_done(path)) is not None:
        return [StageTask.from_dict(d) for d in cached["tasks"]]
    plan = RunPlan.load(work)
    spec = next((s for s in run_stages(plan.config) if s.kind == kind), None)
    if spec is None:
        raise PipelineError(f"the run has no stage '{kind}'")
    stage = stage_instance(spec, plan)
    kept = list(decision_table(plan.config).names(Category.KEPT))
    per_unit = []
    for u in plan.units:
        if not stage.scans(u.source):
            continue
        df = (pl.read_parquet(work / "decisions" / f"{unit_name(u.unit_id)}.parquet",
                              columns=["row", "decision", "text_bytes"])
              .filter(pl.col("decision").is_in(kept)).sort("row"))
        if df.height:
            per_unit.append((u.unit_id, df["row"].to_numpy(),
                             df["text_bytes"].fill_null(0).to_numpy().astype(np.int64) + RECORD_OVERHEAD_BYTES))
    total = int(sum(int(c.sum()) for _, _, c in per_unit))
    target = task_bytes(total, runner_workers(plan.config))
    tasks: list[StageTask] = []
    for unit_id, rows, cost in per_unit:
        for a, b in cut_rows(rows, cost, target):
            tasks.append(StageTask(len(tasks), unit_id, int(rows[a]), int(rows[b]), b - a + 1,
                                   int(cost[a:b + 1].sum()) - (b - a + 1) * RECORD_OVERHEAD_BYTES))
    records = sum(t.records for t in tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"stage": kind, "target_bytes": target, "records": records,
                             "text_bytes": sum(t.text_bytes for t in tasks),
                             "tasks": [t.to_dict() for t in tasks]})
    return tasks


def planned(work_dir: str, kind: str) -> dict:
    """The task plan's totals (records, text bytes, target) once `plan_tasks` has run."""
    d = read_done(_tasks_path(Path(work_dir), kind))
    if d is None:
        raise PipelineError(f"the tasks of stage '{kind}' are not planned yet")
    return d


def unit_tasks(work_dir: str, kind: str) -> dict[int, list[StageTask]]:
    """The planned tasks per unit."""
    out: dict[int, list[StageTask]] = {}
    for t in plan_tasks(work_dir, kind):
        out.setdefault(t.unit_id, []).append(t)
    return out
