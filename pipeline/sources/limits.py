"""Size limits on inputs (`units.limits`): the decompressed-bytes budget of a file, decompression in
bounded pieces, and the reasons readers give for a record too large to read.

A record over `max_record_bytes` (an image over `max_image_bytes`) is never held whole: readers
stream past it, or skip it by a size they know beforehand, and reject it with its size. A
compressed input that inflates past its budget raises a SourceError naming the file and the limit,
which `errors.on_file_error` turns into a failed run or one rejected record for the rest of the file.

Usage::

    budget = DecompressionBudget.for_file(path, units.limits)
    with open(path, "rb") as raw:
        for block in decompressed_blocks(raw, codec_for_name(path), 1 << 20, budget):
            ...
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import os
import zlib
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from pipeline.errors import SourceError
from pipeline.sources.base import Reject

# What a damaged or truncated compressed stream raises, by codec (bz2 raises OSError).
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)

# zstd cannot be asked for at most n bytes of output, so it is fed 1 KiB at a time: a zstd block
# inflates at most about 32,768 times (a 4-byte RLE block regenerates 128 KiB), so one call yields at
# most about 32 MiB whatever the input (4 KiB feeds let a 1 GiB-line bomb add 500 MB of peak memory).
# Measured on 200 MB of JSON Lines: the same CPU time as 1 MiB feeds, within the noise.
_ZSTD_FEED = 1024

# xz's dictionary size comes from the file's header; xz -9 needs about 65 MiB to decode.
_XZ_MEMLIMIT = 512 * 1024 * 1024

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_SUFFIXES = ((".gz", "gzip"), (".tgz", "gzip"), (".zst", "zstd"), (".bz2", "bz2"), (".xz", "xz"))


def too_large(what: str, size: int, knob: str, limit: int, at_least: bool = False) -> str:
    """The rejection reason of a record (a line, a file, a member, a cell) over a size limit."""
    return f"{what} of {size:,}{'+' if at_least else ''} bytes exceeds units.limits.{knob} ({limit:,})"


def record_too_large(size: int, limits, what: str = "record", at_least: bool = False) -> str:
    """The rejection reason of a text record over `max_record_bytes`."""
    return too_large(what, size, "max_record_bytes", limits.max_record_bytes, at_least)


def image_too_large(size: int, limits, what: str = "image", at_least: bool = False) -> str:
    """The rejection reason of an image over `max_image_bytes`."""
    return too_large(what, size, "max_image_bytes", limits.max_image_bytes, at_least)


def read_bounded(path: str, limit: int, what: str = "file", digest: bool = True) -> tuple[bytes, tuple[int, bytes | None] | None]:
    """(the bytes of a file, None), or (b"", (its size, its sha256 or None)) when it holds more than
    `limit` bytes. A file larger than the limit on disk is never read into memory: it is digested
    1 MiB at a time, or with `digest=False` not read at all."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = b""
            if size <= limit:
                # Sized from the file, so a small file costs no buffer of `limit` bytes; read on if it grew.
                head = f.read(size + 1)
                if len(head) == size + 1 <= limit:
                    head += f.read(limit + 1 - len(head))
                if len(head) <= limit:
                    return head, None
            if not digest:
                return b"", (max(size, len(head)), None)
            h, n = hashlib.sha256(head), len(head)
            del head
            while piece := f.read(1 << 20):
                h.update(piece)
                n += len(piece)
            return b"", (n, h.digest())
    except OSError as e:
        raise SourceError(f"{path}: cannot read {what} ({e.strerror})") from e


