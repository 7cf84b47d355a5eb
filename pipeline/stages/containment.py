"""Text reuse by containment: flags a record most of whose word n-gram shingles occur in another
record of the run, |A ∩ B| / |A| >= `threshold`, whatever their lengths (a 300-word answer that
pastes 200 words of a 3,000-word article), where MinHash Jaccard sees nothing.

Where it runs: pass 1 streams each record's shingle hashes (`key_writer`, scratch Parquet); the
barrier pairs records through an inverted index of the shingles found in 2..`max_df` records
(boilerplate in more records pairs nobody: the candidate pairs stay near-linear in the shingles),
verifies each pair on the exact shingle sets and flags A against the container B of highest
containment. B must come first in near-dedup's survivor order (source priority, then more
shingles, then record id), so of two records containing each other only one is flagged, and a
reference source given a higher priority (the articles answers copy from) is never flagged
against a lower-priority one.

Actions: `drop` (`dropped_contained`, reason `containment 0.87 in <record id>`) or `tag` (the
record is kept; evidence only). When dropping, the container is always a record this stage keeps:
a record contained only in records that are themselves dropped is kept (no text lost down a chain
A in B in C); when tagging, the container is the best one whatever its own fate. Evidence either way: `contained_in` (the container's record id),
`containment`, `containment_shared` and `containment_shingles`.

With `state` (a corpus index), the kept records of earlier runs are containers too (never flagged:
they are published): each published run leaves its kept records' shingles in the index
(`stages/containment/<run_id>.parquet`, 8 bytes a shingle), and a later run with the same `ngram`
reads back those that share a shingle with it; `contained_in` then names `run_id/record_id`.
The run publishes them too (`index/containment.parquet`, in the manifest's `outputs.index`), from
which `hygiene index rebuild` restores them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BarrierContext, BarrierStage
from pipeline.dedup.containment import ShingleWriter, find_contained, prior_names

DROPPED_CONTAINED = DecisionKind("dropped_contained", Category.DROPPED,
                                 "most of the record's shingles occur in another, longer or earlier, record")
SCRATCH = "containment"


class ContainmentConfig(BaseModel):
    """Options of the `containment` stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ngram: int = Field(5, ge=1, le=50)          # word n-grams, normalised as near-dedup's
    # Clough & Stevenson's short-answer corpus (bench/README.md): its tuning split allowed 0.03-0.28; 0.30 is
    # the lowest 0.05 step that flags none of the 38 non-plagiarised answers of both splits.
    threshold: float = Field(0.30, gt=0.0, le=1.0)
    max_df: int = Field(50, ge=2)                # a shingle in more records is boilerplate: it pairs nobody
    min_shingles: int = Field(10, ge=1)          # records with fewer shingles are never flagged
    action: Literal["drop", "tag"] = "drop"
    partition_rows: int = Field(20_000_000, ge=1_000)   # (record, shingle, other record) rows joined at once


class ContainmentStage(BarrierStage):
    """Flags (drops or tags) records contained in another record of the run."""

    kind = "containment"
    description = ("flags a record most of whose word n-grams occur in another, longer or earlier, record "
                   "(containment |A∩B|/|A| >= threshold), whatever their lengths")
    decisions = (DROPPED_CONTAINED,)
    Config = ContainmentConfig

    def summary(self) -> dict:
        plan = getattr(self, "plan", None)  # set by the runtime; the containers include the index's with `state`
        return {**self.config.model_dump(), "hash_bits": 64, "corpus_index": plan is not None and plan.config.state is not None}

    def index_params(self) -> dict:
        return {"ngram": self.config.ngram}

    def index_additions(self, work_dir: Path, kept: pl.DataFrame) -> pl.DataFrame:
        """(record_id, hash): the shingles of the run's kept records, containers for later runs."""
        scratch = Path(work_dir) / SCRATCH
        frames = [pl.read_parquet(p).with_columns(pl.lit(int(p.name[1:6]), pl.Int64).alias("unit"))
                  for p in sorted(scratch.glob("u?????.parquet"))]
        empty = pl.DataFrame(schema={"record_id": pl.String, "hash": pl.UInt64})
        if not frames or kept.height == 0:
            return empty
        return (pl.concat(frames).join(kept, on=["unit", "row"], how="inner")
                .sort("unit", "row", "hash").select("record_id", "hash"))

    def key_writer(self, unit_id: int, work_dir: Path):
        return ShingleWriter(Path(work_dir) / SCRATCH, unit_id, self.config.ngram)

    def decide(self, records: pl.DataFrame, ctx: BarrierContext):
        c = self.config
        scratch = Path(ctx.work_dir) / SCRATCH
        live = records.filter(pl.col("decision").is_null())
        schema = {"_i": records.schema["_i"], "decision": pl.String, "reason": pl.String, "duplicate_of": pl.String,
                  "evidence": pl.String}
        if live.height == 0:
            return pl.DataFrame(schema=schema), None
        ranked = (live.sort(["order_str", "order_int", "_i"])
                  .with_row_index("rank").select("unit", "row", "_i", "priority", pl.col("rank").cast(pl.Int64)))
        files = [(int(p.name[1:6]), p) for p in sorted(scratch.glob("u?????.parquet"))]
        prior = ctx.index.stage_frames(self.kind, self.index_params()) if ctx.index is not None else None
        found, stats = find_contained(files, ranked, c.threshold, c.max_df, c.min_shingles, c.partition_rows,
                                      kept_containers=c.action == "drop", prior=prior)
        ids = records.select(pl.col("_i").cast(pl.UInt32), "record_id")
        if prior is not None:
            first = int(ranked["_i"].max()) + 1
            ids = pl.concat([ids, prior_names(prior).select((pl.col("k") + first).cast(pl.UInt32).alias("_i"),
                                                             "record_id")])
        found = found.join(ids.rename({"_i": "container", "record_id": "contained_in"}), on="container").sort("_i")
        rows = found.select("_i", "contained_in", "containment", "shared", "size").rows()
        dropped = c.action == "drop"
        verdicts = pl.DataFrame({
            "_i": pl.Series([r[0] for r in rows], dtype=records.schema["_i"]),
            "decision": pl.Series([DROPPED_CONTAINED.name if dropped else None] * len(rows), dtype=pl.String),
            "reason": pl.Series([f"containment {r[2]:.2f} in {r[1]}" if dropped else None for r in rows],
                                dtype=pl.String),
            "duplicate_of": pl.Series([r[1] if dropped else None for r in rows], dtype=pl.String),
            "evidence": pl.Series([json.dumps({"contained_in": r[1], "containment": round(r[2], 4),
                                               "containment_shared": r[3], "containment_shingles": r[4]},
                                              separators=(",", ":"), sort_keys=True) for r in rows], dtype=pl.String),
        }, schema=schema)
        stats.update({"records_seen": live.height, "action": c.action, "threshold": c.threshold, "ngram": c.ngram,
                      "max_df": c.max_df, "dropped": len(rows) if dropped else 0,
                      "tagged": 0 if dropped else len(rows)})
        return verdicts, stats


def evidence_of(ledger_value: str | None) -> dict:
    """The stage's evidence from a ledger row's `evidence` JSON (for tests and reports)."""
    return {k: v for k, v in json.loads(ledger_value or "{}").items()
            if k == "contained_in" or k.startswith("containment")}
