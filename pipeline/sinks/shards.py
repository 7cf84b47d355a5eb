"""Parquet writers whose output depends only on the rows written, never on how they arrived.

Rows are buffered and written in row groups of exactly `row_group_rows` (the last one shorter),
so the same rows give byte-identical files whatever the batch sizes, units or task runner.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq



@dataclass(frozen=True)
class WrittenFile:
    """A finished output file."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@numba.njit(cache=True)
def _plan(sizes, max_rows, max_bytes, out, state):
    shard, rows, size = state[0], state[1], state[2]
    for i in range(sizes.shape[0]):
        if rows > 0 and (rows >= max_rows or size + sizes[i] > max_bytes):
            shard += 1
            rows, size = 0, 0
        out[i] = shard
        rows += 1
        size += sizes[i]
    state[0], state[1], state[2] = shard, rows, size


def plan_shards(sizes: np.ndarray, max_rows: int, max_bytes: int) -> np.ndarray:
    """Shard number of each record (in output order): a shard closes at `max_rows` rows or before
    its text would exceed `max_bytes` (a single larger record gets a shard of its own)."""
    return ShardPlanner(max_rows, max_bytes).plan(sizes)


class ShardPlanner:
    """`plan_shards` over records that arrive in pieces (e.g. one unit at a time, in output order):
    the open shard's rows and bytes carry over, so the numbers equal one call over all of them."""

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self._state = np.zeros(3, dtype=np.int64)  # open shard, its rows, its bytes
        self._meta: dict[int, dict] = {}

    def plan(self, sizes: np.ndarray, unit_id: int | None = None) -> np.ndarray:
        """Shard numbers of the next records; with `unit_id`, they are counted as that unit's in `shards()`."""
        out = np.empty(len(sizes), dtype=np.int64)
        if len(sizes):
            _plan(np.ascontiguousarray(sizes, dtype=np.int64), self.max_rows, self.max_bytes, out, self._state)
        if unit_id is not None:
            for shard, rows in zip(*np.unique(out, return_counts=True)):
                m = self._meta.setdefault(int(shard), {"shard": int(shard), "first_unit": unit_id,
                                                       "last_unit": unit_id, "rows": 0})
                m["last_unit"], m["rows"] = unit_id, m["rows"] + int(rows)
        return out

    def shards(self) -> list[dict]:
        """Each shard planned with a `unit_id` so far: shard, first_unit, last_unit, rows (`shards.json`)."""
        return [self._meta[s] for s in sorted(self._meta)]


def _dictionary_columns(schema: pa.Schema, plain: frozenset[str]) -> list[str]:
    """Parquet leaf paths (`meta.lang`, `tags.list.element`) of every column not under a name in `plain`."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    leaves = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    paths = [leaves.column(i).path for i in range(len(leaves))]
    return [p for p in paths if p.split(".", 1)[0] not in plain]


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what it writes, so a finished file is not read back to digest it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._h = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = self._f.write(data)
        self._h.update(memoryview(data)[:n])
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()

    def sha256(self) -> str:
        return self._h.hexdigest()


class ShardWriter:
    """Writes a stream of tables with one schema into Parquet files named by `name(k)`.

    A file is closed after `max_rows` rows. Every file is written under a temporary name and
    renamed when complete.

    Usage::

        with ShardWriter(dir, schema, max_rows=1_000_000, name=lambda k: f"part-{k:05d}.parquet") as w:
            w.write(table)
        files = w.files
    """

    def __init__(self, directory: str | Path, schema: pa.Schema, *, max_rows: int, name: Callable[[int], str],
                 row_group_rows: int = 10_000, compression: str = "zstd", compression_level: int = 3,
                 plain_columns: frozenset[str] = frozenset()) -> None:
        self.directory = Path(directory)
        self.schema = schema
        # Long unique texts never gain from dictionary encoding (trying it first costs ~15% of the
        # write), and min/max statistics of prose select nothing while computing them costs another
        # ~15%: both are kept for the other columns only.
        self.use_dictionary = _dictionary_columns(schema, plain_columns) if plain_columns else True
        self.max_rows = max_rows
        self.name = name
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.compression_level = compression_level
        self.files: list[WrittenFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._final = self.directory / self.name(len(self.files))
        self._tmp = self._final.with_name(f".{self._final.name}.tmp")
        self._sink = _HashingFile(self._tmp)
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression=self.compression,
                                        compression_level=self.compression_level, write_statistics=self.use_dictionary,
                                        use_dictionary=self.use_dictionary)
        self._rows = 0

    def _close_current(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        self._tmp.replace(self._final)
        self.files.append(WrittenFile(str(self._final), self._rows, self._sink.size, self._sink.sha256()))
        self._writer = None

    def _emit(self, table: pa.Table) -> None:
        """Write whole row groups of `table` (its length is at most one file's remaining room)."""
        if self._writer is None:
            self._open()
        self._writer.write_table(table.combine_chunks(), row_group_size=self.row_group_rows)
        self._rows += table.num_rows
        if self._rows >= self.max_rows:
            self._close_current()

    def _drain(self, final: bool) -> None:
        while self._pending_rows >= self.row_group_rows or (final and self._pending_rows):
            room = self.max_rows - (self._rows if self._writer is not None else 0)
            take = min(self.row_group_rows, room, self._pending_rows)
            buf = pa.concat_tables(self._pending)
            self._emit(buf.slice(0, take))
            rest = buf.slice(take)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def write(self, table: pa.Table) -> None:
        """Append rows."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._drain(final=False)

    def close(self) -> list[WrittenFile]:
        """Flush buffered rows, finish the last file and return every file written."""
        self._drain(final=True)
        self._close_current()
        return self.files

    def abort(self) -> None:
        """Drop the file in progress (its temporary file), keeping finished ones."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
