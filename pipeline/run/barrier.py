"""The barrier: global decisions over the key rows of every unit, then the output plan.

    barrier(work_dir)   record-id uniqueness (the core's), the barrier stages in order (exact and
                        near dedup, ...), the output schema and the shard plan:
                        decisions/uNNNNN.parquet, output.schema, shards.json

The work of record-id uniqueness, exact dedup and LSH banding that grows with the corpus runs
before, partitioned into tasks (`pipeline.run.barrier_parts`), and so do the verification and
clustering of the candidate pairs, a group of connected components per task
(`pipeline.run.near_groups`), and the re-pointing of exact copies whose survivor went as a near
duplicate (the `near-repoint` tasks: a join partitioned by the survivor's id,
`pipeline.dedup.repoint`); this step applies their outputs, merges the groups' verdicts into
clusters and runs the other barrier stages. It has two paths that decide the
same, byte for byte:

- unit by unit, when every barrier stage decides from the partition outputs (`from_parts`: exact
  and near dedup): each stage first makes what it needs globally (near dedup merges the group
  tasks' verdicts and clusters the image records), then the units are decided in input order, one
  unit's key rows in memory at a time: the `ids-part` verdicts and each stage's verdicts of that
  unit applied, the shard plan carried from unit to unit (`ShardPlanner`), its decisions written.
  Memory: a unit, a bit per record, the image records, a batch of each group's verdict file and
  of each `near-repoint` partition's file; never a row (nor a hash) per record, per exact copy or
  per near drop, nor an id per near-duplicate cluster (`near-number` numbered them, streaming).
- the whole frame (one key row per record of the run, about 1.3 KiB each), when another barrier
  stage needs every record at once (containment, repeated paragraphs, users' stages).
"""

from __future__ import annotations

import time

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.core.decisions import IDENTITY_STAGE, KEPT, OUTPUT_STAGE, REJECTED, Category
from pipeline.core.registry import decision_table, stages_at
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import BarrierContext, Placement
from pipeline.core.verdicts import apply_verdicts
from pipeline.dedup.near_groups import planned_groups
from pipeline.errors import RejectionsError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.pass1 import KEYS_SCHEMA, RECORD_ID
from pipeline.run.barrier_parts import index_moved_on, part_steps, planned_parts, run_all_parts
from pipeline.run.near_groups import run_all_near_groups
from pipeline.run.workdir import (SortedParts, allow_open_files, part_files, read_done, read_schema, unit_name,
                                  write_schema)
from pipeline.schema_merge import merge_schemas
from pipeline.sinks.shards import ShardPlanner, plan_shards


DECISION_COLUMNS = ["row", "record_id", "location", "content_sha256", "decision", "stage", "reason", "duplicate_of",
                    "cluster_id", "similarity", "text_bytes", "hash_list", "hash_entry", "hash_type", "hash_distance",
                    "shard"]
REJECTED_COLUMNS = ["record_id", "location", "row", "stage", "reason"]
_EVIDENCE = {"duplicate_of": pl.String, "cluster_id": pl.Int64, "similarity": pl.Float64}


def _unit_keys(work: Path, plan: RunPlan, unit) -> pl.DataFrame:
    return pl.read_parquet(work / "pass1" / f"{unit_name(unit.unit_id)}.parquet").with_columns(
        unit=pl.lit(unit.unit_id, pl.Int64), priority=pl.lit(plan.source(unit.source).priority, pl.Int64))


def _load_keys(work: Path, plan: RunPlan) -> pl.DataFrame:
    frames = [_unit_keys(work, plan, u) for u in plan.units]
    if not frames:
        return pl.DataFrame(schema={**pl.Schema(KEYS_SCHEMA), "unit": pl.Int64, "priority": pl.Int64})
    records = pl.concat(frames)
    order = records.select(pl.arg_sort_by(["unit", "row", "location"], maintain_order=True)).to_series()
    if not order.equals(pl.int_range(records.height, dtype=order.dtype, eager=True), check_names=False):
        records = records[order]  # pass 1 writes each unit in this order: a safeguard, not a step
    return records


def _start(records: pl.DataFrame) -> pl.DataFrame:
    """`_i` (each record's position: verdicts are scattered into it rather than joined back onto
    the wide frame) and the evidence columns the dedup stages fill."""
    return records.with_row_index("_i").with_columns([pl.lit(None, t).alias(c) for c, t in _EVIDENCE.items()])


def _finish(records: pl.DataFrame) -> pl.DataFrame:
    """A record no stage decided is kept."""
    return records.with_columns(stage=pl.coalesce(pl.col("stage"), pl.lit(OUTPUT_STAGE)),
                                decision=pl.coalesce(pl.col("decision"), pl.lit(KEPT.name)))


def _ids_verdicts(repeated: pl.DataFrame) -> pl.DataFrame:
    # Record ids must be unique: later copies of an id (in unit, row order) are rejected; the
    # `ids-part` tasks found them, per partition of the ids. (A core rule, not a stage.)
    return repeated.select("_i", pl.lit(REJECTED.name).alias("decision"), pl.lit("duplicate record_id").alias("reason"))


