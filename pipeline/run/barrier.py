"""The barrier: global decisions over the key rows of every unit, then the output plan.

    barrier(work_dir)   record-id uniqueness (the core's), the barrier stages in order (exact and
                        near dedup, ...), the output schema and the shard plan:
                        decisions/uNNNNN.parquet, output.schema, shards.json

The work of record-id uniqueness, exact dedup and LSH banding that grows with the corpus runs
before, partitioned into tasks (`pipeline.run.barrier_parts`); this step applies their outputs,
clusters the candidate pairs and runs the other barrier stages.
"""

from __future__ import annotations

import time

from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.core.decisions import IDENTITY_STAGE, KEPT, OUTPUT_STAGE, REJECTED, Category
from pipeline.core.registry import decision_table, stages_at
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import BarrierContext, Placement
from pipeline.core.verdicts import apply_verdicts
from pipeline.errors import RejectionsError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.pass1 import KEYS_SCHEMA, RECORD_ID
from pipeline.run.barrier_parts import index_moved_on, run_all_parts
from pipeline.run.workdir import part_files, read_done, read_schema, unit_name, write_schema
from pipeline.schema_merge import merge_schemas
from pipeline.sinks.shards import plan_shards


DECISION_COLUMNS = ["row", "record_id", "location", "content_sha256", "decision", "stage", "reason", "duplicate_of",
                    "cluster_id", "similarity", "text_bytes", "hash_list", "hash_entry", "hash_type", "hash_distance",
                    "shard"]


def _load_keys(work: Path, plan: RunPlan) -> pl.DataFrame:
    frames = []
    for u in plan.units:
        df = pl.read_parquet(work / "pass1" / f"{unit_name(u.unit_id)}.parquet")
        frames.append(df.with_columns(unit=pl.lit(u.unit_id, pl.Int64),
                                      priority=pl.lit(plan.source(u.source).priority, pl.Int64)))
    if not frames:
        return pl.DataFrame(schema={**pl.Schema(KEYS_SCHEMA), "unit": pl.Int64, "priority": pl.Int64})
    records = pl.concat(frames)
    order = records.select(pl.arg_sort_by(["unit", "row", "location"], maintain_order=True)).to_series()
    if not order.equals(pl.int_range(records.height, dtype=order.dtype, eager=True), check_names=False):
        records = records[order]  # pass 1 writes each unit in this order: a safeguard, not a step
    return records


def barrier(work_dir: str) -> dict:
    """Decide globally: reject repeated record ids, run the barrier stages, unify the output schema."""
    work = Path(work_dir)
    done = work / "barrier.json"
    plan = RunPlan.load(work)
    if (cached := read_done(done)) is not None and not index_moved_on(
            work, plan, (cached.get("corpus_index") or {}).get("runs")):
        return cached
    run_all_parts(work_dir)  # done already when the runner ran them as tasks
    cfg = plan.config
    table = decision_table(cfg)
    # `_i` is each record's position in input order (unit, row): verdicts are scattered into it
    # rather than joined back onto the whole (wide) frame.
    records = _load_keys(work, plan).with_row_index("_i").with_columns(
        duplicate_of=pl.lit(None, pl.String), cluster_id=pl.lit(None, pl.Int64), similarity=pl.lit(None, pl.Float64))

    # Record ids must be unique: later copies of an id (in unit, row order) are rejected; the
    # `ids-part` tasks found them, per partition of the ids. (A core rule, not a stage.)
    repeated = pl.concat([pl.read_parquet(p) for p in part_files(work, "ids-part")])
    records = apply_verdicts(records, repeated.select(
        "_i", pl.lit(REJECTED.name).alias("decision"), pl.lit("duplicate record_id").alias("reason")),
        IDENTITY_STAGE, table)

    index = None
    if cfg.state is not None:
        from pipeline.dedup.index import CorpusIndex

        index = CorpusIndex.open(cfg.state.dir, cfg)
    ctx = BarrierContext(plan, work, index)
    stage_stats: dict[str, dict | None] = {}
    stage_seconds: dict[str, list[float]] = {}
    for spec in stages_at(cfg, Placement.BARRIER):
        t0, c0 = time.perf_counter(), time.process_time()  # the barrier's stages use every core (polars)
        stage = stage_instance(spec, plan)
        verdicts, stats = stage.decide(records, ctx)
        records = stage.amend(apply_verdicts(records, verdicts, spec.kind, table))
        stage_stats[spec.kind] = stats
        stage_seconds[spec.kind] = [round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3)]

    records = records.with_columns(
        stage=pl.coalesce(pl.col("stage"), pl.lit(OUTPUT_STAGE)),
        decision=pl.coalesce(pl.col("decision"), pl.lit(KEPT.name)),
    )
    assignment, shards = plan_output(records, table.names(Category.KEPT), cfg.output)
    n = records.height
    records = records.with_columns(
        pl.repeat(None, n, dtype=pl.Int64, eager=True).alias("shard").scatter(assignment["_i"], assignment["shard"]))
    atomic_write_json(work / "shards.json", shards)
    (work / "decisions").mkdir(exist_ok=True)
    cols = DECISION_COLUMNS + (["evidence"] if records["evidence"].is_not_null().any() else [])
    units = records["unit"]
    for u in plan.units:
        first, last = units.search_sorted(u.unit_id, "left"), units.search_sorted(u.unit_id, "right")
        part = records.slice(first, last - first).select(cols)
        with atomic_path(work / "decisions" / f"{unit_name(u.unit_id)}.parquet") as tmp:
            part.write_parquet(tmp, compression="lz4", statistics=False)  # scratch: fast, not small

    out_schema = merge_schemas([read_schema(work / "pass1" / f"{unit_name(u.unit_id)}.schema") for u in plan.units])
    if RECORD_ID in out_schema.names:
        out_schema = out_schema.remove(out_schema.get_field_index(RECORD_ID))
    write_schema(work / "output.schema", out_schema.insert(0, pa.field(RECORD_ID, pa.string(), nullable=False)))

    is_rejected = pl.col("decision").is_in(list(table.names(Category.REJECTED)))
    n_rejected = int(records.select(is_rejected.sum()).item())
    result = {"records": records.height, "rejected": n_rejected,
              "exact_dropped": (stage_stats.get("exact_dedup") or {}).get("dropped", 0),
              "near_dedup": stage_stats.get("near_dedup"), "stages": stage_stats, "shards": len(shards),
              "corpus_index": index.summary() if index is not None else None, "stage_seconds": stage_seconds}
    if cfg.errors.fail_on_reject and n_rejected:
        report = work / "rejections.parquet"
        records.select("record_id", "location", "row", "stage", "reason", "decision").filter(is_rejected).drop(
            "decision").write_parquet(report)
        raise RejectionsError(
            f"{n_rejected} record(s) rejected and fail_on_reject is set; nothing was published. "
            f"Record ids and reasons: {report}"
        )
    atomic_write_json(done, result)
    return result


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
