"""Text reuse by containment: |A ∩ B| / |A| over word n-gram shingles, whatever the lengths of A and B.

MinHash Jaccard cannot see a short record that pastes a passage of a long one (|A ∩ B| / |A ∪ B|
is small when B is long); containment can. Candidate generation is an inverted index over
shingle hashes: only shingles that occur in 2..`max_df` records pair records up, so the pairs
generated are at most `max_df` times the number of shingle occurrences (near-linear; a shingle in
more than `max_df` records is boilerplate and pairs nobody). Each candidate pair is then verified
on the exact shingle sets: the shared rare shingles (counted by the join) plus the shared frequent
ones (looked up one by one), over |A|.

Shingles are those of near-dedup (`pipeline.dedup.minhash`): text normalised by
`normalize_for_shingles` (NFKC, lowercase, punctuation to spaces), word n-grams, 64-bit FNV-1a
hashes, one per distinct shingle. A record with fewer than n words has no shingles.

Direction (never both of a pair): B may contain A only when B comes first in the survivor order
of near-dedup (higher source priority, then more shingles, then the record-id order): a strict
total order, so of two records containing each other only the later one is flagged, and the
first record of any chain survives. A reference source (the articles answers copy from) given a
higher priority is therefore never flagged against a record of a lower-priority source.

Usage::

    w = ShingleWriter(directory, unit_id, ngram=5); w.add(texts, rows); w.close()   # pass 1
    found, stats = find_contained(files, live, threshold=0.5, max_df=50, min_shingles=10)  # barrier
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, shingle_sets

SCHEMA = pa.schema([("row", pa.int64()), ("hash", pa.uint64())])


def record_shingles(text: pa.Array | pa.ChunkedArray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat hashes, offsets): the distinct shingle hashes of each text, sorted per text."""
    return shingle_sets(normalize_for_shingles(text), MinHashParams(ngram=ngram, short_docs="skip"))