class DecompressionBudget:
    """The decompressed bytes one compressed input may produce: at most `max_decompressed_bytes`, and
    at most `max_compression_ratio` times its size on disk once past `ratio_exempt_bytes`."""

    def __init__(self, path: str, compressed_bytes: int, limits) -> None:
        self.path, self.compressed, self.limits = path, compressed_bytes, limits
        self.produced = 0
        caps: list[tuple[int, str]] = []
        if limits.max_decompressed_bytes is not None:
            caps.append((limits.max_decompressed_bytes, "max_decompressed_bytes"))
        if limits.max_compression_ratio is not None:
            by_ratio = int(limits.max_compression_ratio * compressed_bytes)
            caps.append((max(limits.ratio_exempt_bytes, by_ratio), "max_compression_ratio"))
        self.allowed, self.knob = min(caps) if caps else (None, None)

    @classmethod
    def for_file(cls, path: str, limits) -> "DecompressionBudget":
        """The budget of a file, from its size on disk."""
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise SourceError(f"{path}: cannot read input file ({e.strerror})") from e
        return cls(path, size, limits)

    def add(self, n: int) -> None:
        """Count `n` more decompressed bytes; a SourceError once past the allowance."""
        self.produced += n
        if self.allowed is not None and self.produced > self.allowed:
            raise self.exceeded()

    def check_total(self, total: int) -> None:
        """Like `add`, for a total known in advance (a Parquet file's metadata)."""
        if self.allowed is not None and total > self.allowed:
            self.produced = total
            raise self.exceeded()

    def exceeded(self) -> SourceError:
        """The error of a file past its allowance: the file, the limit, and what to do."""
        if self.knob == "max_compression_ratio":
            why = (f"over {self.limits.max_compression_ratio:g} times its {self.compressed:,} bytes on disk, "
                   "units.limits.max_compression_ratio")
        else:
            why = "units.limits.max_decompressed_bytes"
        return SourceError(
            f"{self.path}: decompresses to more than {self.allowed:,} bytes ({why}), like a decompression "
            f"bomb; if the file is genuine raise units.limits.{self.knob} (null: no limit), else remove it "
            "(with errors.on_file_error: reject the records before this point are kept)"
        )


def codec_for_name(path: str) -> str | None:
    """The codec a file's name says it has (`.gz`, `.tgz`, `.zst`, `.bz2`, `.xz`), or None."""
    for suffix, codec in _SUFFIXES:
        if path.endswith(suffix):
            return codec
    return None


def sniff_codec(head: bytes) -> str | None:
    """The codec of a stream whose first bytes are `head` (gzip, zstd, bz2, xz), or None."""
    for magic, codec in _MAGIC:
        if head.startswith(magic):
            return codec
    return None


def decompressed_blocks(raw, codec: str, block: int, budget: DecompressionBudget | None = None) -> Iterator[bytes]:
    """The decompressed bytes of `raw` (a binary file) in pieces of about `block` bytes (at most
    twice that; no codec call returns more than min(`block`, 1 MiB), but for zstd, see `_ZSTD_FEED`).

    Concatenated members or frames are read on; everything decodable before damage is yielded
    before the codec's error, and a stream cut short raises EOFError. With a budget, the output
    is counted as it comes and a SourceError raised once past the allowance, after what came before.
    """
    step = min(block, 1 << 20)
    calls = _zstd_pieces(raw) if codec == "zstd" else _stdlib_pieces(raw, codec, step)
    out: list[bytes] = []
    size = 0
    try:
        for piece in calls:
            if budget is not None:
                budget.add(len(piece))
            out.append(piece)
            size += len(piece)
            if size >= block:
                yield b"".join(out)
                out, size = [], 0
    except (SourceError, *DECOMPRESSION_ERRORS):
        if out:
            yield b"".join(out)
        raise
    if out:
        yield b"".join(out)


def _stdlib_pieces(raw, codec: str, step: int) -> Iterator[bytes]:
    """gzip, bz2 and xz through the standard library, each call asked for at most `step` bytes.

    Input is read 64 KiB at a time: zlib copies the input a call leaves over (`unconsumed_tail`)
    on every call, which for a large read and a high ratio would copy it again and again."""
    make: Callable = {"gzip": lambda: zlib.decompressobj(wbits=31), "bz2": bz2.BZ2Decompressor,
                      "xz": lambda: lzma.LZMADecompressor(memlimit=_XZ_MEMLIMIT)}[codec]
    is_zlib = codec == "gzip"
    d = None
    while True:
        data = raw.read(64 * 1024)
        if not data:
            if d is not None:
                raise EOFError("compressed stream ended before its end-of-stream marker")
            return
        while data or d is not None:
            if d is None:
                d = make()
            out = d.decompress(data, step)
            if out:
                yield out
            if d.eof:
                data, d = d.unused_data, None
                if not data:
                    break
                continue
            if is_zlib:
                data = d.unconsumed_tail
                if not data and len(out) < step:  # all input taken and no output held back
                    break
            else:
                data = b""
                if d.needs_input:
                    break


