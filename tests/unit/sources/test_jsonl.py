"""JsonlReader: line accounting, rejections, compression and byte-range units."""

from __future__ import annotations

import gzip
import json
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import JsonlSourceConfig, UnitConfig
from pipeline.errors import SourceError
from pipeline.sources import reader_for
from pipeline.sources.jsonl import JsonlReader

from tests.unit.sources.support import plan_source, read_source, read_units, sha256

WHOLE = UnitConfig(target_bytes=1 << 30)


def jsonl(tmp_path: Path, lines: list[bytes] | bytes, name: str = "data.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(lines if isinstance(lines, bytes) else b"".join(line + b"\n" for line in lines))
    return p


def source(*paths: Path, **kw) -> JsonlSourceConfig:
    return JsonlSourceConfig(kind="jsonl", name="s", paths=tuple(str(p) for p in paths), **kw)


def record(text: str, **fields) -> bytes:
    return json.dumps({"text": text, **fields}).encode()


def test_each_object_line_becomes_one_record_with_all_its_fields(tmp_path):
    p = jsonl(tmp_path, [record("alpha", lang="en", score=1.5), record("beta", lang="fr", score=2.0)])

    result = read_source(source(p))

    assert result.records == [
        {"text": "alpha", "lang": "en", "score": 1.5},
        {"text": "beta", "lang": "fr", "score": 2.0},
    ]
    assert result.rows == [0, 1]
    assert result.rejects == []


def test_the_reader_is_registered_under_its_kind():
    assert isinstance(reader_for("jsonl"), JsonlReader)


def test_blank_lines_are_not_records_but_still_count_for_line_numbers(tmp_path):
    p = jsonl(tmp_path, [b"", record("one"), b"", b"   \t", record("two"), b""])

    result = read_source(source(p))

    assert result.texts() == ["one", "two"]
    assert result.rows == [1, 4]
    assert result.rejects == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"text": "unterminated', "malformed JSON"),
        (b"{'text': 'single quotes'}", "malformed JSON"),
        (b'{"text": "a"} trailing', "malformed JSON"),
        (b'{"text": "caf\xe9"}', "invalid UTF-8"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"text": 5}', "text field 'text' is not a string (int)"),
        (b'{"text": true}', "text field 'text' is not a string (bool)"),
        (b'{"text": ["a", "b"]}', "text field 'text' is not a string (list)"),
        (b'{"text": {"a": 1}}', "text field 'text' is not a string (dict)"),
        (b'{"body": "no text field"}', "text field 'text' is missing or null"),
        (b'{"text": null}', "text field 'text' is missing or null"),
        (b'{"text": ""}', "empty or whitespace-only text"),
        (b'{"text": "  \\n\\t "}', "empty or whitespace-only text"),
    ],
)
def test_a_bad_line_becomes_a_reject_with_its_reason_and_line_number(tmp_path, line, reason):
    p = jsonl(tmp_path, [record("before"), b"", line, record("after")])

    result = read_source(source(p))

    assert result.texts() == ["before", "after"]
    assert result.rows == [0, 3]
    assert result.reasons() == {2: reason}


@pytest.mark.parametrize(
    "line",
    [b'{"text": 5}', b'{"text": "a\xff"}', b"[1]", b"{broken"],
)
def test_a_line_rejected_while_parsing_carries_the_digest_of_its_raw_bytes(tmp_path, line):
    p = jsonl(tmp_path, [line])

    (reject,) = read_source(source(p)).rejects

    assert reject.raw_sha256 == sha256(line)
    assert reject.relpath is None


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"text": null}'],
        [b'{"text": null}', b'{"text": null}'],
        [b'{"text": null}', b'{"text": 5}'],
        [b'{"text": null}', b'{"text": "ok"}'],
    ],
)
def test_a_null_text_has_the_same_reason_whatever_else_is_in_the_batch(tmp_path, lines):
    p = jsonl(tmp_path, lines)

    result = read_source(source(p))

    assert result.reasons()[0] == "text field 'text' is missing or null"


