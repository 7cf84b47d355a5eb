"""MinHash signatures, computed over whole batches in compiled code, equal to datasketch's.

The permutation family is datasketch 2.x's default "affine32" scheme: the 32-bit shingle hash is
pre-mixed with the MurmurHash3 finalizer, then permuted with `a * h + b mod 2**32` (odd `a`),
with (a, b) drawn exactly as datasketch draws them from `numpy.random.RandomState(seed)`.
The shingle hash is FNV-1a 64 over the shingle's UTF-8 bytes, folded to 32 bits
(`shingle_hash32`). So for the same shingles and seed,

    MinHash(num_perm, seed=seed, hashfunc=shingle_hash32).update(s) for s in shingles

gives exactly our `hashvalues` (tests/unit/dedup/test_minhash.py proves it).

Shingles are taken from normalised text (NFKC, lowercase, punctuation to spaces, whitespace
runs to one space): word n-grams are spans of n consecutive space-separated tokens, character
n-grams spans of n consecutive code points.

Usage::

    sigs, counts = signatures(texts, MinHashParams(num_perm=128, ngram=5))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MAX_HASH32 = np.uint32(0xFFFFFFFF)


@dataclass(frozen=True)
class MinHashParams:
    """Shingling and signature settings."""

    num_perm: int = 128
    seed: int = 1
    ngram: int = 5
    char_ngrams: bool = False
    short_docs: str = "whole"  # "whole": fewer tokens than n -> one shingle of all; "skip": no signature


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch's affine32 scheme for `num_perm` and `seed`."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def shingle_hash32(data: bytes) -> int:
    """FNV-1a 64 of `data`, folded to 32 bits (xor of the halves): the hashfunc to give datasketch."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 32)) & 0xFFFFFFFF


