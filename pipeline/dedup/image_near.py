"""Image near-duplicates: pHash clusters within a Hamming distance, with the same survivor rules and
anti-chaining as text (a copy is dropped only if it is itself within the distance of the survivor).

Usage::

    decisions = resolve_image_near(live_images, max_distance=4)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.dedup.lsh import components
from pipeline.safety.index import HammingIndex, LinearIndex
from pipeline.safety.perceptual import hexes_to_words

EMPTY = {"unit": pl.Int64, "row": pl.Int64, "duplicate_of": pl.String, "cluster_id": pl.Int64, "similarity": pl.Float64}


def _popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def resolve_image_near(live: pl.DataFrame, max_distance: int, first_cluster: int = 0) -> tuple[pl.DataFrame, dict]:
    """`live` has unit, row, record_id, priority, text_bytes (file size), order_str, order_int, phash."""
    docs = live.filter(pl.col("phash").is_not_null()).sort("unit", "row")
    n = docs.height
    stats = {"images": n, "max_distance": max_distance, "pairs": 0, "clusters": 0, "dropped": 0}
    if n < 2:
        return pl.DataFrame(schema=EMPTY), stats
    words = hexes_to_words(docs["phash"].to_list(), bits=64)
    index = HammingIndex() if n > 4096 else LinearIndex()
    index.build(words, [str(i) for i in range(n)])
    pairs = [(i, int(j)) for i, hits in enumerate(index.query_many(words, max_distance)) for j, _d in hits if int(j) > i]
    stats["pairs"] = len(pairs)
    if not pairs:
        return pl.DataFrame(schema=EMPTY), stats
    labels = components(n, np.asarray(pairs, dtype=np.int64))
    ranked = (docs.with_row_index("doc").with_columns(pl.Series("label", labels))
              .filter(pl.col("label").count().over("label") > 1)
              .sort(["label", "priority", "text_bytes", "order_str", "order_int"], descending=[False, True, True, False, False]))
    flat = words[:, 0]
    out = {k: [] for k in EMPTY}
    rid, units, rows = docs["record_id"].to_list(), docs["unit"].to_numpy(), docs["row"].to_numpy()
    cid = first_cluster
    g_docs = ranked["doc"].to_numpy().astype(np.int64)
    for members in np.split(g_docs, np.flatnonzero(np.diff(ranked["label"].to_numpy())) + 1):
        remaining = members
        while len(remaining) > 1:
            s, rest = remaining[0], remaining[1:]
            dist = _popcount64(np.bitwise_xor(flat[rest], flat[s]))
            hit = dist <= max_distance
            if hit.any():
                for k, v in (("unit", units[s]), ("row", rows[s]), ("duplicate_of", None), ("cluster_id", cid), ("similarity", None)):
                    out[k].append(v)
                for d, dd in zip(rest[hit], dist[hit]):
                    for k, v in (("unit", units[d]), ("row", rows[d]), ("duplicate_of", rid[s]), ("cluster_id", cid),
                                 ("similarity", 1.0 - float(dd) / 64.0)):
                        out[k].append(v)
                stats["clusters"] += 1
                stats["dropped"] += int(hit.sum())
                cid += 1
            remaining = rest[~hit]
    return pl.DataFrame(out, schema=EMPTY), stats
