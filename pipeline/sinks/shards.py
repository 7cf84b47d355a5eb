"""Parquet shard writer: rolls over at a row or byte target, every file written atomically."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fileio import sha256_path


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


class ShardWriter:
    """Writes a stream of tables with one schema into `prefix-0000.parquet`, `prefix-0001.parquet`, ...

    A shard is closed when it reaches `max_rows` rows or `max_bytes` of uncompressed Arrow data.
    Each shard is written under a temporary name and renamed when complete.

    Usage::

        with ShardWriter(dir, "shard", schema, max_rows=100_000, max_bytes=256 << 20) as w:
            w.write(table)
        files = w.files
    """

    def __init__(self, directory: str | Path, prefix: str, schema: pa.Schema, *, max_rows: int, max_bytes: int,
                 compression: str = "zstd", compression_level: int = 3) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.schema = schema
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.compression = compression
        self.compression_level = compression_level
        self.files: list[WrittenFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows = 0
        self._bytes = 0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{self.prefix}-{len(self.files):04d}.parquet"
        self._tmp = final.with_name(f".{final.name}.tmp")
        self._writer = pq.ParquetWriter(
            self._tmp, self.schema, compression=self.compression, compression_level=self.compression_level,
            write_statistics=True,
        )
        self._rows = self._bytes = 0

    def _close_current(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp.with_name(self._tmp.name[1:].removesuffix(".tmp"))
        self._tmp.replace(final)
        self.files.append(WrittenFile(str(final), self._rows, final.stat().st_size, sha256_path(final)))
        self._writer = None

    def write(self, table: pa.Table) -> None:
        """Append rows, starting new shards as the targets are reached."""
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            room = self.max_rows - self._rows
            piece = table.slice(start, room)
            if piece.num_rows > 1 and self._bytes + piece.nbytes > self.max_bytes:
                per_row = max(1, piece.nbytes // piece.num_rows)
                fit = max(1, (self.max_bytes - self._bytes) // per_row)
                piece = piece.slice(0, min(piece.num_rows, fit))
            self._writer.write_table(piece)
            self._rows += piece.num_rows
            self._bytes += piece.nbytes
            start += piece.num_rows
            if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
                self._close_current()

    def close(self) -> list[WrittenFile]:
        """Finish the last shard and return every file written."""
        self._close_current()
        return self.files

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file), keeping finished ones."""
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
