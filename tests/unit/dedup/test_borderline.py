"""`verify: borderline`: which pairs are re-checked, and the exact Jaccard of texts read back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, shingle_sets
from pipeline.dedup.borderline import TextSets, borderline

PARAMS = MinHashParams(num_perm=128, seed=1, ngram=5, char_ngrams=False, short_docs="whole")


def test_pairs_within_three_standard_errors_of_the_threshold_are_borderline():
    # at 0.6 over 128 positions one standard error is 0.043: 3 of them reach 0.47..0.73
    sim = np.array([0.60, 0.70, 0.50, 0.75, 0.45, 0.62])
    pos = np.full(len(sim), 128)
    assert borderline(sim, pos, 0.6, 128, 3.0).tolist() == [True, True, True, False, False, True]
    # an estimate over fewer content positions is noisier: its band is wider (0.75 at 40 positions)
    assert borderline(np.array([0.75]), np.array([40]), 0.6, 128, 3.0).tolist() == [True]
    # below MIN_CONTENT_POSITIONS the decision uses every position, so the band is the narrow one
    assert borderline(np.array([0.75]), np.array([8]), 0.6, 128, 3.0).tolist() == [False]


def test_text_sets_give_the_exact_jaccard_and_read_each_text_once():
    words = [f"w{k}" for k in range(40)]
    texts = {(0, 0): " ".join(words), (0, 3): " ".join(words[:30] + ["x"] * 10), (1, 2): " ".join(reversed(words))}
    reads: list[tuple[int, int]] = []

    def read(units: np.ndarray, rows: np.ndarray) -> list[str]:
        reads.extend(zip(units.tolist(), rows.tolist()))
        return [texts[(u, r)] for u, r in zip(units.tolist(), rows.tolist())]

    units, rows = np.array([0, 0, 1]), np.array([0, 3, 2])
    sets = TextSets(read, units, rows, PARAMS, None)
    got, union = sets.jaccard(np.array([0, 0]), np.array([1, 2]))
    flat, offs = shingle_sets(normalize_for_shingles(pa.array([texts[(0, 0)], texts[(0, 3)], texts[(1, 2)]])), PARAMS)
    s = [set(flat[offs[k]:offs[k + 1]].tolist()) for k in range(3)]
    assert got.tolist() == [len(s[0] & s[1]) / len(s[0] | s[1]), len(s[0] & s[2]) / len(s[0] | s[2])]
    assert 0.5 < got[0] < 0.7 and got[1] == 0.0
    assert union.tolist() == [len(s[0] | s[1]), len(s[0] | s[2])]
    sets.jaccard(np.array([1]), np.array([2]))  # all three are known now: nothing is read again
    assert sorted(reads) == [(0, 0), (0, 3), (1, 2)] and len(sets) == 3


def test_the_shingles_behind_boilerplate_minima_are_nearly_every_shingle_of_a_template_and_no_content():
    import random

    from pipeline.dedup.lsh import CommonValues
    from pipeline.dedup.minhash import mixed_hashes, signatures, unpermuted

    rng = random.Random(3)
    header = " ".join(f"h{k}" for k in range(30))
    docs = [header + " " + " ".join(f"w{rng.randrange(10**9)}" for _ in range(100)) for _ in range(200)]
    norm = normalize_for_shingles(pa.array(docs))
    sig, _ = signatures(norm, PARAMS)
    sketch = CommonValues(len(docs), 128, 20)
    sketch.add(sig, np.arange(len(docs)))
    boilerplate = unpermuted(sig, sketch.common(sig), PARAMS)
    flat, offs = shingle_sets(norm.slice(0, 1), PARAMS)
    flags = np.isin(mixed_hashes(flat), boilerplate)
    head, _ = shingle_sets(normalize_for_shingles(pa.array([header])), PARAMS)
    in_header = np.isin(flat, head)
    assert in_header.sum() == 26                          # the header's own 5-grams
    # the template's minimum at a position heads about 40 of the 200 signatures there, over the
    # floor of 20: each of its shingles is that minimum at a few positions
    assert flags[in_header].mean() >= 0.9
    assert flags[~in_header].sum() == 0                   # the content's are not found


def test_a_minimum_names_the_one_shingle_it_came_from():
    from pipeline.dedup.minhash import mixed_hashes, signatures, unpermuted

    norm = normalize_for_shingles(pa.array(["one two three four five six seven"]))
    sig, _ = signatures(norm, PARAMS)
    flat, _ = shingle_sets(norm, PARAMS)
    # every minimum comes from one of the text's three 5-grams, and together they name all three
    assert set(unpermuted(sig, np.ones_like(sig, bool), PARAMS).tolist()) == set(mixed_hashes(flat).tolist())


def test_a_record_that_cannot_be_read_back_is_a_clear_error_not_a_silent_estimate(monkeypatch):
    from types import SimpleNamespace

    import pytest

    import pipeline.run.rows as rows_mod
    from pipeline.errors import PipelineError
    from pipeline.stages.near import read_texts

    unit = SimpleNamespace(source="s", path="/data/part-0.jsonl")
    plan = SimpleNamespace(units={0: unit}, source=lambda name: SimpleNamespace(text_field="text"))
    table = pa.table({"text": ["kept text"]})
    # the input changed since pass 1: row 7 is no longer there
    monkeypatch.setattr(rows_mod, "iter_unit_rows", lambda plan, u, want: iter([(table, np.array([3]))]))
    assert read_texts(plan, np.array([0]), np.array([3])) == ["kept text"]
    with pytest.raises(PipelineError, match=r"1 record\(s\) of unit 0 \(/data/part-0.jsonl\) could not be read again"):
        read_texts(plan, np.array([0, 0]), np.array([3, 7]))
