"""Readers, one per input format, picked by the source config's `kind`."""

from __future__ import annotations

from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit, describe_file
from pipeline.sources.csv import CsvReader
from pipeline.sources.hf import HfDiskReader, HfLoadReader
from pipeline.sources.images import ImageDirReader
from pipeline.sources.jsonl import JsonlReader
from pipeline.sources.parquet import ParquetReader
from pipeline.sources.textdir import TextDirReader
from pipeline.sources.webdataset import WebDatasetReader

IMAGE_KINDS = ("image_dir", "webdataset")
"""Source kinds whose records are images: hashed, matched and deduplicated as images in pass 1."""


def is_image_source(source) -> bool:
    """True when a source's records are images: an image kind, or a Parquet/HF source with `image_column`."""
    return source.kind in IMAGE_KINDS or getattr(source, "image_column", None) is not None


READERS: dict[str, Reader] = {
    r.kind: r for r in (JsonlReader(), ParquetReader(), CsvReader(), TextDirReader(), ImageDirReader(),
                        WebDatasetReader(), HfDiskReader(), HfLoadReader())
}


def reader_for(kind: str) -> Reader:
    """The reader registered for a source kind."""
    return READERS[kind]


__all__ = ["Batch", "InputFile", "Reader", "Reject", "Unit", "IMAGE_KINDS", "is_image_source", "READERS", "reader_for", "describe_file"]
