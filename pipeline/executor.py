"""A plain local executor: runs a plan's steps on a thread pool, without Prefect.

The steps and their order come from `pipeline.core.builder`; this module only schedules them.

Usage::

    from pipeline.config import load_config
    from pipeline.executor import run_local
    manifest = run_local(load_config("configs/sample.yaml"))
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Callable

from pipeline.config import RunConfig
from pipeline.core.builder import beside_write, build_steps, keeps_processes, run_step, step_items
from pipeline.dedup.state_lock import pause_after_barrier_if_asked, state_lock
from pipeline.fileio import output_lock
from pipeline.plan import make_plan, wait_for_digests
from pipeline.progress import Progress
from pipeline.publish import finalize
from pipeline.run.scratch import DriverSync
from pipeline.run.timings import StepClock, record_step, start_run
from pipeline.run.workdir import cleanup_tmp
from pipeline.spill import release_memory_spill


def run_local(cfg: RunConfig, workers: int | None = None, on_unit: Callable[[str, dict], None] | None = None,
              progress: Progress | None = None) -> dict:
    """Run the whole pipeline in this process and return the manifest (`progress`: bars per phase)."""
    workers = workers or cfg.runner.max_workers
    # The state directory (cfg.state) is held from the barrier until finalize has updated the index
    # (`state_lock`): `held` takes it in `_run_steps` and releases it on any exit.
    with output_lock(cfg.output.local_path), ExitStack() as held:
        clock = StepClock()
        plan = make_plan(cfg, max_workers=workers)
        work = str(plan.work_dir)
        cleanup_tmp(work)
        start_run(work, clock)
        record_step(work, "plan", "global", clock)
        sync = DriverSync(cfg, work)
        try:
            _run_steps(cfg, work, workers, on_unit, progress or Progress(enabled=False), held, sync)
        except BaseException:
            from pipeline.run.procpool import shutdown

            shutdown()  # worker processes readied early for a step the run did not reach
            release_memory_spill(plan)
            raise
        finally:
            wait_for_digests(work)  # never left running after a failed run
        sync.receive(content=True)
        manifest = finalize(work)
        sync.done()
        return manifest


def _run_steps(cfg: RunConfig, work: str, workers: int, on_unit, progress: Progress, held: ExitStack,
               sync: DriverSync) -> None:
    """Every step of the run, in the builder's order, on a thread pool; each step is timed. The
    state lock is taken into `held` before the barrier (the caller releases it after finalize).
    Steps run here on `work`; tasks get `sync.task_work` (the URL of a shared scratch space on a
    store, exchanged with `work` around each step, or `work` itself)."""
    steps = build_steps(cfg)
    from pipeline.run.procpool import warm_pool

    warm_pool(work, steps, workers)  # a GIL-bound stage's processes load their model beside pass 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, step in enumerate(steps):
            if step.holds_state:
                held.enter_context(state_lock(cfg.state))
            clock = StepClock()
            sync.receive()
            if step.scope in ("global", "background"):
                results = [run_step(work, step.name)]
            elif step.scope in ("unit", "task", "part"):
                results = _run_items(pool, work, step, workers, on_unit, clock, progress, sync,
                                     keeps_processes(steps, k))
            else:  # shards, with the ledger beside them: it fills a worker that runs out of shards
                ids = step_items(work, step)
                sync.send()
                bar = progress.phase(step.name, len(ids))
                shards = [pool.submit(run_step, sync.task_work, step.name, i) for i in ids]
                ledger = pool.submit(beside_write, sync.task_work)
                results = []
                for f in shards:
                    results.append(f.result())
                    bar.advance(results[-1], step.count_key)
                    if on_unit:
                        on_unit(step.name, results[-1])
                ledger.result()
            record_step(work, step.name, step.scope, clock, results)
            sync.send()
            if step.name == "barrier":
                pause_after_barrier_if_asked()  # a test hook: nothing unless its variable is set


def _run_items(pool: ThreadPoolExecutor, work: str, step, workers: int, on_unit, clock: StepClock,
               progress: Progress, sync: DriverSync, keep_processes: bool = False) -> list[dict]:
    procs = 1
    if step.processes:
        from pipeline.run.procpool import pool_workers

        procs = pool_workers(work, step.stage, workers)
    ids = step_items(work, step)
    sync.send()
    bar = progress.phase(step.name, len(ids))
    results = []
    from pipeline.run.procpool import shutdown

    try:
        for r in pool.map(lambda i: run_step(sync.task_work, step.name, i, procs), ids):
            results.append(r)
            bar.advance(r, step.count_key)
            if on_unit:
                on_unit(step.name, r)
        clock.stop()  # before the worker processes exit: their CPU counts
    except BaseException:
        if step.processes:
            shutdown()
        raise
    if step.processes and not keep_processes:
        shutdown()
    return results
