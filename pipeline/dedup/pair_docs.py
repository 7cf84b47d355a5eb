"""The records of near-duplicate resolution ("docs": the records in a candidate pair or in the
short-document pass, numbered in (unit, row) order), held as int arrays rather than a row of
strings each, and the rows resolution returns, assembled from every group's stars.

Usage::

    index = doc_index(codes, live, work, external, index_runs)   # where each doc's attributes are
    docs = index.frame(group_docs, live)                         # one group's attribute rows
    rows, counts = decision_rows(group_results, index, live, schema)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dedup.candidates import code_positions, decode_doc, doc_code
from pipeline.dedup.lsh import Star, log2_histogram
from pipeline.dedup.short_pass import ShortPass
from pipeline.errors import PipelineError

PATH_WORDS = "words"    # the drop's edge was verified by the word pass (MinHash over word n-grams)
PATH_SHORT = "short"    # by the short-document pass only (exact content character 5-gram Jaccard)


EXTERNAL_PRIORITY = 2**62  # published records always survive: they are already in someone's training data


def signed_rows(path: str | Path, rows: np.ndarray) -> pl.DataFrame:
    """row, shingles, sig_idx (position in the unit's signature file) of `rows` of one unit's band-key file."""
    meta = pl.read_parquet(path, columns=["row", "shingles"]).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("sig_idx"))
    return meta.join(pl.DataFrame({"row": rows}, schema={"row": pl.Int64}), on="row", how="semi")


@dataclass(frozen=True)
class DocIndex:
    """Where each doc's attributes are (doc: index into the sorted doc codes), as int arrays: no
    row of strings per record. Published docs (the corpus index's) come first in doc order."""

    unit: np.ndarray
    row: np.ndarray
    sig_idx: np.ndarray    # row in the unit's signature file
    live_pos: np.ndarray   # row of `live` (-1 for a published doc)
    external_ids: pl.Series  # record ids of the published docs (doc < len(external_ids))

    @property
    def external(self) -> np.ndarray:
        return self.unit < 0

    def key_frame(self) -> pl.DataFrame:
        """unit, row, doc of every doc."""
        return pl.DataFrame({"unit": self.unit, "row": self.row, "doc": np.arange(len(self.unit), dtype=np.int64)},
                            schema={"unit": pl.Int64, "row": pl.Int64, "doc": pl.Int64})

    def record_ids(self, docs: np.ndarray, live: pl.DataFrame) -> pl.Series:
        """Record id of each doc of `docs`."""
        n_ext = len(self.external_ids)
        ext = docs < n_ext
        own = live["record_id"].gather(self.live_pos[docs[~ext]])
        if not ext.any():
            return own
        out = pl.repeat(None, len(docs), dtype=pl.String, eager=True).rename("record_id")
        return out.scatter(np.flatnonzero(~ext), own).scatter(np.flatnonzero(ext), self.external_ids.gather(docs[ext]))

    def frame(self, docs: np.ndarray, live: pl.DataFrame) -> pl.DataFrame:
        """The survivor-rule attributes, sig_idx, external and `doc` (0.. in the order given: the
        docs ascending) of `docs`."""
        n_ext = len(self.external_ids)
        ext, own = docs[docs < n_ext], docs[docs >= n_ext]
        cols = ["unit", "row", "priority", "text_bytes", "quality", "order_str", "order_int"]
        parts = [live.select(cols)[self.live_pos[own]].with_columns(pl.Series("sig_idx", self.sig_idx[own], pl.Int64),
                                                                    pl.lit(False).alias("external"))]
        if ext.size:
            ids = self.external_ids.gather(ext)
            parts.insert(0, pl.DataFrame({"unit": self.unit[ext], "row": self.row[ext], "order_str": ids}).select(
                "unit", "row", pl.lit(EXTERNAL_PRIORITY, pl.Int64).alias("priority"), pl.lit(0, pl.Int64).alias("text_bytes"),
                pl.lit(None, pl.Float64).alias("quality"), "order_str", pl.lit(0, pl.Int64).alias("order_int"),
                pl.Series("sig_idx", self.row[ext], pl.Int64), pl.lit(True).alias("external")))
        return pl.concat(parts, how="vertical_relaxed").with_row_index("doc").with_columns(pl.col("doc").cast(pl.Int64))


def doc_index(codes: np.ndarray, live: pl.DataFrame, work: Path, external: list[tuple[str, Path, Path]],
               index_runs: int) -> DocIndex:
    """The `DocIndex` of the sorted doc codes: each own doc's signature row (its unit's band-key
    file) and row of `live`, each published doc's record id."""
    unit, row = decode_doc(codes, index_runs)
    n_ext = int(np.sum(unit < 0))
    sig_idx = row.copy()  # a published record's signature row is its row
    for u in np.unique(unit[n_ext:]):
        at = np.flatnonzero(unit == u)
        meta = signed_rows(work / "minhash" / f"u{int(u):05d}.parquet", row[at])
        found = pl.DataFrame({"row": row[at]}, schema={"row": pl.Int64}).join(meta, on="row", how="left",
                                                                              maintain_order="left")
        sig_idx[at] = found["sig_idx"].fill_null(-1).to_numpy()
    # each own doc's row of `live`, by doc code (int arrays: no join over the records' frame)
    pos, found = code_positions(doc_code(live["unit"].to_numpy(), live["row"].to_numpy(), index_runs), codes[n_ext:])
    missing = int(np.sum(~found | (sig_idx[n_ext:] < 0)))
    if missing:
        raise PipelineError(f"near dedup: {missing} candidate record(s) are not among the records still kept at the "
                            "barrier; the barrier's partitions are stale: delete _work/barrier and run again")
    live_pos = np.concatenate([np.full(n_ext, -1, np.int64), pos.astype(np.int64)])
    ids = [pl.Series("record_id", [], pl.String)]
    for (u,), part in pl.DataFrame({"unit": unit[:n_ext], "row": row[:n_ext]}).group_by("unit", maintain_order=True):
        run_id, path, _sig = external[-1 - u]
        ids.append(run_id + "/" + pl.read_parquet(path, columns=["record_id"])["record_id"].gather(part["row"].to_numpy()))
    return DocIndex(unit, row, sig_idx, live_pos, pl.concat(ids).rename("record_id"))


@dataclass
class GroupResult:
    """A group's pair similarities (in its pairs' order) and its stars as arrays of global docs."""

    sims: np.ndarray
    ests: np.ndarray
    contents: np.ndarray
    cpos: np.ndarray
    verified: int
    vetoed: int
    short_added: np.ndarray  # per short pair of the group: not verified by the word pass
    survivors: np.ndarray    # per star
    star: np.ndarray         # per drop: its star (index into survivors)
    dropped: np.ndarray
    similarity: np.ndarray
    via: np.ndarray          # -1: a direct drop
    by_short: np.ndarray
    rechecked: tuple[int, int, int]  # `verify: borderline`: comparisons re-checked, flipped, texts read


def group_result(clusters: list[Star], short: ShortPass, pair_sims: tuple, verified: int, vetoed: int,
                  short_new: np.ndarray, rechecked: tuple[int, int, int]) -> GroupResult:
    """The group's stars as arrays (group doc numbers), with which pass justified each drop: the
    edge to its survivor (or, for a second hop, to `via`)."""
    sizes = np.array([len(c.dropped) for c in clusters], np.int64)
    survivors = np.array([c.survivor for c in clusters], np.int64)
    star = np.repeat(np.arange(len(clusters)), sizes)
    dropped = np.array([d for c in clusters for d in c.dropped], np.int64)
    similarity = np.array([x for c in clusters for x in c.similarity], np.float64)
    via = np.array([v for c in clusters for v in c.via], np.int64)
    ends = np.where(via >= 0, via, survivors[star])
    by_short = short.only(dropped, ends) if short.pairs.size and dropped.size else np.zeros(len(dropped), bool)
    return GroupResult(*pair_sims, verified, vetoed, short_new, survivors, star, dropped, similarity, via, by_short,
                        rechecked)


def decision_rows(results: list[GroupResult], index: DocIndex, live: pl.DataFrame,
                   schema: pl.Schema) -> tuple[pl.DataFrame, dict]:
    """The rows `resolve_near` returns, in cluster id order (a cluster's head, then its drops in
    star order), and the counts of the clusters. Cluster ids in a fixed order: clusters headed by
    published records (by id), then by this run's (input order, i.e. doc order)."""
    survivors = np.concatenate([np.zeros(0, np.int64)] + [r.survivors for r in results])
    offsets = np.cumsum([0] + [len(r.survivors) for r in results])
    star = np.concatenate([np.zeros(0, np.int64)] + [r.star + o for r, o in zip(results, offsets)])
    dropped, similarity, via, by_short = (np.concatenate([np.zeros(0, t)] + [getattr(r, f) for r in results])
                                          for f, t in (("dropped", np.int64), ("similarity", np.float64),
                                                       ("via", np.int64), ("by_short", bool)))
    ext = index.external[survivors]
    ext_order = np.flatnonzero(ext)[index.record_ids(survivors[ext], live).arg_sort().to_numpy()]
    own_order = np.flatnonzero(~ext)[np.argsort(survivors[~ext], kind="stable")]
    cluster = np.empty(len(survivors), np.int64)
    cluster[np.concatenate([ext_order, own_order])] = np.arange(len(survivors))
    sizes = np.bincount(star, minlength=len(survivors)) + 1
    # Rows: each of this run's heads, then every drop; a stable sort by cluster id puts the head first.
    heads = np.flatnonzero(~ext)
    doc = np.concatenate([survivors[heads], dropped])
    row_cluster = np.concatenate([cluster[heads], cluster[star]])
    is_drop = np.concatenate([np.zeros(len(heads), bool), np.ones(len(dropped), bool)])
    order = np.argsort(row_cluster, kind="stable")
    doc, row_cluster, is_drop = doc[order], row_cluster[order], is_drop[order]
    drop_at = order[is_drop] - len(heads)  # each drop row's index into the drop arrays
    # Record ids only of the docs the rows name: the survivors of drops and the second hops' `via`.
    named = np.unique(np.concatenate([survivors[star], via[via >= 0]]))
    ids = index.record_ids(named, live)

    def on_drops(values: np.ndarray, fill, valid: np.ndarray | None = None) -> pl.Series:
        """A column that is `values` (one per drop row) on drop rows where `valid`, null elsewhere."""
        full = np.full(len(doc), fill, dtype=np.asarray(values).dtype)
        full[is_drop] = values
        ok = is_drop if valid is None else is_drop & valid
        return pl.Series(full).scatter(np.flatnonzero(~ok), None)

    via_drop = np.zeros(len(doc), np.int64)
    via_drop[is_drop] = via[drop_at]
    result = pl.DataFrame({
        "unit": index.unit[doc], "row": index.row[doc],
        "duplicate_of": ids.gather(on_drops(np.searchsorted(named, survivors[star[drop_at]]), 0)),
        "cluster_id": row_cluster,
        "similarity": on_drops(similarity[drop_at], 0.0),
        "via": ids.gather(on_drops(np.searchsorted(named, via[drop_at]), 0, via_drop >= 0)),
        "path": on_drops(np.where(by_short[drop_at], PATH_SHORT, PATH_WORDS), ""),
    }, schema=schema)
    counted = {"clusters": int(len(survivors)), "dropped": int(len(dropped)),
               "dropped_against_index": int(np.sum(ext[star])), "dropped_second_hop": int(np.sum(via >= 0)),
               "through_short": int(by_short.sum()), "cluster_sizes": log2_histogram(sizes.tolist())}
    return result, counted
