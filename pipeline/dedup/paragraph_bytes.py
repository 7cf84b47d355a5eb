"""paragraph_dedup's numba kernels over UTF-8 bytes (one call per batch or column, no Python per
record): the whitespace scan that spares most lines the regex, the lines-mode split and
normalisation, and the write-time span removal. `pipeline.dedup.paragraphs` defines what they
compute (in polars and Python) and calls them; property tests hold them to those definitions.

    split_lines(data, offsets, LINE_CLASS, ASCII_LOWER, True, out, out_off, doc, idx, first, last, words, other)
"""

from __future__ import annotations

import numba
import numpy as np

# Byte classes for `scan`: 1 a space; 2 a byte after which collapsing might change the text (an
# ASCII control whitespace, or a lead byte of a non-ASCII whitespace: U+0085, U+00A0, U+1680,
# U+2000-U+205F, U+3000); flagging too many is only slower, never wrong.
BYTE_CLASS = np.zeros(256, np.uint8)
BYTE_CLASS[32] = 1
BYTE_CLASS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 0xC2, 0xE1, 0xE2, 0xE3]] = 2


@numba.njit(cache=True, nogil=True, boundscheck=False)
def scan(data: np.ndarray, offsets: np.ndarray, cls: np.ndarray, flagged: np.ndarray, spaces: np.ndarray) -> None:
    """One branch-free pass over the UTF-8 bytes of each string: `spaces[i]` its spaces,
    `flagged[i]` whether collapsing whitespace might change it (a space at an end or after another,
    or a byte of class 2); flagged strings take the exact regex path."""
    for i in range(offsets.shape[0] - 1):
        a, b = offsets[i], offsets[i + 1]
        n, bad, prev = 0, 0, 1
        for k in range(a, b):
            t = cls[data[k]]
            space = t == 1
            n += space
            bad |= (t >> 1) | (space & prev)
            prev = space
        flagged[i] = bad or (b > a and prev)
        spaces[i] = n


# Byte classes for `split_lines`: 1 a space, 3 another ASCII whitespace (tab, VT, FF, CR: always
# collapsed), 4 the newline that ends a line. A line with a byte >= 0x80 takes the polars path.
LINE_CLASS = np.zeros(256, np.uint8)
LINE_CLASS[32] = 1
LINE_CLASS[[9, 11, 12, 13]] = 3
LINE_CLASS[10] = 4
SAME_BYTE = np.arange(256, dtype=np.uint8)
ASCII_LOWER = SAME_BYTE.copy()
ASCII_LOWER[65:91] += 32


@numba.njit(cache=True, nogil=True, boundscheck=False)
def split_lines(data: np.ndarray, offsets: np.ndarray, cls: np.ndarray, low: np.ndarray, collapse: bool,
                 out: np.ndarray, out_off: np.ndarray, doc: np.ndarray, idx: np.ndarray, first: np.ndarray,
                 last: np.ndarray, words: np.ndarray, other: np.ndarray) -> None:
    """Every line of every string, in order: its record `doc`, position `idx`, bytes
    `[first, last)`, words (runs of non-whitespace) and whether it has a non-ASCII byte (`other`),
    and its text mapped by `low` (ASCII lowercase or nothing), whitespace collapsed when `collapse`,
    appended to `out` (line j is `out[out_off[j]:out_off[j + 1]]`). The hot loop writes each byte
    where it would land uncollapsed; the few lines with whitespace to collapse (a run, a tab, one
    at an end) are compacted in place afterwards."""
    j = 0
    o = 0
    out_off[0] = 0
    for i in range(offsets.shape[0] - 1):
        k, b = offsets[i], offsets[i + 1]
        line = 0
        while True:
            s = k
            w, bad, hi, prev = 0, 0, 0, 1
            while k < b:
                c = data[k]
                t = cls[c]
                if t == 4:
                    break
                out[o + k - s] = low[c]
                ws = t & 1
                w += (ws ^ 1) & prev
                bad |= (ws & prev) | (t >> 1)
                hi |= c
                prev = ws
                k += 1
            size = k - s
            if collapse and hi < 128 and (bad or (prev and size)):
                size = collapse_ascii(out, o, size)
            o += size
            doc[j], idx[j], first[j], last[j], words[j], other[j] = i, line, s, k, w, hi >= 128
            j += 1
            out_off[j] = o
            line += 1
            if k >= b:
                break
            k += 1  # the newline


@numba.njit(cache=True, nogil=True, boundscheck=False)
def collapse_ascii(buf: np.ndarray, at: int, size: int) -> int:
    """`buf[at:at + size]` (ASCII) with whitespace runs as one space and ends stripped, in place; its new size."""
    q, pending = at, False
    for r in range(at, at + size):
        c = buf[r]
        if c == 32 or (c >= 9 and c <= 13):
            pending = q > at
        else:
            if pending:
                buf[q] = 32
                q += 1
                pending = False
            buf[q] = c
            q += 1
    return q - at


@numba.njit(cache=True, nogil=True, boundscheck=False)
def copy_ranges(data: np.ndarray, first: np.ndarray, last: np.ndarray, buf: np.ndarray, off: np.ndarray) -> None:
    """The byte ranges `[first[j], last[j])` of `data`, one after another, into `buf` at `off[j]`."""
    for j in range(first.shape[0]):
        buf[off[j]:off[j + 1]] = data[first[j]:last[j]]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def cut_byte_spans(data: np.ndarray, offsets: np.ndarray, span_off: np.ndarray, start: np.ndarray, end: np.ndarray,
               out: np.ndarray, out_off: np.ndarray, removed: np.ndarray) -> None:
    """Each string's UTF-8 bytes without its character spans, into `out` (string i is
    `out[out_off[i]:out_off[i + 1]]`); `removed[i]` the characters cut. Characters are counted
    by their lead bytes (a byte not of the form 10xxxxxx); in an ASCII string, a byte is one."""
    o = 0
    out_off[0] = 0
    for i in range(offsets.shape[0] - 1):
        k, b = offsets[i], offsets[i + 1]
        hi = 0
        for q in range(k, b):
            hi |= data[q]
        ascii = hi < 128
        ch = 0
        for t in range(span_off[i], span_off[i + 1]):
            if ascii:
                s = max(k, min(offsets[i] + start[t], b))
                e = max(s, min(offsets[i] + end[t], b))
                out[o:o + s - k] = data[k:s]
                o += s - k
                removed[i] += e - s
                k = e
                continue
            k2 = k
            while k2 < b and ch < start[t]:  # to the span's first byte
                k2 += 1
                while k2 < b and (data[k2] & 0xC0) == 0x80:
                    k2 += 1
                ch += 1
            out[o:o + k2 - k] = data[k:k2]
            o += k2 - k
            k = k2
            while k < b and ch < end[t]:  # past its last
                k += 1
                while k < b and (data[k] & 0xC0) == 0x80:
                    k += 1
                ch += 1
                removed[i] += 1
        out[o:o + b - k] = data[k:b]
        o += b - k
        out_off[i + 1] = o
