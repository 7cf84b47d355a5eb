"""Exact deduplication: a digest of normalised text, resolved globally with a deterministic survivor.

Usage::

    keys = exact_keys(text_array, cfg.dedup.exact.normalize)   # per batch, in pass 1
    decisions = resolve_exact(records)                          # once, at the barrier
"""

from __future__ import annotations

import functools
import os
import unicodedata
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import NormalizeConfig
from pipeline.sources.base import string_digests
from pipeline.sources.jsonscan import ZERO, zero_bytes


# Byte tables of the compiled ASCII path: what each byte becomes, and whether it is whitespace
# (tab, LF, VT, FF, CR, space: the ASCII part of Unicode White_Space).
_ASCII_WS = (9, 10, 11, 12, 13, 32)


def _tables(lowercase: bool, collapse: bool) -> tuple[np.ndarray, np.ndarray]:
    out = np.arange(256, dtype=np.uint8)
    if lowercase:
        out[65:91] += 32
    ws = np.zeros(256, dtype=np.int64)
    if collapse:
        for b in _ASCII_WS:
            out[b] = 32
            ws[b] = 1
    return out, ws


@numba.njit(cache=True, nogil=True, inline="always")
def _end_row(good, flags, j, pos, first, trim, out):
    """Close row `j` of a kernel: record whether it was normalised here (its output is dropped if
    not) and drop a trailing space when trimming. Returns the next write position."""
    flags[j] = good
    if not good:
        return first
    if trim and pos > first and out[pos - 1] == 32:
        return pos - 1
    return pos


