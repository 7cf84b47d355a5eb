"""The groups' stars and drops merged into the rows of near-duplicate resolution: cluster ids do
not depend on how the components were grouped."""

from __future__ import annotations

import polars as pl

from pipeline.dedup.near_merge import ROWS_SCHEMA
from pipeline.dedup.pair_docs import DROP_SCHEMA, STAR_SCHEMA, decision_rows


def _stars(*rows: tuple) -> pl.DataFrame:
    """(survivor doc, external, record id): the head's unit is its doc, row 0, `_i` its doc."""
    return pl.DataFrame([{"survivor": d, "external": e, "record_id": r, "unit": d, "row": 0, "_i": None if e else d}
                         for d, e, r in rows], schema=STAR_SCHEMA)


def _drops(*rows: tuple) -> pl.DataFrame:
    """(star, doc, record id, via doc or -1, via id, by the short pass[, an image record: False])."""
    return pl.DataFrame([{"star": s, "doc": d, "unit": d, "row": 0, "_i": d, "record_id": r, "image": bool(image and image[0]),
                          "similarity": 0.9, "via": v, "via_id": vid, "by_short": short}
                         for s, d, r, v, vid, short, *image in rows], schema=DROP_SCHEMA)


def _merge(groups: list[tuple[pl.DataFrame, pl.DataFrame]]) -> tuple[pl.DataFrame, dict]:
    return decision_rows([s for s, _d in groups], [d for _s, d in groups], ROWS_SCHEMA)


def test_published_heads_come_first_by_id_then_this_runs_heads_in_doc_order_whatever_the_groups():
    a = (_stars((7, False, "own7"), (1, True, "run/b")), _drops((0, 8, "own8", -1, None, False),
                                                                (1, 9, "own9", -1, None, False)))
    b = (_stars((0, True, "run/a"), (3, False, "own3")), _drops((0, 4, "own4", -1, None, False),
                                                                (1, 5, "own5", 6, "own6", True)))
    for order in ([a, b], [b, a]):
        rows, counted = _merge(order)
        # clusters: run/a (0), run/b (1), own3 (2), own7 (3); published heads have no row of their own
        assert rows.select("record_id", "cluster_id", "duplicate_of").rows() == [
            ("own4", 0, "run/a"), ("own9", 1, "run/b"), ("own3", 2, None), ("own5", 2, "own3"),
            ("own7", 3, None), ("own8", 3, "own7")]
        assert rows.filter(pl.col("record_id") == "own5").select("via", "path").row(0) == ("own6", "short")
        assert rows.filter(pl.col("record_id") == "own3").select("similarity", "via", "path").row(0) == (None, None, None)
        assert counted["clusters"] == 4 and counted["dropped"] == 4 and counted["dropped_against_index"] == 2
        assert counted["dropped_second_hop"] == 1 and counted["through_short"] == 1
        assert list(rows.columns[:7]) == list(ROWS_SCHEMA)
