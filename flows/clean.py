"""The cleaning flow: one Prefect task per unit, stage task, barrier partition or shard and step; the work itself lives in `pipeline`.

Usage::

    from flows.clean import run_flow
    manifest = run_flow(cfg)                 # thread runner, or cfg.runner.kind == "dask"
"""

from __future__ import annotations


from contextlib import ExitStack

from flows.settings import apply_offline_defaults

apply_offline_defaults()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.artifacts import publish_run_artifacts  # noqa: E402
from pipeline.config import RunConfig, parse_config  # noqa: E402
from pipeline.core.builder import beside_write, build_steps, keeps_processes, run_step, step_items  # noqa: E402
from pipeline.dedup.state_lock import pause_after_barrier_if_asked, state_lock  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.fileio import output_lock  # noqa: E402
from pipeline.plan import make_plan, wait_for_digests  # noqa: E402
from pipeline.progress import Progress  # noqa: E402
from pipeline.publish import finalize  # noqa: E402
from pipeline.run.scratch import DriverSync  # noqa: E402
from pipeline.run.timings import StepClock, record_step, start_run  # noqa: E402
from pipeline.run.workdir import cleanup_tmp  # noqa: E402
from pipeline.spill import release_memory_spill  # noqa: E402


def _retry_unless_pipeline_error(task, task_run, state) -> bool:
    """Retry transient I/O failures, not deterministic ones (bad config, unreadable input)."""
    try:
        state.result()
    except PipelineError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


