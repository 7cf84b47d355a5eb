"""Exact deduplication as a barrier stage: records with the same digest of normalised text (or the
same image bytes), within the run and against the corpus index, keep one survivor chosen by the
configured rule (source priority, then record id order). The key is computed in pass 1; the
duplicates are resolved per key partition by the barrier's `exact-part` tasks
(`pipeline.run.barrier_parts`), which call `exact_verdicts`, and applied here: all at once
(`decide`) or unit by unit (`decide_from_parts`, each file read once in `_i` order)."""

from __future__ import annotations

import polars as pl

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage, UnitVerdicts
from pipeline.dedup.exact import resolve_exact
from pipeline.dedup.pair_docs import EXTERNAL_PRIORITY
from pipeline.run.workdir import SortedParts, part_files

DROPPED_DUPLICATE = DecisionKind("dropped_duplicate", Category.DROPPED,
                                 "exact duplicate (same normalised text or identical bytes) of a kept record")


class ExactDedupStage(BarrierStage):
    """Exact duplicates, resolved globally with a deterministic survivor."""

    kind = "exact_dedup"
    description = "removes exact duplicates of normalised text and identical image bytes, within the run and against published runs"
    decisions = (DROPPED_DUPLICATE,)
    config_section = "dedup.exact"

    def decide(self, records: pl.DataFrame, ctx: BarrierContext):
        """The verdicts the `exact-part` tasks wrote, one file per key partition (`exact_verdicts`)."""
        files = part_files(ctx.work_dir, "exact-part")
        verdicts = (pl.concat([pl.read_parquet(p) for p in files]) if files
                    else pl.DataFrame(schema=VERDICT_SCHEMA)).sort("_i")
        return verdicts, {"dropped": verdicts.height}

    from_parts = True

    def decide_from_parts(self, ctx: BarrierContext):
        """The same verdicts, read per unit from the `exact-part` files (each sorted by `_i`)."""
        parts = SortedParts(part_files(ctx.work_dir, "exact-part"), VERDICT_SCHEMA)
        return _PartVerdicts(parts), {"dropped": parts.rows}


class _PartVerdicts(UnitVerdicts):
    def __init__(self, parts: SortedParts) -> None:
        self.parts = parts

    def verdicts(self, first: int, last: int) -> pl.DataFrame:
        return self.parts.take(first, last).sort("_i")


VERDICT_SCHEMA = {"_i": pl.Int64, "decision": pl.String, "reason": pl.String, "duplicate_of": pl.String}


def exact_verdicts(live: pl.DataFrame, published: pl.DataFrame) -> pl.DataFrame:
    """Drop every exact copy but its survivor, among `live` records and `published` ones.

    `live` has _i, unit, row, record_id, key, priority, order_str, order_int and `_image` (an
    image record); `published` has key and record_id (`run_id/record_id`) of the corpus index:
    they always survive. Returns _i, decision, reason, duplicate_of per dropped record of `live`."""
    if published.height:
        live = pl.concat([live, published.select(
            pl.lit(None, pl.Int64).alias("_i"),
            pl.lit(-1, pl.Int64).alias("unit"), pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "record_id",
            "key", pl.lit(EXTERNAL_PRIORITY, pl.Int64).alias("priority"), pl.col("record_id").alias("order_str"),
            pl.lit(0, pl.Int64).alias("order_int"), pl.lit(False).alias("_image"))])
    dups = resolve_exact(live, keep=("_i", "_image")).filter(pl.col("unit") >= 0)
    dups = dups.with_columns(pl.col("duplicate_of").is_in(published["record_id"].implode()).alias("_published"))
    return dups.select(
        pl.col("_i").cast(pl.Int64),
        pl.lit(DROPPED_DUPLICATE.name).alias("decision"),
        pl.when(pl.col("_published")).then(pl.lit("exact duplicate of a published record"))
        .when(pl.col("_image")).then(pl.lit("exact duplicate (identical image bytes)"))
        .otherwise(pl.lit("exact duplicate after normalisation")).alias("reason"),
        "duplicate_of",
    ).sort("_i")
