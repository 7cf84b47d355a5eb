"""Near-duplicate stage: per-unit signatures and band keys (pass 1), global resolution (barrier).

On-disk artifacts, each inspectable and re-runnable:

    _work/minhash/uNNNNN.sig      raw uint32 signatures, one row per valid record of the unit
    _work/minhash/uNNNNN.parquet  unit, row, shingles, b00..bNN band keys (same row order)
    _work/near/candidates.parquet doc pairs sharing a band, with their estimated similarity
    _work/near/decisions.parquet  unit, row, duplicate_of, cluster_id, similarity
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import NearDedupConfig
from pipeline.dedup.lsh import (
    band_keys,
    bucket_pairs,
    candidate_probability,
    choose_bands,
    components,
    estimated_similarity,
    log2_histogram,
    unique_pairs,
)
from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, signatures
from pipeline.fileio import atomic_path


@dataclass(frozen=True)
class Banding:
    """The LSH banding in use and its probability of flagging a pair at the threshold."""

    bands: int
    rows: int
    probability: float


def banding(cfg: NearDedupConfig) -> Banding:
    """Configured bands x rows, or the ones chosen for the threshold."""
    if cfg.bands is not None:
        return Banding(cfg.bands, cfg.rows, candidate_probability(cfg.threshold, cfg.bands, cfg.rows))
    return Banding(*choose_bands(cfg.num_perm, cfg.threshold, cfg.min_candidate_probability))


def params(cfg: NearDedupConfig) -> MinHashParams:
    """MinHash parameters of the config."""
    return MinHashParams(num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram, char_ngrams=cfg.char_ngrams,
                         short_docs=cfg.short_docs)


def _band_names(b: int) -> list[str]:
    return [f"b{k:02d}" for k in range(b)]


class SignatureWriter:
    """Pass 1: streams a unit's signatures and band keys to disk, a batch at a time."""

    def __init__(self, directory: Path, unit_id: int, cfg: NearDedupConfig) -> None:
        self.cfg, self.unit_id = cfg, unit_id
        self.params = params(cfg)
        self.banding = banding(cfg)
        directory.mkdir(parents=True, exist_ok=True)
        self.sig_path = directory / f"u{unit_id:05d}.sig"
        self.keys_path = directory / f"u{unit_id:05d}.parquet"
        self.schema = pa.schema([("unit", pa.int64()), ("row", pa.int64()), ("shingles", pa.int64())]
                                + [(n, pa.uint64()) for n in _band_names(self.banding.bands)])
        self._sig_tmp = self.sig_path.with_name(f".{self.sig_path.name}.tmp")
        self._keys_tmp = self.keys_path.with_name(f".{self.keys_path.name}.tmp")
        self._sig_file = open(self._sig_tmp, "wb")
        self._writer = pq.ParquetWriter(self._keys_tmp, self.schema, compression="zstd")

    def add(self, text: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> None:
        """Sign the texts of one batch (rows are their row numbers)."""
        sig, counts = signatures(normalize_for_shingles(text), self.params)
        keys = band_keys(sig, self.banding.bands, self.banding.rows)
        sig.tofile(self._sig_file)
        cols = {"unit": np.full(len(rows), self.unit_id, dtype=np.int64), "row": rows, "shingles": counts}
        cols.update({n: keys[:, k] for k, n in enumerate(_band_names(self.banding.bands))})
        self._writer.write_table(pa.table(cols, schema=self.schema))

    def close(self) -> None:
        """Finish both files and move them to their final names."""
        self._writer.close()
        self._sig_file.flush()
        self._sig_file.close()
        self._sig_tmp.replace(self.sig_path)
        self._keys_tmp.replace(self.keys_path)

    def abort(self) -> None:
        """Drop the partial files."""
        self._writer.close()
        self._sig_file.close()
        self._sig_tmp.unlink(missing_ok=True)
        self._keys_tmp.unlink(missing_ok=True)


class SignatureStore:
    """Random access to the signatures of many units (memory-mapped, never all in memory)."""

    def __init__(self, directory: Path, num_perm: int) -> None:
        self.directory, self.num_perm = directory, num_perm
        self._maps: dict[int, np.ndarray] = {}

    def _map(self, unit: int) -> np.ndarray:
        if unit not in self._maps:
            path = self.directory / f"u{unit:05d}.sig"
            n = path.stat().st_size // (4 * self.num_perm)
            self._maps[unit] = np.memmap(path, dtype=np.uint32, mode="r", shape=(n, self.num_perm)) if n else np.zeros((0, self.num_perm), np.uint32)
        return self._maps[unit]

    def gather(self, units: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Signatures of (unit, index-in-unit) pairs, in the given order."""
        out = np.empty((len(units), self.num_perm), dtype=np.uint32)
        for u in np.unique(units):
            sel = np.flatnonzero(units == u)
            out[sel] = self._map(int(u))[idx[sel]]
        return out


def resolve_near(live: pl.DataFrame, work: Path, cfg: NearDedupConfig, prefer: str) -> tuple[pl.DataFrame, dict]:
    """Find near duplicates among `live` records; return their decisions and the stage statistics.

    `live` has unit, row, record_id, priority, text_bytes, quality, order_str, order_int: the
    records still kept after exact dedup. Returns (unit, row, duplicate_of, cluster_id,
    similarity) for every dropped record and every cluster survivor (survivors have a null
    duplicate_of), plus statistics for the manifest.
    """
    bd = banding(cfg)
    mh_dir = work / "minhash"
    files = sorted(str(p) for p in mh_dir.glob("u*.parquet"))
    meta = (
        pl.scan_parquet(files).select("unit", "row", "shingles").with_columns(
            pl.int_range(pl.len()).over("unit").alias("sig_idx")).collect()
        if files else pl.DataFrame(schema={"unit": pl.Int64, "row": pl.Int64, "shingles": pl.Int64, "sig_idx": pl.Int64})
    )
    docs = (
        live.join(meta, on=["unit", "row"], how="inner")
        .filter(pl.col("shingles") > 0)
        .sort("unit", "row")
        .with_row_index("doc")
        .with_columns(pl.col("doc").cast(pl.Int64))
    )
    n = docs.height
    stats = {
        "threshold": cfg.threshold, "num_perm": cfg.num_perm, "seed": cfg.seed, "ngram": cfg.ngram,
        "char_ngrams": cfg.char_ngrams, "short_docs": cfg.short_docs, "bands": bd.bands, "rows": bd.rows,
        "candidate_probability_at_threshold": round(bd.probability, 6),
        "signed": n, "without_shingles": live.height - n,
    }
    empty = pl.DataFrame(schema={"unit": pl.Int64, "row": pl.Int64, "duplicate_of": pl.String,
                                 "cluster_id": pl.Int64, "similarity": pl.Float64})
    if n < 2:
        stats.update({"candidate_pairs": 0, "verified_pairs": 0, "clusters": 0, "dropped": 0, "cluster_sizes": {}})
        return empty, stats

    key_frame = docs.select("unit", "row", "doc")
    parts = []
    for name in _band_names(bd.bands):
        band = pl.scan_parquet(files).select("unit", "row", name).collect().join(key_frame, on=["unit", "row"], how="inner")
        parts.append(bucket_pairs(band["doc"].to_numpy(), band[name].to_numpy(), cfg.bucket_pair_limit))
    pairs = unique_pairs(parts)

    store = SignatureStore(mh_dir, cfg.num_perm)
    doc_unit = docs["unit"].to_numpy()
    doc_sig = docs["sig_idx"].to_numpy()
    involved = np.unique(pairs) if pairs.size else np.empty(0, np.int64)
    sigs = store.gather(doc_unit[involved], doc_sig[involved]) if involved.size else np.empty((0, cfg.num_perm), np.uint32)
    pos = np.full(n, -1, dtype=np.int64)  # doc -> row of `sigs`
    pos[involved] = np.arange(involved.size)
    sims = np.empty(len(pairs))
    for s in range(0, len(pairs), 200_000):
        chunk = pairs[s : s + 200_000]
        sims[s : s + len(chunk)] = estimated_similarity(sigs[pos[chunk[:, 0]]], sigs[pos[chunk[:, 1]]])
    (work / "near").mkdir(exist_ok=True)
    with atomic_path(work / "near" / "candidates.parquet") as tmp:
        pl.DataFrame({"doc_a": pairs[:, 0] if pairs.size else [], "doc_b": pairs[:, 1] if pairs.size else [],
                      "similarity": sims}).write_parquet(tmp)
    verified = pairs[sims >= cfg.threshold] if pairs.size else pairs

    labels = components(n, verified)
    rank_col = "quality" if prefer == "quality" else "text_bytes"
    grouped = (
        docs.with_columns(pl.Series("label", labels))
        .filter(pl.col("label").count().over("label") > 1)
        .sort(["label", "priority", rank_col, "order_str", "order_int"], descending=[False, True, True, False, False],
              nulls_last=True)
    )
    out_unit, out_row, out_dup, out_cluster, out_sim = [], [], [], [], []
    cluster_survivors: list[tuple[int, list[int], list[float]]] = []
    g_docs = grouped["doc"].to_numpy()
    g_labels = grouped["label"].to_numpy()
    boundaries = np.flatnonzero(np.diff(g_labels)) + 1
    for members in np.split(g_docs, boundaries) if g_docs.size else []:
        remaining = list(members)
        while len(remaining) > 1:
            s, rest = remaining[0], np.asarray(remaining[1:])
            sim = estimated_similarity(np.broadcast_to(sigs[pos[s]], (len(rest), cfg.num_perm)), sigs[pos[rest]])
            hit = sim >= cfg.threshold
            if hit.any():
                cluster_survivors.append((int(s), rest[hit].tolist(), sim[hit].tolist()))
            remaining = rest[~hit].tolist()

    rid = docs["record_id"].to_list()
    units = docs["unit"].to_numpy()
    rows = docs["row"].to_numpy()
    order = sorted(range(len(cluster_survivors)), key=lambda i: (units[cluster_survivors[i][0]], rows[cluster_survivors[i][0]]))
    sizes = []
    for cid, i in enumerate(order):
        s, dropped, sims_d = cluster_survivors[i]
        sizes.append(len(dropped) + 1)
        out_unit.append(units[s]); out_row.append(rows[s]); out_dup.append(None); out_cluster.append(cid); out_sim.append(None)
        for d, sv in zip(dropped, sims_d):
            out_unit.append(units[d]); out_row.append(rows[d]); out_dup.append(rid[s]); out_cluster.append(cid); out_sim.append(float(sv))
    result = pl.DataFrame({"unit": out_unit, "row": out_row, "duplicate_of": out_dup, "cluster_id": out_cluster,
                           "similarity": out_sim}, schema=empty.schema)
    with atomic_path(work / "near" / "decisions.parquet") as tmp:
        result.write_parquet(tmp)
    stats.update({
        "candidate_pairs": int(len(pairs)),
        "verified_pairs": int(len(verified)),
        "clusters": len(sizes),
        "dropped": int(sum(sizes) - len(sizes)),
        "cluster_sizes": log2_histogram(sizes),
    })
    return result, stats
