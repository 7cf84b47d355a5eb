"""The batched greedy NER decoder gives spaCy's own entities, on real and on awkward text."""

from __future__ import annotations

import json
import types

import pytest

from bench.common import jsonl_texts
from pipeline.pii.config import DEFAULT_MODEL, PiiConfig
from pipeline.pii.engine import PiiEngine
from pipeline.pii.greedy_ner import GreedyNer
from tests.conftest import REPO, SHARED_DATA

spacy = pytest.importorskip("spacy")

AWKWARD = [
    "",
    " ",
    "\n\n\t ",
    "Smith",
    "John",
    "Mary Ann Smith",
    "Mary  \n\n  Ann   Smith lives in New York City.\n\n",
    "Dr. Jane Doe met Prof. John Smith in Paris, France on 3 March 2021 at 10:30 am.",
    "Call me, Ishmael. Some years ago - never mind how long precisely - I went to sea.",
    "ALL CAPS: BARACK OBAMA VISITED BERLIN AND PARIS",
    "lower case: barack obama visited berlin and paris",
    "Mixed scripts: Владимир Путин, 李小龍 and José Müller met in Zürich.",
    "Numbers 4111 1111 1111 1111 and 123-45-6789 next to Alice Johnson and Bob.",
    "End with a name: Alice",
    "   Leading spaces then Bob Marley",
    "Tabs\tbetween\tGeorge\tWashington\tand\tAbraham\tLincoln",
    "The European Union and the United Nations met in Geneva, Switzerland.",
]


@pytest.fixture(scope="module")
def nlp():
    return spacy.load(DEFAULT_MODEL, exclude=["tagger", "parser", "lemmatizer", "attribute_ruler", "tok2vec", "senter"])


def _texts() -> list[str]:
    texts = list(AWKWARD)
    bench = SHARED_DATA / "pii" / "bench_paragraphs" / "corpus.jsonl"
    if bench.exists():
        with bench.open() as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(400), f)]
    texts += jsonl_texts(sorted((REPO / "data_samples").rglob("*.jsonl")))
    texts.append(" ".join(texts[:60]))     # one long document (thousands of tokens) in the batch
    return texts


def _spacy_ents(nlp, texts):
    return [sorted((e.start, e.end, e.label_) for e in doc.ents) for doc in nlp.pipe(texts, batch_size=64)]


def test_same_entities_as_spacy(nlp):
    texts = _texts()
    # With ../shared/data the comparison covers 400 real paragraphs; without it (a checkout outside
    # the workspace), the awkward texts and the samples' ~260 records, still many entities.
    assert len(texts) > (300 if (SHARED_DATA / "pii" / "bench_paragraphs").exists() else 250)
    expected = _spacy_ents(nlp, texts)
    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))
    assert decoder is not None
    got = []
    for i in range(0, len(texts), 64):        # batches mix empty, short and long documents
        got += decoder([nlp.make_doc(t) for t in texts[i:i + 64]])
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    assert mismatched == []
    assert sum(len(e) for e in expected) > 500       # the comparison covers many entities
    assert {label for ents in expected for _, _, label in ents} >= {"PERSON", "GPE", "ORG", "DATE"}