def test_a_file_of_only_bad_lines_yields_only_rejects(tmp_path):
    p = jsonl(tmp_path, [b"{", b"[]", b'{"text": ""}'])

    result = read_source(source(p))

    assert result.records == []
    assert sorted(result.reasons()) == [0, 1, 2]


def test_an_empty_file_yields_nothing(tmp_path):
    p = jsonl(tmp_path, b"")

    result = read_source(source(p))

    assert (result.records, result.rejects) == ([], [])
    assert len(result.units) == 1


def test_a_last_line_without_a_trailing_newline_is_read(tmp_path):
    p = jsonl(tmp_path, record("first") + b"\n\n" + record("last"))

    result = read_source(source(p))

    assert result.texts() == ["first", "last"]
    assert result.rows == [0, 2]


def test_windows_line_endings_are_accepted(tmp_path):
    p = jsonl(tmp_path, record("one") + b"\r\n\r\n" + record("two") + b"\r\n")

    result = read_source(source(p))

    assert result.texts() == ["one", "two"]
    assert result.rows == [0, 2]


def test_a_utf8_byte_order_mark_at_the_start_of_the_file_is_not_part_of_the_first_record(tmp_path):
    p = jsonl(tmp_path, b"\xef\xbb\xbf" + record("first") + b"\n" + record("second") + b"\n")

    result = read_source(source(p))

    assert result.texts() == ["first", "second"]
    assert result.rows == [0, 1]


def test_a_line_longer_than_batch_bytes_is_read_whole(tmp_path):
    long_text = "x" * 5000
    p = jsonl(tmp_path, [record("short"), record(long_text), record("tail")])

    result = read_source(source(p), UnitConfig(batch_bytes=1024))

    assert result.texts() == ["short", long_text, "tail"]
    assert result.rows == [0, 1, 2]


def test_line_numbers_stay_right_across_many_small_batches(tmp_path):
    lines = [record(f"doc {i}") if i % 7 else b"" for i in range(400)]
    p = jsonl(tmp_path, lines)

    result = read_source(source(p), UnitConfig(batch_bytes=1024))

    assert result.rows == [i for i in range(400) if i % 7]
    assert result.texts() == [f"doc {i}" for i in range(400) if i % 7]


def test_columns_appearing_only_after_line_100_are_kept(tmp_path):
    lines = [record(f"doc {i}") for i in range(150)] + [record("late", late_field="here", late_number=7)]
    p = jsonl(tmp_path, lines)

    result = read_source(source(p))

    assert result.records[-1] == {"text": "late", "late_field": "here", "late_number": 7}
    assert all(r["late_field"] is None for r in result.records[:-1])


def test_a_column_with_conflicting_types_does_not_stop_the_reader(tmp_path):
    p = jsonl(tmp_path, [record("a", meta=1), record("b", meta={"k": [1, 2]}), record("c", meta=None)])

    result = read_source(source(p))

    assert result.texts() == ["a", "b", "c"]
    assert result.rejects == []
    assert [json.loads(r["meta"]) if r["meta"] is not None else None for r in result.records] == [1, {"k": [1, 2]}, None]


def test_a_column_with_conflicting_types_next_to_a_bad_line_does_not_stop_the_reader(tmp_path):
    p = jsonl(tmp_path, [record("a", meta=True), b'{"text": 5}', record("b", meta=2)])

    result = read_source(source(p))

    assert result.texts() == ["a", "b"]
    assert result.reasons() == {1: "text field 'text' is not a string (int)"}


@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
def test_an_integer_beyond_the_int64_range_is_kept_exactly(tmp_path, value):
    big = b'{"text": "big", "n": %d}' % value
    p = jsonl(tmp_path, [record("small", n=1), big, record("after", n=2)])

    result = read_source(source(p))

    assert result.rejects == []
    assert result.texts() == ["small", "big", "after"]
    assert [int(r["n"]) for r in result.records] == [1, value, 2]


