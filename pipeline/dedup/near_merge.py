"""The near-duplicate groups' verdicts, written by each group task in the orders the barrier's
global step reads them, and merged there without holding a row per drop.

A group task (`write_group`) numbers its clusters in the global order restricted to the group
(published survivors by record id, then this run's by survivor doc: `pair_docs.cluster_ids`), so
its local cluster numbers rise with the global ones. It writes:

    gNNNNN.stars.parquet     a row per cluster, in local order: survivor doc, external, the
                             survivor's record id (published survivors only), size
    gNNNNN.clusters.parquet  its rows of near-duplicate resolution (`ROWS_SCHEMA`: a row per drop
                             and per head of this run's), in local cluster order, local ids
    gNNNNN.verdicts.parquet  the same rows by `_i`, with the record's own id and image flag

The global step (`MergedGroups`) reads the stars only, to number the clusters: a global id per
cluster (int arrays; the published survivors' record ids only while they are ranked). It then
writes `near/decisions.parquet` in cluster order (a k-way merge of the clusters files:
`SortedParts` keyed by cluster id) and serves each unit's rows from the verdicts files
(`SortedParts` by `_i`), a row group of each file at a time, mapping local to global ids as it
reads.

Usage::

    counted = write_group(stars, drops, files)     # in a group task
    merged = MergedGroups([files_0, files_1, ...])   # in the global step
    merged.write_decisions(work / "near" / "decisions.parquet")
    rows = merged.rows(first, last)                  # per unit, in input order
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.dedup.pair_docs import cluster_ids, decision_rows
from pipeline.fileio import atomic_path
from pipeline.run.workdir import SortedParts

# The rows near-duplicate resolution returns, as the near stage and `near/decisions.parquet` have them.
ROWS_SCHEMA = pl.Schema({"unit": pl.Int64, "row": pl.Int64, "duplicate_of": pl.String, "cluster_id": pl.Int64,
                         "similarity": pl.Float64, "via": pl.String, "path": pl.String})
STARS_FILE_SCHEMA = {"survivor": pl.Int64, "external": pl.Boolean, "record_id": pl.String, "size": pl.Int64}
VERDICTS_FILE_SCHEMA = {"_i": pl.Int64, "cluster_id": pl.Int64, "duplicate_of": pl.String, "similarity": pl.Float64,
                        "via": pl.String, "path": pl.String, "record_id": pl.String, "image": pl.Boolean}
# The rows the near stage serves per unit (`MergedGroups.rows`).
SERVED = ("_i", "duplicate_of", "cluster_id", "similarity", "via", "path")
# Row groups of the group files: the global step holds one of each group's files at a time (at 1B
# documents about 720 groups: about 720 x 8,192 rows of about 0.1 KiB, 0.6 GiB at most), and has
# each group's file of one kind open at a time (about 720 files: the open-file limit must allow it).
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


def _write(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, row_group_size=GROUP_FILE_ROWS)


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


def _ranks(order: np.ndarray) -> np.ndarray:
    """The rank of each item, from the order that sorts them."""
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank


def _among(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Whether each value is in the sorted `table` (a binary search each: the table is not sorted again)."""
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


