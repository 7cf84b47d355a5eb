"""The short-document pass of near-duplicate detection: character shingles of content, exact verification.

Word 5-grams cannot see that two short texts are copies: a word swap in a 10-word text changes
most of its 5-grams, and a header or footer added to a 15-word text makes up most of the copy's
signature, so the copy never shares an LSH band with its source (bench/README.md, issue #16).
For records of at most `short_pass_max_words` normalised words (100 by default; 0 turns it off), this pass
compares their CONTENT by character 5-grams:

1. boilerplate is removed first, on words: a word 5-gram (for a text of fewer than 5 words, the
   whole text), or a text's first or last 3 or 4 words (a short header or footer), found in at
   least `min_docs` of the short records (exact copies included, the same floor as the signature
   rule in `lsh.CommonValues`) marks its words as boilerplate; what is left is the record's content
   text;
2. content texts with at least MIN_SHINGLES distinct character 5-grams are MinHashed and banded
   (candidates only);
3. every candidate pair is verified on the EXACT Jaccard of the two content 5-gram sets; a pair at
   or above `threshold` whose content words also agree (MIN_WORD_JACCARD, and neither text's words
   a strict subset of the other's: `words_disagree`) and whose numbers do not conflict
   (`number_conflicts`) is a near-duplicate edge like a verified pair of the word pass.

Two short texts that share only a template are not similar here (the template is not content), a
text too short to judge (fewer than MIN_SHINGLES content shingles) is never paired, two pages of
one template that differ in their number are not paired, and nothing is decided on an estimate.

Usage::

    content = content_texts(normalised_short_texts, min_docs=20)
    pairs, sims, stats = short_pairs(content, threshold=0.85, min_shingles=MIN_SHINGLES)
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.dedup.lsh import band_keys, bucket_pairs, choose_bands, unique_pairs
from pipeline.dedup.minhash import MinHashParams, intersection_sorted, pair_jaccard, shingle_sets, signatures

SHORT_FILE_SUFFIX = ".short.parquet"
WORD_NGRAM = 5
# A header or footer template shorter than WORD_NGRAM words is never a word 5-gram of its own: the
# first and the last k words of a text, for k in this range, are counted too (a 4-word header,
# "this article was written", made tiny pages under it look alike; bench/README.md, issue #16).
EDGE_WORDS = (3, 4)
CHAR_NGRAM = 5
# Content character 5-grams a record needs to be paired at all (about 5 words): below it, two
# different texts that share a title pattern look alike (measured on the tuning seed, bench/README.md).
MIN_SHINGLES = 24
# A pair's content WORD sets must agree too (Jaccard of the distinct words): character 5-grams run
# across word boundaries, so two different texts that share one long sentence, or two generated
# texts that share a prefix, reach 0.6-0.7 by characters while their words agree 0.5-0.66; a word
# swap keeps every word (1.0). On the 1M tuning corpus (bench/README.md, issue #16), at a character
# bar of 0.6 a bar of 0.7 kept 14,651 of the 16,623 true pairs the word pass cannot see and none of
# the 17 false ones; at 1M on other seeds 0.7 and 0.75 still paired different originals of six to
# eight words that differ in one word ("One was very ..." / "Weston was very ...": 6/8 = 0.75).
MIN_WORD_JACCARD = 0.8
# Texts per step of the pass's heavy parts: their whole-array versions (the sets of all 280k short
# texts of 1M documents take 0.3 GiB, building them twice that) set the barrier's memory peak.
CHUNK = 20_000


def _arrow_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    arr = arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1].copy()
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data, offsets


def word_counts(normalised: pa.Array) -> np.ndarray:
    """Words of each normalised text (single spaces between words; 0 for an empty text)."""
    data, offsets = _arrow_buffers(normalised)
    spaces = np.concatenate([[0], np.cumsum(data == 32)]) if data.size else np.zeros(1, np.int64)
    n_sp = spaces[offsets[1:]] - spaces[offsets[:-1]]
    return np.where(offsets[1:] > offsets[:-1], n_sp + 1, 0).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _fnv64(data, start, end):
    h = np.uint64(0xCBF29CE484222325)
    for k in range(start, end):
        h = (h ^ np.uint64(data[k])) * np.uint64(0x100000001B3)
    return h


@numba.njit(cache=True, nogil=True)
def _word_starts(data, start, end, out):
    """Token start offsets of one text, plus a virtual start after the end; returns the count."""
    if end <= start:
        return 0
    out[0] = start
    m = 1
    for k in range(start, end):
        if data[k] == 32:
            out[m] = k + 1
            m += 1
    out[m] = end + 1
    return m


@numba.njit(cache=True, nogil=True)
def _edge_salt(k, suffix):
    """Sets a text's first (or last) k words apart from its n-grams and from the other edge."""
    return np.uint64(0x9E3779B97F4A7C15) * np.uint64(2 * k + suffix + 1)


