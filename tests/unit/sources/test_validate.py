"""split_valid: the text and id checks every reader applies to its parsed rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import ParquetSourceConfig
from pipeline.sources.validate import is_string_type, split_valid


def source(**kw) -> ParquetSourceConfig:
    return ParquetSourceConfig(kind="parquet", name="s", paths=("unused",), **kw)


def rows(n: int, first: int = 100) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.int64)


def test_a_table_of_good_rows_passes_through_untouched():
    table = pa.table({"text": ["a", "b"], "n": [1, 2]})

    batch = split_valid(table, rows(2), source())

    assert batch.table.equals(table)
    assert batch.rows.tolist() == [100, 101]
    assert batch.rejects == []


def test_rejects_carry_the_row_numbers_given_not_table_positions():
    table = pa.table({"text": ["ok", None, "", " \u00a0\t", "fine"]})

    batch = split_valid(table, rows(5), source())

    assert batch.table["text"].to_pylist() == ["ok", "fine"]
    assert batch.rows.tolist() == [100, 104]
    assert [(r.row, r.reason) for r in batch.rejects] == [
        (101, "text field 'text' is missing or null"),
        (102, "empty or whitespace-only text"),
        (103, "empty or whitespace-only text"),
    ]


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_every_arrow_string_type_is_a_text(text_type):
    table = pa.table({"text": pa.array(["a", ""], pa.string()).cast(text_type)})

    batch = split_valid(table, rows(2), source())

    assert is_string_type(text_type)
    assert batch.rows.tolist() == [100]
    assert batch.table["text"].to_pylist() == ["a"]


def test_string_view_columns_are_read_as_large_strings_so_rejected_rows_can_be_dropped():
    view = pa.string_view()
    table = pa.table({"text": pa.array(["a", "", "c"]).cast(view), "id": pa.array(["1", "", "3"]).cast(view)})

    batch = split_valid(table, rows(3), source(id_field="id"))

    assert batch.table.schema.types == [pa.large_string(), pa.large_string()]
    assert batch.table.to_pylist() == [{"text": "a", "id": "1"}, {"text": "c", "id": "3"}]
    assert [(r.row, r.reason) for r in batch.rejects] == [(101, "empty or whitespace-only text")]


@pytest.mark.parametrize(
    "column",
    [pa.array([1, 2]), pa.array([b"a", b"b"]), pa.array([["a"], ["b"]]), pa.array(["a", "b"]).dictionary_encode()],
)
def test_a_text_column_that_is_not_a_string_rejects_every_row(column):
    table = pa.table({"text": column})

    batch = split_valid(table, rows(2), source())

    assert batch.table.num_rows == 0
    assert {r.reason for r in batch.rejects} == {f"text field 'text' is not a string ({column.type})"}


def test_a_text_column_of_only_nulls_rejects_every_row_as_missing_text():
    table = pa.table({"text": pa.nulls(2)})

    batch = split_valid(table, rows(2), source())

    assert [(r.row, r.reason) for r in batch.rejects] == [
        (100, "text field 'text' is missing or null"),
        (101, "text field 'text' is missing or null"),
    ]


def test_a_missing_text_column_rejects_every_row():
    batch = split_valid(pa.table({"body": ["a"]}), rows(1), source())

    assert [(r.row, r.reason) for r in batch.rejects] == [(100, "missing text field 'text'")]


@pytest.mark.parametrize("id_type", [pa.int8(), pa.int64(), pa.uint64()])
def test_integer_ids_become_strings(id_type):
    table = pa.table({"text": ["a", "b"], "id": pa.array([7, 42], id_type)})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert batch.table["id"].type == pa.string()
    assert batch.table["id"].to_pylist() == ["7", "42"]
    assert batch.table["text"].to_pylist() == ["a", "b"]


def test_dictionary_encoded_string_ids_become_plain_strings():
    table = pa.table({"text": ["a", "b"], "id": pa.array(["x", "y"]).dictionary_encode()})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert batch.table["id"].to_pylist() == ["x", "y"]


def test_a_null_id_rejects_its_row_only():
    table = pa.table({"text": ["a", "b", "c"], "id": ["x", None, "z"]})

    batch = split_valid(table, rows(3), source(id_field="id"))

    assert batch.table["id"].to_pylist() == ["x", "z"]
    assert [(r.row, r.reason) for r in batch.rejects] == [(101, "id field 'id' is missing or null")]


def test_an_empty_id_rejects_its_row_only():
    table = pa.table({"text": ["a", "b"], "id": ["", "y"]})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert batch.table["id"].to_pylist() == ["y"]
    assert [(r.row, r.reason) for r in batch.rejects] == [(100, "id field 'id' is empty")]


def test_an_id_column_of_only_nulls_rejects_every_row_as_missing_ids():
    table = pa.table({"text": ["a", "b"], "id": pa.nulls(2)})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert {r.reason for r in batch.rejects} == {"id field 'id' is missing or null"}


def test_a_missing_id_column_rejects_every_row():
    batch = split_valid(pa.table({"text": ["a"]}), rows(1), source(id_field="id"))

    assert [(r.row, r.reason) for r in batch.rejects] == [(100, "missing id field 'id'")]


@pytest.mark.parametrize(
    "column",
    [pa.array([1.0, 2.5]), pa.array([True, False]), pa.array([b"a", b"b"]), pa.array([{"k": 1}, {"k": 2}])],
)
def test_ids_that_are_neither_strings_nor_integers_reject_every_row(column):
    table = pa.table({"text": ["a", "b"], "id": column})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert batch.table.num_rows == 0
    assert {r.reason for r in batch.rejects} == {f"id field 'id' is not a string or integer ({column.type})"}


def test_a_row_with_two_problems_is_rejected_once_with_the_text_problem():
    table = pa.table({"text": ["", "b"], "id": [None, "y"]})

    batch = split_valid(table, rows(2), source(id_field="id"))

    assert [(r.row, r.reason) for r in batch.rejects] == [(100, "empty or whitespace-only text")]


def test_relpaths_follow_their_rows_into_the_batch_and_the_rejects():
    table = pa.table({"text": ["a", "", "c"]})

    batch = split_valid(table, rows(3, first=0), source(), ["x.txt", "y.txt", "z.txt"])

    assert batch.relpaths == ["x.txt", "z.txt"]
    assert [(r.row, r.relpath) for r in batch.rejects] == [(1, "y.txt")]


def test_the_input_table_is_not_modified():
    table = pa.table({"text": ["a", ""], "id": [1, 2]})
    before = table.to_pylist()

    split_valid(table, rows(2), source(id_field="id"))

    assert table.to_pylist() == before
    assert table["id"].type == pa.int64()


@pytest.mark.parametrize("text", ["\u200b", "\u200b \u200b", "\x00", "\ufeff", "\u00ad", " \u2028 \x7f\t"])
def test_a_text_without_any_visible_character_is_rejected(text):
    batch = split_valid(pa.table({"text": [text, "visible"]}), rows(2), source())
    assert batch.table["text"].to_pylist() == ["visible"]
    assert [(r.row, r.reason) for r in batch.rejects] == [
        (100, "no visible character (only whitespace, control or format characters)")]


@pytest.mark.parametrize("text", ["!!!", "a", "\u0301", "🙂", "x\u200b", "\u3000-"])
def test_one_word_punctuation_only_and_combining_mark_texts_are_kept(text):
    # Such records are data: exact dedup treats them like any other, and near-duplicate
    # detection leaves out those with no word to shingle.
    assert split_valid(pa.table({"text": [text]}), rows(1), source()).rejects == []
