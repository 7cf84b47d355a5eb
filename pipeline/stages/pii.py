"""The PII stage: detect per unit after deduplication (spans: offsets, never values), redact at
write time, and scan the redacted output again for residual PII.

    per unit      `process` detects in the kept records' text fields; verdicts: kept_redacted,
                  dropped_pii (an action or the record rule says drop) or rejected (detection
                  failed); evidence: pii_counts (spans per entity type) and pii_action
    at write      the stored spans are applied to the re-read text; the residual scan runs detection
                  over (a deterministic sample of) the redacted text

Detection runs after deduplication, so no work is spent on copies that are dropped anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.decisions import REJECTED, Category, DecisionKind
from pipeline.core.stage import BatchContext, Placement, UnitStage, Verdicts, WriteStage
from pipeline.pii.engine import PiiEngine, Span
from pipeline.pii.redact import Redactor, hmac_key, resolve
from pipeline.run.workdir import unit_name

log = logging.getLogger(__name__)

KEPT_REDACTED = DecisionKind("kept_redacted", Category.KEPT, "kept with personal data redacted")
DROPPED_PII = DecisionKind("dropped_pii", Category.DROPPED, "dropped for personal data (an action or the record rule)")
SPANS_SCHEMA = pa.schema([("row", pa.int64()), ("field", pa.string()), ("entity", pa.string()),
                          ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])


def text_fields(run_config, source_name: str) -> list[str]:
    """The columns the stage scans in a source: its text field (for webdataset the `txt` caption), then `pii.fields`.

    image_dir records have no text: nothing is scanned. A webdataset sample's `json` sidecar is scanned
    only when `pii.fields` names it. A Parquet/HF source with `image_column` is scanned like any other
    (its `text_field`, e.g. a caption); a column a table lacks, or that is not text, is skipped.
    """
    source = next(s for s in run_config.sources if s.name == source_name)
    if source.kind == "image_dir":
        return []
    if source.kind == "webdataset":
        return list(dict.fromkeys(["txt", *run_config.pii.fields]))
    return list(dict.fromkeys([source.text_field, *run_config.pii.fields]))


def _string_column(table: pa.Table, field: str) -> list | None:
    if field not in table.column_names:
        return None
    col = table.column(field)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    return col.to_pylist()


class PiiStage(UnitStage, WriteStage):
    """Presidio detection per unit, redaction and residual scan at write time."""

    kind = "pii"
    description = ("finds personal data with Presidio after deduplication and redacts it (tag, mask, keyed hash) or "
                   "drops the record, per entity type; the output is scanned again for residual PII")
    placements = (Placement.UNIT, Placement.WRITE)
    decisions = (KEPT_REDACTED, DROPPED_PII, REJECTED)
    config_section = "pii"
    needs_processes = True

    def setup(self) -> "PiiStage":
        self._engine: PiiEngine | None = None
        self.redactor = Redactor(self.config, hmac_key(self.config))
        self._unit: dict[int, dict] = {}
        return self

    @property
    def engine(self) -> PiiEngine:
        """The Presidio engine, loaded on first use (the write-time redaction does not need it)."""
        if self._engine is None:
            self._engine = PiiEngine(self.config).setup()
        return self._engine

    def describe(self) -> dict:
        """The engine, model and entities for the manifest."""
        return self.engine.describe()

    # -- per unit ------------------------------------------------------------------------------

    def scans(self, source_name: str) -> bool:
        return bool(text_fields(self.run_config, source_name))

    def begin_unit(self, unit_id: int, work_dir: Path) -> None:
        self._unit[unit_id] = {"spans": {k: [] for k in SPANS_SCHEMA.names}, "not_text": set(), "by_entity": {},
                               "spans_n": 0, "with_pii": 0, "dropped": 0, "errors": 0}

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        state = self._unit[ctx.unit_id]
        n = table.num_rows
        per_record: list[list[tuple[str, Span]]] = [[] for _ in range(n)]
        chars = np.zeros(n, dtype=np.int64)
        errors: list[str | None] = [None] * n
        for field in text_fields(self.run_config, ctx.source):
            values = _string_column(table, field)
            if values is None:
                if field in table.column_names:
                    state["not_text"].add(field)
                continue
            idx = [i for i, v in enumerate(values) if v]
            for i in idx:
                chars[i] += len(values[i])
            for i, spans in zip(idx, self._detect([values[i] for i in idx], errors, idx)):
                per_record[i].extend((field, s) for s in spans)
        rows = ctx.rows.tolist()
        out = []
        action, counts_ev = [], []
        for i in range(n):
            found = per_record[i]
            verdict = self.redactor.verdict([s for _, s in found], int(chars[i]))
            for field, s in found:
                for k, v in zip(SPANS_SCHEMA.names, (rows[i], field, s.entity, s.start, s.end, s.score)):
                    state["spans"][k].append(v)
            for e, c in verdict.counts.items():
                state["by_entity"][e] = state["by_entity"].get(e, 0) + c
            state["spans_n"] += len(found)
            state["with_pii"] += bool(found)
            counts = json.dumps(verdict.counts, separators=(",", ":")) if found else None
            if errors[i] is not None:
                state["errors"] += 1
                out.append((REJECTED.name, errors[i]))
                action.append("rejected")
            elif verdict.drop_reason is not None:
                state["dropped"] += 1
                out.append((DROPPED_PII.name, verdict.drop_reason))
                action.append("dropped")
            elif found:
                out.append((KEPT_REDACTED.name, "PII redacted"))
                action.append("redacted")
            else:
                out.append(None)
                action.append("clean")
            counts_ev.append(counts)
        v = Verdicts.from_rows(out)
        v.evidence = {"pii_action": action, "pii_counts": counts_ev}
        return v

    def _detect(self, texts: list[str], errors: list, idx: list[int]) -> list[list[Span]]:
        """Detect over a batch; if the batch fails, retry record by record and mark the failures."""
        try:
            return self.engine.detect_for_redaction(texts)
        except Exception as e:  # noqa: BLE001 - one bad record must not sink the unit; it is rejected with a reason
            log.warning("PII detection failed on a batch (%s); retrying record by record", e.__class__.__name__)
        out = []
        for i, t in zip(idx, texts):
            try:
                out.append(self.engine.detect_for_redaction([t])[0])
            except Exception as e:  # noqa: BLE001 - recorded as a rejection reason (exception class only, never content)
                errors[i] = f"PII detection failed ({e.__class__.__name__})"
                out.append([])
        return out

    def end_unit(self, unit_id: int, work_dir: Path) -> dict:
        state = self._unit.pop(unit_id, None)
        if state is None:
            return {}
        out = Path(work_dir) / "stages" / self.kind
        out.mkdir(parents=True, exist_ok=True)
        from pipeline.fileio import atomic_path

        with atomic_path(out / f"{unit_name(unit_id)}.spans.parquet") as tmp:
            pq.write_table(pa.Table.from_pydict(state["spans"], SPANS_SCHEMA), tmp)
        for field in sorted(state["not_text"]):
            log.warning("unit %d: column %r is not text; the PII stage did not scan it", unit_id, field)
        return {"spans": state["spans_n"], "with_pii": state["with_pii"], "dropped": state["dropped"],
                "errors": state["errors"], "by_entity": dict(sorted(state["by_entity"].items())),
                "fields_not_text": sorted(state["not_text"])}

    # -- at write time -------------------------------------------------------------------------

    def open_shard(self, shard_id: int, work_dir: Path) -> "_ShardRedaction":
        return _ShardRedaction(self, Path(work_dir))


class _ShardRedaction:
    """One shard's redaction and residual scan (per shard: shards are written in parallel)."""

    def __init__(self, stage: PiiStage, work: Path) -> None:
        self.stage, self.work = stage, work
        cfg = stage.config
        self.residual = ResidualScan(stage) if cfg.residual_scan.enabled else None

    def unit(self, unit_id: int, rows: np.ndarray):
        """The redaction of one unit's kept rows: stored spans applied to the re-read text."""
        path = self.work / "stages" / self.stage.kind / f"{unit_name(unit_id)}.spans.parquet"
        spans: dict[tuple[int, str], list[Span]] = {}
        if path.exists():
            df = pl.read_parquet(path).filter(pl.col("row").is_in(rows.tolist()))
            for r in df.sort("row", "field", "start").iter_rows(named=True):
                spans.setdefault((r["row"], r["field"]), []).append(Span(r["entity"], r["start"], r["end"], r["score"]))
        fields = text_fields(self.stage.run_config, self.stage.plan.units[unit_id].source)
        return lambda table, rows, record_ids: self._apply(table, rows, record_ids, fields, spans)

    def _apply(self, table: pa.Table, rows: np.ndarray, record_ids: pa.Array, fields, spans) -> pa.Table:
        """The table with each scanned text column redacted; feeds the residual scan."""
        residual = self.residual
        sample = residual.sample(record_ids) if residual is not None else None
        for field in fields:
            values = _string_column(table, field)
            if values is None:
                continue
            tokens: dict[int, list[tuple[int, int]]] = {}
            for i, row in enumerate(rows.tolist()):
                found = spans.get((row, field))
                if found and values[i] is not None:
                    values[i], tokens[i] = self.stage.redactor.apply_with_positions(values[i], found)
            if residual is not None:
                residual.scan([values[i] for i in sample if values[i]], [tokens.get(i, []) for i in sample if values[i]])
            table = table.set_column(table.column_names.index(field), field, pa.array(values, table.column(field).type))
        if residual is not None:
            residual.records += len(sample)
        return table

    def stats(self) -> dict | None:
        return self.residual.to_dict() if self.residual is not None else None


