"""Parquet reader: units are runs of whole row groups."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Unit
from pipeline.sources.validate import split_valid


def open_parquet(path: str) -> pq.ParquetFile:
    """Open a Parquet file, turning Arrow's errors into a SourceError naming the file."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SourceError(f"{path}: not a readable Parquet file ({e.__class__.__name__})") from e


class ParquetReader(Reader):
    """Reads Parquet files. `:row` in record ids is the 0-based row number in the file."""

    kind = "parquet"
    suffixes = (".parquet",)

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "") -> list[Unit]:
        out: list[Unit] = []
        for f in inputs:
            try:
                meta = open_parquet(f.path).metadata
            except SourceError as e:
                out.append(self._unit(source, f, 0, 0, 0, 0, file_error=str(e)))
                continue
            part, first_rg, rows, nbytes, row_offset = 0, 0, 0, 0, 0
            for rg in range(meta.num_row_groups):
                rows += meta.row_group(rg).num_rows
                nbytes += meta.row_group(rg).total_byte_size
                if rows >= units.target_rows or nbytes >= units.target_bytes or rg == meta.num_row_groups - 1:
                    out.append(self._unit(source, f, part, first_rg, rg + 1, row_offset))
                    part, first_rg, row_offset, rows, nbytes = part + 1, rg + 1, row_offset + rows, 0, 0
            if meta.num_row_groups == 0:
                out.append(self._unit(source, f, 0, 0, 0, 0))
        return out

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        if unit.file_error:
            raise SourceError(unit.file_error)
        pf = open_parquet(unit.path)
        row = unit.row_offset
        try:
            for rb in pf.iter_batches(batch_size=max(1, units.target_rows // 4), row_groups=range(unit.start, unit.stop)):
                table = pa.Table.from_batches([rb])
                rows = np.arange(row, row + table.num_rows, dtype=np.int64)
                row += table.num_rows
                yield split_valid(table, rows, source)
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{unit.path}: cannot read past row {row} ({e.__class__.__name__}: corrupt Parquet data)") from e
