"""Near-duplicate deduplication as a barrier stage: MinHash LSH over word (or character) n-grams,
candidates verified before anything is dropped, clusters resolved with the configured survivor
rule, within the run and against the corpus index; and pHash clusters for image records.

Pass 1 streams each unit's signatures and band keys (`key_writer`); the barrier's `near-group`
tasks verify and cluster the candidate graph a group of components at a time
(`pipeline.run.near_groups`), and the stage merges their verdicts (`near_merge.MergedGroups`),
on the frame of every record (`decide`) or, without it (`decide_from_parts`), with the image
records only (`pipeline.run.barrier_parts.gather_live`); then its drops and cluster heads are read
per unit from the groups' files, never held for the whole run. `amend` re-points an exact copy
whose exact survivor it dropped at the record finally kept: on the whole frame by a join, unit by
unit from the rows of the `near-repoint` tasks (`pipeline.dedup.repoint`: the same join,
partitioned by the survivor's id), so no step holds a row per exact copy nor per drop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage, UnitVerdicts
from pipeline.dedup.candidates import code_positions, doc_code
from pipeline.dedup.near import SignatureWriter
from pipeline.dedup.near_groups import merge_groups
from pipeline.dedup.near_merge import MergedGroups
from pipeline.dedup.repoint import REPOINT_SCHEMA, repoint, repoint_path
from pipeline.errors import PipelineError
from pipeline.run.workdir import SortedParts
from pipeline.safety.perceptual import PDQ_MIN_QUALITY

DROPPED_NEAR_DUPLICATE = DecisionKind("dropped_near_duplicate", Category.DROPPED,
                                      "near duplicate of a kept record (verified similarity at or above the threshold)")
# The reason of a word-pass drop names how its pair was verified (`dedup.near.verify`).
TEXT_REASON = {"signature": "near duplicate (MinHash LSH, verified on signatures)",
               "borderline": "near duplicate (MinHash LSH, verified on signatures; pairs near the threshold on exact "
                             "shingle sets)",
               "exact": "near duplicate (MinHash LSH, verified on exact shingle sets)"}
SHORT_REASON = ("near duplicate (short-document pass: exact content character 5-gram Jaccard, content words "
                "agreeing, no conflicting number)")
IMAGE_REASON = "near-duplicate image (pHash within the configured distance)"


def _hits(live: pl.DataFrame, near: pl.DataFrame) -> pl.DataFrame:
    """The rows of the image resolution (`resolve_image_near`: by unit and row) with their
    records' `_i`, by `_i`: _i, duplicate_of, cluster_id, similarity, via, path."""
    for col in ("via", "path"):
        if col not in near.columns:
            near = near.with_columns(pl.lit(None, pl.String).alias(col))
    pos, found = code_positions(doc_code(live["unit"].to_numpy(), live["row"].to_numpy(), 0),
                                doc_code(near["unit"].to_numpy(), near["row"].to_numpy(), 0))
    at = live["_i"].to_numpy()[pos[found]]
    order = np.argsort(at, kind="stable")  # one gather of the rows (strings included), by _i
    rows = near if found.all() else near.filter(found)
    return rows.select(pl.Series("_i", at, pl.Int64), "duplicate_of", "cluster_id", "similarity", "via", "path")[order]


