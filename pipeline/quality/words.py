"""Words as datatrove's quality filters count them, fast: spaCy's tokenizer per distinct chunk.

datatrove 0.10.1 splits text into words with `load_word_tokenizer(language)`; for English that is
`spacy.blank("en")` (its `tokenizer_assignment.csv` maps `eng` to `SpaCyTokenizer("en")`), keeping
every token whose stripped text is not empty. spaCy's tokenizer works on each run of non-space
characters on its own (the runs `str.split()` gives: both use `str.isspace`), and whitespace runs
only ever give whitespace tokens, which datatrove drops. So the words of a text are the
concatenation of the words of its chunks, and a chunk's words never depend on its neighbours.

`WordVocab` therefore tokenises each distinct chunk once with the real spaCy tokenizer (the chunks a
batch has not seen yet, in one call) and keeps the answer: a web corpus repeats its chunks, so most
lookups are a dictionary hit. Every word gets an integer id and per-word properties datatrove's rules
need (length, symbol-only, has a letter, polynomial hashes of its characters), as numpy arrays.

Usage::

    vocab = WordVocab("en")
    ids, offsets = vocab.encode(["The cat sat.", "..."])   # words of text i: ids[offsets[i]:offsets[i+1]]
    vocab.length[ids]                                      # their lengths in characters
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from importlib import resources
from itertools import chain, compress, repeat

import numpy as np

from pipeline.errors import ConfigError

# Forget the chunk memo past this many distinct chunks (bounded memory on an endless stream);
# tokenisation never depends on it, so results are the same before and after.
MAX_CHUNKS = 2_000_000
_MISSING = np.iinfo(np.int64).min
_COLUMNS = (("length", np.int64), ("non_symbol", np.bool_), ("alpha", np.bool_),
            ("h1", np.uint64), ("p1", np.uint64), ("h2", np.uint64), ("p2", np.uint64))
# Polynomial hashes of a word's characters modulo 2**64, so that the hash of a concatenation of
# words follows from the words' hashes (Gopher's duplicated n-grams compare "".join(words) strings).
# Two independent odd bases: a chance collision of both is about 2**-128 per pair.
BASES = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)
MASK64 = (1 << 64) - 1


@lru_cache(maxsize=1)
def punctuation() -> tuple[frozenset[str], frozenset[str]]:
    """(datatrove's PUNCTUATION_SET, its TERMINAL_PUNCTUATION), from the data file copied from it."""
    data = json.loads(resources.files("pipeline.quality").joinpath("data/punctuation.json").read_text("utf-8"))
    terminal = frozenset(chr(c) for c in data["terminal_punctuation"])
    return frozenset(chr(c) for c in data["punctuation"]) | terminal, terminal


def _hashes(word: str) -> tuple[int, int, int, int]:
    """(hash, base**len) for each of the two bases, modulo 2**64."""
    out = []
    for base in BASES:
        h = 0
        for ch in word:
            h = (h * base + ord(ch)) & MASK64
        out += [h, pow(base, len(word), 1 << 64)]
    return tuple(out)


class WordVocab:
    """Word ids and per-word properties, grown as texts are encoded (one per process and language)."""

    def __init__(self, language: str = "en") -> None:
        import spacy

        try:
            self.nlp = spacy.blank(language)
        except Exception as e:  # spaCy raises ImportError/KeyError-like errors for an unknown code
            raise ConfigError(f"quality filters: spaCy has no tokenizer for language '{language}' ({e}); "
                              "use a spaCy language code such as en, fr, de") from e
        self.language = language
        self._punct, _ = punctuation()
        from spacy.attrs import IS_PUNCT

        self._is_punct = self.nlp.vocab.lex_attr_getters[IS_PUNCT]
        # Strings the tokenizer treats specially ("cannot" -> "can", "not"; "gonna"; "Im"): never one word
        # without asking spaCy.
        self._specials = frozenset(self.nlp.tokenizer.rules or {})
        self._reset()

    def _reset(self) -> None:
        # memo: chunk -> code; a code >= 0 is the id of the chunk's only word, a code < 0 is
        # -(k + 1) for the k-th entry of the multi-word table (multi_start/multi_len into multi_ids).
        self.memo: dict[str, int] = {}
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self.is_punct: list[bool] = []  # spaCy's IS_PUNCT of each word (its sentencizer reads it)
        self._cols = {name: np.zeros(1024, dtype) for name, dtype in _COLUMNS}
        self._multi: list[tuple[int, ...]] = []
        self._multi_arrays = None

    # -- vocabulary ------------------------------------------------------------------------------

    def word_id(self, word: str) -> int:
        """The id of a word (added if new)."""
        i = self.ids.get(word)
        if i is None:
            i = self.ids[word] = len(self.words)
            self.words.append(word)
            self.is_punct.append(bool(self._is_punct(word)))
            cols = self._cols
            if i == cols["length"].shape[0]:
                for name in cols:
                    cols[name] = np.concatenate([cols[name], np.zeros_like(cols[name])])
            h1, p1, h2, p2 = _hashes(word)
            cols["length"][i] = len(word)
            cols["non_symbol"][i] = any(ch not in self._punct for ch in word)
            cols["alpha"][i] = any(ch.isalpha() for ch in word)
            cols["h1"][i], cols["p1"][i], cols["h2"][i], cols["p2"][i] = h1, p1, h2, p2
        return i

    def _col(self, name: str) -> np.ndarray:
        return self._cols[name][: len(self.words)]

    @property
    def length(self) -> np.ndarray:
        """Characters per word id."""
        return self._col("length")

    @property
    def non_symbol(self) -> np.ndarray:
        """True for a word with a character outside datatrove's punctuation set."""
        return self._col("non_symbol")

    @property
    def alpha(self) -> np.ndarray:
        """True for a word with at least one letter (`str.isalpha`)."""
        return self._col("alpha")

    @property
    def hashes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(hash, base**len) for the first base, then for the second, modulo 2**64, per word id."""
        return self._col("h1"), self._col("p1"), self._col("h2"), self._col("p2")

    # -- encoding --------------------------------------------------------------------------------

    def _learn(self, chunks: list[str]) -> None:
        """Tokenise chunks not seen yet: plain ASCII words that are no special case of the tokenizer
        are one word; the others go through spaCy in one call, joined by single spaces."""
        hard = []
        for c in chunks:
            if c.isascii() and c.isalpha() and c not in self._specials:
                self.memo[c] = self.word_id(c)
            else:
                hard.append(c)
        if not hard:
            return
        starts = np.zeros(len(hard), dtype=np.int64)
        pos = 0
        for k, c in enumerate(hard):
            starts[k] = pos
            pos += len(c) + 1
        words: list[list[int]] = [[] for _ in hard]
        with self.nlp.memory_zone():  # spaCy's own vocabulary would otherwise grow with every new word
            doc = self.nlp.make_doc(" ".join(hard))
            idx = np.fromiter((t.idx for t in doc), np.int64, len(doc))
            owner = np.searchsorted(starts, idx, side="right") - 1
            for t, k in zip(doc, owner.tolist()):
                w = t.text.strip()
                if w:
                    words[k].append(self.word_id(w))
        for c, w in zip(hard, words):
            if len(w) == 1:
                self.memo[c] = w[0]
            else:
                self._multi.append(tuple(w))
                self._multi_arrays = None
                self.memo[c] = -len(self._multi)

    def _multi_now(self):
        if self._multi_arrays is None:
            lens = np.fromiter(map(len, self._multi), np.int64, len(self._multi))
            start = np.zeros(len(self._multi) + 1, dtype=np.int64)
            np.cumsum(lens, out=start[1:])
            flat = np.fromiter(chain.from_iterable(self._multi), np.int64, int(start[-1]))
            self._multi_arrays = (start, lens, flat)
        return self._multi_arrays

    def codes(self, chunks: list[str]) -> np.ndarray:
        """The memo code of each chunk (see `_reset`), learning the chunks not seen yet."""
        codes = np.fromiter(map(self.memo.get, chunks, repeat(_MISSING)), np.int64, len(chunks))
        miss = codes == _MISSING
        if miss.any():
            missing = list(compress(chunks, miss.tolist()))
            self._learn(list(dict.fromkeys(missing)))
            codes[miss] = np.fromiter(map(self.memo.__getitem__, missing), np.int64, len(missing))
        return codes

    def expand(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(word ids of the chunks in order, words per chunk)."""
        counts = np.ones(codes.shape[0], dtype=np.int64)
        multi = np.flatnonzero(codes < 0)
        if multi.size == 0:
            return codes, counts
        start, lens, flat = self._multi_now()
        k = -codes[multi] - 1
        mc = lens[k]
        counts[multi] = mc
        ids = np.repeat(codes, counts)
        first = np.cumsum(counts) - counts
        within = np.arange(int(mc.sum())) - np.repeat(np.cumsum(mc) - mc, mc)
        ids[np.repeat(first[multi], mc) + within] = flat[np.repeat(start[k], mc) + within]
        return ids, counts

    def chunks_words(self, chunks: list[str]) -> list[tuple[int, ...]]:
        """The word ids of each chunk (runs of non-space characters)."""
        multi = self._multi
        return [(c,) if c >= 0 else multi[-c - 1] for c in self.codes(chunks).tolist()]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(word ids of every text, concatenated; offsets, len(texts) + 1)."""
        if len(self.memo) > MAX_CHUNKS:
            self._reset()
        per_text = [t.split() for t in texts]
        flat = list(chain.from_iterable(per_text))
        ids, counts = self.expand(self.codes(flat))
        chunk_off = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, per_text), np.int64, len(per_text)), out=chunk_off[1:])
        word_end = np.zeros(len(flat) + 1, dtype=np.int64)
        np.cumsum(counts, out=word_end[1:])
        return ids, word_end[chunk_off]

    def count(self, texts: list[str]) -> np.ndarray:
        """Words per text (what `encode` gives as offsets, without the ids)."""
        if len(self.memo) > MAX_CHUNKS:
            self._reset()
        per_text = [t.split() for t in texts]
        codes = self.codes(list(chain.from_iterable(per_text)))
        counts = np.ones(codes.shape[0], dtype=np.int64)
        multi = np.flatnonzero(codes < 0)
        if multi.size:
            counts[multi] = self._multi_now()[1][-codes[multi] - 1]
        chunk_off = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, per_text), np.int64, len(per_text)), out=chunk_off[1:])
        word_end = np.zeros(codes.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=word_end[1:])
        return np.diff(word_end[chunk_off])

    def tokens(self, text: str) -> list[str]:
        """The words of one text (for explanations and tests)."""
        return [self.words[i] for w in self.chunks_words(text.split()) for i in w]


_SHARED: dict[str, WordVocab] = {}
_SHARED_LOCK = threading.Lock()


def shared_vocab(language: str) -> WordVocab:
    """One vocabulary per language in this process, shared by the quality stages (a chunk is
    tokenised once for all of them); hold its `lock` while encoding."""
    with _SHARED_LOCK:
        if language not in _SHARED:
            vocab = WordVocab(language)
            vocab.lock = threading.Lock()
            _SHARED[language] = vocab
        return _SHARED[language]
