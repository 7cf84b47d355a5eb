"""LSH banding, candidate pairs, verification and anti-chaining clustering for near duplicates.

Usage::

    bands, rows, p = choose_bands(128, 0.8, min_probability=0.9)
    keys = band_keys(signatures, bands, rows)                  # (n, bands) uint64
    pairs = candidate_pairs([keys[:, k] for k in range(bands)])  # (m, 2) doc indexes, i < j
    sim = estimated_similarity(sig_a, sig_b)
    stars = anti_chaining_stars(ordered_members, similarity, 0.8, protected)   # per component
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl


def candidate_probability(threshold: float, bands: int, rows: int) -> float:
    """P(a pair with Jaccard `threshold` shares at least one band)."""
    return 1.0 - (1.0 - threshold**rows) ** bands


def _false_positive_weight(threshold: float, bands: int, rows: int, steps: int = 200) -> float:
    """Integral of the candidate probability over J in [0, threshold): the work spent on non-matches."""
    xs = np.linspace(0.0, threshold, steps, endpoint=False)
    return float(np.sum(1.0 - (1.0 - xs**rows) ** bands) * threshold / steps)


def choose_bands(num_perm: int, threshold: float, min_probability: float = 0.9) -> tuple[int, int, float]:
    """(bands, rows, probability): the banding with the fewest false candidates whose probability of
    flagging a pair at `threshold` is at least `min_probability`.

    datasketch's "optimal" parameters weigh misses and false candidates equally and give 9 x 13 at
    0.8 with 128 permutations, which flags a pair at J = 0.8 only about 40% of the time; here
    recall at the threshold is a hard constraint and verification removes the false candidates.
    """
    best = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        p = candidate_probability(threshold, bands, rows)
        if p < min_probability:
            continue
        fp = _false_positive_weight(threshold, bands, rows)
        if best is None or fp < best[0]:
            best = (fp, bands, rows, p)
    if best is None:
        raise ValueError(f"no banding of {num_perm} permutations reaches probability {min_probability} at {threshold}")
    return best[1], best[2], best[3]


@numba.njit(cache=True, nogil=True)
def _band_keys(sig, bands, rows, out):
    n = sig.shape[0]
    for i in range(n):
        for k in range(bands):
            h = np.uint64(0x9E3779B97F4A7C15) * np.uint64(k + 1)
            for r in range(k * rows, (k + 1) * rows):
                h ^= np.uint64(sig[i, r]) + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
                # splitmix64 finaliser: every input bit affects every output bit
                h ^= h >> np.uint64(30)
                h *= np.uint64(0xBF58476D1CE4E5B9)
                h ^= h >> np.uint64(27)
                h *= np.uint64(0x94D049BB133111EB)
                h ^= h >> np.uint64(31)
            out[i, k] = h


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key per band: equal band values give equal keys; distinct ones collide with
    probability about 2**-64 per pair and band."""
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    if sig.shape[0]:
        _band_keys(np.ascontiguousarray(sig), bands, rows, out)
    return out


@numba.njit(cache=True, nogil=True)
def _emit_pairs(members, offsets, limit, out_a, out_b):
    m = 0
    for g in range(offsets.shape[0] - 1):
        s, e = offsets[g], offsets[g + 1]
        k = e - s
        if k <= limit:
            for x in range(s, e):
                for y in range(x + 1, e):
                    out_a[m] = members[x]
                    out_b[m] = members[y]
                    m += 1
        else:
            for y in range(s + 1, e):
                out_a[m] = members[s]
                out_b[m] = members[y]
                m += 1
    return m