@numba.njit(cache=True, nogil=True)
def _grams(data, offsets, ngram, out_hash, out_doc):
    """Every distinct-position word n-gram hash of each text (a text of fewer words: one of the
    whole), then its edges: its first and its last k words for each k of EDGE_WORDS below its length."""
    pos = 0
    starts = np.empty(0, dtype=np.int64)
    for i in range(offsets.shape[0] - 1):
        s, e = offsets[i], offsets[i + 1]
        if starts.shape[0] < e - s + 2:
            starts = np.empty(e - s + 2, dtype=np.int64)
        m = _word_starts(data, s, e, starts)
        if m == 0:
            continue
        if m < ngram:
            out_hash[pos] = _fnv64(data, s, e)
            out_doc[pos] = i
            pos += 1
        else:
            for u in range(m - ngram + 1):
                out_hash[pos] = _fnv64(data, starts[u], starts[u + ngram] - 1)
                out_doc[pos] = i
                pos += 1
        for k in range(EDGE_WORDS[0], EDGE_WORDS[1] + 1):
            if k >= m:
                break
            out_hash[pos] = _fnv64(data, s, starts[k] - 1) ^ _edge_salt(k, 0)
            out_hash[pos + 1] = _fnv64(data, starts[m - k], e) ^ _edge_salt(k, 1)
            out_doc[pos] = i
            out_doc[pos + 1] = i
            pos += 2
    return pos


@numba.njit(cache=True, nogil=True)
def _strip(data, offsets, ngram, common, out, out_offsets):
    """Copy each text without the words covered by a common n-gram (`common`: one flag per n-gram,
    in `_grams` order)."""
    g = 0
    w = 0
    starts = np.empty(0, dtype=np.int64)
    cover = np.empty(0, dtype=np.bool_)
    for i in range(offsets.shape[0] - 1):
        out_offsets[i] = w
        s, e = offsets[i], offsets[i + 1]
        if starts.shape[0] < e - s + 2:
            starts = np.empty(e - s + 2, dtype=np.int64)
            cover = np.empty(e - s + 2, dtype=np.bool_)
        m = _word_starts(data, s, e, starts)
        if m == 0:
            continue
        cover[:m] = False
        if m < ngram:
            if common[g]:
                cover[:m] = True
            g += 1
        else:
            for u in range(m - ngram + 1):
                if common[g]:
                    cover[u:u + ngram] = True
                g += 1
        for k in range(EDGE_WORDS[0], EDGE_WORDS[1] + 1):
            if k >= m:
                break
            if common[g]:
                cover[:k] = True
            if common[g + 1]:
                cover[m - k:m] = True
            g += 2
        first = True
        for u in range(m):
            if cover[u]:
                continue
            if not first:
                out[w] = 32
                w += 1
            for k in range(starts[u], starts[u + 1] - 1):
                out[w] = data[k]
                w += 1
            first = False
    out_offsets[offsets.shape[0] - 1] = w


@numba.njit(cache=True, nogil=True)
def _distinct_per_text(h, d, out):
    """Each text's distinct grams, one after another (`h` grouped by text: `d` nondecreasing)."""
    pos = 0
    i = 0
    while i < h.shape[0]:
        j = i
        while j < h.shape[0] and d[j] == d[i]:
            j += 1
        seg = np.sort(h[i:j])
        for k in range(seg.shape[0]):
            if k == 0 or seg[k] != seg[k - 1]:
                out[pos] = seg[k]
                pos += 1
        i = j
    return pos


