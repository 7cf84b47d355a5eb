"""Near-duplicate deduplication as a barrier stage: MinHash LSH over word (or character) n-grams,
candidates verified before anything is dropped, clusters resolved with the configured survivor
rule, within the run and against the corpus index; and pHash clusters for image records.

Pass 1 streams each unit's signatures and band keys (`key_writer`); the barrier resolves them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage
from pipeline.dedup.near import SignatureWriter, resolve_near
from pipeline.safety.perceptual import PDQ_MIN_QUALITY

DROPPED_NEAR_DUPLICATE = DecisionKind("dropped_near_duplicate", Category.DROPPED,
                                      "near duplicate of a kept record (verified similarity at or above the threshold)")
TEXT_REASON = "near duplicate (MinHash LSH, verified on signatures)"
SHORT_REASON = "near duplicate (short-document pass: exact content character 5-gram Jaccard)"
IMAGE_REASON = "near-duplicate image (pHash within the configured distance)"


def _verdicts(live: pl.DataFrame, near: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Drops (with their survivor, cluster and similarity) and evidence-only rows for cluster heads."""
    for col in ("via", "path"):
        if col not in near.columns:
            near = near.with_columns(pl.lit(None, pl.String).alias(col))
    hit = pl.col("duplicate_of").is_not_null()
    # The path that justified the drop: the word pass, or the short-document pass (text only).
    base = pl.when(pl.col("path") == "short").then(pl.lit(SHORT_REASON)).otherwise(pl.lit(reason))
    # A second-hop drop names the record it was reached through (similarity stays the one to the survivor).
    why = pl.when(pl.col("via").is_not_null()).then(
        pl.concat_str(base, pl.lit(", second hop via "), pl.col("via"))).otherwise(base)
    return live.select("_i", "unit", "row").join(near, on=["unit", "row"], how="inner").select(
        "_i",
        pl.when(hit).then(pl.lit(DROPPED_NEAR_DUPLICATE.name)).otherwise(pl.lit(None, pl.String)).alias("decision"),
        pl.when(hit).then(why).otherwise(pl.lit(None, pl.String)).alias("reason"),
        "duplicate_of", "cluster_id", "similarity",
    )


class NearDedupStage(BarrierStage):
    """Near duplicates of text (MinHash LSH, verified) and of images (pHash distance)."""

    kind = "near_dedup"
    description = ("removes near duplicates: MinHash LSH candidates verified at the threshold, one survivor per "
                   "cluster, within the run and against published runs; images by pHash distance")
    decisions = (DROPPED_NEAR_DUPLICATE,)
    config_section = "dedup.near"

    def key_writer(self, unit_id: int, work_dir: Path):
        return SignatureWriter(Path(work_dir) / "minhash", unit_id, self.config)

    def decide(self, records: pl.DataFrame, ctx: BarrierContext):
        cfg = ctx.plan.config
        live = records.filter(pl.col("decision").is_null()).select(
            "_i", "unit", "row", "record_id", "priority", "text_bytes", "quality", "order_str", "order_int", "phash")
        near, stats = resolve_near(live.drop("_i", "phash"), ctx.work_dir, self.config, cfg.dedup.survivor.near_prefer,
                                   ctx.index.near_parts() if ctx.index is not None else [])
        verdicts = [_verdicts(live, near, TEXT_REASON)]
        if records["phash"].is_not_null().any():
            from pipeline.dedup.image_near import resolve_image_near

            # An image PDQ rates too flat to hash (quality < 50: one colour, nearly plain) has no
            # meaningful pHash (every one-colour image but black is 8000000000000000): it is never a
            # near duplicate of another; identical files still go as exact duplicates.
            flat = pl.col("pdq_quality").is_not_null() & (pl.col("pdq_quality") < PDQ_MIN_QUALITY)
            has_phash = records.filter(pl.col("decision").is_null() & pl.col("phash").is_not_null())
            images = live.filter(pl.col("phash").is_not_null()).join(
                has_phash.filter(~flat).select("_i"), on="_i", how="semi")
            first = int(near["cluster_id"].max()) + 1 if near["cluster_id"].is_not_null().any() else 0
            near_img, stats["images"] = resolve_image_near(images.drop("_i", "quality"), self.config.image_phash_distance,
                                                           first)
            stats["images"]["too_flat_to_compare"] = int(has_phash.filter(flat).height)
            verdicts.append(_verdicts(images, near_img, IMAGE_REASON))
        return pl.concat(verdicts, how="vertical_relaxed"), stats

    def amend(self, records: pl.DataFrame) -> pl.DataFrame:
        """An exact copy whose exact survivor was itself dropped as a near-duplicate text points at
        the record that was finally kept, so `duplicate_of` always names a survivor."""
        moved = records.filter((pl.col("decision") == DROPPED_NEAR_DUPLICATE.name) & pl.col("phash").is_null()
                               & (pl.col("stage") == self.kind)).select(
            pl.col("record_id").alias("duplicate_of"), pl.col("duplicate_of").alias("_final"))
        if moved.height == 0:
            return records
        exact = pl.col("stage") == "exact_dedup"
        return (records.join(moved.unique("duplicate_of", keep="first"), on="duplicate_of", how="left",
                             maintain_order="left")
                .with_columns(duplicate_of=pl.when(exact).then(pl.coalesce(pl.col("_final"), pl.col("duplicate_of")))
                              .otherwise(pl.col("duplicate_of")))
                .drop("_final"))