def test_an_integer_beyond_the_uint64_range_does_not_stop_the_reader(tmp_path):
    # orjson reads integers past 64 bits as floats: the record is kept, the value approximated.
    p = jsonl(tmp_path, [record("small", n=1), b'{"text": "huge", "n": %d}' % 10**30])

    result = read_source(source(p))

    assert result.rejects == []
    assert result.texts() == ["small", "huge"]
    assert float(result.records[1]["n"]) == pytest.approx(1e30)


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udc00", rb"a\ud83d b"])
def test_a_lone_surrogate_escape_is_rejected_rather_than_corrupted(tmp_path, escape):
    p = jsonl(tmp_path, [record("fine"), b'{"text": "' + escape + b'"}'])

    result = read_source(source(p))

    assert result.texts() == ["fine"]
    assert result.reasons() == {1: "malformed JSON"}


def test_a_valid_surrogate_pair_escape_is_decoded(tmp_path):
    p = jsonl(tmp_path, [rb'{"text": "smile \ud83d\ude00"}'])

    assert read_source(source(p)).texts() == ["smile \U0001f600"]


def test_a_text_field_name_other_than_text_is_honoured(tmp_path):
    p = jsonl(tmp_path, [b'{"content": "yes", "text": 5}', b'{"content": 7}'])

    result = read_source(source(p, text_field="content"))

    assert result.texts("content") == ["yes"]
    assert result.reasons() == {1: "text field 'content' is not a string (int)"}


def test_integer_ids_become_strings(tmp_path):
    p = jsonl(tmp_path, [record("a", id=1), record("b", id=20)])

    result = read_source(source(p, id_field="id"))

    assert [r["id"] for r in result.records] == ["1", "20"]


def test_a_record_without_an_id_is_rejected(tmp_path):
    p = jsonl(tmp_path, [record("a", id="x1"), record("b"), record("c", id=None)])

    result = read_source(source(p, id_field="id"))

    assert [r["id"] for r in result.records] == ["x1"]
    assert result.reasons() == {1: "id field 'id' is missing or null", 2: "id field 'id' is missing or null"}


def test_a_batch_without_any_id_rejects_every_record(tmp_path):
    p = jsonl(tmp_path, [record("a"), record("b")])

    result = read_source(source(p, id_field="id"))

    assert result.records == []
    assert set(result.reasons().values()) == {"missing id field 'id'"}


def test_ids_mixing_integers_and_strings_all_become_strings(tmp_path):
    p = jsonl(tmp_path, [record("a", id=1), record("b", id="two"), b'{"text": 3, "id": 4}'])

    result = read_source(source(p, id_field="id"))

    assert [r["id"] for r in result.records] == ["1", "two"]


# Compression


def gzip_members(data: bytes) -> bytes:
    half = data.index(b"\n", len(data) // 2) + 1
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def zstd_frames(data: bytes) -> bytes:
    half = data.index(b"\n", len(data) // 2) + 1
    c = zstandard.ZstdCompressor()
    return c.compress(data[:half]) + c.compress(data[half:])


def zstd_streamed(data: bytes) -> bytes:
    obj = zstandard.ZstdCompressor().compressobj()
    return obj.compress(data) + obj.flush()


SAMPLE = b"".join(
    (record(f"doc {i} " + "w" * (i % 50)) if i % 11 else b"{not json") + b"\n" + (b"\n" if i % 13 == 0 else b"")
    for i in range(300)
)


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".jsonl.gz", gzip.compress),
        (".jsonl.gz", gzip_members),
        (".jsonl.zst", zstandard.ZstdCompressor().compress),
        (".jsonl.zst", zstd_frames),
        (".jsonl.zst", zstd_streamed),
        (".ndjson.gz", gzip.compress),
        (".json.zst", zstandard.ZstdCompressor().compress),
    ],
)
def test_compressed_files_read_the_same_as_plain(tmp_path, suffix, compress):
    plain = jsonl(tmp_path, SAMPLE, "plain.jsonl")
    packed = jsonl(tmp_path, compress(SAMPLE), "packed" + suffix)
    units = UnitConfig(target_bytes=1024, batch_bytes=1024)

    expected = read_source(source(plain), WHOLE)
    got = read_source(source(packed), units)

    assert len(got.units) == 1
    assert (got.records, got.rows) == (expected.records, expected.rows)
    assert [(r.row, r.reason, r.raw_sha256) for r in got.rejects] == [
        (r.row, r.reason, r.raw_sha256) for r in expected.rejects
    ]


