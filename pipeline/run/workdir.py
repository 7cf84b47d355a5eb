"""Names and small helpers of the run's scratch space (`OUTPUT/_work/`), shared by every step.

    pass1/uNNNNN.parquet|.schema|.json   keys (no content), the unit's schema, its done-marker
    decisions/uNNNNN.parquet             one row per record: decision, stage, reason, evidence, shard
    stages/<kind>/tasks.json, tNNNNN.*   a per-unit stage's task plan, verdicts and artifacts per task
    pass2/sNNNNN.json                    a written shard's done-marker
    barrier/parts.json, <step>/pNNNNN.*  the barrier's partitions and each one's output and
                                         done-marker (`pipeline.run.barrier_parts`); each
                                         output is sorted by `_i`, read back by `SortedParts`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def unit_name(unit_id: int) -> str:
    """The file stem of a unit's scratch files."""
    return f"u{unit_id:05d}"


def read_done(path: Path) -> dict | None:
    """A step's done-marker (its result), or None when the step has not finished."""
    return json.loads(path.read_text()) if path.exists() else None


def read_schema(path: Path) -> pa.Schema:
    """An Arrow schema stored as an empty IPC file."""
    with pa.ipc.open_file(path) as r:
        return r.schema


def write_schema(path: Path, schema: pa.Schema) -> None:
    """Store an Arrow schema as an empty IPC file (atomically)."""
    from pipeline.fileio import atomic_path

    with atomic_path(path) as tmp:
        with pa.ipc.new_file(tmp, schema) as w:
            w.write_table(schema.empty_table())


def shard_ids(work_dir: str) -> list[int]:
    """Ids of the output shards the barrier planned."""
    return list(range(len(json.loads((Path(work_dir) / "shards.json").read_text()))))


def cleanup_tmp(work_dir: str) -> None:
    """Remove temporary files a killed attempt left behind (never finished outputs)."""
    for p in Path(work_dir).rglob(".*.tmp*"):
        if p.is_file():
            p.unlink(missing_ok=True)


# The barrier's partitioned steps and the folder of each under `barrier/`.
PART_DIRS = {"ids-part": "ids", "exact-part": "exact", "lsh-band": "lsh", "boilerplate-part": "boilerplate"}


def part_done_path(work: Path, step: str, item: int) -> Path:
    """The done-marker of task `item` of the barrier's partitioned step `step` (its output: .parquet)."""
    return Path(work) / "barrier" / PART_DIRS[step] / f"p{item:05d}.json"


def part_files(work: Path, step: str) -> list[Path]:
    """The output files of the partitioned step `step`, in partition order (none when the run has no such step)."""
    parts = read_done(Path(work) / "barrier" / "parts.json")
    if parts is None:
        return []
    return [part_done_path(work, step, p).with_suffix(".parquet") for p in range(parts.get(step, 0))]


def allow_open_files(files: int) -> None:
    """Let this process hold `files` files open (the steps that read or write every partition's or
    group's file side by side: at 1B documents well over a thousand): the soft limit is raised
    toward the hard one; PipelineError saying what to do when even that is too low."""
    import resource

    from pipeline.errors import PipelineError

    want = files + 256  # the interpreter's, the libraries' and the run's other files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise PipelineError(f"this step reads {files} scratch files side by side, but the process may open only {hard} "
                            f"files (`ulimit -Hn`); raise the hard limit to at least {want} on the machine that runs it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# What a reader of many sorted files holds of them at a time: a batch of each, of ROWS_IN_FLIGHT
# rows over the number of files (within the bounds below), so that the rows held do not grow with
# the number of partitions (held rows of exact-dedup verdicts cost about 0.3 KiB each: 262,144
# rows about 75 MiB). Writers of such files use the same size for their row groups: a reader that
# asks for fewer rows than a row group still reads the whole group's column chunks (one 200,000-row
# group per file cost 17 MiB per open file, 2,048-row groups about 1 MiB: bench/README.md,
# `sorted_parts_memory.py`). What stays per open file is pyarrow's reader, about 0.5 MiB.
ROWS_IN_FLIGHT = 262_144
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 1_024, 65_536


def batch_rows(files: int) -> int:
    """The rows of each file's batch (and row group) when `files` files are read side by side."""
    return max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, ROWS_IN_FLIGHT // max(1, files)))


class SortedParts:
    """The rows of a partitioned step's output files (each sorted by `key`, `_i` unless said) for
    ascending ranges of `key`: each file is read once, a batch at a time (`batch_rows`), so memory
    is a batch per file, not the step's output. Ranges are asked for in order, each once (the barrier's units, in
    input order). `schema`: the columns read and their types; `prepare(k, frame)`, when given, makes
    each batch of file `k` (e.g. adds `key` from a local column), before the ranges are cut.
    A file's rows are read a row group at a time: files written for this reader keep them small."""

    def __init__(self, paths: list[Path], schema: dict, rows: int | None = None, key: str = "_i",
                 prepare: Callable[[int, pl.DataFrame], pl.DataFrame] | None = None) -> None:
        # pre_buffer off: with it pyarrow buffers every row group of the file at the first batch
        self._files = [pq.ParquetFile(p, pre_buffer=False) for p in paths]
        rows = rows or batch_rows(len(paths))  # `rows`: each file's batch, else by the number of files
        self._batches = [f.iter_batches(batch_size=rows, columns=list(schema)) for f in self._files]
        self._prepare = prepare or (lambda _k, frame: frame)
        self._empty = self._prepare(0, pl.DataFrame(schema=schema))
        self._held = [self._empty for _ in paths]
        self._open = [True] * len(paths)
        self.schema, self.key = schema, key
        self.rows = sum(f.metadata.num_rows for f in self._files)

    def take(self, first: int, last: int) -> pl.DataFrame:
        """The rows with `first <= key < last` (the rows below `first` were taken before), file by file."""
        out = [self._empty]
        for k, batches in enumerate(self._batches):
            held = self._held[k]
            while self._open[k] and (held.height == 0 or held[self.key][-1] < last):
                batch = next(batches, None)
                if batch is None:
                    self._open[k] = False
                    self._files[k].close()
                else:
                    held = pl.concat([held, self._prepare(k, pl.from_arrow(batch).cast(self.schema))])
            cut = held[self.key].search_sorted(last, "left")
            out.append(held.head(cut))
            self._held[k] = held.slice(cut)
        return pl.concat(out)
