"""The barrier's near-duplicate groups as steps of their own (`pipeline.dedup.near_groups`):

    near-groups  global    after the `lsh-band` tasks: the connected components of the candidate
                           graph packed into groups (int arrays), each group's input and
                           attribute rows written (one pass over the units' key files)
    near-group   per group verify and cluster one group on its records only (its attribute rows,
                           signatures, texts for `verify: borderline`); its verdicts written to
                           `_work/near/groups/`
    near-number  global    the clusters' global ids, by a streaming merge of the groups' clusters
    near-relabel per group one group's verdicts under the global ids

The global `barrier` step then only merges the groups' verdicts. Each step is cached by its
done-marker, so a killed run resumes where it was.

Usage::

    plan_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        run_near_group(work_dir, g)
    number_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        relabel_near_group(work_dir, g)
"""

from __future__ import annotations

from pathlib import Path

from pipeline.dedup.near_groups import group_path, number_groups, plan_groups, planned_groups, relabel_one, resolve_one
from pipeline.plan import RunPlan
from pipeline.run.barrier_parts import LiveRows, open_index
from pipeline.run.workdir import read_done

PLAN_STEP = "near-groups"
GROUP_STEP = "near-group"
NUMBER_STEP = "near-number"
RELABEL_STEP = "near-relabel"
# The steps that run once per group, and all of them.
PER_GROUP = (GROUP_STEP, RELABEL_STEP)
NEAR_STEPS = (PLAN_STEP, GROUP_STEP, NUMBER_STEP, RELABEL_STEP)


def _published(cfg) -> tuple[object, list]:
    """The corpus index (None without `state`) and its published near-dedup parts. The caller holds
    the index while it reads the parts: a remote index's local mirror goes with the object."""
    index = open_index(cfg)
    return index, (index.near_parts() if index is not None else [])


def plan_near_groups(work_dir: str) -> dict:
    """The groups of the candidate graph (planned once; later calls read the plan)."""
    work = Path(work_dir)
    if (cached := planned_groups(work)) is not None:
        return cached
    plan = RunPlan.load(work)
    live = LiveRows(work, plan)
    _index, external = _published(plan.config)  # held until the plan is made
    return plan_groups(work, plan.config.dedup.near, external, live.kept_rows, lambda unit, rows: live.rows(unit, rows)[0])


def near_group_count(work_dir: str) -> int:
    """How many group tasks the run has."""
    return plan_near_groups(work_dir)["groups"]


def run_near_group(work_dir: str, g: int) -> dict:
    """Verify and cluster group `g` (cached once done); returns its counts."""
    from pipeline.stages.near import read_texts

    work = Path(work_dir)
    if (cached := read_done(group_path(work, g, ".json"))) is not None:
        return cached
    plan = RunPlan.load(work)
    cfg = plan.config
    _index, external = _published(cfg)  # held until the group is resolved
    return resolve_one(work, cfg.dedup.near, cfg.dedup.survivor.near_prefer, external, g,
                       lambda units, rows: read_texts(plan, units, rows))


def number_near_groups(work_dir: str) -> dict:
    """The clusters' global ids, once every group task is done (cached)."""
    return number_groups(Path(work_dir))


def relabel_near_group(work_dir: str, g: int) -> dict:
    """Group `g`'s verdicts under the global cluster ids (cached once done)."""
    return relabel_one(Path(work_dir), g)


def run_near_step(work_dir: str, name: str, item: int | None) -> dict:
    """Run near-dedup step `name` (on group `item` for the per-group steps)."""
    if name == PLAN_STEP:
        return plan_near_groups(work_dir)
    if name == NUMBER_STEP:
        return number_near_groups(work_dir)
    return (run_near_group if name == GROUP_STEP else relabel_near_group)(work_dir, item)


def run_all_near_groups(work_dir: str) -> None:
    """The plan and every group task, numbering and relabelling not done yet, one after the other
    (a barrier called on its own, e.g. by a test or a benchmark, runs them first)."""
    for g in range(near_group_count(work_dir)):
        run_near_group(work_dir, g)
    number_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        relabel_near_group(work_dir, g)
