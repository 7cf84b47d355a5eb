"""Connected components of the candidate graph packed into groups of bounded size."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dedup.groups import ComponentGroups
from pipeline.errors import PipelineError


def _pairs(*edges: tuple[int, int]) -> np.ndarray:
    return np.array(edges, np.int64).reshape(-1, 2)


def test_components_are_packed_whole_lowest_first_and_lone_docs_are_left_out():
    # components {0, 3}, {1, 2, 6} (one edge from each pair array), {4, 8}; 5 and 7 are in no pair
    groups = ComponentGroups.build(9, [_pairs((0, 3), (1, 2)), _pairs((2, 6), (4, 8))], max_records=5)
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3, 6], [4, 8]]
    assert groups.group_of[[5, 7]].tolist() == [-1, -1]
    assert groups.stats == {"max_records": 5, "groups": 2, "components": 3, "largest_component": 3,
                            "components_over_max": 0}


def test_a_component_larger_than_the_bound_stays_one_group_and_is_counted():
    chain = _pairs(*[(k, k + 1) for k in range(6)])  # 7 records, bound 3
    groups = ComponentGroups.build(10, [chain, _pairs((8, 9))], max_records=3)
    assert [g.tolist() for g in groups] == [list(range(7)), [8, 9]]
    assert groups.stats["largest_component"] == 7 and groups.stats["components_over_max"] == 1


def test_pairs_are_split_by_group_in_their_order():
    groups = ComponentGroups.build(6, [_pairs((4, 5), (0, 1), (1, 2))], max_records=3)
    pairs = _pairs((0, 1), (4, 5), (1, 2))
    assert [p.tolist() for p in groups.split(pairs)] == [[0, 2], [1]]
    assert [p.tolist() for p in groups.split(_pairs())] == [[], []]


def test_no_pairs_make_no_groups_and_a_bound_below_a_pair_is_refused():
    groups = ComponentGroups.build(4, [_pairs()], max_records=10)
    assert list(groups) == [] and groups.stats["groups"] == 0
    with pytest.raises(PipelineError, match="cannot hold a pair"):
        ComponentGroups.build(4, [_pairs((0, 1))], max_records=1)
