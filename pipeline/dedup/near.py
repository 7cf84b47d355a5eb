"""Near-duplicate stage: per-unit signatures and band keys (pass 1), global resolution (barrier).

On-disk artifacts, each inspectable and re-runnable:

    _work/minhash/uNNNNN.sig      raw uint32 signatures, one row per valid record of the unit
    _work/minhash/uNNNNN.parquet  unit, row, shingles, b00..bNN band keys (same row order)
    _work/minhash/uNNNNN.short.parquet  row, normalised text of the unit's short records
                                  (`short_pass_max_words`; the short-document pass, see short_pass.py)
    _work/barrier/lsh/pNNNNN.parquet  doc-code pairs sharing a band, per band group and key range
    _work/near/groups/...         the groups of components and each group's verdicts and
                                  candidate pairs (`pipeline.dedup.near_groups`)
    _work/near/decisions.parquet  unit, row, duplicate_of, cluster_id, similarity, via, path

The candidate graph is resolved a group of whole connected components at a time, each group its own
task (`near_groups`): `resolve_group` verifies and clusters one group on its records only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import NearDedupConfig
from pipeline.dedup.lsh import (
    MIN_CONTENT_POSITIONS,
    CommonValues,
    Star,
    anti_chaining_stars,
    band_keys,
    candidate_probability,
    central_stars,
    choose_bands,
    components,
    decision_similarity,
    neighbour_lists,
    pair_similarity,
)
from pipeline.dedup.borderline import TextSets
from pipeline.dedup.candidates import union_code_pairs
from pipeline.dedup.minhash import (MinHashParams, ShingleSetStore, normalize_for_shingles, pair_jaccard, shingle_sets,
                                    signatures, unpermuted)
from pipeline.dedup.pair_docs import DocIndex, GroupResult, group_result
from pipeline.dedup.short_pass import SHORT_FILE_SUFFIX, ShortPass, word_counts
from pipeline.run.workdir import part_files, read_done


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
        self.exact = cfg.verify == "exact"
        self.schema = pa.schema([("unit", pa.int64()), ("row", pa.int64()), ("shingles", pa.int64())]
                                + ([("set_len", pa.int64())] if self.exact else [])
                                + [(n, pa.uint64()) for n in _band_names(self.banding.bands)])
        self._sig_tmp = self.sig_path.with_name(f".{self.sig_path.name}.tmp")
        self._keys_tmp = self.keys_path.with_name(f".{self.keys_path.name}.tmp")
        self._sig_file = open(self._sig_tmp, "wb")
        self.sets_path = directory / f"u{unit_id:05d}.sets"
        self._sets_tmp = self.sets_path.with_name(f".{self.sets_path.name}.tmp")
        self._sets_file = open(self._sets_tmp, "wb") if self.exact else None
        self._writer = pq.ParquetWriter(self._keys_tmp, self.schema, compression="zstd")
        self.short_path = directory / f"u{unit_id:05d}{SHORT_FILE_SUFFIX}"
        self._short_tmp = self.short_path.with_name(f".{self.short_path.name}.tmp")
        self._short_schema = pa.schema([("row", pa.int64()), ("text", pa.large_string())])
        self._short_writer = (pq.ParquetWriter(self._short_tmp, self._short_schema, compression="zstd")
                              if cfg.short_pass_max_words > 0 else None)

    def add(self, text: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> None:
        """Sign the texts of one batch (rows are their row numbers)."""
        normalised = normalize_for_shingles(text)
        sig, counts = signatures(normalised, self.params)
        keys = band_keys(sig, self.banding.bands, self.banding.rows)
        sig.tofile(self._sig_file)
        cols = {"unit": np.full(len(rows), self.unit_id, dtype=np.int64), "row": rows, "shingles": counts}
        if self.exact:
            flat, offsets = shingle_sets(normalised, self.params)
            flat.tofile(self._sets_file)
            cols["set_len"] = np.diff(offsets)
        cols.update({n: keys[:, k] for k, n in enumerate(_band_names(self.banding.bands))})
        self._writer.write_table(pa.table(cols, schema=self.schema))
        if self._short_writer is not None:
            words = word_counts(normalised)
            short = np.flatnonzero((words > 0) & (words <= self.cfg.short_pass_max_words))
            if short.size:
                self._short_writer.write_table(pa.table({"row": np.asarray(rows)[short], "text": normalised.take(pa.array(short))},
                                                        schema=self._short_schema))

    def close(self) -> None:
        """Finish both files and move them to their final names."""
        self._writer.close()
        self._sig_file.flush()
        self._sig_file.close()
        self._sig_tmp.replace(self.sig_path)
        if self._sets_file is not None:
            self._sets_file.close()
            self._sets_tmp.replace(self.sets_path)
        self._keys_tmp.replace(self.keys_path)
        if self._short_writer is not None:
            self._short_writer.close()
            self._short_tmp.replace(self.short_path)

    def abort(self) -> None:
        """Drop the partial files."""
        self._writer.close()
        if self._short_writer is not None:
            self._short_writer.close()
            self._short_tmp.unlink(missing_ok=True)
        self._sig_file.close()
        self._sig_tmp.unlink(missing_ok=True)
        self._keys_tmp.unlink(missing_ok=True)
        if self._sets_file is not None:
            self._sets_file.close()
            self._sets_tmp.unlink(missing_ok=True)


class SignatureStore:
    """Random access to signatures of many units and index parts (memory-mapped a file at a time)."""

    def __init__(self, paths: dict[int, Path], num_perm: int) -> None:
        self.paths, self.num_perm = paths, num_perm

    def gather(self, units: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Signatures of (unit, index-in-unit) pairs, in the given order. Each file is mapped, its
        rows copied, and unmapped (mapped pages count in the resident memory while mapped)."""
        out = np.empty((len(units), self.num_perm), dtype=np.uint32)
        order = np.argsort(units, kind="stable")
        su = units[order]
        bounds = np.flatnonzero(np.concatenate([[True], su[1:] != su[:-1], [True]]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            sel = order[a:b]
            path = self.paths[int(su[a])]
            rows = path.stat().st_size // (4 * self.num_perm)
            block = np.memmap(path, dtype=np.uint32, mode="r", shape=(rows, self.num_perm))
            out[sel] = block[idx[sel]]
            del block
        return out


def signature_sources(work: Path, external: list[tuple[str, Path, Path]]) -> tuple[list[tuple[int, str, str | None]], dict[int, Path]]:
    """(unit, band-key parquet, run id or None) per signature file; units of index parts are negative."""
    files, sig_paths = [], {}
    for p in sorted(q for q in (work / "minhash").glob("u*.parquet") if not q.name.endswith(SHORT_FILE_SUFFIX)):
        unit = int(p.stem[1:])
        files.append((unit, str(p), None))
        sig_paths[unit] = p.with_suffix(".sig")
    for k, (run_id, keys, sig) in enumerate(external):
        files.append((-1 - k, str(keys), run_id))
        sig_paths[-1 - k] = sig
    return files, sig_paths


def candidate_pairs(work: Path) -> tuple[np.ndarray, dict]:
    """The `lsh-band` tasks' candidate pairs (doc codes, each pair once, sorted) and their counts
    of signed records (this run's kept, all of this run's, published)."""
    files = part_files(work, "lsh-band")
    if not files:
        return np.empty((0, 2), np.int64), {"signed": 0, "signed_all": 0, "index_records": 0}
    counts = read_done(files[0].with_suffix(".json"))
    pairs = union_code_pairs(pl.read_parquet(f).to_numpy().astype(np.int64).reshape(-1, 2) for f in files)
    return pairs, counts


def common_bits(cv: CommonValues, store: SignatureStore, index: DocIndex, docs: np.ndarray,
                 shingles_of: MinHashParams | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The boilerplate bits (`CommonValues.common`) of `docs` (ascending), packed 8 to a byte: a
    unit's signatures at a time, so the sketch can go before the records are clustered. With
    `shingles_of` (`verify: borderline`), also the mixed shingle values behind those minima
    (`minhash.unpermuted`), for every group's exact content sets."""
    out = np.empty((len(docs), (store.num_perm + 7) // 8), np.uint8)
    values = [np.zeros(0, np.uint32)]
    units = index.unit[docs]  # docs ascending: each unit's docs in one run
    cuts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1], [True]])) if len(docs) else []
    for a, b in zip(cuts[:-1], cuts[1:]):
        sig = store.gather(units[a:b], index.sig_idx[docs[a:b]])
        common = cv.common(sig)
        out[a:b] = np.packbits(common, axis=1)
        if shingles_of is not None:
            values.append(unpermuted(sig, common, shingles_of))
    return out, (np.unique(np.concatenate(values)) if shingles_of is not None else None)


def resolve_group(docs: pl.DataFrame, pairs: np.ndarray, short: ShortPass, store: SignatureStore, bits: np.ndarray | None,
                   work: Path, cfg: NearDedupConfig, prefer: str,
                   read_texts: Callable[[np.ndarray, np.ndarray], list[str]] | None,
                   boilerplate: np.ndarray | None) -> GroupResult:
    """Verify and cluster one group of whole components. `docs` (`pair_docs.group_frame`) numbers the
    group's docs 0..n-1 in doc order; `pairs` and `short` use those numbers; `bits` are the
    boilerplate bits (packed) of the group's docs, or None; `read_texts(units, rows)` gives the texts of
    this run's records whose pairs are re-checked on exact shingle sets (`verify: borderline`);
    `boilerplate`: the boilerplate shingle values of the whole run (`common_bits`), or None."""
    n = docs.height
    is_ext = docs["external"].to_numpy()
    units_arr, sig_idx = docs["unit"].to_numpy(), docs["sig_idx"].to_numpy()
    involved = np.unique(np.concatenate([pairs.ravel(), short.pairs.ravel()])).astype(np.int64)
    sigs = (store.gather(units_arr[involved], sig_idx[involved]) if involved.size
            else np.empty((0, cfg.num_perm), np.uint32))
    common = (np.unpackbits(bits[involved], axis=1, count=cfg.num_perm).astype(bool) if bits is not None else None)
    pos = np.full(n, -1, dtype=np.int64)  # doc -> row of `sigs`
    pos[involved] = np.arange(involved.size)
    exact = cfg.verify == "exact"
    if exact:
        own_involved = involved[~is_ext[involved]]
        flat, set_offs = ShingleSetStore(work / "minhash").gather(units_arr[own_involved], sig_idx[own_involved])
        set_pos = np.full(n, -1, dtype=np.int64)  # doc -> its set in (flat, set_offs)
        set_pos[own_involved] = np.arange(own_involved.size)

    text_sets = (TextSets(read_texts, units_arr, docs["row"].to_numpy(), params(cfg), boilerplate)
                 if cfg.verify == "borderline" else None)

    def similarity_parts(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(decision similarity, estimated Jaccard, content Jaccard, content positions) of doc pairs."""
        est, content, positions = pair_similarity(sigs, common, pos[left], pos[right])
        sim = decision_similarity(est, content, positions)
        check = ~is_ext[left] & ~is_ext[right]  # the index keeps no texts or sets: its pairs stay on signatures
        if text_sets is not None:
            sim = text_sets.recheck(sim, positions, left, right, check, cfg)
        elif exact:  # the exact shingle Jaccard, never above the content estimate
            j = pair_jaccard(flat, set_offs, set_pos[left[check]], set_pos[right[check]])
            est, sim = est.copy(), sim.copy()
            est[check] = j
            # no boilerplate position: the exact Jaccard; else never above the content estimate
            sim[check] = np.where(positions[check] == cfg.num_perm, j, np.minimum(j, content[check]))
        return sim, est, content, positions

    m = len(pairs)
    sims, ests, contents, cpos = np.empty(m), np.empty(m), np.empty(m), np.empty(m, np.int64)
    for s in range(0, m, 500_000):
        chunk = pairs[s : s + 500_000]
        sims[s : s + len(chunk)], ests[s : s + len(chunk)], contents[s : s + len(chunk)], cpos[s : s + len(chunk)] = (
            similarity_parts(chunk[:, 0], chunk[:, 1]))
    ok = sims >= cfg.threshold
    verified = pairs[ok] if pairs.size else pairs
    vetoed = int(np.sum((ests >= cfg.threshold) & ~ok))
    protected = is_ext  # published records never go
    hop_pairs = pairs[sims >= cfg.hop_bar] if cfg.hop_bar is not None and pairs.size else None
    verified_sims = sims[ok]

    # The short-document pass's pairs join the verified graph; a pair both passes verified keeps
    # the word pass's similarity.
    short_new = np.zeros(len(short.code), bool)
    if short.pairs.size:
        word_code = (verified[:, 0] << 32 | verified[:, 1]) if verified.size else np.zeros(0, np.int64)
        short_new = ~np.isin(short.code, word_code)
        verified = np.concatenate([verified.reshape(-1, 2), short.pairs[short_new]])
        verified_sims = np.concatenate([verified_sims, short.sims[short_new]])
        if hop_pairs is not None:
            hop_pairs = np.concatenate([hop_pairs.reshape(-1, 2), short.pairs[short_new & (short.sims >= cfg.hop_bar)]])
    short.added = short_new

    def similarity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The decision similarity, or the short pass's exact content Jaccard where that is higher."""
        sim = similarity_parts(left, right)[0]
        return np.maximum(sim, short.lookup(left, right)) if short.pairs.size else sim

    clusters = []
    if prefer == "central":
        # Greedy star cover: the record with the most verified neighbours left heads the next
        # star (ties: the longest, then input order); see lsh.central_stars.
        prio = docs["priority"].to_numpy()
        rank = np.empty(n, np.int64)
        rank[docs.select(pl.arg_sort_by(["text_bytes", "order_str", "order_int"], descending=[True, False, False],
                                        nulls_last=True)).to_series().to_numpy()] = np.arange(n)
        surv, via_arr, dsim = central_stars(n, verified, verified_sims, prio, rank, protected, hop_pairs)
        hop2 = np.flatnonzero(surv >= 0)
        hop2 = hop2[via_arr[hop2] >= 0]
        if hop2.size:
            dsim[hop2] = similarity(hop2, surv[hop2])
        dropped = np.flatnonzero(surv >= 0)
        order = np.argsort(surv[dropped], kind="stable")
        dropped = dropped[order]
        heads, starts = np.unique(surv[dropped], return_index=True)
        for h, grp in zip(heads, np.split(dropped, starts[1:])):
            clusters.append(Star(int(h), grp.tolist(), dsim[grp].tolist(), via_arr[grp].tolist()))
    else:
        labels = components(n, verified)
        rank_col = "quality" if prefer == "quality" else "text_bytes"
        grouped = (
            docs.with_columns(pl.Series("label", labels))
            .filter(pl.col("label").count().over("label") > 1)
            .sort(["label", "priority", rank_col, "order_str", "order_int"],
                  descending=[False, True, True, False, False], nulls_last=True)
        )
        # The second hop follows candidate pairs verified at `second_hop` (already computed above).
        hop = neighbour_lists(n, hop_pairs) if hop_pairs is not None else None
        g_docs = grouped["doc"].to_numpy()
        boundaries = np.flatnonzero(np.diff(grouped["label"].to_numpy())) + 1
        for members in np.split(g_docs, boundaries) if g_docs.size else []:
            clusters += anti_chaining_stars(members, similarity, cfg.threshold, protected, hop)
    return group_result(clusters, short, (sims, ests, contents, cpos), len(verified), vetoed, short_new,
                        (text_sets.rechecked, text_sets.flipped, len(text_sets)) if text_sets is not None else (0, 0, 0))
