"""One huge record detected by several tasks: each part detects a share of the engine's chunks.

The stage's work on one record is a short program around at most three detection calls (the
text fields, the second pass's pieces around the tags, the residual scan's redacted text); each
call's result is the union of its chunks' spans (`PiiEngine.detect_chunks`), and everything
between the calls is cheap and deterministic. So a split record (`pipeline.run.tasks`) runs in
rounds: in round N every part runs the program with calls 1..N-1 answered from what the parts
wrote in the rounds before (`replay`), stops at call N (`RoundReached`), and detects its share of
that call's chunks (`share`, by characters); at the join, the first part runs the program with
every call answered that way and takes the record's verdict, exactly as one task over the whole
record would have (same chunks, same spans in the same order, then the same code).

    parts = RecordParts(stage_dir, record_parts(work_dir, "pii", task))
    detect = parts.replay(upto=2)          # answers call 1; raises RoundReached at call 2
    parts.write(task, 2, engine.detect_chunks(texts, *share(engine.chunk_lengths(texts), task.part, task.parts)))

Each round re-runs the program up to its call: a worker keeps the last call's texts
(`remember`/`recall`), so the parts of one round that a worker runs build them once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path
from pipeline.pii.spans import Span
from pipeline.run.workdir import read_done

CHUNK_SPANS_SCHEMA = pa.schema([("text", pa.int64()), ("entity", pa.string()), ("start", pa.int64()),
                                ("end", pa.int64()), ("score", pa.float64())])


class PartsError(PipelineError):
    """A split record's rounds are incomplete or damaged: the run's scratch space, not the record, is at fault."""


class RoundReached(BaseException):
    """The program reached the detection call of the round a part runs: it stops there (not an
    error: a BaseException, so the stage's per-record retry does not take it for a failed detection)."""

    def __init__(self, texts: Sequence[str]):
        super().__init__("round reached")
        self.texts = list(texts)


def share(lengths: list[int], part: int, parts: int) -> tuple[int, int]:
    """The chunks (first, last + 1) of part `part` of `parts`: those whose first character (the
    chunks' lengths summed before them) falls in the part's equal share of the characters."""
    total = sum(lengths)
    owners, pos = [], 0
    for n in lengths:
        owners.append(min(parts - 1, pos * parts // total) if total else 0)
        pos += n
    first = next((k for k, o in enumerate(owners) if o >= part), len(owners))
    last = next((k for k, o in enumerate(owners) if o > part), len(owners))
    return first, last


class RecordParts:
    """The rounds' artifacts of one split record: per part and round, the spans its chunks own."""

    def __init__(self, directory: Path, parts: list):
        if not parts:
            raise PartsError("a split record without part tasks: the task plan is damaged; run again")
        self.directory = Path(directory)
        self.parts = parts

    def path(self, task, round_: int) -> Path:
        """Where part `task` keeps the spans of its chunks of round `round_`."""
        return self.directory / f"{task.name}.round{round_}.spans.parquet"

    def failed(self, before: int) -> str | None:
        """The exception class a part's detection raised in a round before `before`, if any (the
        join then detects the record whole, as one task: the same result and the same rejection)."""
        for r in range(1, before):
            for t in self.parts:
                marker = read_done(self.directory / f"{t.name}.round{r}.json")
                if marker is None:
                    raise PartsError(f"{t.name}: round {r} of a split record is not done; run again")
                if marker.get("failed"):
                    return marker["failed"]
        return None

    def replay(self, upto: int | None = None) -> Callable[[Sequence[str]], list[list[Span]]]:
        """A detect function: call N answered from the parts' round N; at call `upto`, RoundReached."""
        calls = [0]

        def detect(texts: Sequence[str]) -> list[list[Span]]:
            calls[0] += 1
            if upto is not None and calls[0] >= upto:
                raise RoundReached(texts)
            return self.load(calls[0], len(texts))

        return detect

    def load(self, round_: int, n: int) -> list[list[Span]]:
        """The spans of round `round_`'s call over `n` texts: every part's, in part order, sorted
        per text as `PiiEngine.detect` sorts them."""
        out: list[list[Span]] = [[] for _ in range(n)]
        for t in self.parts:
            path = self.path(t, round_)
            if not path.exists():
                raise PartsError(f"{t.name}: the spans of round {round_} of a split record are missing; run again")
            d = pq.read_table(path).to_pydict()
            for i, e, a, b, s in zip(d["text"], d["entity"], d["start"], d["end"], d["score"]):
                if i >= n:
                    raise PartsError(f"{t.name}: round {round_} holds spans of text {i} of a call over {n} texts; "
                                        "run again")
                out[i].append(Span(e, a, b, s))
        for spans in out:
            spans.sort(key=lambda s: (s.start, s.end, s.entity))
        return out

    def write(self, task, round_: int, spans: list[list[Span]]) -> None:
        """Keep part `task`'s spans of round `round_` (per text, in the order found)."""
        cols: dict[str, list] = {k: [] for k in CHUNK_SPANS_SCHEMA.names}
        for i, found in enumerate(spans):
            for s in found:
                for k, v in zip(CHUNK_SPANS_SCHEMA.names, (i, s.entity, s.start, s.end, s.score)):
                    cols[k].append(v)
        with atomic_path(self.path(task, round_)) as tmp:
            pq.write_table(pa.Table.from_pydict(cols, CHUNK_SPANS_SCHEMA), tmp)


_LOCK = threading.Lock()
_LAST: dict = {}


def recall(key: tuple):
    """What `remember` kept under `key` (KeyError when it holds something else)."""
    with _LOCK:
        return _LAST[key]


def remember(key: tuple, value) -> None:
    """Keep one value (a round's call: its texts and engine) in this process, in place of the last."""
    with _LOCK:
        _LAST.clear()
        _LAST[key] = value


def forget() -> None:
    """Drop what `remember` kept (the texts of a huge record)."""
    with _LOCK:
        _LAST.clear()