def test_a_compressed_file_is_one_unit_whatever_its_size(tmp_path):
    p = jsonl(tmp_path, gzip.compress(SAMPLE), "big.jsonl.gz")

    (unit,) = plan_source(source(p), UnitConfig(target_bytes=1024))

    assert (unit.start, unit.stop, unit.row_offset) == (0, -1, 0)


def test_a_truncated_gzip_file_raises_a_source_error_naming_the_file_after_earlier_records(tmp_path):
    data = b"".join(record(f"doc {i} " + "z" * 60) + b"\n" for i in range(3000))
    p = jsonl(tmp_path, gzip.compress(data)[:-100], "cut.jsonl.gz")
    src = source(p)
    (unit,) = plan_source(src)
    batches = reader_for("jsonl").read(unit, src, UnitConfig(batch_bytes=4096))

    first = next(batches)
    with pytest.raises(SourceError, match="cut.jsonl.gz") as err:
        list(batches)

    assert first.rows.tolist()[0] == 0
    assert first.table.num_rows > 0
    assert "truncated or corrupt" in str(err.value)


@pytest.mark.parametrize("compress", [zstandard.ZstdCompressor().compress, zstd_streamed, zstd_frames])
def test_a_truncated_zstd_file_raises_a_source_error_naming_the_file(tmp_path, compress):
    data = b"".join(record(f"doc {i} " + "z" * 60) + b"\n" for i in range(3000))
    p = jsonl(tmp_path, compress(data)[:-100], "cut.jsonl.zst")

    with pytest.raises(SourceError, match="cut.jsonl.zst"):
        read_source(source(p), UnitConfig(batch_bytes=4096))


@pytest.mark.parametrize("name", ["junk.jsonl.gz", "junk.jsonl.zst"])
def test_a_file_that_is_not_really_compressed_raises_a_source_error(tmp_path, name):
    p = jsonl(tmp_path, [record("plain text in disguise")], name)

    with pytest.raises(SourceError, match=name):
        read_source(source(p))


# Byte-range units


def test_a_plain_file_larger_than_target_bytes_is_split_on_line_boundaries(tmp_path):
    lines = [record(f"doc {i:04d} " + "p" * 90) for i in range(100)]
    p = jsonl(tmp_path, lines)
    data = p.read_bytes()

    planned = plan_source(source(p), UnitConfig(target_bytes=1024))

    assert len(planned) > 5
    assert planned[0].start == 0 and planned[-1].stop == len(data)
    for a, b in zip(planned, planned[1:]):
        assert a.stop == b.start
        assert data[a.stop - 1 : a.stop] == b"\n"
    for u in planned:
        assert u.row_offset == data[: u.start].count(b"\n")
        assert u.relpath == "data.jsonl" and u.path == str(p.resolve())
    assert [u.part for u in planned] == list(range(len(planned)))


def test_a_file_no_larger_than_target_bytes_is_one_unit(tmp_path):
    p = jsonl(tmp_path, b"x" * 1023 + b"\n")

    (unit,) = plan_source(source(p), UnitConfig(target_bytes=1024))

    assert (unit.start, unit.stop, unit.row_offset) == (0, 1024, 0)


def test_reading_a_split_file_gives_the_same_rows_as_reading_it_whole(tmp_path):
    lines = [record(f"doc {i}" + "q" * (i * 37 % 300)) if i % 9 else b"" for i in range(200)]
    p = jsonl(tmp_path, lines + [b"{bad"])

    whole = read_source(source(p), WHOLE)
    split = read_source(source(p), UnitConfig(target_bytes=1024, batch_bytes=1024))

    assert len(split.units) > 10
    assert (split.records, split.rows) == (whole.records, whole.rows)
    assert [(r.row, r.reason) for r in split.rejects] == [(r.row, r.reason) for r in whole.rejects] == [(200, "malformed JSON")]


