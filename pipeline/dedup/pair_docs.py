"""The records of near-duplicate resolution ("docs": the records in a candidate pair or in the
short-document pass, numbered in (unit, row) order), held as int arrays rather than a row of
strings each, and the rows resolution returns, assembled from every group's stars.

Usage::

    index = doc_index(codes, work, index_runs)           # where each doc's signature is
    docs = group_frame(group_index, own_rows, ext_ids)   # one group's attribute rows
    stars, drops = verdict_frames(result, group_docs, docs, own_rows, ids)   # what its task writes
    rows, counts = decision_rows([stars, ...], [drops, ...], schema)        # merged over the groups
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dedup.candidates import decode_doc
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
    """Where each doc's signature is (doc: index into the sorted doc codes), as int arrays: no row
    of strings per record. Published docs (the corpus index's) come first in doc order."""

    unit: np.ndarray
    row: np.ndarray
    sig_idx: np.ndarray    # row in the unit's signature file (a published doc's: its row)

    @property
    def external(self) -> np.ndarray:
        return self.unit < 0

    def key_frame(self) -> pl.DataFrame:
        """unit, row, doc of every doc."""
        return pl.DataFrame({"unit": self.unit, "row": self.row, "doc": np.arange(len(self.unit), dtype=np.int64)},
                            schema={"unit": pl.Int64, "row": pl.Int64, "doc": pl.Int64})


def doc_index(codes: np.ndarray, work: Path, index_runs: int) -> DocIndex:
    """The `DocIndex` of the sorted doc codes: each own doc's signature row (its unit's band-key file)."""
    unit, row = decode_doc(codes, index_runs)
    sig_idx = row.copy()  # a published record's signature row is its row
    for u in np.unique(unit[unit >= 0]):
        at = np.flatnonzero(unit == u)
        meta = signed_rows(work / "minhash" / f"u{int(u):05d}.parquet", row[at])
        found = pl.DataFrame({"row": row[at]}, schema={"row": pl.Int64}).join(meta, on="row", how="left",
                                                                              maintain_order="left")
        sig_idx[at] = found["sig_idx"].fill_null(-1).to_numpy()
    if np.any(sig_idx < 0):
        raise PipelineError(f"near dedup: {int(np.sum(sig_idx < 0))} candidate record(s) have no signature; the "
                            "barrier's partitions are stale: delete _work/barrier and run again")
    return DocIndex(unit, row, sig_idx)


def external_ids(unit: np.ndarray, row: np.ndarray, external: list[tuple[str, Path, Path]]) -> pl.Series:
    """Record ids (`run_id/record_id`) of published docs (unit -1-k: index run k), in the order given."""
    ids = [pl.Series("record_id", [], pl.String)]
    for (u,), part in pl.DataFrame({"unit": unit, "row": row}).group_by("unit", maintain_order=True):
        run_id, path, _sig = external[-1 - u]
        ids.append(run_id + "/" + pl.read_parquet(path, columns=["record_id"])["record_id"].gather(part["row"].to_numpy()))
    return pl.concat(ids).rename("record_id")


def group_frame(index: DocIndex, own: pl.DataFrame, ext_ids: pl.Series) -> pl.DataFrame:
    """The survivor-rule attributes, sig_idx, external and `doc` (0.., doc order) of one group's docs:
    `index` holds the group's docs, `own` the attribute rows of its own (not published) docs in doc
    order (unit, row, priority, text_bytes, quality, order_str, order_int), `ext_ids` the record
    ids of its published docs."""
    ext = index.external
    cols = ["unit", "row", "priority", "text_bytes", "quality", "order_str", "order_int"]
    parts = [own.select(cols).with_columns(pl.Series("sig_idx", index.sig_idx[~ext], pl.Int64),
                                           pl.lit(False).alias("external"))]
    if ext.any():
        parts.insert(0, pl.DataFrame({"unit": index.unit[ext], "row": index.row[ext], "order_str": ext_ids}).select(
            "unit", "row", pl.lit(EXTERNAL_PRIORITY, pl.Int64).alias("priority"), pl.lit(0, pl.Int64).alias("text_bytes"),
            pl.lit(None, pl.Float64).alias("quality"), "order_str", pl.lit(0, pl.Int64).alias("order_int"),
            pl.Series("sig_idx", index.row[ext], pl.Int64), pl.lit(True).alias("external")))
    return pl.concat(parts, how="vertical_relaxed").with_row_index("doc").with_columns(pl.col("doc").cast(pl.Int64))


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


# A group's verdicts as its task writes them: a row per star (its survivor) and per drop, with
# what the merged rows name (record ids, input positions `_i`), so the merge reads no key row.
STAR_SCHEMA = {"survivor": pl.Int64, "external": pl.Boolean, "record_id": pl.String, "unit": pl.Int64,
               "row": pl.Int64, "_i": pl.Int64}
DROP_SCHEMA = {"star": pl.Int64, "doc": pl.Int64, "unit": pl.Int64, "row": pl.Int64, "_i": pl.Int64,
               "record_id": pl.String, "image": pl.Boolean, "similarity": pl.Float64, "via": pl.Int64,
               "via_id": pl.String, "by_short": pl.Boolean}


def verdict_frames(r: GroupResult, docs: np.ndarray, frame: pl.DataFrame, own: pl.DataFrame,
                   ids: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A group's stars and drops (`STAR_SCHEMA`, `DROP_SCHEMA`) from its `GroupResult` (group doc
    numbers): `docs` the group's global docs, `frame` its `group_frame`, `own` the attribute rows
    of its own docs (with `_i`, phash) in doc order, `ids` the record id of every group doc."""
    n_ext = int(frame["external"].sum())
    i_all = np.concatenate([np.full(n_ext, -1, np.int64), own["_i"].to_numpy()])
    image = np.concatenate([np.zeros(n_ext, bool), own["phash"].is_not_null().to_numpy()])
    unit, row = frame["unit"].to_numpy(), frame["row"].to_numpy()
    s, d, via = r.survivors, r.dropped, r.via
    ext = s < n_ext
    stars = pl.DataFrame({"survivor": docs[s], "external": ext, "record_id": ids.gather(s), "unit": unit[s],
                          "row": row[s], "_i": pl.Series(i_all[s]).scatter(np.flatnonzero(ext), None)},
                         schema=STAR_SCHEMA)
    hop = via >= 0
    drops = pl.DataFrame({"star": r.star, "doc": docs[d], "unit": unit[d], "row": row[d], "_i": i_all[d],
                          "record_id": ids.gather(d), "image": image[d], "similarity": r.similarity,
                          "via": np.where(hop, docs[np.maximum(via, 0)], -1),
                          "via_id": ids.gather(np.maximum(via, 0)).scatter(np.flatnonzero(~hop), None),
                          "by_short": r.by_short}, schema=DROP_SCHEMA)
    return stars, drops


def cluster_ids(stars: pl.DataFrame) -> np.ndarray:
    """The cluster id of each star (`STAR_SCHEMA` rows): its rank among them, the stars headed by
    published records first (by record id), then this run's (by survivor doc, i.e. input order)."""
    survivors, ext = stars["survivor"].to_numpy(), stars["external"].to_numpy()
    ext_order = np.flatnonzero(ext)[stars.filter(pl.col("external"))["record_id"].arg_sort().to_numpy()]
    own_order = np.flatnonzero(~ext)[np.argsort(survivors[~ext], kind="stable")]
    cluster = np.empty(len(survivors), np.int64)
    cluster[np.concatenate([ext_order, own_order])] = np.arange(len(survivors))
    return cluster


def decision_rows(stars: list[pl.DataFrame], drops: list[pl.DataFrame],
                  schema: pl.Schema) -> tuple[pl.DataFrame, dict]:
    """The rows near-duplicate resolution returns, in cluster id order (a cluster's head, then its
    drops in star order), from every group's stars and drops (in group order), and the counts of
    the clusters. Cluster ids in a fixed order: clusters headed by published records (by id), then
    by this run's (input order, i.e. doc order), whatever the groups. The rows have `schema`'s
    columns and, after them, `_i` and `record_id` (of the row's own record) and `image`."""
    offsets = np.cumsum([0] + [f.height for f in stars])
    star_rows = pl.concat([pl.DataFrame(schema=STAR_SCHEMA), *stars])
    drop_rows = pl.concat([pl.DataFrame(schema=DROP_SCHEMA), *(f.with_columns(pl.col("star") + o)
                                                                for f, o in zip(drops, offsets))])
    survivors, ext = star_rows["survivor"].to_numpy(), star_rows["external"].to_numpy()
    star, via = drop_rows["star"].to_numpy(), drop_rows["via"].to_numpy()
    cluster = cluster_ids(star_rows)
    sizes = np.bincount(star, minlength=len(survivors)) + 1
    # Rows: each of this run's heads, then every drop; a stable sort by cluster id puts the head first.
    heads = np.flatnonzero(~ext)
    row_star = np.concatenate([heads, star])
    is_drop = np.concatenate([np.zeros(len(heads), bool), np.ones(len(star), bool)])
    order = np.argsort(cluster[row_star], kind="stable")
    head_rows = star_rows[heads]
    none = np.flatnonzero(~is_drop)  # the head rows: no survivor, similarity, via or path

    def both(col: str) -> pl.Series:
        return pl.concat([head_rows[col], drop_rows[col]])

    path = pl.Series(np.where(np.concatenate([np.zeros(len(heads), bool), drop_rows["by_short"].to_numpy()]),
                              PATH_SHORT, PATH_WORDS))
    result = pl.DataFrame({
        "unit": both("unit"), "row": both("row"),
        "duplicate_of": star_rows["record_id"].gather(row_star).scatter(none, None),
        "cluster_id": cluster[row_star],
        "similarity": pl.concat([pl.repeat(None, len(heads), dtype=pl.Float64, eager=True), drop_rows["similarity"]]),
        "via": pl.concat([pl.repeat(None, len(heads), dtype=pl.String, eager=True), drop_rows["via_id"]]),
        "path": path.scatter(none, None),
        "_i": both("_i"), "record_id": both("record_id"),
        "image": np.concatenate([np.zeros(len(heads), bool), drop_rows["image"].to_numpy()]),
    }, schema={**schema, "_i": pl.Int64, "record_id": pl.String, "image": pl.Boolean})[order]
    counted = {"clusters": int(len(survivors)), "dropped": int(len(star)),
               "dropped_against_index": int(np.sum(ext[star])), "dropped_second_hop": int(np.sum(via >= 0)),
               "through_short": int(drop_rows["by_short"].sum()), "cluster_sizes": log2_histogram(sizes.tolist())}
    return result, counted
