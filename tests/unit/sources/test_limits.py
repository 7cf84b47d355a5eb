"""Size limits: the decompression budget, decompression in bounded pieces, files read up to a limit,
and the sizes of columnar cells."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tracemalloc
import zlib

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from pipeline.config import LimitsConfig
from pipeline.errors import SourceError
from pipeline.sources import limits as limits_module
from pipeline.sources.limits import (BlockStream, DecompressionBudget, cell_bytes, decompressed_blocks, read_bounded,
                                     reject_oversize, sniff_codec)

MIB = 1 << 20
COMPRESS = {
    "gzip": lambda b: gzip.compress(b, 6),
    "zstd": lambda b: zstandard.ZstdCompressor(level=3).compress(b),
    "bz2": lambda b: bz2.compress(b, 9),
    "xz": lambda b: lzma.compress(b),
}


def inflate(data: bytes, codec: str, block: int = 64 * 1024, budget=None) -> list[bytes]:
    return list(decompressed_blocks(io.BytesIO(data), codec, block, budget))


def repeated(n: int, byte: bytes = b"a", chunk: int = 4 * MIB) -> bytes:
    """A gzip stream of `n` repeated bytes, compressed piecewise (n may be far larger than memory should hold)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(byte * min(chunk, n - i)) for i in range(0, n, chunk)]
    return b"".join(out) + c.flush()


def test_the_default_limits_are_the_documented_ones():
    lim = LimitsConfig()
    assert lim.max_record_bytes == 64 * MIB and lim.max_image_bytes == 256 * MIB
    assert lim.max_decompressed_bytes == 1 << 40
    assert lim.max_compression_ratio == 100 and lim.ratio_exempt_bytes == 256 * MIB


def test_a_small_file_may_inflate_up_to_the_exempt_size_and_a_large_one_up_to_the_ratio():
    lim = LimitsConfig()
    assert DecompressionBudget("f", 1000, lim).allowed == 256 * MIB
    assert DecompressionBudget("f", 10 * 1024 * MIB, lim).allowed == 100 * 10 * 1024 * MIB
    assert DecompressionBudget("f", 100 * 1024**3, lim).allowed == 1 << 40  # the absolute cap binds
    assert DecompressionBudget("f", 10, LimitsConfig(max_compression_ratio=None, max_decompressed_bytes=None)).allowed is None