def _zstd_pieces(raw) -> Iterator[bytes]:
    """Concatenated zstd frames, fed `_ZSTD_FEED` bytes at a time. Each frame is followed to its end,
    so a file cut inside one is caught (`stream_reader` reports that as a clean end of stream and
    would drop the rest unseen)."""
    dctx = zstandard.ZstdDecompressor()
    d = None
    while True:
        data = raw.read(1 << 20)
        if not data:
            if d is not None:
                raise zstandard.ZstdError("compressed stream ended inside a zstd frame")
            return
        view, pos = memoryview(data), 0
        while pos < len(view):
            if d is None:
                d = dctx.decompressobj()
            feed = view[pos : pos + _ZSTD_FEED]
            pos += len(feed)
            got = d.decompress(feed)
            if got:
                yield got
            if d.eof:
                pos -= len(d.unused_data)  # the next frame starts in what this feed left over
                d = None


class BlockStream(io.RawIOBase):
    """A read-only binary file over an iterator of byte blocks (for `tarfile`'s streaming mode)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        super().__init__()
        self._blocks = blocks
        self._buf = b""
        self._at = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative); b"" at the end."""
        if size is None or size < 0:
            rest = [self._buf[self._at :], *self._blocks]
            self._buf, self._at = b"", 0
            return b"".join(rest)
        while len(self._buf) - self._at < size:
            nxt = next(self._blocks, None)
            if nxt is None:
                break
            self._buf, self._at = self._buf[self._at :] + nxt, 0
        out = self._buf[self._at : self._at + size]
        self._at += len(out)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _var_length(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def cell_bytes(col: pa.ChunkedArray) -> np.ndarray | None:
    """The byte length of each cell of a string or binary column (dictionary-encoded too; the bytes of
    an HF `Image` struct), read from Arrow's offsets: no value is copied. None for other types."""
    t = col.type
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        col, t = pc.struct_field(col, "bytes"), t.field("bytes").type
    if pa.types.is_dictionary(t) and _var_length(t.value_type):
        parts = [pc.take(pc.binary_length(c.dictionary), c.indices).cast(pa.int64()) for c in col.chunks]
        lengths = pa.chunked_array(parts, pa.int64()) if parts else pa.chunked_array([], pa.int64())
    elif _var_length(t):
        lengths = pc.binary_length(col)
    else:
        return None
    return pc.fill_null(lengths, 0).to_numpy().astype(np.int64, copy=False)


def reject_oversize(table: pa.Table, rows: np.ndarray, limits, image_column: str | None = None):
    """(table, rows, rejects): the rows whose string and binary cells together hold more than
    `max_record_bytes` (an image cell more than `max_image_bytes`) taken out, each a Reject with its size.

    A record of a columnar input is one row; its cells were decompressed to be read, but the
    rejected ones go no further (no copy, no digest)."""
    n = table.num_rows
    if n == 0:
        return table, rows, []
    sizes = np.zeros(n, dtype=np.int64)
    for name in table.column_names:
        if name != image_column and (lengths := cell_bytes(table[name])) is not None:
            sizes += lengths
    reasons = {int(i): record_too_large(int(sizes[i]), limits) for i in np.flatnonzero(sizes > limits.max_record_bytes)}
    if image_column is not None and image_column in table.column_names:
        images = cell_bytes(table[image_column])
        if images is not None:
            for i in np.flatnonzero(images > limits.max_image_bytes).tolist():
                reasons.setdefault(i, image_too_large(int(images[i]), limits))
    if not reasons:
        return table, rows, []
    keep = np.ones(n, dtype=bool)
    keep[list(reasons)] = False
    rejects = [Reject(int(rows[i]), reasons[i]) for i in sorted(reasons)]
    return table.filter(pa.array(keep)), rows[keep], rejects
