"""CSV reader (header row required), one unit per file, parsed with the stdlib for exact row accounting."""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit
from pipeline.sources.limits import record_too_large
from pipeline.sources.validate import split_valid

csv.field_size_limit(sys.maxsize)


class CsvReader(Reader):
    """Reads CSV files. `:row` in record ids is the 0-based data row (the header is not a row).

    A row whose field count differs from the header's, or that is not valid UTF-8, is rejected.
    """

    kind = "csv"
    spill = True
    suffixes = (".csv",)

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        return [self._unit(source, f, 0, 0, -1, 0) for f in inputs]

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        with open(unit.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
            lines = _BoundedLines(text, units.limits.max_record_bytes)
            reader = csv.reader(lines, delimiter=source.delimiter)
            try:
                header = next(reader, None)
            except csv.Error as e:
                raise SourceError(f"{unit.path}: cannot parse the CSV header ({e})") from e
            except _RecordTooLarge as e:
                raise SourceError(f"{unit.path}: the CSV header is larger than units.limits.max_record_bytes "
                                  f"({units.limits.max_record_bytes:,}); is this a CSV file?") from e
            lines.record_done()
            if header is None:
                return
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            try:
                for name in header:
                    name.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SourceError(
                    f"{unit.path}: the CSV header is not valid UTF-8; re-encode the file as UTF-8"
                ) from e
            if len(set(header)) != len(header):
                raise SourceError(f"{unit.path}: the CSV header repeats a column name; rename the columns")
            cols: list[list[str]] = [[] for _ in header]
            rows: list[int] = []
            rejects: list[Reject] = []
            size, row = 0, 0
            while True:
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    raise SourceError(f"{unit.path}: cannot parse CSV after data row {row} ({e})") from e
                except _RecordTooLarge as e:  # streamed past: the reader goes on with the next row
                    rejects.append(Reject(row, record_too_large(e.size, units.limits), e.digest))
                    lines.record_done()
                    row += 1
                    continue
                lines.record_done()
                reason = None
                if len(rec) != len(header):
                    reason = f"expected {len(header)} fields, found {len(rec)}"
                else:
                    try:
                        for v in rec:
                            v.encode("utf-8")
                    except UnicodeEncodeError:
                        reason = "invalid UTF-8"
                if reason:
                    raw_bytes = delimiter_join(rec, source.delimiter)
                    rejects.append(Reject(row, reason, hashlib.sha256(raw_bytes).digest()))
                else:
                    for c, v in zip(cols, rec):
                        c.append(v)
                    rows.append(row)
                    size += sum(len(v) for v in rec)
                row += 1
                if size >= units.batch_bytes or len(rows) >= units.target_rows:
                    yield self._batch(header, cols, rows, rejects, source)
                    cols, rows, rejects, size = [[] for _ in header], [], [], 0
            if rows or rejects:
                yield self._batch(header, cols, rows, rejects, source)

    @staticmethod
    def _batch(header, cols, rows, rejects, source) -> Batch:
        table = pa.table({name: pa.array(c, type=pa.string()) for name, c in zip(header, cols)})
        batch = split_valid(table, np.asarray(rows, dtype=np.int64), source)
        batch.rejects = sorted(rejects + batch.rejects, key=lambda r: r.row)
        return batch


def delimiter_join(rec: list[str], delimiter: str) -> bytes:
    """The raw bytes of a parsed row, for its digest (surrogate escapes restored)."""
    return delimiter.join(rec).encode("utf-8", errors="surrogateescape")


class _RecordTooLarge(Exception):
    """Raised to the csv module from inside its input: the row being read is over the limit and has
    been streamed past (the csv reader starts afresh at its next call)."""

    def __init__(self, size: int, digest: bytes) -> None:
        super().__init__(size)
        self.size, self.digest = size, digest


_LINE_ENDS = ("\n", "\r")


class _BoundedLines:
    """The physical lines of a CSV text stream, as the csv module pulls them for one row after another,
    never holding more than `limit` bytes of one row.

    A row that grows past the limit (a long line, or many lines inside a quoted field) is read on in
    1 MiB pieces, digested and counted, to its end, and raised as `_RecordTooLarge`. Its end is the
    first line end with an even count of quote characters in the row: the RFC 4180 rule, which the
    csv module also follows for well-formed files (a stray quote inside an unquoted field can make
    the skip run on into the next rows).
    """

    _PIECE = 1 << 20

    def __init__(self, text, limit: int, quote: str = '"') -> None:
        self.text, self.limit, self.quote = text, limit, quote
        self.row_lines: list[str] = []  # the lines handed out for the current row (for its digest)
        self.row_bytes = 0
        self.pending = ""  # one character read past a skipped row's last "\r", given back

    def __iter__(self):
        return self

    def record_done(self) -> None:
        """The csv reader has finished a row: the next line starts a new one."""
        self.row_lines, self.row_bytes = [], 0

    def _readline(self, size: int) -> str:
        head, self.pending = self.pending, ""
        if head.endswith(_LINE_ENDS):
            return head
        return head + self.text.readline(size - len(head)) if head else self.text.readline(size)

    def __next__(self) -> str:
        budget = self.limit - self.row_bytes
        line = self._readline(budget + 1)
        if not line:
            raise StopIteration
        size = len(line) if line.isascii() else len(_raw(line))
        if size > budget:
            raise self._skip(line, size)
        self.row_lines.append(line)
        self.row_bytes += size
        return line

    def _skip(self, piece: str, size: int) -> _RecordTooLarge:
        """Read past the rest of the row that `piece` took over the limit."""
        h = hashlib.sha256()
        quotes = 0
        for line in self.row_lines:
            h.update(_raw(line))
            quotes += line.count(self.quote)
        size += self.row_bytes
        self.record_done()
        cap = len(piece)
        while True:
            h.update(_raw(piece))
            quotes += piece.count(self.quote)
            ended = piece.endswith(_LINE_ENDS)
            if piece.endswith("\r") and len(piece) == cap:
                # readline stops at its size cap even inside "\r\n": the "\n" belongs to this line
                nxt = self.text.readline(1)
                if nxt == "\n":
                    h.update(b"\n")
                    size += 1
                else:
                    self.pending = nxt
            if ended and quotes % 2 == 0:
                return _RecordTooLarge(size, h.digest())
            piece = self._readline(self._PIECE)
            if not piece:
                return _RecordTooLarge(size, h.digest())
            cap = self._PIECE
            size += len(piece) if piece.isascii() else len(_raw(piece))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")
