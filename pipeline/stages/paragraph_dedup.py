"""Repeated paragraphs (or lines) across documents, in the style of Dolma's paragraph dedup and
datatrove's sentence dedup: a unit whose normalised text occurs in more than `max_documents` (K)
records of the run is removed everywhere but at its first occurrence (the survivor order of the
dedup stages: source priority, then record id order; within a record, its first position).

Where it runs: pass 1 streams each record's unit hashes and spans (`key_writer`); the barrier
finds the repeated units, partition by partition, and decides per record: kept with the units
removed (`kept_paragraphs_removed`, with counts in the evidence) or dropped when too little text
is left (`dropped_repeated_paragraphs`); pass 2 removes the spans while it writes the shard (the
WRITE placement of the same stage). Exact 64-bit hashes, no Bloom filter (see
`pipeline.dedup.paragraphs` for the bound on false matches, recorded in the manifest).

With `state` (a corpus index), earlier runs count too, and come first: each published run leaves
per text hash the number of its kept records that have it (`stages/paragraph_dedup/<run_id>.parquet`,
12 bytes a distinct text), a later run with the same settings adds those counts to its own, and a
text an earlier run published is removed at every occurrence in the later run. Those counts are
read per barrier partition, like the run's own units. The run publishes them too
(`index/paragraph_dedup.parquet`, in the manifest's `outputs.index`), from which `hygiene index
rebuild` restores them: the shards cannot tell how often a removed paragraph occurred.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage, Placement
from pipeline.dedup.paragraphs import UnitHashWriter, cut_spans, find_repeats, split_units

KEPT_PARAGRAPHS_REMOVED = DecisionKind("kept_paragraphs_removed", Category.KEPT,
                                       "kept with paragraphs (or lines) removed that occur in more than K documents")
DROPPED_REPEATED_PARAGRAPHS = DecisionKind("dropped_repeated_paragraphs", Category.DROPPED,
                                           "too little text left once repeated paragraphs (or lines) are removed")
SCRATCH = "paragraph_dedup"


class ParagraphDedupConfig(BaseModel):
    """Options of the `paragraph_dedup` stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    unit: Literal["paragraph", "line"] = "paragraph"   # paragraph: split on blank lines; line: on every newline
    max_documents: int = Field(1, ge=1)   # K: a text in more than K records is removed but for its first occurrence
    # documents: K counts distinct records; occurrences: K counts every occurrence, repeats inside
    # one record included (Dolma's and datatrove's rule, with K = 1)
    count: Literal["documents", "occurrences"] = "documents"
    min_chars: int = Field(10, ge=0)      # units shorter than this (normalised) are never hashed nor removed
    lowercase: bool = True
    collapse_whitespace: bool = True      # runs of whitespace become one space, ends stripped
    min_remaining_chars: int = Field(0, ge=0)   # a record left with fewer characters is dropped
    min_remaining_words: int = Field(0, ge=0)   # ... or fewer words
    partition_rows: int = Field(20_000_000, ge=1_000)   # units per barrier partition (memory bound)


