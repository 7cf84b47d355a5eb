"""A plain local executor: runs a plan's steps on a thread pool, without Prefect.

Usage::

    from pipeline.config import load_config
    from pipeline.executor import run_local
    manifest = run_local(load_config("configs/sample.yaml"))
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from pipeline.config import RunConfig
from pipeline.fileio import output_lock
from pipeline.plan import make_plan, start_input_digests, wait_for_digests
from pipeline.publish import finalize, stage_ledger
from pipeline.spill import release_memory_spill
from pipeline.steps import barrier, cleanup_tmp, pass1, pass2, shard_ids


def run_local(cfg: RunConfig, workers: int | None = None, on_unit: Callable[[str, dict], None] | None = None) -> dict:
    """Run the whole pipeline in this process and return the manifest."""
    workers = workers or cfg.runner.max_workers
    with output_lock(cfg.output.dir):
        plan = make_plan(cfg, max_workers=workers)
        work = str(plan.work_dir)
        cleanup_tmp(work)
        ids = [u.unit_id for u in plan.units]
        try:
            _run_steps(cfg, work, ids, workers, on_unit)
        except BaseException:
            release_memory_spill(plan)
            raise
        finally:
            wait_for_digests(work)  # never left running after a failed run
        return finalize(work)


def _run_steps(cfg: RunConfig, work: str, ids: list[int], workers: int, on_unit) -> None:
    """Pass 1, the barrier, PII and pass 2 (with the ledger beside it) on a thread pool."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(lambda i: pass1(work, i), ids):
            if on_unit:
                on_unit("pass1", r)
        start_input_digests(work)  # beside the barrier and pass 2, on the core they leave idle
        barrier(work)
        if cfg.pii is not None and cfg.pii.enabled:
            from pipeline.pii.pool import pii_unit_isolated, pii_workers, shutdown
            from pipeline.pii.step import pii_decide

            procs = pii_workers(work, workers)
            try:
                for r in pool.map(lambda i: pii_unit_isolated(work, i, procs), ids):
                    if on_unit:
                        on_unit("pii", r)
            finally:
                shutdown()
            pii_decide(work)
        shards = [pool.submit(pass2, work, i) for i in shard_ids(work)]
        ledger = pool.submit(stage_ledger, work)  # beside pass 2: it fills a worker that runs out of shards
        for f in shards:
            if on_unit:
                on_unit("pass2", f.result())
        ledger.result()
