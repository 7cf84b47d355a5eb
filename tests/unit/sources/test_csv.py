"""CsvReader: header handling, data-row numbering and per-row rejections."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import CsvSourceConfig, UnitConfig
from pipeline.errors import SourceError
from pipeline.sources import reader_for
from pipeline.sources.csv import CsvReader

from tests.unit.sources.support import plan_source, read_source, sha256


def csv_file(tmp_path: Path, data: bytes, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def source(*paths: Path, **kw) -> CsvSourceConfig:
    return CsvSourceConfig(kind="csv", name="s", paths=tuple(str(p) for p in paths), **kw)


def test_the_reader_is_registered_under_its_kind():
    assert isinstance(reader_for("csv"), CsvReader)


def test_the_first_row_is_the_header_and_data_rows_are_numbered_from_zero(tmp_path):
    p = csv_file(tmp_path, b"text,lang\nhello,en\nbonjour,fr\n")

    result = read_source(source(p))

    assert result.records == [{"text": "hello", "lang": "en"}, {"text": "bonjour", "lang": "fr"}]
    assert result.rows == [0, 1]
    assert result.rejects == []


def test_every_value_is_read_as_a_string(tmp_path):
    p = csv_file(tmp_path, b"text,n,flag\n12,3.5,true\n")

    (record,) = read_source(source(p)).records

    assert record == {"text": "12", "n": "3.5", "flag": "true"}


def test_a_file_with_only_a_header_yields_no_records(tmp_path):
    p = csv_file(tmp_path, b"text,lang\n")

    result = read_source(source(p))

    assert (result.records, result.rejects) == ([], [])


def test_an_empty_file_yields_no_records(tmp_path):
    p = csv_file(tmp_path, b"")

    result = read_source(source(p))

    assert (result.records, result.rejects) == ([], [])


def test_a_header_without_the_text_field_rejects_every_row(tmp_path):
    p = csv_file(tmp_path, b"body,lang\nhello,en\nbonjour,fr\n")

    result = read_source(source(p))

    assert result.records == []
    assert result.reasons() == {0: "missing text field 'text'", 1: "missing text field 'text'"}


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [(b"too,many,fields", "expected 2 fields, found 3"), (b"lonely", "expected 2 fields, found 1")],
)
def test_a_row_with_the_wrong_field_count_is_rejected_with_its_data_row_number(tmp_path, bad_row, reason):
    p = csv_file(tmp_path, b"text,lang\nfirst,en\nsecond,en\n" + bad_row + b"\nfourth,en\n")

    result = read_source(source(p))

    assert result.texts() == ["first", "second", "fourth"]
    assert result.rows == [0, 1, 3]
    assert result.reasons() == {2: reason}


def test_a_rejected_row_carries_a_digest_of_its_fields(tmp_path):
    p = csv_file(tmp_path, b"text,lang\na,b,c\n")

    (reject,) = read_source(source(p)).rejects

    assert reject.raw_sha256 == sha256(b"a,b,c")


def test_a_row_that_is_not_valid_utf8_is_rejected_and_its_neighbours_kept(tmp_path):
    p = csv_file(tmp_path, b"text,lang\nfine,en\ncaf\xe9,fr\nalso fine,en\n")

    result = read_source(source(p))

    assert result.texts() == ["fine", "also fine"]
    assert result.reasons() == {1: "invalid UTF-8"}
    assert result.rejects[0].raw_sha256 == sha256(b"caf\xe9,fr")


def test_a_header_that_is_not_valid_utf8_is_a_source_error_naming_the_file(tmp_path):
    p = csv_file(tmp_path, b"text,l\xe4ng\nhello,en\n", "latin1.csv")

    with pytest.raises(SourceError, match="latin1.csv"):
        read_source(source(p))


def test_quoted_newlines_inside_a_field_are_part_of_the_field(tmp_path):
    p = csv_file(tmp_path, b'text,lang\n"line one\nline two\r\nline three",en\nnext,fr\n')

    result = read_source(source(p))

    assert result.texts() == ["line one\nline two\r\nline three", "next"]
    assert result.rows == [0, 1]


def test_quoted_delimiters_and_doubled_quotes_are_unescaped(tmp_path):
    p = csv_file(tmp_path, b'text,lang\n"a, ""quoted"" word",en\n')

    assert read_source(source(p)).texts() == ['a, "quoted" word']


def test_a_byte_order_mark_before_the_header_is_stripped(tmp_path):
    p = csv_file(tmp_path, b"\xef\xbb\xbftext,lang\nhello,en\n")

    result = read_source(source(p))

    assert result.records == [{"text": "hello", "lang": "en"}]


def test_duplicate_header_names_are_a_source_error_naming_the_file(tmp_path):
    p = csv_file(tmp_path, b"text,lang,lang\nhello,en,fr\n", "dupes.csv")

    with pytest.raises(SourceError, match="dupes.csv.*repeats a column name"):
        read_source(source(p))


def test_a_header_repeated_only_through_a_byte_order_mark_is_a_source_error(tmp_path):
    p = csv_file(tmp_path, b"\xef\xbb\xbftext,text\nhello,again\n")

    with pytest.raises(SourceError, match="repeats a column name"):
        read_source(source(p))


def test_windows_line_endings_are_accepted(tmp_path):
    p = csv_file(tmp_path, b"text,lang\r\nhello,en\r\nbonjour,fr\r\n")

    result = read_source(source(p))

    assert result.records == [{"text": "hello", "lang": "en"}, {"text": "bonjour", "lang": "fr"}]


def test_the_configured_delimiter_splits_the_fields(tmp_path):
    p = csv_file(tmp_path, b"text\tlang\nhello, world\ten\n", "data.tsv")

    result = read_source(source(p, delimiter="\t"))

    assert result.records == [{"text": "hello, world", "lang": "en"}]


def test_empty_text_is_rejected_like_any_other_reader(tmp_path):
    p = csv_file(tmp_path, b'text,lang\n,en\n"   ",fr\nok,de\n')

    result = read_source(source(p))

    assert result.texts() == ["ok"]
    assert result.reasons() == {0: "empty or whitespace-only text", 1: "empty or whitespace-only text"}


def test_row_numbers_continue_across_batches(tmp_path):
    lines = [f"text {i},en" if i % 5 else "bad row" for i in range(23)]
    p = csv_file(tmp_path, ("text,lang\n" + "\n".join(lines) + "\n").encode())

    result = read_source(source(p), UnitConfig(target_rows=3))

    assert result.rows == [i for i in range(23) if i % 5]
    assert sorted(result.reasons()) == [0, 5, 10, 15, 20]


def test_ids_are_read_as_strings_and_an_empty_id_is_rejected(tmp_path):
    p = csv_file(tmp_path, b"id,text\n1,a\n,b\n")

    result = read_source(source(p, id_field="id"))

    assert [r["id"] for r in result.records] == ["1"]
    assert result.reasons() == {1: "id field 'id' is empty"}


def test_a_header_without_the_id_field_rejects_every_row(tmp_path):
    p = csv_file(tmp_path, b"text\na\n")

    result = read_source(source(p, id_field="id"))

    assert result.reasons() == {0: "missing id field 'id'"}


def test_each_file_is_one_unit_and_a_directory_lists_only_csv_files(tmp_path):
    csv_file(tmp_path, b"text\na\n", "a.csv")
    csv_file(tmp_path, b"text\nb\n", "b.csv")
    csv_file(tmp_path, b"not csv", "notes.txt")

    planned = plan_source(source(tmp_path), UnitConfig(target_bytes=1024, target_rows=1))

    assert [(u.relpath, u.part, u.start, u.stop, u.row_offset) for u in planned] == [
        ("a.csv", 0, 0, -1, 0),
        ("b.csv", 0, 0, -1, 0),
    ]


# --- units.limits ----------------------------------------------------------------------------------

def limited(n: int) -> UnitConfig:
    return UnitConfig(limits={"max_record_bytes": n})


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_row_over_the_limit_is_streamed_past_and_the_next_rows_keep_their_numbers(tmp_path, newline):
    long_row = b'"' + b"quoted line\n" * 500 + b'with ""quotes""",1'  # many short lines inside one field
    rows = [b"text,n", b"first,0", long_row, b"x" * 3000 + b",2", b"last,3"]
    p = csv_file(tmp_path, newline.join(rows) + newline)

    result = read_source(source(p), limited(1000))

    assert result.records == [{"text": "first", "n": "0"}, {"text": "last", "n": "3"}]
    assert result.rows == [0, 3]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (1, f"record of {len(long_row) + len(newline):,} bytes exceeds units.limits.max_record_bytes (1,000)"),
        (2, f"record of {3002 + len(newline):,} bytes exceeds units.limits.max_record_bytes (1,000)"),
    ]
    assert [r.raw_sha256 for r in result.rejects] == [sha256(long_row + newline), sha256(b"x" * 3000 + b",2" + newline)]


def test_a_crlf_split_by_the_skip_is_not_a_blank_row(tmp_path):
    # The first read of a row takes budget + 1 characters, then pieces of 1 MiB: the row's length
    # puts the end of one piece right after its "\r".
    budget, piece = 1000, 1 << 20
    long_row = b"y" * (piece + budget - 2) + b",1"
    assert (len(long_row) + 1 - (budget + 1)) % piece == 0
    p = csv_file(tmp_path, b"text,n\r\nfirst,0\r\n" + long_row + b"\r\nlast,2\r\n")
    result = read_source(source(p), limited(budget))
    assert result.records == [{"text": "first", "n": "0"}, {"text": "last", "n": "2"}]
    assert [(r.row, r.raw_sha256) for r in result.rejects] == [(1, sha256(long_row + b"\r\n"))]


def test_a_header_over_the_limit_is_a_file_error(tmp_path):
    p = csv_file(tmp_path, b"h" * 5000 + b",n\nx,1\n")
    with pytest.raises(SourceError, match="the CSV header is larger than units.limits.max_record_bytes"):
        read_source(source(p), limited(1000))