class ParagraphDedupStage(BarrierStage):
    """Removes repeated paragraphs or lines; drops a record left with too little text."""

    kind = "paragraph_dedup"
    description = ("removes paragraphs (or lines) whose normalised text occurs in more than K records, keeping the "
                   "first occurrence; drops a record left with too little text")
    placements = (Placement.BARRIER, Placement.WRITE)
    decisions = (KEPT_PARAGRAPHS_REMOVED, DROPPED_REPEATED_PARAGRAPHS)
    Config = ParagraphDedupConfig
    # The removal finds its units again in the text it is given (by position in the record and
    # hash), so it composes after write-time edits at stored offsets (PII redaction): a unit that
    # redaction changed no longer matches its hash and is kept, redacted (counted), never cut at a
    # stale offset.
    edits_from_text = True

    def summary(self) -> dict:
        plan = getattr(self, "plan", None)  # set by the runtime; earlier runs count too with `state`
        return {**self.config.model_dump(), "corpus_index": plan is not None and plan.config.state is not None}

    def index_params(self) -> dict:
        c = self.config
        return {"unit": c.unit, "count": c.count, "min_chars": c.min_chars, "lowercase": c.lowercase,
                "collapse_whitespace": c.collapse_whitespace}

    def index_additions(self, work_dir: Path, kept: pl.DataFrame) -> pl.DataFrame:
        """(hash, docs): per text, how many of the run's kept records have it (or how many times,
        with `count: occurrences`)."""
        scratch = Path(work_dir) / SCRATCH
        keys = kept.select("unit", "row")
        frames = [pl.read_parquet(p, columns=["row", "hash"]).with_columns(pl.lit(int(p.name[1:6]), pl.Int64).alias("unit"))
                  .join(keys, on=["unit", "row"], how="semi") for p in sorted(scratch.glob("u?????.parquet"))]
        if not frames:
            return pl.DataFrame(schema={"hash": pl.UInt64, "docs": pl.Int64})
        units = pl.concat(frames)
        n = pl.struct("unit", "row").n_unique() if self.config.count == "documents" else pl.len()
        return units.group_by("hash").agg(n.cast(pl.Int64).alias("docs")).sort("hash")

    # -- pass 1 --------------------------------------------------------------------------------

    def key_writer(self, unit_id: int, work_dir: Path):
        c = self.config
        return UnitHashWriter(Path(work_dir) / SCRATCH, unit_id, c.unit, c.lowercase, c.collapse_whitespace,
                              c.min_chars)

    # -- barrier -------------------------------------------------------------------------------

    def decide(self, records: pl.DataFrame, ctx: BarrierContext):
        c = self.config
        scratch = Path(ctx.work_dir) / SCRATCH
        out_dir = Path(ctx.work_dir) / "stages" / self.kind
        out_dir.mkdir(parents=True, exist_ok=True)
        live = records.filter(pl.col("decision").is_null())
        if live.height == 0:  # nothing to decide (an empty run): no statistics either
            return pl.DataFrame(schema={"_i": records.schema["_i"], "decision": pl.String, "reason": pl.String,
                                        "evidence": pl.String}), None
        ranks = (live.sort(["priority", "order_str", "order_int", "_i"], descending=[True, False, False, False])
                 .with_row_index("rank").select("unit", "row", pl.col("rank").cast(pl.Int64), "_i"))
        units = sorted(int(p.name[1:6]) for p in scratch.glob("u?????.parquet"))
        prior = ctx.index.stage_frames(self.kind, self.index_params(), lazy=True) if ctx.index is not None else None
        removals, stats = find_repeats([(u, scratch / f"u{u:05d}.parquet") for u in units],
                                       ranks.select("unit", "row", "rank"), scratch, c.max_documents, c.partition_rows,
                                       c.count, prior=prior)
        docs = (pl.concat([pl.read_parquet(scratch / f"u{u:05d}.docs.parquet").with_columns(pl.lit(u, pl.Int64).alias("unit"))
                           for u in units]) if units else pl.DataFrame(schema={"row": pl.Int64, "unit": pl.Int64}))
        stats["records_seen"] = live.height
        stats["units_below_min_chars"] = int(docs["short_units"].sum()) if docs.height else 0
        per, runs = _per_record(removals)
        hit = (per.join(docs, on=["unit", "row"], how="inner").join(ranks.select("unit", "row", "_i"), on=["unit", "row"])
               .with_columns((pl.col("chars") - pl.col("chars_removed")).alias("chars_left"),
                             (pl.col("words") - pl.col("words_removed")).alias("words_left")))
        # Dropped below either minimum, or when nothing but whitespace is left.
        short = ((pl.col("chars_left") < c.min_remaining_chars) | (pl.col("words_left") < c.min_remaining_words)
                 | (pl.col("words_left") <= 0))
        what = pl.concat_str(pl.col("removed").cast(pl.String), pl.lit(f" {c.unit}(s) found in > {c.max_documents} "
                                                                      f"{'records' if c.count == 'documents' else 'places'} ("), pl.col("chars_removed").cast(pl.String),
                             pl.lit(" chars)"))
        verdicts = hit.select(
            "_i",
            pl.when(short).then(pl.lit(DROPPED_REPEATED_PARAGRAPHS.name))
            .otherwise(pl.lit(KEPT_PARAGRAPHS_REMOVED.name)).alias("decision"),
            pl.when(short).then(pl.concat_str(
                pl.lit("paragraph_dedup.remaining "), pl.col("chars_left").cast(pl.String), pl.lit(" chars, "),
                pl.col("words_left").cast(pl.String),
                pl.lit(f" words (min {c.min_remaining_chars} chars, {max(c.min_remaining_words, 1)} words) after removing "),
                what))
            .otherwise(pl.concat_str(pl.lit("paragraph_dedup.removed "), what)).alias("reason"),
            pl.concat_str(pl.lit('{"paragraph_dedup_chars_left":'), pl.col("chars_left").cast(pl.String),
                          pl.lit(',"paragraph_dedup_chars_removed":'), pl.col("chars_removed").cast(pl.String),
                          pl.lit(',"paragraph_dedup_units_removed":'), pl.col("removed").cast(pl.String),
                          pl.lit(',"paragraph_dedup_words_left":'), pl.col("words_left").cast(pl.String),
                          pl.lit("}")).alias("evidence"),
        ).sort("_i")
        kept = per.select("unit", "row").join(hit.filter(~short).select("unit", "row", pl.lit(True).alias("kept")),
                                              on=["unit", "row"], how="left", maintain_order="left")["kept"]
        spans = removals.filter(np.repeat(kept.fill_null(False).to_numpy(), runs))
        for (u,), g in spans.partition_by("unit", maintain_order=True, as_dict=True).items():  # in (row, idx) order
            g.select("row", "idx", "hash", "start", "end").write_parquet(out_dir / f"u{int(u):05d}.spans.parquet")
        n_drop = int(hit.select(short.sum()).item()) if hit.height else 0
        stats.update({"records_changed": hit.height - n_drop, "dropped": n_drop,
                      "chars_removed_from_kept": int(hit.filter(~short)["chars_removed"].sum()) if hit.height else 0,
                      "unit": c.unit, "max_documents": c.max_documents, "count": c.count, "hash_bits": 64})
        return verdicts, stats

    # -- pass 2 --------------------------------------------------------------------------------

    def open_shard(self, shard_id: int, work_dir: Path) -> "_ShardRemoval":
        return _ShardRemoval(self, Path(work_dir) / "stages" / self.kind)


