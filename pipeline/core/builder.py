"""The step builder: the only place where the order of a run lives.

It turns a config's stage list into the steps that both the Prefect flow (`flows/clean.py`) and
the Prefect-free executor (`pipeline.executor`) run, one after the other:

    read        per unit   pass 1: read, validate, per-record stages, keys (`pipeline.run.pass1`)
    digests     background hash the inputs beside the barrier and pass 2
    ids-part    per part   the barrier's work that grows with the corpus, partitioned so that no
    exact-part  per part   task holds more than its partition's share: record-id uniqueness (by id
    lsh-band    per part   hash), exact keys (by key prefix), LSH candidates (by band and bucket
    boilerplate-part       range), each against the corpus index too, near dedup's boilerplate
                per part   sketch (by range of units, added up after) (`pipeline.run.barrier_parts`)
    near-groups global     the candidate graph's connected components packed into groups (int arrays)
    near-group  per group  one group's candidate pairs verified and clustered on its records only
                           (`pipeline.run.near_groups`)
    near-number global     the clusters' global ids, a streaming merge of the groups' clusters
    near-relabel per group one group's verdicts under those ids
    near-repoint per part  with exact dedup too: the exact copies whose exact survivor went as a
                           near duplicate, each with the record finally kept: a join of the exact
                           copies and the text near drops partitioned by the survivor's id
                           (`pipeline.dedup.repoint`)
    barrier     global     applies them, merges the groups' clusters, the other barrier stages, the
                           shard plan; unit by unit (a unit's rows in memory at a time) unless a
                           barrier stage needs the frame of every record (`pipeline.run.barrier`)
    <stage>     per task   each per-unit stage after dedup (e.g. `pii`), on tasks of a few MiB of
                           kept text (`pipeline.run.tasks`); a record larger than a task is cut
                           into part tasks, which run their first round here, then (a stage with
    <stage>-roundN per task  `split_rounds`) its later rounds, one step each, and
    <stage>-join per task  the verdict of each split record, from its parts' rounds; then
    <stage>-fold global    its verdicts folded into the decisions, shards planned again
    write       per shard  pass 2 with the write-time stages; beside it, the ledger

Runners call a step by name with `run_step(work_dir, name, id)`, so a remote worker needs only
the step's name and the scratch path.

Usage::

    for step in build_steps(cfg):
        items = step_items(work_dir, step)   # unit, task or shard ids ("global": run once)
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.core.registry import stages_at
from pipeline.core.stage import Placement


@dataclass(frozen=True)
class Step:
    """One step of a run: its name, how it is scheduled and what its result counts."""

    name: str
    scope: str                    # "unit" | "task" | "part" | "global" | "shard" | "background"
    count_key: str | None = None  # the field of a unit/shard result the progress display counts
    stage: str | None = None      # the stage a per-unit stage step runs
    processes: bool = False       # GIL-bound work: the thread runner sends its units to processes
    retries: bool = False         # I/O steps are retried on transient errors
    holds_state: bool = False     # the runner takes the state lock (`cfg.state`) before this step


def build_steps(cfg) -> list[Step]:
    """The run's steps, in order."""
    from pipeline.run.barrier_parts import part_steps
    from pipeline.run.tasks import JOIN, ROUND

    steps = [Step("read", "unit", "records", retries=True), Step("digests", "background")]
    # The barrier's steps read the corpus index: the state is held from the first of them on.
    from pipeline.run.near_groups import GROUP_STEP, NUMBER_STEP, PLAN_STEP, RELABEL_STEP, REPOINT_STEP

    parts = part_steps(cfg)
    barrier = [Step(name, "part", retries=True) for name in parts]
    if "lsh-band" in parts:
        barrier += [Step(PLAN_STEP, "global"), Step(GROUP_STEP, "part", retries=True), Step(NUMBER_STEP, "global"),
                    Step(RELABEL_STEP, "part", retries=True)]
        if "exact-part" in parts:  # exact copies to re-point exist only with both stages
            barrier.append(Step(REPOINT_STEP, "part", retries=True))
    barrier.append(Step("barrier", "global"))
    steps += [replace(barrier[0], holds_state=True), *barrier[1:]]
    for spec in stages_at(cfg, Placement.UNIT):
        steps.append(Step(spec.kind, "task", "scanned", stage=spec.kind, processes=spec.cls.needs_processes,
                          retries=True))
        later = [f"{spec.kind}{ROUND}{r}" for r in range(2, spec.cls.split_rounds + 1)]
        if spec.cls.split_rounds:
            later.append(f"{spec.kind}{JOIN}")
        steps += [Step(name, "task", "scanned", stage=spec.kind, processes=spec.cls.needs_processes, retries=True)
                  for name in later]
        steps.append(Step(f"{spec.kind}-fold", "global", stage=spec.kind))
    steps.append(Step("write", "shard", "kept", retries=True))
    return steps