def _write_decisions(work: Path, unit_id: int, part: pl.DataFrame) -> None:
    with atomic_path(work / "decisions" / f"{unit_name(unit_id)}.parquet") as tmp:
        part.write_parquet(tmp, compression="lz4", statistics=False)  # scratch: fast, not small


def barrier(work_dir: str, whole_frame: bool | None = None) -> dict:
    """Decide globally: reject repeated record ids, run the barrier stages, unify the output schema.

    `whole_frame`: None picks the path by the stages (unit by unit when every barrier stage
    decides from the partition outputs); True or False forces one (both decide the same)."""
    work = Path(work_dir)
    done = work / "barrier.json"
    plan = RunPlan.load(work)
    if (cached := read_done(done)) is not None and not index_moved_on(
            work, plan, (cached.get("corpus_index") or {}).get("runs")):
        return cached
    run_all_parts(work_dir)  # done already when the runner ran them as tasks
    groups = 0
    if "lsh-band" in part_steps(plan.config):
        run_all_near_groups(work_dir)  # the same: the `near-groups` plan and its later steps' tasks
        groups = planned_groups(work)["groups"]
    parts = planned_parts(work)  # the unit loop reads these steps' files side by side
    allow_open_files(parts["ids-part"] + parts["exact-part"] + parts.get("near-repoint", 0) + groups)
    cfg = plan.config
    specs = stages_at(cfg, Placement.BARRIER)
    if whole_frame is None:
        whole_frame = not all(spec.cls.from_parts for spec in specs)
    index = None
    if cfg.state is not None:
        from pipeline.dedup.index import CorpusIndex

        index = CorpusIndex.open(cfg.state.dir, cfg)
    ctx = BarrierContext(plan, work, index)
    (work / "decisions").mkdir(exist_ok=True)
    decided = (_decide_whole_frame if whole_frame else _decide_unit_by_unit)(work, plan, ctx, specs)

    out_schema = merge_schemas([read_schema(work / "pass1" / f"{unit_name(u.unit_id)}.schema") for u in plan.units])
    if RECORD_ID in out_schema.names:
        out_schema = out_schema.remove(out_schema.get_field_index(RECORD_ID))
    write_schema(work / "output.schema", out_schema.insert(0, pa.field(RECORD_ID, pa.string(), nullable=False)))

    stage_stats = decided["stages"]
    n_rejected = decided["rejected"]
    result = {"records": decided["records"], "rejected": n_rejected,
              "exact_dropped": (stage_stats.get("exact_dedup") or {}).get("dropped", 0),
              "near_dedup": stage_stats.get("near_dedup"), "stages": stage_stats, "shards": decided["shards"],
              "corpus_index": index.summary() if index is not None else None,
              "stage_seconds": decided["stage_seconds"]}
    if cfg.errors.fail_on_reject and n_rejected:
        report = work / "rejections.parquet"
        decided["rejections"].write_parquet(report)
        raise RejectionsError(
            f"{n_rejected} record(s) rejected and fail_on_reject is set; nothing was published. "
            f"Record ids and reasons: {report}"
        )
    atomic_write_json(done, result)
    return result


def _timed(stage_seconds: dict, kind: str, t0: float, c0: float) -> None:
    prev = stage_seconds.get(kind, [0.0, 0.0])
    stage_seconds[kind] = [round(prev[0] + time.perf_counter() - t0, 3), round(prev[1] + time.process_time() - c0, 3)]


def _decide_whole_frame(work: Path, plan: RunPlan, ctx: BarrierContext, specs) -> dict:
    """Every stage's `decide` on the frame of every record, then the shard plan and the decisions."""
    table = decision_table(plan.config)
    records = _start(_load_keys(work, plan))
    repeated = pl.concat([pl.read_parquet(p) for p in part_files(work, "ids-part")])
    records = apply_verdicts(records, _ids_verdicts(repeated), IDENTITY_STAGE, table)
    stage_stats: dict[str, dict | None] = {}
    stage_seconds: dict[str, list[float]] = {}
    for spec in specs:
        t0, c0 = time.perf_counter(), time.process_time()  # the barrier's stages use every core (polars)
        stage = stage_instance(spec, plan)
        verdicts, stats = stage.decide(records, ctx)
        records = stage.amend(apply_verdicts(records, verdicts, spec.kind, table))
        stage_stats[spec.kind] = stats
        _timed(stage_seconds, spec.kind, t0, c0)

    records = _finish(records)
    assignment, shards = plan_output(records, table.names(Category.KEPT), plan.config.output)
    n = records.height
    records = records.with_columns(
        pl.repeat(None, n, dtype=pl.Int64, eager=True).alias("shard").scatter(assignment["_i"], assignment["shard"]))
    atomic_write_json(work / "shards.json", shards)
    cols = DECISION_COLUMNS + (["evidence"] if records["evidence"].is_not_null().any() else [])
    units = records["unit"]
    for u in plan.units:
        first, last = units.search_sorted(u.unit_id, "left"), units.search_sorted(u.unit_id, "right")
        _write_decisions(work, u.unit_id, records.slice(first, last - first).select(cols))
    is_rejected = pl.col("decision").is_in(list(table.names(Category.REJECTED)))
    rejected = records.filter(is_rejected)
    return {"records": n, "rejected": rejected.height, "rejections": rejected.select(REJECTED_COLUMNS),
            "stages": stage_stats, "stage_seconds": stage_seconds, "shards": len(shards)}


