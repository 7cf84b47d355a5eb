"""Directories of text files: one file is one record, `record_id` is `source/relative_path`."""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit, expand_paths, require_unique_relpaths
from pipeline.sources.limits import read_bounded, record_too_large
from pipeline.sources.validate import split_valid


class TextDirReader(Reader):
    """Reads `.txt` files (UTF-8); each file becomes a record with `text` and `path` columns."""

    kind = "text_dir"
    spill = True

    def list_inputs(self, source) -> list[tuple[str, str]]:
        suffix = source.glob.rsplit("*", 1)[-1] or None
        return require_unique_relpaths(expand_paths(source.paths, (suffix,) if suffix else None))

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        out: list[Unit] = []
        group: list[InputFile] = []
        size, first = 0, 0
        for f in inputs:
            group.append(f)
            size += f.bytes
            if size >= units.target_bytes or len(group) >= units.target_rows:
                out.append(self._group_unit(source, group, len(out), first))
                first += len(group)
                group, size = [], 0
        if group:
            out.append(self._group_unit(source, group, len(out), first))
        return out

    def _group_unit(self, source, group: list[InputFile], part: int, first: int) -> Unit:
        # A file's row is its position among the source's files, whatever the grouping into units.
        files = tuple(f"{f.path}\t{f.relpath}" for f in group)
        return self._unit(source, group[0], part, 0, len(group), first, files=files)

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        texts: list[str] = []
        paths: list[str] = []
        rows: list[int] = []
        rejects: list[Reject] = []
        size = 0
        for i, entry in enumerate(unit.files, start=unit.row_offset):
            path, relpath = entry.split("\t", 1)
            data, oversize = read_bounded(path, units.limits.max_record_bytes, "text file")
            if oversize is not None:
                size, digest = oversize
                rejects.append(Reject(i, record_too_large(size, units.limits), digest, relpath))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                rejects.append(Reject(i, "invalid UTF-8", hashlib.sha256(data).digest(), relpath))
                continue
            if text.startswith("\ufeff"):
                text = text[1:]
            texts.append(text)
            paths.append(relpath)
            rows.append(i)
            size += len(data)
            if size >= units.batch_bytes:
                yield self._batch(texts, paths, rows, rejects, source)
                texts, paths, rows, rejects, size = [], [], [], [], 0
        if texts or rejects:
            yield self._batch(texts, paths, rows, rejects, source)

    @staticmethod
    def _batch(texts, paths, rows, rejects, source) -> Batch:
        table = pa.table({source.text_field: pa.array(texts, pa.string()), "path": pa.array(paths, pa.string())})
        batch = split_valid(table, np.asarray(rows, dtype=np.int64), source, list(paths))
        batch.rejects = sorted(rejects + batch.rejects, key=lambda r: r.row)
        return batch
