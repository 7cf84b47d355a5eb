"""JSON Lines reader: plain files split into byte ranges, `.gz` and `.zst` streamed whole."""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import threading
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit
from pipeline.sources.limits import (DECOMPRESSION_ERRORS, DecompressionBudget, codec_for_name,
                                    decompressed_blocks, record_too_large)
from pipeline.sources.jsonscan import ChunkScan, KnownShape, scan_chunk, suspect_text_rows
from pipeline.sources.validate import is_string_type, split_valid
from pipeline.storage import is_remote, local_range

_COMPRESSED = (".gz", ".zst")
_BOM = b"\xef\xbb\xbf"
# What polars and Arrow raise for JSON they cannot type (conflicting types, integers past int64).
_TYPING_ERRORS = (pl.exceptions.PolarsError, pa.ArrowException, OverflowError)


def _is_compressed(path: str) -> bool:
    return path.endswith(_COMPRESSED)


def read_blocks(path: str, start: int, stop: int, block: int, budget: DecompressionBudget | None = None) -> Iterator[bytes]:
    """Yield the bytes of `path` (decompressed for .gz/.zst; the byte range [start, stop) if plain).

    Compressed files come in pieces of about `block` bytes, counted against `budget` as they
    are decompressed. A plain range comes in pieces of about `block` bytes that end at a line end, each
    read exactly: the last newline before a piece's end is found by reading a little of its tail
    first, so no piece is cut out of a larger read (a copy of the input). A piece without any
    newline is a whole block of a line longer than a block, never the whole line.
    """
    with open(path, "rb") as raw:
        if _is_compressed(path):
            yield from decompressed_blocks(raw, codec_for_name(path), block, budget)
        else:
            pos = start
            while pos < stop:
                end = min(pos + block, stop)
                if end < stop:
                    cut = _line_end_before(raw, pos, end)
                    end = cut if cut > pos else end  # no newline in the block: the reader carries it
                raw.seek(pos)
                data = raw.read(end - pos)
                if not data:
                    return
                pos += len(data)
                yield data


def _line_end_before(f, start: int, end: int, window: int = 64 * 1024) -> int:
    """The offset just after the last newline in [start, end) of a file, or `start` if there is none."""
    hi = end
    while hi > start:
        lo = max(start, hi - window)
        f.seek(lo)
        tail = f.read(hi - lo)
        i = tail.rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        if len(tail) < hi - lo:  # the file is shorter than planned: the reader reports what is missing
            return start
        hi = lo
        window *= 2
    return start


def _count_newlines(path: str, start: int, stop: int) -> int:
    """Newlines in [start, stop) of a file: the file memory-mapped (no copy out of the page cache)
    and counted by numpy 8 MiB at a time, without the GIL (few blocks: the thread loading the
    compiled kernels meanwhile holds the GIL most of the time; and no kernel to wait for)."""
    if stop <= start:
        return 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        data = np.frombuffer(m, dtype=np.uint8)
        try:
            step = 8 << 20
            return sum(int(np.count_nonzero(data[k : min(k + step, stop)] == 10)) for k in range(start, stop, step))
        finally:
            del data  # the mapping closes only when no array points into it


# Newlines before each 1 MiB boundary of the plain inputs this process has just hashed, keyed
# by (path, size, mtime_ns): the planner turns them into each unit's first row number.
_INDEX_BLOCK = 1 << 20
_LINE_INDEX: dict[tuple[str, int, int], np.ndarray] = {}
_LINE_INDEX_LOCK = threading.Lock()


def _block_newlines(block: np.ndarray) -> np.ndarray:
    """Newlines in each 1 MiB block of `block` (whose length is a multiple of it, but for the last)."""
    full = len(block) // _INDEX_BLOCK
    counts = np.count_nonzero(block[: full * _INDEX_BLOCK].reshape(full, _INDEX_BLOCK) == 10, axis=1)
    if len(block) > full * _INDEX_BLOCK:
        counts = np.append(counts, np.count_nonzero(block[full * _INDEX_BLOCK :] == 10))
    return counts


def _digest_and_index(path: str, chunk: int = 8 * _INDEX_BLOCK) -> tuple[str, np.ndarray]:
    """sha256 of a file and the newlines before each 1 MiB boundary, in one read: each chunk is
    hashed in this thread while another counts its newlines (both without the GIL)."""
    h = hashlib.sha256()
    buf = np.empty(chunk, dtype=np.uint8)
    counts = [np.zeros(1, dtype=np.int64)]
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(max_workers=1) as counter:
        while got := f.readinto(memoryview(buf)):
            view = buf[:got]
            pending = counter.submit(_block_newlines, view)
            h.update(memoryview(view))
            counts.append(pending.result())
    return h.hexdigest(), np.cumsum(np.concatenate(counts))


