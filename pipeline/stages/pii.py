"""The PII stage: detect per task after deduplication (spans: offsets, never values), scan a
sample of the redacted text again for residual PII, and redact at write time.

    per task      `process` detects in the kept records' text fields; verdicts: kept_redacted,
                  dropped_pii (an action or the record rule says drop) or rejected (detection
                  failed); evidence: pii_counts (spans per entity type) and pii_action; with
                  `route_by_language`, also pii_language (the record's language, `unknown` when
                  none was found) and pii_coverage (`full`: an NER model searched names;
                  `patterns_only`: no model for the language, only the pattern recognizers ran).
                  The records of the residual sample are redacted as pass 2 will write them and
                  scanned again (`pipeline.pii.residual`), by the same engine as at detection
    at write      the stored spans are applied to the re-read text

Detection runs after deduplication, so no work is spent on copies that are dropped anyway, and
per task (a few MiB of kept text), so it runs on every worker whatever the input's layout. A
record with more text than a task is detected by several part tasks, each a share of the
engine's chunks, in three rounds (the text fields, the second pass, the residual scan), and its
first part takes the verdict from their spans (`pipeline.pii.parts`): the same spans, verdict
and residual counts as one task over the whole record.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.decisions import REJECTED, Category, DecisionKind
from pipeline.core.stage import BatchContext, Placement, UnitStage, Verdicts, WriteStage
from pipeline.pii.engine import PiiEngine, Span
from pipeline.pii.parts import PartsError, RecordParts, RoundReached, forget, recall, remember, share
from pipeline.pii.redact import Redactor, hmac_key
from pipeline.pii.residual import ResidualScan, sample_fraction
from pipeline.pii.router import PiiRouter, Route

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
    # A record's detection calls, in order: its text fields, the second pass, the residual scan.
    split_rounds = 3

    def setup(self) -> "PiiStage":
        self._engine: PiiEngine | None = None
        self._router: PiiRouter | None = None
        self.redactor = Redactor(self.config, hmac_key(self.config))
        self._unit: dict[int, dict] = {}
        return self

    def warm(self) -> None:
        """The engine loaded and one short text detected (spaCy's pipeline and numba's cached
        kernels load on the first call: about 4 s per process on this project's machines)."""
        self.engine.detect(["Questions to Ada Example at ada@example.com."])

    @property
    def engine(self) -> PiiEngine:
        """The Presidio engine, loaded on first use (the write-time redaction does not need it)."""
        if self._engine is None:
            self._engine = PiiEngine(self.config).setup()
        return self._engine

    @property
    def router(self) -> PiiRouter:
        """The engines per language (`route_by_language`), each loaded when a record needs it."""
        if self._router is None:
            self._router = PiiRouter(self.config)
        return self._router

    def describe(self) -> dict:
        """The engine, model and entities for the manifest (and the routing, when on)."""
        return self.router.describe() if self.config.route_by_language else self.engine.describe()

    # -- per unit ------------------------------------------------------------------------------

    def scans(self, source_name: str) -> bool:
        return bool(text_fields(self.run_config, source_name))

    def residual_fraction(self, work_dir: Path) -> float | None:
        """The residual scan's sample fraction for this run (None when the scan is off)."""
        if not self.config.residual_scan.enabled:
            return None
        from pipeline.run.tasks import planned

        return sample_fraction(self.config.residual_scan, planned(str(work_dir), self.kind)["records"])

    def begin_task(self, task, work_dir: Path) -> None:
        detect = None
        if task.is_part:   # the join: the record's detection calls are answered by its parts' rounds
            forget()   # the rounds' texts this worker kept
            parts = self._parts(task, work_dir)
            failed = parts.failed(self.split_rounds + 1)
            if failed is None:
                detect = parts.replay()
            else:
                log.warning("%s: a part's detection failed (%s); detecting the split record in one task",
                            task.name, failed)
        self._start(task, work_dir, detect)

    def _start(self, task, work_dir: Path, detect=None) -> None:
        """The task's state; `detect` (None: the engine's) answers its detection calls."""
        fraction = self.residual_fraction(work_dir)
        if self.config.route_by_language:
            scan_detect = self.router.detect if detect is None else (lambda ts, keys: self.router.detect(ts, keys, detect))
        else:
            scan_detect = detect or self.engine.detect
        self._unit[task.task_id] = {
            "spans": {k: [] for k in SPANS_SCHEMA.names}, "not_text": set(), "by_entity": {},
            "spans_n": 0, "with_pii": 0, "dropped": 0, "errors": 0, "detect": detect, "in_residual": False,
            "residual": ResidualScan(scan_detect, fraction) if fraction is not None else None}

    def _parts(self, task, work_dir: Path) -> RecordParts:
        from pipeline.run.tasks import record_parts

        return RecordParts(Path(work_dir) / "stages" / self.kind, record_parts(str(work_dir), self.kind, task))

    def run_part(self, table: pa.Table, ctx: BatchContext, task, round_: int, work_dir: Path) -> dict:
        """Detect this part's share of the record's detection call `round_`: the program runs up to
        that call (the calls before answered by the rounds before), then the part detects its chunks."""
        parts = self._parts(task, work_dir)
        if parts.failed(round_) is not None:
            return {"detected": False}   # the join detects the record in one task
        key = (str(work_dir), self.plan.run_id, task.unit_id, task.first_row, round_)
        try:
            texts, engine_key, residual = recall(key)
        except KeyError:
            self._start(task, work_dir, parts.replay(upto=round_))
            texts, engine_key, residual = None, None, False
            try:
                self.process(table, ctx)
            except RoundReached as reached:
                texts, residual = reached.texts, self._unit[task.task_id]["in_residual"]
                if self.config.route_by_language:
                    engine_key = self._routes(self._fields(table, ctx.source, set()), 1)[0].engine
            finally:
                self.abort_task(task, work_dir)
            remember(key, (texts, engine_key, residual))
        if texts is None:
            return {"detected": False}   # the record's work made fewer detection calls
        engine = self.engine if engine_key is None else self.router.engine(engine_key)
        first, last = share(engine.chunk_lengths(texts), task.part, task.parts)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            spans = engine.detect_chunks(texts, first, last)
        except Exception as e:  # noqa: BLE001 - the join then detects the record whole, and rejects it as one task would
            log.warning("%s: PII detection failed on a split record's chunks (%s)", task.name, e.__class__.__name__)
            return {"detected": False, "failed": e.__class__.__name__}
        parts.write(task, round_, spans)
        out = {"detected": True, "chunks": last - first}
        if residual:   # the residual scan's detection time (its counts come from the join)
            out["residual"] = {"seconds": round(time.perf_counter() - t0, 3),
                               "cpu_seconds": round(time.thread_time() - c0, 3)}
        return out

    def _fields(self, table: pa.Table, source: str, not_text: set) -> dict[str, list]:
        """The scanned text columns of a batch (columns that are not text are added to `not_text`)."""
        fields: dict[str, list] = {}
        for field in text_fields(self.run_config, source):
            values = _string_column(table, field)
            if values is None:
                if field in table.column_names:
                    not_text.add(field)
                continue
            fields[field] = values
        return fields

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        state = self._unit[ctx.task]
        n = table.num_rows
        per_record: list[list[tuple[str, Span]]] = [[] for _ in range(n)]
        chars = np.zeros(n, dtype=np.int64)
        errors: list[str | None] = [None] * n
        fields = self._fields(table, ctx.source, state["not_text"])
        routes = self._routes(fields, n) if self.config.route_by_language else None
        # Every field's texts in one detection call (each text is detected on its own), so a
        # record's work makes the same calls however many fields it has (`split_rounds`).
        owners = [(field, i) for field, values in fields.items() for i, v in enumerate(values) if v]
        for field, i in owners:
            chars[i] += len(fields[field][i])
        idx = [i for _, i in owners]
        found = self._detect([fields[f][i] for f, i in owners], errors, idx, routes, state["detect"])
        for (field, i), spans in zip(owners, found):
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
        if state["residual"] is not None:
            state["in_residual"] = True
            self._residual(state["residual"], ctx.record_ids, action, fields, per_record, routes)
            state["in_residual"] = False
        v = Verdicts.from_rows(out)
        v.evidence = {"pii_action": action, "pii_counts": counts_ev}
        if routes is not None:
            v.evidence["pii_language"] = [r.language for r in routes]
            v.evidence["pii_coverage"] = [r.coverage for r in routes]
        return v

    def _routes(self, fields: dict[str, list], n: int) -> list[Route]:
        """Each record's route, from the language of its first non-empty text field (all its
        fields go to the same engine)."""
        first: list[str | None] = [None] * n
        for values in fields.values():
            for i, v in enumerate(values):
                if first[i] is None and v:
                    first[i] = v
        return self.router.routes(first)

    def _residual(self, scan: ResidualScan, record_ids: list[str], action: list[str], fields: dict[str, list],
                  per_record: list[list[tuple[str, Span]]], routes: list[Route] | None = None) -> None:
        """Scan the sampled records the stage keeps, redacted as pass 2 will write them (with
        routing, each by the engine that scanned it at detection)."""
        sampled, keys = [], []
        for i in scan.sample(record_ids):
            if action[i] not in ("clean", "redacted"):
                continue
            redacted = []
            for field, values in fields.items():
                if values[i] is None:
                    continue
                spans = sorted((s for f, s in per_record[i] if f == field), key=lambda s: s.start)
                redacted.append(self.redactor.apply_with_positions(values[i], spans) if spans else (values[i], []))
            sampled.append(redacted)
            if routes is not None:
                keys.append(routes[i].engine)
        scan.scan(sampled, keys if routes is not None else None)

    def _detect(self, texts: list[str], errors: list, idx: list[int], routes: list[Route] | None = None,
                raw=None) -> list[list[Span]]:
        """Detect over a batch (with routing, each record by its language's engine; `raw`: the
        detection calls' answer, None for the engine's); if the batch fails, retry text by text
        and mark the records whose text failed."""
        if routes is None:
            def detect(ts: list[str], ii: list[int]) -> list[list[Span]]:
                return self.engine.detect_for_redaction(ts, raw)
        else:
            def detect(ts: list[str], ii: list[int]) -> list[list[Span]]:
                return self.router.detect_for_redaction(ts, [routes[i].engine for i in ii], raw)
        try:
            return detect(texts, idx)
        except PartsError:
            raise   # the run's own artifacts (a split record's rounds), not the record, are at fault
        except Exception as e:  # noqa: BLE001 - one bad record must not sink the unit; it is rejected with a reason
            log.warning("PII detection failed on a batch (%s); retrying record by record", e.__class__.__name__)
        out = []
        for i, t in zip(idx, texts):
            try:
                out.append(detect([t], [i])[0])
            except Exception as e:  # noqa: BLE001 - recorded as a rejection reason (exception class only, never content)
                errors[i] = f"PII detection failed ({e.__class__.__name__})"
                out.append([])
        return out

    def end_task(self, task, work_dir: Path) -> dict:
        state = self._unit.pop(task.task_id, None)
        if state is None:
            return {}
        out = Path(work_dir) / "stages" / self.kind
        out.mkdir(parents=True, exist_ok=True)
        from pipeline.fileio import atomic_path

        with atomic_path(out / f"{task.name}.spans.parquet") as tmp:
            pq.write_table(pa.Table.from_pydict(state["spans"], SPANS_SCHEMA), tmp)
        for field in sorted(state["not_text"]):
            log.warning("unit %d: column %r is not text; the PII stage did not scan it", task.unit_id, field)
        result = {"spans": state["spans_n"], "with_pii": state["with_pii"], "dropped": state["dropped"],
                  "errors": state["errors"], "by_entity": dict(sorted(state["by_entity"].items())),
                  "fields_not_text": sorted(state["not_text"])}
        if state["residual"] is not None:
            result["residual"] = state["residual"].to_dict()
        return result

    def abort_task(self, task, work_dir: Path) -> None:
        self._unit.pop(task.task_id, None)

    # -- at write time -------------------------------------------------------------------------

    def open_shard(self, shard_id: int, work_dir: Path) -> "_ShardRedaction":
        return _ShardRedaction(self, Path(work_dir))


class _ShardRedaction:
    """One shard's redaction (per shard: shards are written in parallel)."""

    def __init__(self, stage: PiiStage, work: Path) -> None:
        self.stage, self.work = stage, work

    def unit(self, unit_id: int, rows: np.ndarray):
        """The redaction of one unit's kept rows: stored spans applied to the re-read text."""
        from pipeline.run.tasks import unit_tasks

        spans: dict[tuple[int, str], list[Span]] = {}
        wanted = rows.tolist()
        for task in unit_tasks(str(self.work), self.stage.kind).get(unit_id, []):
            if task.last_row < wanted[0] or task.first_row > wanted[-1]:
                continue
            df = pl.read_parquet(self.work / "stages" / self.stage.kind / f"{task.name}.spans.parquet")
            for r in df.filter(pl.col("row").is_in(wanted)).sort("row", "field", "start").iter_rows(named=True):
                spans.setdefault((r["row"], r["field"]), []).append(Span(r["entity"], r["start"], r["end"], r["score"]))
        fields = text_fields(self.stage.run_config, self.stage.plan.units[unit_id].source)
        return lambda table, rows, record_ids: self._apply(table, rows, fields, spans)

    def _apply(self, table: pa.Table, rows: np.ndarray, fields, spans) -> pa.Table:
        """The table with each scanned text column redacted."""
        for field in fields:
            values = _string_column(table, field)
            if values is None:
                continue
            for i, row in enumerate(rows.tolist()):
                found = spans.get((row, field))
                if found and values[i] is not None:
                    values[i] = self.stage.redactor.apply(values[i], found)
            table = table.set_column(table.column_names.index(field), field, pa.array(values, table.column(field).type))
        return table

    def stats(self) -> dict | None:
        return None