line_strategy = st.one_of(
    st.just(b""),
    st.just(b"{broken"),
    st.integers(min_value=0, max_value=700).map(lambda n: record("t" * n)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_strategy, min_size=0, max_size=40),
    trailing_newline=st.booleans(),
    target_bytes=st.integers(min_value=1024, max_value=4096),
    batch_bytes=st.integers(min_value=1024, max_value=3000),
)
def test_splitting_a_file_into_units_never_changes_its_rows(lines, trailing_newline, target_bytes, batch_bytes):
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        p = jsonl(Path(tmp), data)
        whole = read_source(source(p), WHOLE)
        split = read_source(source(p), UnitConfig(target_bytes=target_bytes, batch_bytes=batch_bytes))

    assert split.units[0].start == 0
    assert all(a.stop == b.start for a, b in zip(split.units, split.units[1:]))
    assert all(u.row_offset == data[: u.start].count(b"\n") for u in split.units)
    assert (split.records, split.rows) == (whole.records, whole.rows)
    assert [(r.row, r.reason) for r in split.rejects] == [(r.row, r.reason) for r in whole.rejects]
    expected_rows = [i for i, line in enumerate(lines) if line.strip() and line != b"{broken" and line != record("")]
    assert whole.rows == expected_rows


def test_a_single_unit_can_be_read_on_its_own(tmp_path):
    lines = [record(f"doc {i} " + "r" * 200) for i in range(40)]
    p = jsonl(tmp_path, lines)
    src = source(p)
    units = UnitConfig(target_bytes=2048)
    planned = plan_source(src, units)

    third = read_units(src, [planned[2]], units)

    first_row = planned[2].row_offset
    assert third.rows[0] == first_row
    assert third.texts()[0] == f"doc {first_row} " + "r" * 200


# Listing and describing


def test_a_directory_lists_plain_and_compressed_json_lines_files_only(tmp_path):
    for name in ["a.jsonl", "b.ndjson", "c.json", "d.jsonl.gz", "e.jsonl.zst", "notes.txt", "f.parquet", "sub/g.jsonl"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")

    listed = JsonlReader().list_inputs(source(tmp_path))

    assert [rel for _, rel in listed] == ["a.jsonl", "b.ndjson", "c.json", "d.jsonl.gz", "e.jsonl.zst", "sub/g.jsonl"]


def test_describe_reports_the_size_and_sha256_of_the_file(tmp_path):
    p = jsonl(tmp_path, [record("x")])
    src = source(p)

    f = JsonlReader().describe(src, str(p), "data.jsonl")

    assert (f.source, f.path, f.relpath) == ("s", str(p), "data.jsonl")
    assert f.bytes == p.stat().st_size
    assert bytes.fromhex(f.sha256) == sha256(p.read_bytes())
    assert f.mtime_ns == p.stat().st_mtime_ns


def test_describing_a_missing_file_raises_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="gone.jsonl"):
        JsonlReader().describe(source(tmp_path), str(tmp_path / "gone.jsonl"), "gone.jsonl")


def test_unit_row_offsets_from_the_hashing_read_match_a_fresh_count(tmp_path):
    import random

    from pipeline.fileio import sha256_path
    from pipeline.sources import jsonl as jsonl_module

    rng = random.Random(7)
    lines = [record("x" * rng.randrange(0, 3000), n=i) for i in range(4000)]  # about 6 MiB, lines cross block edges
    p = jsonl(tmp_path, lines)
    src = source(p)
    units = UnitConfig(target_bytes=700_000)
    indexed = plan_source(src, units)  # describe counted the newlines while hashing
    reader = JsonlReader()
    (described,) = [reader.describe(src, str(p), "data.jsonl")]
    assert described.sha256 == sha256_path(p)
    jsonl_module._LINE_INDEX.clear()  # the fallback: count range by range
    counted = reader.plan(src, [described], units)
    assert len(indexed) > 8
    assert [u.row_offset for u in indexed] == [u.row_offset for u in counted]
    assert [u.row_offset for u in indexed] == [p.read_bytes()[: u.start].count(b"\n") for u in indexed]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=40), st.integers(1, 700), st.booleans(), st.data())
