"""Per-unit stages after deduplication: run one stage on one task (a slice of a unit's kept
records, `pipeline.run.tasks`), then fold every task's verdicts into the decisions (with the one
precedence rule) and plan the shards again.

    run_task(work_dir, step, task_id)     one task of a task step: `unit_stage`, or a round of a part
    unit_stage(work_dir, kind, task_id)   stages/<kind>/tNNNNN.verdicts.parquet (+ the stage's own
                                          artifacts) and a done-marker
    unit_stage_part(work_dir, kind, task_id, round)   one round of a split record's part:
                                          the stage's artifacts of the round, tNNNNN.roundN.json
    fold_unit_stage(work_dir, kind)       decisions/uNNNNN.parquet rewritten, shards.json re-planned

A split record (`pipeline.run.tasks`) is read once per part and round (each read parses its unit
up to the record), except that a worker process keeps the last record it read: the parts one
worker runs in a step read it once.
"""

from __future__ import annotations

import json
import threading
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
from pipeline.run.rows import iter_unit_rows
from pipeline.run.tasks import StageTask, plan_tasks, task_step, unit_tasks
from pipeline.run.workdir import read_done, unit_name
from pipeline.sinks.shards import ShardPlanner

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


def run_task(work_dir: str, step: str, task_id: int) -> dict:
    """Run the task step `step` on one task: a task of whole records, or a split record's first
    part at the join, runs `unit_stage`; a part in round N runs `unit_stage_part`."""
    kind, round_ = task_step(step)
    task = plan_tasks(work_dir, kind)[task_id]
    if task.is_part and round_ > 0:
        return unit_stage_part(work_dir, kind, task_id, round_)
    return unit_stage(work_dir, kind, task_id)


def _task_paths(work_dir: str, kind: str, task_id: int, suffix: str):
    """(work dir, the stage's directory, the task, its done marker `<task>.<suffix>`)."""
    work = Path(work_dir)
    out = stage_dir(work, kind)
    task = plan_tasks(work_dir, kind)[task_id]
    return work, out, task, out / f"{task.name}.{suffix}"


def unit_stage(work_dir: str, kind: str, task_id: int) -> dict:
    """Run the per-unit stage `kind` on the kept records of one task; write its verdicts."""
    work, out, task, done = _task_paths(work_dir, kind, task_id, "json")
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


_RECORD_LOCK = threading.Lock()
_RECORD: dict = {}   # (work dir, run id, unit, row) -> (table, record id): the last split record read here


def _split_record(plan: RunPlan, work: Path, task: StageTask, kept_names: list[str]) -> tuple[pa.Table, str]:
    """The one row of a split record and its id: read from its unit, or this process's copy of
    the last one read (the parts of a record that one worker runs read it once)."""
    key = (str(work), plan.run_id, task.unit_id, task.first_row)
    with _RECORD_LOCK:
        if key in _RECORD:
            return _RECORD[key]
    dec = (pl.read_parquet(work / "decisions" / f"{unit_name(task.unit_id)}.parquet",
                           columns=["row", "record_id", "decision"])
           .filter((pl.col("row") == task.first_row) & pl.col("decision").is_in(kept_names)))
    found = [(table, rows) for table, rows in iter_unit_rows(plan, task.unit_id, np.array([task.first_row]))]
    if dec.height != 1 or len(found) != 1 or found[0][0].num_rows != 1:
        raise PipelineError(f"{task.name}: the split record in row {task.first_row} of unit {task.unit_id} "
                            "could not be read again; an input changed during the run; run again")
    value = (found[0][0], dec["record_id"][0])
    with _RECORD_LOCK:
        _RECORD.clear()
        _RECORD[key] = value
    return value


