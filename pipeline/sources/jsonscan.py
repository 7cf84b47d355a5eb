"""One compiled pass over a chunk of JSON Lines: its line count, whether polars may parse it, and
its shape (which keys hold which kinds of value), so that a schema can be reused safely.

polars parses a chunk of JSON Lines fast but leniently in two ways the reader must not inherit:

- a lone UTF-16 surrogate escape (`\\ud800` not followed by a low surrogate) becomes U+0000
  instead of an error (orjson, like the JSON spec's UTF-8 rule, rejects the line);
- a text field that holds a number, boolean, array or object in some rows becomes its JSON text
  in a string column, where it must be rejected as "not a string".

`scan_chunk` finds the first in the bytes; `suspect_text_rows` finds the rows whose parsed text
could be the second, to be checked against their raw lines. Both run without the GIL (a regex
over the chunk held it, and queued the other worker thread behind it).

polars also infers a chunk's schema by parsing every line twice (once to infer, once to read),
while reading with a given schema silently drops keys that schema lacks. The reader reuses a
schema inferred from an earlier chunk only when the new chunk's shape proves that it has nothing
the schema would lose or read differently (`ChunkShape.fits`). A shape is the set of
(key path, value kind) pairs of a chunk, each a 64-bit hash: the path is the chain of object keys
from the line's root (array elements share their array's path), the kind one of object, array,
string, integer, float, boolean and null. Keys are hashed as their raw bytes, so an escaped
spelling of a key is simply another key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl
from numba.cpython.unsafe.numbers import trailing_zeros


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
_QUOTES = np.uint64(0x2222222222222222)
ZERO = np.uint64(0)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

# Value kinds, in the low 3 bits of a shape hash; bit 3 marks a member of the line's own object.
_OBJ, _ARR, _STR, _INT, _FLOAT, _BOOL, _NULL = 1, 2, 3, 4, 5, 6, 7
_MAX_DEPTH = 64
_TABLE = 4096  # open-addressing table of distinct shape hashes; past half full the shape is dropped


@numba.njit(cache=True, nogil=True, inline="always")
def zero_bytes(t):
    """The high bit of every byte of `t` that is zero, and no other bit (exact, no carries)."""
    y = (t & _LOW7) + _LOW7
    return ~(y | t | _LOW7)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(a, b):
    """splitmix64 of a combination of two 64-bit values."""
    z = a ^ (b * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0x632BE59BD9B4E019)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(table, path, kind, top):
    """Insert (path, kind) into the hash table (`top`: a member of the line's object); returns 1
    when it was new, else 0. The caller keeps the table at most half full."""
    h = (path & ~np.uint64(15)) | np.uint64(kind) | (np.uint64(8) if top else ZERO)
    mask = table.shape[0] - 1
    i = np.int64(h >> np.uint64(17)) & mask
    while True:
        v = table[i]
        if v == h:
            return 0
        if v == ZERO:
            table[i] = h
            return 1
        i = (i + 1) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def _escape(data, k):
    """Step over the escape whose backslash is at k: (next position, is a lone surrogate)."""
    n = data.shape[0]
    if k + 1 >= n or data[k + 1] == 10:  # a stray backslash at a line end: the newline still counts
        return k + 1, False
    if data[k + 1] != 117:  # \" \\ \n ...: one escaped character
        return k + 2, False
    cp = _hex4(data, k + 2)
    if cp < 0:  # not four hex digits (malformed; polars rejects it): skip only the two checked bytes
        return k + 2, False
    if 0xD800 <= cp <= 0xDBFF:
        if k + 7 < n and data[k + 6] == 92 and data[k + 7] == 117 and 0xDC00 <= _hex4(data, k + 8) <= 0xDFFF:
            return k + 12, False  # a valid surrogate pair
        return k + 6, True
    return k + 6, 0xDC00 <= cp <= 0xDFFF


@numba.njit(cache=True, nogil=True, inline="always")
def _string_end(data, words, k):
    """(position just past the closing quote of the string whose body starts at k, or of the
    newline that ends the line first in malformed input; whether a lone surrogate escape was in it).

    Eight bytes at a time: a word's quotes, backslashes and newlines are found with bit tricks and
    the scan jumps straight to the first of them."""
    n = data.shape[0]
    nw = words.shape[0]
    lone = False
    while k < n:
        j = k >> 3
        if j < nw:
            w = words[j]
            hits = zero_bytes(w ^ _QUOTES) | zero_bytes(w ^ _BACKSLASHES) | zero_bytes(w ^ _NEWLINES)
            hits &= _ALL << np.uint64((k & 7) * 8)
            if hits == ZERO:
                k = (j + 1) << 3
                continue
            k = (j << 3) + (trailing_zeros(hits) >> 3)
        b = data[k]
        if b == 34:
            return k + 1, lone
        if b == 10:
            return k, lone
        if b == 92:
            k, bad = _escape(data, k)
            lone |= bad
            continue
        k += 1
    return n, lone


@numba.njit(cache=True, nogil=True)
def _scan(data, words, table):
    """(newlines, has a lone surrogate escape, distinct shape hashes in `table` or -1 when the chunk
    is too wide or too deep to describe). `words` is `data` viewed as 64-bit words."""
    n = data.shape[0]
    paths = np.zeros(_MAX_DEPTH + 1, dtype=np.uint64)  # the element path of each open container
    in_obj = np.zeros(_MAX_DEPTH + 1, dtype=np.bool_)
    root = np.uint64(0x5EED)
    depth = 0
    expect_key = False
    value_path = root  # the path of the next value
    distinct = 0
    limit = table.shape[0] // 2
    newlines = 0
    lone = False
    k = 0
    while k < n:
        b = data[k]
        kind = 0
        if b == 34:  # a string: a key or a value
            end, bad = _string_end(data, words, k + 1)
            lone |= bad
            if depth > 0 and in_obj[depth] and expect_key:
                h = np.uint64(0xCBF29CE484222325)  # FNV-1a over the key's raw bytes
                for q in range(k + 1, end - 1):
                    h = (h ^ np.uint64(data[q])) * np.uint64(0x100000001B3)
                value_path = _mix(paths[depth], h)
                expect_key = False
            else:
                kind = _STR
            k = end
        elif b == 10:  # a line ends: the next one starts from the root whatever came before
            newlines += 1
            depth = 0
            expect_key = False
            value_path = root
            k += 1
        elif b == 123 or b == 91:  # { or [
            if distinct >= 0:
                distinct += _emit(table, value_path, _OBJ if b == 123 else _ARR, depth == 1 and in_obj[1])
                if distinct > limit or depth == _MAX_DEPTH:
                    distinct = -1
            if depth < _MAX_DEPTH:
                depth += 1
                in_obj[depth] = b == 123
                paths[depth] = value_path if b == 123 else _mix(value_path, np.uint64(_ARR))
            expect_key = b == 123
            value_path = paths[depth]
            k += 1
        elif b == 125 or b == 93:  # } or ]
            if depth > 0:
                depth -= 1
            value_path = paths[depth] if depth > 0 else root
            k += 1
        elif b == 44:  # ,
            expect_key = depth > 0 and in_obj[depth]
            if depth > 0 and not in_obj[depth]:
                value_path = paths[depth]
            k += 1
        elif b == 116 or b == 102 or b == 110:  # true, false, null
            kind = _NULL if b == 110 else _BOOL
            k += 1
            while k < n and 97 <= data[k] <= 122:
                k += 1
        elif b == 45 or 48 <= b <= 57:  # a number
            kind = _INT
            k += 1
            while k < n:
                c = data[k]
                if c == 46 or c == 101 or c == 69:
                    kind = _FLOAT
                elif not (48 <= c <= 57 or c == 43 or c == 45):
                    break
                k += 1
        elif b == 92:  # a backslash outside a string (malformed; polars rejects the line)
            k, bad = _escape(data, k)
            lone |= bad
        else:  # whitespace, ':' and anything malformed (polars judges validity)
            k += 1
        if kind != 0 and distinct >= 0:
            distinct += _emit(table, value_path, kind, depth == 1 and in_obj[1])
            if distinct > limit:
                distinct = -1
    return newlines, lone, distinct


def _top_paths(hashes: np.ndarray) -> np.ndarray:
    """The distinct paths of the members of the lines' objects (whatever their kinds)."""
    return np.unique(hashes[(hashes & np.uint64(8)) != 0] >> np.uint64(4))


@dataclass(frozen=True)
class ChunkShape:
    """The distinct shape hashes of a chunk, sorted."""

    hashes: np.ndarray

    def fits(self, known: "KnownShape") -> bool:
        """True when reading this chunk with `known`'s schema gives what inferring it would, once
        the batches of a unit are united into one schema: every (path, kind) of this chunk was in
        the chunk the schema was inferred from (a null may stand where that chunk had any kind),
        and the two have the same top-level keys (so no column is present in one and absent in
        the other, which the reader reports differently)."""
        h = self.hashes
        null = (h & np.uint64(7)) == np.uint64(_NULL)
        return bool(
            np.isin(h[~null], known.shape.hashes, assume_unique=True).all()
            and np.isin(h[null] >> np.uint64(4), known.paths).all()
            and np.array_equal(_top_paths(h), known.top)
        )


@dataclass(frozen=True)
class KnownShape:
    """A schema polars inferred over a chunk, with that chunk's shape."""

    schema: pl.Schema
    shape: ChunkShape
    top: np.ndarray
    paths: np.ndarray

    @classmethod
    def of(cls, schema: pl.Schema, shape: ChunkShape | None) -> "KnownShape | None":
        """The schema as one to reuse, or None when no later chunk could safely reuse it: some
        path holds values of two kinds (say integers and floats, or strings and numbers), which
        inference types by the mix it sees."""
        if shape is None:
            return None
        h = shape.hashes
        typed = h[(h & np.uint64(7)) != np.uint64(_NULL)]
        if np.unique(typed >> np.uint64(4)).size != np.unique(typed & ~np.uint64(8)).size:
            return None
        return cls(schema, shape, _top_paths(h), np.unique(h >> np.uint64(4)))


@dataclass(frozen=True)
class ChunkScan:
    newlines: int
    lone_surrogate: bool
    shape: ChunkShape | None  # None: too wide or deep to describe


def scan_chunk(chunk: bytes) -> ChunkScan:
    """Newlines, lone surrogate escapes and shape of a chunk of JSON Lines."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    table = np.zeros(_TABLE, dtype=np.uint64)
    newlines, lone, distinct = _scan(data, data[: len(data) // 8 * 8].view(np.uint64), table)
    shape = ChunkShape(np.sort(table[table != 0])) if distinct >= 0 else None
    return ChunkScan(int(newlines), bool(lone), shape)


# What a non-string JSON value looks like once polars has turned it into text.
_NOT_A_STRING = r"^(?:-?[0-9][0-9.eE+\-]*|true|false|(?s:\[.*\])|(?s:\{.*\}))$"


def suspect_text_rows(text: pl.Series) -> np.ndarray:
    """Positions whose text could be a number, boolean, array or object polars made into text."""
    return np.flatnonzero(text.str.contains(_NOT_A_STRING).fill_null(False).to_numpy())
