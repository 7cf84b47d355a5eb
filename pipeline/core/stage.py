"""The stage contract: one class per stage, a stable `kind`, a strict config, verdicts over batches.

A stage declares where it runs (`placements`) and the decisions it can make (`decisions`); the
core does the rest: it runs the stage on each unit's batches or once at the barrier, applies the
verdicts with one precedence rule (`pipeline.core.verdicts.apply_verdicts`), writes the ledger
rows, counts the statistics and describes the stage in the manifest.

A per-record filter is a few lines::

    from pydantic import BaseModel, ConfigDict
    from pipeline.core.decisions import Category, DecisionKind
    from pipeline.core.stage import Placement, RecordStage, Verdicts

    class ShortDocs(RecordStage):
        kind = "short_docs"
        description = "drops records of fewer than min_words words"
        decisions = (DecisionKind("dropped_short", Category.DROPPED, "fewer words than min_words"),)

        class Config(BaseModel):
            model_config = ConfigDict(extra="forbid", frozen=True)
            min_words: int = 5

        def process(self, table, ctx):
            words = [len((t or "").split()) for t in table[ctx.text_field].to_pylist()]
            return Verdicts.from_rows(
                [("dropped_short", f"{n} words < {self.config.min_words}") if n < self.config.min_words else None
                 for n in words])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Sequence

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from pipeline.core.decisions import DecisionKind


class Placement(str, Enum):
    """Where a stage runs."""

    RECORD = "record"      # per record in pass 1, on each unit's batches as they are read
    BARRIER = "barrier"    # once, globally, over the keys of every unit
    UNIT = "unit"          # per unit after deduplication, on the records still kept
    WRITE = "write"        # while pass 2 writes the shard (changes text, never decisions)


PLACEMENT_TEXT = {
    Placement.RECORD: "per record, pass 1",
    Placement.BARRIER: "global, at the barrier",
    Placement.UNIT: "per unit, after dedup",
    Placement.WRITE: "at write time",
}


class NoConfig(BaseModel):
    """The config of a stage without options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Verdicts:
    """One verdict per input row, in row order: `decision[i] is None` keeps row i unchanged.

    `evidence` holds extra values per row (JSON-serialisable scalars) that the ledger records
    beside the decision, e.g. a measured value and the threshold it was compared with.
    `counts` are additive counters over the batch (e.g. records per detected language): pass 1
    sums them per source and the manifest shows them under the stage's statistics
    (`stages.<kind>.counts` and `counts_by_source`). Keys are short labels, never content.
    """

    decision: list[str | None]
    reason: list[str | None]
    evidence: dict[str, list] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.decision)

    @classmethod
    def keep_all(cls, n: int) -> "Verdicts":
        """Every row kept."""
        return cls([None] * n, [None] * n)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str] | tuple[str, str, dict] | None]) -> "Verdicts":
        """From one `None` (keep) or `(decision, reason[, evidence dict])` per row."""
        decision, reason, evidence = [], [], {}
        for i, r in enumerate(rows):
            if r is None:
                decision.append(None)
                reason.append(None)
                continue
            decision.append(r[0])
            reason.append(r[1])
            for k, v in (r[2] if len(r) > 2 else {}).items():
                evidence.setdefault(k, [None] * len(rows))[i] = v
        return cls(decision, reason, evidence)


