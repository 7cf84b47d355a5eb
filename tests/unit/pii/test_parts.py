"""A split record's parts: the share of a detection call's chunks each part detects."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pii.parts import share


def test_share_cuts_the_chunks_into_consecutive_runs_of_about_equal_characters():
    lengths = [100] * 10 + [30]
    cuts = [share(lengths, p, 4) for p in range(4)]
    assert cuts[0][0] == 0 and cuts[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))           # consecutive, nothing skipped
    assert [b - a for a, b in cuts] == [3, 3, 2, 3]
    assert share([], 0, 3) == (0, 0) and share([5], 2, 3) == (1, 1)   # a part may get no chunk


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=30), st.integers(1, 9))
def test_the_parts_shares_partition_the_chunks_in_order(lengths, parts):
    cuts = [share(lengths, p, parts) for p in range(parts)]
    assert cuts[0][0] == 0 and cuts[-1][1] == len(lengths)
    assert all(a <= b for a, b in cuts) and all(x[1] == y[0] for x, y in zip(cuts, cuts[1:]))
