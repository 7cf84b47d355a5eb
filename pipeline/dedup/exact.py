"""Exact deduplication: a digest of normalised text, resolved globally with a deterministic survivor.

Usage::

    keys = exact_keys(text_array, cfg.dedup.exact.normalize)   # per batch, in pass 1
    decisions = resolve_exact(records)                          # once, at the barrier
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.config import NormalizeConfig
from pipeline.sources.base import string_digests


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
        s = s.str.replace_all(r"\s+", " ").str.strip_chars()
    return s.to_arrow()


def exact_keys(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig, digests: list[bytes] | None = None) -> list[bytes]:
    """The exact-duplicate key (sha256 of the normalised text) of each value.

    Without normalisation the key is the content digest, passed in to avoid hashing twice.
    """
    if cfg.unicode == "none" and not cfg.lowercase and not cfg.collapse_whitespace and digests is not None:
        return digests
    return string_digests(normalize_text(text, cfg))


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