def test_a_budget_names_the_file_the_limit_and_what_to_do_when_passed():
    budget = DecompressionBudget("/data/x.jsonl.gz", 1000, LimitsConfig(ratio_exempt_bytes=0, max_compression_ratio=10))
    budget.add(10_000)
    with pytest.raises(SourceError) as e:
        budget.add(1)
    msg = str(e.value)
    assert msg.startswith("/data/x.jsonl.gz: decompresses to more than 10,000 bytes")
    assert "units.limits.max_compression_ratio" in msg and "errors.on_file_error: reject" in msg
    cap = DecompressionBudget("y.zst", 1000, LimitsConfig(max_decompressed_bytes=5000))
    with pytest.raises(SourceError, match=r"y.zst: decompresses to more than 5,000 bytes \(units.limits.max_decompressed_bytes\)"):
        cap.check_total(5001)


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_every_codec_round_trips_concatenated_streams_in_pieces_of_at_most_a_block(codec):
    rng = np.random.default_rng(1)
    parts = [rng.integers(97, 123, size=n, dtype=np.uint8).tobytes() for n in (300_000, 0, 5, 200_000)]
    data = b"".join(COMPRESS[codec](p) for p in parts)
    pieces = inflate(data, codec, block=64 * 1024)
    assert b"".join(pieces) == b"".join(parts)
    # Pieces gather whole codec calls: one past the block size ends a piece (a zstd call that
    # completes a zstd block yields up to 128 KiB).
    assert max(map(len, pieces[:-1])) >= 64 * 1024
    assert max(map(len, pieces)) <= 2 * 64 * 1024 + (128 * 1024 if codec == "zstd" else 0)
    assert sniff_codec(data) == codec


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_a_stream_cut_short_yields_what_it_can_and_then_raises(codec):
    body = b"".join(b"line %d\n" % i for i in range(50_000))
    data = COMPRESS[codec](body)
    pieces: list[bytes] = []
    with pytest.raises(limits_module.DECOMPRESSION_ERRORS):
        for p in decompressed_blocks(io.BytesIO(data[: len(data) * 2 // 3]), codec, 4096):
            pieces.append(p)
    assert body.startswith(b"".join(pieces))


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_a_bomb_is_stopped_at_its_budget_in_pieces_that_stay_small(codec, monkeypatch):
    # zstd cannot cap a call's output, only its input: a smaller feed here keeps the test's memory small.
    monkeypatch.setattr(limits_module, "_ZSTD_FEED", 64)
    bomb = COMPRESS[codec](b"\0" * (48 * MIB))
    assert len(bomb) < 200_000
    budget = DecompressionBudget("bomb", len(bomb), LimitsConfig(max_compression_ratio=10, ratio_exempt_bytes=4 * MIB))
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match="decompresses to more than 4,194,304 bytes"):
            for _ in decompressed_blocks(io.BytesIO(bomb), codec, MIB, budget):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert budget.produced <= 4 * MIB + 3 * MIB
    assert peak < 16 * MIB  # a few pieces, and xz's 8 MiB dictionary


def test_block_stream_reads_any_sizes_across_block_edges():
    stream = BlockStream(iter([b"abc", b"", b"defgh", b"i"]))
    assert [stream.read(2), stream.read(4), stream.read(10), stream.read(1)] == [b"ab", b"cdef", b"ghi", b""]
    assert BlockStream(iter([b"ab", b"cd"])).read() == b"abcd"


def test_read_bounded_returns_a_small_file_and_only_the_size_and_digest_of_a_large_one(tmp_path):
    small, large = tmp_path / "s.txt", tmp_path / "l.txt"
    small.write_bytes(b"x" * 100)
    large.write_bytes(b"y" * (3 * MIB + 7))
    assert read_bounded(str(small), 100) == (b"x" * 100, None)
    assert read_bounded(str(large), MIB) == (b"", (3 * MIB + 7, hashlib.sha256(b"y" * (3 * MIB + 7)).digest()))
    assert read_bounded(str(large), MIB, digest=False) == (b"", (3 * MIB + 7, None))
    with pytest.raises(SourceError, match="gone.txt: cannot read text file"):
        read_bounded(str(tmp_path / "gone.txt"), 10, "text file")


def test_cell_sizes_come_from_the_offsets_of_every_string_and_binary_layout():
    strings = pa.chunked_array([pa.array(["ab", None, "ééé"]), pa.array(["x"])])
    assert cell_bytes(strings).tolist() == [2, 0, 6, 1]
    assert cell_bytes(pa.chunked_array([pa.array([b"\0" * 5], pa.large_binary())])).tolist() == [5]
    dictionary = pa.chunked_array([pa.array(["long" * 10, "s", "long" * 10]).dictionary_encode()])
    assert cell_bytes(dictionary).tolist() == [40, 1, 40]
    image = pa.chunked_array([pa.array([{"bytes": b"123", "path": "a"}, None])])
    assert cell_bytes(image).tolist() == [3, 0]
    assert cell_bytes(pa.chunked_array([pa.array([1, 2])])) is None


def test_rows_over_the_limits_are_taken_out_with_their_size_as_the_reason():
    table = pa.table({"text": ["a" * 10, "b" * 3000, "c" * 900], "meta": ["m" * 200, "", "m" * 200],
                      "image": [b"1", b"2", b"3" * 5000], "n": [1, 2, 3]})
    lim = LimitsConfig(max_record_bytes=1000, max_image_bytes=4096)
    kept, rows, rejects = reject_oversize(table, np.array([7, 8, 9]), lim, image_column="image")
    assert rows.tolist() == [7] and kept["n"].to_pylist() == [1]
    assert [(r.row, r.reason, r.raw_sha256) for r in rejects] == [
        (8, "record of 3,000 bytes exceeds units.limits.max_record_bytes (1,000)", None),
        (9, "record of 1,100 bytes exceeds units.limits.max_record_bytes (1,000)", None),
    ]
    _, _, rejects = reject_oversize(table.slice(2), np.array([9]), LimitsConfig(max_image_bytes=4096), "image")
    assert [r.reason for r in rejects] == ["image of 5,000 bytes exceeds units.limits.max_image_bytes (4,096)"]
