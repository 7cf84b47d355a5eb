"""Per-unit stages after deduplication: run one stage on one task (a slice of a unit's kept
records, `pipeline.run.tasks`), then fold every task's verdicts into the decisions (with the one
precedence rule) and plan the shards again.

    unit_stage(work_dir, kind, task_id)   stages/<kind>/tNNNNN.verdicts.parquet (+ the stage's own
                                          artifacts) and a done-marker
    fold_unit_stage(work_dir, kind)       decisions/uNNNNN.parquet rewritten, shards.json re-planned
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.decisions import Category
from pipeline.core.registry import decision_table, run_stages
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import BatchContext
from pipeline.core.verdicts import apply_verdicts, run_batch
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.barrier import plan_output
from pipeline.run.rows import iter_unit_rows
from pipeline.run.tasks import plan_tasks, unit_tasks
from pipeline.run.workdir import read_done, unit_name

# Evidence columns the ledger has as typed columns; any other evidence is kept as compact JSON.
TYPED_EVIDENCE = ("pii_counts", "pii_action", "pii_language", "pii_coverage")


def stage_dir(work: Path, kind: str) -> Path:
    """The scratch folder of one per-unit stage."""
    return Path(work) / "stages" / kind


def _spec(plan: RunPlan, kind: str):
    for s in run_stages(plan.config):
        if s.kind == kind:
            return s
    raise PipelineError(f"the run has no stage '{kind}'")


def unit_stage(work_dir: str, kind: str, task_id: int) -> dict:
    """Run the per-unit stage `kind` on the kept records of one task; write its verdicts."""
    work = Path(work_dir)
    out = stage_dir(work, kind)
    task = plan_tasks(work_dir, kind)[task_id]
    done = out / f"{task.name}.json"
    if (cached := read_done(done)) is not None:
        return cached
    t0, c0 = time.perf_counter(), time.thread_time()
    plan = RunPlan.load(work)
    spec = _spec(plan, kind)
    table_d = decision_table(plan.config)
    unit = plan.units[task.unit_id]
    source = plan.source(unit.source)
    kept = (pl.read_parquet(work / "decisions" / f"{unit_name(task.unit_id)}.parquet",
                            columns=["row", "record_id", "decision"])
            .filter(pl.col("decision").is_in(list(table_d.names(Category.KEPT)))
                    & pl.col("row").is_between(task.first_row, task.last_row))
            .sort("row"))
    stage = stage_instance(spec, plan)
    out.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list] = {"row": [], "decision": [], "reason": []}
    evidence: dict[str, list] = {}
    n = 0
    stage.begin_task(task, work)
    try:
        keep_rows = kept["row"].to_numpy()
        rids_all = kept["record_id"].to_arrow()
        text_field = getattr(source, "text_field", None)
        for table, rows in iter_unit_rows(plan, task.unit_id, keep_rows):
            rids = rids_all.take(pa.array(np.searchsorted(keep_rows, rows))).to_pylist()
            for lo in range(0, table.num_rows, stage.batch_rows):
                part, part_rows = table.slice(lo, stage.batch_rows), rows[lo:lo + stage.batch_rows]
                ctx = BatchContext(source.name, text_field, part_rows, rids[lo:lo + stage.batch_rows], task.unit_id,
                                   work, task=task.task_id)
                verdicts = run_batch(spec, stage, part, ctx, table_d)
                cols["row"].extend(part_rows.tolist())
                cols["decision"].extend(verdicts.decision)
                cols["reason"].extend(verdicts.reason)
                for k, v in verdicts.evidence.items():
                    evidence.setdefault(k, [None] * n).extend(v)
                n += part.num_rows
                for k in evidence:
                    if len(evidence[k]) < n:
                        evidence[k].extend([None] * (n - len(evidence[k])))
    except BaseException:
        stage.abort_task(task, work)
        raise
    counters = stage.end_task(task, work)
    if n != kept.height:
        raise PipelineError(f"stage '{kind}', {task.name}: {kept.height} kept records planned but {n} re-read; "
                            "an input changed during the run; run again")
    data = {**cols, **{k: v for k, v in evidence.items() if k in TYPED_EVIDENCE}}
    other = {k: v for k, v in evidence.items() if k not in TYPED_EVIDENCE}
    if other:
        data["evidence"] = [json.dumps({k: v[i] for k, v in other.items() if v[i] is not None}, sort_keys=True,
                                       separators=(",", ":"), default=str) if any(v[i] is not None for v in other.values())
                            else None for i in range(n)]
    schema = pa.schema([("row", pa.int64()), ("decision", pa.string()), ("reason", pa.string()),
                        *[(k, pa.string()) for k in data if k not in ("row", "decision", "reason")]])
    with atomic_path(out / f"{task.name}.verdicts.parquet") as tmp:
        pq.write_table(pa.Table.from_pydict(data, schema), tmp)
    result = {"task": task.task_id, "unit_id": task.unit_id, "stage": kind, "scanned": n,
              "text_bytes": task.text_bytes, "decided": sum(1 for d in cols["decision"] if d is not None),
              **counters, "seconds": round(time.perf_counter() - t0, 3),
              "cpu_seconds": round(time.thread_time() - c0, 3)}
    atomic_write_json(done, result)
    return result


def task_results(work_dir: str, kind: str) -> list[dict]:
    """The done-markers of a per-unit stage's tasks, in task order."""
    out = stage_dir(Path(work_dir), kind)
    return [read_done(out / f"{t.name}.json") or {} for t in plan_tasks(work_dir, kind)]


