"""Parquet reader: units are runs of whole row groups. With `image_column`, rows are image records
(`image_rows`, shared with the Hugging Face readers)."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit
from pipeline.sources.limits import DecompressionBudget, reject_oversize
from pipeline.sources.validate import without_string_views, is_string_type, split_valid, true_rows
from pipeline.storage import local_ranges, object_info

IMAGE = "image"
"""The output column of an image-column source's image bytes."""

FOOTER_TAIL = 64 * 1024  # the end of an object fetched first: most Parquet footers fit in it
# Arrow reads up to 100 bytes past a column chunk of files from old writers (PARQUET-816).
CHUNK_PAD = 100


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

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
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

    def localized(self, unit: Unit) -> Unit:
        """A unit of an object on a store fetches the object's footer and its own row groups only
        (a sparse local copy at the same offsets): one unit of a 10 GB file fetches its share. An
        object without a Parquet footer is copied whole, and reading it says what is wrong."""
        if unit.etag is None or unit.file_error or unit.stop <= unit.start:
            return super().localized(unit)
        size = object_info(unit.path).size
        footer = _footer_range(unit.path, unit.etag, size)
        if footer is None:
            return super().localized(unit)
        meta = pq.ParquetFile(local_ranges(unit.path, unit.etag, [footer])).metadata
        ranges = [footer]
        for rg in range(unit.start, unit.stop):
            group = meta.row_group(rg)
            for c in range(group.num_columns):
                col = group.column(c)
                first = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else col.data_page_offset
                ranges.append((first, min(size, first + col.total_compressed_size + CHUNK_PAD)))
        return replace(unit, path=local_ranges(unit.path, unit.etag, ranges))

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        if unit.file_error:
            raise SourceError(unit.file_error)
        pf = open_parquet(unit.path)
        row = unit.row_offset
        chunk = max(1, units.target_rows // 4)
        if source.image_column:  # images: about `batch_bytes` per batch
            groups = [pf.metadata.row_group(rg) for rg in range(unit.start, unit.stop)]
            nrows, nbytes = sum(g.num_rows for g in groups), sum(g.total_byte_size for g in groups)
            chunk = min(chunk, max(1, units.batch_bytes * nrows // max(1, nbytes)))
        # What the row groups inflate to, from the file's metadata, counted from the file's start so
        # that the budget does not depend on how the file was split into units.
        budget = DecompressionBudget.for_file(unit.path, units.limits)
        inflated = sum(pf.metadata.row_group(rg).total_byte_size for rg in range(unit.start))
        try:
            for rg in range(unit.start, unit.stop):
                inflated += pf.metadata.row_group(rg).total_byte_size
                budget.check_total(inflated)
                for rb in pf.iter_batches(batch_size=chunk, row_groups=[rg]):
                    yield columnar_batch(pa.Table.from_batches([rb]), row, source, units.limits, unit.path)
                    row += rb.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{unit.path}: cannot read past row {row} ({e.__class__.__name__}: corrupt Parquet data)") from e


def _footer_range(url: str, etag: str, size: int) -> tuple[int, int] | None:
    """The byte range of an object's Parquet footer (its metadata, their length and the magic),
    or a fetched tail that holds it; None when the object does not end like a Parquet file."""
    tail = (max(0, size - FOOTER_TAIL), size)
    with open(local_ranges(url, etag, [tail]), "rb") as f:
        f.seek(max(0, size - 8))
        end = f.read(8)
    if size < 12 or end[4:] != b"PAR1":
        return None
    start = size - 8 - int.from_bytes(end[:4], "little")
    if start < 4:
        return None
    return tail if start >= tail[0] else (start, size)


def columnar_batch(table: pa.Table, first_row: int, source, limits, path: str) -> Batch:
    """A batch of rows read from a columnar input (Parquet, HF datasets): rows over a size limit are
    rejected with their size, then text or image records are checked as such."""
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    table, rows, oversize = reject_oversize(without_string_views(table), rows, limits, source.image_column)
    batch = image_rows(table, rows, source, path) if source.image_column else split_valid(table, rows, source)
    if oversize:
        batch.rejects = sorted(oversize + batch.rejects, key=lambda r: r.row)
    return batch


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or t == pa.binary_view()


def _image_bytes(col: pa.ChunkedArray, name: str) -> tuple[pa.Array | None, pa.Array | None, str | None]:
    """(bytes, whether a struct has a path, None) of an image column: binary values, or an HF `Image` struct's `bytes`
    (the struct's null slots made null); (None, None, reason) when the column holds neither."""
    arr = col.combine_chunks()
    t = arr.type
    if _is_binary(t):
        return arr.cast(pa.large_binary()), None, None
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and _is_binary(t.field("bytes").type):
        absent = arr.is_null()
        blobs = pc.if_else(absent, pa.scalar(None, pa.large_binary()), arr.field("bytes").cast(pa.large_binary()))
        paths = pc.and_(arr.is_valid(), arr.field("path").is_valid()) if t.get_field_index("path") >= 0 else None
        return blobs, paths, None
    return None, None, f"image column '{name}' is not binary or an Image struct ({t})"


def _id_reasons(table: pa.Table, id_field: str, reasons: list) -> tuple[pa.Table, pa.Array | None]:
    """Check the id field as `split_valid` does (string or integer, not null, not empty); the table with string ids."""
    if id_field not in table.column_names:
        _reject_all(reasons, f"missing id field '{id_field}'")
        return table, None
    col = table[id_field]
    if pa.types.is_integer(col.type) or pa.types.is_null(col.type):
        col = col.cast(pa.string())
        table = table.set_column(table.schema.get_field_index(id_field), id_field, col)
    elif not is_string_type(col.type):
        _reject_all(reasons, f"id field '{id_field}' is not a string or integer ({col.type})")
        return table, None
    for i in true_rows(col.is_null()):
        reasons[i] = reasons[i] or f"id field '{id_field}' is missing or null"
    for i in true_rows(pc.fill_null(pc.equal(pc.binary_length(col), 0), False)):
        reasons[i] = reasons[i] or f"id field '{id_field}' is empty"
    return table, col


def _reject_all(reasons: list, reason: str) -> None:
    for i, r in enumerate(reasons):
        reasons[i] = r or reason


def image_rows(table: pa.Table, rows: np.ndarray, source, path: str) -> Batch:
    """A batch of an image-column source: the image column becomes `image` (bytes, in its place), the
    other columns stay; a row without image bytes (or without a usable id) becomes a Reject.

    A null image is "image column is empty"; an HF `Image` struct with a `path` but no `bytes` is
    "image column has no bytes" (files outside the dataset are never read). The text field is not
    required: it is the caption PII scans, when present.
    """
    name = source.image_column
    if name != IMAGE and IMAGE in table.column_names:
        raise SourceError(f"{path}: a column '{IMAGE}' besides image_column '{name}'; the output names the "
                          f"image column '{IMAGE}', so rename one of them or set `image_column: {IMAGE}`")
    table = without_string_views(table)
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    blobs, paths = None, None
    if name not in table.column_names:
        _reject_all(reasons, f"missing image column '{name}'")
    else:
        blobs, paths, bad = _image_bytes(table[name], name)
        if bad:
            _reject_all(reasons, bad)
        else:
            empty = pc.fill_null(pc.equal(pc.binary_length(blobs), 0), True).to_numpy(zero_copy_only=False)
            has_path = paths.to_numpy(zero_copy_only=False) if paths is not None else np.zeros(n, bool)
            for i in np.flatnonzero(empty):
                no_bytes = has_path[i] and not blobs[i].is_valid
                reasons[i] = "image column has no bytes" if no_bytes else "image column is empty"
    ids = None
    if source.id_field is not None:
        table, ids = _id_reasons(table, source.id_field, reasons)
    if blobs is None:
        blobs = pa.nulls(n, pa.large_binary())
    at = table.schema.get_field_index(name) if name in table.column_names else table.num_columns
    table = table.drop_columns([name]) if name in table.column_names else table
    table = table.add_column(at, IMAGE, blobs)
    bad_rows = [i for i, r in enumerate(reasons) if r is not None]
    if not bad_rows:
        return Batch(table, rows, [])
    keep = np.ones(n, dtype=bool)
    keep[bad_rows] = False
    id_values = ids.take(pa.array(bad_rows)).to_pylist() if ids is not None else [None] * len(bad_rows)
    rejects = [Reject(int(rows[i]), reasons[i], None, None, rid or None) for i, rid in zip(bad_rows, id_values)]
    return Batch(table.filter(pa.array(keep)), rows[keep], rejects)