def test_the_fast_encoder_computes_thinc_s_token_vectors_within_float_tolerance(nlp):
    """The fused encoder replays thinc's arithmetic in another order of float32 operations: on one
    machine the vectors are usually identical to the bit, but across processors (AVX-512 or AVX2,
    FMA contraction, BLAS kernels) the last bits may differ. What the product promises is the
    entities (`test_same_entities_as_spacy`, `bench/ner_parity.py`); the vectors are held to a
    tolerance far below what could change a decision (they range over about +-11)."""
    import numpy as np

    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))
    assert decoder._fast is not None             # the small English model's encoder is the one it replays
    docs = [nlp.make_doc(t) for t in _texts()[:150] if t]
    fast = decoder._tokvecs(docs)
    fast_path, decoder._fast = decoder._fast, None
    try:
        thinc_path = decoder._tokvecs(docs)
    finally:
        decoder._fast = fast_path
    assert fast.shape == thinc_path.shape and fast.shape[0] > 5000
    np.testing.assert_allclose(fast, thinc_path, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_batch_order_does_not_matter(nlp, precision):
    texts = _texts()[:120]
    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"), precision=precision)
    forward = decoder([nlp.make_doc(t) for t in texts])
    backward = decoder([nlp.make_doc(t) for t in reversed(texts)])
    assert forward == list(reversed(backward))
    assert forward == [decoder([nlp.make_doc(t)])[0] for t in texts]


CLEAR = [
    "Barack Obama was born in Honolulu, Hawaii.",
    "Angela Merkel met Emmanuel Macron in Berlin on Monday.",
    "My name is John Smith and I live in London.",
    "Emma Woodhouse and Mr. Knightley walked to Highbury.",
    "The flight from Paris to Tokyo was delayed, said Maria Garcia.",
]


def test_int8_finds_the_same_names_and_places_in_clear_sentences():
    """`ner_precision: int8` is not spaCy's arithmetic, but where the model is sure (clear names
    and places) its decisions are the same; near a decision they may differ (bench/README.md)."""
    exact = PiiEngine(PiiConfig()).setup()
    int8 = PiiEngine(PiiConfig(ner_precision="int8")).setup()
    assert exact.describe()["ner_precision"] == "float32" and int8.describe()["ner_precision"] == "int8"
    expected = exact.detect(CLEAR)
    assert int8.detect(CLEAR) == expected
    found = {(s.entity, text[s.start:s.end]) for text, spans in zip(CLEAR, expected) for s in spans}
    assert {("PERSON", "Barack Obama"), ("LOCATION", "Honolulu"), ("PERSON", "Angela Merkel"),
            ("LOCATION", "Berlin"), ("PERSON", "John Smith"), ("LOCATION", "London")} <= found


def test_int8_token_vectors_stay_close_to_float32(nlp):
    """The int8 encoder's token vectors (after the projection) against the float32 path's: within
    3% relative RMS (0.8% measured, max 0.11, AMD EPYC with VNNI; the integer products are the
    same on AVX2, so the figure holds there too) and no component off by more than 0.5 (the
    vectors range over about +-11)."""
    import numpy as np

    docs = [nlp.make_doc(t) for t in _texts()[:150] if t]
    exact = GreedyNer.for_pipe(nlp.get_pipe("ner"))._tokvecs(docs)
    int8 = GreedyNer.for_pipe(nlp.get_pipe("ner"), precision="int8")._tokvecs(docs)
    assert int8.shape == exact.shape and exact.shape[0] > 5000
    assert np.sqrt(((int8 - exact) ** 2).mean() / (exact ** 2).mean()) < 0.03
    assert np.abs(int8 - exact).max() < 0.5


def test_refuses_preset_entities(nlp):
    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))
    doc = nlp("Alice met Bob in Paris.")          # entities already set by spaCy's NER
    with pytest.raises(ValueError, match="preset entities"):
        decoder([doc])


def test_other_architectures_fall_back():
    not_a_parser = types.SimpleNamespace(model=types.SimpleNamespace(name="transformer_listener", attrs={}))
    assert GreedyNer.for_pipe(not_a_parser) is None


def test_engine_results_do_not_depend_on_the_decoder():
    texts = _texts()[:200]
    batched = PiiEngine(PiiConfig()).setup()
    plain = PiiEngine(PiiConfig(ner_decoder="spacy")).setup()
    assert batched.describe()["ner_decoder"] == "batched"
    assert plain.describe()["ner_decoder"] == "spacy"
    found = batched.detect(texts)
    assert found == plain.detect(texts)
    assert sum(1 for spans in found for s in spans if s.entity == "PERSON") > 50


def test_lazy_context_scoring_gives_presidio_s_own_results():
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    texts = _texts()[:200] + [
        "My ssn is 078-05-1120 and my card number 4111 1111 1111 1111.",
        "Phone: 212-555-0123, call me. Email me at jane.doe@example.com, my email.",
        "IBAN GB82 WEST 1234 5698 7654 32 for the bank transfer; IP 192.168.0.1 of the server.",
        # context words behind stop words and punctuation, joined by a colon, after the match
        "The social security number that was written on the form, as you know, is 078-05-1120.",
        "SSN:078-05-1120 and phone:212-555-0123 were on the card.",
        "078-05-1120 is my ssn",
    ]
    engine = PiiEngine(PiiConfig()).setup()
    found = engine.detect(texts)
    engine._analyzer.context_aware_enhancer = LemmaContextAwareEnhancer()  # Presidio's default, deep copy and all
    assert engine.detect(texts) == found
    # ... and with Presidio's own NlpArtifacts (context keywords worked out for every text), its
    # entities read from spaCy's doc.ents (Span objects) as Presidio's spaCy engine reads them.
    from presidio_analyzer.nlp_engine import NlpArtifacts

    lazy = engine._nlp_engine.artifacts

    def eager(doc, ents):
        doc.set_ents([doc.char_span(s, e, label=label) for s, e, label in ents], default="outside")
        a = engine._nlp_engine._doc_to_nlp_artifact(doc, "en")
        assert all(type(e).__name__ == "Span" for e in a.entities)
        return NlpArtifacts(entities=a.entities, tokens=a.tokens, tokens_indices=a.tokens_indices, lemmas=a.lemmas,
                            nlp_engine=a.nlp_engine, language="en", scores=a.scores)

    engine._nlp_engine.artifacts = eager
    assert engine.detect(texts) == found
    engine._nlp_engine.artifacts = lazy

    class NoContext(LemmaContextAwareEnhancer):
        def enhance_using_context(self, text, raw_results, *args, **kwargs):
            return raw_results

    # Context words do change results here, so the comparison covers the enhancer's edits.
    engine._analyzer.context_aware_enhancer = NoContext()
    assert engine.detect(texts) != found
