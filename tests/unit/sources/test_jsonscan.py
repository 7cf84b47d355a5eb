"""The compiled JSON Lines scan: exact line counts, and lone surrogate escapes exactly where orjson fails."""

from __future__ import annotations

import orjson
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sources.jsonscan import scan_chunk, suspect_text_rows


def _counts(chunk: bytes) -> tuple[int, bool]:
    scan = scan_chunk(chunk)
    return scan.newlines, scan.lone_surrogate

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
    scan = scan_chunk(chunk)
    newlines, lone = scan.newlines, scan.lone_surrogate
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
    assert _counts(b'{"text":"a\\\n{"text":"b"}\n') == (2, False)


def test_a_malformed_unicode_escape_does_not_hide_a_newline_after_it():
    assert _counts(b'{"text":"\\u1\n{"text":"b"}\n') == (2, False)
    assert _counts(b'{"text":"\\ud83d\\u1\n{"text":"b"}\n') == (2, True)


@given(st.binary(max_size=200))
def test_the_line_count_is_the_newline_count_for_any_bytes(data):
    assert scan_chunk(data).newlines == data.count(b"\n")


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
    fast, _ = JsonlReader()._parse(chunk, 10, src, scan_chunk(chunk))
    nonblank = _nonblank(lines)
    careful = JsonlReader()._parse_carefully(lines, nonblank, 10, src) if nonblank else None
    got = (fast.table.to_pylist(), fast.rows.tolist(), [(r.row, r.reason) for r in fast.rejects])
    want = ((careful.table.to_pylist(), careful.rows.tolist(), [(r.row, r.reason) for r in careful.rejects])
            if careful is not None else ([], [], []))
    assert got == want


# Schema reuse: a chunk read with the schema of an earlier one must give, once a unit's batches are
# united into one schema, exactly what inferring every chunk gives.
_scalar = st.one_of(st.none(), st.integers(-5, 5), st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 2)),
                    st.booleans(), st.sampled_from(["x", "5", "é", ""]))
_meta = st.one_of(st.none(), st.fixed_dictionaries({"a": st.sampled_from(["p", "q"])},
                                                   optional={"b": st.integers(0, 3), "c": st.lists(st.integers(0, 3), max_size=2),
                                                             "late": st.sampled_from(["z"])}))
_record = st.fixed_dictionaries(
    {"text": st.one_of(st.sampled_from(["some prose", "more prose", "", " "]), st.just(None), st.integers(0, 2))},
    optional={"id": st.sampled_from(["a", "b", 7]), "n": _scalar, "meta": _meta,
              "tags": st.lists(st.sampled_from(["t", "u"]), max_size=2), "late": _scalar},
)


def _read_chunks(chunks: list[bytes], reuse: bool):
    from pipeline.config import JsonlSourceConfig
    from pipeline.schema_merge import cast_to_schema, merge_schemas
    from pipeline.sources.jsonl import JsonlReader

    src = JsonlSourceConfig(kind="jsonl", name="s", paths=("x.jsonl",))
    reader, known, batches, line = JsonlReader(), None, [], 0
    for chunk in chunks:
        scan = scan_chunk(chunk)
        batch, known = reader._parse(chunk, line, src, scan, known if reuse else None)
        batches.append(batch)
        line += scan.newlines
    full = [b.table for b in batches if b.table.num_rows]
    schema = merge_schemas([t.schema for t in full])
    rows = [r for t in full for r in cast_to_schema(t, schema).to_pylist()]
    return (schema, rows, [b.rows.tolist() for b in batches],
            [(r.row, r.reason) for b in batches for r in b.rejects], known)


_N_KINDS = {"int": st.integers(-5, 5), "float": st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 2) + 0.5),
            "str": st.sampled_from(["x", "5"]), "bool": st.booleans()}


@st.composite
def _chunks(draw):
    """Chunks of mostly one shape (so schemas get reused), with nulls, absent nested keys, and
    now and then a record or a chunk of any shape (a new key, another kind, a rejected text)."""
    n_kind = draw(st.sampled_from(sorted(_N_KINDS)))

    def record():
        if draw(st.integers(0, 7)) == 0:
            return draw(_record)
        meta = {"a": draw(st.sampled_from(["p", "q"]))}
        if draw(st.booleans()):
            meta["c"] = draw(st.lists(st.integers(0, 3), max_size=2))
        return {"text": draw(st.sampled_from(["some prose", "more prose", " "])),
                "n": draw(st.one_of(st.none(), _N_KINDS[n_kind])), "meta": draw(st.one_of(st.none(), st.just(meta)))}

    chunks = []
    for _ in range(draw(st.integers(1, 5))):
        irregular = draw(st.integers(0, 4)) == 0
        chunks.append(draw(st.lists(_record, min_size=1, max_size=5)) if irregular
                      else [record() for _ in range(draw(st.integers(1, 6)))])
    return chunks


