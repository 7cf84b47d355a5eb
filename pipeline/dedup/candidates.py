"""Near-duplicate candidates across partitions: a record named by one int64 (its doc code) that
sorts as (unit, row) does, so pairs found by different tasks merge and number the docs exactly as
one global pass over every record would.

Usage::

    code = doc_code(unit, rows, index_runs)          # per task, for the records it pairs
    pairs = unique_code_pairs([pairs_a, pairs_b])    # at the barrier: each pair once, sorted
    unit, row = decode_doc(pairs[:, 0], index_runs)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def unique_code_pairs(parts: list[np.ndarray]) -> np.ndarray:
    """Union of pair arrays of any int64 values (e.g. `doc_code`s), each pair once, sorted."""
    allp = np.concatenate(parts) if parts else np.empty((0, 2), np.int64)
    if len(allp) == 0:
        return np.empty((0, 2), np.int64)
    allp = allp[np.lexsort((allp[:, 1], allp[:, 0]))]
    first = np.concatenate([[True], np.any(allp[1:] != allp[:-1], axis=1)])
    return allp[first]


def union_code_pairs(parts: Iterable[np.ndarray], fold: int = 4) -> np.ndarray:
    """`unique_code_pairs` of pair arrays that arrive one by one, folded `fold` at a time: memory is
    the union so far and a few arrays (LSH band groups repeat a pair once per band that found it)."""
    out, held = np.empty((0, 2), np.int64), []
    for p in parts:
        held.append(p)
        if len(held) == fold:
            out, held = unique_code_pairs([out, *held]), []
    return unique_code_pairs([out, *held])


UNIT_SHIFT = 40  # doc code = (unit + index runs) << 40 | row: rows below 2**40, units below 2**23


def doc_code(unit: np.ndarray | int, row: np.ndarray, index_runs: int) -> np.ndarray:
    """One int64 per near-dedup doc that sorts as (unit, row) does: the published records of corpus
    index run k have unit -1-k (so they come first), this run's records their unit id; a published
    record's row is its position in its index file."""
    return ((np.asarray(unit, np.int64) + index_runs) << UNIT_SHIFT) | np.asarray(row, np.int64)


def decode_doc(code: np.ndarray, index_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit, row) of doc codes (`doc_code`'s inverse)."""
    return (code >> UNIT_SHIFT) - index_runs, code & ((1 << UNIT_SHIFT) - 1)


def code_positions(haystack: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position in `haystack` (unique int64 codes, any order) of each of `needles`, and whether it
    is there at all (a join of two int arrays, without a frame)."""
    if len(haystack) == 0:
        return np.zeros(len(needles), np.int64), np.zeros(len(needles), bool)
    order = np.argsort(haystack, kind="stable")
    at = order[np.minimum(np.searchsorted(haystack[order], needles), len(haystack) - 1)]
    return at, haystack[at] == needles
