"""Process-level parallelism for per-unit stages bound to the GIL (`Stage.needs_processes`, e.g.
spaCy's NER), whatever runs the steps.

With a thread-based runner, each unit's work is sent to a shared pool of worker processes
(spawned, so no lock held by a thread is inherited), each of which sets the stage up once.
Runners that already use processes (Dask) call `run_task` directly.

Usage::

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
