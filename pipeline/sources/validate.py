"""Checks shared by every reader: the text field and the id field of each parsed row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources.base import Batch, Reject

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())
_INVISIBLE = r"^[\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}]*$"
INVISIBLE_TEXT = "no visible character (only whitespace, control or format characters)"
"""The reason of a text with nothing to read, such as zero-width spaces or NUL bytes."""


def true_rows(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Positions where a (null-free) boolean array is true.

    Arrow's own kernel: converting a boolean array to numpy goes through pandas, whose import
    alone costs half a second in every worker process.
    """
    return pc.indices_nonzero(mask).to_numpy().astype(np.int64, copy=False)


def is_string_type(t: pa.DataType) -> bool:
    """True for Arrow's UTF-8 string types."""
    return t in _STRING_TYPES


def without_string_views(table: pa.Table) -> pa.Table:
    """`table` with string_view columns cast to large_string, the type the output schema uses.

    Arrow has no filter, take or string-length kernels for string_view, so a batch holding such
    a column could not drop its rejected rows.
    """
    if not any(f.type == pa.string_view() for f in table.schema):
        return table
    fields = [f.with_type(pa.large_string()) if f.type == pa.string_view() else f for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def _castable_id_type(t: pa.DataType) -> bool:
    """Integers (and all-null columns, which JSON parsers type as `null`) become string ids."""
    if pa.types.is_dictionary(t):
        t = t.value_type
        return is_string_type(t) or pa.types.is_integer(t)
    return pa.types.is_integer(t) or pa.types.is_null(t)


def split_valid(table: pa.Table, rows: np.ndarray, source, relpaths: list[str] | None = None) -> Batch:
    """Keep the rows with a usable text (and id) field; every other row becomes a Reject.

    The text field must exist, be a string and be non-null; the id field, when configured,
    must exist, be non-null and non-empty, and be a string or an integer (integers are turned
    into strings).
    """
    table = without_string_views(table)
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    text_field, id_field = source.text_field, source.id_field

    def reject_all(reason: str) -> None:
        for i in range(n):
            if reasons[i] is None:
                reasons[i] = reason

    if text_field not in table.column_names:
        reject_all(f"missing text field '{text_field}'")
    elif pa.types.is_null(table.schema.field(text_field).type):
        # JSON parsers type a column holding only nulls as `null`: these rows have no text,
        # the same reason they get when other rows of their batch do have one.
        reject_all(f"text field '{text_field}' is missing or null")
    elif not is_string_type(table.schema.field(text_field).type):
        reject_all(f"text field '{text_field}' is not a string ({table.schema.field(text_field).type})")
    else:
        col = table[text_field]
        for i in true_rows(col.is_null()):
            reasons[i] = reasons[i] or f"text field '{text_field}' is missing or null"
        blank = pc.fill_null(pc.or_(pc.equal(pc.binary_length(col), 0), pc.utf8_is_space(col)), False)
        for i in true_rows(blank):
            reasons[i] = reasons[i] or "empty or whitespace-only text"
        # A text of zero-width spaces, byte order marks or control characters is as empty as a blank
        # one, but not whitespace to Unicode. (RE2 stops at the first visible character: cheap.)
        for i in true_rows(pc.fill_null(pc.match_substring_regex(col, _INVISIBLE), False)):
            reasons[i] = reasons[i] or INVISIBLE_TEXT

    ids: list | None = None
    if id_field is not None:
        if id_field not in table.column_names:
            reject_all(f"missing id field '{id_field}'")
        else:
            col = table[id_field]
            if not is_string_type(col.type):
                if _castable_id_type(col.type):
                    col = pc.cast(col, pa.string())
                    table = table.set_column(table.schema.get_field_index(id_field), id_field, col)
                else:
                    # Floats and booleans would cast to strings too, but lossily (1.0 and 1 both
                    # become "1", long ids lose digits), and a repeated id drops the later record.
                    reject_all(f"id field '{id_field}' is not a string or integer ({col.type})")
                    col = None
            if col is not None:
                for i in true_rows(col.is_null()):
                    reasons[i] = reasons[i] or f"id field '{id_field}' is missing or null"
                # An empty id (a blank CSV cell) is no id: it would become an empty record id.
                empty = pc.fill_null(pc.equal(pc.binary_length(col), 0), False)
                for i in true_rows(empty):
                    reasons[i] = reasons[i] or f"id field '{id_field}' is empty"
                ids = col

    bad = [i for i, r in enumerate(reasons) if r is not None]
    if not bad:
        return Batch(table, rows, [], relpaths)
    keep = np.ones(n, dtype=bool)
    keep[bad] = False
    # A rejected record keeps its own id when it has a usable one, so stewards can find it by that id.
    id_values = ids.take(pa.array(bad)).to_pylist() if ids is not None else [None] * len(bad)
    rejects = [Reject(int(rows[i]), reasons[i], None, relpaths[i] if relpaths else None, rid or None)
               for i, rid in zip(bad, id_values)]
    kept_relpaths = [p for p, k in zip(relpaths, keep) if k] if relpaths else None
    return Batch(table.filter(pa.array(keep)), rows[keep], rejects, kept_relpaths)
