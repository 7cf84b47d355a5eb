"""Hugging Face datasets: `save_to_disk` directories and `load_dataset` over local files, offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.fileio import sha256_path
from pipeline.sources.base import Batch, InputFile, Reader, Unit, expand_paths, require_unique_relpaths
from pipeline.sources.limits import DECOMPRESSION_ERRORS, DecompressionBudget, codec_for_name, decompressed_blocks
from pipeline.sources.parquet import columnar_batch

# Hub access must never be attempted: these must be set before `datasets` is imported.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _row_units(reader: Reader, source, f: InputFile, num_rows: int, units: UnitConfig, **kw) -> list[Unit]:
    step = units.target_rows
    starts = list(range(0, num_rows, step)) or [0]
    return [reader._unit(source, f, i, a, min(a + step, num_rows), a, **kw) for i, a in enumerate(starts)]


def _batches(table: pa.Table, start: int, source, units: UnitConfig, path: str) -> Iterator[Batch]:
    row = start
    chunk = max(1, units.target_rows // 4)
    if source.image_column and table.num_rows:  # images: about `batch_bytes` per batch
        chunk = min(chunk, max(1, units.batch_bytes * table.num_rows // max(1, table.nbytes)))
    for rb in table.to_batches(max_chunksize=chunk):
        yield columnar_batch(pa.Table.from_batches([rb]), row, source, units.limits, path)
        row += rb.num_rows


class HfDiskReader(Reader):
    """A dataset saved with `save_to_disk`; `:row` is the row number in the (split's) table."""

    kind = "hf_disk"

    def list_inputs(self, source) -> list[tuple[str, str]]:
        out = []
        for p in source.paths:
            path = Path(p)
            if not path.is_dir():
                raise SourceError(f"{p}: not a directory written by datasets' save_to_disk")
            rel = path.name + (f"/{source.split}" if source.split else "")
            out.append((str(path.resolve()), rel))
        return require_unique_relpaths(out, hint="rename one of the dataset directories or give it its own source")

    def describe(self, source, path: str, relpath: str, digest: bool = True) -> InputFile:
        """A dataset directory's digest: sha256 over the sorted (relative path, file sha256) lines
        (always computed: a directory's fingerprint for resuming is its digest)."""
        h = hashlib.sha256()
        total, mtime = 0, 0
        for q in sorted(Path(path).rglob("*")):
            if q.is_file():
                st = q.stat()
                total += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
                h.update(f"{q.relative_to(path)}\t{sha256_path(q)}\n".encode())
        return InputFile(source.name, path, relpath, total, h.hexdigest(), mtime)

    def _load(self, source, path: str):
        import datasets

        try:
            ds = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise SourceError(f"{path}: cannot load the saved dataset ({e.__class__.__name__}); was it written by save_to_disk?") from e
        except IndexError as e:
            # datasets writes an empty dataset as zero Arrow shards and then fails to concatenate them.
            raise SourceError(
                f"{path}: datasets cannot load this saved dataset (IndexError), which happens when it "
                "(or one of its splits) holds no rows; remove it from the source's paths"
            ) from e
        if isinstance(ds, datasets.DatasetDict):
            if source.split is None or source.split not in ds:
                raise SourceError(f"{path}: a DatasetDict with splits {sorted(ds)}; set `split` in the source config")
            ds = ds[source.split]
        return ds

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        out: list[Unit] = []
        for f in inputs:
            out.extend(_row_units(self, source, f, self._load(source, f.path).num_rows, units))
        return out

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        table = self._load(source, unit.path).data.table.slice(unit.start, unit.stop - unit.start)
        yield from _batches(table, unit.start, source, units, unit.path)


class HfLoadReader(Reader):
    """`datasets.load_dataset(builder, data_files=...)` over local files; `:row` is the row in the split."""

    kind = "hf_load"

    def list_inputs(self, source) -> list[tuple[str, str]]:
        return expand_paths(source.paths, None)

    def _load(self, source, files: tuple[str, ...], cache_dir: str):
        import datasets

        try:
            return datasets.load_dataset(source.builder, data_files=list(files), split=source.split, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - datasets raises many unrelated types; wrap them all
            raise SourceError(
                f"source '{source.name}': load_dataset('{source.builder}') failed ({e.__class__.__name__}); check the files and the builder"
            ) from e

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        cache_dir = str(Path(work_dir) / "hf_cache")
        files = tuple(f.path for f in inputs)
        for path in files:  # before datasets reads anything: it would read a bomb or a huge line whole
            check_hf_input(path, source.builder, units.limits)
        ds = self._load(source, files, cache_dir)
        first = InputFile(source.name, cache_dir, source.split, 0, "", 0)
        return _row_units(self, source, first, ds.num_rows, units, files=files)

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        ds = self._load(source, unit.files, unit.path)
        table = ds.data.table.slice(unit.start, unit.stop - unit.start)
        yield from _batches(table, unit.start, source, units, unit.path)


def check_hf_input(path: str, builder: str, limits) -> None:
    """Raise a SourceError if `load_dataset` could not read a file within `units.limits`.

    datasets reads a JSON, CSV or text line whole and inflates a compressed file completely (into
    its cache), so those files are streamed through here first, in bounded memory: a line over
    `max_record_bytes` or a file past its decompression budget stops the run before datasets
    starts. A Parquet file is checked from its metadata; its cells are checked as they are read.
    """
    budget = DecompressionBudget.for_file(path, limits)
    if builder == "parquet":
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{path}: not a readable Parquet file ({e.__class__.__name__})") from e
        budget.check_total(sum(meta.row_group(rg).total_byte_size for rg in range(meta.num_row_groups)))
        return
    limit = limits.max_record_bytes
    line, length = 0, 0  # the current line's number and the bytes of it seen so far
    try:
        with open(path, "rb") as raw:
            codec = codec_for_name(path)
            blocks = decompressed_blocks(raw, codec, 1 << 20, budget) if codec else iter(lambda: raw.read(1 << 20), b"")
            for block in blocks:
                ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
                if ends.size:
                    gaps = np.diff(ends, prepend=-1)
                    gaps[0] += length
                    if int(gaps.max()) - 1 > limit:
                        line += int(np.argmax(gaps - 1 > limit))
                        length = limit + 1
                        break
                    line += ends.size
                    length = len(block) - 1 - int(ends[-1])
                else:
                    length += len(block)
                if length > limit:
                    break
    except DECOMPRESSION_ERRORS as e:
        raise SourceError(f"{path}: cannot read past line {line} ({e.__class__.__name__}: the file is truncated or corrupt)") from e
    if length > limit:
        raise SourceError(
            f"{path}: line {line} holds more than units.limits.max_record_bytes ({limit:,}) bytes, and "
            f"load_dataset('{builder}') would read it whole; read the file with a `jsonl` or `csv` source, which "
            "rejects such a record on its own, or raise the limit"
        )
