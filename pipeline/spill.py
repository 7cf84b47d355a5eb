"""Parsed batches kept between the passes, so a text input is parsed once per run, not twice.

Pass 1 writes each batch of a unit it has read, after validation and after the safety match
(a quarantined record is never in it), as an uncompressed Arrow IPC file with its row numbers;
pass 2 and the PII stage read those files memory-mapped instead of reading and parsing the input
again. The files live in the run's scratch space and go with it when the run is published.

Usage::

    spill = SpillWriter(work, unit_id)                 # in pass 1 (spill.abort() if it fails)
    spill.add(table, rows)
    for table, rows in read_spill(work, unit_id, spill.batches):  # in pass 2, in row order
        ...

A spill belongs to the pass-1 result that records it (`"spilled": <batches>` in the unit's done
marker), which is written after the spill is complete: a unit killed mid-spill is read again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

ROW_COLUMN = "__hygiene_row"


def spill_dir(work: Path, unit_id: int) -> Path:
    return work / "spill" / f"u{unit_id:05d}"


class SpillWriter:
    """Writes one unit's batches as `bNNNNN.arrow`, each with its own schema (batches may differ)."""

    def __init__(self, work: Path, unit_id: int) -> None:
        self.dir = spill_dir(work, unit_id)
        if self.dir.exists():  # what a killed attempt left
            shutil.rmtree(self.dir)
        # Record content: owner-only, like the inputs should be (the output directory may be shared).
        self.dir.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir.parent, 0o700)
        self.dir.mkdir(mode=0o700)
        self.batches = 0

    def add(self, table: pa.Table, rows: np.ndarray) -> None:
        if table.num_rows == 0:
            return
        table = table.append_column(ROW_COLUMN, pa.array(rows, pa.int64()))
        path = self.dir / f"b{self.batches:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.batches += 1

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def read_spill(work: Path, unit_id: int, batches: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The spilled batches of a unit as (table, rows), in the order pass 1 read them."""
    directory = spill_dir(work, unit_id)
    for k in range(batches):
        # The buffers of the table keep the mapping alive; nothing is copied until rows are taken.
        table = pa.ipc.open_file(pa.memory_map(str(directory / f"b{k:05d}.arrow"))).read_all()
        rows = table[ROW_COLUMN].to_numpy()
        yield table.drop_columns([ROW_COLUMN]), rows