@task(name="unit-step", task_run_name="{step}-u{item}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_unless_pipeline_error)
def unit_task(work_dir: str, step: str, item: int) -> dict:
    """One per-unit step (pass 1) on one unit."""
    return run_step(work_dir, step, item)


@task(name="stage-task", task_run_name="{step}-t{item}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_unless_pipeline_error)
def stage_task(work_dir: str, step: str, item: int, workers: int = 1) -> dict:
    """One task (a few MiB of kept text) of a per-unit stage; `workers` > 1: in the shared worker processes."""
    return run_step(work_dir, step, item, workers)


@task(name="barrier-part", task_run_name="{step}-p{item}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_unless_pipeline_error)
def part_task(work_dir: str, step: str, item: int) -> dict:
    """One partition of the barrier's work (record ids, exact keys or LSH bands of a key range)."""
    return run_step(work_dir, step, item)


@task(name="shard-step", task_run_name="{step}-s{item}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=_retry_unless_pipeline_error)
def shard_task(work_dir: str, step: str, item: int) -> dict:
    """Write one output shard."""
    return run_step(work_dir, step, item)


@task(name="global-step", task_run_name="{step}")
def global_task(work_dir: str, step: str) -> dict | None:
    """A global step (the barrier, a per-unit stage's fold)."""
    return run_step(work_dir, step)


@task(name="ledger", retries=2, retry_delay_seconds=1, retry_condition_fn=_retry_unless_pipeline_error)
def ledger_task(work_dir: str) -> dict:
    """Write the ledger parts (no record content) into the scratch space."""
    return beside_write(work_dir)["rows"]


@task(name="finalize")
def finalize_task(work_dir: str) -> dict:
    """Write the manifest and publish the run; returns a small summary (counts, never content)."""
    m = finalize(work_dir)
    publish_run_artifacts(m)
    return {"run_id": m["run_id"], "conservation": m["conservation"]["overall"], "outputs": len(m["outputs"]["shards"])}


def _run_phase(progress: Progress, step, work: str, workers: int, sync: DriverSync) -> list[dict]:
    """Submit one task per item and wait for all of them, advancing the progress bar as they finish
    (the tasks get `sync.task_work`: the shared scratch space's URL, or `work`)."""
    ids = step_items(work, step)
    sync.send()
    task_work = sync.task_work
    bar = progress.phase(step.name, len(ids))
    if step.scope == "unit":
        futures = [unit_task.submit(task_work, step.name, i) for i in ids]
    elif step.scope == "task":
        futures = [stage_task.submit(task_work, step.name, i, workers) for i in ids]
    elif step.scope == "part":
        futures = [part_task.submit(task_work, step.name, i) for i in ids]
    else:
        futures = [shard_task.submit(task_work, step.name, i) for i in ids]
    results = []
    for fut in as_completed(futures):
        results.append(fut.result())
        bar.advance(results[-1], step.count_key)
    return results


def _stage_workers(work: str, step, cfg: RunConfig) -> int:
    """Worker processes for a GIL-bound per-unit stage under the thread runner (Dask workers are processes)."""
    if not step.processes or cfg.runner.kind != "thread":
        return 1
    from pipeline.run.procpool import pool_workers

    return pool_workers(work, step.stage, cfg.runner.max_workers)


@flow(name="hygiene-clean", log_prints=False)
def clean_flow(config: dict) -> dict:
    """Plan, then run the builder's steps (one task per unit, shard or global step), finalize and publish."""
    cfg = parse_config(config, "flow parameter 'config'")
    logger = get_run_logger()
    # The state directory is held by this (the flow's) process from the barrier until finalize has
    # updated the index, wherever the barrier task runs: finalize runs here too.
    with output_lock(cfg.output.local_path), ExitStack() as held:
        clock = StepClock()
        plan = make_plan(cfg, max_workers=cfg.runner.max_workers)
        work = str(plan.work_dir)
        cleanup_tmp(work)
        start_run(work, clock)
        record_step(work, "plan", "global", clock)
        logger.info("run %s: %d inputs, %d units%s", plan.run_id, len(plan.inputs), len(plan.units),
                    " (resumed)" if plan.resumed else "")
        progress = Progress()
        sync = DriverSync(cfg, work)
        try:
            steps = build_steps(cfg)
            if cfg.runner.kind == "thread":  # a GIL-bound stage's processes load their model beside pass 1
                from pipeline.run.procpool import warm_pool

                warm_pool(work, steps, cfg.runner.max_workers)
            for k, step in enumerate(steps):
                if step.holds_state:
                    held.enter_context(state_lock(cfg.state))
                clock = StepClock()
                sync.receive()
                if step.scope == "background":
                    results = [run_step(work, step.name)]  # in this process: beside the barrier and pass 2
                elif step.scope == "global":
                    results = [global_task(work, step.name)]
                elif step.scope in ("unit", "task", "part"):
                    from pipeline.run.procpool import shutdown

                    try:
                        results = _run_phase(progress, step, work, _stage_workers(work, step, cfg), sync)
                        clock.stop()  # before the worker processes exit: their CPU counts
                    except BaseException:
                        if step.processes:
                            shutdown()
                        raise
                    if step.processes and not keeps_processes(steps, k):
                        shutdown()   # kept for the stage's next step (a split record's rounds)
                else:
                    sync.send()
                    ledger = ledger_task.submit(sync.task_work)  # beside pass 2, once every decision is final
                    results = _run_phase(progress, step, work, 1, sync)
                    ledger.result()
                record_step(work, step.name, step.scope, clock, results)
                sync.send()
                if step.name == "barrier":
                    pause_after_barrier_if_asked()  # a test hook: nothing unless its variable is set
        except BaseException:
            from pipeline.run.procpool import shutdown

            shutdown()  # worker processes readied early for a step the run did not reach
            release_memory_spill(plan)
            raise
        finally:
            progress.stop()
            # The input digests hashed in this process: before another may publish, and never
            # left running after a failed flow.
            wait_for_digests(work)
        sync.receive(content=True)
        summary = finalize_task(work)
        sync.done()
    logger.info("run %s published to %s", summary["run_id"], cfg.output.dir)
    return summary


def task_runner_for(cfg: RunConfig):
    """The Prefect task runner the config asks for."""
    if cfg.runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.runner.dask_address:
            return DaskTaskRunner(address=cfg.runner.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.runner.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=cfg.runner.max_workers)


def run_flow(cfg: RunConfig) -> dict:
    """Run the cleaning flow for `cfg` with its configured task runner; returns the published manifest."""
    from pipeline.storage import read_manifest

    clean_flow.with_options(task_runner=task_runner_for(cfg))(cfg.model_dump(mode="json"))
    return read_manifest(cfg.output.dir)