@settings(max_examples=300, deadline=None)
@given(_chunks(), st.booleans())
def test_reusing_a_chunks_schema_reads_exactly_what_inferring_every_chunk_reads(chunks, spaced):
    raw = []
    for records in chunks:
        lines = [orjson.dumps(r) for r in records]
        if spaced:  # the scan must not depend on how the JSON is laid out
            lines = [line.replace(b":", b": ").replace(b",", b" , ") for line in lines]
        raw.append(b"".join(line + b"\n" for line in lines))
    assert _read_chunks(raw, reuse=True)[:4] == _read_chunks(raw, reuse=False)[:4]


def _parse_kwargs(monkeypatch) -> list[dict]:
    import pipeline.sources.jsonl as jsonl

    calls: list[dict] = []
    real = jsonl.pl.read_ndjson

    def spy(source, **kw):
        calls.append(kw)
        return real(source, **kw)

    monkeypatch.setattr(jsonl.pl, "read_ndjson", spy)
    return calls


def test_a_regular_unit_infers_its_schema_once_and_reuses_it(monkeypatch):
    calls = _parse_kwargs(monkeypatch)
    chunk = b"".join(orjson.dumps({"text": f"t{i}", "meta": {"q": i / 2, "src": "w"}, "n": i}) + b"\n" for i in range(20))
    _read_chunks([chunk] * 4, reuse=True)
    assert ["schema" in kw for kw in calls] == [False, True, True, True]


def test_a_key_first_seen_in_a_later_chunk_is_kept(monkeypatch):
    """polars would drop it silently if the earlier schema were used: the shape check sees it."""
    calls = _parse_kwargs(monkeypatch)
    first = b'{"text":"a","meta":{"q":1}}\n' * 3
    nested_new = b'{"text":"b","meta":{"q":2,"new":"kept"}}\n'
    top_new = b'{"text":"c","meta":{"q":3},"extra":[1]}\n'
    schema, rows, *_ = _read_chunks([first, first + nested_new, first + top_new], reuse=True)
    assert ["schema" in kw for kw in calls] == [False, False, False]
    assert {"text": "b", "meta": {"q": 2, "new": "kept"}, "extra": None} in rows
    assert {"text": "c", "meta": {"q": 3, "new": None}, "extra": [1]} in rows


def test_a_value_of_another_kind_is_inferred_again():
    first = b'{"text":"a","n":1}\n'
    floats = b'{"text":"b","n":1.5}\n'
    *_, known = _read_chunks([first], reuse=True)
    assert scan_chunk(first).shape.fits(known)
    assert not scan_chunk(floats).shape.fits(known)
    assert not scan_chunk(b'{"text":"b"}\n').shape.fits(known)  # a top-level key missing: its column would differ
    assert scan_chunk(b'{"text":"b","n":null}\n').shape.fits(known)  # a null where there was a number
    assert not scan_chunk(b'{"text":"b","n":{"x":null}}\n').shape.fits(known)
    # A path holding two kinds is never reused: inference types it by the mix.
    assert _read_chunks([first + floats], reuse=True)[-1] is None


@given(st.binary(max_size=300), st.integers(0, 20), st.integers(0, 20))
def test_newline_counts_over_any_byte_range_of_a_file(data, cut_start, cut_end):
    import tempfile

    from pipeline.sources.jsonl import _count_newlines

    start, stop = min(cut_start, len(data)), max(min(cut_start, len(data)), len(data) - cut_end)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        assert _count_newlines(f.name, start, stop) == data[start:stop].count(b"\n")


def test_newline_counts_across_block_edges(tmp_path):
    import numpy as np

    from pipeline.sources.jsonl import _count_newlines

    block = 8 << 20  # what _count_newlines counts at a time
    data = np.random.default_rng(7).choice(np.array([97, 98, 10], dtype=np.uint8), size=2 * block + 12345).tobytes()
    path = tmp_path / "lines.jsonl"
    path.write_bytes(data)
    edges = [0, 1, block - 1, block, block + 1, 2 * block, len(data) - 1, len(data)]
    for start in edges:
        for stop in edges:
            assert _count_newlines(str(path), start, stop) == data[start:stop].count(b"\n")
