"""Exact deduplication: a digest of normalised text, resolved globally with a deterministic survivor.

Usage::

    keys = exact_keys(text_array, cfg.dedup.exact.normalize)   # per batch, in pass 1
    decisions = resolve_exact(records)                          # once, at the barrier
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import NormalizeConfig
from pipeline.sources.base import string_digests


@numba.njit(cache=True, nogil=True)
def _ascii_normalise(data, offsets, lowercase, collapse, out, out_offsets, ascii_rows):
    """Normalise the ASCII-only rows (NFC/NFKC leave ASCII unchanged): optional lowercase, and
    runs of ASCII whitespace (tab, LF, VT, FF, CR, space: the ASCII part of Unicode White_Space)
    to one space, trimmed. A row with any non-ASCII byte is flagged (and its output discarded)
    and left to the general path. One pass over the bytes."""
    pos = 0
    for i in range(offsets.shape[0] - 1):
        out_offsets[i] = pos
        first = pos
        pending_space = False
        ascii = True
        for k in range(offsets[i], offsets[i + 1]):
            b = data[k]
            if b >= 0x80:
                ascii = False
                break
            if collapse and (b == 32 or (9 <= b <= 13)):
                pending_space = True
                continue
            if pending_space and pos > first:
                out[pos] = 32
                pos += 1
            pending_space = False
            if lowercase and 65 <= b <= 90:
                b += 32
            out[pos] = b
            pos += 1
        ascii_rows[i] = ascii
        if not ascii:
            pos = first
    out_offsets[offsets.shape[0] - 1] = pos


def _fast_keys(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig) -> list[bytes]:
    """Keys with the ASCII rows normalised in compiled code and only the others through polars."""
    arr = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    arr = arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr
    n = len(arr)
    if n == 0:
        return []
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1].copy()
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(int(offsets[-1] - offsets[0]), dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    ascii_rows = np.empty(n, dtype=np.bool_)
    _ascii_normalise(data, offsets, cfg.lowercase, cfg.collapse_whitespace, out, out_offsets, ascii_rows)
    view = memoryview(out)
    sha = hashlib.sha256
    keys: list[bytes | None] = [sha(view[out_offsets[i]:out_offsets[i + 1]]).digest() if ascii_rows[i] else None
                                for i in range(n)]
    rest = np.flatnonzero(~ascii_rows)
    if rest.size:
        slow = string_digests(normalize_text(arr.take(pa.array(rest)), cfg))
        for i, k in zip(rest.tolist(), slow):
            keys[i] = k
    return keys


def normalize_text(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig) -> pa.Array | pa.ChunkedArray:
    """Apply the configured normalisation (Unicode form, case, whitespace) to a string array."""
    if cfg.unicode == "none" and not cfg.lowercase and not cfg.collapse_whitespace:
        return text
    s = pl.Series("t", text)
    if cfg.unicode != "none":
        s = s.str.normalize(cfg.unicode)
    if cfg.lowercase:
        s = s.str.to_lowercase()
    if cfg.collapse_whitespace:
        # Only runs that are not already one space need rewriting: far fewer matches than \s+.
        s = s.str.replace_all(r"\s\s+|[^\S ]", " ").str.replace_all(r"  +", " ").str.strip_chars()
    return s.to_arrow()


def exact_keys(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig, digests: list[bytes] | None = None) -> list[bytes]:
    """The exact-duplicate key (sha256 of the normalised text) of each value.

    Without normalisation the key is the content digest, passed in to avoid hashing twice.
    """
    if cfg.unicode == "none" and not cfg.lowercase and not cfg.collapse_whitespace and digests is not None:
        return digests
    return _fast_keys(text, cfg)


def resolve_exact(records: pl.DataFrame) -> pl.DataFrame:
    """Pick one survivor per key; return (unit, row, duplicate_of) for every dropped copy.

    `records` has columns unit, row, record_id, key, priority, order_str, order_int. The
    survivor of a group is the record with the highest source priority, then the lowest
    (order_str, order_int): the record id, with positional ids compared by file then row.
    """
    if records.height == 0:
        return pl.DataFrame(schema={"unit": pl.Int64, "row": pl.Int64, "duplicate_of": pl.String})
    ranked = records.sort(["key", "priority", "order_str", "order_int"], descending=[False, True, False, False])
    ranked = ranked.with_columns(
        pl.col("record_id").first().over("key").alias("survivor"),
        pl.int_range(pl.len()).over("key").alias("rank"),
    )
    return ranked.filter(pl.col("rank") > 0).select(
        pl.col("unit"), pl.col("row"), pl.col("survivor").alias("duplicate_of")
    )
