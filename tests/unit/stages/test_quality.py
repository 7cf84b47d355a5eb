"""The quality stages (Gopher quality and repetition, C4, FineWeb): each rule's decision on hand-written
texts whose values follow from datatrove 0.10.1's definitions, parameters, bad input, a small end-to-end
run with C4's line removal in the output and the ledger, and stored datatrove decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.core.registry import stage_class
from pipeline.core.stage import BatchContext
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.quality.ngrams import repetition
from pipeline.quality.words import WordVocab

FIXTURE = Path(__file__).parent / "data" / "quality_parity.json"
# 66 words, mean length 4.09, no punctuation, stop words "the", "with", "and": passes every Gopher quality rule.
GOOD = " ".join(["the old house with the green garden and the tall trees"] * 6)
GOOD_LINE = "the old house with the green garden and the tall trees"


def _stage(kind: str, **options):
    cls = stage_class(kind)[0]
    return cls(cls.Config(**options)).setup()


def _verdicts(kind: str, texts: list[str], **options):
    stage = _stage(kind, **options)
    table = pa.table({"text": texts})
    ctx = BatchContext("t", "text", np.arange(len(texts), dtype=np.int64), [str(i) for i in range(len(texts))], 0,
                       Path("."))
    return stage.process(table, ctx)


def _reason(kind: str, text: str, **options) -> str | None:
    return _verdicts(kind, [text], **options).reason[0]


# -- words ------------------------------------------------------------------------------------------

def test_words_are_spacy_english_tokens_without_whitespace():
    vocab = WordVocab("en")
    assert vocab.tokens("I can't go.\n\nThe U.S. costs $5.99 (e.g. 3km)…") == \
        ["I", "ca", "n't", "go", ".", "The", "U.S.", "costs", "$", "5.99", "(", "e.g.", "3", "km", ")", "…"]
    assert vocab.tokens("cannot") == ["can", "not"]  # a special case of the tokenizer, never one plain word
    assert vocab.tokens(" \t\n ") == []


# -- Gopher quality -------------------------------------------------------------------------------

def test_gopher_quality_keeps_ordinary_prose():
    assert _reason("gopher_quality", GOOD) is None


@pytest.mark.parametrize("text, reason", [
    ("The cat sat on the mat.", "gopher.min_doc_words 6 < 50"),            # "." is a symbol word
    ("ab " * 60, "gopher.mean_word_length 2 < 3"),
    ("abcdefghijkl " * 60, "gopher.mean_word_length 12 > 10"),
    (GOOD + " #" * 10, "gopher.hash_word_ratio 0.1316 > 0.1"),              # 10 / 76 words
    (GOOD + " 123" * 20, "gopher.alpha_words_ratio 0.7674 < 0.8"),          # 66 / 86 words have a letter
    ("\n".join(["- " + GOOD_LINE] * 9 + [GOOD_LINE]), "gopher.bullet_lines_ratio 0.9 > 0.9"),
    ("\n".join([GOOD_LINE + " …"] * 4 + [GOOD_LINE] * 6), "gopher.ellipsis_lines_ratio 0.4 > 0.3"),
    ("red green blue house garden tree " * 10, "gopher.stop_words 0 < 2"),
    (GOOD.title(), "gopher.stop_words 0 < 2"),                              # "The" is not the stop word "the"
])
def test_gopher_quality_names_the_first_failing_rule_and_its_value(text, reason):
    if reason.startswith("gopher.bullet_lines_ratio"):
        # 9 of 10 lines is not more than 0.9: kept; all ten is 1 > 0.9
        assert _reason("gopher_quality", text) is None
        text, reason = "\n".join(["- " + GOOD_LINE] * 10), "gopher.bullet_lines_ratio 1 > 0.9"
    assert _reason("gopher_quality", text) == reason


def test_gopher_quality_counts_ellipsis_words():
    r = _reason("gopher_quality", GOOD + " ..." * 10)
    assert r.startswith("gopher.ellipsis_word_ratio ") and float(r.split()[1]) > 0.1


def test_gopher_quality_parameters_are_configurable_and_none_turns_a_rule_off():
    assert _reason("gopher_quality", GOOD, max_doc_words=60) == "gopher.max_doc_words 66 > 60"
    # six words pass min_doc_words 5; their mean length is 17 / 6
    assert _reason("gopher_quality", "The cat sat on the mat.", min_doc_words=5) == "gopher.mean_word_length 2.833 < 3"
    assert _reason("gopher_quality", "red green blue house garden tree " * 10, min_stop_words=None) is None
    assert _reason("gopher_quality", "red green blue house garden tree " * 10, stop_words=["red"], min_stop_words=1) is None
    v = _verdicts("gopher_quality", ["ab " * 60])
    assert v.decision == ["dropped_gopher_quality"]
    assert v.evidence == {"quality_rule": ["gopher.mean_word_length"], "quality_value": [2.0], "quality_threshold": [3]}


# -- Gopher repetition ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("", "gopher.text_chars 0 < 1"),
    ("A para one.\n\nA para one.\n\nSomething else here.", "gopher.dup_para_frac 0.3333 > 0.3"),
    ("alpha beta gamma\nalpha beta gamma\ndelta", "gopher.dup_line_frac 0.3333 > 0.3"),
    ("\n".join(["x" * 100] * 2 + [f"w{i}" for i in range(6)]), "gopher.dup_line_char_frac 0.4566 > 0.2"),  # 100 / 219
    ("of the cat of the dog of the sun of the sea", "gopher.top_2_gram_char_frac 0.5581 > 0.2"),  # "of the" 6 x 4 / 43
])
def test_gopher_repetition_names_the_first_failing_rule_and_its_value(text, reason):
    assert _reason("gopher_repetition", text) == reason


def test_gopher_repetition_keeps_text_without_repetition():
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do. "
            "Once or twice she had peeped into the book her sister was reading, but it had no pictures in it.")
    assert _reason("gopher_repetition", text) is None
    assert _reason("gopher_repetition", "   ") is None  # datatrove keeps whitespace-only text here


def test_top_ngram_ties_go_to_the_first_seen_and_duplicates_compare_joined_strings():
    vocab = WordVocab("en")
    ids = np.array([vocab.word_id(w) for w in ["aa", "b", "c", "d", "c", "d", "aa", "b"]], dtype=np.int64)
    h1, p1, h2, p2 = vocab.hashes
    none = np.zeros(0, dtype=np.int64)
    fail, value = repetition(ids, np.array([0, 8]), np.array([20]), np.ones(1, np.bool_), vocab.length, h1, p1, h2, p2,
                             np.array([2]), np.array([0.2]), none, np.zeros(0))
    # "aa b" and "c d" both occur twice; Counter.most_common(1) gives the first inserted: 4 chars x 2
    assert fail.tolist() == [0] and value.tolist() == [8]
    ids = np.array([vocab.word_id(w) for w in ["ab", "c", "x", "a", "bc"]], dtype=np.int64)
    h1, p1, h2, p2 = vocab.hashes
    fail, value = repetition(ids, np.array([0, 5]), np.array([10]), np.ones(1, np.bool_), vocab.length, h1, p1, h2, p2,
                             none, np.zeros(0), np.array([2]), np.array([0.1]))
    # "".join: "abc", "cx", "xa", then "abc" again (from "a", "bc"): 3 repeated characters
    assert fail.tolist() == [0] and value.tolist() == [3]


def test_gopher_repetition_n_gram_rules_are_configurable():
    text = "of the cat of the dog of the sun of the sea"
    assert _reason("gopher_repetition", text, top_n_grams=[[2, 0.6]], dup_n_grams=[]) is None
    with pytest.raises(Exception):
        stage_class("gopher_repetition")[0].Config(top_n_grams=[[3, 0.1], [2, 0.1]])


# -- C4 ----------------------------------------------------------------------------------------------

C4_DOC = "\n".join([
    "Short line",                                   # no terminal punctuation
    "This is a proper sentence.",
    "Please enable JavaScript to continue.",        # javascript
    "We use cookies to track you.",                 # policy phrase
    "One more good sentence here.",
    "A third fine sentence today!",
    "Fourth sentence is right here.",
    "Fifth one is also present?",
    "  ok.",                                        # fewer than 3 words
])


def test_c4_removes_lines_and_keeps_the_document_with_evidence():
    stage = _stage("c4_quality")
    from pipeline.quality.c4 import c4_quality

    (r,) = c4_quality([C4_DOC], stage.config, stage.splitter)
    assert r.failure is None and r.lines == 9 and r.removed == 4
    assert r.text == ("This is a proper sentence.\nOne more good sentence here.\nA third fine sentence today!\n"
                      "Fourth sentence is right here.\nFifth one is also present?")
    assert r.removed_by == {"no_terminal_punct": 1, "javascript": 1, "policy": 1, "too_few_words": 1}
    v = _verdicts("c4_quality", [C4_DOC])
    assert v.decision == [None] and v.evidence["c4_lines_removed"] == [4] and v.evidence["c4_lines"] == [9]


@pytest.mark.parametrize("text, reason", [
    ("Good line one is here.\nLorem ipsum dolor sit amet.\n" + C4_DOC, "c4.lorem_ipsum at line 2"),
    ("lorem ipsum dolor sit amet\n" + "Another fine sentence.\n" * 2, "c4.min_num_sentences 2 < 5"),  # no punctuation: removed
    ("Good line one is here.\nif (x) { y = 1; } else z.\n" + C4_DOC, "c4.curly_bracket at line 2"),
    ("The first sentence.\nThe second sentence.\nThe third sentence.", "c4.min_num_sentences 3 < 5"),
])
def test_c4_document_rules(text, reason):
    assert _reason("c4_quality", text) == reason


def test_c4_counts_sentences_within_a_line_and_removes_citations():
    from pipeline.quality.c4 import c4_quality

    stage = _stage("c4_quality")
    one_line = "One two three. Two is here now. Three is here. Four is here. Five is here."
    (r,) = c4_quality([one_line], stage.config, stage.splitter)
    assert r.failure is None and r.text == one_line
    (r,) = c4_quality([C4_DOC.replace("proper sentence.", "proper sentence.[12]")], stage.config, stage.splitter)
    assert r.text.startswith("This is a proper sentence.\n")
    (r,) = c4_quality(["x" * 1001 + " is a long word.\n" + C4_DOC], stage.config, stage.splitter)
    assert r.removed_by["too_long_word"] == 1


def test_c4_parameters_are_configurable():
    assert _reason("c4_quality", "The first sentence.", min_num_sentences=-1) is None
    from pipeline.quality.c4 import C4Params, SentenceSplitter, c4_quality

    (r,) = c4_quality([C4_DOC], C4Params(filter_javascript=False, filter_policy=False), SentenceSplitter())
    assert r.removed == 2 and "JavaScript" in r.text and "cookies" in r.text


# -- FineWeb -----------------------------------------------------------------------------------------

LONG_LINES = ["Incomprehensibilities everywhere.", "Counterrevolutionaries elsewhere.",
              "Internationalization problems.", "Telecommunications companies.",
              "Disproportionately expensive.", "Uncharacteristically quiet!"]


@pytest.mark.parametrize("text, reason", [
    ("", "fineweb.non_empty_lines 0 < 1"),
    ("\n".join(f"a line without any punctuation number {i}" for i in range(10)), "fineweb.line_punct_ratio 0 < 0.12"),
    ("\n".join(f"Line {i}." for i in range(10)), "fineweb.short_line_ratio 1 > 0.67"),
    ("\n\n".join(LONG_LINES), "fineweb.list_ratio 0.5556 > 0.3"),            # 10 newlines / 18 words
])
def test_fineweb_rules(text, reason):
    assert _reason("fineweb_quality", text) == reason


def test_fineweb_char_duplicates_and_parameters():
    lines = [f"This is line number {i} of a reasonably long text." for i in range(10)]
    text = "\n".join(lines + [lines[0]])
    r = _reason("fineweb_quality", text)
    assert r.startswith("fineweb.char_dup_ratio ") and float(r.split()[1]) > 0.01
    assert _reason("fineweb_quality", "\n".join(lines)) is None
    no_punct = "\n".join(f"a line without any punctuation number {i}" for i in range(10))
    assert _reason("fineweb_quality", no_punct, line_punct_exclude_zero=True) is None
    assert _reason("fineweb_quality", "\n\n".join(LONG_LINES), new_line_ratio=0.6) is None


# -- bad input ---------------------------------------------------------------------------------------

BAD = {
    "empty": "",
    "whitespace": " \n\t \u3000\n",
    "emoji": "😀🎉 👍🏽 ❤️🚀 " * 40,
    "rtl": "ذهبنا إلى السوق في الصباح الباكر. " * 30 + "\n" + "הלכנו לשוק מוקדם בבוקר. " * 20,
    "mixed": "The 東京 market — рынок, السوق & मार्केट… " * 40,
    "binary-looking": "\x00\x01\x02\ufffd\x7f" * 200,
}


@pytest.mark.parametrize("kind", ["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"])
def test_bad_input_gets_a_verdict_never_a_crash(kind):
    texts = list(BAD.values()) + ["word and the text of it. " * 420_000]  # about 10 MB
    v = _verdicts(kind, texts)
    assert len(v.decision) == len(texts)
    assert all((d is None) == (r is None) for d, r in zip(v.decision, v.reason))
    assert v.decision[0] is not None or kind in ("gopher_quality", "c4_quality")  # empty text: dropped or removed


def test_an_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError):
        WordVocab("no-such-language")


# -- end to end -------------------------------------------------------------------------------------

def test_c4_line_removal_shows_in_the_output_and_the_ledger(tmp_path):
    good = "\n".join(f"Sentence number {i} is a good one." for i in range(6))
    rows = [{"id": "a-lines", "text": C4_DOC}, {"id": "few", "text": "Only one sentence here."},
            {"id": "clean", "text": good}, {"id": "b-copy", "text": C4_DOC}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({"sources": [{"name": "web", "kind": "jsonl", "paths": [str(tmp_path / "in")], "id_field": "id"}],
                        "output": {"dir": str(tmp_path / "out")},
                        "stages": [{"kind": "safety"}, {"kind": "c4_quality"}, {"kind": "exact_dedup"}]})
    m = run_local(cfg)
    assert m["conservation"]["balanced"]
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet")).sort("record_id")
    by = {r["record_id"]: r for r in ledger.iter_rows(named=True)}
    assert by["a-lines"]["decision"] == "kept_lines_removed"
    assert by["a-lines"]["reason"] == "c4: 4 of 9 lines removed (no_terminal_punct 1, too_few_words 1, javascript 1, policy 1)"
    assert json.loads(by["a-lines"]["evidence"]) == {"c4_lines": 9, "c4_lines_removed": 4}
    assert by["few"]["decision"] == "dropped_c4_quality" and by["few"]["reason"] == "c4.min_num_sentences 1 < 5"
    assert by["clean"]["decision"] == "kept"
    assert by["b-copy"]["decision"] == "dropped_duplicate"  # dedup saw the text before line removal
    shards = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "out" / "shards").glob("*.parquet"))])
    text = dict(zip(shards["record_id"].to_list(), shards["text"].to_list()))
    assert set(text) == {"a-lines", "clean"}
    assert "JavaScript" not in text["a-lines"] and text["a-lines"].startswith("This is a proper sentence.\n")
    assert text["clean"] == good
    assert m["stages"]["c4_quality"]["dropped"] == 1


# -- stored datatrove decisions ----------------------------------------------------------------------

def test_decisions_match_stored_datatrove_decisions():
    data = json.loads(FIXTURE.read_text("utf-8"))
    texts = [d["text"] for d in data["docs"]]
    for kind in ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"):
        v = _verdicts(kind, texts)
        expected = [d["datatrove"][kind] for d in data["docs"]]
        assert [d is None for d in v.decision] == [e["keep"] for e in expected], kind
        assert [(r or "").split(" ")[0] for r in v.reason] == [e["rule"] or "" for e in expected], kind
