"""The short-document pass: boilerplate words removed on word 5-grams, content compared exactly by character 5-grams."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, pair_jaccard, shingle_sets
from pipeline.dedup import short_pass
from pipeline.dedup.short_pass import MIN_SHINGLES, _set_sizes, content_texts, number_conflicts, short_pairs, word_counts

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


def reference_content(texts: list[str], min_docs: int, count_in: list[bool]) -> list[str]:
    """The definition, in Python: words covered by a word 5-gram (a shorter text: itself), or by a
    text's first or last 3 or 4 words, that occurs in at least `min_docs` counted texts (once per
    text)."""
    def grams(t: str) -> list[tuple[int, int, str]]:
        w = t.split(" ") if t else []
        if not w:
            return []
        out = [(0, len(w), t)] if len(w) < 5 else [(u, u + 5, " ".join(w[u:u + 5])) for u in range(len(w) - 4)]
        for k in (3, 4):
            if k < len(w):
                out += [(0, k, "^" + " ".join(w[:k])), (len(w) - k, len(w), " ".join(w[-k:]) + "$")]
        return out
    docs: dict[str, int] = {}
    for t, c in zip(texts, count_in):
        for g in {g for _s, _e, g in grams(t)} if c else ():
            docs[g] = docs.get(g, 0) + 1
    out = []
    for t in texts:
        w = t.split(" ") if t else []
        cover = [False] * len(w)
        for s, e, g in grams(t):
            if docs.get(g, 0) >= min_docs:
                cover[s:e] = [True] * (e - s)
        out.append(" ".join(x for x, c in zip(w, cover) if not c))
    return out


@pytest.mark.parametrize("chunk", [7, 20_000])
def test_boilerplate_words_match_the_definition_with_repeats_inside_texts_and_uncounted_texts(monkeypatch, chunk):
    monkeypatch.setattr(short_pass, "CHUNK", chunk)   # texts are processed a chunk at a time
    rng = random.Random(11)
    vocab = [f"w{k}" for k in range(12)]   # a small vocabulary: many grams recur, some twice in one text
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))) for _ in range(400)]
    texts += ["w1 w2 w3 w4 w5 w1 w2 w3 w4 w5"] * 3 + [""]
    count_in = [rng.random() < 0.7 for _ in texts]
    arr = pa.array(texts, pa.large_string())
    for min_docs in (2, 5, 40):
        assert content_texts(arr, min_docs, np.array(count_in)).to_pylist() == reference_content(texts, min_docs, count_in)
        assert content_texts(arr, min_docs).to_pylist() == reference_content(texts, min_docs, [True] * len(texts))


def test_pairs_do_not_depend_on_how_the_set_sizes_are_chunked():
    rng = random.Random(7)
    base = [" ".join(f"t{rng.randrange(300)}" for _ in range(rng.randint(3, 20))) for _ in range(60)]
    texts = norm(base + [b.upper() + "!" for b in base[:30]])   # copies that keep their words
    params = MinHashParams(num_perm=128, seed=1, ngram=5, char_ngrams=True, short_docs="skip")
    whole = np.diff(shingle_sets(texts, params)[1])
    assert _set_sizes(texts, params, chunk=7).tolist() == whole.tolist()
    flat, offs = shingle_sets(texts, params)
    chunked = short_pass._sets(texts, params, chunk=7)
    assert np.array_equal(chunked[0], flat) and np.array_equal(chunked[1], offs)
    pairs, sims, _ = short_pairs(texts, 0.6, MIN_SHINGLES)
    flat, offs = shingle_sets(texts, params)
    assert len(pairs) >= 25 and np.array_equal(sims, pair_jaccard(flat, offs, pairs[:, 0], pairs[:, 1]))


def test_two_pages_of_one_template_that_differ_in_their_number_are_not_paired_but_a_copy_is():
    rng = random.Random(13)
    stock = [f"stock sentence {w} says the same thing on every page of the site"
             for w in ("one", "two", "three", "four", "five", "six")]
    topics, names = ["film photography", "home networking", "trail running"], ["Chiara Weber", "Elena Yilmaz", "Hiro Sato"]
    pages = []
    for n in range(30, 60):   # the stock sentences are boilerplate: what is left is title, number, contact
        name = rng.choice(names)
        pages.append(f"A short guide to {rng.choice(topics)} (#{n}). " + " ".join(rng.sample(stock, 4))
                     + f" Questions to {name} at {name.lower().replace(' ', '.')}@example.com.")
    first, last = pages[5].split("Questions to ")[1].split(" at ")[0].split()
    texts = pages + [pages[5].replace(f"to {first} {last}", f"to {last}, {first}")]   # a copy of page 35, names reordered
    pairs, _sims, stats = short_pairs(content_texts(norm(texts), min_docs=20), 0.6, MIN_SHINGLES)
    assert {tuple(p) for p in pairs.tolist()} == {(5, 30)} and stats["vetoed_by_numbers"] > 0


def test_numbers_conflict_only_when_each_side_has_one_the_other_lacks():
    texts = norm(["post 35 by chiara", "post 101 by chiara", "post 35 by chiara in 2024", "post by chiara", "v2 notes", "v3 notes"])
    got = number_conflicts(texts, np.array([0, 0, 0, 4]), np.array([1, 2, 3, 5])).tolist()
    assert got == [True, False, False, True]


def test_texts_that_share_most_characters_but_not_their_words_are_not_paired_while_a_word_swap_is():
    a = "oft he had faded walnut tinge enveloped"          # two generated texts of different clusters
    b = "edward had faded walnut tinge enveloped"          # (1M tuning corpus): characters 0.71, words 0.63
    swap = "oft he had walnut faded tinge enveloped"
    content = norm([a, b, swap])
    pairs, sims, stats = short_pairs(content, 0.6, MIN_SHINGLES)
    assert pairs.tolist() == [[0, 2]] and stats["vetoed_by_words"] >= 1


def test_a_header_shorter_than_five_words_is_found_at_the_start_of_many_texts():
    rng = random.Random(5)
    texts = [f"this article was written {' '.join(f'w{rng.randrange(10**6)}' for _ in range(rng.randint(1, 12)))}"
             for _ in range(60)]
    texts += ["this article was written brac wondrously", "this article was written wondrously"]
    content = content_texts(pa.array(texts, pa.large_string()), min_docs=20).to_pylist()
    assert not any(c.startswith("this article") for c in content)      # the 4-word header is boilerplate
    assert content[-2:] == ["brac wondrously", "wondrously"]             # what is left is the content
    # a 4-word start that only a few texts share is content
    assert content_texts(pa.array(texts[:10], pa.large_string()), min_docs=20).to_pylist() == texts[:10]


def test_a_short_text_that_is_another_plus_or_minus_a_word_or_with_one_word_changed_is_not_paired():
    texts = ["Boss, journeyman, apprentice, churchman and was.",       # generated originals of different
             "Boss, journeyman, apprentice, churchman and.",           # clusters (1M corpora, issue #16)
             "One was very Warlicke appointment punctually, however.",
             "Weston was very Warlicke appointment punctually, however.",
             "Boss, apprentice, journeyman, churchman and was.",        # a reordered copy of the first
             "BOSS journeyman apprentice churchman and was"]            # a reformatted one
    pairs, _sims, stats = short_pairs(norm(texts), 0.6, MIN_SHINGLES)
    assert {tuple(p) for p in pairs.tolist()} == {(0, 4), (0, 5), (4, 5)} and stats["vetoed_by_words"] >= 2


def test_words_disagree_on_a_strict_subset_or_a_low_jaccard_but_not_on_the_same_words():
    flat, offs = shingle_sets(norm(["a b c d e", "a b c d", "e d c b a", "a b c d f", "a b c d e f g h i j",
                                    "a b c d e f g h i k"]),
                              MinHashParams(ngram=1, char_ngrams=False, short_docs="whole"))
    got = short_pass.words_disagree(flat, offs, np.array([0, 0, 0, 4]), np.array([1, 2, 3, 5])).tolist()
    assert got == [True, False, True, False]   # subset; same words; 4/6; 9/11 >= 0.8
