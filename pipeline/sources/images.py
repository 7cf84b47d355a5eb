"""Directories of images: one file is one record (`path`, `image` bytes); decoding happens later,
in the safety stage, through the one safe decoder (pipeline.safety.images)."""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, Reject, Unit, expand_paths
from pipeline.sources.limits import image_too_large, read_bounded
from pipeline.sources.textdir import TextDirReader

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
IMAGE_SCHEMA = pa.schema([("path", pa.string()), ("image", pa.large_binary())])


class ImageDirReader(TextDirReader):
    """Reads image files (by suffix, case-insensitive); `record_id` is `source/relative_path`."""

    kind = "image_dir"
    content = "image"

    def list_inputs(self, source) -> list[tuple[str, str]]:
        found = expand_paths(source.paths, None)
        return [(p, r) for p, r in found if r.lower().endswith(IMAGE_SUFFIXES)] or _none(source)

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        paths: list[str] = []
        blobs: list[bytes] = []
        rows: list[int] = []
        rejects: list[Reject] = []
        size = 0
        for i, entry in enumerate(unit.files):
            path, relpath = entry.split("\t", 1)
            row = unit.row_offset + i
            data, oversize = read_bounded(path, units.limits.max_image_bytes, "image file", digest=False)
            if oversize is not None:
                rejects.append(Reject(row, image_too_large(oversize[0], units.limits), None, relpath))
                continue
            if not data:
                rejects.append(Reject(row, "empty file", hashlib.sha256(b"").digest(), relpath))
                continue
            paths.append(relpath)
            blobs.append(data)
            rows.append(row)
            size += len(data)
            if size >= units.batch_bytes:
                yield _batch(paths, blobs, rows, rejects)
                paths, blobs, rows, rejects, size = [], [], [], [], 0
        if paths or rejects:
            yield _batch(paths, blobs, rows, rejects)


def _batch(paths, blobs, rows, rejects) -> Batch:
    table = pa.table({"path": pa.array(paths, pa.string()), "image": pa.array(blobs, pa.large_binary())}, schema=IMAGE_SCHEMA)
    return Batch(table, np.asarray(rows, dtype=np.int64), sorted(rejects, key=lambda r: r.row), list(paths))


def _none(source):
    raise SourceError(f"source '{source.name}': no image file ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(source.paths)}")
