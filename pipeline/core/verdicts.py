"""The one place that applies verdicts, with one precedence rule, and checks what stages return.

Precedence: stages run in the pipeline's order and the first decision that takes a record out of
the kept category is final. A later stage can only decide about a record that is still kept (no
decision yet, or a decision of category kept such as `kept_redacted`). Evidence, once recorded,
is not overwritten by a later stage (the JSON `evidence` column is merged, key by key).

Usage::

    records = apply_verdicts(records, verdict_frame, stage="near_dedup", table=decisions)
"""

from __future__ import annotations

from numbers import Integral

import polars as pl

from pipeline.core.decisions import Category, DecisionTable, UnknownDecisionError
from pipeline.core.stage import Verdicts
from pipeline.errors import PipelineError

DECISION_COLUMNS = ("decision", "stage", "reason")


class StageError(PipelineError):
    """A stage broke its contract or failed; names the stage and what to fix."""


def apply_verdicts(records: pl.DataFrame, verdicts: pl.DataFrame, stage: str, table: DecisionTable) -> pl.DataFrame:
    """Apply a verdict frame to the records frame.

    `records` has one row per input record with `_i` equal to its position (0..n-1) and the
    columns decision, stage, reason (decision null: not decided, i.e. kept so far). `verdicts` has
    `_i`, `decision`, `reason` and any evidence columns; a row with a null decision only records
    evidence.
    """
    unknown = set(verdicts["decision"].drop_nulls().unique().to_list()) - set(table.names(*Category))
    if unknown:
        raise StageError(f"stage '{stage}' returned decisions it does not declare: {', '.join(sorted(unknown))}; "
                         "list them in the stage's `decisions`")
    evidence = [c for c in verdicts.columns if c not in ("_i", "decision", "reason")]
    if verdicts.height == 0:  # nothing to scatter over the whole frame: only the evidence columns must exist
        return records.with_columns([pl.lit(None, verdicts.schema[c]).alias(c) for c in evidence if c not in records.columns])
    n = records.height
    at = verdicts["_i"]
    kept = list(table.names(Category.KEPT))
    eligible = pl.col("decision").is_null() | pl.col("decision").is_in(kept)
    new = records.select(
        pl.repeat(None, n, dtype=pl.String, eager=True).alias("_vd").scatter(at, verdicts["decision"]),
        pl.repeat(None, n, dtype=pl.String, eager=True).alias("_vr").scatter(at, verdicts["reason"]),
    )
    scattered = []
    for c in evidence:
        dtype = verdicts.schema[c]
        col = pl.repeat(None, n, dtype=dtype, eager=True).alias(f"_ve_{c}").scatter(at, verdicts[c])
        scattered.append(col)
    records = records.with_columns(new["_vd"], new["_vr"], *scattered)
    hit = pl.col("_vd").is_not_null() & eligible
    records = records.with_columns(
        decision=pl.when(hit).then(pl.col("_vd")).otherwise(pl.col("decision")),
        stage=pl.when(hit).then(pl.lit(stage)).otherwise(pl.col("stage")),
        reason=pl.when(hit).then(pl.col("_vr")).otherwise(pl.col("reason")),
    )
    for c in evidence:
        if c == "evidence" and c in records.columns and records.schema[c] == pl.String:
            # Compact JSON objects from two stages are merged (`{new..., earlier...}`: on a repeated
            # key the earlier stage's value is the one a JSON reader keeps, as for the other columns).
            old, add = pl.col(c), pl.col(f"_ve_{c}")
            both = old.is_not_null() & add.is_not_null() & (old != "{}") & (add != "{}")
            records = records.with_columns(
                pl.when(both).then(pl.concat_str(add.str.head(-1), pl.lit(","), old.str.tail(-1)))
                .otherwise(pl.coalesce(old, add)).alias(c))
        elif c in records.columns:
            records = records.with_columns(pl.coalesce(pl.col(c), pl.col(f"_ve_{c}")).alias(c))
        else:
            records = records.with_columns(pl.col(f"_ve_{c}").alias(c))
    return records.drop("_vd", "_vr", *[f"_ve_{c}" for c in evidence])


def check_verdicts(stage: str, verdicts: object, n: int, table: DecisionTable) -> Verdicts:
    """The verdicts a record or unit stage returned, checked: one per row, declared decisions,
    evidence columns as long as the batch. Raises StageError naming the stage."""
    if not isinstance(verdicts, Verdicts):
        raise StageError(f"stage '{stage}' returned {type(verdicts).__name__}, not Verdicts; "
                         "return pipeline.core.stage.Verdicts from process()")
    if len(verdicts.decision) != n or len(verdicts.reason) != n:
        raise StageError(f"stage '{stage}' returned {len(verdicts.decision)} verdicts for a batch of {n} rows; "
                         "return exactly one verdict per row, in row order")
    for name, values in verdicts.evidence.items():
        if len(values) != n:
            raise StageError(f"stage '{stage}': evidence '{name}' has {len(values)} values for {n} rows")
    for key, value in verdicts.counts.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise StageError(f"stage '{stage}': counts must map names (str) to non-negative ints; got {key!r}: {value!r}")
    for d in set(verdicts.decision) - {None}:
        try:
            cat = table.category(d)
        except UnknownDecisionError:
            raise StageError(f"stage '{stage}' returned the unknown decision '{d}'; declare it in the stage's "
                             "`decisions` (a DecisionKind with its category)") from None
        if cat == Category.QUARANTINED and stage != "safety":
            raise StageError(f"stage '{stage}': only the safety stage quarantines; use a dropped decision")
    for i, (d, r) in enumerate(zip(verdicts.decision, verdicts.reason)):
        if d is not None and not r:
            raise StageError(f"stage '{stage}' returned decision '{d}' without a reason (row {i} of the batch); "
                             "every decision needs a reason for the ledger")
    return verdicts


def run_batch(spec, stage, table, ctx, decisions: DecisionTable) -> Verdicts:
    """A record or unit stage's `process` on one batch, its verdicts checked. An exception from a
    user's stage becomes a StageError naming the stage (a built-in stage's propagates as it is)."""
    try:
        verdicts = stage.process(table, ctx)
    except PipelineError:
        raise
    except Exception as e:
        if spec.origin == "built-in":
            raise
        raise StageError(f"stage '{spec.kind}' raised {e.__class__.__name__} in process(): {e}") from e
    return check_verdicts(spec.kind, verdicts, table.num_rows, decisions)
