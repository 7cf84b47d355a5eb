"""Helpers shared by the reader tests: run a reader over a source the way the planner does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.sources import Batch, Reject, Unit, reader_for


@dataclass
class ReadResult:
    """Everything one source yielded, flattened over its units and batches, in read order."""

    units: list[Unit]
    records: list[dict] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    relpaths: list[str | None] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    schemas: list[pa.Schema] = field(default_factory=list)

    def texts(self, text_field: str = "text") -> list[str]:
        """The text of every valid record."""
        return [r[text_field] for r in self.records]

    def reasons(self) -> dict[int, str]:
        """Reject reason by row number (rows must be unique, as in a single file)."""
        out = {r.row: r.reason for r in self.rejects}
        if len(out) != len(self.rejects):
            raise ValueError("two rejects share a row number; use .rejects directly")
        return out


def check_batch(batch: Batch) -> None:
    """The invariants every batch must hold, whatever the reader."""
    if batch.table.num_rows != len(batch.rows):
        raise AssertionError(f"{batch.table.num_rows} table rows but {len(batch.rows)} row numbers")
    if batch.rows.dtype != np.int64:
        raise AssertionError(f"row numbers are {batch.rows.dtype}, not int64")
    if batch.relpaths is not None and len(batch.relpaths) != batch.table.num_rows:
        raise AssertionError("relpaths do not line up with the table rows")
    valid = set(batch.rows.tolist())
    rejected = {(r.row, r.relpath) for r in batch.rejects}
    if batch.relpaths is None and valid & {row for row, _ in rejected}:
        raise AssertionError("a row is both valid and rejected")


def plan_source(source, units: UnitConfig | None = None, work_dir: Path | str = "") -> list[Unit]:
    """List, describe and plan a source's inputs."""
    reader = reader_for(source.kind)
    units = units or UnitConfig()
    inputs = [reader.describe(source, path, rel) for path, rel in reader.list_inputs(source)]
    return reader.plan(source, inputs, units, work_dir=str(work_dir))


def read_units(source, planned: list[Unit], units: UnitConfig | None = None) -> ReadResult:
    """Read every planned unit, checking each batch's invariants."""
    reader = reader_for(source.kind)
    units = units or UnitConfig()
    out = ReadResult(units=planned)
    for unit in planned:
        for batch in reader.read(unit, source, units):
            check_batch(batch)
            out.records.extend(batch.table.to_pylist())
            out.rows.extend(batch.rows.tolist())
            out.relpaths.extend(batch.relpaths or [None] * batch.table.num_rows)
            out.rejects.extend(batch.rejects)
            out.schemas.append(batch.table.schema)
    return out


def read_source(source, units: UnitConfig | None = None, work_dir: Path | str = "") -> ReadResult:
    """Plan and read a whole source."""
    return read_units(source, plan_source(source, units, work_dir), units)


def sha256(data: bytes) -> bytes:
    """Raw sha256 digest."""
    return hashlib.sha256(data).digest()
