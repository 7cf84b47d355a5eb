"""JSON Lines reader: plain files split into byte ranges, `.gz` and `.zst` streamed whole."""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from typing import Iterator

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import zstandard

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit
from pipeline.sources.validate import is_string_type, split_valid

_COMPRESSED = (".gz", ".zst")
_BOM = b"\xef\xbb\xbf"
# A \uD800-\uDFFF escape: polars turns a lone surrogate into U+0000 instead of failing, so any
# chunk holding one is parsed line by line, where orjson rejects lone surrogates as malformed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]")
# What polars and Arrow raise for JSON they cannot type (conflicting types, integers past int64).
_TYPING_ERRORS = (pl.exceptions.PolarsError, pa.ArrowException, OverflowError)


def _is_compressed(path: str) -> bool:
    return path.endswith(_COMPRESSED)


def _gzip_blocks(raw, block: int) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream, yielding everything decodable before any damage."""
    d = zlib.decompressobj(wbits=31)
    while True:
        chunk = raw.read(block)
        if not chunk:
            if not d.eof:
                raise EOFError("compressed stream ended before its end-of-stream marker")
            return
        while chunk:
            out = d.decompress(chunk)
            if out:
                yield out
            if d.eof:
                chunk = d.unused_data
                if chunk:
                    d = zlib.decompressobj(wbits=31)
            else:
                chunk = b""


def _zstd_blocks(raw, block: int) -> Iterator[bytes]:
    """Decompress concatenated zstd frames, yielding everything decodable before any damage.

    `stream_reader` reports a file cut inside a frame as a clean end of stream, which would drop
    the rest of the file without a word; following each frame to its end catches the truncation.
    """
    dctx = zstandard.ZstdDecompressor()
    d = None
    while True:
        chunk = raw.read(block)
        if not chunk:
            if d is not None:
                raise zstandard.ZstdError("compressed stream ended inside a zstd frame")
            return
        while chunk:
            if d is None:
                d = dctx.decompressobj()
            out = d.decompress(chunk)
            if out:
                yield out
            if d.eof:
                chunk, d = d.unused_data, None
            else:
                chunk = b""


def read_blocks(path: str, start: int, stop: int, block: int) -> Iterator[bytes]:
    """Yield the bytes of `path` (decompressed for .gz/.zst; the byte range [start, stop) if plain)."""
    with open(path, "rb") as raw:
        if path.endswith(".gz"):
            yield from _gzip_blocks(raw, min(block, 1 << 20))
        elif path.endswith(".zst"):
            yield from _zstd_blocks(raw, min(block, 1 << 20))
        else:
            raw.seek(start)
            left = stop - start
            while left > 0:
                data = raw.read(min(block, left))
                if not data:
                    return
                left -= len(data)
                yield data


def _count_newlines(path: str, start: int, stop: int, chunk: int = 16 * 1024 * 1024) -> int:
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            block = f.read(min(chunk, left))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


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
    suffixes = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz", ".jsonl.zst", ".ndjson.zst", ".json.zst")

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "") -> list[Unit]:
        out: list[Unit] = []
        for f in inputs:
            if _is_compressed(f.path) or f.bytes <= units.target_bytes:
                out.append(self._unit(source, f, 0, 0, -1 if _is_compressed(f.path) else f.bytes, 0))
                continue
            cuts = [0]
            with open(f.path, "rb") as fh:
                while cuts[-1] < f.bytes:
                    nxt = _next_line_start(fh, cuts[-1] + units.target_bytes, f.bytes)
                    cuts.append(nxt)
            row_offset = 0
            for part, (a, b) in enumerate(zip(cuts, cuts[1:])):
                out.append(self._unit(source, f, part, a, b, row_offset))
                row_offset += _count_newlines(f.path, a, b)
        return out

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        text_pattern = re.compile(rb'"' + re.escape(source.text_field.encode()) + rb'"\s*:\s*[^"\sn]')
        line_no = unit.row_offset
        carry = b""
        at_file_start = unit.start == 0
        try:
            for block in read_blocks(unit.path, unit.start, unit.stop, units.batch_bytes):
                data = carry + block if carry else block
                if at_file_start:
                    if len(data) < len(_BOM) and _BOM.startswith(data):
                        carry = data
                        continue
                    # A byte order mark is encoding metadata, not part of the first record.
                    data = data[len(_BOM) :] if data.startswith(_BOM) else data
                    at_file_start = False
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                chunk, carry = data[: cut + 1], data[cut + 1 :]
                yield self._parse(chunk, line_no, source, text_pattern)
                line_no += chunk.count(b"\n")
            if carry:
                yield self._parse(carry + b"\n", line_no, source, text_pattern)
        except (EOFError, OSError, zlib.error, zstandard.ZstdError) as e:
            raise SourceError(
                f"{unit.path}: cannot read past line {line_no} ({e.__class__.__name__}: the file is truncated or corrupt)"
            ) from e

    def _parse(self, chunk: bytes, first_line: int, source, text_pattern: re.Pattern) -> Batch:
        lines = chunk.split(b"\n")[:-1]
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        rows = np.asarray(nonblank, dtype=np.int64) + first_line
        if not nonblank:
            return Batch(pa.table({}), rows, [])
        if text_pattern.search(chunk) is None and _SURROGATE_ESCAPE.search(chunk) is None:
            try:
                df = pl.read_ndjson(io.BytesIO(chunk), infer_schema_length=None)
                table = df.to_arrow() if df.height == len(nonblank) else None
            except Exception:  # noqa: BLE001 - any polars parse failure means "take the careful path"
                table = None
            if table is not None:
                tf = source.text_field
                if tf not in table.column_names or is_string_type(table.schema.field(tf).type):
                    return split_valid(table, rows, source)
        return self._parse_carefully(lines, nonblank, first_line, source)

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
