"""C4's line and document rules (Raffel et al. 2020), as datatrove 0.10.1's `C4QualityFilter` implements
them: lines are stripped, checked in order and removed (too long a word, no terminal punctuation,
too few words, "javascript", a policy phrase); a kept line with "lorem ipsum" or "{" drops the whole
document; the document is dropped with fewer than `min_num_sentences` sentences in its kept lines;
otherwise its text becomes the kept lines joined by newlines.

Sentences are counted only when the answer is not already known: every kept line has at least one
sentence, so with `min_num_sentences` kept lines the document passes; a line whose sentence-ending
characters all sit at its end has exactly one (spaCy's sentencizer starts a sentence only after one).
Other lines replay spaCy's sentencizer (what datatrove's splitter runs) on spaCy's tokens of the line.

Usage::

    results = c4_quality(texts, C4Params(), splitter)   # [C4Result(failure, text, lines, removed)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from pipeline.quality.rules import Failure
from pipeline.quality.words import shared_vocab

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
_WHITESPACE_RUNS = re.compile(r"(\s+)")  # str.isspace, as str.split and spaCy's tokenizer use
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Params(BaseModel):
    """C4QualityFilter's parameters and defaults (datatrove's names; -1 turns a count rule off).

    `split_paragraph: false` (datatrove's sentence mode) is not offered: lines are what a steward sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    policy_substrings: tuple[str, ...] = POLICY_SUBSTRINGS
    language: str = "en"


@dataclass(frozen=True)
class C4Result:
    """One document: its failure (None when kept), its new text when kept, lines before and removed."""

    failure: Failure | None
    text: str | None
    lines: int
    removed: int
    removed_by: dict


class SentenceSplitter:
    """datatrove's `split_into_sentences` count for one language: spaCy's sentencizer over spaCy's
    tokens, replayed on the shared word vocabulary (the tokens of each chunk, plus one whitespace
    token for every whitespace run other than a single space, as spaCy's tokenizer makes them)."""

    def __init__(self, language: str = "en") -> None:
        self.vocab = shared_vocab(language)
        ends = self.vocab.nlp.create_pipe("sentencizer").punct_chars
        self.ends = frozenset(ends)
        self._ends_str = "".join(sorted(ends))
        self._ends_re = re.compile("[" + re.escape(self._ends_str) + "]")

    def count(self, line: str, cap: int) -> int:
        """Sentences in a line (at least 1, as datatrove's span arithmetic gives for any text), counted
        up to `cap`. A line whose sentence-ending characters all sit in its final run has one: the
        sentencizer starts a sentence only after one."""
        if not self._ends_re.search(line.rstrip(self._ends_str)):
            return 1
        parts = _WHITESPACE_RUNS.split(line)  # chunk, whitespace, chunk, ...; a chunk may be "" at either end
        with self.vocab.lock:
            found = iter(self.vocab.chunks_words([c for c in parts[0::2] if c]))
            chunk_words = [next(found) if c else () for c in parts[0::2]]
            words, is_punct = self.vocab.words, self.vocab.is_punct
            n, seen = 1, False
            for k, ws in enumerate([None, *parts[1::2]]):
                if ws is not None and ws != " " and seen:  # a whitespace token: neither punctuation nor an end
                    n, seen = n + 1, False
                for w in chunk_words[k]:
                    end = words[w] in self.ends
                    if seen and not end and not is_punct[w]:
                        n, seen = n + 1, False
                        if n >= cap:
                            return n
                    elif end:
                        seen = True
            return n


def c4_quality(texts: list[str], p: C4Params, splitter: SentenceSplitter) -> list[C4Result]:
    """C4QualityFilter's verdict and new text per document."""
    return [_one(t, p, splitter) for t in texts]


def _one(text: str, p: C4Params, splitter: SentenceSplitter) -> C4Result:
    lines = text.splitlines()
    kept: list[str] = []
    by = {"too_long_word": 0, "no_terminal_punct": 0, "too_few_words": 0, "javascript": 0, "policy": 0}
    for at, line in enumerate(lines, 1):
        line = line.strip()
        words = line.split()
        if p.max_word_length != -1 and words and max(map(len, words)) > p.max_word_length:
            by["too_long_word"] += 1
            continue
        if p.remove_citations and "[" in line:
            line = CITATION.sub("", line)
        if p.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            by["no_terminal_punct"] += 1
            continue
        if len(words) < p.min_words_per_line:
            by["too_few_words"] += 1
            continue
        low = line.lower()
        if p.filter_lorem_ipsum and "lorem ipsum" in low:
            return C4Result(Failure("c4.lorem_ipsum", at, "at line", None), None, len(lines), 0, {})
        if p.filter_javascript and "javascript" in low:
            by["javascript"] += 1
            continue
        if p.filter_curly_bracket and "{" in line:
            return C4Result(Failure("c4.curly_bracket", at, "at line", None), None, len(lines), 0, {})
        if p.filter_policy and any(s in low for s in p.policy_substrings):
            by["policy"] += 1
            continue
        kept.append(line)
    removed = {k: v for k, v in by.items() if v}
    if p.min_num_sentences != -1 and len(kept) < p.min_num_sentences:
        n = 0
        for x in kept:
            n += splitter.count(x, p.min_num_sentences - n)
            if n >= p.min_num_sentences:
                break
        if n < p.min_num_sentences:
            return C4Result(Failure("c4.min_num_sentences", n, "<", p.min_num_sentences), None, len(lines),
                            len(lines) - len(kept), removed)
    return C4Result(None, "\n".join(kept).strip(), len(lines), len(lines) - len(kept), removed)
