"""FineWeb's quality rules (Penedo et al. 2024), as datatrove 0.10.1's `FineWebQualityFilter` implements
them: the share of lines ending in terminal punctuation, of short lines, of characters in repeated
lines, and the ratio of newlines to words.

Usage::

    fineweb_quality(texts, FineWebParams(), vocab)     # [Failure(...) or None]
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.quality.gopher import duplicates
from pipeline.quality.rules import Failure
from pipeline.quality.words import WordVocab, punctuation


class FineWebParams(BaseModel):
    """FineWebQualityFilter's parameters and defaults (datatrove's names); `stop_chars` None means
    datatrove's TERMINAL_PUNCTUATION."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] | None = None
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    language: str = "en"


def fineweb_quality(texts: list[str], p: FineWebParams, vocab: WordVocab) -> list[Failure | None]:
    """FineWebQualityFilter's verdict per text."""
    stop = tuple(p.stop_chars) if p.stop_chars is not None else tuple(sorted(punctuation()[1]))
    out: list[Failure | None] = [None] * len(texts)
    todo = []
    for i, text in enumerate(texts):
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            out[i] = Failure("fineweb.non_empty_lines", 0, "<", 1)
            continue
        r = sum(1 for line in lines if line.endswith(stop)) / len(lines)
        if r < p.line_punct_thr and not (r == 0 and p.line_punct_exclude_zero):
            out[i] = Failure("fineweb.line_punct_ratio", r, "<", p.line_punct_thr)
            continue
        r = sum(1 for line in lines if len(line) <= p.short_line_length) / len(lines)
        if r > p.short_line_thr:
            out[i] = Failure("fineweb.short_line_ratio", r, ">", p.short_line_thr)
            continue
        r = duplicates(lines)[1] / (len(text) - text.count("\n"))
        if r > p.char_duplicates_ratio:
            out[i] = Failure("fineweb.char_dup_ratio", r, ">", p.char_duplicates_ratio)
            continue
        todo.append(i)
    if todo:
        sub = [texts[i] for i in todo]
        n_words = vocab.count(sub)
        for j, i in enumerate(todo):
            newlines = sub[j].count("\n")
            words = int(n_words[j])
            # datatrove divides by the word count (ZeroDivisionError without words); no word here
            # means text made of characters spaCy keeps no token for: the rule fails it.
            r = newlines / words if words else float("inf")
            if r > p.new_line_ratio:
                out[i] = Failure("fineweb.list_ratio", r if words else newlines, ">", p.new_line_ratio)
    return out
