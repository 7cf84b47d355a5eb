"""Quality heuristics as stages: Gopher quality, Gopher repetition, C4 and FineWeb, with datatrove
0.10.1's rules and defaults (`pipeline.quality`). Each is its own kind, as in datatrove and in the
`stages:` list; each drop names the rule and the measured value (`gopher.mean_word_length 2.1 < 3`)
and records them as evidence (quality_rule, quality_value, quality_threshold).

C4 also removes lines from the documents it keeps, which a record stage cannot do in pass 1 (text is
re-read from the input in pass 2). Its three placements:

    per record    the document-level decision, computed on the text after line removal as datatrove
                  does (dropped_c4_quality); kept records whose text the filter changes get the
                  evidence c4_lines_removed and c4_lines
    per unit      after deduplication, those records become `kept_lines_removed` (category kept), so
                  the ledger says that their text changed and how
    at write      the line removal itself, applied to the text as pass 2 writes it

Deduplication runs on the text before line removal (a copy that differs only in removed lines is
found all the same).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BatchContext, Placement, RecordStage, UnitStage, Verdicts, WriteStage
from pipeline.quality.c4 import C4Params, C4Result, SentenceSplitter, c4_quality
from pipeline.quality.fineweb import FineWebParams, fineweb_quality
from pipeline.quality.gopher import GopherQualityParams, GopherRepetitionParams, gopher_quality, gopher_repetition
from pipeline.quality.words import shared_vocab

log = logging.getLogger(__name__)

DROPPED_GOPHER_QUALITY = DecisionKind("dropped_gopher_quality", Category.DROPPED,
                                      "failed a Gopher quality rule (word counts and lengths, symbols, bullets, stop words)")
DROPPED_GOPHER_REPETITION = DecisionKind("dropped_gopher_repetition", Category.DROPPED,
                                         "failed a Gopher repetition rule (repeated lines, paragraphs or n-grams)")
DROPPED_C4_QUALITY = DecisionKind("dropped_c4_quality", Category.DROPPED,
                                  "failed a C4 document rule (lorem ipsum, curly bracket, too few sentences after line removal)")
DROPPED_FINEWEB_QUALITY = DecisionKind("dropped_fineweb_quality", Category.DROPPED,
                                       "failed a FineWeb quality rule (line punctuation, short lines, repeated lines, list-like)")
KEPT_LINES_REMOVED = DecisionKind("kept_lines_removed", Category.KEPT,
                                  "kept with lines removed by C4's line rules (the ledger evidence counts them)")


def _texts(table: pa.Table, field: str) -> list[str] | None:
    """The text column as strings (None for a missing or non-text column; null values as "")."""
    if field not in table.column_names:
        return None
    col = table.column(field)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    return [t if t is not None else "" for t in col.to_pylist()]


class _WordRuleStage(RecordStage):
    """A per-record quality filter over words: one kernel, one dropped decision."""

    dropped: DecisionKind

    def setup(self) -> "_WordRuleStage":
        self.vocab = shared_vocab(self.config.language)
        self._lock = self.vocab.lock  # units of pass 1 run in threads; the vocabulary is shared
        return self

    def rules(self, texts: list[str]) -> list:
        raise NotImplementedError

    def summary(self) -> dict:
        return {"tokenizer": f"spaCy blank '{self.config.language}' per distinct chunk (datatrove 0.10.1's words)"}

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        texts = _texts(table, ctx.text_field) if ctx.text_field else None
        if texts is None:
            return Verdicts.keep_all(table.num_rows)
        with self._lock:
            found = self.rules(texts)
        return Verdicts.from_rows([(self.dropped.name, f.reason(), f.evidence()) if f is not None else None
                                   for f in found])


class GopherQualityStage(_WordRuleStage):
    """datatrove's GopherQualityFilter."""

    kind = "gopher_quality"
    description = "drops documents failing Gopher's quality rules (datatrove GopherQualityFilter semantics and defaults)"
    decisions = (DROPPED_GOPHER_QUALITY,)
    dropped = DROPPED_GOPHER_QUALITY
    Config = GopherQualityParams

    def rules(self, texts):
        return gopher_quality(texts, self.config, self.vocab)


class GopherRepetitionStage(_WordRuleStage):
    """datatrove's GopherRepetitionFilter."""

    kind = "gopher_repetition"
    description = "drops documents failing Gopher's repetition rules (datatrove GopherRepetitionFilter semantics and defaults)"
    decisions = (DROPPED_GOPHER_REPETITION,)
    dropped = DROPPED_GOPHER_REPETITION
    Config = GopherRepetitionParams

    def rules(self, texts):
        return gopher_repetition(texts, self.config, self.vocab)


class FineWebQualityStage(_WordRuleStage):
    """datatrove's FineWebQualityFilter."""

    kind = "fineweb_quality"
    description = "drops documents failing FineWeb's quality rules (datatrove FineWebQualityFilter semantics and defaults)"
    decisions = (DROPPED_FINEWEB_QUALITY,)
    dropped = DROPPED_FINEWEB_QUALITY
    Config = FineWebParams

    def rules(self, texts):
        return fineweb_quality(texts, self.config, self.vocab)