def test_plain_ranges_come_in_pieces_of_at_most_a_block_that_join_to_the_range(lengths, block, final_newline, data):
    from pipeline.sources.jsonl import read_blocks

    body = b"".join(b"x" * n + b"\n" for n in lengths)
    body = body if final_newline else body[:-1]
    line_starts = [0] + [i + 1 for i, b in enumerate(body) if b == 10 and i + 1 < len(body)]
    start = data.draw(st.sampled_from(line_starts))
    stop = data.draw(st.sampled_from([s for s in line_starts if s > start] + [len(body)]))
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        f.write(body)
        f.flush()
        pieces = list(read_blocks(f.name, start, stop, block))
    assert b"".join(pieces) == body[start:stop]
    assert all(pieces)
    # A piece ends at a line end, or is a whole block of a line longer than a block (never the
    # whole line at once: a line may be gigabytes long).
    assert all(p.endswith(b"\n") or (b"\n" not in p and len(p) == block) for p in pieces[:-1])
    assert all(len(p) <= block for p in pieces)


# --- units.limits: a line over max_record_bytes is streamed past, never held whole ---------------

def limited(max_record_bytes: int = 1000, batch_bytes: int = 1 << 20, **kw) -> UnitConfig:
    return UnitConfig(batch_bytes=batch_bytes, limits={"max_record_bytes": max_record_bytes, **kw})


def long_line_file(tmp_path: Path, name: str, long_text_bytes: int, compress=None) -> tuple[Path, bytes]:
    long = record("a" * long_text_bytes)
    body = b"".join(line + b"\n" for line in (record("before"), long, b"", record("after")))
    p = tmp_path / name
    p.write_bytes(compress(body) if compress else body)
    return p, long


