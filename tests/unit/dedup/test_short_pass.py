"""The short-document pass: boilerplate words removed on word 5-grams, content compared exactly by character 5-grams."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from pipeline.dedup.minhash import normalize_for_shingles
from pipeline.dedup.short_pass import MIN_SHINGLES, content_texts, short_pairs, word_counts

TEMPLATE = "sign up for our free newsletter and get the best stories delivered to your inbox every morning"


def norm(texts: list[str]) -> pa.Array:
    return normalize_for_shingles(pa.array(texts, pa.large_string()))


def test_words_are_counted_on_normalised_text():
    assert word_counts(norm(["", "one", "Two words!", "a  b   c"])).tolist() == [0, 1, 2, 3]


def test_a_template_found_in_many_texts_is_removed_and_the_content_kept():
    rng = random.Random(3)
    bodies = [" ".join(f"w{rng.randrange(10**6)}" for _ in range(12)) for _ in range(30)]
    texts = [f"{TEMPLATE}\n{b}" for b in bodies] + ["a text of its own with only a few words"]
    out = content_texts(norm(texts), min_docs=20).to_pylist()
    assert out[:30] == [b for b in bodies] and out[30] == "a text of its own with only a few words"
    # below the floor nothing is boilerplate
    assert content_texts(norm(texts[:10]), min_docs=20).to_pylist()[0].startswith("sign up for")
    assert content_texts(norm(texts), min_docs=0).to_pylist() == norm(texts).to_pylist()


def test_a_word_swap_and_a_template_copy_of_a_short_text_pair_with_it_but_two_pages_of_one_template_do_not():
    rng = random.Random(5)
    source = "the quiet harbour town woke slowly while fishing boats drifted past the old lighthouse"
    words = source.split()
    words[3], words[4] = words[4], words[3]
    swapped = " ".join(words)
    others = [" ".join(f"v{rng.randrange(10**6)}" for _ in range(10)) for _ in range(25)]
    texts = [source, swapped, f"{TEMPLATE}\n{source}"] + [f"{TEMPLATE}\n{o}" for o in others]
    content = content_texts(norm(texts), min_docs=20)
    pairs, sims, stats = short_pairs(content, 0.75, MIN_SHINGLES)   # one swap in 14 words: 0.80
    got = {tuple(p) for p in pairs.tolist()}
    assert got == {(0, 1), (0, 2), (1, 2)} and (sims >= 0.75).all() and stats["verified_pairs"] == 3
    assert {tuple(p) for p in short_pairs(content, 0.85, MIN_SHINGLES)[0].tolist()} == {(0, 2)}


def test_texts_too_short_to_judge_and_ineligible_ones_are_never_paired():
    texts = ["feign", "feigned", "blue sky", "blue sky"]
    pairs, _sims, stats = short_pairs(content_texts(norm(texts), 20), 0.5, MIN_SHINGLES)
    assert pairs.size == 0 and stats["compared"] == 0
    long_enough = ["a long enough text about harbours and lighthouses by the sea"] * 2
    pairs, _, _ = short_pairs(norm(long_enough), 0.9, MIN_SHINGLES, eligible=np.array([True, False]))
    assert pairs.size == 0
    pairs, sims, _ = short_pairs(norm(long_enough), 0.9, MIN_SHINGLES)
    assert pairs.tolist() == [[0, 1]] and sims.tolist() == [1.0]
