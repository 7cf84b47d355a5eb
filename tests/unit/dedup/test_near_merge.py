"""The groups' verdicts merged without a row per drop in memory: the global cluster ids, the rows
served per unit and `near/decisions.parquet` are those of `decision_rows` over every group at
once, however the groups are ordered and however their files are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.dedup import near_merge
from pipeline.dedup.near_merge import (ROWS_SCHEMA, SERVED, GroupFiles, MergedGroups, number_clusters, relabel_group,
                                       write_drops, write_group)
from pipeline.dedup.pair_docs import cluster_ids, decision_rows
from pipeline.dedup.repoint import COPIES_SCHEMA, DROPS_SCHEMA, read_partition, repoint_rows, write_partitioned
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


def _merged(tmp_path: Path, groups: list[tuple]) -> MergedGroups:
    """The groups written, numbered and relabelled as the run's steps do it, then merged."""
    files = _written(tmp_path, groups)
    ids = [tmp_path / f"g{k}.ids" for k in range(len(files))]
    numbered = number_clusters([f.stars for f in files], ids)
    relabelled = []
    for k, f in enumerate(files):
        out = GroupFiles(f.stars, *(tmp_path / f"g{k}.{n}.global.parquet" for n in ("clusters", "verdicts")))
        relabel_group(f, ids[k], out)
        relabelled.append(out)
    return MergedGroups(relabelled, numbered)


@pytest.mark.parametrize("file_rows", [1, 2, 8_192])
def test_merged_groups_number_and_serve_the_rows_that_one_merge_of_every_group_makes(tmp_path, monkeypatch, file_rows):
    monkeypatch.setattr(near_merge, "GROUP_FILE_ROWS", file_rows)
    monkeypatch.setattr(near_merge, "MERGE_CLUSTERS", 2)
    monkeypatch.setattr(near_merge, "DECISIONS_FILE_ROWS", 3)
    expected, _counted = decision_rows([A[0], B[0]], [A[1], B[1]], ROWS_SCHEMA)
    for k, order in enumerate(([A, B], [B, A])):
        folder = tmp_path / str(k)
        folder.mkdir()
        merged = _merged(folder, order)
        assert merged.clusters == 6
        merged.write_decisions(folder / "decisions.parquet")
        assert pl.read_parquet(folder / "decisions.parquet").equals(expected.select(list(ROWS_SCHEMA)))
        # served per unit in ascending ranges of `_i`: the rows of that range, by `_i`
        served = [merged.rows(a, b) for a, b in ((0, 4), (4, 9), (9, 10), (10, 100))]
        assert [r["_i"].to_list() for r in served] == [[2, 3], [4, 5, 7, 8], [9], [10, 11, 12, 13]]
        assert pl.concat(served).equals(expected.sort("_i").select(SERVED))
        # images are numbered after the last text cluster with a row: own11's (the 6th)
        assert merged.first_free == 6


@pytest.mark.parametrize("parts", [1, 3])
def test_an_exact_copy_of_a_near_dropped_text_is_re_pointed_at_its_near_survivor(tmp_path, parts):
    files = _written(tmp_path, [A, B])
    drops = [tmp_path / f"g{k}.drops.parquet" for k in range(2)]
    for f, path in zip(files, drops):
        write_drops(f, path, parts)
    # exact copies name own8 (near-dropped), own10 (near-dropped, but an image), own3 (kept), run/x
    copies = tmp_path / "copies.parquet"
    write_partitioned(pl.DataFrame({"_i": [20, 21, 22, 23], "duplicate_of": ["own8", "own10", "own3", "run/x"]}),
                      "duplicate_of", parts, copies)
    rows = pl.concat([repoint_rows(read_partition([copies], p, parts, COPIES_SCHEMA),
                                   read_partition(drops, p, parts, DROPS_SCHEMA)) for p in range(parts)])
    assert rows.rows() == [(20, "own7")]


@pytest.mark.parametrize("file_rows", [1, 3, 8_192])
def test_the_streaming_numbering_gives_every_cluster_the_id_one_numbering_of_every_group_gives(tmp_path, monkeypatch,
                                                                                                 file_rows):
    """Seven groups of random published and own clusters (some groups without one kind, one without
    any), read a few rows at a time: each cluster's id is its rank among all of them, as
    `cluster_ids` gives it over every group at once, and images start after the last cluster with a row."""
    monkeypatch.setattr(near_merge, "GROUP_FILE_ROWS", file_rows)
    rng = np.random.default_rng(7)
    docs = rng.permutation(1_000)[:60].tolist()
    names = [f"run/{x}" for x in rng.permutation(1_000)[:25].tolist()]
    sizes = {0: 0, 1: 12, 2: 0, 3: 9, 4: 30, 5: 4, 6: 5}  # own clusters per group
    groups, d, n = [], 0, 0
    for g, own in sizes.items():
        ext = names[n:n + (0 if g == 2 else 4)]
        n += len(ext)
        stars = _stars(*[(7, True, r) for r in ext], *[(x, False, f"own{x}") for x in docs[d:d + own]])
        d += own
        # a published head has a row only with a drop: every other one has one, never the last by id
        drops = _drops(*[(k, 2_000 + 10 * g + k, f"drop{g}-{k}", -1, None, False, False)
                         for k, r in enumerate(ext) if k % 2 == 0 and r != max(names[:24])])
        groups.append((stars, drops))
    expected = cluster_ids(pl.concat([s for s, _ in groups]))
    files = _written(tmp_path, groups)
    ids = [tmp_path / f"g{k}.ids" for k in range(len(files))]
    numbered = number_clusters([f.stars for f in files], ids)
    # a group's ids are in its local order; back to its stars' order, then every group's in turn
    got = np.concatenate([np.fromfile(p, "<i8")[cluster_ids(s)] for p, (s, _) in zip(ids, groups)])
    assert got.tolist() == expected.tolist()
    assert numbered == {"clusters": 24 + 60, "first_free": 84}  # 6 groups of 4 published heads
    # without own clusters, images start after the last published head with a drop
    only_ext = [(s.filter(pl.col("external")), dr) for s, dr in groups]
    numbered = number_clusters([f.stars for f in _written(tmp_path / "x", only_ext)],
                               [tmp_path / f"x{k}.ids" for k in range(7)])
    heads = sorted(names[:24])
    with_drop = {r for s, _ in only_ext for k, r in enumerate(s["record_id"].to_list()) if k % 2 == 0 and r != heads[-1]}
    assert numbered == {"clusters": 24, "first_free": max(heads.index(r) for r in with_drop) + 1}
    assert numbered["first_free"] < 24  # the last published head has no drop: the case is exercised
