"""The groups' verdicts merged without a row per drop in memory: the global cluster ids, the rows
served per unit and `near/decisions.parquet` are those of `decision_rows` over every group at
once, however the groups are ordered and however their files are read."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.dedup import near_merge
from pipeline.dedup.near_merge import ROWS_SCHEMA, SERVED, GroupFiles, MergedGroups, write_group
from pipeline.dedup.pair_docs import decision_rows
from tests.unit.dedup.test_pair_docs import _drops, _stars


# Two groups whose clusters interleave in doc order, with published heads in both.
A = (_stars((7, False, "own7"), (1, True, "run/b"), (2, False, "own2")),
     _drops((0, 8, "own8", -1, None, False, False), (1, 9, "own9", -1, None, False, False),
            (2, 10, "own10", -1, None, False, True), (0, 12, "own12", 8, "own8", False, False)))
B = (_stars((0, True, "run/a"), (3, False, "own3"), (11, False, "own11")),
     _drops((0, 4, "own4", -1, None, False, False), (1, 5, "own5", 6, "own6", True, False),
            (2, 13, "own13", -1, None, False, False)))


def _written(tmp_path: Path, groups: list[tuple]) -> list[GroupFiles]:
    out = []
    for k, (stars, drops) in enumerate(groups):
        files = GroupFiles(*(tmp_path / f"g{k}.{n}.parquet" for n in ("stars", "clusters", "verdicts")))
        write_group(stars, drops, files)
        out.append(files)
    return out


@pytest.mark.parametrize("file_rows", [1, 2, 8_192])
def test_merged_groups_number_and_serve_the_rows_that_one_merge_of_every_group_makes(tmp_path, monkeypatch, file_rows):
    monkeypatch.setattr(near_merge, "GROUP_FILE_ROWS", file_rows)
    monkeypatch.setattr(near_merge, "MERGE_CLUSTERS", 2)
    monkeypatch.setattr(near_merge, "DECISIONS_FILE_ROWS", 3)
    expected, _counted = decision_rows([A[0], B[0]], [A[1], B[1]], ROWS_SCHEMA)
    for k, order in enumerate(([A, B], [B, A])):
        folder = tmp_path / str(k)
        folder.mkdir()
        merged = MergedGroups(_written(folder, order))
        assert merged.clusters == 6
        merged.write_decisions(folder / "decisions.parquet")
        assert pl.read_parquet(folder / "decisions.parquet").equals(expected.select(list(ROWS_SCHEMA)))
        # served per unit in ascending ranges of `_i`: the rows of that range, by `_i`
        served = [merged.rows(a, b) for a, b in ((0, 4), (4, 9), (9, 10), (10, 100))]
        assert [r["_i"].to_list() for r in served] == [[2, 3], [4, 5, 7, 8], [9], [10, 11, 12, 13]]
        assert pl.concat(served).equals(expected.sort("_i").select(SERVED))
        # images are numbered after the last text cluster with a row: own11's (the 6th)
        assert merged.first_free == 6


def test_the_moved_rows_are_the_text_drops_an_exact_copy_names(tmp_path):
    merged = MergedGroups(_written(tmp_path, [A, B]))
    exact = tmp_path / "exact.parquet"
    # exact copies name own8 (near-dropped), own10 (near-dropped, but an image), own3 (kept), run/x
    pl.DataFrame({"_i": [20, 21, 22, 23], "duplicate_of": ["own8", "own10", "own3", "run/x"]}).write_parquet(exact)
    moved = merged.moved([exact])
    assert moved.rows() == [(8, "own8", "own7")]
    assert merged.moved([]).height == 0
