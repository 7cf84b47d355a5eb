"""Process-level parallelism for per-unit stages bound to the GIL (`Stage.needs_processes`, e.g.
spaCy's NER), whatever runs the steps.

With a thread-based runner, each unit's work is sent to a shared pool of worker processes
(spawned, so no lock held by a thread is inherited), each of which sets the stage up once.
Runners that already use processes (Dask) call `run_task` directly.

The pool can be readied early (`warm_pool`, at the start of a run): its processes start and load
the stage's model while pass 1 and the barrier run, instead of at the start of the stage's step.

Usage::

    warm_pool(work_dir, build_steps(cfg), 2)                          # optional, early
    workers = pool_workers(work_dir, "pii", 2)
    result = unit_stage_isolated(work_dir, "pii", task_id, workers)   # or a later round: "pii-round2"
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

from pipeline.run.tasks import RECORD_OVERHEAD_BYTES, planned, plan_tasks
from pipeline.run.unit_stages import run_task

# Below this much work (kept text plus the per-record cost the task plan counts), starting worker
# processes (each loads spaCy and Presidio: seconds) costs more than it saves; the work then runs
# in the calling process, which keeps its stage.
POOL_MIN_BYTES = 4 * 1024 * 1024

_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None
_WORKERS = 0


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _WORKERS
    with _LOCK:
        if _POOL is None or _WORKERS != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            _WORKERS = workers
        return _POOL


def pool_workers(work_dir: str, kind: str, workers: int) -> int:
    """How many worker processes a GIL-bound per-unit stage of this run should use (1: none, in process)."""
    plan_tasks(work_dir, kind)
    totals = planned(work_dir, kind)
    # Records cost beyond their text (100,000 one-line records are 2 MB of text but tens of
    # seconds of one core): the same cost the tasks are cut by.
    work = totals["text_bytes"] + RECORD_OVERHEAD_BYTES * totals["records"]
    return workers if work >= POOL_MIN_BYTES else 1


def _warm(work_dir: str, kind: str) -> None:
    """In a worker process: set the run's stage `kind` up and load what its tasks need."""
    from pipeline.core.registry import stages_at
    from pipeline.core.runtime import stage_instance
    from pipeline.core.stage import Placement
    from pipeline.plan import RunPlan

    plan = RunPlan.load(work_dir)
    spec = next(s for s in stages_at(plan.config, Placement.UNIT) if s.kind == kind)
    stage_instance(spec, plan).warm()


def warm_pool(work_dir: str, steps: list, workers: int) -> None:
    """Start the worker processes the run's first GIL-bound stage (of the builder's `steps`) will
    likely use and ready its model in each, without waiting: when the run has `workers` > 1 and at
    least POOL_MIN_BYTES of input (the stage's step decides again on its work after dedup; a pool
    started for nothing is stopped after that step, as always). A failure here is left to the
    stage's step, which meets it again."""
    from pipeline.plan import RunPlan

    stage = next((step.stage for step in steps if step.processes), None)
    if stage is None or workers <= 1 or sum(f.bytes for f in RunPlan.load(work_dir).inputs) < POOL_MIN_BYTES:
        return
    pool = _pool(workers)
    for _ in range(workers):  # submitted together, they start a process each
        pool.submit(_warm, work_dir, stage)


def unit_stage_isolated(work_dir: str, step: str, task_id: int, workers: int) -> dict:
    """Run the task step `step` (a per-unit stage's kind, or one of its later rounds) on one task in
    the shared worker pool (in this process when `workers` is 1)."""
    if workers <= 1:
        return run_task(work_dir, step, task_id)
    return _pool(workers).submit(run_task, work_dir, step, task_id).result()


def shutdown() -> None:
    """Stop the worker processes (their loaded models are freed)."""
    global _POOL
    with _LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
            _POOL = None
