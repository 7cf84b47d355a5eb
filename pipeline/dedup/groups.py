"""The candidate graph of near-duplicate detection split into groups of whole connected components.

Every step that decides near duplicates (verification, anti-chaining stars, central stars, the
second hop) looks only at records joined by candidate pairs, so a connected component of the
candidate graph (word-pass candidate pairs plus the short pass's verified pairs) is decided
without the others; only the cluster ids, numbered over every cluster, are global. Components are
packed, lowest record first, into groups of at most `max_records` records, so the records'
signatures and attributes are held a group at a time. A component larger than `max_records`
stays one group (it cannot be split without changing decisions): the statistics say so.

Usage::

    groups = ComponentGroups.build(n, [pairs, short_pairs], max_records=250_000)
    for docs in groups:            # each group's doc indexes, ascending
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np

from pipeline.dedup.lsh import components
from pipeline.errors import PipelineError

# Records per group: about 0.9 KiB a record in a group (signatures, boilerplate bits, attribute
# rows, stars), measured at 10M documents: about 230 MiB a group, below the barrier's unit loop,
# with few groups (bench/README.md, "The candidate graph a group of components at a time").
GROUP_RECORDS = 250_000


@numba.njit(cache=True)
def _pack(sizes, max_records):
    """Group of each component (in order): a new group when the next component would overflow it."""
    group = np.empty(sizes.shape[0], np.int64)
    g, filled = -1, max_records
    for k in range(sizes.shape[0]):
        if filled + sizes[k] > max_records:
            g += 1
            filled = 0
        group[k] = g
        filled += sizes[k]
    return group


@dataclass(frozen=True)
class ComponentGroups:
    """Doc indexes of each group (`docs[bounds[g]:bounds[g + 1]]`, ascending) and statistics."""

    docs: np.ndarray
    bounds: np.ndarray
    group_of: np.ndarray  # per doc: its group, -1 for a doc in no pair
    stats: dict

    @classmethod
    def build(cls, n: int, pair_arrays: list[np.ndarray], max_records: int) -> ComponentGroups:
        """Components of `n` docs over the union of `pair_arrays` ((m, 2) doc indexes), packed."""
        if max_records < 2:
            raise PipelineError(f"near dedup: a group of {max_records} record(s) cannot hold a pair; use 2 or more")
        pairs = np.concatenate([np.asarray(p, np.int64).reshape(-1, 2) for p in pair_arrays])
        labels = components(n, pairs)
        sizes = np.bincount(labels, minlength=n)
        heads = np.flatnonzero(sizes > 1)  # labels are each component's lowest doc: in doc order
        comp_group = _pack(sizes[heads], max_records)
        group_of = np.full(n, -1, np.int64)
        in_pair = sizes[labels] > 1
        group_of[in_pair] = comp_group[np.searchsorted(heads, labels[in_pair])]
        docs = np.argsort(group_of, kind="stable")[int(np.sum(~in_pair)):]  # by group, then doc
        count = int(comp_group[-1]) + 1 if heads.size else 0
        bounds = np.searchsorted(group_of[docs], np.arange(count + 1))
        largest = int(sizes[heads].max()) if heads.size else 0
        stats = {"max_records": max_records, "groups": count, "components": int(heads.size),
                 "largest_component": largest, "components_over_max": int(np.sum(sizes[heads] > max_records))}
        return cls(docs, bounds, group_of, stats)

    def __iter__(self) -> Iterator[np.ndarray]:
        for a, b in zip(self.bounds[:-1], self.bounds[1:]):
            yield self.docs[a:b]

    def split(self, pairs: np.ndarray) -> list[np.ndarray]:
        """Indexes into `pairs` ((m, 2) doc indexes inside the components) of each group, in order."""
        g = self.group_of[pairs[:, 0]] if len(pairs) else np.zeros(0, np.int64)
        order = np.argsort(g, kind="stable")
        cuts = np.searchsorted(g[order], np.arange(len(self.bounds)))
        return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
