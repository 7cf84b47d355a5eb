"""Hamming-radius lookups of binary hashes (PDQ: 256 bits as 4 uint64 words), exact at the radius.

Two indexes behind one interface (`build`, `query`, `query_many`, `len`):

- `LinearIndex`: brute force, vectorised XOR + popcount over the whole list. The reference the
  tests compare against, and the right choice for lists of a few thousand hashes.
- `HammingIndex`: multi-index hashing (Norouzi et al., 2012). The bits are split into m chunks
  (default 16 chunks of 16 bits for PDQ). If two hashes differ in at most r bits, by pigeonhole
  some chunk differs in at most floor(r / m) bits. Each chunk has a table from its value to the
  entries holding that value (entry numbers sorted by value, found through CSR offsets over
  2^width slots, or by binary search when that table would be sparse);
  a query looks up every value within floor(r / m) bits of each of its chunks (1 + 16 values
  per chunk at r = 31), deduplicates the candidates and verifies each with a full popcount. So
  it returns every entry within r and none beyond: exact, not approximate. When the enumeration
  would touch more slots than a linear scan, it scans instead (still exact).

Results are (id, distance) pairs sorted by distance, then by build order.

Usage::

    index = HammingIndex()
    index.build(hexes_to_words(list_hexes), list_ids)        # (n, 4) uint64, n ids
    index.query(hex_to_words(h.hex), radius=31)               # [("entry-7", 3), ...]
    index.query_many(hexes_to_words(d.hexes), radius=31)      # one result list per query
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol

import numba
import numpy as np

from pipeline.errors import PipelineError

DEFAULT_CHUNK_BITS = 16
MAX_CHUNK_BITS = 32
# Give up enumerating chunk neighbours when it would cost more than this many candidate slots per
# entry: one linear scan of the list is then cheaper.
_SCAN_FACTOR = 0.25
# Never enumerate more neighbour slots than this per query (the mask table itself would be huge).
_MAX_SLOTS = 2_000_000


class HashIndexError(PipelineError):
    """An index was built or queried with arrays of the wrong shape or type."""


class HashIndex(Protocol):
    """What every Hamming index offers."""

    def build(self, hashes: np.ndarray, ids: Sequence[str]) -> None:
        """Index (n, words) uint64 hashes under their ids (replaces any previous content)."""

    def query(self, hash_words: np.ndarray, radius: int) -> list[tuple[str, int]]:
        """Every (id, distance) with distance <= radius, nearest first."""

    def query_many(self, queries: np.ndarray, radius: int) -> list[list[tuple[str, int]]]:
        """query() for each row of an (q, words) array."""

    def __len__(self) -> int:
        """Number of indexed hashes."""


def _as_hashes(hashes: np.ndarray, words: int | None = None) -> np.ndarray:
    arr = np.asarray(hashes)
    if arr.ndim != 2 or arr.dtype != np.uint64:
        raise HashIndexError(f"hashes must be an (n, words) uint64 array (see perceptual.hexes_to_words), "
                             f"got {arr.dtype} with shape {arr.shape}")
    if words is not None and arr.shape[1] != words:
        raise HashIndexError(f"hashes have {arr.shape[1]} words, the index holds {words}-word hashes")
    return np.ascontiguousarray(arr)


def _as_queries(queries: np.ndarray, words: int) -> np.ndarray:
    arr = np.asarray(queries)
    if arr.ndim == 1:
        arr = arr[None, :]
    return _as_hashes(arr, words)


def _check_radius(radius: int) -> int:
    if int(radius) != radius or radius < 0:
        raise HashIndexError(f"radius must be a non-negative integer, got {radius!r}")
    return int(radius)


class _BaseIndex:
    """Shared bookkeeping: ids, words per hash, result formatting."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._hashes = np.zeros((0, 0), dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._ids)

    def _store(self, hashes: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        arr = _as_hashes(hashes)
        if len(ids) != arr.shape[0]:
            raise HashIndexError(f"{arr.shape[0]} hashes but {len(ids)} ids")
        self._ids = list(ids)
        self._hashes = arr
        return arr

    @property
    def words(self) -> int:
        """Words (64-bit) per hash."""
        return self._hashes.shape[1]

    def query(self, hash_words: np.ndarray, radius: int) -> list[tuple[str, int]]:
        """Every (id, distance) with distance <= radius, nearest first."""
        return self.query_many(np.asarray(hash_words)[None, :], radius)[0]

    def query_many(self, queries: np.ndarray, radius: int) -> list[list[tuple[str, int]]]:
        """One sorted result list per row of `queries`."""
        radius = _check_radius(radius)
        if not self._ids:
            arr = np.asarray(queries)
            return [[] for _ in range(1 if arr.ndim == 1 else arr.shape[0])]
        q = _as_queries(queries, self.words)
        qi, ei, dist = self._search(q, radius)
        return self._format(q.shape[0], qi, ei, dist)

    def _search(self, q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _format(self, nq: int, qi: np.ndarray, ei: np.ndarray, dist: np.ndarray) -> list[list[tuple[str, int]]]:
        order = np.lexsort((ei, dist, qi))
        qi, ei, dist = qi[order], ei[order], dist[order]
        bounds = np.searchsorted(qi, np.arange(nq + 1))
        ids = self._ids
        out: list[list[tuple[str, int]]] = []
        for k in range(nq):
            lo, hi = bounds[k], bounds[k + 1]
            out.append([(ids[e], int(d)) for e, d in zip(ei[lo:hi].tolist(), dist[lo:hi].tolist())])
        return out


class LinearIndex(_BaseIndex):
    """Brute force: XOR and popcount against every entry. Exact; O(n) per query."""

    def build(self, hashes: np.ndarray, ids: Sequence[str]) -> None:
        """Keep the (n, words) uint64 hashes and their ids."""
        self._store(hashes, ids)

    def _search(self, q, radius):
        qis, eis, ds = [], [], []
        for k in range(q.shape[0]):
            d = np.bitwise_count(self._hashes ^ q[k]).sum(axis=1, dtype=np.int64)
            hit = np.flatnonzero(d <= radius)
            qis.append(np.full(hit.size, k, dtype=np.int64))
            eis.append(hit.astype(np.int64))
            ds.append(d[hit])
        return np.concatenate(qis), np.concatenate(eis), np.concatenate(ds)


def _chunk_layout(nbits: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Start bit and width of each of `chunks` near-equal chunks covering nbits bits."""
    base, extra = divmod(nbits, chunks)
    widths = np.array([base + (1 if j < extra else 0) for j in range(chunks)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return starts, widths


def _chunk_values(hashes: np.ndarray, start: int, width: int) -> np.ndarray:
    """Bits [start, start+width) of each hash (bit i = bit i % 64 of word i // 64, LSB first)."""
    w, b = divmod(start, 64)
    v = hashes[:, w] >> np.uint64(b)
    if b + width > 64:
        v = v | (hashes[:, w + 1] << np.uint64(64 - b))
    return (v & np.uint64((1 << width) - 1)).astype(np.int64)


def _neighbour_masks(width: int, flips: int) -> np.ndarray:
    """Every width-bit mask with at most `flips` bits set, fewest bits first."""
    masks = [0]
    for k in range(1, min(flips, width) + 1):
        masks.extend(sum(1 << i for i in c) for c in itertools.combinations(range(width), k))
    return np.array(masks, dtype=np.int64)


def _neighbour_count(width: int, flips: int) -> int:
    return sum(math.comb(width, k) for k in range(min(flips, width) + 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _key(row, start, width):
    w = start >> 6
    b = start & 63
    v = row[w] >> np.uint64(b)
    if b + width > 64:
        v |= row[w + 1] << np.uint64(64 - b)
    return np.int64(v & ((np.uint64(1) << np.uint64(width)) - np.uint64(1)))


@numba.njit(cache=True, nogil=True, inline="always")
def _lower_bound(vals, lo, hi, x):
    while lo < hi:
        mid = (lo + hi) >> 1
        if vals[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def _mih_search(queries, hashes, starts, widths, offsets, offset_base, sorted_vals, members, masks, mask_base,
                radius, stamp, stamp0, out_q, out_e, out_d):
    """Candidates from every chunk's neighbour slots, deduplicated by stamp, verified by popcount.

    A slot's entries are found through the CSR offsets when the chunk tables are dense
    (offsets.size > 0), else by binary search in the chunk's sorted values. Writes up to
    len(out_q) results and returns the total found (the caller retries if it is larger)."""
    n = hashes.shape[0]
    nwords = hashes.shape[1]
    m = starts.shape[0]
    cap = out_q.shape[0]
    dense = offsets.shape[0] > 0
    found = 0
    for qi in range(queries.shape[0]):
        q = queries[qi]
        mark = stamp0 + qi
        for j in range(m):
            key = _key(q, starts[j], widths[j])
            obase = offset_base[j]
            mbase = j * n
            for t in range(mask_base[j], mask_base[j + 1]):
                slot = key ^ masks[t]
                if dense:
                    lo = offsets[obase + slot]
                    hi = offsets[obase + slot + 1]
                else:
                    lo = _lower_bound(sorted_vals, mbase, mbase + n, slot) - mbase
                    hi = _lower_bound(sorted_vals, mbase + lo, mbase + n, slot + 1) - mbase
                for p in range(lo, hi):
                    e = members[mbase + p]
                    if stamp[e] == mark:
                        continue
                    stamp[e] = mark
                    d = 0
                    for w in range(nwords):
                        d += _popcount(hashes[e, w] ^ q[w])
                    if d <= radius:
                        if found < cap:
                            out_q[found] = qi
                            out_e[found] = e
                            out_d[found] = d
                        found += 1
    return found


@numba.njit(cache=True, nogil=True)
def _scan_search(queries, hashes, radius, out_q, out_e, out_d):
    """Linear scan (used when the radius is too large for the chunk tables to help)."""
    cap = out_q.shape[0]
    found = 0
    for qi in range(queries.shape[0]):
        for e in range(hashes.shape[0]):
            d = 0
            for w in range(hashes.shape[1]):
                d += _popcount(hashes[e, w] ^ queries[qi, w])
            if d <= radius:
                if found < cap:
                    out_q[found] = qi
                    out_e[found] = e
                    out_d[found] = d
                found += 1
    return found


@numba.njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    # SWAR popcount; LLVM turns it into a single POPCNT where the CPU has one.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


class HammingIndex(_BaseIndex):
    """Multi-index hashing: exact Hamming-radius search, sub-linear on large lists.

    `chunks` defaults to bits / 16 (16 chunks of 16 bits for PDQ), which suits lists of about
    2^16 to 2^24 hashes: at radius 31 a query visits 16 x 17 slots holding about n / 4096
    candidates in all. Chunks may be up to 32 bits wide; tables are dense (2^width slots) while
    that is at most max(2^16, 4n), binary-searched sorted values otherwise.
    `scan_fallback=False` forces the chunk tables even where a scan would be cheaper (tests), up to
    _MAX_SLOTS neighbour slots per query.
    Queries update a scratch array: use one index per thread.
    """

    def __init__(self, chunks: int | None = None, *, scan_fallback: bool = True) -> None:
        super().__init__()
        self._chunks = chunks
        self._scan_fallback = scan_fallback
        self._stamp = np.zeros(0, dtype=np.int64)
        self._stamp_next = 1
        self._mask_cache: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}

    def build(self, hashes: np.ndarray, ids: Sequence[str]) -> None:
        """Build one value -> entries table per chunk (a stable sort per chunk: O(m n log n))."""
        arr = self._store(hashes, ids)
        nbits = arr.shape[1] * 64
        m = self._chunks if self._chunks is not None else max(1, nbits // DEFAULT_CHUNK_BITS)
        if not 1 <= m <= nbits:
            raise HashIndexError(f"chunks must be in 1..{nbits}, got {m}")
        starts, widths = _chunk_layout(nbits, m)
        if widths.max() > MAX_CHUNK_BITS:
            raise HashIndexError(f"{m} chunks of {nbits} bits are {int(widths.max())} bits wide; use at least "
                                 f"{math.ceil(nbits / MAX_CHUNK_BITS)} chunks")
        n = arr.shape[0]
        # Dense CSR tables (2^width + 1 offsets per chunk) when they are not much bigger than the
        # list; otherwise binary search over each chunk's sorted values (O(n) memory).
        dense = (1 << int(widths.max())) <= max(1 << DEFAULT_CHUNK_BITS, 4 * n)
        offset_base = np.zeros(m + 1, dtype=np.int64)
        if dense:
            offset_base[1:] = np.cumsum((1 << widths) + 1)
        offsets = np.zeros(int(offset_base[-1]), dtype=np.int64)
        sorted_vals = np.zeros(0 if dense else m * n, dtype=np.int64)
        members = np.empty(m * n, dtype=np.int32 if n < 2**31 else np.int64)
        for j in range(m):
            vals = _chunk_values(arr, int(starts[j]), int(widths[j]))
            order = np.argsort(vals, kind="stable")
            members[j * n:(j + 1) * n] = order
            if dense:
                counts = np.bincount(vals, minlength=1 << int(widths[j]))
                np.cumsum(counts, out=offsets[offset_base[j] + 1:offset_base[j + 1]])
            else:
                sorted_vals[j * n:(j + 1) * n] = vals[order]
        self._starts, self._widths = starts, widths
        self._offsets, self._offset_base, self._members = offsets, offset_base, members
        self._sorted_vals = sorted_vals
        self._stamp = np.zeros(n, dtype=np.int64)
        self._stamp_next = 1
        self._mask_cache = {}

    def _masks(self, radius: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Neighbour masks per chunk for this radius, and the slots a query would visit."""
        if radius not in self._mask_cache:
            flips = radius // len(self._widths)
            per = [_neighbour_count(int(w), flips) for w in self._widths]
            slots = int(sum(per))
            if slots > _MAX_SLOTS or (self._scan_fallback and slots > _SCAN_FACTOR * max(1, len(self))):
                self._mask_cache[radius] = (np.zeros(0, np.int64), np.zeros(1, np.int64), slots)
            else:
                by_width = {w: _neighbour_masks(w, flips) for w in {int(x) for x in self._widths}}
                masks = np.concatenate([by_width[int(w)] for w in self._widths])
                base = np.zeros(len(per) + 1, dtype=np.int64)
                base[1:] = np.cumsum(per)
                self._mask_cache[radius] = (masks, base, slots)
        return self._mask_cache[radius]

    def _search(self, q, radius):
        masks, mask_base, _slots = self._masks(radius)
        cap = max(64, 16 * q.shape[0])
        while True:
            out_q = np.empty(cap, dtype=np.int64)
            out_e = np.empty(cap, dtype=np.int64)
            out_d = np.empty(cap, dtype=np.int64)
            if masks.size == 0:
                found = _scan_search(q, self._hashes, radius, out_q, out_e, out_d)
            else:
                if self._stamp_next + q.shape[0] >= 2**62:
                    self._stamp[:] = 0
                    self._stamp_next = 1
                found = _mih_search(q, self._hashes, self._starts, self._widths, self._offsets, self._offset_base,
                                    self._sorted_vals, self._members, masks, mask_base, radius, self._stamp, self._stamp_next,
                                    out_q, out_e, out_d)
                self._stamp_next += q.shape[0]
            if found <= cap:
                return out_q[:found], out_e[:found], out_d[:found]
            cap = found