def _chunk_grams(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The word n-gram hashes of the texts between `offsets` (in `_grams` order) and their text (0-based)."""
    cap = int(offsets[-1] - offsets[0]) + (len(offsets) - 1) * (1 + 2 * (EDGE_WORDS[1] - EDGE_WORDS[0] + 1))
    h, d = np.empty(cap, np.uint64), np.empty(cap, np.int64)
    m = _grams(data, offsets, WORD_NGRAM, h, d)
    return h[:m].copy(), d[:m].copy()


def _frequent_grams(data: np.ndarray, offsets: np.ndarray, min_docs: int, counted: np.ndarray | None) -> np.ndarray:
    """The gram hashes (sorted) found in at least `min_docs` texts, each (gram, text) counted once,
    only texts where `counted` when given; a chunk of texts at a time. In numpy and numba: a polars
    unique + group-by over the 7.6M grams of 1M documents' short texts peaked 1.6 GiB above its
    input (bench/README.md, issue #16)."""
    distinct = [np.zeros(0, np.uint64)]
    for s in range(0, len(offsets) - 1, CHUNK):
        h, d = _chunk_grams(data, offsets[s : s + CHUNK + 1])
        if counted is not None:
            keep = counted[s : s + CHUNK][d]
            h, d = h[keep], d[keep]
        out = np.empty(h.size, np.uint64)
        distinct.append(out[: _distinct_per_text(h, d, out)].copy())
    values, docs = np.unique(np.concatenate(distinct), return_counts=True)
    return values[docs >= min_docs]


def content_texts(normalised: pa.Array, min_docs: int, count_in: np.ndarray | None = None) -> pa.Array:
    """Each normalised text without its boilerplate words: the words of every word 5-gram found in
    at least `min_docs` of the texts (counted once per text; `count_in`, a bool mask, limits which
    texts are counted, e.g. this run's own records; None: all). `min_docs` 0: nothing is removed."""
    data, offsets = _arrow_buffers(normalised)
    n = len(offsets) - 1
    if n == 0 or min_docs <= 0:
        return normalised.cast(pa.large_string())
    frequent = _frequent_grams(data, offsets, min_docs, None if count_in is None else np.asarray(count_in, bool))
    out = np.empty(max(1, int(offsets[-1] - offsets[0])), np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    for s in range(0, n, CHUNK):
        h, _d = _chunk_grams(data, offsets[s : s + CHUNK + 1])
        common = np.zeros(h.size, bool)
        if frequent.size:  # `frequent` is sorted: a binary search, lighter than np.isin's sort of both
            common = frequent[np.minimum(np.searchsorted(frequent, h), frequent.size - 1)] == h
        part = out_offsets[s : s + CHUNK + 1]
        start = out_offsets[s]
        _strip(data, offsets[s : s + CHUNK + 1], WORD_NGRAM, common, out[start:], part)
        part += start
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_offsets.tobytes()),
                                            pa.py_buffer(out[: out_offsets[-1]].tobytes()))


@numba.njit(cache=True, nogil=True)
def _number_conflicts(flat, offs, left, right, out):
    """out[k]: each side of pair k has a number token the other lacks (sorted sets in flat/offs)."""
    for k in range(left.shape[0]):
        a = flat[offs[left[k]]:offs[left[k] + 1]]
        b = flat[offs[right[k]]:offs[right[k] + 1]]
        inter = intersection_sorted(a, b)
        out[k] = a.shape[0] > inter and b.shape[0] > inter


def number_conflicts(texts: pa.Array, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Whether each pair (indexes into `texts`) disagrees on numbers: each text holds a token with a
    digit that the other lacks. A number in a short text is an identity (a post, an invoice, a
    date, a version): two pages of one template that differ in it are different documents, while
    a copy with a sentence added or removed differs on one side only."""
    nums = pl.Series(texts).str.extract_all(r"\S*\d\S*").list.join(" ").to_arrow()
    flat, offs = shingle_sets(nums, MinHashParams(ngram=1, char_ngrams=False, short_docs="whole"))
    out = np.zeros(len(left), np.bool_)
    if len(left):
        _number_conflicts(flat, offs, np.asarray(left, np.int64), np.asarray(right, np.int64), out)
    return out


def words_disagree(flat: np.ndarray, offs: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Whether each pair's distinct content words (sorted sets in flat/offs) rule it out: they agree
    less than MIN_WORD_JACCARD, or one text's words are a strict subset of the other's. A short text
    that is another plus or minus a word or two is as often a different text as a copy (two
    generated five-word originals, "... churchman and." / "... churchman and was.", on three 1M
    corpora; bench/README.md, issue #16); a copy of a longer text that gained or lost words is the
    word pass's to find. A reordered, reformatted or re-templated copy keeps its words."""
    jac = pair_jaccard(flat, offs, left, right)
    na, nb = np.diff(offs)[left], np.diff(offs)[right]
    shared = np.rint(jac * (na + nb) / (1.0 + jac))          # |A ∩ B| from the Jaccard and the sizes
    return (jac < MIN_WORD_JACCARD) | ((na != nb) & (shared == np.minimum(na, nb)))


def _set_sizes(content: pa.Array, params: MinHashParams, chunk: int = CHUNK) -> np.ndarray:
    """Distinct shingles of each text, a chunk of texts at a time."""
    return np.concatenate([np.zeros(0, np.int64)] + [np.diff(shingle_sets(content.slice(s, chunk), params)[1])
                                                     for s in range(0, len(content), chunk)])


def _sets(texts: pa.Array, params: MinHashParams, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_sets` built a chunk of texts at a time (the same flat array and offsets)."""
    flats, offs = [np.zeros(0, np.uint64)], [np.zeros(1, np.int64)]
    for s in range(0, len(texts), chunk):
        f, o = shingle_sets(texts.slice(s, chunk), params)
        flats.append(f)
        offs.append(o[1:] + offs[-1][-1])
    return np.concatenate(flats), np.concatenate(offs)


def _band_keys(texts: pa.Array, params: MinHashParams, bands: int, rows: int, chunk: int = CHUNK) -> np.ndarray:
    """LSH band keys of each text, signed a chunk at a time (the signatures are not kept)."""
    return np.concatenate([np.zeros((0, bands), np.uint64)] + [band_keys(signatures(texts.slice(s, chunk), params)[0], bands, rows)
                                                               for s in range(0, len(texts), chunk)])


def short_pairs(content: pa.Array, threshold: float, min_shingles: int, num_perm: int = 128, seed: int = 1,
                eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pairs (i < j, indexes into `content`) whose content character-5-gram sets have an exact
    Jaccard of at least `threshold`, with that Jaccard, and statistics. Only texts with at least
    `min_shingles` distinct content 5-grams (and in `eligible`, a bool mask, when given) take part."""
    params = MinHashParams(num_perm=num_perm, seed=seed, ngram=CHAR_NGRAM, char_ngrams=True, short_docs="skip")
    n = len(content)
    ok = _set_sizes(content, params) >= max(1, min_shingles)
    if eligible is not None:
        ok &= np.asarray(eligible, bool)
    docs = np.flatnonzero(ok)
    stats = {"records": int(n), "compared": int(docs.size)}
    if docs.size < 2:
        stats.update({"candidate_pairs": 0, "verified_pairs": 0})
        return np.empty((0, 2), np.int64), np.empty(0), stats
    bands, rows, _p = choose_bands(num_perm, threshold, 0.95)
    keys = _band_keys(content.take(pa.array(docs)), params, bands, rows)
    pairs = unique_pairs([bucket_pairs(docs, keys[:, k], 64) for k in range(bands)])
    sims, keep, words_vetoed, numbers_vetoed = np.empty(0), np.zeros(0, bool), 0, 0
    if pairs.size:  # the exact sets of the texts in a candidate pair only
        need = np.unique(pairs)
        texts = content.take(pa.array(need))
        left, right = np.searchsorted(need, pairs[:, 0]), np.searchsorted(need, pairs[:, 1])
        flat, offs = _sets(texts, params)
        sims = pair_jaccard(flat, offs, left, right)
        del flat, offs
        keep = sims >= threshold
        words = np.zeros(len(pairs), bool)
        flat, offs = _sets(texts, MinHashParams(ngram=1, char_ngrams=False, short_docs="whole"))
        words[keep] = words_disagree(flat, offs, left[keep], right[keep])
        numbers = np.zeros(len(pairs), bool)
        numbers[keep & ~words] = number_conflicts(texts, left[keep & ~words], right[keep & ~words])
        words_vetoed, numbers_vetoed = int(words.sum()), int(numbers.sum())
        keep &= ~words & ~numbers
    stats.update({"bands": bands, "rows": rows, "candidate_pairs": int(len(pairs)), "verified_pairs": int(keep.sum()),
                  "min_word_jaccard": MIN_WORD_JACCARD, "vetoed_by_words": words_vetoed,
                  "vetoed_by_numbers": numbers_vetoed})
    return pairs[keep], sims[keep], stats


class ShortPass:
    """The short-document pass's verified pairs (doc indexes, i < j) and exact similarities, with
    look-ups by pair."""

    def __init__(self, pairs: np.ndarray, sims: np.ndarray, stats: dict) -> None:
        order = np.argsort(pairs[:, 0] << 32 | pairs[:, 1]) if pairs.size else np.zeros(0, np.int64)
        self.pairs, self.sims, self.stats = pairs[order].reshape(-1, 2), sims[order], stats
        self.code = self.pairs[:, 0] << 32 | self.pairs[:, 1]
        self.added = np.zeros(len(self.code), bool)  # not verified by the word pass (set by `near.resolve_group`)

    def _find(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.minimum(left, right).astype(np.int64), np.maximum(left, right).astype(np.int64)
        code = a << 32 | b
        at = np.minimum(np.searchsorted(self.code, code), max(0, len(self.code) - 1))
        hit = (self.code[at] == code) if len(self.code) else np.zeros(len(code), bool)
        return at, hit

    def lookup(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The pass's similarity of each pair, or 0 when it did not verify it."""
        at, hit = self._find(left, right)
        return np.where(hit, self.sims[at] if len(self.sims) else 0.0, 0.0)

    def only(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Pairs this pass verified and the word pass did not (set by `near.resolve_group`)."""
        at, hit = self._find(left, right)
        return hit & (self.added[at] if len(self.code) else False)


def run_short_pass(key_files: list[tuple[int, Path]], key_frame: pl.DataFrame, cfg, min_docs: int) -> ShortPass:
    """The pass over this run's short texts (the `.short.parquet` beside each unit's band-key file
    in `key_files`); `key_frame` maps (unit, row) to the doc index of the near-duplicate stage.
    Records not among the docs (exact copies, earlier decisions) count towards boilerplate but are
    never paired. `cfg` is the NearDedupConfig."""
    none = ShortPass(np.empty((0, 2), np.int64), np.empty(0), {"max_words": cfg.short_pass_max_words})
    if cfg.short_pass_max_words <= 0:
        return none
    frames = []
    for unit, path in key_files:
        sp = path.with_name(path.stem + SHORT_FILE_SUFFIX)
        if sp.exists():
            frames.append(pl.read_parquet(sp).with_columns(pl.lit(unit, pl.Int64).alias("unit")))
    if not frames:
        return none
    texts = pl.concat(frames).join(key_frame, on=["unit", "row"], how="left")
    threshold = max(cfg.threshold, cfg.short_pass_threshold)
    content = content_texts(texts["text"].to_arrow(), min_docs if cfg.boilerplate_min_docs else 0)
    doc = texts["doc"].fill_null(-1).to_numpy()
    is_doc = texts["doc"].is_not_null().to_numpy()
    pairs, sims, stats = short_pairs(content, threshold, MIN_SHINGLES, cfg.num_perm, cfg.seed, is_doc)
    stats = {"max_words": cfg.short_pass_max_words, "threshold": threshold, "min_shingles": MIN_SHINGLES, **stats}
    if pairs.size:
        pairs = np.sort(doc[pairs].astype(np.int64), axis=1)
    return ShortPass(pairs, sims, stats)
