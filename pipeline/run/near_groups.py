"""The barrier's near-duplicate groups as steps of their own (`pipeline.dedup.near_groups`):

    near-groups  global    after the `lsh-band` tasks: the connected components of the candidate
                           graph packed into groups (int arrays), each group's input and
                           attribute rows written (one pass over the units' key files)
    near-group   per group verify and cluster one group on its records only (its attribute rows,
                           signatures, texts for `verify: borderline`); its verdicts written to
                           `_work/near/groups/`
    near-number  global    the clusters' global ids, by a streaming merge of the groups' clusters
    near-relabel per group one group's verdicts under the global ids
    near-repoint per part  with exact dedup on too: partition p's exact copies (from the
                           `exact-part` tasks) joined with partition p's text near drops (from the
                           `near-group` tasks, which write them in partitions of their record id)
                           on the exact survivor's id: the exact copies whose survivor went as a
                           near duplicate, each with the record finally kept
                           (`pipeline.dedup.repoint`), to `_work/near/repoint/pNNNNN.parquet`

The global `barrier` step then only merges the groups' verdicts and applies the re-pointing rows
unit by unit. Each step is cached by its done-marker, so a killed run resumes where it was.

Usage::

    plan_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        run_near_group(work_dir, g)
    number_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        relabel_near_group(work_dir, g)
    for p in range(part_count(work_dir, REPOINT_STEP)):
        run_near_repoint(work_dir, p)
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.dedup.near_groups import group_path, number_groups, plan_groups, planned_groups, relabel_one, resolve_one
from pipeline.dedup.repoint import COPIES_SCHEMA, DROPS_SCHEMA, read_partition, repoint_path, repoint_rows, write_rows
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.barrier_parts import LiveRows, exact_copies_path, open_index, planned_parts
from pipeline.run.workdir import part_done_path, read_done

PLAN_STEP = "near-groups"
GROUP_STEP = "near-group"
NUMBER_STEP = "near-number"
RELABEL_STEP = "near-relabel"
# Not a per-group step: a task per partition of the exact survivors' ids (`barrier_parts.part_count`).
REPOINT_STEP = "near-repoint"
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
                       lambda units, rows: read_texts(plan, units, rows), planned_parts(work)[REPOINT_STEP])


def number_near_groups(work_dir: str) -> dict:
    """The clusters' global ids, once every group task is done (cached)."""
    return number_groups(Path(work_dir))


def relabel_near_group(work_dir: str, g: int) -> dict:
    """Group `g`'s verdicts under the global cluster ids (cached once done)."""
    return relabel_one(Path(work_dir), g)


def _missing(what: str, done: list[bool]) -> None:
    """Refuse to join before every producer of one side is done (its file is written before its
    done-marker)."""
    if not all(done):
        first = done.index(False)
        raise PipelineError(f"near dedup: {done.count(False)} of {len(done)} `{what}` task(s) have not run (first: "
                            f"{first}); run them before `{REPOINT_STEP}`")


def run_near_repoint(work_dir: str, p: int) -> dict:
    """Join partition `p` of the exact copies and of the text near drops (cached once done);
    returns its counts."""
    work = Path(work_dir)
    done = repoint_path(work, p, ".json")
    if (cached := read_done(done)) is not None:
        return cached
    t0 = time.perf_counter()
    parts = planned_parts(work)
    n = parts[REPOINT_STEP]
    groups = (planned_groups(work) or {}).get("groups")
    if groups is None:
        raise PipelineError(f"near dedup: the groups of the candidate graph were not planned; run the barrier's "
                            f"`{PLAN_STEP}` step (and its `{GROUP_STEP}` tasks) before `{REPOINT_STEP}`")
    _missing("exact-part", [part_done_path(work, "exact-part", e).exists() for e in range(parts["exact-part"])])
    _missing(GROUP_STEP, [group_path(work, g, ".json").exists() for g in range(groups)])
    copies = read_partition([exact_copies_path(work, e) for e in range(parts["exact-part"])], p, n, COPIES_SCHEMA)
    drops = read_partition([group_path(work, g, ".drops.parquet") for g in range(groups)], p, n, DROPS_SCHEMA)
    rows = repoint_rows(copies, drops)
    write_rows(rows, repoint_path(work, p, ".parquet"), n)
    result = {"step": REPOINT_STEP, "part": p, "copies": copies.height, "drops": drops.height, "rows": rows.height,
              "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(done, result)
    return result


def run_near_step(work_dir: str, name: str, item: int | None) -> dict:
    """Run near-dedup step `name` (on group `item` for the per-group steps)."""
    if name == PLAN_STEP:
        return plan_near_groups(work_dir)
    if name == NUMBER_STEP:
        return number_near_groups(work_dir)
    return (run_near_group if name == GROUP_STEP else relabel_near_group)(work_dir, item)


def run_all_near_groups(work_dir: str) -> None:
    """The plan and every group task, numbering, relabelling and re-pointing task not done yet, one
    after the other (a barrier called on its own, e.g. by a test or a benchmark, runs them first)."""
    for g in range(near_group_count(work_dir)):
        run_near_group(work_dir, g)
    number_near_groups(work_dir)
    for g in range(near_group_count(work_dir)):
        relabel_near_group(work_dir, g)
    for p in range(planned_parts(Path(work_dir))[REPOINT_STEP]):
        run_near_repoint(work_dir, p)