def _newlines_before(path: str, pos: int, index: np.ndarray) -> int:
    """Newlines in [0, pos) of a file, from its block index plus the bytes past the last block edge."""
    block = pos // _INDEX_BLOCK
    return int(index[block]) + _count_newlines(path, block * _INDEX_BLOCK, pos)


def _next_line_start(f, pos: int, size: int) -> int:
    """The offset just after the first newline at or after `pos` (or `size`)."""
    f.seek(pos)
    while True:
        block = f.read(1024 * 1024)
        if not block:
            return size
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)


class JsonlReader(Reader):
    """Reads JSON Lines. `:row` in record ids is the 0-based line number in the file."""

    kind = "jsonl"
    spill = True
    suffixes = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz", ".jsonl.zst", ".ndjson.zst", ".json.zst")

    def describe(self, source, path: str, relpath: str, digest: bool = True) -> InputFile:
        """Size, digest and modification time; a plain file's newlines are counted in the same read."""
        if _is_compressed(path) or not digest or is_remote(path):
            return super().describe(source, path, relpath, digest)
        try:
            st = os.stat(path)
            digest, index = _digest_and_index(path)
        except OSError as e:
            raise SourceError(f"{path}: cannot read input file ({e.strerror})") from e
        with _LINE_INDEX_LOCK:
            _LINE_INDEX[(path, st.st_size, st.st_mtime_ns)] = index
        return InputFile(source.name, path, relpath, st.st_size, digest, st.st_mtime_ns)

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        out: list[Unit] = []
        for f in inputs:
            if _is_compressed(f.path) or f.bytes <= units.target_bytes:
                out.append(self._unit(source, f, 0, 0, -1 if _is_compressed(f.path) else f.bytes, 0))
                continue
            # Equal parts of at most target_bytes, as many as a multiple of the workers: 17 units on
            # two workers leave one worker idle for the whole last unit.
            parts = -(-f.bytes // units.target_bytes)
            parts = -(-parts // max(workers, 1)) * max(workers, 1)
            step = -(-f.bytes // parts)
            cuts = [0]
            with open(f.path, "rb") as fh:
                while cuts[-1] < f.bytes:
                    nxt = _next_line_start(fh, max(cuts[-1] + 1, len(cuts) * step), f.bytes)
                    cuts.append(nxt)
            ranges = list(zip(cuts, cuts[1:]))
            with _LINE_INDEX_LOCK:
                index = _LINE_INDEX.pop((f.path, f.bytes, f.mtime_ns), None)
            if index is not None:  # counted while the file was hashed: only the bytes past a block edge remain
                before = [_newlines_before(f.path, a, index) for a, _ in ranges]
            else:  # each unit's first row number is the newlines before it, counted range by range in parallel
                with ThreadPoolExecutor(max_workers=min(len(ranges), os.cpu_count() or 1)) as pool:
                    counts = list(pool.map(lambda r: _count_newlines(f.path, r[0], r[1]), ranges))
                before = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
            for part, ((a, b), row_offset) in enumerate(zip(ranges, before)):
                out.append(self._unit(source, f, part, a, b, int(row_offset)))
        return out

    def localized(self, unit: Unit) -> Unit:
        """A plain file's unit on a store reads only its byte range (one unit of a 10 GB object
        fetches its 64 MiB); a compressed file is fetched whole."""
        if unit.etag is None or _is_compressed(unit.path) or unit.stop <= unit.start:
            return super().localized(unit)
        return replace(unit, path=local_range(unit.path, unit.etag, unit.start, unit.stop))

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        limits = units.limits
        budget = DecompressionBudget.for_file(unit.path, limits) if _is_compressed(unit.path) else None
        line_no = unit.row_offset
        carry: list[bytes] = []  # the start of a line that ends in a later block
        carried = 0
        long_line: _LongLine | None = None  # a line over max_record_bytes, streamed past
        at_file_start = unit.start == 0
        known: KnownShape | None = None  # the schema of the unit's last inferred chunk, to reuse
        try:
            for block in read_blocks(unit.path, unit.start, unit.stop, units.batch_bytes, budget):
                if long_line is not None:
                    end = block.find(b"\n")
                    if end < 0:
                        long_line.add(block)
                        continue
                    long_line.add(memoryview(block)[:end])
                    yield long_line.batch(limits)
                    line_no += 1
                    long_line = None
                    block = block[end + 1 :]
                if at_file_start:
                    data = b"".join((*carry, block))
                    if len(data) < len(_BOM) and _BOM.startswith(data):
                        carry, carried = [data], len(data)
                        continue
                    # A byte order mark is encoding metadata, not part of the first record.
                    block = data[len(_BOM) :] if data.startswith(_BOM) else data
                    carry, carried, at_file_start = [], 0, False
                cut = block.rfind(b"\n")
                if cut < 0:
                    if block:
                        carry.append(block)
                        carried += len(block)
                    if carried > limits.max_record_bytes:
                        long_line, carry, carried = _LongLine(line_no, carry), [], 0
                    continue
                chunk = b"".join((*carry, block[: cut + 1])) if carry else block[: cut + 1]
                batches, known, lines = self._parse_bounded(chunk, line_no, source, known, limits)
                yield from batches
                line_no += lines
                rest = block[cut + 1 :]
                carry, carried = ([rest], len(rest)) if rest else ([], 0)
                if carried > limits.max_record_bytes:
                    long_line, carry, carried = _LongLine(line_no, carry), [], 0
            if long_line is not None:  # the last line, without a final newline
                yield long_line.batch(limits)
            elif carry:
                chunk = b"".join(carry) + b"\n"
                yield from self._parse_bounded(chunk, line_no, source, known, limits)[0]
        except DECOMPRESSION_ERRORS as e:
            raise SourceError(
                f"{unit.path}: cannot read past line {line_no} ({e.__class__.__name__}: the file is truncated or corrupt)"
            ) from e

    def _parse_bounded(self, chunk: bytes, first_line: int, source, known: KnownShape | None,
                       limits) -> tuple[list[Batch], KnownShape | None, int]:
        """The batches of a chunk of whole lines, the schema to reuse, and the lines it held. A line
        longer than `max_record_bytes` is rejected with its size and digest and never parsed."""
        if len(chunk) <= limits.max_record_bytes + 1:  # no line can be too long: the usual case, no extra pass
            scan = scan_chunk(chunk)
            batch, known = self._parse(chunk, first_line, source, scan, known)
            return [batch], known, scan.newlines
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
        starts = np.concatenate(([0], ends[:-1] + 1))
        over = np.flatnonzero(ends - starts > limits.max_record_bytes).tolist()
        batches: list[Batch] = []
        pos, line = 0, 0  # the byte and the line number (within the chunk) of the next line to parse
        for i in [*over, None]:
            s = len(chunk) if i is None else int(starts[i])
            if s > pos:
                piece = chunk[pos:s]
                batch, known = self._parse(piece, first_line + line, source, scan_chunk(piece), known)
                batches.append(batch)
            if i is not None:
                e = int(ends[i])
                batches.append(_LongLine(first_line + i, [memoryview(chunk)[s:e]]).batch(limits))
                pos, line = e + 1, i + 1
        return batches, known, len(ends)

    def _parse(self, chunk: bytes, first_line: int, source, scan: ChunkScan,
               known: KnownShape | None = None) -> tuple[Batch, KnownShape | None]:
        """Parse the chunk's whole lines: all at once with polars when that is exact, else line by
        line. Returns the batch and the schema later chunks of the unit may reuse."""
        if not scan.lone_surrogate:
            batch, known = self._parse_fast(chunk, first_line, source, scan, known)
            if batch is not None:
                return batch, known
        lines = chunk.split(b"\n")[:-1]
        nonblank = _nonblank(lines)
        if not nonblank:
            return Batch(pa.table({}), np.zeros(0, dtype=np.int64), []), known
        return self._parse_carefully(lines, nonblank, first_line, source), known

    def _parse_fast(self, chunk: bytes, first_line: int, source, scan: ChunkScan,
                    known: KnownShape | None) -> tuple[Batch | None, KnownShape | None]:
        """The chunk through polars, or None when only the careful path gives the exact result.

        polars yields exactly one row per non-blank line (or fails), so when it yields a row for
        every line there are no blank lines to skip and the rows number the lines directly.
        The schema of an earlier chunk is reused when the chunk's shape fits it (see jsonscan);
        otherwise polars infers one over every line of the chunk.
        """
        df, fresh = None, None
        if known is not None and scan.shape is not None and scan.shape.fits(known):
            try:
                df = pl.read_ndjson(chunk, schema=known.schema)
            except Exception:  # noqa: BLE001 - e.g. an integer past int64: inference decides
                df = None
        if df is None:
            try:
                df = pl.read_ndjson(chunk, infer_schema_length=None)
            except Exception:  # noqa: BLE001 - any polars parse failure means "take the careful path"
                return None, known
            fresh = KnownShape.of(df.schema, scan.shape)
        batch = self._checked(df, chunk, first_line, source, scan.newlines)
        # Only a schema whose columns reach the output (the chunk keeps a record) may be reused:
        # the columns of a chunk whose records are all rejected are not in the output.
        if fresh is not None and batch is not None and batch.table.num_rows:
            known = fresh
        return batch, known

    def _checked(self, df: pl.DataFrame, chunk: bytes, first_line: int, source, n_lines: int) -> Batch | None:
        """The parsed chunk as a batch, or None when polars read some line leniently."""
        lines = None
        if df.height == n_lines:
            rows = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        else:
            lines = chunk.split(b"\n")[:-1]
            nonblank = _nonblank(lines)
            if df.height != len(nonblank):
                return None
            if not nonblank:
                return Batch(pa.table({}), np.zeros(0, dtype=np.int64), [])
            rows = np.asarray(nonblank, dtype=np.int64) + first_line
        tf = source.text_field
        if tf in df.columns and df.schema[tf] == pl.String:
            # A number, boolean, array or object in the text field reads as its JSON text: check
            # the raw line of every row whose text looks like one.
            suspects = suspect_text_rows(df[tf])
            if suspects.size:
                lines = lines if lines is not None else chunk.split(b"\n")[:-1]
                for i in suspects.tolist():
                    try:
                        value = orjson.loads(lines[rows[i] - first_line]).get(tf)
                    except (orjson.JSONDecodeError, AttributeError):
                        return None
                    if value is not None and not isinstance(value, str):
                        return None
        try:
            table = df.to_arrow()
        except Exception:  # noqa: BLE001 - e.g. integers past int64: the careful path types them
            return None
        if tf in table.column_names and not is_string_type(table.schema.field(tf).type):
            return None
        return split_valid(table, rows, source)

    def _parse_carefully(self, lines: list[bytes], nonblank: list[int], first_line: int, source) -> Batch:
        good: list[bytes] = []
        objs: list[dict] = []
        good_rows: list[int] = []
        rejects: list[Reject] = []
        tf = source.text_field
        for i in nonblank:
            line = lines[i]
            row = first_line + i
            reason = None
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                reason = "invalid UTF-8"
            if reason is None:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    reason = "malformed JSON"
                else:
                    if not isinstance(obj, dict):
                        reason = "not a JSON object"
                    elif tf in obj and obj[tf] is not None and not isinstance(obj[tf], str):
                        reason = f"text field '{tf}' is not a string ({type(obj[tf]).__name__})"
            if reason is None:
                good.append(line)
                objs.append(obj)
                good_rows.append(row)
            else:
                rejects.append(Reject(row, reason, hashlib.sha256(line).digest()))
        if good:
            try:
                table = pl.read_ndjson(io.BytesIO(b"\n".join(good) + b"\n"), infer_schema_length=None).to_arrow()
            except _TYPING_ERRORS:
                table = table_from_objects(objs)
        else:
            table = pa.table({})
        batch = split_valid(table, np.asarray(good_rows, dtype=np.int64), source)
        batch.rejects = sorted(rejects + batch.rejects, key=lambda r: r.row)
        return batch


class _LongLine:
    """A line over `max_record_bytes`: streamed past, only its size and digest are kept."""

    def __init__(self, row: int, parts: list) -> None:
        self.row, self.size, self.hash = row, 0, hashlib.sha256()
        for part in parts:
            self.add(part)

    def add(self, data) -> None:
        """Count and digest more of the line."""
        self.hash.update(data)
        self.size += len(data)

    def batch(self, limits) -> Batch:
        """A batch holding only the line's rejection."""
        reject = Reject(self.row, record_too_large(self.size, limits), self.hash.digest())
        return Batch(pa.table({}), np.zeros(0, dtype=np.int64), [reject])


def _nonblank(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip()]


def table_from_objects(objs: list[dict]) -> pa.Table:
    """A table of parsed JSON objects whose columns polars cannot type as a whole.

    Columns are typed one by one; a column whose values have no common Arrow type (an integer
    here, an object there; integers past int64) holds each non-null value as JSON text, as the
    output schema does for types that conflict across batches.
    """
    names = dict.fromkeys(k for obj in objs for k in obj)
    cols: dict[str, pa.Array] = {}
    for name in names:
        values = [obj.get(name) for obj in objs]
        try:
            cols[name] = pa.array(values)
        except _TYPING_ERRORS:
            cols[name] = pa.array(
                [None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values],
                pa.large_string(),
            )
    return pa.table(cols)