def fold_unit_stage(work_dir: str, kind: str) -> dict:
    """Fold one per-unit stage's verdicts into the decisions and plan the output shards again."""
    work = Path(work_dir)
    done = stage_dir(work, kind) / "fold.json"
    if (cached := read_done(done)) is not None:
        return cached
    plan = RunPlan.load(work)
    table = decision_table(plan.config)
    tasks = unit_tasks(work_dir, kind)
    empty = pl.DataFrame(schema={"row": pl.Int64, "decision": pl.String, "reason": pl.String})
    frames = []
    for u in plan.units:
        dec = pl.read_parquet(work / "decisions" / f"{unit_name(u.unit_id)}.parquet").drop("shard")
        parts = [pl.read_parquet(stage_dir(work, kind) / f"{t.name}.verdicts.parquet") for t in tasks.get(u.unit_id, [])]
        ver = pl.concat(parts, how="diagonal_relaxed") if parts else empty
        frames.append((u.unit_id, dec, ver))
    records = pl.concat([d.with_columns(unit=pl.lit(uid, pl.Int64)) for uid, d, _ in frames], how="diagonal_relaxed")
    records = records.with_row_index("_i")
    # A verdict's position: its unit's first position plus its row's place among the unit's rows.
    positions = []
    offset = 0
    for uid, dec, ver in frames:
        pos = (dec.select("row").with_row_index("_p").join(ver, on="row", how="inner", maintain_order="right")
               .with_columns((pl.col("_p") + offset).cast(pl.UInt32).alias("_i")).drop("_p", "row"))
        positions.append(pos)
        offset += dec.height
    verdicts = pl.concat(positions, how="diagonal_relaxed") if positions else pl.DataFrame(
        schema={"_i": pl.UInt32, "decision": pl.String, "reason": pl.String})
    records = apply_verdicts(records, verdicts, kind, table)
    assignment, shards = plan_output(records, table.names(Category.KEPT), plan.config.output)
    records = records.join(assignment.drop("_i"), on=["unit", "row"], how="left").drop("_i")
    for u in plan.units:
        part = records.filter(pl.col("unit") == u.unit_id).drop("unit").sort("row")
        with atomic_path(work / "decisions" / f"{unit_name(u.unit_id)}.parquet") as tmp:
            part.write_parquet(tmp)
    atomic_write_json(work / "shards.json", shards)
    counts = records.group_by("decision").len().sort("decision")
    result = {"stage": kind, "shards": len(shards),
              "by_decision": dict(zip(counts["decision"].to_list(), counts["len"].to_list()))}
    atomic_write_json(done, result)
    return result
