"""Gopher's quality and repetition rules (Rae et al. 2021, table A1), as datatrove 0.10.1 implements them
(`GopherQualityFilter`, `GopherRepetitionFilter`): same words, same order of rules, same comparisons.

Each function takes a batch of texts and returns, per text, None (passes) or the first `Failure`.
A threshold of None or 0 turns its rule off, as in datatrove. Where datatrove divides by zero
(no words with `min_doc_words` off, or no lines), the ratio is taken as 0 instead of raising.

Usage::

    vocab = WordVocab("en")
    gopher_quality(["some text ..."], GopherQualityParams(), vocab)      # [Failure(...) or None]
    gopher_repetition(["some text ..."], GopherRepetitionParams(), vocab)
"""

from __future__ import annotations

import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.quality.ngrams import repetition
from pipeline.quality.rules import Failure, enabled
from pipeline.quality.words import WordVocab

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


class GopherQualityParams(BaseModel):
    """GopherQualityFilter's parameters and defaults (datatrove's names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = Field(0.8, description="minimum share of words with a letter")
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    language: str = "en"


class GopherRepetitionParams(BaseModel):
    """GopherRepetitionFilter's parameters and defaults (datatrove's names); n-gram rules as [n, fraction]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    language: str = "en"

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _positive_n(cls, v):
        if any(n < 1 for n, _ in v):
            raise ValueError("each n-gram rule is [n, fraction] with n >= 1")
        return v

    @field_validator("top_n_grams")
    @classmethod
    def _ascending(cls, v):
        ns = [n for n, _ in v]
        if ns != sorted(set(ns)):
            raise ValueError("list top_n_grams rules by increasing n (datatrove checks them in that order)")
        return v


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    cs = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(values, out=cs[1:])
    return cs[offsets[1:]] - cs[offsets[:-1]]


def gopher_quality(texts: list[str], p: GopherQualityParams, vocab: WordVocab) -> list[Failure | None]:
    """GopherQualityFilter's verdict per text."""
    ids, offsets = vocab.encode(texts)
    n_words = np.diff(offsets)
    nonsym = vocab.non_symbol[ids]
    n_nonsym = _segment_sums(nonsym, offsets)
    len_nonsym = _segment_sums(np.where(nonsym, vocab.length[ids], 0), offsets)
    n_alpha = _segment_sums(vocab.alpha[ids], offsets)
    stops = np.zeros(len(texts), dtype=np.int64)
    for w in dict.fromkeys(p.stop_words):
        wid = vocab.ids.get(w)
        if wid is not None:
            stops += _segment_sums(ids == wid, offsets) > 0
    out: list[Failure | None] = []
    for i, text in enumerate(texts):
        out.append(_quality_one(text, int(n_words[i]), int(n_nonsym[i]), int(len_nonsym[i]), int(n_alpha[i]),
                                int(stops[i]), p))
    return out


def _quality_one(text: str, n_words: int, n_nonsym: int, len_nonsym: int, n_alpha: int, stops: int,
                 p: GopherQualityParams) -> Failure | None:
    if enabled(p.min_doc_words) and n_nonsym < p.min_doc_words:
        return Failure("gopher.min_doc_words", n_nonsym, "<", p.min_doc_words)
    if enabled(p.max_doc_words) and n_nonsym > p.max_doc_words:
        return Failure("gopher.max_doc_words", n_nonsym, ">", p.max_doc_words)
    if n_nonsym:  # datatrove: the mean of no words is nan, which fails no comparison
        mean = len_nonsym / n_nonsym
        if enabled(p.min_avg_word_length) and mean < p.min_avg_word_length:
            return Failure("gopher.mean_word_length", mean, "<", p.min_avg_word_length)
        if enabled(p.max_avg_word_length) and mean > p.max_avg_word_length:
            return Failure("gopher.mean_word_length", mean, ">", p.max_avg_word_length)
    if enabled(p.max_symbol_word_ratio) and n_words:
        r = text.count("#") / n_words
        if r > p.max_symbol_word_ratio:
            return Failure("gopher.hash_word_ratio", r, ">", p.max_symbol_word_ratio)
        r = (text.count("...") + text.count("…")) / n_words
        if r > p.max_symbol_word_ratio:
            return Failure("gopher.ellipsis_word_ratio", r, ">", p.max_symbol_word_ratio)
    if enabled(p.max_bullet_lines_ratio) or enabled(p.max_ellipsis_lines_ratio):
        lines = text.splitlines()
        if lines:
            if enabled(p.max_bullet_lines_ratio):
                stripped = [s.lstrip() for s in lines]
                r = sum(s.startswith(("•", "-")) for s in stripped) / len(lines)
                if r > p.max_bullet_lines_ratio:
                    return Failure("gopher.bullet_lines_ratio", r, ">", p.max_bullet_lines_ratio)
            if enabled(p.max_ellipsis_lines_ratio):
                r = sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
                if r > p.max_ellipsis_lines_ratio:
                    return Failure("gopher.ellipsis_lines_ratio", r, ">", p.max_ellipsis_lines_ratio)
    if enabled(p.max_non_alpha_words_ratio) and n_words:
        r = n_alpha / n_words
        if r < p.max_non_alpha_words_ratio:
            return Failure("gopher.alpha_words_ratio", r, "<", p.max_non_alpha_words_ratio)
    if enabled(p.min_stop_words) and stops < p.min_stop_words:
        return Failure("gopher.stop_words", stops, "<", p.min_stop_words)
    return None