@dataclass
class StageStats:
    """Additive statistics of one stage: `seen == kept + dropped`; `counts` are extra counters."""

    seen: int = 0
    kept: int = 0
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: "StageStats") -> "StageStats":
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        return StageStats(self.seen + other.seen, self.kept + other.kept, self.dropped + other.dropped, counts)

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"seen": self.seen, "kept": self.kept, "dropped": self.dropped, "counts": dict(sorted(self.counts.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> "StageStats":
        """Inverse of `to_dict`."""
        return cls(d["seen"], d["kept"], d["dropped"], dict(d.get("counts", {})))


@dataclass
class BatchContext:
    """What a stage may know about the batch it is given, besides the table: never content."""

    source: str                      # the source's name
    text_field: str | None           # the column holding the text (None for image records)
    rows: Any                        # numpy int64 array: the rows of the batch within its unit
    record_ids: list[str]
    unit_id: int
    work_dir: Path
    extra: dict = field(default_factory=dict)   # per-batch values the core computed (digests, image hashes, ...)
    task: int | None = None          # a per-unit stage's task (`pipeline.run.tasks`); None in pass 1


class Stage:
    """The base of every stage. Subclasses set the class attributes and implement the methods of
    their placements; the constructor is cheap, heavy resources are loaded in `setup()`."""

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    placements: ClassVar[tuple[Placement, ...]] = ()
    decisions: ClassVar[tuple[DecisionKind, ...]] = ()
    Config: ClassVar[type[BaseModel]] = NoConfig
    # Where the options come from: None for the stage's own `config:` mapping in `stages:`, or the
    # dotted path of a section of the run config (built-in stages keep their historic sections).
    config_section: ClassVar[str | None] = None
    # Work bound to the GIL (e.g. spaCy): the thread runner sends its units to worker processes.
    needs_processes: ClassVar[bool] = False

    def __init__(self, config: BaseModel, run_config: Any = None) -> None:
        self.config = config
        self.run_config = run_config

    def setup(self) -> "Stage":
        """Load heavy resources (models, indexes, pools); called once before the first batch."""
        return self

    def active(self) -> bool:
        """False when the stage has nothing to do in this run (e.g. no hash list configured)."""
        return True

    def summary(self) -> dict:
        """A JSON description of the stage's run-specific settings for the manifest (no content)."""
        return {}


class RecordStage(Stage):
    """Runs per record in pass 1: `process` returns one verdict per row of the batch."""

    placements = (Placement.RECORD,)

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        """Verdicts for the rows of `table` (the input batch; never modify it)."""
        raise NotImplementedError


class UnitStage(Stage):
    """Runs after deduplication on the records still kept, one task at a time: a task is a slice
    of one unit's kept records holding a few MiB of text (`pipeline.run.tasks.StageTask`: its
    `task_id`, `unit_id`, `first_row`, `last_row` and `name`), so the work spreads over every
    worker whatever the unit layout. `process` returns verdicts; `begin_task`/`end_task` bracket
    one task (e.g. to write the task's artifacts, named by `task.name`); tasks of one unit may run
    at the same time in one process, so keep per-task state keyed by `task.task_id`.

    A stage whose work on one record can be cut into pieces that give the same result (PII
    detection: the engine's chunks of a long text) sets `split_rounds`: a record with more text
    than a task is then planned as several part tasks (`task.is_part`, `task.part` of `task.parts`).
    Each part runs `run_part` once per round (1..split_rounds, one step each, every part of a round
    after every part of the round before, so a round reads what the rounds before wrote); then the
    first part runs as an ordinary task (`begin_task`, `process`, `end_task`) and returns the
    record's verdict from what the rounds wrote, as one task over the whole record would have."""

    placements = (Placement.UNIT,)
    batch_rows: ClassVar[int] = 2_000
    # Rounds of `run_part` a split record goes through (0: the stage never splits a record).
    split_rounds: ClassVar[int] = 0

    def scans(self, source_name: str) -> bool:
        """False when the stage has nothing to look at in this source's records (e.g. images for a
        text stage): its units are then not read at all."""
        return True

    def warm(self) -> None:
        """Load what the tasks need and `setup` defers (a model loaded on first use), so that a
        worker process can be readied while pass 1 and the barrier run (`needs_processes` stages);
        must not change what the stage decides."""

    def begin_task(self, task, work_dir: Path) -> None:
        """Called before the task's first batch."""

    def process(self, table: pa.Table, ctx: BatchContext) -> Verdicts:
        """Verdicts for the rows of `table` (`ctx.task` names the task)."""
        raise NotImplementedError

    def end_task(self, task, work_dir: Path) -> dict:
        """Called after the task's last batch; returns small additive counters for the manifest
        (numbers, or dicts of numbers, summed over the tasks)."""
        return {}

    def abort_task(self, task, work_dir: Path) -> None:
        """Called instead of `end_task` when the task failed: drop its state."""

    def run_part(self, table: pa.Table, ctx: BatchContext, task, round_: int, work_dir: Path) -> dict:
        """Round `round_` of part task `task` on its record (`table`: that one row): write the
        part's artifacts of the round (named by `task.name` and the round); return small counters."""
        raise NotImplementedError


@dataclass
class BarrierContext:
    """What a barrier stage is given besides the records: the run's plan, the scratch space and the
    corpus index of earlier runs (None without `state`)."""

    plan: Any
    work_dir: Path
    index: Any = None


class UnitVerdicts:
    """A barrier stage's verdicts served one unit at a time (`BarrierStage.decide_from_parts`).

    The barrier asks for the units in input order, each once: `verdicts(first, last)` returns the
    verdict rows (the frame `decide` would return) whose `_i` lies in `first <= _i < last`, in the
    order `decide` would have them; `amend(records, first)` is the stage's `amend` on one unit's
    frame (its `_i` relative to the unit's first position `first`)."""

    def verdicts(self, first: int, last: int):
        """The verdict rows of positions `first`..`last - 1` (global `_i`)."""
        raise NotImplementedError

    def amend(self, records, first: int):
        """Evidence fix-ups on one unit's frame (records `first`.. in input order, `_i` from 0)
        after its verdicts were applied."""
        return records


class BarrierStage(Stage):
    """Runs once at the barrier over the keys of every unit.

    `key_writer` (optional) streams per-record key material in pass 1 (e.g. MinHash signatures);
    `decide` gets the records frame (one row per input record in input order, `_i` its position,
    `decision` null while undecided) and returns a verdict frame: `_i`, `decision`, `reason` and
    evidence columns (`duplicate_of`, `cluster_id`, `similarity`), plus statistics for the manifest.

    That frame grows with the corpus (about 1.3 KiB per record at the barrier). A stage whose
    decisions come from the barrier's partition tasks (`pipeline.run.barrier_parts`) and from a
    few records it gathers itself sets `from_parts` and implements `decide_from_parts`: when every
    barrier stage of a run does, the barrier never builds the frame and writes the decisions unit
    by unit (`pipeline.run.barrier`). The two must decide the same, byte for byte.
    """

    placements = (Placement.BARRIER,)
    # True: `decide_from_parts` replaces `decide` (exact and near dedup); a stage that needs to see
    # every record at once (containment, repeated paragraphs, users' stages) leaves it False.
    from_parts: ClassVar[bool] = False

    def decide_from_parts(self, ctx: "BarrierContext") -> tuple[UnitVerdicts, dict | None]:
        """(the verdicts served per unit, statistics): what `decide` returns, without the frame of
        every record. The records still kept at this stage are those pass 1 left undecided and the
        `ids-part` and earlier stages' verdicts did not take out."""
        raise NotImplementedError

    def key_writer(self, unit_id: int, work_dir: Path):
        """A writer with `add(text, rows)`, `close()` and `abort()` for pass 1, or None."""
        return None

    def decide(self, records, ctx: BarrierContext):
        """(verdict frame, statistics dict or None)."""
        raise NotImplementedError

    def amend(self, records):
        """Evidence fix-ups after this stage's verdicts were applied (e.g. re-point a copy at the
        record finally kept); may change evidence of records this or an earlier stage dropped, never a decision."""
        return records

    def index_additions(self, work_dir: Path, kept):
        """What this stage adds to the corpus index (`state.dir`) once the run is published: a polars
        frame (None: nothing). `kept`: unit, row and record_id of the run's kept records. Later runs
        read the frames back with `ctx.index.stage_frames(kind, params)`, concatenated oldest run
        first, a `record_id` column as `run_id/record_id`."""
        return None

    def index_params(self) -> dict:
        """The settings this stage's index additions depend on: a later run reads back only those
        made with equal settings (recorded per run in the index)."""
        return {}


class WriteStage(Stage):
    """Runs while pass 2 writes a shard: `open_shard` returns an object with `unit(unit_id, rows)`,
    giving a function `(table, rows, record_ids) -> table` (same rows, same order; text may
    change), and `stats()`, additive counters recorded per shard."""

    placements = (Placement.WRITE,)
    # True when the transform derives its edit from the text it is given (e.g. C4's line removal
    # applies its rules again) rather than from positions in the re-read text (PII redaction's spans):
    # pass 2 runs such transforms after the others, so that positions still point at the right text.
    edits_from_text: ClassVar[bool] = False

    def open_shard(self, shard_id: int, work_dir: Path):
        raise NotImplementedError
