"""Redaction: overlap resolution, the actions, the record rule (no spaCy model needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.pii.config import PiiConfig
from pipeline.pii.engine import Span, chunk_bounds
from pipeline.pii.redact import Redactor, hmac_key, key_id, resolve

KEY = b"k" * 32


def test_overlapping_spans_merge_into_their_union_labelled_by_the_strongest():
    spans = [Span("LOCATION", 10, 20, 0.85), Span("PERSON", 5, 15, 0.85), Span("EMAIL_ADDRESS", 30, 40, 1.0)]
    assert resolve(spans) == [Span("LOCATION", 5, 20, 0.85), Span("EMAIL_ADDRESS", 30, 40, 1.0)]


def test_the_higher_score_wins_an_overlap_and_ties_go_to_the_longer_then_the_name():
    assert resolve([Span("US_SSN", 0, 11, 0.85), Span("PHONE_NUMBER", 0, 12, 0.4)]) == [Span("US_SSN", 0, 12, 0.85)]
    assert resolve([Span("B", 0, 5, 0.5), Span("A", 0, 5, 0.5)]) == [Span("A", 0, 5, 0.5)]


def test_adjacent_spans_stay_separate():
    assert len(resolve([Span("A", 0, 5, 0.5), Span("B", 5, 9, 0.5)])) == 2


span_st = st.builds(lambda e, a, n, s: Span(e, a, a + n, s), st.sampled_from(["A", "B", "C"]),
                    st.integers(0, 60), st.integers(1, 15), st.sampled_from([0.4, 0.85, 1.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(span_st, max_size=12), st.randoms())
def test_resolution_is_order_independent_disjoint_and_covers_every_flagged_character(spans, rnd):
    shuffled = list(spans)
    rnd.shuffle(shuffled)
    out = resolve(spans)
    assert out == resolve(shuffled)
    for a, b in zip(out, out[1:]):
        assert a.end <= b.start
    covered = {i for s in out for i in range(s.start, s.end)}
    assert {i for s in spans for i in range(s.start, s.end)} <= covered


def test_tag_mask_and_hash_actions_replace_each_span():
    cfg = PiiConfig(entities=("PERSON", "EMAIL_ADDRESS", "US_SSN"), actions={"EMAIL_ADDRESS": "hash", "US_SSN": "mask"})
    text = "Ann Lee, ann@example.com, 078-05-1121."
    spans = [Span("PERSON", 0, 7, 0.85), Span("EMAIL_ADDRESS", 9, 24, 1.0), Span("US_SSN", 26, 37, 0.85)]
    out, where = Redactor(cfg, KEY).apply_with_positions(text, spans)
    assert out.startswith("<PERSON>, <EMAIL_ADDRESS:") and out.endswith(", ***********.")
    assert "ann@example.com" not in out and "Ann Lee" not in out
    assert [out[a:b] for a, b in where][0] == "<PERSON>"
    assert all(out[a] in "<*" for a, _ in where)


def test_the_keyed_hash_is_stable_per_value_and_changes_with_the_key():
    cfg = PiiConfig(entities=("EMAIL_ADDRESS",), default_action="hash")
    a = Redactor(cfg, KEY).token("EMAIL_ADDRESS", "ann@example.com")
    assert a == Redactor(cfg, KEY).token("EMAIL_ADDRESS", "ann@example.com")
    assert a != Redactor(cfg, KEY).token("EMAIL_ADDRESS", "bob@example.com")
    assert a != Redactor(cfg, b"x" * 32).token("EMAIL_ADDRESS", "ann@example.com")
    assert len(a) == len("<EMAIL_ADDRESS:>") + 16


def test_the_hash_action_without_a_key_is_a_config_error_that_says_where_to_put_it(monkeypatch):
    cfg = PiiConfig(entities=("EMAIL_ADDRESS",), actions={"EMAIL_ADDRESS": "hash"})
    monkeypatch.delenv("HYGIENE_PII_HMAC_KEY", raising=False)
    with pytest.raises(ConfigError, match="HYGIENE_PII_HMAC_KEY"):
        hmac_key(cfg)
    monkeypatch.setenv("HYGIENE_PII_HMAC_KEY", "short")
    with pytest.raises(ConfigError, match="16 bytes"):
        hmac_key(cfg)
    monkeypatch.setenv("HYGIENE_PII_HMAC_KEY", "a-long-enough-secret-key")
    assert hmac_key(cfg) == b"a-long-enough-secret-key"
    assert key_id(b"a-long-enough-secret-key") != key_id(b"another-long-secret-key!")
    assert hmac_key(PiiConfig()) is None


def test_the_hmac_key_can_come_from_a_file(tmp_path):
    (tmp_path / "k").write_text("file-secret-of-enough-length\n")
    cfg = PiiConfig(default_action="hash", hmac_key={"file": str(tmp_path / "k")})
    assert hmac_key(cfg) == b"file-secret-of-enough-length"


def test_a_drop_action_or_the_record_rule_drops_the_record_with_a_reason():
    spans = [Span("EMAIL_ADDRESS", 0, 10, 1.0), Span("CREDIT_CARD", 20, 36, 1.0)]
    v = Redactor(PiiConfig(actions={"CREDIT_CARD": "drop"}), None).verdict(spans, 100)
    assert v.drop_reason == "contains CREDIT_CARD (action: drop)" and v.counts == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}
    assert Redactor(PiiConfig(record_rule={"max_spans": 1}), None).verdict(spans, 100).drop_reason.startswith("2 PII spans")
    frac = Redactor(PiiConfig(record_rule={"max_redacted_fraction": 0.2}), None).verdict(spans, 100)
    assert "26.0% of characters" in frac.drop_reason
    assert Redactor(PiiConfig(), None).verdict(spans, 100).drop_reason is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50_000), st.integers(1_000, 5_000), st.integers(100, 400))
def test_chunk_owned_regions_partition_the_text_with_room_for_short_spans(length, size, overlap):
    bounds = chunk_bounds(length, size, overlap)
    pos = 0
    for off, own_s, own_e in bounds:
        assert own_s == pos and own_e > own_s or length == 0
        assert off <= own_s and own_e <= off + size
        if own_e < length:
            assert off + size - own_e >= overlap // 2
        pos = own_e
    assert pos == length


def test_the_second_pass_looks_again_at_texts_with_tags_and_maps_new_spans_back():
    from pipeline.pii.redact import second_pass

    text = "First sentence here. Questions to Hiro Sato at hiro@example.com. Last one!"
    seen = []

    def detect(texts):
        seen.extend(texts)
        return [[Span("PERSON", x.find("Hiro"), x.find("Hiro") + 9, 0.85)] if "Hiro" in x else [] for x in texts]

    out = second_pass(detect, [text, "nothing found"], [[Span("EMAIL_ADDRESS", 47, 63, 1.0)], []])
    assert seen == ["First sentence here. Questions to Hiro Sato at <EMAIL_ADDRESS>. Last one!"]   # tags in place
    assert [(s.entity, text[s.start:s.end]) for s in out[0]] == [("PERSON", "Hiro Sato"), ("EMAIL_ADDRESS", "hiro@example.com")]
    assert out[1] == []


def test_a_second_pass_span_over_a_tag_alone_is_not_new():
    from pipeline.pii.redact import second_pass

    text = "Mail ann@example.com now."
    out = second_pass(lambda texts: [[Span("PERSON", 5, 20, 0.85)] for _ in texts], [text], [[Span("EMAIL_ADDRESS", 5, 20, 1.0)]])
    assert out == [[Span("EMAIL_ADDRESS", 5, 20, 1.0)]]


def test_the_windowed_second_pass_reads_only_the_words_near_each_tag_and_keeps_spans_within_reach():
    from pipeline.pii.redact import second_pass

    far = " ".join(f"w{i}" for i in range(40))
    text = f"{far} Questions to Hiro Sato at hiro@example.com today. {far} Zed Alpha ends it."
    email = text.index("hiro@")
    seen = []

    def detect(texts):
        seen.extend(texts)
        out = []
        for x in texts:  # a "model" that finds both names wherever they are in what it is given
            out.append([Span("PERSON", x.find(n), x.find(n) + len(n), 0.85) for n in ("Hiro Sato", "Zed Alpha") if n in x])
        return out

    out = second_pass(detect, [text], [[Span("EMAIL_ADDRESS", email, email + 16, 1.0)]], window=(4, 4))
    (piece,) = seen
    assert piece.split()[0] == "w37" and piece.split()[-1] == "w6" and "Zed" not in piece  # 4 + 4 words each side
    assert piece.split().index("<EMAIL_ADDRESS>") == 8
    assert [(s.entity, text[s.start:s.end]) for s in out[0]] == [("PERSON", "Hiro Sato"), ("EMAIL_ADDRESS", "hiro@example.com")]


def test_a_windowed_second_pass_drops_spans_found_only_in_the_context_margin():
    from pipeline.pii.redact import second_pass

    text = "Ann Bell w1 w2 w3 w4 w5 w6 at ann@example.com."
    email = text.index("ann@")
    out = second_pass(lambda texts: [[Span("PERSON", x.find("Ann Bell"), x.find("Ann Bell") + 8, 0.85)]
                                     if "Ann Bell" in x else [] for x in texts],
                      [text], [[Span("EMAIL_ADDRESS", email, email + 15, 1.0)]], window=(2, 10))
    assert [s.entity for s in out[0]] == ["EMAIL_ADDRESS"]      # read as context, 7 words away: not within reach 2


def test_overlapping_tag_windows_are_read_once():
    from pipeline.pii.redact import second_pass

    text = "Call a@example.com or b@example.com or c@example.com soon."
    spans = [Span("EMAIL_ADDRESS", m, m + 13, 1.0) for m in (text.index("a@"), text.index("b@"), text.index("c@"))]
    seen = []
    second_pass(lambda texts: (seen.extend(texts), [[] for _ in texts])[1], [text], [spans], window=(3, 3))
    assert seen == ["Call <EMAIL_ADDRESS> or <EMAIL_ADDRESS> or <EMAIL_ADDRESS> soon."]


def test_with_a_name_test_only_tags_near_a_possible_name_are_read_again():
    from pipeline.pii.redact import second_pass

    text = "the invoice went to a@example.com today and it was paid in full. Then Hiro Sato wrote to b@example.com again."
    spans = [Span("EMAIL_ADDRESS", text.index(x), text.index(x) + 13, 1.0) for x in ("a@example.com", "b@example.com")]
    seen = []
    second_pass(lambda texts: (seen.extend(texts), [[] for _ in texts])[1], [text], [spans], window=(4, 0),
                candidate=lambda w: w[:1].isupper() and w.strip(".") not in {"Then"})
    assert seen == ["Hiro Sato wrote to <EMAIL_ADDRESS> again."]        # the first tag has no capitalised word near it


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "B", "7", " ", "\n", "\t", "\u00a0", "\u3000", "\u2028", "é", "\U0001f600",
                                         "\ud800", "\x1c", "<", ">"]), max_size=60))
def test_word_bounds_are_the_runs_that_the_non_space_pattern_finds(text):
    import re

    from pipeline.pii.redact import word_bounds

    starts, ends = word_bounds(text)
    assert list(zip(starts.tolist(), ends.tolist())) == [m.span() for m in re.finditer(r"\S+", text)]


def _to_original_by_walking(pos, where, is_end):
    """The mapping back from a tagged text, tag by tag (the definition the binary search keeps)."""
    shift = 0
    for ts, te, os_, oe, _ in where:
        if pos < ts or (is_end and pos == ts):
            break
        if pos < te or (is_end and pos == te):
            return oe if is_end else os_
        shift = oe - te
    return pos + shift


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 9), st.integers(2, 12)), max_size=8), st.data())
def test_offsets_map_back_from_the_tagged_text_as_walking_the_tags_does(layout, data):
    from pipeline.pii.redact import _to_original

    where, pos_t, pos_o = [], 0, 0
    for gap, value, token in layout:   # clear text, then a value replaced by a token of another length
        pos_t, pos_o = pos_t + gap, pos_o + gap
        where.append((pos_t, pos_t + token, pos_o, pos_o + value, "E"))
        pos_t, pos_o = pos_t + token, pos_o + value
    pos = data.draw(st.integers(0, pos_t + 5))
    ends = [w[1] for w in where]
    for is_end in (False, True):
        assert _to_original(pos, where, ends, is_end) == _to_original_by_walking(pos, where, is_end)
