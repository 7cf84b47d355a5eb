"""Hamming indexes: multi-index hashing returns exactly what brute force returns, at every radius."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.safety.index import HammingIndex, HashIndexError, LinearIndex


def flip(words: np.ndarray, bits: np.ndarray) -> np.ndarray:
    out = words.copy()
    for b in bits:
        out[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def planted(seed: int = 7, n_random: int = 20_000, centres: int = 12, words: int = 4):
    """Random hashes plus, around each centre, one neighbour at every distance 0..40."""
    rng = np.random.default_rng(seed)
    nbits = words * 64
    background = rng.integers(0, 2**64, (n_random, words), dtype=np.uint64)
    queries = rng.integers(0, 2**64, (centres, words), dtype=np.uint64)
    near = [flip(q, rng.choice(nbits, d, replace=False)) for q in queries for d in range(41)]
    hashes = np.concatenate([background, np.array(near, dtype=np.uint64)])
    order = rng.permutation(len(hashes))        # planted entries spread through the list
    return hashes[order], [f"e{i}" for i in order], queries


@pytest.fixture(scope="module")
def big():
    hashes, ids, queries = planted()
    linear, mih = LinearIndex(), HammingIndex()
    linear.build(hashes, ids)
    mih.build(hashes, ids)
    return linear, mih, queries


def test_at_radius_31_mih_returns_exactly_the_planted_neighbours_within_31(big):
    linear, mih, queries = big
    got = mih.query_many(queries, 31)
    assert got == linear.query_many(queries, 31)
    for results in got:
        # 0..31 planted, nothing else: a random 256-bit hash is within 31 bits with probability ~2^-120.
        assert [d for _, d in results] == list(range(32))


@pytest.mark.parametrize("radius", [0, 1, 15, 16, 32, 40, 47, 63])
def test_mih_equals_brute_force_at_other_radii(big, radius):
    linear, mih, queries = big
    assert mih.query_many(queries, radius) == linear.query_many(queries, radius)


@pytest.mark.parametrize("chunks", [8, 11, 12, 13, 20, 32, 64])
def test_mih_is_exact_for_chunk_layouts_that_straddle_words(chunks):
    hashes, ids, queries = planted(seed=chunks, n_random=3000, centres=4)
    linear, mih = LinearIndex(), HammingIndex(chunks, scan_fallback=False)
    linear.build(hashes, ids)
    mih.build(hashes, ids)
    for radius in (0, 31, 40):
        assert mih.query_many(queries, radius) == linear.query_many(queries, radius)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    words=st.sampled_from([1, 2, 4]),
    chunk_bits=st.sampled_from([8, 12, 16, 21, 32]),
    radius=st.integers(0, 70),
    flips=st.lists(st.integers(0, 70), min_size=1, max_size=6),
)
def test_mih_equals_brute_force_on_random_lists(seed, n, words, chunk_bits, radius, flips):
    rng = np.random.default_rng(seed)
    nbits = 64 * words
    # Few distinct values, so duplicates and near neighbours are common.
    hashes = rng.integers(0, 2**64, (max(1, n // 3), words), dtype=np.uint64)[rng.integers(0, max(1, n // 3), n)]
    queries = np.array([flip(hashes[rng.integers(n)], rng.choice(nbits, min(f, nbits), replace=False))
                        for f in flips], dtype=np.uint64)
    ids = [f"id{i}" for i in range(n)]
    linear, mih = LinearIndex(), HammingIndex(max(1, nbits // chunk_bits), scan_fallback=False)
    linear.build(hashes, ids)
    mih.build(hashes, ids)
    assert mih.query_many(queries, radius) == linear.query_many(queries, radius)


def test_results_are_sorted_by_distance_then_build_order_and_keep_duplicates():
    base = np.zeros(4, dtype=np.uint64)
    hashes = np.array([flip(base, np.arange(3)), base, flip(base, np.arange(1)), base], dtype=np.uint64)
    for index in (LinearIndex(), HammingIndex(scan_fallback=False)):
        index.build(hashes, ["c", "a", "b", "d"])
        assert index.query(base, 31) == [("a", 0), ("d", 0), ("b", 1), ("c", 3)]
        assert index.query(base, 0) == [("a", 0), ("d", 0)]


def test_many_results_overflow_the_first_buffer_and_are_all_returned():
    hashes = np.zeros((5000, 4), dtype=np.uint64)
    index = HammingIndex(scan_fallback=False)
    index.build(hashes, [str(i) for i in range(5000)])
    assert [i for i, _ in index.query(hashes[0], 2)] == [str(i) for i in range(5000)]


def test_a_radius_too_large_for_the_tables_scans_and_stays_exact(big):
    linear, _, queries = big
    hashes, ids, _ = planted(n_random=2000, centres=2)
    small, ref = HammingIndex(), LinearIndex()
    small.build(hashes, ids)
    ref.build(hashes, ids)
    assert small.query_many(queries, 100) == ref.query_many(queries, 100)


def test_empty_indexes_answer_nothing():
    for index in (LinearIndex(), HammingIndex()):
        index.build(np.zeros((0, 4), dtype=np.uint64), [])
        assert len(index) == 0
        assert index.query(np.zeros(4, dtype=np.uint64), 31) == []
        assert index.query_many(np.zeros((3, 4), dtype=np.uint64), 31) == [[], [], []]


def test_bad_arrays_and_radii_are_refused_with_a_hash_index_error():
    index = HammingIndex()
    with pytest.raises(HashIndexError, match="uint64"):
        index.build(np.zeros((3, 4), dtype=np.int64), ["a", "b", "c"])
    with pytest.raises(HashIndexError, match="3 hashes but 2 ids"):
        index.build(np.zeros((3, 4), dtype=np.uint64), ["a", "b"])
    with pytest.raises(HashIndexError, match="chunks"):
        HammingIndex(4).build(np.zeros((3, 4), dtype=np.uint64), ["a", "b", "c"])
    index.build(np.zeros((3, 4), dtype=np.uint64), ["a", "b", "c"])
    with pytest.raises(HashIndexError, match="words"):
        index.query(np.zeros(2, dtype=np.uint64), 31)
    with pytest.raises(HashIndexError, match="radius"):
        index.query(np.zeros(4, dtype=np.uint64), -1)


def test_rebuilding_replaces_the_previous_content():
    index = HammingIndex()
    index.build(np.zeros((2, 4), dtype=np.uint64), ["old1", "old2"])
    index.build(np.full((1, 4), 2**64 - 1, dtype=np.uint64), ["new"])
    assert index.query(np.zeros(4, dtype=np.uint64), 31) == []
    assert index.query(np.full(4, 2**64 - 1, dtype=np.uint64), 0) == [("new", 0)]
