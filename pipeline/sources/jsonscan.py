"""One compiled pass over a chunk of JSON Lines: its line count, and whether polars may parse it.

polars parses a chunk of JSON Lines fast but leniently in two ways the reader must not inherit:

- a lone UTF-16 surrogate escape (`\\ud800` not followed by a low surrogate) becomes U+0000
  instead of an error (orjson, like the JSON spec's UTF-8 rule, rejects the line);
- a text field that holds a number, boolean, array or object in some rows becomes its JSON text
  in a string column, where it must be rejected as "not a string".

`scan_chunk` finds the first in the bytes; `suspect_text_rows` finds the rows whose parsed text
could be the second, to be checked against their raw lines. Both run without the GIL (a regex
over the chunk held it, and queued the other worker thread behind it).
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl


@numba.njit(cache=True, nogil=True, inline="always")
def _hex4(data, k):
    """The value of the four hex digits at data[k:k+4], or -1."""
    v = 0
    for j in range(k, k + 4):
        if j >= data.shape[0]:
            return -1
        c = data[j]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return -1
        v = v * 16 + d
    return v


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_ONES = np.uint64(0x0101010101010101)
_ZERO = np.uint64(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _zero_bytes(t):
    """The high bit of every byte of `t` that is zero, and no other bit (exact, no carries)."""
    y = (t & _LOW7) + _LOW7
    return ~(y | t | _LOW7)


@numba.njit(cache=True, nogil=True)
def _scan(data, words):
    """`words` is `data` viewed as 64-bit words: a word with no backslash (nearly all of them) has
    its newlines counted in a few operations; bytes near a backslash go through the escape rules."""
    newlines = 0
    lone = False
    n = data.shape[0]
    k = 0
    nw = words.shape[0]
    while k < n:
        if (k & 7) == 0:
            j = k >> 3
            while j < nw:
                w = words[j]
                if _zero_bytes(w ^ _BACKSLASHES) != _ZERO:
                    break
                hits = _zero_bytes(w ^ _NEWLINES) >> np.uint64(7)
                newlines += np.int64((hits * _ONES) >> np.uint64(56))
                j += 1
            k = j << 3
            if k >= n:
                break
        b = data[k]
        if b == 10:
            newlines += 1
            k += 1
            continue
        if b != 92:  # not a backslash
            k += 1
            continue
        if k + 1 >= n or data[k + 1] == 10:  # a stray backslash at a line end: the newline still counts
            k += 1
            continue
        if data[k + 1] != 117:  # \" \\ \n ...: one escaped character
            k += 2
            continue
        cp = _hex4(data, k + 2)
        if cp < 0:  # not four hex digits (malformed; polars rejects it): skip only the two checked bytes
            k += 2
            continue
        if 0xD800 <= cp <= 0xDBFF:
            if k + 7 < n and data[k + 6] == 92 and data[k + 7] == 117 and 0xDC00 <= _hex4(data, k + 8) <= 0xDFFF:
                k += 12  # a valid surrogate pair
                continue
            lone = True
        elif 0xDC00 <= cp <= 0xDFFF:
            lone = True
        k += 6
    return newlines, lone


def scan_chunk(chunk: bytes) -> tuple[int, bool]:
    """(newlines, has a lone surrogate escape) of a chunk of JSON Lines."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    newlines, lone = _scan(data, data[: len(data) // 8 * 8].view(np.uint64))
    return int(newlines), bool(lone)


# What a non-string JSON value looks like once polars has turned it into text.
_NOT_A_STRING = r"^(?:-?[0-9][0-9.eE+\-]*|true|false|(?s:\[.*\])|(?s:\{.*\}))$"


def suspect_text_rows(text: pl.Series) -> np.ndarray:
    """Positions whose text could be a number, boolean, array or object polars made into text."""
    return np.flatnonzero(text.str.contains(_NOT_A_STRING).fill_null(False).to_numpy())