@pytest.mark.parametrize("batch_bytes", [1024, 4096, 1 << 20], ids=["spans-blocks", "spans-some", "inside-a-chunk"])
@pytest.mark.parametrize("name,compress", [("d.jsonl", None), ("d.jsonl.gz", gzip.compress),
                                           ("d.jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_a_line_over_max_record_bytes_is_rejected_with_its_size_and_digest(tmp_path, name, compress, batch_bytes):
    p, long = long_line_file(tmp_path, name, 5000, compress)

    result = read_source(source(p), limited(1000, batch_bytes))

    assert result.texts() == ["before", "after"] and result.rows == [0, 3]
    (reject,) = result.rejects
    assert reject.row == 1
    assert reject.reason == f"record of {len(long):,} bytes exceeds units.limits.max_record_bytes (1,000)"
    assert reject.raw_sha256 == sha256(long)


def test_a_line_at_the_limit_is_read_and_one_byte_more_is_not(tmp_path):
    exact = record("x" * 100)
    over = record("y" * 101)
    p = jsonl(tmp_path, [exact, over])
    result = read_source(source(p), limited(len(exact), batch_bytes=1024))
    assert result.texts() == ["x" * 100]
    assert [r.row for r in result.rejects] == [1]


@pytest.mark.parametrize("ending", [b"", b"\r\n"], ids=["no-newline", "crlf"])
def test_an_over_long_last_line_is_rejected_whatever_its_ending(tmp_path, ending):
    long = record("z" * 3000)
    p = jsonl(tmp_path, record("a") + b"\r\n" + long + ending)
    result = read_source(source(p), limited(1000, batch_bytes=1024))
    assert result.texts() == ["a"]
    (reject,) = result.rejects
    # As for any rejected line, the digest covers the line without its "\n" (a "\r" stays).
    assert (reject.row, reject.raw_sha256) == (1, sha256(long + ending[:1]))


def test_an_over_long_first_line_after_a_byte_order_mark_is_rejected(tmp_path):
    long = record("b" * 3000)
    p = jsonl(tmp_path, b"\xef\xbb\xbf" + long + b"\n" + record("next") + b"\n")
    result = read_source(source(p), limited(1000, batch_bytes=1024))
    assert result.texts() == ["next"] and result.rows == [1]
    assert result.rejects[0].raw_sha256 == sha256(long)


def test_split_units_reject_the_same_long_lines_as_one_unit(tmp_path):
    lines = [record("w" * (5000 if i % 7 == 3 else 50), n=i) for i in range(200)]
    p = jsonl(tmp_path, lines)
    whole = read_source(source(p), UnitConfig(target_bytes=1 << 30, batch_bytes=4096, limits={"max_record_bytes": 2000}))
    split = read_source(source(p), UnitConfig(target_bytes=20_000, batch_bytes=4096, limits={"max_record_bytes": 2000}))
    assert len(split.units) > 3
    assert (split.records, split.rows) == (whole.records, whole.rows)
    assert [(r.row, r.reason) for r in split.rejects] == [(r.row, r.reason) for r in whole.rejects]
    assert [r.row for r in whole.rejects] == [i for i in range(200) if i % 7 == 3]


def gzip_bomb(path: Path, line_bytes: int) -> Path:
    """A .jsonl.gz whose second line holds `line_bytes` of one repeated character (about 1/1000 of that on disk)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(c.compress(record("first") + b"\n" + b'{"text": "'))
        piece = b"a" * (4 << 20)
        for i in range(0, line_bytes, len(piece)):
            f.write(c.compress(piece[: min(len(piece), line_bytes - i)]))
        f.write(c.compress(b'"}\n' + record("third") + b"\n") + c.flush())
    return path


def test_a_200_mb_line_in_a_gzip_bomb_is_streamed_past_in_bounded_memory(tmp_path):
    p = gzip_bomb(tmp_path / "bomb.jsonl.gz", 200 * 1000 * 1000)
    assert p.stat().st_size < 300_000
    tracemalloc.start()
    try:
        result = read_source(source(p), UnitConfig(batch_bytes=1 << 20,
                                                   limits={"max_record_bytes": 1 << 20, "max_compression_ratio": None}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.texts() == ["first", "third"] and result.rows == [0, 2]
    (reject,) = result.rejects
    assert reject.reason == "record of 200,000,012 bytes exceeds units.limits.max_record_bytes (1,048,576)"
    assert peak < 16 << 20  # the limit and a few 1 MiB pieces (input, its tail, output), never the line


def test_with_the_default_limits_a_100_mib_line_is_rejected_without_holding_more_than_the_limit(tmp_path):
    p = gzip_bomb(tmp_path / "big.jsonl.gz", 100 << 20)  # inflates 1000x, but stays under ratio_exempt_bytes
    tracemalloc.start()
    try:
        result = read_source(source(p), UnitConfig(batch_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.texts() == ["first", "third"]
    assert result.rejects[0].reason == f"record of {(100 << 20) + 12:,} bytes exceeds units.limits.max_record_bytes (67,108,864)"
    assert peak < (64 << 20) + (8 << 20)


def test_a_compressed_file_past_its_budget_raises_a_source_error_after_its_earlier_records(tmp_path):
    p = gzip_bomb(tmp_path / "bomb.jsonl.gz", 30 << 20)
    units = UnitConfig(limits={"max_record_bytes": 1 << 20, "ratio_exempt_bytes": 4 << 20})
    reader = JsonlReader()
    (unit,) = plan_source(source(p), units)
    batches = []
    with pytest.raises(SourceError) as e:
        for batch in reader.read(unit, source(p), units):
            batches.append(batch)
    assert str(e.value).startswith(f"{p}: decompresses to more than 4,194,304 bytes (over 100 times its ")
    assert "units.limits.max_compression_ratio" in str(e.value)
    assert [t for b in batches for t in b.table.to_pylist()] == [{"text": "first"}]
    absolute = UnitConfig(limits={"max_decompressed_bytes": 2 << 20, "max_compression_ratio": None})
    with pytest.raises(SourceError, match=r"more than 2,097,152 bytes \(units.limits.max_decompressed_bytes\)"):
        list(reader.read(unit, source(p), absolute))
