"""A plain local executor: runs a plan's steps on a thread pool, without Prefect.

The steps and their order come from `pipeline.core.builder`; this module only schedules them.

Usage::

    from pipeline.config import load_config
    from pipeline.executor import run_local
    manifest = run_local(load_config("configs/sample.yaml"))
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from pipeline.config import RunConfig
from pipeline.core.builder import beside_write, build_steps, run_step
from pipeline.fileio import output_lock
from pipeline.plan import make_plan, wait_for_digests
from pipeline.publish import finalize
from pipeline.run.workdir import cleanup_tmp, shard_ids
from pipeline.spill import release_memory_spill


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
    """Every step of the run, in the builder's order, on a thread pool."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for step in build_steps(cfg):
            if step.scope in ("global", "background"):
                run_step(work, step.name)
            elif step.scope == "unit":
                _run_units(pool, work, step, ids, workers, on_unit)
            else:  # shards, with the ledger beside them: it fills a worker that runs out of shards
                shards = [pool.submit(run_step, work, step.name, i) for i in shard_ids(work)]
                ledger = pool.submit(beside_write, work)
                for f in shards:
                    if on_unit:
                        on_unit(step.name, f.result())
                ledger.result()


def _run_units(pool: ThreadPoolExecutor, work: str, step, ids: list[int], workers: int, on_unit) -> None:
    procs = 1
    if step.processes:
        from pipeline.run.procpool import pool_workers

        procs = pool_workers(work, workers)
    try:
        for r in pool.map(lambda i: run_step(work, step.name, i, procs), ids):
            if on_unit:
                on_unit(step.name, r)
    finally:
        if step.processes:
            from pipeline.run.procpool import shutdown

            shutdown()
