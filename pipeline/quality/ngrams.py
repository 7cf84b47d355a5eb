"""Gopher's n-gram repetition measures over word ids, compiled (numba), a whole batch per call.

Two measures, exactly as datatrove 0.10.1 defines them (`gopher_repetition_filter.py`):

- top n-gram: the n-grams are `" ".join(words[i:i+n])`; the most common one (the first seen among
  equally common ones, as `Counter.most_common(1)` returns it) times its count, in characters. Two
  n-grams are equal exactly when their word sequences are (a word has no space), so n-grams are
  interned level by level: the id of `words[i:i+n]` is the id of the pair (id of
  `words[i:i+n-1]`, `words[i+n-1]`): exact, no hashing of text.
- duplicated n-gram characters: a greedy walk over `"".join(words[i:i+n])`; a string seen before
  adds its length and jumps n words ahead. Here equality is of the joined strings (["ab", "c"]
  equals ["a", "bc"]), so windows are compared by two polynomial hashes of their characters
  (modulo 2**64, two bases) plus their length: a chance collision is about 2**-128 per pair.

Usage::

    fail, value = repetition(ids, offsets, text_len, todo, lens, h1, p1, h2, p2, top_n, top_frac, dup_n, dup_frac)
    # fail[d]: -1 (passes), k < len(top_n) (top n-gram rule k), else dup rule k - len(top_n); value[d]: characters
"""

from __future__ import annotations

import numba
import numpy as np

_EMPTY = np.uint64(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(k1, k2, mask):
    h = (k1 ^ (k2 * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
    return np.int64((h >> np.uint64(17)) & np.uint64(mask))


@numba.njit(cache=True, nogil=True)
def _inverse(q):
    """The inverse of an odd number modulo 2**64 (Newton's iteration)."""
    x = q
    for _ in range(6):
        x = x * (np.uint64(2) - q * x)
    return x


@numba.njit(cache=True, nogil=True, boundscheck=False)
def repetition(ids, offsets, text_len, todo, lens, h1, p1, h2, p2, top_n, top_frac, dup_n, dup_frac):
    """The first failing n-gram rule per document (see the module docstring)."""
    n_docs = offsets.shape[0] - 1
    fail = np.full(n_docs, -1, np.int64)
    value = np.zeros(n_docs, np.int64)
    longest = 1
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    size = 1
    while size < 2 * longest + 2:
        size *= 2
    mask = size - 1
    key1 = np.zeros(size, np.uint64)
    key2 = np.zeros(size, np.uint64)
    key3 = np.zeros(size, np.int64)
    val = np.zeros(size, np.int64)
    stamp = np.zeros(size, np.int64)
    gen = 0
    max_n = 1
    for n in top_n:
        max_n = max(max_n, n)
    level = np.zeros(longest, np.int64)
    nxt = np.zeros(longest, np.int64)
    counts = np.zeros(longest + 1, np.int64)
    pre1 = np.zeros(longest + 1, np.uint64)
    pre2 = np.zeros(longest + 1, np.uint64)
    q1 = np.zeros(longest + 1, np.uint64)
    q2 = np.zeros(longest + 1, np.uint64)
    qi1 = np.zeros(longest + 1, np.uint64)
    qi2 = np.zeros(longest + 1, np.uint64)
    chars = np.zeros(longest + 1, np.int64)
    for d in range(n_docs):
        if not todo[d] or text_len[d] == 0:
            continue
        a = offsets[d]
        m = offsets[d + 1] - a
        total = text_len[d]
        done = False
        # -- top n-grams: intern level by level ------------------------------------------------
        # Level 1: words renumbered in order of first appearance (small ids index `counts`).
        gen += 1
        next_id = 0
        for i in range(m):
            k1 = np.uint64(ids[a + i])
            s = _slot(k1, _EMPTY, mask)
            while True:
                if stamp[s] != gen:
                    stamp[s] = gen
                    key1[s] = k1
                    val[s] = next_id
                    level[i] = next_id
                    next_id += 1
                    break
                if key1[s] == k1:
                    level[i] = val[s]
                    break
                s = (s + 1) & mask
        cur = 1
        for k in range(top_n.shape[0]):
            n = top_n[k]
            if m < n:
                continue
            while cur < n:
                gen += 1
                next_id = 0
                width = m - cur  # windows of cur + 1 words
                for i in range(width):
                    k1 = np.uint64(level[i])
                    k2 = np.uint64(ids[a + i + cur])
                    s = _slot(k1, k2, mask)
                    while True:
                        if stamp[s] != gen:
                            stamp[s] = gen
                            key1[s] = k1
                            key2[s] = k2
                            val[s] = next_id
                            nxt[i] = next_id
                            next_id += 1
                            break
                        if key1[s] == k1 and key2[s] == k2:
                            nxt[i] = val[s]
                            break
                        s = (s + 1) & mask
                for i in range(width):
                    level[i] = nxt[i]
                cur += 1
            width = m - n + 1
            for i in range(width):
                counts[level[i]] = 0
            for i in range(width):
                counts[level[i]] += 1
            # Counter.most_common(1): the largest count, and among equally common n-grams the one
            # inserted first, i.e. the first window (in text order) whose n-gram has that count.
            best = 0
            for i in range(width):
                if counts[level[i]] > best:
                    best = counts[level[i]]
            first = 0
            for i in range(width):
                if counts[level[i]] == best:
                    first = i
                    break
            length = n - 1
            for j in range(n):
                length += lens[ids[a + first + j]]
            top = length * best
            if top / total > top_frac[k]:
                fail[d] = k
                value[d] = top
                done = True
                break
        if done:
            continue
        # -- duplicated n-gram characters: greedy walk over joined windows ----------------------
        pre1[0] = 0
        pre2[0] = 0
        q1[0] = 1
        q2[0] = 1
        chars[0] = 0
        for i in range(m):
            w = ids[a + i]
            pre1[i + 1] = pre1[i] * p1[w] + h1[w]
            pre2[i + 1] = pre2[i] * p2[w] + h2[w]
            q1[i + 1] = q1[i] * p1[w]
            q2[i + 1] = q2[i] * p2[w]
            chars[i + 1] = chars[i] + lens[w]
        for i in range(m + 1):
            qi1[i] = _inverse(q1[i])
            qi2[i] = _inverse(q2[i])
        for k in range(dup_n.shape[0]):
            n = dup_n[k]
            gen += 1
            repeated = 0
            i = 0
            while i < m - n + 1:
                b = i + n
                w1 = pre1[b] - pre1[i] * (q1[b] * qi1[i])
                w2 = pre2[b] - pre2[i] * (q2[b] * qi2[i])
                ln = chars[b] - chars[i]
                s = _slot(w1, w2 ^ np.uint64(ln), mask)
                seen = False
                while True:
                    if stamp[s] != gen:
                        stamp[s] = gen
                        key1[s] = w1
                        key2[s] = w2
                        key3[s] = ln
                        break
                    if key1[s] == w1 and key2[s] == w2 and key3[s] == ln:
                        seen = True
                        break
                    s = (s + 1) & mask
                if seen:
                    repeated += ln
                    i += n
                else:
                    i += 1
            if repeated / total > dup_frac[k]:
                fail[d] = top_n.shape[0] + k
                value[d] = repeated
                break
    return fail, value