class ResidualScan:
    """Detection over the redacted output: spans not inside a redaction token are residual PII."""

    def __init__(self, stage: PiiStage):
        self.stage = stage
        self.fraction = stage.config.residual_scan.sample_fraction
        self.records = 0
        self.spans = 0
        self.by_entity: dict[str, int] = {}

    def sample(self, record_ids: pa.Array) -> list[int]:
        """Positions of the records in the deterministic sample (by a hash of the record id)."""
        if self.fraction >= 1.0:
            return list(range(len(record_ids)))
        cut = int(self.fraction * 2**32)
        return [i for i, r in enumerate(record_ids.to_pylist())
                if int.from_bytes(hashlib.sha256(r.encode()).digest()[:4], "big") < cut]

    def scan(self, texts: list[str], tokens: list[list[tuple[int, int]]]) -> None:
        if not texts:
            return
        for text, spans, toks in zip(texts, self.stage.engine.detect(texts), tokens):
            for s in resolve(spans):
                if not _inside_tokens(text, s, toks):
                    self.spans += 1
                    self.by_entity[s.entity] = self.by_entity.get(s.entity, 0) + 1

    def to_dict(self) -> dict:
        return {"records": self.records, "spans": self.spans, "by_entity": dict(sorted(self.by_entity.items())),
                "sample_fraction": self.fraction}


def _inside_tokens(text: str, span: Span, tokens: list[tuple[int, int]]) -> bool:
    """True when every letter or digit of the span lies inside inserted redaction tokens
    (a detector that tags "<PERSON> <PERSON>" as one name has found no residual PII)."""
    inside = [(a, b) for a, b in tokens if a < span.end and span.start < b]
    for i in range(span.start, span.end):
        if text[i].isalnum() and not any(a <= i < b for a, b in inside):
            return False
    return True
