"""The PII stage as run steps: detect per unit, decide globally, redact while writing shards.

    pii_unit(work_dir, unit_id)   detect in the unit's kept records: pii/uNNNNN.spans.parquet
                                  (row, field, entity, start, end, score: offsets, never values)
                                  and pii/uNNNNN.records.parquet (per-record counts and verdict)
    pii_decide(work_dir)          fold the verdicts into the decisions (redacted, dropped, rejected)
                                  and plan the output shards again
    UnitRedaction                 used by pass 2: applies the stored spans to the re-read text,
                                  and scans the redacted text again for the residual check

Detection runs after deduplication, so no work is spent on copies that are dropped anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.audit.ledger import Decision, Stage
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.pii.config import PiiConfig
from pipeline.pii.engine import PiiEngine, Span
from pipeline.pii.redact import Redactor, hmac_key, resolve
from pipeline.plan import RunPlan

log = logging.getLogger(__name__)

SPANS_SCHEMA = pa.schema([("row", pa.int64()), ("field", pa.string()), ("entity", pa.string()),
                          ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
RECORDS_SCHEMA = pa.schema([("row", pa.int64()), ("chars", pa.int64()), ("spans", pa.int64()),
                            ("redacted_chars", pa.int64()), ("drop_reason", pa.string()), ("error", pa.string()),
                            ("counts", pa.string())])
_ENGINES: dict[str, PiiEngine] = {}
_ENGINES_LOCK = threading.Lock()
_DETECT_BATCH = 2_000


def engine_for(cfg: PiiConfig) -> PiiEngine:
    """One set-up engine per process and configuration (loading spaCy takes seconds)."""
    key = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = PiiEngine(cfg).setup()
        return _ENGINES[key]


def text_fields(plan: RunPlan, source_name: str) -> list[str]:
    """The columns the stage scans in a source: its text field (for webdataset the `txt` caption), then `pii.fields`.

    image_dir records have no text: nothing is scanned. A webdataset sample's `json` sidecar is scanned
    only when `pii.fields` names it. A Parquet/HF source with `image_column` is scanned like any other
    (its `text_field`, e.g. a caption); a column a table lacks, or that is not text, is skipped.
    """
    source = plan.source(source_name)
    if source.kind == "image_dir":
        return []
    if source.kind == "webdataset":
        return list(dict.fromkeys(["txt", *plan.config.pii.fields]))
    return list(dict.fromkeys([source.text_field, *plan.config.pii.fields]))


def _name(unit_id: int) -> str:
    return f"u{unit_id:05d}"


def _string_column(table: pa.Table, field: str) -> list | None:
    if field not in table.column_names:
        return None
    col = table.column(field)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    return col.to_pylist()


def pii_unit(work_dir: str, unit_id: int) -> dict:
    """Detect PII in one unit's kept records; write spans (offsets only) and per-record verdicts."""
    from pipeline.steps import _read_done, iter_unit_rows

    work = Path(work_dir)
    out = work / "pii"
    done = out / f"{_name(unit_id)}.json"
    if (cached := _read_done(done)) is not None:
        return cached
    t0 = time.perf_counter()
    plan = RunPlan.load(work)
    cfg = plan.config.pii
    unit = plan.units[unit_id]
    kept = (pl.read_parquet(work / "decisions" / f"{_name(unit_id)}.parquet", columns=["row", "decision"])
            .filter(pl.col("decision") == Decision.KEPT.value).sort("row"))
    fields = text_fields(plan, unit.source)
    redactor = Redactor(cfg, hmac_key(cfg))
    spans_cols: dict[str, list] = {k: [] for k in SPANS_SCHEMA.names}
    rec_cols: dict[str, list] = {k: [] for k in RECORDS_SCHEMA.names}
    not_text: set[str] = set()
    by_entity: dict[str, int] = {}
    engine = engine_for(cfg) if fields and kept.height else None
    for table, rows in iter_unit_rows(plan, unit_id, kept["row"].to_numpy()) if engine is not None else ():
        for lo in range(0, table.num_rows, _DETECT_BATCH):
            part, part_rows = table.slice(lo, _DETECT_BATCH), rows[lo:lo + _DETECT_BATCH]
            per_record: list[list[tuple[str, Span]]] = [[] for _ in range(part.num_rows)]
            chars = np.zeros(part.num_rows, dtype=np.int64)
            errors: list[str | None] = [None] * part.num_rows
            for field in fields:
                values = _string_column(part, field)
                if values is None:
                    if field in part.column_names:
                        not_text.add(field)
                    continue
                idx = [i for i, v in enumerate(values) if v]
                for i in idx:
                    chars[i] += len(values[i])
                for i, spans in zip(idx, _detect(engine, [values[i] for i in idx], errors, idx)):
                    per_record[i].extend((field, s) for s in spans)
            for i in range(part.num_rows):
                found = per_record[i]
                verdict = redactor.verdict([s for _, s in found], int(chars[i]))
                for field, s in found:
                    for k, v in zip(SPANS_SCHEMA.names, (int(part_rows[i]), field, s.entity, s.start, s.end, s.score)):
                        spans_cols[k].append(v)
                for e, n in verdict.counts.items():
                    by_entity[e] = by_entity.get(e, 0) + n
                for k, v in zip(RECORDS_SCHEMA.names, (int(part_rows[i]), int(chars[i]), len(found), verdict.redacted_chars,
                                                       verdict.drop_reason, errors[i],
                                                       json.dumps(verdict.counts, separators=(",", ":")))):
                    rec_cols[k].append(v)
    out.mkdir(exist_ok=True)
    with atomic_path(out / f"{_name(unit_id)}.spans.parquet") as tmp:
        pa.parquet.write_table(pa.Table.from_pydict(spans_cols, SPANS_SCHEMA), tmp)
    with atomic_path(out / f"{_name(unit_id)}.records.parquet") as tmp:
        pa.parquet.write_table(pa.Table.from_pydict(rec_cols, RECORDS_SCHEMA), tmp)
    for field in sorted(not_text):
        log.warning("unit %d: column %r is not text; the PII stage did not scan it", unit_id, field)
    result = {
        "unit_id": unit_id, "scanned": len(rec_cols["row"]), "spans": len(spans_cols["row"]),
        "with_pii": sum(1 for n in rec_cols["spans"] if n), "dropped": sum(1 for r in rec_cols["drop_reason"] if r),
        "errors": sum(1 for r in rec_cols["error"] if r), "by_entity": dict(sorted(by_entity.items())),
        "fields_not_text": sorted(not_text), "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done, result)
    return result


def _detect(engine: PiiEngine, texts: list[str], errors: list, idx: list[int]) -> list[list[Span]]:
    """Detect over a batch; if the batch fails, retry record by record and mark the failures."""
    try:
        return engine.detect_for_redaction(texts)
    except Exception as e:  # noqa: BLE001 - one bad record must not sink the unit; it is rejected with a reason
        log.warning("PII detection failed on a batch (%s); retrying record by record", e.__class__.__name__)
    out = []
    for i, t in zip(idx, texts):
        try:
            out.append(engine.detect_for_redaction([t])[0])
        except Exception as e:  # noqa: BLE001 - recorded as a rejection reason (exception class only, never content)
            errors[i] = f"PII detection failed ({e.__class__.__name__})"
            out.append([])
    return out


def pii_decide(work_dir: str) -> dict:
    """Fold PII verdicts into the decisions and plan the output shards again."""
    from pipeline.steps import _plan_output, _read_done, _unit_name

    work = Path(work_dir)
    done = work / "pii_decide.json"
    if (cached := _read_done(done)) is not None:
        return cached
    plan = RunPlan.load(work)
    frames = []
    for u in plan.units:
        name = _unit_name(u.unit_id)
        dec = pl.read_parquet(work / "decisions" / f"{name}.parquet").drop("shard")
        rec = pl.read_parquet(work / "pii" / f"{name}.records.parquet")
        dec = dec.join(rec.select("row", "spans", "drop_reason", "error", "counts"), on="row", how="left")
        scanned = pl.col("spans").is_not_null()
        dec = dec.with_columns(
            decision=pl.when(pl.col("error").is_not_null()).then(pl.lit(Decision.REJECTED.value))
            .when(pl.col("drop_reason").is_not_null()).then(pl.lit(Decision.DROPPED_PII.value))
            .when(scanned & (pl.col("spans") > 0)).then(pl.lit(Decision.KEPT_REDACTED.value))
            .otherwise(pl.col("decision")),
            stage=pl.when(scanned & ((pl.col("spans") > 0) | pl.col("error").is_not_null()))
            .then(pl.lit(Stage.PII.value)).otherwise(pl.col("stage")),
            reason=pl.coalesce(pl.col("error"), pl.col("drop_reason"),
                               pl.when(scanned & (pl.col("spans") > 0)).then(pl.lit("PII redacted")), pl.col("reason")),
            pii_action=pl.when(pl.col("error").is_not_null()).then(pl.lit("rejected"))
            .when(pl.col("drop_reason").is_not_null()).then(pl.lit("dropped"))
            .when(scanned & (pl.col("spans") > 0)).then(pl.lit("redacted"))
            .when(scanned).then(pl.lit("clean")).otherwise(pl.lit(None, pl.String)),
            pii_counts=pl.when(scanned & (pl.col("spans") > 0)).then(pl.col("counts")).otherwise(pl.lit(None, pl.String)),
        ).drop("spans", "drop_reason", "error", "counts")
        frames.append(dec.with_columns(unit=pl.lit(u.unit_id, pl.Int64)))
    records = pl.concat(frames, how="vertical_relaxed").with_row_index("_i")
    assignment, shards = _plan_output(records, plan.config)
    records = records.join(assignment.drop("_i"), on=["unit", "row"], how="left").drop("_i")
    for u in plan.units:
        part = records.filter(pl.col("unit") == u.unit_id).drop("unit").sort("row")
        with atomic_path(work / "decisions" / f"{_unit_name(u.unit_id)}.parquet") as tmp:
            part.write_parquet(tmp)
    atomic_write_json(work / "shards.json", shards)
    counts = records.group_by("decision").len().sort("decision")
    result = {"shards": len(shards), "by_decision": dict(zip(counts["decision"].to_list(), counts["len"].to_list()))}
    atomic_write_json(done, result)
    return result


class UnitRedaction:
    """The stored spans of one unit's kept rows, applied to the re-read text in pass 2."""

    def __init__(self, plan: RunPlan, fields: list[str], spans: dict[tuple[int, str], list[Span]]):
        self.cfg = plan.config.pii
        self.fields = fields
        self.spans = spans
        self.redactor = Redactor(self.cfg, hmac_key(self.cfg))

    @classmethod
    def load(cls, work: Path, plan: RunPlan, unit_id: int, rows: np.ndarray) -> "UnitRedaction":
        df = pl.read_parquet(work / "pii" / f"{_name(unit_id)}.spans.parquet").filter(pl.col("row").is_in(rows.tolist()))
        spans: dict[tuple[int, str], list[Span]] = {}
        for r in df.sort("row", "field", "start").iter_rows(named=True):
            spans.setdefault((r["row"], r["field"]), []).append(Span(r["entity"], r["start"], r["end"], r["score"]))
        return cls(plan, text_fields(plan, plan.units[unit_id].source), spans)

    def apply(self, table: pa.Table, rows: np.ndarray, record_ids: pa.Array, residual: "ResidualScan | None") -> pa.Table:
        """The table with each scanned text column redacted; feeds the residual scan if one is given."""
        sample = residual.sample(record_ids) if residual is not None else None
        for field in self.fields:
            values = _string_column(table, field)
            if values is None:
                continue
            tokens: dict[int, list[tuple[int, int]]] = {}
            for i, row in enumerate(rows.tolist()):
                found = self.spans.get((row, field))
                if found and values[i] is not None:
                    values[i], tokens[i] = self.redactor.apply_with_positions(values[i], found)
            if residual is not None:
                residual.scan([values[i] for i in sample if values[i]], [tokens.get(i, []) for i in sample if values[i]])
            table = table.set_column(table.column_names.index(field), field, pa.array(values, table.column(field).type))
        if residual is not None:
            residual.records += len(sample)
        return table


class ResidualScan:
    """Detection over the redacted output: spans not inside a redaction token are residual PII."""

    def __init__(self, cfg: PiiConfig):
        self.cfg = cfg
        self.fraction = cfg.residual_scan.sample_fraction
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
        for text, spans, toks in zip(texts, engine_for(self.cfg).detect(texts), tokens):
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
