"""The compiled JSON Lines scan: exact line counts, and lone surrogate escapes exactly where orjson fails."""

from __future__ import annotations

import orjson
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sources.jsonscan import scan_chunk, suspect_text_rows

# Pieces of JSON string bodies, chosen to hit every branch of the scan.
_PIECES = ["a", " ", "\\n", "\\\\", '\\"', "\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\uD83D\\uDE00",
           "\\\\ud800", "\\ud83d", "\\ude00", "é", "\\t"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=8), min_size=1, max_size=6), st.booleans())
def test_lone_surrogates_are_found_exactly_where_orjson_rejects_the_line(bodies, blank_line):
    lines = [b'{"text":"' + "".join(body).encode() + b'"}' for body in bodies]
    if blank_line:
        lines.insert(1, b"")
    chunk = b"\n".join(lines) + b"\n"
    newlines, lone = scan_chunk(chunk)
    assert newlines == chunk.count(b"\n")
    rejected = False
    for line in lines:
        if line:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                rejected = True
    assert lone == rejected


def test_a_backslash_at_a_line_end_does_not_hide_the_newline():
    assert scan_chunk(b'{"text":"a\\\n{"text":"b"}\n') == (2, False)


def test_a_malformed_unicode_escape_does_not_hide_a_newline_after_it():
    assert scan_chunk(b'{"text":"\\u1\n{"text":"b"}\n') == (2, False)
    assert scan_chunk(b'{"text":"\\ud83d\\u1\n{"text":"b"}\n') == (2, True)


@given(st.binary(max_size=200))
def test_the_line_count_is_the_newline_count_for_any_bytes(data):
    assert scan_chunk(data)[0] == data.count(b"\n")


def test_texts_that_could_be_coerced_json_values_are_suspects_and_prose_is_not():
    texts = ["5", "-1.5e3", "true", "false", "[1, 2]", '{"x": 1}', "{\nmultiline\n}",
             "5 apples", "true story", "[citation needed] and more", "plain prose", None, ""]
    assert suspect_text_rows(pl.Series(texts)).tolist() == [0, 1, 2, 3, 4, 5, 6]


# Lines for the reader-level property: records polars reads exactly, and every kind it reads leniently.
_LINES = [b'{"text":"plain"}', b'{"text":"5"}', b'{"text":5}', b'{"text":"true"}', b'{"text":true}',
          b'{"text":"[1]"}', b'{"text":[1]}', b'{"text":{"a":1}}', b'{"text":"{\\"a\\": 1}"}', b'{"text":null}',
          b'{"text":"a\\ud800"}', b'{"text":"\\ud83d\\ude00"}', b'{"text":"x","meta":{"text":5}}',
          b"", b"  ", b"{broken", b'{"text":"bad \\u12"}', b'{"text":""}', b"[1]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_LINES), min_size=1, max_size=8))
def test_the_fast_path_reads_exactly_what_the_line_by_line_path_reads(lines):
    from pipeline.config import JsonlSourceConfig
    from pipeline.sources.jsonl import JsonlReader, _nonblank

    src = JsonlSourceConfig(kind="jsonl", name="s", paths=("x.jsonl",))
    chunk = b"".join(line + b"\n" for line in lines)
    newlines, lone = scan_chunk(chunk)
    fast = JsonlReader()._parse(chunk, 10, src, newlines, lone)
    nonblank = _nonblank(lines)
    careful = JsonlReader()._parse_carefully(lines, nonblank, 10, src) if nonblank else None
    got = (fast.table.to_pylist(), fast.rows.tolist(), [(r.row, r.reason) for r in fast.rejects])
    want = ((careful.table.to_pylist(), careful.rows.tolist(), [(r.row, r.reason) for r in careful.rejects])
            if careful is not None else ([], [], []))
    assert got == want