def duplicates(parts: list[str]) -> tuple[int, int]:
    """datatrove's find_duplicates: (repeated elements, their characters), first occurrences not counted."""
    distinct = set(parts)
    return len(parts) - len(distinct), sum(map(len, parts)) - sum(map(len, distinct))


def gopher_repetition(texts: list[str], p: GopherRepetitionParams, vocab: WordVocab) -> list[Failure | None]:
    """GopherRepetitionFilter's verdict per text."""
    out: list[Failure | None] = [None] * len(texts)
    todo = []
    for i, text in enumerate(texts):
        if not text:
            out[i] = Failure("gopher.text_chars", 0, "<", 1)
            continue
        n = len(text)
        paras = _PARAGRAPHS.split(text.strip())
        dups, chars = duplicates(paras)
        if enabled(p.dup_para_frac) and dups / len(paras) > p.dup_para_frac:
            out[i] = Failure("gopher.dup_para_frac", dups / len(paras), ">", p.dup_para_frac)
            continue
        if enabled(p.dup_para_char_frac) and chars / n > p.dup_para_char_frac:
            out[i] = Failure("gopher.dup_para_char_frac", chars / n, ">", p.dup_para_char_frac)
            continue
        lines = _LINES.split(text)
        dups, chars = duplicates(lines)
        if enabled(p.dup_line_frac) and dups / len(lines) > p.dup_line_frac:
            out[i] = Failure("gopher.dup_line_frac", dups / len(lines), ">", p.dup_line_frac)
            continue
        if enabled(p.dup_line_char_frac) and chars / n > p.dup_line_char_frac:
            out[i] = Failure("gopher.dup_line_char_frac", chars / n, ">", p.dup_line_char_frac)
            continue
        todo.append(i)
    if not todo or not (p.top_n_grams or p.dup_n_grams):
        return out
    sub = [texts[i] for i in todo]
    ids, offsets = vocab.encode(sub)
    h1, p1, h2, p2 = vocab.hashes
    top = np.array([n for n, _ in p.top_n_grams], dtype=np.int64)
    top_f = np.array([f for _, f in p.top_n_grams], dtype=np.float64)
    dup = np.array([n for n, _ in p.dup_n_grams], dtype=np.int64)
    dup_f = np.array([f for _, f in p.dup_n_grams], dtype=np.float64)
    text_len = np.fromiter(map(len, sub), np.int64, len(sub))
    fail, value = repetition(ids, offsets, text_len, np.ones(len(sub), np.bool_), vocab.length, h1, p1, h2, p2,
                             top, top_f, dup, dup_f)
    for j, i in enumerate(todo):
        k = int(fail[j])
        if k < 0:
            continue
        frac = int(value[j]) / int(text_len[j])
        if k < len(top):
            out[i] = Failure(f"gopher.top_{top[k]}_gram_char_frac", frac, ">", float(top_f[k]))
        else:
            k -= len(top)
            out[i] = Failure(f"gopher.dup_{dup[k]}_gram_char_frac", frac, ">", float(dup_f[k]))
    return out