def _per_record(removals: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """(unit, row, removed, chars_removed, words_removed) per record of the removals, and each
    record's number of rows: the removals come sorted by (unit, row, idx), so a record's are one
    run of rows, summed where they lie (no group-by)."""
    unit, row = removals["unit"].to_numpy(), removals["row"].to_numpy()
    heads = np.flatnonzero(np.r_[True, (unit[1:] != unit[:-1]) | (row[1:] != row[:-1])]) if unit.size else \
        np.zeros(0, np.int64)
    runs = np.diff(np.r_[heads, unit.size])
    sums = [np.add.reduceat(v, heads) if heads.size else np.zeros(0, np.int64) for v in
            ((removals["end"] - removals["start"]).to_numpy(), removals["words"].cast(pl.Int64).to_numpy())]
    return pl.DataFrame({"unit": unit[heads], "row": row[heads], "removed": runs.astype(np.uint32),
                         "chars_removed": sums[0], "words_removed": sums[1]},
                        schema={"unit": pl.Int64, "row": pl.Int64, "removed": pl.UInt32, "chars_removed": pl.Int64,
                                "words_removed": pl.Int64}), runs


class _ShardRemoval:
    """One shard's removals (shards are written in parallel: one object per shard)."""

    def __init__(self, stage: ParagraphDedupStage, directory: Path) -> None:
        self.stage, self.directory = stage, directory
        self.records = self.chars = 0
        self.unmatched = 0   # units to remove that an earlier write-time edit (redaction) changed: kept
        # Pass 2 re-reads the text pass 1 split (checked by digest): when no write-time stage edits
        # it before this one, the stored spans are exact and need not be found again.
        self.text_as_read = first_text_edit(stage.plan.config) == stage.kind

    def unit(self, unit_id: int, rows: np.ndarray):
        path = self.directory / f"u{unit_id:05d}.spans.parquet"
        if not path.exists():
            return lambda table, rows, record_ids: table
        wanted = pl.read_parquet(path).filter(pl.col("row").is_in(pl.Series(rows, dtype=pl.Int64).implode()))
        field = self.stage.plan.source(self.stage.plan.units[unit_id].source).text_field
        return lambda table, rows, record_ids: self._apply(table, rows, field, wanted)

    def _apply(self, table: pa.Table, rows: np.ndarray, field: str, wanted: pl.DataFrame) -> pa.Table:
        if wanted.height == 0 or field not in table.column_names:
            return table
        c = self.stage.config
        idx = table.column_names.index(field)
        # Only the records with units to remove are split again (most of a shard has none).
        at = np.flatnonzero(np.isin(rows, wanted["row"].unique().to_numpy()))
        if at.size == 0:
            return table
        column = table.column(idx)
        mine = wanted.filter(pl.col("row").is_in(pl.Series(rows[at], dtype=pl.Int64).implode()))
        if self.text_as_read and "start" in mine.columns:
            found = mine.sort("row", "start")
        else:
            units, _docs = split_units(rows[at], column.take(pa.array(at)), c.unit, c.lowercase,
                                       c.collapse_whitespace, c.min_chars)
            found = units.join(mine.select("row", "idx", "hash"), on=["row", "idx", "hash"], how="inner").sort("row", "start")
            self.unmatched += mine.height - found.height
        if found.height == 0:
            return table
        # Each span at its record's position in the table, in table order.
        by_row = np.argsort(rows[at])
        pos = at[by_row[np.searchsorted(rows[at][by_row], found["row"].to_numpy())]]
        start, end = found["start"].to_numpy(), found["end"].to_numpy()
        order = np.lexsort((start, pos))
        text, records, chars = cut_spans(column.combine_chunks(), pos[order], start[order], end[order])
        self.records += records
        self.chars += chars
        return table.set_column(idx, field, text)

    def stats(self) -> dict:
        return {"records_changed": self.records, "chars_removed": self.chars, "units_changed_by_earlier_edits": self.unmatched}


def first_text_edit(cfg) -> str | None:
    """The kind of the run's first write-time stage in pass 2's order, if any: any of them may edit
    the text, so the stored spans are exact only when this stage comes first."""
    from pipeline.run.pass2 import write_order

    order = write_order(cfg)
    return order[0].kind if order else None


def evidence_of(ledger_value: str | None) -> dict:
    """The stage's evidence from a ledger row's `evidence` JSON (for tests and reports)."""
    return {k: v for k, v in json.loads(ledger_value or "{}").items() if k.startswith("paragraph_dedup_")}