def _decide_unit_by_unit(work: Path, plan: RunPlan, ctx: BarrierContext, specs) -> dict:
    """Each stage's `decide_from_parts`, then per unit in input order: its key rows, the verdicts
    of its positions applied, its shards planned (carried over from the unit before), its decisions
    written. Only a unit's rows and what the stages hold (near dedup: the image records, a row group
    of each group's verdict files) are in memory."""
    table = decision_table(plan.config)
    kept = list(table.names(Category.KEPT))
    is_rejected = pl.col("decision").is_in(list(table.names(Category.REJECTED)))
    stage_stats: dict[str, dict | None] = {}
    stage_seconds: dict[str, list[float]] = {}
    served = []
    for spec in specs:
        t0, c0 = time.perf_counter(), time.process_time()
        stage = stage_instance(spec, plan)
        verdicts, stage_stats[spec.kind] = stage.decide_from_parts(ctx)
        served.append((spec.kind, verdicts))
        _timed(stage_seconds, spec.kind, t0, c0)
    ids = SortedParts(part_files(work, "ids-part"), {"_i": pl.Int64})
    # The evidence column is written when any record of the run has evidence (a user stage's, pass 1).
    paths = [str(work / "pass1" / f"{unit_name(u.unit_id)}.parquet") for u in plan.units]
    with_evidence = bool(paths) and bool(pl.scan_parquet(paths).select(pl.col("evidence").is_not_null().any())
                                         .collect(engine="streaming").item())
    cols = DECISION_COLUMNS + (["evidence"] if with_evidence else [])
    shards = ShardPlanner(plan.config.output.shard_max_rows, plan.config.output.shard_max_bytes)
    counts = planned_parts(work)["unit_records"]
    n, n_rejected, rejected, first = 0, 0, [], 0
    report = plan.config.errors.fail_on_reject
    for u, count in zip(plan.units, counts):
        last = first + count
        records = _start(_unit_keys(work, plan, u))
        records = apply_verdicts(records, _local(_ids_verdicts(ids.take(first, last)), first), IDENTITY_STAGE, table)
        for kind, verdicts in served:
            t0, c0 = time.perf_counter(), time.process_time()
            records = verdicts.amend(apply_verdicts(records, _local(verdicts.verdicts(first, last), first), kind, table),
                                     first)
            _timed(stage_seconds, kind, t0, c0)
        records = _finish(records)
        is_kept = records["decision"].is_in(kept)
        shard = shards.plan(records.filter(is_kept)["text_bytes"].to_numpy(), u.unit_id)
        records = records.with_columns(pl.repeat(None, records.height, dtype=pl.Int64, eager=True).alias("shard")
                                       .scatter(np.flatnonzero(is_kept.to_numpy()), shard))
        _write_decisions(work, u.unit_id, records.select(cols))
        out = records.filter(is_rejected)
        n_rejected += out.height
        if report:  # the rows only when they will be reported
            rejected.append(out.select(REJECTED_COLUMNS))
        n, first = n + records.height, last
    atomic_write_json(work / "shards.json", shards.shards())
    schema = pl.Schema(KEYS_SCHEMA)
    rejections = pl.concat([pl.DataFrame(schema={c: schema[c] for c in REJECTED_COLUMNS}), *rejected])
    return {"records": n, "rejected": n_rejected, "rejections": rejections, "stages": stage_stats,
            "stage_seconds": stage_seconds, "shards": len(shards.shards())}


def _local(verdicts: pl.DataFrame, first: int) -> pl.DataFrame:
    """Verdicts of one unit with `_i` made relative to the unit's first position."""
    return verdicts.with_columns(pl.col("_i") - first)


def plan_output(records: pl.DataFrame, kept: tuple[str, ...], output) -> tuple[pl.DataFrame, list[dict]]:
    """Assign every kept record (in unit, row order) to a shard; describe each shard.

    `records` has `_i`, unit, row, decision, text_bytes; `kept` names the decisions of category
    kept; `output` is the run's OutputConfig."""
    rows = (records.filter(pl.col("decision").is_in(list(kept))).select("_i", "unit", "row", "text_bytes")
            .sort("unit", "row", maintain_order=True))
    shard = plan_shards(rows["text_bytes"].to_numpy(), output.shard_max_rows, output.shard_max_bytes)
    rows = rows.with_columns(pl.Series("shard", shard, dtype=pl.Int64))
    meta = (
        rows.group_by("shard", maintain_order=True)
        .agg(pl.col("unit").min().alias("first_unit"), pl.col("unit").max().alias("last_unit"), pl.len().alias("rows"))
        .sort("shard")
    )
    return rows.select("_i", "unit", "row", "shard"), meta.to_dicts()
