"""The near-duplicate groups' verdicts, written by each group task in the orders later steps read
them, numbered and merged without any task holding a row or an id per cluster of the run.

A group task (`write_group`) numbers its clusters in the global order restricted to the group
(published survivors by record id, then this run's by survivor doc: `pair_docs.cluster_ids`), so
its local cluster numbers rise with the global ones. It writes:

    gNNNNN.stars.parquet     a row per cluster, in local order: survivor doc, external, the
                             survivor's record id (published survivors only), size
    gNNNNN.clusters.parquet  its rows of near-duplicate resolution (`ROWS_SCHEMA`: a row per drop
                             and per head of this run's), in local cluster order, local ids
    gNNNNN.verdicts.parquet  the same rows by `_i`, with the record's own id and image flag

and, when the run has exact dedup too (`write_drops`, from the verdicts file):

    gNNNNN.drops.parquet     its near-dropped text records, in partitions of their record id: the
                             near side of the re-pointing of exact copies (`pipeline.dedup.repoint`),
                             joined by the `near-repoint` tasks, never read by the global step

Then `number_clusters` (one step, streaming) gives every cluster its global id: a k-way merge of
the stars files, a row group of each at a time, writes each group's ids (`gNNNNN.ids`, an int64
per cluster in local order). `relabel_group` (a task per group, on that group's rows only)
rewrites the group's clusters and verdicts files under the global ids (`.global.parquet`).

The barrier's global step (`MergedGroups`) reads only those: it writes `near/decisions.parquet`
in cluster order (a k-way merge of the clusters files: `SortedParts` keyed by cluster id) and
serves each unit's rows from the verdicts files (`SortedParts` by `_i`), a row group of each file
at a time.

Usage::

    counted = write_group(stars, drops, files)                 # in each group task
    write_drops(files, drops_path, parts)                      # the same task, with exact dedup on
    numbered = number_clusters([f.stars for f in files], ids)  # once, after every group task
    relabel_group(files[g], ids[g], relabeled[g])              # in a task per group
    merged = MergedGroups(relabeled, numbered)                 # in the global step
    merged.write_decisions(work / "near" / "decisions.parquet")
    rows = merged.rows(first, last)                            # per unit, in input order
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.dedup.pair_docs import cluster_ids, decision_rows
from pipeline.dedup.repoint import text_drops, write_partitioned
from pipeline.fileio import atomic_path
from pipeline.run.workdir import SortedParts, batch_rows

# The rows near-duplicate resolution returns, as the near stage and `near/decisions.parquet` have them.
ROWS_SCHEMA = pl.Schema({"unit": pl.Int64, "row": pl.Int64, "duplicate_of": pl.String, "cluster_id": pl.Int64,
                         "similarity": pl.Float64, "via": pl.String, "path": pl.String})
STARS_FILE_SCHEMA = {"survivor": pl.Int64, "external": pl.Boolean, "record_id": pl.String, "size": pl.Int64}
VERDICTS_FILE_SCHEMA = {"_i": pl.Int64, "cluster_id": pl.Int64, "duplicate_of": pl.String, "similarity": pl.Float64,
                        "via": pl.String, "path": pl.String, "record_id": pl.String, "image": pl.Boolean}
# The rows the near stage serves per unit (`MergedGroups.rows`).
SERVED = ("_i", "duplicate_of", "cluster_id", "similarity", "via", "path")
# Row groups of the group files, at most: the numbering and the global step read every group's file
# of one kind side by side, a batch of each, so with many groups the relabelled files' row groups
# and the batches are smaller (`file_rows`: `workdir.batch_rows`; at 1B documents about 720 groups
# of 1,456 rows), and about 720 files are open at a time (the open-file limit must allow it).
GROUP_FILE_ROWS = 8_192
# Row groups of `near/decisions.parquet`: fixed, so its bytes do not depend on the grouping.
DECISIONS_FILE_ROWS = 65_536
# Clusters merged into `near/decisions.parquet` per step of the k-way merge.
MERGE_CLUSTERS = 65_536


@dataclass(frozen=True)
class GroupFiles:
    """The verdict files of one group (`write_group`)."""

    stars: Path
    clusters: Path
    verdicts: Path


def file_rows(groups: int) -> int:
    """The rows of each group file's batch (and of a relabelled file's row groups) when the files
    of `groups` groups are read side by side."""
    return min(GROUP_FILE_ROWS, batch_rows(groups))


def _write(frame: pl.DataFrame, path: Path, rows: int | None = None) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, row_group_size=rows or GROUP_FILE_ROWS)


def write_group(stars: pl.DataFrame, drops: pl.DataFrame, files: GroupFiles) -> dict:
    """Write a group's stars and drops (`pair_docs.STAR_SCHEMA`, `DROP_SCHEMA`) as its three
    verdict files; returns the group's cluster counts (`decision_rows`' counts)."""
    rows, counted = decision_rows([stars], [drops], ROWS_SCHEMA)
    order = np.argsort(cluster_ids(stars))  # the stars in local cluster order
    sizes = np.bincount(drops["star"].to_numpy(), minlength=stars.height) + 1
    _write(stars.select("survivor", "external",
                        pl.when(pl.col("external")).then(pl.col("record_id")).alias("record_id"),
                        pl.Series("size", sizes, pl.Int64))[order], files.stars)
    _write(rows.select(list(ROWS_SCHEMA)), files.clusters)
    _write(rows.select(list(VERDICTS_FILE_SCHEMA)).sort("_i"), files.verdicts)
    return counted


def write_drops(files: GroupFiles, path: Path, parts: int) -> None:
    """A group's near-dropped text records (`repoint.DROPS_SCHEMA`), read back from its verdicts
    file, to `path` in `parts` partitions of their record id (`repoint.write_partitioned`): the
    near side of the re-pointing of exact copies (`pipeline.dedup.repoint`)."""
    verdicts = pl.read_parquet(files.verdicts, columns=["_i", "record_id", "duplicate_of", "image"])
    write_partitioned(text_drops(verdicts), "record_id", parts, path)


def number_clusters(stars: list[Path], ids: list[Path]) -> dict:
    """Give every group's clusters their global ids and write them: `ids[g]` holds group g's, an
    int64 per cluster (raw, little-endian) in its local order. The global order is the one
    `pair_docs.cluster_ids` gives over every group at once: the clusters headed by published
    records (by record id), then this run's (by survivor doc). Each group's stars are in that
    order already, so a k-way merge of the stars files ranks them (`_merge_ranks`), a row group of
    each file at a time: memory does not grow with the clusters of the run.

    Returns `clusters` (how many) and `first_free`: the first id after the last cluster that has a
    row (this run's heads; a published head only with drops), where image clusters are numbered."""
    with ExitStack() as stack:
        outs = [stack.enter_context(atomic_path(p)) for p in ids]
        sinks = [stack.enter_context(open(p, "wb")) for p in outs]

        def emit(g: int, values: np.ndarray) -> None:
            values.astype("<i8").tofile(sinks[g])

        rows = file_rows(len(stars))
        n_ext, free_ext = _merge_ranks([_stars_keys(p, True, rows) for p in stars], 0, emit)
        clusters, free_own = _merge_ranks([_stars_keys(p, False, rows) for p in stars], n_ext, emit)
        for f in sinks:
            f.close()
    return {"clusters": clusters, "first_free": max(free_ext, free_own)}


def _stars_keys(path: Path, external: bool, rows: int) -> Iterator[pl.DataFrame]:
    """A stars file's published (`external`) or own clusters, `rows` at a time: `key` (the record
    id, or the survivor doc) and `has_row` (whether the cluster has a row of its own)."""
    f = pq.ParquetFile(path, pre_buffer=False)
    try:
        for batch in f.iter_batches(batch_size=rows, columns=list(STARS_FILE_SCHEMA)):
            part = pl.from_arrow(batch).cast(STARS_FILE_SCHEMA).filter(pl.col("external") == external)
            if part.height:
                key = pl.col("record_id") if external else pl.col("survivor")
                yield part.select(key.alias("key"), (~pl.col("external") | (pl.col("size") > 1)).alias("has_row"))
    finally:
        f.close()


def _merge_ranks(streams: list[Iterator[pl.DataFrame]], start: int, emit: Callable[[int, np.ndarray], None]) -> tuple[int, int]:
    """Rank the keys of every stream (each sorted, no key in two streams) in one order, from
    `start`: `emit(g, ids)` gets stream g's ids in its own order. Each round takes, from every
    stream's held chunk, the keys up to the smallest of the chunks' last keys (no unread key can
    be below it), ranks them together and reads a chunk for the streams left empty. Returns the
    next free id and 1 + the largest id of a key with a row (0 when none)."""
    held = [pl.DataFrame() for _ in streams]
    reading = [True] * len(streams)
    nxt, free = start, 0
    while True:
        for g, stream in enumerate(streams):
            while reading[g] and held[g].height == 0:
                chunk = next(stream, None)
                if chunk is None:
                    reading[g] = False
                else:
                    held[g] = chunk
        live = [g for g, h in enumerate(held) if h.height]
        if not live:
            return nxt, free
        bound = min(held[g]["key"][-1] for g in live)
        taken = []
        for g in live:
            cut = held[g]["key"].search_sorted(bound, "right")
            taken.append((g, held[g].head(cut)))
            held[g] = held[g].slice(cut)
        keys = pl.concat([t for _, t in taken])
        ids = np.empty(keys.height, np.int64)
        ids[keys["key"].arg_sort().to_numpy()] = np.arange(nxt, nxt + keys.height, dtype=np.int64)
        with_row = ids[keys["has_row"].to_numpy()]
        if with_row.size:
            free = max(free, int(with_row.max()) + 1)
        at = 0
        for g, t in taken:
            if t.height:
                emit(g, ids[at:at + t.height])
            at += t.height
        nxt += keys.height


def relabel_group(files: GroupFiles, ids: Path, out: GroupFiles, groups: int = 1) -> dict:
    """Group `files`' clusters and verdicts files under the global cluster ids `ids` (written by
    `number_clusters`), as `out`'s, in row groups for reading `groups` groups' files side by side;
    a group's rows only (its local ids index `ids`)."""
    glob = np.fromfile(ids, dtype="<i8")
    rows = 0
    for src, dst in ((files.clusters, out.clusters), (files.verdicts, out.verdicts)):
        frame = pl.read_parquet(src)
        frame = frame.with_columns(pl.Series("cluster_id", glob[frame["cluster_id"].to_numpy()], pl.Int64))
        _write(frame, dst, file_rows(groups))
        rows = frame.height
    return {"clusters": len(glob), "rows": rows}


class MergedGroups:
    """Every group's verdicts under global cluster ids (`relabel_group`'s files), read a row group
    per file at a time; `numbered` is `number_clusters`' result. Holds nothing per cluster."""

    def __init__(self, files: list[GroupFiles], numbered: dict) -> None:
        self._files = files
        self.clusters = int(numbered["clusters"])
        # The image clusters are numbered after the last text cluster that has a row.
        self.first_free = int(numbered["first_free"])
        self._served: SortedParts | None = None  # opened at the first unit, after `write_decisions` closed its files

    def rows(self, first: int, last: int) -> pl.DataFrame:
        """The rows (`SERVED`) of records `first <= _i < last`, by `_i`; asked for in ascending
        ranges, each once."""
        if self._served is None:
            self._served = SortedParts([f.verdicts for f in self._files], {c: VERDICTS_FILE_SCHEMA[c] for c in SERVED},
                                       file_rows(len(self._files)))
        return self._served.take(first, last).sort("_i").select(SERVED)

    def write_decisions(self, path: Path) -> None:
        """Every group's rows in cluster id order (a cluster's head, then its drops), `ROWS_SCHEMA`,
        to `path`: a k-way merge of the clusters files, MERGE_CLUSTERS clusters at a time."""
        parts = SortedParts([f.clusters for f in self._files], dict(ROWS_SCHEMA), file_rows(len(self._files)),
                            key="cluster_id")
        held = pl.DataFrame(schema=ROWS_SCHEMA)
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, held.to_arrow().schema) as writer:
                for a in range(0, self.clusters, MERGE_CLUSTERS):
                    # stable: a cluster's rows come from one file, in their order there
                    held = pl.concat([held, parts.take(a, a + MERGE_CLUSTERS).sort("cluster_id", maintain_order=True)])
                    while held.height >= DECISIONS_FILE_ROWS:
                        writer.write_table(held.head(DECISIONS_FILE_ROWS).to_arrow())
                        held = held.slice(DECISIONS_FILE_ROWS)
                if held.height or self.clusters == 0:
                    writer.write_table(held.to_arrow())
