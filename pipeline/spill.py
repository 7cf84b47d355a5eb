"""Parsed batches kept between the passes, so a text input is parsed once per run, not twice.

Pass 1 writes each batch of a unit it has read, after validation and after the safety match
(a quarantined record is never in it), as an uncompressed Arrow IPC file with its row numbers;
pass 2 and the PII stage read those files memory-mapped instead of reading and parsing the input
again. The files live in a private directory on the RAM-backed /dev/shm or in the run's scratch
space (`units.spill_to`), and go when the run is published; a new plan also removes memory
spills no run can use any more (`sweep_memory_spills`).

Usage::

    spill = SpillWriter(plan.spill_root, unit_id)      # in pass 1 (spill.abort() if it fails)
    spill.add(table, rows)
    for table, rows in read_spill(plan.spill_root, unit_id, spill.batches):  # in pass 2, in row order
        ...

A spill belongs to the pass-1 result that records it (`"spilled": <batches>` in the unit's done
marker), which is written after the spill is complete: a unit killed mid-spill is read again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

ROW_COLUMN = "__hygiene_row"
SHM = Path("/dev/shm")
_OWNER = "owner.json"


def spill_dir(root: Path, unit_id: int) -> Path:
    return root / f"u{unit_id:05d}"


def memory_spill_base() -> Path:
    """This user's directory of memory spills (one subdirectory per run id)."""
    return SHM / f"hygiene-spill-{os.getuid()}"


def _shm_is_tmpfs() -> bool:
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            return any(line.split()[1:3] == [str(SHM), "tmpfs"] for line in f if len(line.split()) > 2)
    except OSError:
        return False


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def choose_spill_dir(where: str, estimate: int, run_id: str) -> str | None:
    """The memory spill directory of a new run, or None for the scratch space (see `spill_to`)."""
    if where == "output":
        return None
    usable = _shm_is_tmpfs()
    if where == "memory" and not usable:
        from pipeline.errors import ConfigError

        raise ConfigError(f"units.spill_to: memory needs a tmpfs mounted at {SHM}; use auto or output")
    if where == "auto":
        if not usable:
            return None
        free = shutil.disk_usage(SHM).free
        if 2 * estimate > free or 3 * estimate > _mem_available():
            return None
    return str(memory_spill_base() / run_id)


def claim(root: Path, work_dir: Path, run_id: str) -> None:
    """Create a memory spill directory (owner-only: it holds record content) naming its run."""
    base = root.parent
    base.mkdir(mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    root.mkdir(mode=0o700, exist_ok=True)
    # An absolute path: a sweep may run in another process with another working directory.
    (root / _OWNER).write_text(json.dumps({"run_id": run_id, "work_dir": str(Path(work_dir).resolve())}))


def remove_spill(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def sweep_memory_spills(grace_s: float = 3600.0) -> None:
    """Remove this user's memory spills that no run can use any more: their run's scratch space
    is gone or belongs to another run (published, discarded or replaced). RAM is not freed by a
    killed process, so every new plan sweeps."""
    base = memory_spill_base()
    if not base.is_dir():
        return
    for d in base.iterdir():
        try:
            owner = json.loads((d / _OWNER).read_text())
            plan_file = Path(owner["work_dir"]) / "plan.json"
            alive = plan_file.exists() and json.loads(plan_file.read_text()).get("run_id") == d.name
        except FileNotFoundError:
            alive = time.time() - d.stat().st_mtime < grace_s  # being created right now
        except (OSError, ValueError, KeyError):
            alive = False
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def release_memory_spill(plan) -> None:
    """Free a failed run's memory spill: RAM should not wait for a rerun that may never come (a
    resumed run reads those units again; a killed process cannot call this, the next plan's
    sweep or the resumed run takes care of that)."""
    if plan.spill_dir:
        remove_spill(Path(plan.spill_dir))


def spill_complete(root: Path, unit_id: int, batches: int) -> bool:
    """Whether every batch pass 1 recorded is still there (a memory spill does not survive a reboot)."""
    d = spill_dir(root, unit_id)
    return all((d / f"b{k:05d}.arrow").exists() for k in range(batches))


class SpillWriter:
    """Writes one unit's batches as `bNNNNN.arrow`, each with its own schema (batches may differ)."""

    def __init__(self, root: Path, unit_id: int) -> None:
        self.dir = spill_dir(root, unit_id)
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


def read_spill(root: Path, unit_id: int, batches: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The spilled batches of a unit as (table, rows), in the order pass 1 read them."""
    directory = spill_dir(root, unit_id)
    for k in range(batches):
        # The buffers of the table keep the mapping alive; nothing is copied until rows are taken.
        table = pa.ipc.open_file(pa.memory_map(str(directory / f"b{k:05d}.arrow"))).read_all()
        rows = table[ROW_COLUMN].to_numpy()
        yield table.drop_columns([ROW_COLUMN]), rows
