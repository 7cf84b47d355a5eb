"""Exact deduplication as a barrier stage: records with the same digest of normalised text (or the
same image bytes), within the run and against the corpus index, keep one survivor chosen by the
configured rule (source priority, then record id order). The key is computed in pass 1."""

from __future__ import annotations

import polars as pl

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage
from pipeline.dedup.exact import resolve_exact
from pipeline.dedup.near import EXTERNAL_PRIORITY

DROPPED_DUPLICATE = DecisionKind("dropped_duplicate", Category.DROPPED,
                                 "exact duplicate (same normalised text or identical bytes) of a kept record")


class ExactDedupStage(BarrierStage):
    """Exact duplicates, resolved globally with a deterministic survivor."""

    kind = "exact_dedup"
    description = "removes exact duplicates of normalised text and identical image bytes, within the run and against published runs"
    decisions = (DROPPED_DUPLICATE,)
    config_section = "dedup.exact"

    def decide(self, records: pl.DataFrame, ctx: BarrierContext):
        live = records.filter(pl.col("decision").is_null()).select(
            "_i", "unit", "row", "record_id", "key", "priority", "order_str", "order_int")
        if ctx.index is not None:
            published = ctx.index.exact_keys()
            live = pl.concat([live, published.select(
                pl.lit(None, pl.UInt32).alias("_i"),
                pl.lit(-1, pl.Int64).alias("unit"), pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "record_id",
                "key", pl.lit(EXTERNAL_PRIORITY, pl.Int64).alias("priority"), pl.col("record_id").alias("order_str"),
                pl.lit(0, pl.Int64).alias("order_int"))])
        dups = resolve_exact(live, keep=("_i",)).filter(pl.col("unit") >= 0)
        published_ids = live.filter(pl.col("unit") < 0)["record_id"]
        dups = dups.with_columns(pl.col("duplicate_of").is_in(published_ids.implode()).alias("_published"))
        image = records["phash"].gather(dups["_i"]).is_not_null()
        verdicts = dups.with_columns(image.alias("_image")).select(
            "_i",
            pl.lit(DROPPED_DUPLICATE.name).alias("decision"),
            pl.when(pl.col("_published")).then(pl.lit("exact duplicate of a published record"))
            .when(pl.col("_image")).then(pl.lit("exact duplicate (identical image bytes)"))
            .otherwise(pl.lit("exact duplicate after normalisation")).alias("reason"),
            "duplicate_of",
        )
        return verdicts, {"dropped": verdicts.height}
