"""LSH banding and candidate generation: the same candidate pairs as datasketch's MinHashLSH."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH

from pipeline.dedup.lsh import (
    band_keys,
    bucket_pairs,
    candidate_probability,
    choose_bands,
    components,
    log2_histogram,
    unique_pairs,
)
from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, signatures


def corpus(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(2000)]
    docs = []
    for _ in range(n):
        if docs and rng.random() < 0.3:
            base = rng.choice(docs).split()
            for _ in range(rng.randint(0, 6)):
                base[rng.randrange(len(base))] = rng.choice(words)
            docs.append(" ".join(base))
        else:
            docs.append(" ".join(rng.choices(words, k=rng.randint(30, 120))))
    return docs


def test_banding_meets_the_recall_target_at_the_threshold():
    bands, rows, p = choose_bands(128, 0.8, 0.9)
    assert (bands, rows) == (16, 8) and p >= 0.9
    assert candidate_probability(0.8, 9, 13) < 0.45  # datasketch's "optimal" choice, for contrast
    for t in (0.5, 0.7, 0.85, 0.9):
        b, r, p = choose_bands(128, t, 0.9)
        assert b * r <= 128 and p >= 0.9


def test_candidate_pairs_equal_datasketch_minhashlsh_on_thousands_of_documents():
    docs = corpus(3000)
    sig, counts = signatures(normalize_for_shingles(pa.array(docs, pa.large_string())), MinHashParams())
    bands, rows, _ = choose_bands(128, 0.8, 0.9)
    keys = band_keys(sig, bands, rows)
    ours = unique_pairs([bucket_pairs(np.arange(len(docs)), keys[:, k], limit=10**6) for k in range(bands)])

    lsh = MinHashLSH(num_perm=128, params=(bands, rows))
    for i in range(len(docs)):
        lsh.insert(i, MinHash(num_perm=128, hashvalues=sig[i], scheme="affine32"))
    theirs = set()
    for i in range(len(docs)):
        for j in lsh.query(MinHash(num_perm=128, hashvalues=sig[i], scheme="affine32")):
            if j != i:
                theirs.add((min(i, j), max(i, j)))
    assert len(theirs) > 500
    assert set(map(tuple, ours.tolist())) == theirs


def test_a_huge_bucket_costs_linear_pairs_and_still_connects_every_member():
    docs = np.arange(1000)
    pairs = bucket_pairs(docs, np.zeros(1000, dtype=np.uint64), limit=64)
    assert len(pairs) == 999
    assert len(set(components(1000, pairs).tolist())) == 1


def test_small_buckets_give_every_pair():
    pairs = bucket_pairs(np.array([5, 3, 9, 1]), np.array([7, 7, 7, 2], dtype=np.uint64), limit=64)
    assert sorted(map(tuple, pairs.tolist())) == [(3, 5), (3, 9), (5, 9)]


def test_components_label_each_group_by_its_lowest_member():
    labels = components(6, np.array([[4, 5], [1, 2], [2, 3]]))
    assert labels.tolist() == [0, 1, 1, 1, 4, 4]


def test_cluster_size_histogram_uses_power_of_two_buckets():
    assert log2_histogram([2, 2, 3, 4, 5, 9, 1]) == {"2": 2, "3-4": 2, "5-8": 1, "9-16": 1}


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_an_impossible_threshold_is_rejected_by_the_config(threshold):
    from pipeline.config import NearDedupConfig

    with pytest.raises(Exception):
        NearDedupConfig(threshold=threshold)
