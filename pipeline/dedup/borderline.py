"""`verify: borderline`: the pairs whose MinHash estimate is too close to the threshold to trust
are decided on the exact content Jaccard of their two texts, read back at the barrier.

    text_sets = TextSets(read_texts, units, rows, params, boilerplate)   # boilerplate: minhash.unpermuted
    near = borderline(sim, positions, threshold, num_perm, sigmas)      # which pairs to re-check
    j, union = text_sets.jaccard(left[near], right[near])
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.dedup.lsh import MIN_CONTENT_POSITIONS
from pipeline.dedup.minhash import MinHashParams, mixed_hashes, normalize_for_shingles, pair_jaccard, shingle_sets


class TextSets:
    """Exact content shingle sets of this run's records whose pair is borderline (`verify:
    borderline`): made from their texts read back on demand, without the boilerplate shingles (those
    behind a boilerplate minimum of the signatures of the records in a pair: a template's shingle is
    the template's minimum at a few positions, so nearly every shingle of a template is among them),
    and kept for later comparisons of the same records.

    `read_texts(units, rows)` returns the texts of those records (as pass 1 signed them), in order.
    """

    def __init__(self, read_texts: Callable[[np.ndarray, np.ndarray], list[str]], units: np.ndarray,
                 rows: np.ndarray, params: MinHashParams, boilerplate: np.ndarray | None) -> None:
        self.read_texts, self.units, self.rows, self.params = read_texts, units, rows, params
        self.boilerplate = boilerplate  # sorted mixed shingle values (`minhash.unpermuted`)
        self._sets: dict[int, np.ndarray] = {}
        self.rechecked = self.flipped = 0  # comparisons re-checked; of them, those that changed side

    def recheck(self, sim: np.ndarray, positions: np.ndarray, left: np.ndarray, right: np.ndarray, eligible: np.ndarray,
                cfg) -> np.ndarray:
        """`sim` with the exact content Jaccard wherever an `eligible` pair is `borderline`, unless
        both texts are all boilerplate (no content shingle: the estimate stays). A small content is
        still exact: two tiny pages under one template that differ in their one word are not
        copies, however alike their estimate. `cfg`: the `dedup.near` section."""
        idx = np.flatnonzero(eligible & borderline(sim, positions, cfg.threshold, cfg.num_perm, cfg.borderline_sigmas))
        j, union = self.jaccard(left[idx], right[idx])
        ok = union > 0
        idx, j = idx[ok], j[ok]
        self.rechecked += int(idx.size)
        self.flipped += int(np.sum((sim[idx] >= cfg.threshold) != (j >= cfg.threshold)))
        sim = sim.copy()
        sim[idx] = j
        return sim


    def __len__(self) -> int:
        return len(self._sets)

    def _load(self, docs: np.ndarray) -> None:
        units = self.units[docs]
        for u in np.unique(units):  # a unit's texts at a time: only their sets are kept
            self._load_unit(docs[units == u])

    def _load_unit(self, docs: np.ndarray) -> None:
        texts = self.read_texts(self.units[docs], self.rows[docs])
        flat, offs = shingle_sets(normalize_for_shingles(pa.array(texts, pa.large_string())), self.params)
        del texts
        keep = np.ones(len(flat), bool)
        if self.boilerplate is not None and self.boilerplate.size:
            mixed = mixed_hashes(flat)
            at = np.minimum(np.searchsorted(self.boilerplate, mixed), self.boilerplate.size - 1)
            keep = self.boilerplate[at] != mixed
        for k, d in enumerate(docs.tolist()):
            seg = slice(offs[k], offs[k + 1])
            self._sets[d] = flat[seg][keep[seg]]

    def jaccard(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact content Jaccard, size of the union of the two content sets) of the doc pairs
        (left[k], right[k])."""
        docs = np.unique(np.concatenate([left, right]))
        missing = np.array([d for d in docs.tolist() if d not in self._sets], dtype=np.int64)
        if missing.size:
            self._load(missing)
        parts = [self._sets[d] for d in docs.tolist()]
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        li, ri = np.searchsorted(docs, left), np.searchsorted(docs, right)
        j = pair_jaccard(np.concatenate(parts) if parts else np.zeros(0, np.uint64), offsets, li, ri)
        # |A u B| = (|A| + |B|) / (1 + J)
        union = np.rint((sizes[li] + sizes[ri]) / (1.0 + j)).astype(np.int64)
        return j, union


def borderline(sim: np.ndarray, positions: np.ndarray, threshold: float, num_perm: int, sigmas: float) -> np.ndarray:
    """Pairs whose signature similarity lies within `sigmas` standard errors of the threshold: the
    estimate's error at the threshold is sqrt(t (1 - t) / k) over the k positions it used (the
    content positions, or every position when fewer than MIN_CONTENT_POSITIONS are content)."""
    k = np.where(positions >= MIN_CONTENT_POSITIONS, positions, num_perm).astype(np.float64)
    return np.abs(sim - threshold) <= sigmas * np.sqrt(threshold * (1.0 - threshold) / np.maximum(k, 1.0))