def _verdicts(hits: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Drops (with their survivor, cluster and similarity) and evidence-only rows for cluster heads,
    from `_hits` rows; `reason` names the pass that found them."""
    hit = pl.col("duplicate_of").is_not_null()
    # The path that justified the drop: the word pass, or the short-document pass (text only).
    base = pl.when(pl.col("path") == "short").then(pl.lit(SHORT_REASON)).otherwise(pl.lit(reason))
    # A second-hop drop names the record it was reached through (similarity stays the one to the survivor).
    why = pl.when(pl.col("via").is_not_null()).then(
        pl.concat_str(base, pl.lit(", second hop via "), pl.col("via"))).otherwise(base)
    return hits.select(
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
        live = records.filter(pl.col("decision").is_null()).select(*LIVE)
        merged, images, stats = self._resolve(live, live.height, bool(records["phash"].is_not_null().any()), ctx)
        sources = [(merged.rows(0, records.height), TEXT_REASON[self.config.verify])] + images
        return pl.concat([_verdicts(hits, reason) for hits, reason in sources], how="vertical_relaxed"), stats

    from_parts = True

    def decide_from_parts(self, ctx: BarrierContext):
        """`decide` from the group tasks' verdicts and the image records (gathered unit by unit),
        without a row per record nor per drop: the text verdicts are read per unit."""
        from pipeline.run.barrier_parts import gather_live

        images, count, any_image = gather_live(ctx.work_dir, ctx.plan, {})
        merged, image_hits, stats = self._resolve(images.select(*LIVE), count, any_image, ctx)
        return _NearUnitVerdicts(merged, TEXT_REASON[self.config.verify], image_hits, _repointed(ctx.work_dir)), stats

    def _resolve(self, live: pl.DataFrame, live_count: int, images: bool, ctx: BarrierContext):
        """The text resolution (merged from the group tasks' verdicts: `MergedGroups`), the image
        resolution over `live` (`LIVE` columns of the records still kept, or of the image records
        among them) as [(`_hits` rows, reason)] (none without images), and statistics;
        `live_count`: the records still kept; `images`: some record of the run has a pHash."""
        cfg = ctx.plan.config
        merged, stats = merge_groups(ctx.work_dir, self.config, cfg.dedup.survivor.near_prefer, live_count)
        sources = []
        if images:
            from pipeline.dedup.image_near import resolve_image_near

            # An image PDQ rates too flat to hash (quality < 50: one colour, nearly plain) has no
            # meaningful pHash (every one-colour image but black is 8000000000000000): it is never a
            # near duplicate of another; identical files still go as exact duplicates.
            flat = pl.col("pdq_quality").is_not_null() & (pl.col("pdq_quality") < PDQ_MIN_QUALITY)
            has_phash = live.filter(pl.col("phash").is_not_null())
            images = has_phash.filter(~flat).drop("pdq_quality")
            near_img, stats["images"] = resolve_image_near(images.drop("_i", "quality"), self.config.image_phash_distance,
                                                           merged.first_free)
            stats["images"]["too_flat_to_compare"] = int(has_phash.filter(flat).height)
            sources.append((_hits(images, near_img), IMAGE_REASON))
        return merged, sources, stats

    def amend(self, records: pl.DataFrame) -> pl.DataFrame:
        """An exact copy whose exact survivor was itself dropped as a near-duplicate text points at
        the record that was finally kept, so `duplicate_of` always names a survivor."""
        return _repoint(records, _moved(records.filter(
            (pl.col("decision") == DROPPED_NEAR_DUPLICATE.name) & pl.col("phash").is_null()
            & (pl.col("stage") == self.kind))))


def read_texts(plan, units: np.ndarray, rows: np.ndarray) -> list[str]:
    """The texts pass 1 signed of the records (units[k], rows[k]), in that order: read back from the
    unit's spill, else from its input (`pipeline.run.rows.iter_unit_rows`), one read per unit."""
    from pipeline.run.rows import iter_unit_rows

    out: list[str | None] = [None] * len(units)
    for u in np.unique(units).tolist():
        sel = np.flatnonzero(units == u)
        want = np.unique(rows[sel])
        field = plan.source(plan.units[u].source).text_field
        found: dict[int, str] = {}
        for table, got in iter_unit_rows(plan, u, want):
            found.update(zip(got.tolist(), table[field].to_pylist()))
        lost = [int(r) for r in want.tolist() if r not in found]
        if lost:
            raise PipelineError(f"near dedup: {len(lost)} record(s) of unit {u} ({plan.units[u].path}) could not be "
                                f"read again to verify their pairs (first row {lost[0]}); the input changed or became "
                                "unreadable since pass 1: restore it, or run again from the start")
        for k in sel.tolist():
            out[k] = found[int(rows[k])] or ""
    return out


# The columns of the still-kept records near-duplicate resolution reads.
LIVE = ("_i", "unit", "row", "record_id", "priority", "text_bytes", "quality", "order_str", "order_int", "phash",
        "pdq_quality")


def _repointed(work: Path) -> SortedParts:
    """The `near-repoint` tasks' rows (`repoint.REPOINT_SCHEMA`), read per unit by `_i`: what
    `amend` finds on the whole frame, computed by a join partitioned by the exact survivor's id
    (none without exact dedup: no step, no file)."""
    from pipeline.run.barrier_parts import planned_parts

    paths = [repoint_path(work, p, ".parquet") for p in range(planned_parts(work)["near-repoint"])]
    missing = [p for p in paths if not p.with_suffix(".json").exists()]
    if missing:
        raise PipelineError(f"near dedup: {len(missing)} of {len(paths)} `near-repoint` task(s) have not run (first: "
                            f"{missing[0].stem}); run the barrier's `near-repoint` tasks first")
    return SortedParts(paths, REPOINT_SCHEMA)


def _moved(dropped: pl.DataFrame) -> pl.DataFrame:
    """duplicate_of (a near-dropped text record's id) -> _final (its survivor), from the dropped
    records in input order (the first of an id counts)."""
    return dropped.select(pl.col("record_id").alias("duplicate_of"), pl.col("duplicate_of").alias("_final")).unique(
        "duplicate_of", keep="first")


def _repoint(records: pl.DataFrame, moved: pl.DataFrame) -> pl.DataFrame:
    """Exact copies whose survivor is in `moved` point at that survivor's survivor."""
    if moved.height == 0:
        return records
    exact = pl.col("stage") == "exact_dedup"
    return (records.join(moved, on="duplicate_of", how="left", maintain_order="left")
            .with_columns(duplicate_of=pl.when(exact).then(pl.coalesce(pl.col("_final"), pl.col("duplicate_of")))
                          .otherwise(pl.col("duplicate_of")))
            .drop("_final"))


class _NearUnitVerdicts(UnitVerdicts):
    """The stage's text rows read per unit from the groups' files (`MergedGroups.rows`) and its
    image `_hits` rows (held: image records only), made into verdicts per unit; the re-pointing
    rows of the exact copies whose survivor was near-dropped, read per unit too."""

    def __init__(self, merged: MergedGroups, reason: str, images: list[tuple[pl.DataFrame, str]],
                 repointed: SortedParts) -> None:
        self._merged, self._reason, self._images, self._repointed = merged, reason, images, repointed

    def verdicts(self, first: int, last: int) -> pl.DataFrame:
        parts = [_verdicts(self._merged.rows(first, last), self._reason)]
        for hits, reason in self._images:
            at = hits["_i"]
            a, b = at.search_sorted(first, "left"), at.search_sorted(last, "left")
            parts.append(_verdicts(hits.slice(a, b - a), reason))
        # stable: a record with two verdicts (text and image) keeps their order, as `decide` has it
        return pl.concat(parts, how="vertical_relaxed").sort("_i", maintain_order=True)

    def amend(self, records: pl.DataFrame, first: int) -> pl.DataFrame:
        rows = self._repointed.take(first, first + records.height)
        return repoint(records, rows.with_columns(pl.col("_i") - first))