def keeps_processes(steps: list[Step], k: int) -> bool:
    """Whether the worker processes of step `k` (a GIL-bound stage's) should outlive it: the next
    step runs the same stage in them (a split record's rounds), so they keep their loaded model."""
    return k + 1 < len(steps) and steps[k].processes and steps[k + 1].processes and steps[k + 1].stage == steps[k].stage


def step_items(work_dir: str, step: Step) -> list[int]:
    """The ids a unit, task, part or shard step runs on (planned when first asked: a per-unit
    stage's tasks once the steps before it are done, the barrier's partitions once pass 1 is done,
    the shards once the decisions are final)."""
    from pipeline.plan import RunPlan
    from pipeline.run.barrier_parts import part_count
    from pipeline.run.workdir import shard_ids

    if step.scope == "unit":
        return [u.unit_id for u in RunPlan.load(work_dir).units]
    if step.scope == "task":
        from pipeline.run.tasks import task_step_ids

        return task_step_ids(work_dir, step.name)
    if step.scope == "part":
        from pipeline.run.near_groups import PER_GROUP, near_group_count

        if step.name in PER_GROUP:
            return list(range(near_group_count(work_dir)))
        return list(range(part_count(work_dir, step.name)))
    if step.scope == "shard":
        return shard_ids(work_dir)
    return []


def run_step(work_dir: str, name: str, item: int | None = None, workers: int = 1) -> dict | None:
    """Run the step called `name` (for unit, task and shard steps, on unit, task or shard `item`).

    `workers` > 1 lets a GIL-bound per-unit stage use that many worker processes (thread runner).
    `work_dir` may be the URL of a scratch space on a store (`runner.scratch: store`): the step then
    runs on this machine's copy of it, brought up to date first and its writes uploaded after."""
    if "://" in work_dir:
        from pipeline.run.scratch import worker_copy

        with worker_copy(work_dir) as local:
            return run_step(local, name, item, workers)
    from pipeline.plan import start_input_digests
    from pipeline.run.barrier import barrier
    from pipeline.run.barrier_parts import PART_STEPS, run_part
    from pipeline.run.near_groups import NEAR_STEPS, REPOINT_STEP, run_near_repoint, run_near_step
    from pipeline.run.pass1 import pass1
    from pipeline.run.pass2 import pass2
    from pipeline.run.unit_stages import fold_unit_stage

    if name == "read":
        return pass1(work_dir, item)
    if name == "digests":
        start_input_digests(work_dir)
        return None
    if name in PART_STEPS:
        return run_part(work_dir, name, item)
    if name in NEAR_STEPS:
        return run_near_step(work_dir, name, item)
    if name == REPOINT_STEP:
        return run_near_repoint(work_dir, item)
    if name == "barrier":
        return barrier(work_dir)
    if name == "write":
        return pass2(work_dir, item)
    if name.endswith("-fold"):
        return fold_unit_stage(work_dir, name[: -len("-fold")])
    from pipeline.run.procpool import unit_stage_isolated

    return unit_stage_isolated(work_dir, name, item, workers)


def beside_write(work_dir: str) -> dict:
    """The ledger, written beside pass 2 once every decision is final."""
    if "://" in work_dir:
        from pipeline.run.scratch import worker_copy

        with worker_copy(work_dir) as local:
            return beside_write(local)
    from pipeline.publish import stage_ledger

    return stage_ledger(work_dir)