class MergedGroups:
    """Every group's verdicts under global cluster ids, read a row group per file at a time.

    Holds a global id per cluster (int64) and, while numbering, the survivor doc of each of this
    run's clusters and the record id of each published survivor."""

    def __init__(self, files: list[GroupFiles]) -> None:
        self._files = files
        ext_ids, own_docs, has_row = [], [], []
        for f in files:
            s = pl.read_parquet(f.stars, columns=list(STARS_FILE_SCHEMA))
            ext = s["external"].to_numpy()
            ext_ids.append(s["record_id"].filter(s["external"]))
            own_docs.append(s["survivor"].to_numpy()[~ext])
            has_row.append(~ext | (s["size"].to_numpy() > 1))  # a published head has no row of its own
        n_ext = sum(len(x) for x in ext_ids)
        ext_rank = _ranks(pl.concat([pl.Series("record_id", [], pl.String), *ext_ids]).arg_sort().to_numpy())
        own_rank = _ranks(np.argsort(np.concatenate([np.zeros(0, np.int64), *own_docs]), kind="stable")) + n_ext
        self._global: list[np.ndarray] = []
        e = o = 0
        for ids, docs in zip(ext_ids, own_docs):
            self._global.append(np.concatenate([ext_rank[e:e + len(ids)], own_rank[o:o + len(docs)]]))
            e, o = e + len(ids), o + len(docs)
        del ext_ids, own_docs, ext_rank, own_rank
        self.clusters = e + o
        # The image clusters are numbered after the last text cluster that has a row.
        with_rows = [g[h] for g, h in zip(self._global, has_row) if h.any()]
        self.first_free = int(max(g.max() for g in with_rows)) + 1 if with_rows else 0
        self._served: SortedParts | None = None  # opened at the first unit, after `write_decisions` closed its files

    def _globalize(self, k: int, frame: pl.DataFrame) -> pl.DataFrame:
        """File `k`'s rows with their global cluster ids."""
        if frame.height == 0:
            return frame
        return frame.with_columns(pl.Series("cluster_id", self._global[k][frame["cluster_id"].to_numpy()], pl.Int64))

    def rows(self, first: int, last: int) -> pl.DataFrame:
        """The rows (`SERVED`) of records `first <= _i < last`, by `_i`; asked for in ascending
        ranges, each once."""
        if self._served is None:
            self._served = SortedParts([f.verdicts for f in self._files], {c: VERDICTS_FILE_SCHEMA[c] for c in SERVED},
                                       GROUP_FILE_ROWS, prepare=self._globalize)
        return self._served.take(first, last).sort("_i").select(SERVED)

    def write_decisions(self, path: Path) -> None:
        """Every group's rows in cluster id order (a cluster's head, then its drops), `ROWS_SCHEMA`,
        to `path`: a k-way merge of the clusters files, MERGE_CLUSTERS clusters at a time."""
        parts = SortedParts([f.clusters for f in self._files], dict(ROWS_SCHEMA), GROUP_FILE_ROWS, key="cluster_id",
                            prepare=self._globalize)
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

    def moved(self, exact_files: list[Path]) -> pl.DataFrame:
        """The near-dropped text records that an exact copy names as its survivor (`duplicate_of`
        of the `exact-part` files): `_i`, record_id, duplicate_of (their near survivor), by `_i`.
        Only those rows are held: the exact survivors are matched by a 64-bit hash of their id
        (8 bytes per exact copy, while the verdict files are read); a hash collision only adds a
        row that no exact copy names."""
        keys = [np.zeros(0, np.uint64)]
        for p in exact_files:
            for batch in pq.ParquetFile(p).iter_batches(batch_size=65_536, columns=["duplicate_of"]):
                keys.append(pl.from_arrow(batch)["duplicate_of"].hash().to_numpy())
        named = np.sort(np.concatenate(keys))
        del keys
        named = named[np.concatenate([[True], named[1:] != named[:-1]])] if named.size else named
        cols = {"_i": pl.Int64, "record_id": pl.String, "duplicate_of": pl.String, "image": pl.Boolean}
        found = [pl.DataFrame(schema=cols)]
        for f in self._files if named.size else []:
            for batch in pq.ParquetFile(f.verdicts).iter_batches(batch_size=GROUP_FILE_ROWS, columns=list(cols)):
                rows = pl.from_arrow(batch).cast(cols).filter(pl.col("duplicate_of").is_not_null() & ~pl.col("image"))
                found.append(rows.filter(pl.Series(_among(rows["record_id"].hash().to_numpy(), named))))
        return pl.concat(found).sort("_i").select("_i", "record_id", "duplicate_of")