def normalize_for_shingles(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC, lowercase, punctuation and symbols to spaces, whitespace runs to one space, trimmed."""
    s = pl.Series("t", text)
    # NFKC leaves ASCII unchanged: normalise only the texts that need it (most of an English corpus does not).
    non_ascii = s.str.contains(r"[^\x00-\x7F]").fill_null(False)
    if non_ascii.any():
        idx = non_ascii.arg_true()
        s = s.scatter(idx, s.gather(idx).str.normalize("NFKC"))
    s = (
        s.str.to_lowercase()
        .str.replace_all(r"[\p{P}\p{S}]+", " ")
        # Only runs that are not already a single space need rewriting (far fewer matches than \s+).
        .str.replace_all(r"\s{2,}|[^\S ]", " ")
        .str.replace_all(r" {2,}", " ")
        .str.strip_chars()
    )
    arr = s.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def shingles(text: str, params: MinHashParams) -> list[bytes]:
    """The shingles of one already-normalised text, in Python (reference for tests and explain)."""
    if params.char_ngrams:
        chars = text
        if len(chars) < params.ngram:
            return [chars.encode()] if chars and params.short_docs == "whole" else []
        return [chars[i : i + params.ngram].encode() for i in range(len(chars) - params.ngram + 1)]
    tokens = text.split(" ") if text else []
    if len(tokens) < params.ngram:
        return [" ".join(tokens).encode()] if tokens and params.short_docs == "whole" else []
    return [" ".join(tokens[i : i + params.ngram]).encode() for i in range(len(tokens) - params.ngram + 1)]


@numba.njit(cache=True, nogil=True, inline="always")
def _fnv_span(data, start, end):
    h = np.uint64(0xCBF29CE484222325)
    for k in range(start, end):
        h = (h ^ np.uint64(data[k])) * np.uint64(0x100000001B3)
    return np.uint32((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF))


@numba.njit(cache=True, nogil=True, inline="always")
def _fmix32(h):
    # Numba widens uint32 products to 64 bits: mask back to 32 after each multiply.
    h = np.uint64(h)
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return h ^ (h >> np.uint64(16))


@numba.njit(cache=True, nogil=True, inline="always")
def _apply(sig, i, hv, a, b):
    m = _fmix32(hv)
    for p in range(a.shape[0]):
        v = np.uint32((np.uint64(a[p]) * m + np.uint64(b[p])) & np.uint64(0xFFFFFFFF))
        if v < sig[i, p]:
            sig[i, p] = v


@numba.njit(cache=True, nogil=True)
def _bounds(data, start, end, char_mode, bounds):
    """Shingle unit boundaries of one text: code point starts (char mode) or token starts.

    Fills `bounds` so that unit u spans [bounds[u], bounds[u + 1]) in char mode and
    [bounds[u], bounds[u + 1] - 1) in word mode (a virtual space follows the last token).
    Returns the number of units.
    """
    nb = 0
    if char_mode:
        for k in range(start, end):
            if (data[k] & 0xC0) != 0x80:
                bounds[nb] = k
                nb += 1
        bounds[nb] = end
        return nb
    bounds[0] = start
    nb = 1
    for k in range(start, end):
        if data[k] == 32:
            bounds[nb] = k + 1
            nb += 1
    bounds[nb] = end + 1
    return nb


@numba.njit(cache=True, nogil=True)
def _signatures(data, offsets, a, b, ngram, char_mode, whole_short, sig, counts):
    n_docs = offsets.shape[0] - 1
    bounds = np.empty(0, dtype=np.int64)
    for i in range(n_docs):
        start, end = offsets[i], offsets[i + 1]
        if end <= start:
            counts[i] = 0
            continue
        if bounds.shape[0] < end - start + 2:
            bounds = np.empty(end - start + 2, dtype=np.int64)
        units = _bounds(data, start, end, char_mode, bounds)
        if units < ngram:
            if whole_short and units > 0:
                _apply(sig, i, _fnv_span(data, start, end), a, b)
                counts[i] = 1
            else:
                counts[i] = 0
            continue
        c = 0
        for u in range(units - ngram + 1):
            s = bounds[u]
            e = bounds[u + ngram] if char_mode else bounds[u + ngram] - 1
            _apply(sig, i, _fnv_span(data, s, e), a, b)
            c += 1
        counts[i] = c


@numba.njit(cache=True, nogil=True)
def _fnv64_span(data, start, end):
    h = np.uint64(0xCBF29CE484222325)
    for k in range(start, end):
        h = (h ^ np.uint64(data[k])) * np.uint64(0x100000001B3)
    return h


@numba.njit(cache=True, nogil=True)
def _shingle_sets(data, offsets, ngram, char_mode, whole_short, out, out_offsets):
    n_docs = offsets.shape[0] - 1
    bounds = np.empty(0, dtype=np.int64)
    pos = 0
    for i in range(n_docs):
        out_offsets[i] = pos
        start, end = offsets[i], offsets[i + 1]
        if end <= start:
            continue
        if bounds.shape[0] < end - start + 2:
            bounds = np.empty(end - start + 2, dtype=np.int64)
        units = _bounds(data, start, end, char_mode, bounds)
        first = pos
        if units < ngram:
            if whole_short and units > 0:
                out[pos] = _fnv64_span(data, start, end)
                pos += 1
        else:
            for u in range(units - ngram + 1):
                e = bounds[u + ngram] if char_mode else bounds[u + ngram] - 1
                out[pos] = _fnv64_span(data, bounds[u], e)
                pos += 1
        if pos - first > 1:
            seg = np.sort(out[first:pos])
            k = first
            for j in range(seg.shape[0]):
                if j == 0 or seg[j] != seg[j - 1]:
                    out[k] = seg[j]
                    k += 1
            pos = k
    out_offsets[n_docs] = pos


def shingle_sets(normalised: pa.Array, params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """The set of 64-bit shingle hashes of each text: a flat sorted-per-text array and offsets
    (n + 1). With 64-bit hashes, Jaccard on these sets is the exact shingle Jaccard except with
    probability about 2**-64 per pair of distinct shingles."""
    arr = normalised.cast(pa.large_string()) if normalised.type != pa.large_string() else normalised
    n = len(arr)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return np.zeros(0, np.uint64), out_offsets
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1].copy()
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(int(offsets[-1] - offsets[0]) + n, dtype=np.uint64)
    _shingle_sets(data, offsets, params.ngram, params.char_ngrams, params.short_docs == "whole", out, out_offsets)
    return out[: out_offsets[-1]].copy(), out_offsets


@numba.njit(cache=True, nogil=True)
def intersection_sorted(a, b):
    """How many values two sorted arrays of distinct values share (one merge walk)."""
    i = j = inter = 0
    while i < a.shape[0] and j < b.shape[0]:
        if a[i] == b[j]:
            inter += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    return inter


@numba.njit(cache=True, nogil=True)
def _jaccard_sorted(a, b):
    inter = intersection_sorted(a, b)
    union = a.shape[0] + b.shape[0] - inter
    return inter / union if union else 0.0


@numba.njit(cache=True, nogil=True)
def _pair_jaccard(flat, offs, left, right, out):
    for k in range(left.shape[0]):
        x, y = left[k], right[k]
        out[k] = _jaccard_sorted(flat[offs[x]:offs[x + 1]], flat[offs[y]:offs[y + 1]])


def pair_jaccard(flat: np.ndarray, offsets: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets `left[k]` and `right[k]` (indexes into `offsets`)."""
    out = np.empty(len(left), dtype=np.float64)
    if len(left):
        _pair_jaccard(flat, offsets, np.asarray(left, np.int64), np.asarray(right, np.int64), out)
    return out


def signatures(normalised: pa.Array, params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """Signatures (n, num_perm) uint32 and shingle counts (n,) of already-normalised texts.

    A text with no shingle (empty, or short with `short_docs: skip`) keeps the all-0xFFFFFFFF
    signature and a count of 0: callers leave it out of near-duplicate detection.
    """
    arr = normalised.cast(pa.large_string()) if normalised.type != pa.large_string() else normalised
    n = len(arr)
    sig = np.full((n, params.num_perm), MAX_HASH32, dtype=np.uint32)
    counts = np.zeros(n, dtype=np.int64)
    if n == 0:
        return sig, counts
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1].copy()
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    a, b = permutations(params.num_perm, params.seed)
    _signatures(data, offsets, a, b, params.ngram, params.char_ngrams, params.short_docs == "whole", sig, counts)
    return sig, counts


@numba.njit(cache=True, nogil=True)
def _mixed(hashes, out):
    for k in range(hashes.shape[0]):
        h = hashes[k]
        out[k] = _fmix32((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF))


def mixed_hashes(hashes: np.ndarray) -> np.ndarray:
    """The 32-bit value each 64-bit shingle hash (`shingle_sets`) is permuted from in a signature:
    FNV-1a 64 folded to 32 bits, then mixed (`_signatures`)."""
    out = np.empty(len(hashes), dtype=np.uint32)
    _mixed(np.asarray(hashes, np.uint64), out)
    return out


def unpermuted(sig: np.ndarray, mask: np.ndarray, params: MinHashParams) -> np.ndarray:
    """The mixed shingle values (`mixed_hashes`) behind the signature minima where `mask` is set,
    sorted and distinct. Each permutation a*x + b mod 2**32 has an odd `a`, so it is a bijection and
    a minimum names exactly one mixed shingle value."""
    a, b = permutations(params.num_perm, params.seed)
    inv = np.array([pow(int(x), -1, 1 << 32) for x in a], dtype=np.uint64)
    out = [np.zeros(0, np.uint32)]
    for s in range(0, len(sig), 100_000):  # a block of rows at a time: the flagged cells can be many
        rows, cols = np.nonzero(mask[s : s + 100_000])
        v = sig[s + rows, cols].astype(np.uint64)
        x = ((v - b[cols].astype(np.uint64)) & np.uint64(0xFFFFFFFF)) * inv[cols] & np.uint64(0xFFFFFFFF)
        out.append(np.unique(x.astype(np.uint32)))
    return np.unique(np.concatenate(out))


class ShingleSetStore:
    """Shingle-hash sets of this run's records (`verify: exact`), gathered for candidate docs only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[int, np.ndarray] = {}

    def _offs(self, unit: int) -> np.ndarray:
        if unit not in self._offsets:
            lens = pl.read_parquet(self.directory / f"u{unit:05d}.parquet", columns=["set_len"])["set_len"].to_numpy()
            self._offsets[unit] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return self._offsets[unit]

    def gather(self, units: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat, offsets) of the sets of (unit, index-in-unit) pairs, in the given order."""
        parts: list[np.ndarray] = [np.zeros(0, np.uint64)] * len(units)
        for u in np.unique(units):
            offs = self._offs(int(u))
            path = self.directory / f"u{int(u):05d}.sets"
            flat = np.memmap(path, dtype=np.uint64, mode="r") if offs[-1] else np.zeros(0, np.uint64)
            for k in np.flatnonzero(units == u):
                parts[k] = np.asarray(flat[offs[idx[k]]:offs[idx[k] + 1]])
        lens = np.array([len(p) for p in parts], dtype=np.int64)
        flat = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        return flat, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
