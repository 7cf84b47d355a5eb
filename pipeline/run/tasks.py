"""The tasks of a per-unit stage: slices of the kept records of about the same amount of text.

Pass 1 works per unit (an input file or a part of one, `units.target_bytes`: 64 MiB by default),
so a corpus smaller than one unit is one unit. A per-unit stage such as PII detection costs far
more per byte than reading, so it is scheduled by the amount of kept text instead: each unit's
kept records are cut, in row order, into tasks of a few MiB, and every worker gets several tasks
whatever the inputs' sizes and unit layout. A task never spans two units (a unit is read once per
task from its spill or its input, and a stage's artifacts stay per unit and row range).

A record with more text than a task (one huge document) is not left to one worker: when the
stage can split a record (`UnitStage.split_rounds`), it becomes several *part* tasks of that one
record (as many as its text holds tasks' worth), each of which detects its share of the record
in rounds, and the first part decides the record once every round is done (`pipeline.run.unit_stages`).

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
# The names of a splitting stage's later steps: `pii-round2`, `pii-round3`, `pii-join`.
ROUND = "-round"
JOIN = "-join"


@dataclass(frozen=True)
class StageTask:
    """One task of a per-unit stage: the kept records of unit `unit_id` in rows `first_row`..`last_row`,
    or (`parts` > 1) part `part` of the one record in row `first_row` == `last_row`.

    The first part (`part` 0) holds the record's verdict and artifacts, like a task of whole
    records; it counts the record (`records` 1, the other parts 0)."""

    task_id: int
    unit_id: int
    first_row: int
    last_row: int
    records: int
    text_bytes: int
    part: int = 0
    parts: int = 1

    @property
    def name(self) -> str:
        """The task's name in artifact file names: `t00003`."""
        return f"t{self.task_id:05d}"

    @property
    def is_part(self) -> bool:
        """True for a part of a split record."""
        return self.parts > 1

    @classmethod
    def from_dict(cls, d: dict) -> "StageTask":
        """Inverse of `to_dict`."""
        return cls(d["task"], d["unit"], d["first_row"], d["last_row"], d["records"], d["text_bytes"],
                   d.get("part", 0), d.get("parts", 1))

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = {"task": self.task_id, "unit": self.unit_id, "first_row": self.first_row, "last_row": self.last_row,
             "records": self.records, "text_bytes": self.text_bytes}
        if self.is_part:
            d.update(part=self.part, parts=self.parts)
        return d


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
    workers = runner_workers(plan.config)
    target = task_bytes(total, workers)
    splits = stage.split_rounds > 0
    tasks: list[StageTask] = []
    for unit_id, rows, cost in per_unit:
        lo = 0
        for h in (np.flatnonzero(cost > target).tolist() if splits else []):
            _whole_tasks(tasks, unit_id, rows[lo:h], cost[lo:h], target)
            _part_tasks(tasks, unit_id, int(rows[h]), int(cost[h]) - RECORD_OVERHEAD_BYTES, target, workers)
            lo = h + 1
        _whole_tasks(tasks, unit_id, rows[lo:], cost[lo:], target)
    records = sum(t.records for t in tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"stage": kind, "target_bytes": target, "records": records,
                             "text_bytes": sum(t.text_bytes for t in tasks),
                             "tasks": [t.to_dict() for t in tasks]})
    return tasks


def _whole_tasks(tasks: list[StageTask], unit_id: int, rows: np.ndarray, cost: np.ndarray, target: int) -> None:
    """Append the tasks of whole records that cut `rows` (sorted, with their costs) into."""
    for a, b in cut_rows(rows, cost, target):
        tasks.append(StageTask(len(tasks), unit_id, int(rows[a]), int(rows[b]), b - a + 1,
                               int(cost[a:b + 1].sum()) - (b - a + 1) * RECORD_OVERHEAD_BYTES))


def _part_tasks(tasks: list[StageTask], unit_id: int, row: int, text: int, target: int, workers: int) -> None:
    """Append the part tasks of the one record in `row`, holding `text` bytes of text: one per
    `target` bytes, rounded up to a multiple of the workers (the parts are equal shares, so a
    record that is most of the run then keeps every worker busy to its end); each part's share of
    the work is cut when it runs, from the record's chunks."""
    parts = -(-(text + RECORD_OVERHEAD_BYTES) // target)
    parts = -(-parts // max(1, workers)) * max(1, workers)
    for p in range(parts):
        share = text * (p + 1) // parts - text * p // parts
        tasks.append(StageTask(len(tasks), unit_id, row, row, int(p == 0), share, p, parts))


def record_parts(work_dir: str, kind: str, task: StageTask) -> list[StageTask]:
    """Every part of the split record `task` is a part of, in part order."""
    return [t for t in plan_tasks(work_dir, kind)
            if t.is_part and t.unit_id == task.unit_id and t.first_row == task.first_row]


def task_step(name: str) -> tuple[str, int]:
    """(stage kind, round) of a per-unit stage's task step: round 1 for the stage's own step (its
    tasks, and the first round of its part tasks), N for `<kind>-roundN`, 0 for `<kind>-join`."""
    if name.endswith(JOIN):
        return name[: -len(JOIN)], 0
    kind, sep, n = name.rpartition(ROUND)
    if sep and n.isdigit():
        return kind, int(n)
    return name, 1


def task_step_ids(work_dir: str, name: str) -> list[int]:
    """The tasks a per-unit stage's task step runs: every task (its own step), the part tasks (a
    later round), the first parts (the join)."""
    kind, round_ = task_step(name)
    tasks = plan_tasks(work_dir, kind)
    if round_ == 1:
        return [t.task_id for t in tasks]
    return [t.task_id for t in tasks if t.is_part and (round_ > 1 or t.part == 0)]


def planned(work_dir: str, kind: str) -> dict:
    """The task plan's totals (records, text bytes, target) once `plan_tasks` has run."""
    d = read_done(_tasks_path(Path(work_dir), kind))
    if d is None:
        raise PipelineError(f"the tasks of stage '{kind}' are not planned yet")
    return d


def unit_tasks(work_dir: str, kind: str) -> dict[int, list[StageTask]]:
    """The planned tasks that hold verdicts and artifacts, per unit: every task of whole records
    and the first part of each split record."""
    out: dict[int, list[StageTask]] = {}
    for t in plan_tasks(work_dir, kind):
        if t.part == 0:
            out.setdefault(t.unit_id, []).append(t)
    return out
