"""The compiled kernels of decontamination: words, n-gram hashes and an open-addressing hash table.

Normalisation (the same for benchmark items and records): the text is lower-cased (Arrow's
`utf8_lower`, one code point for one, so character positions survive), then split into words at
every character that is not a letter or digit: ASCII punctuation, symbols, whitespace and
underscore, Latin-1 punctuation and symbols (U+0080-U+00BF, × and ÷), General Punctuation
(U+2000-U+206F: typographic spaces, dashes, quotes, ellipsis), CJK punctuation (U+3000-U+303F),
fullwidth ASCII punctuation, and the byte-order mark. Every other code point is a word character.
This is the convention of GPT-3's and NeMo Curator's 13-gram decontamination (lower case, no
punctuation, whitespace words), computed on UTF-8 bytes without building a string per word.

A word is hashed with 64-bit FNV-1a over its bytes, an n-gram by a polynomial over its word
hashes seeded with its length, both finished with splitmix64's mixer. Records are scanned with a
ring of the last n word hashes: memory is independent of the record's length.

Usage::

    words = count_words(data, offsets)                         # per text
    hashes, owner = ngram_hashes(data, offsets, n, min_words)  # every n-gram of every text
    keys, vals = build_table(unique_hashes)
    hits, ... = scan(data, offsets, lengths, keys, vals, cap)
"""

from __future__ import annotations

import numba
import numpy as np

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_POLY = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h):
    h = h ^ (h >> _S30)
    h = h * _M1
    h = h ^ (h >> _S27)
    h = h * _M2
    return h ^ (h >> _S31)


@numba.njit(cache=True, nogil=True, inline="always")
def _char_at(data, i, end):
    """(is a word character, byte length) of the UTF-8 character starting at data[i]."""
    b = data[i]
    if b < 0x80:
        word = (0x30 <= b <= 0x39) or (0x61 <= b <= 0x7A) or (0x41 <= b <= 0x5A)
        return word, 1
    if b < 0xC0:  # a stray continuation byte: not a word character
        return False, 1
    if b < 0xE0:
        size, cp = 2, b & 0x1F
    elif b < 0xF0:
        size, cp = 3, b & 0x0F
    else:
        size, cp = 4, b & 0x07
    if i + size > end:
        return False, end - i
    for k in range(1, size):
        cp = (cp << 6) | (data[i + k] & 0x3F)
    sep = ((0x80 <= cp <= 0xBF) or cp == 0xD7 or cp == 0xF7 or (0x2000 <= cp <= 0x206F)
           or (0x3000 <= cp <= 0x303F) or (0xFF01 <= cp <= 0xFF0F) or (0xFF1A <= cp <= 0xFF20)
           or cp == 0xFEFF)
    return not sep, size


@numba.njit(cache=True, nogil=True, inline="always")
def _next_word(data, i, end):
    """(start, stop, hash) of the next word at or after byte i; start == -1 when there is none."""
    while i < end:
        word, size = _char_at(data, i, end)
        if word:
            break
        i += size
    if i >= end:
        return -1, end, np.uint64(0)
    start = i
    h = _FNV_OFFSET
    while i < end:
        word, size = _char_at(data, i, end)
        if not word:
            break
        for k in range(size):
            b = data[i + k]
            if 0x41 <= b <= 0x5A:  # ASCII upper case (the caller lower-cases; this keeps the kernel safe alone)
                b += 0x20
            h = (h ^ np.uint64(b)) * _FNV_PRIME
        i += size
    return start, i, _mix(h)


@numba.njit(cache=True, nogil=True, inline="always")
def _gram(ring, nw, length, width):
    """The hash of the last `length` words (ring holds the last `width` word hashes)."""
    acc = _mix(np.uint64(length) * _POLY)
    for k in range(length):
        acc = acc * _POLY + ring[(nw - length + k) % width]
    acc = _mix(acc)
    return acc if acc != np.uint64(0) else np.uint64(1)


