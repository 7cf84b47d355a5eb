"""Reading a unit's kept rows again after pass 1: from the batches pass 1 spilled, else the input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.errors import SourceError
from pipeline.plan import RunPlan
from pipeline.run.workdir import read_done, unit_name
from pipeline.sources import reader_for
from pipeline.spill import read_spill, spill_complete


def iter_unit_rows(plan: RunPlan, unit_id: int, keep_rows: np.ndarray):
    """The rows in `keep_rows` (sorted) of a unit as (table, rows), in row order: from the batches
    pass 1 spilled when it did, else by reading the unit again."""
    unit = plan.units[unit_id]
    cfg = plan.config
    if keep_rows.size == 0:
        return
    last = keep_rows[-1]
    spilled = (read_done(plan.work_dir / "pass1" / f"{unit_name(unit_id)}.json") or {}).get("spilled")
    if spilled is not None and spill_complete(plan.spill_root, unit_id, spilled):
        batches = read_spill(plan.spill_root, unit_id, spilled)
    else:
        reader = reader_for(unit.kind)
        batches = ((b.table, b.rows) for b in reader.read(reader.localized(unit), plan.source(unit.source), cfg.units))
    try:
        for table, rows in batches:
            if rows.size == 0:
                continue
            if rows[0] > last:
                break
            mask = np.isin(rows, keep_rows)
            if not mask.any():
                continue
            yield table.filter(pa.array(mask)), rows[mask]
    except SourceError:
        if cfg.errors.on_file_error == "fail":
            raise