_H = np.uint64(0x8080808080808080)
_SPACES = np.uint64(0x2020202020202020)
_UPPER_LO = np.uint64(0x3F3F3F3F3F3F3F3F)  # an ASCII byte plus this has its high bit set from 'A' on
_UPPER_HI = np.uint64(0x2525252525252525)  # ... and plus this, from past 'Z' on
_B0 = np.uint64(0xFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _plain_word(w, prev, collapse, lower):
    """An eight-byte word of a row on the fast path: (fits, the word normalised, whether a byte
    changed, whether it ends in a space). It fits when it is pure ASCII and, when collapsing, has
    no byte below 0x20 and no space after a space (inside it, or after the previous word's last
    byte when `prev`): it then normalises to itself, lowercased when `lower`."""
    if w & _H:
        return False, w, False, False
    up = ZERO
    out = w
    if lower:
        up = (w + _UPPER_LO) & ~(w + _UPPER_HI) & _H
        out = w | (up >> np.uint64(2))
    if not collapse:
        return True, out, up != ZERO, False
    if (w - _SPACES) & ~w & _H:  # some byte below 0x20: tab, newline or another control byte
        return False, w, False, False
    sp = zero_bytes(w ^ _SPACES)
    if sp & ((sp << np.uint64(8)) | (np.uint64(prev) << np.uint64(7))):
        return False, w, False, False
    return True, out, up != ZERO, (sp >> np.uint64(63)) != ZERO


@numba.njit(cache=True, nogil=True, inline="always")
def _store_word(out, pos, v):
    # Unsigned indices: without numba's negative-index handling LLVM merges the eight byte
    # stores into one unaligned 8-byte store.
    p = np.uint64(pos)
    for q in range(8):
        out[p + np.uint64(q)] = np.uint8((v >> np.uint64(8 * q)) & _B0)


@numba.njit(cache=True, nogil=True, inline="always")
def _ascii_bytes(data, k, end, out, pos, out_byte, is_ws, prev, seen, diff):
    """Bytes k..end of a row one at a time: each through `out_byte`, a whitespace run to one space.

    Branch-free (every byte is stored, the write position advances unless the byte continues a
    whitespace run): a branch on "is this whitespace" mispredicts often enough to cost three times
    the time."""
    for q in range(k, end):
        b = data[q]
        w = is_ws[b]
        seen |= b
        o = out_byte[b]
        diff |= o ^ b
        out[pos] = o
        pos += 1 - (w & prev)
        prev = w
    return pos, prev, seen, diff


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _ascii_normalise(data, words, offsets, out_byte, is_ws, trim, lower, out, out_offsets, changed, ascii_rows, same):
    """Normalise every row that is pure ASCII (NFC/NFKC leave ASCII unchanged): each byte through
    `out_byte` (lowercasing), a run of whitespace to one space, trimmed when `trim`. `words` is
    `data` as 64-bit words: aligned words that need no change but lowercasing are taken whole.

    Flags the ASCII rows (`ascii_rows`) and those normalisation leaves as they were (`same`:
    their key is their content digest). Only the other ASCII rows are kept in `out`: returns
    their number m; row j of the output (`out_offsets[j]:out_offsets[j+1]`) is input row
    `changed[j]`. A row is abandoned at its first non-ASCII word (the general path takes it).
    """
    pos = 0
    m = 0
    for i in range(offsets.shape[0] - 1):
        s = offsets[i]
        e = offsets[i + 1]
        first = pos
        prev = trim  # a whitespace run at the very start is dropped when trimming
        seen = 0
        diff = 0
        head = min(e, (s + 7) & ~7)
        pos, prev, seen, diff = _ascii_bytes(data, s, head, out, pos, out_byte, is_ws, prev, seen, diff)
        k = head
        while k + 8 <= e and seen < 0x80:
            fits, v, up, ends = _plain_word(words[k >> 3], prev, trim, lower)
            if fits:
                _store_word(out, pos, v)
                pos += 8
                if up:
                    diff = 1
                prev = 1 if ends else 0
            else:
                pos, prev, seen, diff = _ascii_bytes(data, k, k + 8, out, pos, out_byte, is_ws, prev, seen, diff)
            k += 8
        if seen < 0x80:
            pos, prev, seen, diff = _ascii_bytes(data, k, e, out, pos, out_byte, is_ws, prev, seen, diff)
        good = seen < 0x80
        ascii_rows[i] = good
        if good and trim and pos > first and out[pos - 1] == 32:
            pos -= 1
        unchanged = good and diff == 0 and pos - first == e - s
        same[i] = unchanged
        if good and not unchanged:
            changed[m] = i
            out_offsets[m] = first
            m += 1
        else:
            pos = first
    out_offsets[m] = pos
    return m


# Non-ASCII White_Space (the ASCII part is in _ASCII_WS); U+2000 and U+2001 are NFC singletons.
_UNICODE_WS = (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
_EMOJI = (0x1F000, 0x1FAFF)  # the one supplementary range the compiled path takes


_CLASSES_VERSION = 1  # bump when the rules below change: cached tables carry it in their name


@functools.lru_cache(maxsize=None)
def _char_classes(form: str, collapse: bool) -> tuple[np.ndarray, np.ndarray]:
    """`_compute_char_classes`, cached on disk next to numba's cache (a third of a second to build)."""
    name = f"charclasses-v{_CLASSES_VERSION}-{unicodedata.unidata_version}-{form}-{int(collapse)}.npz"
    path = Path(__file__).parent / "__pycache__" / name
    try:
        with np.load(path) as cached:
            return cached["bmp"], cached["emoji"]
    except (OSError, KeyError, ValueError):
        pass
    bmp, emoji = _compute_char_classes(form, collapse)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, bmp=bmp, emoji=emoji)
        os.replace(tmp, path)
    except OSError:  # a read-only install: compute once per process
        pass
    return bmp, emoji


def _compute_char_classes(form: str, collapse: bool) -> tuple[np.ndarray, np.ndarray]:
    """What the compiled path does with each code point of the BMP (and of the emoji blocks):
    0 = leave the row to the general path, 1 = copy it, 2 = whitespace.

    A code point is copied only when the Unicode form provably leaves it alone wherever it stands:
    it is its own normal form, it is a starter (combining class 0) and nothing composes with a
    character before it (NFC_QC = Maybe: the second half of a primary composite, Hangul V and T
    jamo). Text made only of such characters is already normalised (the quick-check "Yes").
    """
    maybe = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    if form != "none":
        for cp in range(0x110000):
            d = unicodedata.decomposition(chr(cp))
            if d and d[0] != "<":
                parts = d.split()
                if len(parts) == 2 and unicodedata.normalize(form, chr(cp)) == chr(cp):
                    maybe.add(int(parts[1], 16))

    def cls(cp: int) -> int:
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            return 0
        if collapse and cp in _UNICODE_WS:
            return 2
        if form == "none":
            return 1
        stable = unicodedata.combining(ch) == 0 and unicodedata.normalize(form, ch) == ch and cp not in maybe
        return 1 if stable else 0

    bmp = np.array([cls(cp) for cp in range(0x10000)], dtype=np.uint8)
    bmp[:0x80] = 0  # ASCII is handled byte by byte
    emoji = np.array([cls(cp) for cp in range(_EMOJI[0], _EMOJI[1] + 1)], dtype=np.uint8)
    return bmp, emoji


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _unicode_normalise_rows(data, words, offsets, rows, bmp, emoji, is_ws, collapse, out, out_offsets, ok):
    """Normalise the rows `rows` (UTF-8 with non-ASCII characters) whose every character has
    class 1 or 2 in `bmp`/`emoji`: copy, whitespace runs to one space, trimmed when `collapse`.
    A row with any other character is flagged not ok (the general path takes it). Aligned
    eight-byte runs of plain ASCII (see `_plain_word`) are copied whole."""
    pos = 0
    for j in range(rows.shape[0]):
        i = rows[j]
        out_offsets[j] = pos
        first = pos
        prev = collapse
        good = True
        k = offsets[i]
        end = offsets[i + 1]
        while k < end:
            if (k & 7) == 0 and k + 8 <= end:
                fits, v, _, ends = _plain_word(words[k >> 3], prev, collapse, False)
                if fits:
                    _store_word(out, pos, v)
                    pos += 8
                    k += 8
                    prev = 1 if ends else 0
                    continue
            b = data[k]
            if b < 0x80:
                if is_ws[b]:
                    if not prev:
                        out[pos] = 32
                        pos += 1
                    prev = 1
                else:
                    out[pos] = b
                    pos += 1
                    prev = 0
                k += 1
                continue
            if b < 0xE0:
                n = 2
                cp = ((b & 0x1F) << 6) | (data[k + 1] & 0x3F)
            elif b < 0xF0:
                n = 3
                cp = ((b & 0x0F) << 12) | ((data[k + 1] & 0x3F) << 6) | (data[k + 2] & 0x3F)
            else:
                n = 4
                cp = ((b & 0x07) << 18) | ((data[k + 1] & 0x3F) << 12) | ((data[k + 2] & 0x3F) << 6) | (data[k + 3] & 0x3F)
            if cp < 0x10000:
                c = bmp[cp]
            elif 0x1F000 <= cp <= 0x1FAFF:
                c = emoji[cp - 0x1F000]
            else:
                c = 0
            if c == 0:
                good = False
                break
            if c == 2:
                if not prev:
                    out[pos] = 32
                    pos += 1
                prev = 1
            else:
                for m in range(n):
                    out[pos] = data[k + m]
                    pos += 1
                prev = 0
            k += n
        pos = _end_row(good, ok, j, pos, first, collapse, out)
    out_offsets[rows.shape[0]] = pos


def _fast_keys(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig, digests: list[bytes] | None = None) -> list[bytes]:
    """Keys with the ASCII rows normalised in compiled code, most others too (characters the
    Unicode form leaves alone), and only the rest through the general path. A row normalisation
    leaves as it is has its content digest (`digests` when given, else computed) as its key."""
    arr = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    arr = arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr
    n = len(arr)
    if n == 0:
        return []
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    words = data[: data.size // 8 * 8].view(np.uint64)
    out = np.empty(int(offsets[-1] - offsets[0]) + 8, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    changed = np.empty(n, dtype=np.int64)
    ascii_rows = np.empty(n, dtype=np.bool_)
    same = np.empty(n, dtype=np.bool_)
    out_byte, is_ws = _tables(cfg.lowercase, cfg.collapse_whitespace)
    m = _ascii_normalise(data, words, offsets, out_byte, is_ws, int(cfg.collapse_whitespace), cfg.lowercase,
                         out, out_offsets, changed, ascii_rows, same)
    keys = np.empty(n, dtype=object)
    if digests is not None:
        keys[:] = digests
    elif same.any():
        keys[same] = string_digests(arr.filter(pa.array(same)))
    if m:
        # The rows normalisation changed, as one string array over the output buffer, hashed column-wise.
        normalised = pa.LargeStringArray.from_buffers(m, pa.py_buffer(out_offsets[: m + 1]), pa.py_buffer(out))
        keys[changed[:m]] = string_digests(normalised)
    rest = np.flatnonzero(~ascii_rows)
    if rest.size and not cfg.lowercase:  # case folding beyond ASCII stays with the general path
        bmp, emoji = _char_classes(cfg.unicode, cfg.collapse_whitespace)
        size = int((offsets[rest + 1] - offsets[rest]).sum())
        out2 = np.empty(size + 8, dtype=np.uint8)
        out2_offsets = np.empty(rest.size + 1, dtype=np.int64)
        ok = np.empty(rest.size, dtype=np.bool_)
        _unicode_normalise_rows(data, words, offsets, rest, bmp, emoji, is_ws, int(cfg.collapse_whitespace),
                                out2, out2_offsets, ok)
        done = string_digests(pa.LargeStringArray.from_buffers(rest.size, pa.py_buffer(out2_offsets), pa.py_buffer(out2)))
        keys[rest[ok]] = [k for k, good in zip(done, ok.tolist()) if good]
        rest = rest[~ok]
    if rest.size:
        keys[rest] = string_digests(normalize_text(arr.take(pa.array(rest)), cfg))
    return keys.tolist()


def _unicode_normalise(text: pa.Array | pa.ChunkedArray, form: str) -> pa.Array | pa.ChunkedArray:
    """NFC/NFKC with Python's `unicodedata`, whose quick check returns text that is already in the
    form untouched (most real text): about ten times faster than normalising every value."""
    values = text.to_pylist()
    normed = [None if v is None else unicodedata.normalize(form, v) for v in values]
    if all(a is b for a, b in zip(values, normed)):
        return text
    return pa.array(normed, pa.large_string())


def normalize_text(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig) -> pa.Array | pa.ChunkedArray:
    """Apply the configured normalisation (Unicode form, case, whitespace) to a string array.

    The Unicode form is Python's `unicodedata` (its Unicode version is recorded in the manifest's
    tool versions with Python's); case and whitespace (Unicode White_Space) are polars'.
    """
    if cfg.unicode == "none" and not cfg.lowercase and not cfg.collapse_whitespace:
        return text
    if cfg.unicode != "none":
        text = _unicode_normalise(text, cfg.unicode)
    if not cfg.lowercase and not cfg.collapse_whitespace:
        return text
    s = pl.Series("t", text)
    if cfg.lowercase:
        s = s.str.to_lowercase()
    if cfg.collapse_whitespace:
        # Only runs that are not already one space need rewriting: far fewer matches than \s+.
        s = s.str.replace_all(r"\s\s+|[^\S ]", " ").str.replace_all(r"  +", " ").str.strip_chars()
    return s.to_arrow()


def exact_keys(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig, digests: list[bytes] | None = None) -> list[bytes]:
    """The exact-duplicate key (sha256 of the normalised text) of each value.

    Without normalisation the key is the content digest, passed in to avoid hashing twice.
    """
    if cfg.unicode == "none" and not cfg.lowercase and not cfg.collapse_whitespace and digests is not None:
        return digests
    return _fast_keys(text, cfg, digests)


def resolve_exact(records: pl.DataFrame, keep: tuple[str, ...] = ()) -> pl.DataFrame:
    """Pick one survivor per key; return (unit, row, duplicate_of) for every dropped copy.

    `records` has columns unit, row, record_id, key, priority, order_str, order_int. The
    survivor of a group is the record with the highest source priority, then the lowest
    (order_str, order_int): the record id, with positional ids compared by file then row.
    """
    if records.height == 0:
        return pl.DataFrame(schema={"unit": pl.Int64, "row": pl.Int64, **{k: records.schema[k] for k in keep},
                                    "duplicate_of": pl.String})
    # Only keys seen more than once have anything to decide: rank just those (a hash pass, then a
    # sort of the few instead of all).
    records = records.filter(pl.col("key").is_duplicated())
    ranked = records.sort(["key", "priority", "order_str", "order_int"], descending=[False, True, False, False])
    ranked = ranked.with_columns(
        pl.col("record_id").first().over("key").alias("survivor"),
        pl.int_range(pl.len()).over("key").alias("rank"),
    )
    return ranked.filter(pl.col("rank") > 0).select(
        pl.col("unit"), pl.col("row"), *keep, pl.col("survivor").alias("duplicate_of")
    )
