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
            reader = csv.reader(text, delimiter=source.delimiter)
            try:
                header = next(reader, None)
            except csv.Error as e:
                raise SourceError(f"{unit.path}: cannot parse the CSV header ({e})") from e
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
