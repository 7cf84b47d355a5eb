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
    add_histograms,
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


def test_histograms_of_groups_add_up_to_the_histogram_of_all_their_sizes_in_bucket_order():
    groups = [[9, 2, 40], [3, 2], [], [17, 5, 2]]
    total = add_histograms([log2_histogram(g) for g in groups])
    assert total == log2_histogram([s for g in groups for s in g])
    assert list(total) == ["2", "3-4", "5-8", "9-16", "17-32", "33-64"]


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


# ------------------------------------------------------------------------------------------------
# Central stars: every drop has a verified path of at most two edges to a kept record.

from pipeline.dedup.lsh import CommonValues, central_stars, decision_similarity, pair_similarity  # noqa: E402


def _check_every_drop_is_justified(n, edges, survivor, via, hop_edges=None):
    """Each dropped record's survivor is kept; it is a verified neighbour of the survivor, or a
    second-hop neighbour of a record dropped directly for the same survivor."""
    e = {(min(a, b), max(a, b)) for a, b in edges}
    h = {(min(a, b), max(a, b)) for a, b in (hop_edges if hop_edges is not None else edges)}
    for d in range(n):
        s = survivor[d]
        if s < 0:
            continue
        assert survivor[s] == -1, f"{d} dropped for {s}, which is not kept"
        if via[d] < 0:
            assert (min(d, s), max(d, s)) in e
        else:
            m = via[d]
            assert survivor[m] == s and via[m] < 0 and (min(d, m), max(d, m)) in h


def test_a_chain_loses_no_content_with_central_stars_unlike_connected_components():
    # A path 0-1-2-...-9: each record resembles only its neighbours (content drifts along the
    # chain, so record 0 and record 9 share nothing). Connected components keep one record and
    # drop nine, most of them unrelated to it: content lost. Central stars drop only records
    # one verified edge (or one second hop) away from a kept record.
    n = 10
    edges = np.array([[i, i + 1] for i in range(n - 1)])
    sims = np.full(len(edges), 0.85)
    naive = components(n, edges)
    assert len(set(naive.tolist())) == 1  # naive: one survivor for all ten
    survivor, via, _sim = central_stars(n, edges, sims, np.zeros(n, np.int64), np.arange(n), np.zeros(n, bool), hop=edges)
    _check_every_drop_is_justified(n, edges, survivor, via)
    kept = [i for i in range(n) if survivor[i] < 0]
    # every record is a kept one or within two edges of one (so no record is far from every kept record)
    assert all(min(abs(i - k) for k in kept) <= 2 for i in range(n))
    assert len(kept) >= 2
    # without the second hop: within one edge
    survivor, via, _sim = central_stars(n, edges, sims, np.zeros(n, np.int64), np.arange(n), np.zeros(n, bool))
    _check_every_drop_is_justified(n, edges, survivor, via)
    kept = [i for i in range(n) if survivor[i] < 0]
    assert all(min(abs(i - k) for k in kept) <= 1 for i in range(n)) and (via < 0).all()


def test_central_stars_head_the_record_most_others_resemble():
    # 1 resembles 0, 2, 3 and 4; those resemble only 1. Longest-first would keep 0 and then
    # could not drop 2, 3, 4 through it.
    edges = np.array([[0, 1], [1, 2], [1, 3], [1, 4]])
    survivor, via, sim = central_stars(5, edges, np.array([0.9, 0.8, 0.7, 0.95]), np.zeros(5, np.int64), np.arange(5),
                                       np.zeros(5, bool))
    assert survivor.tolist() == [1, -1, 1, 1, 1] and (via == -1).all()
    assert sim.tolist()[0] == 0.9 and sim.tolist()[4] == 0.95


def test_central_stars_never_drop_a_published_record_and_let_it_head_first():
    edges = np.array([[0, 1], [1, 2], [1, 3]])
    prio = np.array([2**62, 0, 0, 0])  # record 0 is published: it outranks the more central 1
    survivor, via, _ = central_stars(4, edges, np.full(3, 0.9), prio, np.arange(4), np.array([True, False, False, False]))
    assert survivor.tolist() == [-1, 0, -2, -2]  # 2 and 3 resemble only 1, which is gone: both stay
    _check_every_drop_is_justified(4, edges, survivor, via)
    survivor, via, _ = central_stars(4, edges, np.full(3, 0.9), prio, np.arange(4), np.array([True, False, False, False]),
                                     hop=edges)
    assert survivor.tolist() == [-1, 0, 0, 0] and via.tolist() == [-1, -1, 1, 1]  # second hop through 1


