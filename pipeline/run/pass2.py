"""Pass 2, per shard: read the shard's units again (or their spill), keep the rows the decisions
assigned to the shard, run the write-time stages (e.g. redaction) and write the shard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.core.registry import stages_at
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import Placement
from pipeline.errors import SourceError
from pipeline.fileio import atomic_write_json
from pipeline.plan import RunPlan
from pipeline.run.pass1 import RECORD_ID
from pipeline.run.rows import iter_unit_rows
from pipeline.run.workdir import read_done, read_schema, unit_name
from pipeline.schema_merge import cast_to_schema
from pipeline.sinks.shards import ShardWriter
from pipeline.sources import is_image_source


def pass2(work_dir: str, shard_id: int) -> dict:
    """Write one output shard: read its units again and keep the rows the barrier assigned to it."""
    work = Path(work_dir)
    done = work / "pass2" / f"s{shard_id:05d}.json"
    if (cached := read_done(done)) is not None:
        return cached
    t0, c0 = time.perf_counter(), time.thread_time()
    plan = RunPlan.load(work)
    cfg = plan.config
    meta = json.loads((work / "shards.json").read_text())[shard_id]
    schema = read_schema(work / "output.schema")
    name = f"part-{shard_id:05d}.parquet"
    writer = ShardWriter(work / "shards", schema, max_rows=meta["rows"] + 1, name=lambda _k: name,
                         row_group_rows=cfg.output.row_group_rows, compression=cfg.output.compression,
                         compression_level=cfg.output.compression_level,
                         plain_columns=frozenset(s.text_field for s in cfg.sources if not is_image_source(s)))
    hooks = [(s.kind, stage_instance(s, plan).open_shard(shard_id, work)) for s in write_order(cfg)]
    spent = {kind: [0.0, 0.0] for kind, _ in hooks}
    with writer:
        for unit_id in range(meta["first_unit"], meta["last_unit"] + 1):
            _write_unit_rows(plan, work, unit_id, shard_id, schema, writer, hooks, spent)
    written = sum(f.rows for f in writer.files)
    if written != meta["rows"]:
        raise SourceError(
            f"shard {shard_id}: {meta['rows']} records were decided but {written} re-read; "
            "an input changed during the run; run again"
        )
    (f,) = writer.files
    result = {"shard_id": shard_id, "shard": f.to_dict(), "kept": written, "seconds": round(time.perf_counter() - t0, 3),
              "cpu_seconds": round(time.thread_time() - c0, 3),
              "write_stages": {kind: hook.stats() for kind, hook in hooks},
              "stage_seconds": {k: [round(w, 3), round(c, 3)] for k, (w, c) in spent.items()}}
    atomic_write_json(done, result)
    return result


def write_order(cfg) -> list:
    """The run's write-time stages in the order pass 2 applies them: transforms that edit by
    positions in the re-read text first, those that re-derive their edits from the text last."""
    return sorted(stages_at(cfg, Placement.WRITE), key=lambda s: bool(getattr(s.cls, "edits_from_text", False)))


def _write_unit_rows(plan: RunPlan, work: Path, unit_id: int, shard_id: int, schema: pa.Schema, writer: ShardWriter,
                     hooks: list, spent: dict[str, list[float]]) -> None:
    """Append the rows of one unit that belong to `shard_id`, in row order, through the write-time stages."""
    unit = plan.units[unit_id]
    mine = (
        pl.read_parquet(work / "decisions" / f"{unit_name(unit_id)}.parquet", columns=["row", "record_id", "shard"])
        .filter(pl.col("shard") == shard_id)
        .sort("row")
    )
    if mine.height == 0:
        return
    keep_rows = mine["row"].to_numpy()
    keep_ids = mine["record_id"].to_arrow()
    transforms = [(kind, hook.unit(unit_id, keep_rows)) for kind, hook in hooks]
    source = plan.source(unit.source)
    for table, rows in iter_unit_rows(plan, unit_id, keep_rows):
        if is_image_source(source) and getattr(source, "keep", "bytes") == "path":
            table = table.drop_columns(["image"])
        # Rows are unique within a unit, so the kept rows locate their record ids directly.
        rids = keep_ids.take(pa.array(np.searchsorted(keep_rows, rows)))
        for kind, apply in transforms:
            t0, c0 = time.perf_counter(), time.thread_time()
            table = apply(table, rows, rids)
            spent[kind][0] += time.perf_counter() - t0
            spent[kind][1] += time.thread_time() - c0
        if RECORD_ID in table.column_names:
            table = table.drop_columns([RECORD_ID])
        writer.write(cast_to_schema(table.add_column(0, RECORD_ID, rids), schema))
