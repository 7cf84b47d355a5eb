"""The index of benchmark n-grams and the batch scan over records.

The index holds every distinct n-gram hash of every item of every set (an open-addressing table
in two numpy arrays) and, per distinct hash, the items that contain it (CSR arrays), so a match
names its benchmark and items and the share of each item's n-grams the record contains.

Usage::

    index = BenchmarkIndex.build([items_a, items_b], ngram=13, min_item_words=8)
    for hit in index.find(arrow_string_array):   # one Hit or None per record
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decon import kernel
from pipeline.decon.sets import BenchmarkItems
from pipeline.errors import ConfigError


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, int64 offsets) of the lower-cased texts (nulls as empty), without a copy per text."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())
    lowered = pc.utf8_lower(texts.fill_null(""))
    if isinstance(lowered, pa.ChunkedArray):
        lowered = lowered.combine_chunks()
    off_type = np.int64 if pa.types.is_large_string(lowered.type) else np.int32
    bufs = lowered.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[lowered.offset: lowered.offset + len(lowered) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    return data, offsets


@dataclass
class Hit:
    """What one record matched: per benchmark, the items and their overlap."""

    ngrams_matched: int                    # distinct benchmark n-grams found in the record
    occurrences: int                       # n-gram positions of the record that matched
    benchmarks: list[str]
    item_ids: list[str]                    # the items with the most matched n-grams first (at most 20)
    item_overlap: float                    # the largest share of one item's n-grams found in the record
    best_item: str
    spans: list[tuple[int, int]] = field(default_factory=list)   # matched byte spans in the record's UTF-8


@dataclass
class SetSummary:
    """One set as the manifest records it."""

    name: str
    version: str | None
    source: str
    sha256: str
    fields: tuple[str, ...]
    items: int
    items_indexed: int
    ngrams: int

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "source": self.source, "sha256": self.sha256,
                "fields": list(self.fields), "items": self.items, "items_indexed": self.items_indexed,
                "ngrams": self.ngrams}


class BenchmarkIndex:
    """Distinct n-gram hashes of every item, with the items containing each."""

    MAX_IDS = 20

    def __init__(self, ngram: int, lengths: np.ndarray, keys: np.ndarray, vals: np.ndarray, item_ptr: np.ndarray,
                 item_of: np.ndarray, item_ngrams: np.ndarray, item_names: list[str], item_set: np.ndarray,
                 set_names: list[str], sets: list[SetSummary]) -> None:
        self.ngram, self.lengths, self.keys, self.vals = ngram, lengths, keys, vals
        self.item_ptr, self.item_of, self.item_ngrams = item_ptr, item_of, item_ngrams
        self.item_names, self.item_set, self.set_names, self.sets = item_names, item_set, set_names, sets

    @classmethod
    def build(cls, sets: list[BenchmarkItems], ngram: int = 13, min_item_words: int = 8) -> "BenchmarkIndex":
        """Index every item of every set; ConfigError when a set has no item long enough to index."""
        all_hashes, all_items, names, item_set, summaries, lengths = [], [], [], [], [], {ngram}
        base = 0
        for si, s in enumerate(sets):
            data, offsets = utf8_buffers(pa.array(s.texts, type=pa.large_string()))
            words = kernel.count_words(data, offsets)
            hashes, owner = kernel.ngram_hashes(data, offsets, words, ngram, min_item_words)
            indexed = int(((words >= min_item_words)).sum())
            if indexed == 0:
                raise ConfigError(f"benchmark file {s.source}: no item of '{s.name}' has {min_item_words} words or "
                                  f"more in its fields ({', '.join(s.fields)}); check `fields`")
            lengths.update(int(w) for w in words if min_item_words <= w < ngram)
            all_hashes.append(hashes)
            all_items.append(owner + base)
            names += [s.ids[i] if len(sets) == 1 else f"{s.name}:{s.ids[i]}" for i in range(len(s.texts))]
            item_set += [si] * len(s.texts)
            base += len(s.texts)
            summaries.append(SetSummary(s.name, s.version, s.source, s.sha256, s.fields, len(s.texts), indexed,
                                        int(np.unique(hashes).size)))
        hashes = np.concatenate(all_hashes)
        items = np.concatenate(all_items)
        # Distinct (hash, item) pairs, sorted by hash: the CSR of items per distinct hash.
        order = np.lexsort((items, hashes))
        hashes, items = hashes[order], items[order]
        keep = np.ones(hashes.size, dtype=bool)
        keep[1:] = (hashes[1:] != hashes[:-1]) | (items[1:] != items[:-1])
        hashes, items = hashes[keep], items[keep]
        first = np.ones(hashes.size, dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        unique = hashes[first]
        item_ptr = np.append(np.flatnonzero(first), hashes.size).astype(np.int64)
        item_ngrams = np.bincount(items, minlength=base).astype(np.int64)
        keys, vals = kernel.build_table(unique)
        return cls(ngram, np.array(sorted(lengths, reverse=True), dtype=np.int64), keys, vals, item_ptr,
                   items.astype(np.int32), item_ngrams, names, np.array(item_set, dtype=np.int32),
                   [s.name for s in sets], summaries)

    @property
    def ngrams(self) -> int:
        """Distinct n-grams indexed."""
        return int(self.item_ptr.size - 1)

    def scan(self, texts: pa.Array):
        """(words per record, matches per record, match arrays) for a batch of texts."""
        data, offsets = utf8_buffers(texts)
        cap = 1024
        while True:
            words, per, m_rec, m_start, m_end, m_val, found = kernel.scan(data, offsets, self.lengths, self.keys,
                                                                          self.vals, cap)
            if found <= cap:
                return words, per, (m_rec[:found], m_start[:found] - offsets[m_rec[:found]],
                                    m_end[:found] - offsets[m_rec[:found]], m_val[:found])
            cap = int(found)

    def find(self, texts: pa.Array) -> tuple[np.ndarray, list[Hit | None]]:
        """(words per record, one Hit or None per record)."""
        words, per, (m_rec, m_start, m_end, m_val) = self.scan(texts)
        hits: list[Hit | None] = [None] * len(words)
        if m_rec.size == 0:
            return words, hits
        bounds = np.searchsorted(m_rec, np.arange(len(words) + 1))
        for r in np.flatnonzero(per):
            a, b = bounds[r], bounds[r + 1]
            hits[int(r)] = self._hit(m_start[a:b], m_end[a:b], m_val[a:b])
        return words, hits

    def _hit(self, starts, ends, vals) -> Hit:
        distinct = np.unique(vals)
        items = np.concatenate([self.item_of[self.item_ptr[v]: self.item_ptr[v + 1]] for v in distinct])
        matched = np.bincount(items)
        cand = np.flatnonzero(matched)
        share = matched[cand] / self.item_ngrams[cand]
        order = np.lexsort((cand, -share, -matched[cand]))
        best = int(np.argmax(share))
        sets = sorted({self.set_names[self.item_set[i]] for i in cand})
        return Hit(int(distinct.size), int(vals.size), sets,
                   [self.item_names[int(cand[k])] for k in order[: self.MAX_IDS]],
                   float(share[best]), self.item_names[int(cand[best])],
                   list(zip(starts.tolist(), ends.tolist())))
