"""LSH banding and candidate generation: the same candidate pairs as datasketch's MinHashLSH."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH

from pipeline.dedup.lsh import (
    anti_chaining_stars,
    band_keys,
    bucket_pairs,
    candidate_probability,
    choose_bands,
    components,
    log2_histogram,
    neighbour_lists,
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


def _matrix_similarity(matrix: dict[tuple[int, int], float]):
    """A similarity callable over a small symmetric table (absent pairs: 0)."""
    def sim(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.array([matrix.get((min(a, b), max(a, b)), 0.0) for a, b in zip(left, right)])
    return sim


# A tiny cluster: S is the longest copy (so it heads the cluster), O the original, D an edit of O.
# S~O 0.85 and O~D 0.85, but S~D only 0.70: below the 0.8 threshold.
S, O, D = 0, 1, 2
TRIANGLE = {(S, O): 0.85, (O, D): 0.85, (S, D): 0.70}
NOBODY_PUBLISHED = np.zeros(3, dtype=bool)


def test_anti_chaining_keeps_a_record_apart_when_it_only_resembles_a_dropped_one():
    stars = anti_chaining_stars(np.array([S, O, D]), _matrix_similarity(TRIANGLE), 0.8, NOBODY_PUBLISHED)
    assert [(st.survivor, st.dropped, st.via) for st in stars] == [(S, [O], [-1])]  # D survives alone


def test_a_second_hop_drops_it_for_the_same_survivor_and_names_the_record_in_between():
    hop = neighbour_lists(3, np.array([[S, O], [O, D]]))  # the pairs verified at the second bar
    stars = anti_chaining_stars(np.array([S, O, D]), _matrix_similarity(TRIANGLE), 0.8, NOBODY_PUBLISHED, hop)
    assert len(stars) == 1
    assert (stars[0].survivor, stars[0].dropped, stars[0].via) == (S, [O, D], [-1, O])
    assert stars[0].similarity == [0.85, 0.70]  # always the similarity to the survivor


def test_the_second_hop_never_reaches_further_than_one_step():
    # S~A~B~C, each step 0.85, nothing else similar: with one extra hop B goes via A, C does not.
    a, b, c = 1, 2, 3
    chain = {(S, a): 0.85, (a, b): 0.85, (b, c): 0.85}
    hop = neighbour_lists(4, np.array([[S, a], [a, b], [b, c]]))
    stars = anti_chaining_stars(np.array([S, a, b, c]), _matrix_similarity(chain), 0.8, np.zeros(4, dtype=bool), hop)
    assert [(st.survivor, st.dropped) for st in stars] == [(S, [a, b])]  # C is left alone: it survives


def test_the_second_hop_never_drops_a_published_record():
    hop = neighbour_lists(3, np.array([[S, O], [O, D]]))
    published = np.array([False, False, True])  # D is already in someone's training data
    stars = anti_chaining_stars(np.array([S, O, D]), _matrix_similarity(TRIANGLE), 0.8, published, hop)
    assert [(st.survivor, st.dropped) for st in stars] == [(S, [O])]


def test_neighbour_lists_are_symmetric_and_sorted():
    indptr, indices = neighbour_lists(4, np.array([[0, 2], [0, 1], [2, 3]]))
    assert [indices[indptr[k]:indptr[k + 1]].tolist() for k in range(4)] == [[1, 2], [0], [0, 3], [2]]
