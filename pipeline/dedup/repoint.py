"""Exact copies re-pointed past a survivor that went as a near duplicate, by a partitioned join:
no task holds a row (nor a hash) per exact copy of the run, nor per near drop.

An exact copy X names its exact survivor S (`duplicate_of`, stage exact_dedup). When S is then
dropped as a near-duplicate text (no pHash) of T, X must name T instead: `duplicate_of` always
names a record that was kept. Both sides are cut by a hash of S's record id (`survivor_part`) into
the same partitions:

    exact side  each `exact-part` task writes its exact copies (`COPIES_SCHEMA`: `_i`, duplicate_of = S)
                to `barrier/exact/pNNNNN.copies.parquet`
    near side   each `near-group` task writes its text near drops (`DROPS_SCHEMA`: `_i`,
                record_id = S, duplicate_of = T) to `near/groups/gNNNNN.drops.parquet`

One file per producer, with one row group per partition (empty ones included), in partition
order (`write_partitioned`): partition p's task reads row group p of every producer file
(`read_partition`). So the files number the producers (at 1B documents about 500 exact tasks and
720 groups), not producers times partitions, and every byte is read by one partition's task
only. That task (the `near-repoint` step, `pipeline.run.near_groups`) joins its two sides on the
full id, so a hash collision only puts two ids in one partition, never matches them
(`repoint_rows`), and writes `near/repoint/pNNNNN.parquet` (`REPOINT_SCHEMA`: `_i` of each exact
copy to re-point, its new duplicate_of), sorted by `_i`, which the barrier's unit loop reads per
unit (`workdir.SortedParts`) and applies (`repoint`).

Usage::

    write_partitioned(copies, "duplicate_of", parts, exact_copies_path)   # in an exact-part task
    write_partitioned(text_drops(verdicts), "record_id", parts, drops_path)   # in a near-group task
    rows = repoint_rows(read_partition(copies_paths, p, parts, COPIES_SCHEMA),
                        read_partition(drops_paths, p, parts, DROPS_SCHEMA))  # in near-repoint task p
    records = repoint(records, unit_rows)                                 # per unit, at the barrier
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path
from pipeline.run.workdir import batch_rows

# An exact copy (`_i`) and the record it names as its exact survivor.
COPIES_SCHEMA = {"_i": pl.Int64, "duplicate_of": pl.String}
# A near-dropped text record (`_i`, its record id) and its near survivor.
DROPS_SCHEMA = {"_i": pl.Int64, "record_id": pl.String, "duplicate_of": pl.String}
# An exact copy to re-point (`_i`) and the record it names from then on.
REPOINT_SCHEMA = {"_i": pl.Int64, "duplicate_of": pl.String}


def repoint_path(work: Path, p: int, suffix: str) -> Path:
    """A file of the join's partition `p`: `.parquet` (its rows) or `.json` (its done-marker)."""
    return Path(work) / "near" / "repoint" / f"p{p:05d}{suffix}"


def survivor_part(column: str, parts: int) -> pl.Expr:
    """The partition of each row: a hash of the exact survivor's record id in `column`, modulo
    `parts` (the same polars hash both sides use; the join then compares the full ids)."""
    return (pl.col(column).hash() % parts).cast(pl.Int64)


def write_partitioned(frame: pl.DataFrame, column: str, parts: int, path: Path) -> None:
    """`frame`'s rows to `path`, one row group per partition of `column` (`survivor_part`), in
    partition order, every partition's row group written even when empty; within a partition the
    rows keep their order in `frame`."""
    part = frame.select(survivor_part(column, parts)).to_series().to_numpy()
    table = frame[np.argsort(part, kind="stable")].to_arrow()
    counts = np.bincount(part, minlength=parts)
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, table.schema) as writer:
            start = 0
            for count in counts.tolist():
                writer.write_table(table.slice(start, count), row_group_size=max(1, count))
                start += count


def read_partition(paths: list[Path], p: int, parts: int, schema: dict) -> pl.DataFrame:
    """The rows of partition `p` (`schema`'s columns) from every file `write_partitioned` wrote
    with `parts` partitions, file after file."""
    frames = [pl.DataFrame(schema=schema)]
    for path in paths:
        f = pq.ParquetFile(path)
        if f.num_row_groups != parts:
            raise PipelineError(f"near dedup: {path} has {f.num_row_groups} partition(s), the run's plan {parts}; it "
                                "was written under another partition plan: delete _work/barrier and _work/near and "
                                "run the barrier again")
        frames.append(pl.from_arrow(f.read_row_group(p, columns=list(schema))).cast(schema))
    return pl.concat(frames)


def text_drops(verdicts: pl.DataFrame) -> pl.DataFrame:
    """The near-dropped text records (no pHash) among a group's verdict rows (`_i`, record_id,
    duplicate_of, image): `DROPS_SCHEMA`."""
    return (verdicts.filter(pl.col("duplicate_of").is_not_null() & ~pl.col("image"))
            .select(list(DROPS_SCHEMA)).cast(DROPS_SCHEMA))


def repoint_rows(copies: pl.DataFrame, drops: pl.DataFrame) -> pl.DataFrame:
    """The exact copies (`COPIES_SCHEMA`) whose survivor is among the near drops (`DROPS_SCHEMA`),
    each with that drop's survivor: `REPOINT_SCHEMA`, by `_i`. Matched on the full record id; the
    first drop of an id in input order counts, as `NearDedupStage.amend` has it on the whole frame."""
    final = (drops.sort("_i").unique("record_id", keep="first", maintain_order=True)
             .select(pl.col("record_id").alias("_survivor"), pl.col("duplicate_of").alias("_final")))
    return (copies.filter(pl.col("duplicate_of").is_not_null())
            .join(final, left_on="duplicate_of", right_on="_survivor", how="inner")
            .select("_i", pl.col("_final").alias("duplicate_of")).sort("_i"))


def write_rows(rows: pl.DataFrame, path: Path, parts: int) -> None:
    """A partition's re-pointing rows (`REPOINT_SCHEMA`, by `_i`), in row groups of the batches the
    barrier reads the `parts` files in, side by side (`workdir.batch_rows`)."""
    with atomic_path(path) as tmp:
        rows.select(list(REPOINT_SCHEMA)).write_parquet(tmp, row_group_size=batch_rows(parts))


def repoint(records: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """`records` (a unit's frame) with the duplicate_of of `rows` (`REPOINT_SCHEMA`, `_i` the
    frame's own positions) written at their positions."""
    if rows.height == 0:
        return records
    return records.with_columns(records["duplicate_of"].scatter(rows["_i"].to_numpy(), rows["duplicate_of"]))