def _lines_reason(r: C4Result) -> str:
    by = ", ".join(f"{k} {v}" for k, v in r.removed_by.items())
    return f"c4: {r.removed} of {r.lines} lines removed" + (f" ({by})" if by else " (lines stripped)")


class C4QualityStage(RecordStage, UnitStage, WriteStage):
    """datatrove's C4QualityFilter: the document decision per record, the ledger's `kept_lines_removed`
    per unit after dedup, the line removal at write time."""

    kind = "c4_quality"
    description = ("C4's line rules (terminal punctuation, short lines, javascript, policy phrases, long words, "
                   "citations) and document rules (lorem ipsum, curly bracket, too few sentences), datatrove "
                   "C4QualityFilter semantics and defaults; removes lines from the documents it keeps")
    placements = (Placement.RECORD, Placement.UNIT, Placement.WRITE)
    decisions = (DROPPED_C4_QUALITY, KEPT_LINES_REMOVED)
    Config = C4Params
    # The line removal re-applies C4's rules to the text it is given, so it composes after write-time
    # transforms whose edits are offsets into the re-read text (PII redaction): pass 2 runs it last.
    edits_from_text = True

    def setup(self) -> "C4QualityStage":
        self.splitter = SentenceSplitter(self.config.language)
        self._lock = threading.Lock()
        return self

    def summary(self) -> dict:
        return {"sentence_splitter": f"spaCy blank '{self.config.language}' + sentencizer (datatrove 0.10.1's)"}

    def _run(self, texts: list[str]) -> list[C4Result]:
        with self._lock:  # the spaCy pipeline is not shared between threads
            return c4_quality(texts, self.config, self.splitter)

    # -- per record (pass 1) and per unit (after dedup) -------------------------------------------

    def scans(self, source_name: str) -> bool:
        source = next((s for s in self.run_config.sources if s.name == source_name), None)
        if source is None or source.kind in ("image_dir", "webdataset"):
            return False
        return getattr(source, "text_field", None) is not None

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        texts = _texts(table, ctx.text_field) if ctx.text_field else None
        if texts is None:
            return Verdicts.keep_all(table.num_rows)
        results = self._run(texts)
        changed = [r.failure is None and r.text != t for r, t in zip(results, texts)]
        if ctx.task is not None:  # per task after dedup (pass 1 has no task): the records whose text changes
            return Verdicts.from_rows([(KEPT_LINES_REMOVED.name, _lines_reason(r)) if c else None
                                       for r, c in zip(results, changed)])
        rows = []
        removed, lines = [], []
        for r, c in zip(results, changed):
            if r.failure is not None:
                rows.append((DROPPED_C4_QUALITY.name, r.failure.reason(),
                             {**r.failure.evidence(), "c4_lines_removed": r.removed, "c4_lines": r.lines}))
            else:
                rows.append(None)
            removed.append(r.removed if c else None)
            lines.append(r.lines if c else None)
        v = Verdicts.from_rows(rows)
        kept_ev = {"c4_lines_removed": removed, "c4_lines": lines}
        for k, vals in kept_ev.items():
            col = v.evidence.setdefault(k, [None] * len(rows))
            for i, x in enumerate(vals):
                if rows[i] is None:
                    col[i] = x
        return v

    # -- at write time ----------------------------------------------------------------------------

    def open_shard(self, shard_id: int, work_dir: Path) -> "_ShardLineRemoval":
        return _ShardLineRemoval(self)


class _ShardLineRemoval:
    """One shard's line removal: the kept records' text replaced by C4's kept lines."""

    def __init__(self, stage: C4QualityStage) -> None:
        self.stage = stage
        self.records = 0
        self.changed = 0
        self.lines_removed = 0
        self.unexpected_drops = 0

    def unit(self, unit_id: int, rows: np.ndarray):
        source = self.stage.plan.source(self.stage.plan.units[unit_id].source)
        field = getattr(source, "text_field", None)
        if not self.stage.scans(source.name) or field is None:
            return lambda table, rows, record_ids: table
        return lambda table, rows, record_ids: self._apply(table, field)

    def _apply(self, table: pa.Table, field: str) -> pa.Table:
        texts = _texts(table, field)
        if texts is None:
            return table
        out = []
        for t, r in zip(texts, self.stage._run(texts)):
            self.records += 1
            if r.failure is not None:
                # Pass 1 kept this text; only an earlier write-time edit can make it fail now. Keep it whole.
                self.unexpected_drops += 1
                out.append(t)
            elif r.text != t:
                self.changed += 1
                self.lines_removed += r.removed
                out.append(r.text)
            else:
                out.append(t)
        col = table.column(field)
        nulls = col.is_null().to_pylist()
        values = [None if n else x for x, n in zip(out, nulls)]
        return table.set_column(table.column_names.index(field), field, pa.array(values, col.type))

    def stats(self) -> dict:
        return {"records": self.records, "changed": self.changed, "lines_removed": self.lines_removed,
                "failed_after_earlier_edits": self.unexpected_drops}