def bucket_pairs(docs: np.ndarray, keys: np.ndarray, limit: int) -> np.ndarray:
    """Pairs (i < j) of docs sharing a key: every pair in a bucket of at most `limit` docs, and
    a star to the bucket's lowest doc in a larger one (so a huge bucket costs linear work)."""
    if docs.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    docs = np.asarray(docs, dtype=np.int64)
    order = np.lexsort((docs, keys))  # by key, then doc
    k, members = keys[order], docs[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(k)]])).astype(np.int64)
    multi = sizes >= 2
    if not multi.any():
        return np.empty((0, 2), dtype=np.int64)
    starts, lens = starts[multi], sizes[multi]
    sel = np.repeat(starts, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))
    keep = members[sel]
    new_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    total = int(np.sum(np.where(lens <= limit, lens * (lens - 1) // 2, lens - 1)))
    a = np.empty(total, dtype=np.int64)
    b = np.empty(total, dtype=np.int64)
    m = _emit_pairs(keep, new_offsets, limit, a, b)
    return np.stack([a[:m], b[:m]], axis=1)


def unique_pairs(parts: list[np.ndarray]) -> np.ndarray:
    """Union of pair arrays, each pair once, sorted."""
    if not parts:
        return np.empty((0, 2), dtype=np.int64)
    allp = np.concatenate(parts)
    if allp.size == 0:
        return allp.reshape(0, 2)
    # one int64 per pair (i < j < 2**31): a 1-D unique instead of np.unique(axis=0)
    if allp.max() < 2**31:
        code = np.unique(allp[:, 0] << 32 | allp[:, 1])
        return np.stack([code >> 32, code & 0xFFFFFFFF], axis=1)
    return np.unique(allp, axis=0)


def estimated_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of row-aligned signatures: the fraction of equal hash values."""
    return np.mean(sig_a == sig_b, axis=1)


@numba.njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _components(n, a, b):
    parent = np.arange(n)
    for i in range(a.shape[0]):
        ra, rb = _find(parent, a[i]), _find(parent, b[i])
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label (the lowest member) of each of `n` docs."""
    if pairs.size == 0:
        return np.arange(n)
    return _components(n, pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64))


@dataclass(frozen=True)
class Star:
    """One survivor and the records dropped for it: `similarity` to the survivor, and `via` the
    dropped record through which an indirect (second-hop) drop was reached, or -1 for a direct one."""

    survivor: int
    dropped: list[int]
    similarity: list[float]
    via: list[int]


def neighbour_lists(n: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency (indptr, indices) of `n` docs over undirected `pairs`, neighbours sorted."""
    if pairs.size == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    both = np.concatenate([pairs, pairs[:, ::-1]]).astype(np.int64)
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(both[:, 0], minlength=n))]).astype(np.int64)
    return indptr, both[:, 1].copy()


def anti_chaining_stars(members: np.ndarray, similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
                        threshold: float, protected: np.ndarray,
                        hop: tuple[np.ndarray, np.ndarray] | None = None) -> list[Star]:
    """Split one connected component into stars without chaining (A~B, B~C, A!~C).

    `members` come in survivor order (the preferred first). The first heads a star, and every
    other member at least `threshold` similar to it is dropped for it; the rest start over.
    Records in `protected` (doc-indexed bool: published ones) are never dropped, and a protected
    head drops only unprotected records. With `hop` (the adjacency of `neighbour_lists` over pairs
    verified at a second bar), a member adjacent there to a record just dropped directly is
    dropped for the same survivor too: one indirect step at most, so no chain grows further.

        # S~O 0.85, O~D 0.85, S~D 0.7, threshold 0.8: D stays apart, or goes via O with `hop`
        anti_chaining_stars(np.array([s, o, d]), sim, 0.8, protected, hop=neighbour_lists(n, pairs))
    """
    stars: list[Star] = []
    remaining = np.asarray(members, dtype=np.int64)
    while len(remaining) > 1:
        s, rest = remaining[0], remaining[1:]
        sim = similarity(np.full(len(rest), s, dtype=np.int64), rest)
        hit = (sim >= threshold) & ~protected[rest]
        via = np.full(len(rest), -1, dtype=np.int64)
        if hop is not None and hit.any():
            indptr, indices = hop
            rank = {int(d): k for k, d in enumerate(rest)}
            direct = rest[hit]  # in survivor order, so `via` names the most preferred such record
            for m in direct:
                for x in indices[indptr[m]:indptr[m + 1]]:
                    k = rank.get(int(x))
                    if k is not None and not hit[k] and via[k] < 0 and not protected[x]:
                        via[k] = m
            hit |= via >= 0
        if hit.any():
            stars.append(Star(int(s), rest[hit].tolist(), sim[hit].tolist(), via[hit].tolist()))
        remaining = rest[~hit & ~protected[rest]] if protected[s] else rest[~hit]
    return stars


def log2_histogram(sizes: list[int]) -> dict[str, int]:
    """Cluster sizes bucketed as "2", "3-4", "5-8", ...: for the manifest."""
    hist: dict[str, int] = {}
    for s in sizes:
        if s < 2:
            continue
        hi = 1 << math.ceil(math.log2(s))
        lo = hi // 2 + 1
        label = str(s) if s == 2 else f"{lo}-{hi}"
        hist[label] = hist.get(label, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: int(kv[0].split("-")[0])))


def add_histograms(hists: list[dict[str, int]]) -> dict[str, int]:
    """The `log2_histogram` of the sizes of several histograms together (e.g. one per group)."""
    total: dict[str, int] = {}
    for h in hists:
        for label, count in h.items():
            total[label] = total.get(label, 0) + count
    return dict(sorted(total.items(), key=lambda kv: int(kv[0].split("-")[0])))


# ------------------------------------------------------------------------------------------------
# Boilerplate-aware similarity.
#
# A shingle that many unrelated documents share (a site's header, footer, cookie notice) makes
# them look alike. MinHash sees it without the shingles: when the minimum of position p of a
# document falls on such a shingle, the value (p, v) recurs in the signatures of many documents.
# `CommonValues` counts (p, v) over every signed record (a count-min sketch: it may over-count,
# never under-count, so an over-count only leaves a position out of the content estimate), and
# `pair_similarity` estimates, beside the plain Jaccard, the Jaccard of the two documents'
# CONTENT: over the positions whose minimum over both documents is not a common value. Given that
# the minimum of the union falls on a non-boilerplate shingle, it is uniformly one of the
# non-boilerplate shingles of the union, so matches / such positions estimate J(A \ T, B \ T).


@numba.njit(cache=True, inline="always")
def _mix64(x):
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@numba.njit(cache=True, nogil=True)
def _cm_add(sig, rows, table, mask):
    num_perm = sig.shape[1]
    for k in range(rows.shape[0]):
        i = rows[k]
        for p in range(num_perm):
            key = (np.uint64(p) << np.uint64(32)) | np.uint64(sig[i, p])
            h = _mix64(key + np.uint64(0x9E3779B97F4A7C15))
            a = np.int64(h & mask)
            b = np.int64((h >> np.uint64(32)) & mask)
            if table[0, a] < 65535:
                table[0, a] += 1
            if table[1, b] < 65535:
                table[1, b] += 1


@numba.njit(cache=True, nogil=True)
def _cm_common(sig, table, mask, min_docs, out):
    num_perm = sig.shape[1]
    for i in range(sig.shape[0]):
        for p in range(num_perm):
            key = (np.uint64(p) << np.uint64(32)) | np.uint64(sig[i, p])
            h = _mix64(key + np.uint64(0x9E3779B97F4A7C15))
            a = np.int64(h & mask)
            b = np.int64((h >> np.uint64(32)) & mask)
            out[i, p] = min(table[0, a], table[1, b]) >= min_docs


class CommonValues:
    """Count-min sketch of (position, value) over signatures: which minima recur in `min_docs` or
    more documents (2 rows of uint16 counters, about n * num_perm / 8 counters each)."""

    def __init__(self, expected_docs: int, num_perm: int, min_docs: int) -> None:
        size = 1 << max(16, min(26, int(np.ceil(np.log2(max(1, expected_docs * num_perm / 8))))))
        self.table = np.zeros((2, size), dtype=np.uint16)
        self.mask = np.uint64(size - 1)
        self.min_docs = min_docs

    def add(self, sig: np.ndarray, rows: np.ndarray) -> None:
        """Count the signatures `sig[rows]`."""
        if len(rows):
            _cm_add(sig, np.asarray(rows, np.int64), self.table, self.mask)

    def absorb(self, path) -> None:
        """Add the raw counters (`table.tofile`) of a sketch of the same size counted over other
        signatures, capped as counting caps them (the sum of capped counts, capped, is the capped
        count of all); read a slice at a time, so only one sketch is held."""
        size, flat, step = self.table.size, self.table.reshape(-1), 1 << 20
        if os.path.getsize(path) != size * 2:
            raise ValueError(f"a sketch of another size: {os.path.getsize(path) // 2} counters, not {size}")
        with open(path, "rb") as f:
            for a in range(0, size, step):  # the sum needs 32 bits
                total = flat[a:a + step].astype(np.uint32) + np.fromfile(f, np.uint16, min(step, size - a))
                flat[a:a + step] = np.minimum(total, 65535)

    def common(self, sig: np.ndarray) -> np.ndarray:
        """(n, num_perm) bool: the value at that position recurs in at least `min_docs` documents."""
        out = np.zeros(sig.shape, dtype=np.bool_)
        if sig.shape[0]:
            _cm_common(np.ascontiguousarray(sig), self.table, self.mask, self.min_docs, out)
        return out


@numba.njit(cache=True, nogil=True)
def _pair_similarity(sigs, common, left, right, est, content, positions):
    num_perm = sigs.shape[1]
    for k in range(left.shape[0]):
        i, j = left[k], right[k]
        eq = 0
        match = 0
        tot = 0
        for p in range(num_perm):
            a, b = sigs[i, p], sigs[j, p]
            if a == b:
                eq += 1
                if not common[i, p]:
                    match += 1
                    tot += 1
            elif a < b:
                if not common[i, p]:
                    tot += 1
            elif not common[j, p]:
                tot += 1
        est[k] = eq / num_perm
        positions[k] = tot
        content[k] = match / tot if tot else 1.0


def pair_similarity(sigs: np.ndarray, common: np.ndarray | None, left: np.ndarray,
                    right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimated Jaccard, estimated content Jaccard, content positions) of the row pairs
    (left[k], right[k]) of `sigs`; `common` (same shape, bool) marks boilerplate minima (None:
    nothing is, and the content Jaccard is the Jaccard)."""
    m = len(left)
    est, content, positions = np.empty(m), np.empty(m), np.empty(m, np.int64)
    if m:
        if common is None:
            common = np.zeros((1, sigs.shape[1]), np.bool_).repeat(sigs.shape[0], axis=0)
        _pair_similarity(sigs, common, np.asarray(left, np.int64), np.asarray(right, np.int64), est, content, positions)
    return est, content, positions


MIN_CONTENT_POSITIONS = 16


def decision_similarity(est: np.ndarray, content: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The similarity a decision uses: the content Jaccard when at least MIN_CONTENT_POSITIONS of
    the signature's positions fall on content (non-boilerplate) shingles; below that the lower of
    the plain and the content estimate (a pair that is all boilerplate and identical has content
    similarity 1 and keeps its plain estimate)."""
    return np.where(positions >= MIN_CONTENT_POSITIONS, content, np.minimum(est, content))


# ------------------------------------------------------------------------------------------------
# Central stars: greedy cover of the verified graph.


@numba.njit(cache=True)
def _central_stars(n, indptr, indices, weights, hop_indptr, hop_indices, prio, rank, protected, survivor, via, sim_out):
    """Greedy: the unassigned record with the most unassigned verified neighbours (ties: `rank`,
    lower first) heads a star and takes them; then each record they reach over a second-hop edge
    goes too, through the most central such neighbour. Records already assigned never move."""
    assigned = np.zeros(n, dtype=np.bool_)
    deg = np.zeros(n, dtype=np.int64)
    heap = []
    for i in range(n):
        d = 0
        for e in range(indptr[i], indptr[i + 1]):
            if not protected[indices[e]]:
                d += 1
        deg[i] = d
        if indptr[i + 1] > indptr[i]:
            heap.append((-prio[i], -d, rank[i], i))
    heapq.heapify(heap)
    while len(heap):
        negp, negd, _r, s = heapq.heappop(heap)
        if assigned[s]:
            continue
        if -negd != deg[s]:
            heapq.heappush(heap, (negp, -deg[s], rank[s], s))
            continue
        if deg[s] == 0:
            continue
        assigned[s] = True
        survivor[s] = -1
        direct = []
        for e in range(indptr[s], indptr[s + 1]):
            x = indices[e]
            if not assigned[x] and not protected[x]:
                assigned[x] = True
                survivor[x] = s
                via[x] = -1
                sim_out[x] = weights[e]
                direct.append(x)
        # second hop, only through records just dropped directly for s
        for m in direct:
            for e in range(hop_indptr[m], hop_indptr[m + 1]):
                x = hop_indices[e]
                if not assigned[x] and not protected[x]:
                    assigned[x] = True
                    survivor[x] = s
                    via[x] = m
                    sim_out[x] = -1.0  # filled in by the caller: similarity to the survivor
        # every record whose degree counted one of the newly assigned loses it
        touched = [s] + direct
        for m in direct:
            for e in range(hop_indptr[m], hop_indptr[m + 1]):
                x = hop_indices[e]
                if survivor[x] == s and via[x] == m:
                    touched.append(x)
        for t in touched:
            if protected[t]:  # never counted in a degree
                continue
            for e in range(indptr[t], indptr[t + 1]):
                y = indices[e]
                if not assigned[y]:
                    deg[y] -= 1
    return assigned


def central_stars(n: int, verified: np.ndarray, sims: np.ndarray, prio: np.ndarray, rank: np.ndarray,
                  protected: np.ndarray, hop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cover the verified graph with stars, most central first.

    `verified` (m, 2) are the pairs similar enough to drop one for the other, `sims` their
    similarities; `prio` (higher first: source priority) comes before centrality, `rank` orders
    ties (lower heads first: the configured preference, then record order); `protected` records (published) are never dropped. `hop` (k, 2) are the pairs
    verified at the second-hop bar, or None. Returns (survivor, via, similarity) per record:
    survivor -1 for a star's head, -2 for a record in no star, else the head's index; via the
    directly dropped record a second-hop drop was reached through (-1 if direct); similarity
    to the head for direct drops (NaN otherwise: the caller computes it for second-hop drops).
    Every drop is thus justified by a verified edge to a record that is kept, or by a verified
    edge to such a drop.
    """
    survivor = np.full(n, -2, dtype=np.int64)
    via = np.full(n, -1, dtype=np.int64)
    sim_out = np.full(n, np.nan)
    if verified.size == 0:
        return survivor, via, sim_out
    both = np.concatenate([verified, verified[:, ::-1]]).astype(np.int64)
    w = np.concatenate([sims, sims]).astype(np.float64)
    # Neighbours in rank order, so a star takes them (and the second hop reaches) deterministically.
    order = np.lexsort((rank[both[:, 1]], both[:, 0]))
    both, w = both[order], w[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(both[:, 0], minlength=n))]).astype(np.int64)
    if hop is not None and hop.size:
        hb = np.concatenate([hop, hop[:, ::-1]]).astype(np.int64)
        hb = hb[np.lexsort((rank[hb[:, 1]], hb[:, 0]))]
        hop_indptr = np.concatenate([[0], np.cumsum(np.bincount(hb[:, 0], minlength=n))]).astype(np.int64)
        hop_indices = hb[:, 1].copy()
    else:
        hop_indptr, hop_indices = np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    _central_stars(n, indptr, both[:, 1].copy(), w, hop_indptr, hop_indices, prio.astype(np.int64), rank.astype(np.int64),
                   protected.astype(np.bool_), survivor, via, sim_out)
    return survivor, via, sim_out
