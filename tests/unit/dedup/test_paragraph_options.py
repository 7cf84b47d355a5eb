"""paragraph_dedup's `collapse_whitespace: false` keeps whitespace in the hashed text: collapsing a
piece's words must not rewrite the piece itself (polars' `Series.scatter` works in place)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.paragraphs import split_units


@pytest.mark.parametrize("unit", ["line", "paragraph"])
@pytest.mark.parametrize("lowercase", [False, True])
def test_text_differing_only_in_whitespace_is_another_text_unless_collapsed(unit, lowercase):
    texts = pa.array(["a  b", "a b", "a\tb "])
    kept = split_units(np.arange(3), texts, unit, lowercase, False, 0)[0]
    collapsed = split_units(np.arange(3), texts, unit, lowercase, True, 0)[0]
    assert kept["hash"].n_unique() == 3
    assert collapsed["hash"].n_unique() == 1
    assert kept["words"].to_list() == collapsed["words"].to_list() == [2, 2, 2]
