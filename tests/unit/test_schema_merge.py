"""Schema merging across units and sources."""

from __future__ import annotations

import pyarrow as pa

from pipeline.schema_merge import cast_to_schema, merge_schemas


def test_columns_are_united_in_first_seen_order_with_numeric_promotion():
    s = merge_schemas([pa.schema([("a", pa.int64()), ("t", pa.string())]), pa.schema([("t", pa.large_string()), ("a", pa.float64()), ("b", pa.bool_())])])
    assert s.names == ["a", "t", "b"]
    assert s.field("a").type == pa.float64() and s.field("t").type == pa.large_string()


def test_incompatible_types_become_json_text():
    s = merge_schemas([pa.schema([("m", pa.struct([("x", pa.int64())]))]), pa.schema([("m", pa.int64())])])
    assert s.field("m").type == pa.large_string()
    t = cast_to_schema(pa.table({"m": pa.array([{"x": 1}, None])}), s)
    assert t["m"].to_pylist() == ['{"x":1}', None]


def test_missing_columns_are_filled_with_nulls():
    s = merge_schemas([pa.schema([("a", pa.int64())]), pa.schema([("b", pa.string())])])
    t = cast_to_schema(pa.table({"b": ["x"]}), s)
    assert t.to_pylist() == [{"a": None, "b": "x"}]


def test_no_schemas_is_an_empty_schema():
    assert merge_schemas([]) == pa.schema([])