class ShingleWriter:
    """Pass 1: streams one unit's (row, shingle hash) pairs to scratch Parquet, a batch at a time."""

    def __init__(self, directory: Path, unit_id: int, ngram: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ngram = ngram
        self.path = directory / f"u{unit_id:05d}.parquet"
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")

    def add(self, text: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> None:
        """Shingle the texts of one batch (rows are their row numbers in the unit)."""
        flat, offsets = record_shingles(text, self.ngram)
        row_col = np.repeat(np.asarray(rows, dtype=np.int64), np.diff(offsets))
        self._writer.write_table(pa.table({"row": row_col, "hash": flat}, schema=SCHEMA))

    def close(self) -> None:
        self._writer.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


PARTITION_ROWS = 20_000_000


def find_contained(files: list[tuple[int, Path]], live: pl.DataFrame, threshold: float, max_df: int,
                   min_shingles: int, partition_rows: int = PARTITION_ROWS,
                   kept_containers: bool = False, prior: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict]:
    """The records contained in another one.

    `files`: (unit, path) of each unit's shingle file; `live`: the records still undecided, with
    columns unit, row, `_i` (their position), `priority` (higher first) and `rank` (the record-id
    order, smaller first).
    Returns one row per flagged record: `_i`, `container` (the `_i` of the containing record),
    `shared`, `size` (|A|), `containment`; the container is the one of highest containment (then
    the first in the order). With `kept_containers` (for dropping) a container is never itself
    flagged: a record contained only in flagged records is kept, so no text is lost down a chain
    (A in B, B in C, A's text not in C). `prior`: (record_id, hash) of records published by earlier
    runs (the corpus index): containers of every record of this run, never flagged themselves; a
    `container` past the largest `_i` of `live`, max + 1 + k, is the record in row k of
    `prior_names(prior)`. Statistics are counts only."""
    empty = pl.DataFrame(schema={"_i": pl.UInt32, "container": pl.UInt32, "shared": pl.UInt32, "size": pl.UInt32,
                                 "containment": pl.Float64})
    ids = live.select(pl.col("unit").cast(pl.Int64), pl.col("row").cast(pl.Int64), pl.col("_i").cast(pl.UInt32),
                      pl.col("priority").cast(pl.Int64), pl.col("rank").cast(pl.Int64))
    frames = [pl.read_parquet(p).with_columns(pl.lit(u, pl.Int64).alias("unit")) for u, p in files]
    if not frames:
        return empty, {"shingles": 0, "candidate_pairs": 0, "verified_pairs": 0, "flagged": 0}
    sh = pl.concat(frames).join(ids.select("unit", "row", "_i"), on=["unit", "row"], how="inner").select("_i", "hash")
    first_prior = (int(ids["_i"].max()) + 1) if ids.height else 0
    ranks = ids.select("_i", "priority", "rank")
    n_prior = 0
    if prior is not None and prior.height:
        # Only the shingles this run has matter (df, and what a container shares); published
        # records come first in the order (highest priority), so they contain and are never contained.
        names = prior_names(prior)
        n_prior = names.height
        matched = prior.join(sh.select("hash").unique(), on="hash", how="semi")
        sh = pl.concat([sh, matched.join(names, on="record_id").select(
            (pl.col("k") + first_prior).cast(pl.UInt32).alias("_i"), "hash")])
        ranks = pl.concat([ranks, names.select((pl.col("k") + first_prior).cast(pl.UInt32).alias("_i"),
                                               pl.lit(PRIOR_PRIORITY, pl.Int64).alias("priority"),
                                               pl.lit(-1, pl.Int64).alias("rank"))])
    size = sh.group_by("_i").agg(pl.len().cast(pl.UInt32).alias("size"))
    df = sh.group_by("hash").agg(pl.len().cast(pl.UInt32).alias("df"))
    sh = sh.join(df, on="hash")
    rare = sh.filter((pl.col("df") >= 2) & (pl.col("df") <= max_df)).select("_i", "hash")
    frequent = sh.filter(pl.col("df") > max_df).select("_i", "hash")
    n_freq = frequent.group_by("_i").agg(pl.len().cast(pl.UInt32).alias("n_freq"))
    order = size.join(ranks, on="_i")
    a = order.rename({"priority": "prio_a", "rank": "rank_a"})
    b = order.rename({"_i": "container", "size": "size_b", "priority": "prio_b", "rank": "rank_b"})
    # Inverted index: every pair of records sharing a rare shingle, with the count of those shared,
    # built for a slice of the contained side at a time: a slice joins at most about
    # `partition_rows` (record, shingle, other record) rows, whatever the size of the run.
    rare_df = sh.filter((pl.col("df") >= 2) & (pl.col("df") <= max_df))
    eligible = size.filter((pl.col("size") >= min_shingles) & (pl.col("_i") < first_prior)).select("_i")
    load = (rare_df.join(eligible, on="_i", how="semi").group_by("_i").agg(pl.col("df").cast(pl.Int64).sum().alias("load"))
            .sort("_i").with_columns((pl.col("load").cum_sum() // partition_rows).alias("part")))
    n_candidates, parts = 0, []
    for (_part,), chunk in load.group_by("part", maintain_order=True):
        left = rare.join(chunk.select("_i"), on="_i", how="semi")
        got = (left.join(rare.rename({"_i": "container"}), on="hash")
               .filter(pl.col("_i") != pl.col("container"))
               .group_by("_i", "container").agg(pl.len().cast(pl.UInt32).alias("shared_rare")))
        n_candidates += got.height
        parts.append(
            got.join(a, on="_i").join(b, on="container").join(n_freq, on="_i", how="left")
            .with_columns(pl.col("n_freq").fill_null(0))
            # B contains A only when B is first in the order (priority, more shingles, rank): never both.
            .filter((pl.col("prio_b") > pl.col("prio_a"))
                    | ((pl.col("prio_b") == pl.col("prio_a"))
                       & ((pl.col("size_b") > pl.col("size"))
                          | ((pl.col("size_b") == pl.col("size")) & (pl.col("rank_b") < pl.col("rank_a"))))))
            # An upper bound on |A ∩ B| (every frequent shingle of A shared) must reach the threshold.
            .filter((pl.col("shared_rare") + pl.col("n_freq")).cast(pl.Float64) >= threshold * pl.col("size")))
    pairs = pl.concat(parts) if parts else pl.DataFrame(schema={
        "_i": pl.UInt32, "container": pl.UInt32, "shared_rare": pl.UInt32, "size": pl.UInt32, "prio_a": pl.Int64,
        "rank_a": pl.Int64, "size_b": pl.UInt32, "prio_b": pl.Int64, "rank_b": pl.Int64, "n_freq": pl.UInt32})
    # Exact verification: add the frequent shingles of A that B has too.
    freq_shared = (pairs.filter(pl.col("n_freq") > 0).select("_i", "container")
                   .join(frequent, on="_i")
                   .join(frequent.rename({"_i": "container"}), on=["container", "hash"], how="semi")
                   .group_by("_i", "container").agg(pl.len().cast(pl.UInt32).alias("shared_freq")))
    verified = (pairs.join(freq_shared, on=["_i", "container"], how="left")
                .with_columns((pl.col("shared_rare") + pl.col("shared_freq").fill_null(0)).alias("shared"))
                .with_columns((pl.col("shared").cast(pl.Float64) / pl.col("size")).alias("containment")))
    n_verified = verified.height
    hits = verified.filter(pl.col("containment") >= threshold)
    if kept_containers:
        # In the order itself (a container always comes first), so each container's fate is known
        # when its records are decided: the first hit whose container is not flagged.
        hits = hits.sort(["prio_a", "size", "rank_a", "containment", "prio_b", "size_b", "rank_b"],
                         descending=[True, True, False, True, True, True, False])
        flagged: set[int] = set()
        take = []
        for k, (i, b) in enumerate(hits.select("_i", "container").iter_rows()):
            if i not in flagged and b not in flagged:
                flagged.add(i)
                take.append(k)
        found = hits[take].sort("_i").select("_i", "container", "shared", "size", "containment")
    else:
        found = (hits.sort(["_i", "containment", "prio_b", "size_b", "rank_b"], descending=[False, True, True, True, False])
                 .unique("_i", keep="first", maintain_order=True)
                 .select("_i", "container", "shared", "size", "containment"))
    stats = {"shingles": sh.height, "distinct_shingles": df.height,
             "boilerplate_shingles": int(df.filter(pl.col("df") > max_df).height),
             "records_with_shingles": size.height,
             "records_below_min_shingles": int(size.filter(pl.col("size") < min_shingles).height),
             "candidate_pairs": n_candidates, "verified_pairs": n_verified, "flagged": found.height,
             "partitions": len(parts), "index_records": n_prior,
             "flagged_in_index": int(found.filter(pl.col("container") >= first_prior).height) if n_prior else 0}
    return found, stats


PRIOR_PRIORITY = 2**62  # published records precede every record of the run


def prior_names(prior: pl.DataFrame) -> pl.DataFrame:
    """`k` (0, 1, ...) and record_id of each distinct record of `prior`, in first-seen order: a
    flagged record's container `first_prior + k` names the published record `record_id`."""
    return prior.select("record_id").unique(maintain_order=True).with_row_index("k").with_columns(pl.col("k").cast(pl.Int64))


def containment(a: set, b: set) -> float:
    """|A ∩ B| / |A| of two shingle sets (0 for an empty A): the reference for tests and benchmarks."""
    return len(a & b) / len(a) if a else 0.0