def test_random_graphs_drop_only_with_a_short_verified_path_to_a_kept_record():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        m = int(rng.integers(1, 3 * n))
        e = rng.integers(0, n, size=(m, 2))
        e = np.unique(np.sort(e[e[:, 0] != e[:, 1]], axis=1), axis=0)
        if not len(e):
            continue
        hop = e[rng.random(len(e)) < 0.7]
        protected = rng.random(n) < 0.1
        survivor, via, _ = central_stars(n, e, rng.random(len(e)), np.where(protected, 2**62, 0), rng.permutation(n),
                                         protected, hop=hop)
        _check_every_drop_is_justified(n, e, survivor, via, hop)
        assert not (protected & (survivor >= 0)).any()


# ------------------------------------------------------------------------------------------------
# Boilerplate: minima shared by many documents are left out of the content similarity.


def _sigs(texts):
    sig, _ = signatures(normalize_for_shingles(pa.array(texts, pa.large_string())), MinHashParams())
    return sig


def test_shared_boilerplate_does_not_make_different_pages_alike_but_added_boilerplate_still_matches():
    rng = random.Random(8)
    header = " ".join(f"nav{k}" for k in range(60))          # a long site header
    bodies = [" ".join(f"w{rng.randrange(100000)}" for _ in range(25)) for _ in range(60)]
    pages = [header + " " + b for b in bodies]               # 60 different pages of one site
    texts = pages + [bodies[0]]                              # and page 0's body without the header
    sig = _sigs(texts)
    cv = CommonValues(len(texts), sig.shape[1], 20)
    cv.add(sig, np.arange(len(texts)))
    common = cv.common(sig)
    est, content, positions = pair_similarity(sig, common, np.array([0, 0]), np.array([1, 60]))
    sim = decision_similarity(est, content, positions)
    assert est[0] > 0.5 and sim[0] < 0.2        # two different pages: alike by shingles, not by content
    assert est[1] < 0.5 and sim[1] > 0.75       # a page and its body alone: one text by content (21 of 25
    # content shingles: the 4 that span the header and the body are the page's own)
    # without the sketch both estimates are the plain Jaccard
    est2, content2, pos2 = pair_similarity(sig, None, np.array([0]), np.array([1]))
    assert content2[0] == est2[0] == est[0] and pos2[0] == 128


def test_common_values_never_undercount():
    sig = _sigs([f"alpha beta gamma delta epsilon {k}" for k in range(30)] + ["totally different words here now"] * 3)
    cv = CommonValues(33, sig.shape[1], 3)
    cv.add(sig, np.arange(33))
    common = cv.common(sig)
    assert common[30:].all()  # three identical documents: each of their minima recurs three times


def test_sketches_of_parts_added_up_are_the_sketch_of_the_whole_capped_counts_included(tmp_path):
    """The `boilerplate-part` tasks each count a range of units and writes its sketch; the sketches
    added up are the sketch one pass over every signature makes, also where a counter is capped
    (65,535)."""
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 2**32, (300, 128), dtype=np.uint64).astype(np.uint32)
    sig[200:] = sig[0]                        # one signature 100 more times
    rows = np.concatenate([np.arange(300), np.repeat(np.arange(200, 300), 700)])  # 70,100 times in all
    whole = CommonValues(300, 128, 20)
    whole.add(sig, rows)
    assert whole.table.max() == 65535
    parts = [CommonValues(300, 128, 20) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(rows, 3)):
        part.add(sig, chunk)
    summed = CommonValues(300, 128, 20)
    for k, part in enumerate(parts):
        part.table.tofile(tmp_path / f"p{k}.u16")
        summed.absorb(tmp_path / f"p{k}.u16")
    assert np.array_equal(summed.table, whole.table)
    CommonValues(10**6, 128, 20).table.tofile(tmp_path / "big.u16")
    with pytest.raises(ValueError, match="another size"):
        summed.absorb(tmp_path / "big.u16")
