"""One output schema from many inputs: columns are united, types promoted, conflicts become JSON text."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.compute as pc


def _normalize_type(t: pa.DataType) -> pa.DataType:
    if t == pa.string_view():
        return pa.large_string()
    if t == pa.string():
        return pa.large_string()
    return t


def merge_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """Unite the fields of `schemas` (first-seen order); incompatible types fall back to large_string."""
    schemas = [pa.schema([f.with_type(_normalize_type(f.type)).with_nullable(True) for f in s]) for s in schemas]
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    fields: dict[str, pa.Field] = {}
    for s in schemas:
        for f in s:
            if f.name not in fields:
                fields[f.name] = f
                continue
            try:
                merged = pa.unify_schemas([pa.schema([fields[f.name]]), pa.schema([f])], promote_options="permissive")
                fields[f.name] = merged.field(f.name)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                fields[f.name] = pa.field(f.name, pa.large_string())
    return pa.schema(list(fields.values()))


def _to_json_text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else (v if isinstance(v, str) else orjson.dumps(v, default=str).decode()) for v in col.to_pylist()],
        pa.large_string(),
    )


def cast_to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder, fill (nulls) and cast `table`'s columns to `schema`."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            if col.type != f.type:
                try:
                    col = pc.cast(col, f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    if f.type != pa.large_string():
                        raise
                    col = _to_json_text(col)
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