def unit_stage_part(work_dir: str, kind: str, task_id: int, round_: int) -> dict:
    """Run round `round_` of the per-unit stage `kind` on one part of a split record."""
    work, out, task, done = _task_paths(work_dir, kind, task_id, f"round{round_}.json")
    if (cached := read_done(done)) is not None:
        return cached
    t0, c0 = time.perf_counter(), time.thread_time()
    plan = RunPlan.load(work)
    spec = _spec(plan, kind)
    source = plan.source(plan.units[task.unit_id].source)
    table, record_id = _split_record(plan, work, task, list(decision_table(plan.config).names(Category.KEPT)))
    stage = stage_instance(spec, plan)
    out.mkdir(parents=True, exist_ok=True)
    ctx = BatchContext(source.name, getattr(source, "text_field", None), np.array([task.first_row], dtype=np.int64),
                       [record_id], task.unit_id, work, task=task.task_id)
    counters = stage.run_part(table, ctx, task, round_, work)
    result = {"task": task.task_id, "unit_id": task.unit_id, "stage": kind, "round": round_, "part": task.part,
              "scanned": 0, "text_bytes": task.text_bytes if round_ == 1 else 0, **counters,
              "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.thread_time() - c0, 3)}
    atomic_write_json(done, result)
    return result


def task_results(work_dir: str, kind: str) -> list[dict]:
    """The done-markers of a per-unit stage's tasks, in task order (a part task's: one per round,
    then the first part's join)."""
    out = stage_dir(Path(work_dir), kind)
    spec = _spec(RunPlan.load(Path(work_dir)), kind)
    results = []
    for t in plan_tasks(work_dir, kind):
        if t.is_part:
            results += [read_done(out / f"{t.name}.round{r}.json") or {} for r in range(1, spec.cls.split_rounds + 1)]
            if t.part:
                continue
        results.append(read_done(out / f"{t.name}.json") or {})
    return results


def fold_unit_stage(work_dir: str, kind: str) -> dict:
    """Fold one per-unit stage's verdicts into the decisions and plan the output shards again, one
    unit at a time in input order (the shard plan carried from unit to unit): only one unit's
    decisions are in memory, whatever the size of the run."""
    work = Path(work_dir)
    done = stage_dir(work, kind) / "fold.json"
    with _RECORD_LOCK:
        _RECORD.clear()   # the split record a part kept, when the parts ran in this process
    if (cached := read_done(done)) is not None:
        return cached
    plan = RunPlan.load(work)
    table = decision_table(plan.config)
    kept = list(table.names(Category.KEPT))
    tasks = unit_tasks(work_dir, kind)
    files = {u.unit_id: [stage_dir(work, kind) / f"{t.name}.verdicts.parquet" for t in tasks.get(u.unit_id, [])]
             for u in plan.units}
    # Every unit's verdicts carry the columns of all of them (a unit without a task, or whose tasks
    # found no evidence of a kind, gets them empty), so every decisions file keeps one schema.
    columns = {"row": pl.Int64, "decision": pl.String, "reason": pl.String}
    for path in (p for paths in files.values() for p in paths):
        columns.update({c: pl.String for c in pq.read_schema(path).names if c not in columns})
    planner = ShardPlanner(plan.config.output.shard_max_rows, plan.config.output.shard_max_bytes)
    counts: dict[str, int] = {}
    for u in plan.units:
        path = work / "decisions" / f"{unit_name(u.unit_id)}.parquet"
        dec = pl.read_parquet(path).drop("shard").sort("row").with_row_index("_i")
        parts = [pl.read_parquet(p) for p in files[u.unit_id]]
        ver = pl.concat([pl.DataFrame(schema=columns), *parts], how="diagonal_relaxed").select(list(columns))
        at = (dec.select("row", "_i").join(ver, on="row", how="inner", maintain_order="right").drop("row"))
        dec = apply_verdicts(dec, at, kind, table).drop("_i")
        is_kept = dec["decision"].is_in(kept)
        shard = planner.plan(dec.filter(is_kept)["text_bytes"].fill_null(0).to_numpy(), u.unit_id)
        dec = dec.with_columns(pl.repeat(None, dec.height, dtype=pl.Int64, eager=True).alias("shard")
                               .scatter(np.flatnonzero(is_kept.to_numpy()), shard))
        with atomic_path(path) as tmp:
            dec.write_parquet(tmp)
        for decision, n in dec.group_by("decision").len().iter_rows():
            counts[decision] = counts.get(decision, 0) + n
    shards = planner.shards()
    atomic_write_json(work / "shards.json", shards)
    result = {"stage": kind, "shards": len(shards), "by_decision": dict(sorted(counts.items()))}
    atomic_write_json(done, result)
    return result
