"""Process-level parallelism for PII detection, whatever runs the steps.

spaCy's NER holds the GIL, so threads do not help it: with a thread-based runner, each unit's
detection is sent to a shared pool of worker processes (spawned, so no lock held by a thread
is inherited), each of which loads the model once. Runners that already use processes (Dask)
call `pii_unit` directly.

Usage::

    result = pii_unit_isolated(work_dir, unit_id, workers=2)
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.pii.step import pii_unit

# Below this much kept text, starting worker processes (each loads spaCy and Presidio: seconds)
# costs more than it saves; detection then runs in the calling process, which keeps its engine.
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


def pii_workers(work_dir: str, workers: int) -> int:
    """How many worker processes the PII phase of this run should use (1: none, in process)."""
    import polars as pl

    from pipeline.audit.ledger import Decision

    parts = str(Path(work_dir) / "decisions" / "*.parquet")
    kept = pl.scan_parquet(parts).filter(pl.col("decision") == Decision.KEPT.value).select(pl.col("text_bytes").sum()).collect()
    return workers if int(kept.item() or 0) >= POOL_MIN_BYTES else 1


def pii_unit_isolated(work_dir: str, unit_id: int, workers: int) -> dict:
    """Run `pii_unit` in the shared worker pool (in this process when `workers` is 1)."""
    if workers <= 1:
        return pii_unit(work_dir, unit_id)
    return _pool(workers).submit(pii_unit, work_dir, unit_id).result()


def shutdown() -> None:
    """Stop the worker processes (their loaded models are freed)."""
    global _POOL
    with _LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
            _POOL = None