@numba.njit(cache=True, nogil=True)
def count_words(data, offsets):
    """Words per text; text r is data[offsets[r]:offsets[r + 1]]."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.int64)
    for r in range(n):
        i, end = offsets[r], offsets[r + 1]
        c = 0
        while True:
            s, i, _ = _next_word(data, i, end)
            if s < 0:
                break
            c += 1
        out[r] = c
    return out


@numba.njit(cache=True, nogil=True)
def ngram_hashes(data, offsets, words, n, min_words):
    """Every n-gram hash of every text and the text it came from; a text of fewer than n words but
    at least `min_words` gives one hash of all its words; shorter texts give none."""
    total = 0
    for r in range(words.shape[0]):
        w = words[r]
        if w >= n:
            total += w - n + 1
        elif w >= min_words:
            total += 1
    hashes = np.empty(total, dtype=np.uint64)
    owner = np.empty(total, dtype=np.int64)
    ring = np.zeros(n, dtype=np.uint64)
    j = 0
    for r in range(words.shape[0]):
        w = words[r]
        if w < min_words:
            continue
        length = n if w >= n else w
        i, end = offsets[r], offsets[r + 1]
        nw = 0
        while True:
            s, i, h = _next_word(data, i, end)
            if s < 0:
                break
            ring[nw % n] = h
            nw += 1
            if nw >= length and (w >= n or nw == w):
                hashes[j] = _gram(ring, nw, length, n)
                owner[j] = r
                j += 1
    return hashes, owner


@numba.njit(cache=True, nogil=True)
def build_table(unique):
    """An open-addressing table (linear probing, load <= 0.5) mapping each hash to its position
    in `unique`; key 0 marks an empty slot (no n-gram hash is 0)."""
    size = 16
    while size < 2 * unique.shape[0]:
        size *= 2
    keys = np.zeros(size, dtype=np.uint64)
    vals = np.zeros(size, dtype=np.int32)
    mask = np.uint64(size - 1)
    for v in range(unique.shape[0]):
        h = unique[v]
        slot = h & mask
        while keys[slot] != np.uint64(0):
            slot = (slot + np.uint64(1)) & mask
        keys[slot] = h
        vals[slot] = v
    return keys, vals


@numba.njit(cache=True, nogil=True)
def scan(data, offsets, lengths, keys, vals, cap):
    """Find indexed n-grams in every text. `lengths` are the n-gram lengths to look up (n, and the
    word counts of shorter whole items), the largest first.

    Returns (words per text, matches per text, match text, match first byte, match end byte,
    match value, number of matches); at most `cap` matches are stored, all are counted (call
    again with a larger cap when the count exceeds it)."""
    nrec = offsets.shape[0] - 1
    width = lengths[0]
    mask = np.uint64(keys.shape[0] - 1)
    words = np.zeros(nrec, dtype=np.int64)
    per = np.zeros(nrec, dtype=np.int64)
    m_rec = np.empty(cap, dtype=np.int64)
    m_start = np.empty(cap, dtype=np.int64)
    m_end = np.empty(cap, dtype=np.int64)
    m_val = np.empty(cap, dtype=np.int32)
    ring = np.zeros(width, dtype=np.uint64)
    starts = np.zeros(width, dtype=np.int64)
    found = 0
    for r in range(nrec):
        i, end = offsets[r], offsets[r + 1]
        nw = 0
        while True:
            s, i, h = _next_word(data, i, end)
            if s < 0:
                break
            ring[nw % width] = h
            starts[nw % width] = s
            nw += 1
            for li in range(lengths.shape[0]):
                length = lengths[li]
                if nw < length:
                    continue
                g = _gram(ring, nw, length, width)
                slot = g & mask
                while keys[slot] != np.uint64(0):
                    if keys[slot] == g:
                        if found < cap:
                            m_rec[found] = r
                            m_start[found] = starts[(nw - length) % width]
                            m_end[found] = i
                            m_val[found] = vals[slot]
                        found += 1
                        per[r] += 1
                        break
                    slot = (slot + np.uint64(1)) & mask
        words[r] = nw
    return words, per, m_rec, m_start, m_end, m_val, found
