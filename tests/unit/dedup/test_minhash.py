"""MinHash signatures: identical to datasketch's for the same shingles and seed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, shingle_hash32, shingles, signatures


def reference(text: str, params: MinHashParams) -> tuple[np.ndarray, int]:
    m = MinHash(num_perm=params.num_perm, seed=params.seed, hashfunc=shingle_hash32)
    sh = shingles(text, params)
    for s in sh:
        m.update(s)
    return m.hashvalues, len(sh)


def check_equal(texts: list[str], params: MinHashParams) -> None:
    norm = normalize_for_shingles(pa.array(texts, pa.large_string()))
    sig, counts = signatures(norm, params)
    for i, t in enumerate(norm.to_pylist()):
        hv, n = reference(t, params)
        assert n == counts[i]
        assert np.array_equal(hv, sig[i]), f"signature {i} differs from datasketch"


def test_word_shingle_signatures_equal_datasketch_hashvalues():
    check_equal(["The quick brown fox jumps over the lazy dog again and again.", "Hello, world!"], MinHashParams())


def test_character_shingles_work_for_japanese_and_chinese_text():
    texts = ["東京は日本の首都です。人口が多い都市です。", "北京是中国的首都，人口很多。"]
    params = MinHashParams(char_ngrams=True, ngram=3)
    check_equal(texts, params)
    norm = normalize_for_shingles(pa.array([texts[0], texts[0] + "今日は晴れ。"], pa.large_string()))
    sig, _ = signatures(norm, params)
    assert 0.6 < np.mean(sig[0] == sig[1]) < 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab cdé,.!\n\tΩ日"), max_size=40), min_size=1, max_size=6),
       st.integers(1, 6), st.booleans(), st.sampled_from(["whole", "skip"]), st.integers(0, 10))
def test_signatures_equal_datasketch_for_any_text_and_settings(texts, ngram, char_mode, short, seed):
    check_equal(texts, MinHashParams(num_perm=32, seed=seed, ngram=ngram, char_ngrams=char_mode, short_docs=short))


def test_short_documents_are_one_shingle_or_skipped_as_configured():
    norm = normalize_for_shingles(pa.array(["just three words", "", "!!!"], pa.large_string()))
    _, whole = signatures(norm, MinHashParams(short_docs="whole"))
    _, skip = signatures(norm, MinHashParams(short_docs="skip"))
    assert whole.tolist() == [1, 0, 0] and skip.tolist() == [0, 0, 0]


def test_normalisation_folds_case_punctuation_width_and_whitespace():
    norm = normalize_for_shingles(pa.array(["Hello,   WORLD!\n\tＦｕｌｌ-width"], pa.large_string()))
    assert norm.to_pylist() == ["hello world full width"]


def test_near_copies_have_high_estimated_similarity_and_strangers_low():
    import random

    rng = random.Random(3)
    words = [f"w{i}" for i in range(500)]
    base = " ".join(rng.choices(words, k=200))
    edited = base.replace(base.split()[100], "changed", 1)
    texts = [base, edited, " ".join(rng.choices(words, k=200))]
    sig, _ = signatures(normalize_for_shingles(pa.array(texts, pa.large_string())), MinHashParams())
    assert np.mean(sig[0] == sig[1]) > 0.7 and np.mean(sig[0] == sig[2]) < 0.1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab cd,é日"), max_size=30), min_size=1, max_size=5),
       st.integers(1, 4), st.booleans())
def test_shingle_sets_are_the_sorted_unique_64_bit_hashes_of_the_shingles(texts, ngram, char_mode):
    from pipeline.dedup.minhash import pair_jaccard, shingle_sets

    params = MinHashParams(ngram=ngram, char_ngrams=char_mode)
    norm = normalize_for_shingles(pa.array(texts, pa.large_string()))
    flat, offs = shingle_sets(norm, params)
    sets = []
    for i, t in enumerate(norm.to_pylist()):
        expected = sorted({fnv1a64(s) for s in shingles(t, params)})
        assert flat[offs[i]:offs[i + 1]].tolist() == expected
        sets.append(set(expected))
    if len(texts) >= 2 and (sets[0] | sets[1]):
        got = pair_jaccard(flat, offs, np.array([0]), np.array([1]))[0]
        assert got == len(sets[0] & sets[1]) / len(sets[0] | sets[1])
