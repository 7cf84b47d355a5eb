"""Parsed batches kept between the passes, so a text input is parsed once per run, not twice.

Pass 1 keeps each batch of a unit it has read, after validation and after the safety match
(a quarantined record is never in it): in this process's memory while the run's budget
(`units.spill_memory_bytes`) allows and pass 2 will run in this process, otherwise as an
uncompressed Arrow IPC file with its row numbers. Pass 2 and the PII stage use the batches held
in memory, or read the files memory-mapped, instead of reading and parsing the input again. The
files live in the run's scratch space and go with it when the run is published; the memory is
released when pass 2 ends (`release_held`), whether the run succeeded or not.

Usage::

    spill = SpillWriter(work, unit_id, memory_budget)  # in pass 1 (spill.abort() if it fails)
    spill.add(table, rows)
    spill.close()                                      # hands held batches to this process
    for table, rows in read_spill(work, unit_id, spill.batches, spill.held, spill.holder):  # pass 2
        ...

A spill belongs to the pass-1 result that records it (`"spilled": <batches>` in the unit's done
marker, with the batches held in memory and the process that holds them), which is written after
the spill is complete: a unit killed mid-spill is read again, and so is a unit whose held batches
another process (a resumed run, a Dask worker) cannot see (`SpillUnavailable`).
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

ROW_COLUMN = "__hygiene_row"
# Identifies this process in done markers: held batches are usable only where they were made.
PROCESS_TOKEN = uuid.uuid4().hex


class SpillUnavailable(Exception):
    """The unit's held batches are in another process (or were released): read the input again."""


class _Held:
    """Batches held in this process's memory, per (scratch space, unit), within byte budgets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.units: dict[tuple[str, int], dict[int, tuple[pa.Table, np.ndarray]]] = {}
        self.sizes: dict[tuple[str, int], int] = {}
        self.used: dict[str, int] = {}  # bytes held per scratch space

    def reserve(self, work: str, nbytes: int, budget: int) -> bool:
        with self.lock:
            if self.used.get(work, 0) + nbytes > budget:
                return False
            self.used[work] = self.used.get(work, 0) + nbytes
            return True

    def unreserve(self, work: str, nbytes: int) -> None:
        with self.lock:
            self.used[work] = self.used.get(work, 0) - nbytes

    def put(self, key: tuple[str, int], batches: dict[int, tuple[pa.Table, np.ndarray]], nbytes: int) -> None:
        self.drop(key)
        with self.lock:
            self.units[key] = batches
            self.sizes[key] = nbytes

    def get(self, key: tuple[str, int]) -> dict[int, tuple[pa.Table, np.ndarray]] | None:
        with self.lock:
            return self.units.get(key)

    def drop(self, key: tuple[str, int]) -> None:
        with self.lock:
            self.units.pop(key, None)
            self.used[key[0]] = self.used.get(key[0], 0) - self.sizes.pop(key, 0)

    def release(self, work: str) -> None:
        with self.lock:
            for key in [k for k in self.units if k[0] == work]:
                del self.units[key]
                self.sizes.pop(key, None)
            self.used.pop(work, None)


_HELD = _Held()


def spill_dir(work: Path, unit_id: int) -> Path:
    return work / "spill" / f"u{unit_id:05d}"


class SpillWriter:
    """Keeps one unit's batches, each with its own schema (batches may differ): in memory within
    `memory_budget` bytes for the whole run, else as `bNNNNN.arrow` files."""

    def __init__(self, work: Path, unit_id: int, memory_budget: int = 0) -> None:
        self.key = (os.path.abspath(work), unit_id)
        _HELD.drop(self.key)  # what a failed attempt in this process left
        self.dir = spill_dir(work, unit_id)
        if self.dir.exists():  # what a killed attempt left
            shutil.rmtree(self.dir)
        # Record content: owner-only, like the inputs should be (the output directory may be shared).
        self.dir.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir.parent, 0o700)
        self.dir.mkdir(mode=0o700)
        self.budget = memory_budget
        self.batches = 0
        self._memory: dict[int, tuple[pa.Table, np.ndarray]] = {}
        self._memory_bytes = 0

    @property
    def held(self) -> list[int]:
        """The batch numbers kept in memory."""
        return sorted(self._memory)

    @property
    def holder(self) -> str | None:
        return PROCESS_TOKEN if self._memory else None

    def add(self, table: pa.Table, rows: np.ndarray) -> None:
        if table.num_rows == 0:
            return
        nbytes = table.nbytes + rows.nbytes
        if self.budget and _HELD.reserve(self.key[0], nbytes, self.budget):
            self._memory[self.batches] = (table, rows)
            self._memory_bytes += nbytes
        else:
            table = table.append_column(ROW_COLUMN, pa.array(rows, pa.int64()))
            path = self.dir / f"b{self.batches:05d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        self.batches += 1

    def close(self) -> None:
        """Hand the batches held in memory to this process, for pass 2."""
        if self._memory:
            _HELD.put(self.key, self._memory, self._memory_bytes)

    def abort(self) -> None:
        if self._memory_bytes:
            _HELD.unreserve(self.key[0], self._memory_bytes)
        self._memory, self._memory_bytes = {}, 0
        shutil.rmtree(self.dir, ignore_errors=True)


def read_spill(work: Path, unit_id: int, batches: int, held: list[int] | None = None,
               holder: str | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The spilled batches of a unit as (table, rows), in the order pass 1 read them; raises
    SpillUnavailable before yielding anything when its held batches are not in this process."""
    memory: dict[int, tuple[pa.Table, np.ndarray]] = {}
    if held:
        got = _HELD.get((os.path.abspath(work), unit_id)) if holder == PROCESS_TOKEN else None
        if got is None or any(k not in got for k in held):
            raise SpillUnavailable(f"unit {unit_id}: its parsed batches were held by another process")
        memory = got
    return _spilled(spill_dir(work, unit_id), batches, memory)


def _spilled(directory: Path, batches: int, memory: dict) -> Iterator[tuple[pa.Table, np.ndarray]]:
    for k in range(batches):
        if k in memory:
            yield memory[k]
            continue
        # The buffers of the table keep the mapping alive; nothing is copied until rows are taken.
        table = pa.ipc.open_file(pa.memory_map(str(directory / f"b{k:05d}.arrow"))).read_all()
        rows = table[ROW_COLUMN].to_numpy()
        yield table.drop_columns([ROW_COLUMN]), rows


def release_held(work: str | os.PathLike) -> None:
    """Free the batches this process holds for a run (after pass 2, or when the run fails)."""
    _HELD.release(os.path.abspath(work))
