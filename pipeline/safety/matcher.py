"""Matching records against the configured hash lists, failing closed.

A `Matcher` is built before any record is read: a configured list that is missing, malformed or
older than its allowed age stops the run with `HashListError`, unless the config carries an
explicit waiver for it (the waiver is written into the manifest). Text records are matched on the
sha256 (and md5/sha1, when lists hold those) of their UTF-8 bytes and of their normalised text
(NFC, whitespace collapsed), and on a URL column when one is configured.

Usage::

    matcher = Matcher.from_config(cfg)           # raises HashListError (fail closed)
    hits = matcher.match_text(texts, digests, urls)   # one Match or None per record
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config import HashListConfig, NormalizeConfig
from pipeline.dedup.exact import normalize_text
from pipeline.safety.hashlist import HASH_TYPES, HashList, HashListError, age_days, load_hash_list, normalise_url
from pipeline.sources.base import string_digests

TEXT_NORMALISATION = NormalizeConfig(unicode="NFC", lowercase=False, collapse_whitespace=True)
CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Match:
    """A record matched a list entry. Holds hashes and ids only, never content."""

    list: str
    version: str | None
    entry_id: str
    hash_type: str
    distance: int
    matched_on: str
    hashes: dict

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


class Matcher:
    """Every configured list, loaded and validated, with exact lookup tables per hash type."""

    def __init__(self, lists: list[tuple[HashList, HashListConfig | None]], waivers: list[dict], url_field: str | None) -> None:
        self.lists = lists
        self.waivers = waivers
        self.url_field = url_field
        self.exact: dict[str, dict[str, tuple[str, str | None, str]]] = {}
        for hl, _cfg in lists:
            for typ, entries in hl.entries.items():
                table = self.exact.setdefault(typ, {})
                for h, entry in entries.items():
                    table.setdefault(h, (hl.name, hl.version, entry))
        self._perceptual: dict[tuple[str, str], tuple] = {}
        self.pdq_max_distance, self.phash_max_distance, self.dihedral = 31, 6, False

    def _index(self, typ: str, hl: HashList):
        """A Hamming index over one list's perceptual hashes (built once)."""
        key = (typ, hl.name)
        if key not in self._perceptual:
            from pipeline.safety.index import HammingIndex, LinearIndex
            from pipeline.safety.perceptual import hexes_to_words

            entries = hl.entries.get(typ, {})
            bits = 256 if typ == "pdq" else 64
            index = HammingIndex() if len(entries) > 4096 else LinearIndex()
            if entries:
                index.build(hexes_to_words(list(entries), bits=bits), list(entries.values()))
            self._perceptual[key] = (index, bits, bool(entries))
        return self._perceptual[key]

    def match_image(self, h) -> Match | None:
        """Exact digests of the bytes first, then PDQ (and its dihedral variants) and pHash within their radius."""
        hashes = h.as_dict()
        for typ in ("sha256", "md5", "sha1"):
            m = self._lookup(typ, getattr(h, typ), f"{typ} of the file", hashes)
            if m:
                return m
        best = None
        for hl, lc in self.lists:
            for typ, value, variants in (("pdq", h.pdq, h.pdq_variants), ("phash", h.phash, None)):
                if value is None or not hl.entries.get(typ):
                    continue
                if typ == "pdq" and (h.pdq_quality or 0) < 50:
                    continue  # unhashable: recorded with the record, never a silent pass or a match
                radius = (lc.max_distance if lc and lc.max_distance is not None
                          else self.pdq_max_distance if typ == "pdq" else self.phash_max_distance)
                index, bits, _ = self._index(typ, hl)
                from pipeline.safety.perceptual import hex_to_words

                for k, q in enumerate(variants or [value]):
                    hits = index.query(hex_to_words(q, bits=bits), radius)
                    if hits and (best is None or hits[0][1] < best.distance):
                        on = f"{typ} within {radius} bits" + (f" (dihedral variant {k})" if variants and k else "")
                        best = Match(hl.name, hl.version, hits[0][0], typ, int(hits[0][1]), on, hashes)
        return best

    @classmethod
    def from_config(cls, cfg) -> "Matcher":
        """Load every list of `cfg.safety`; fail closed unless a waiver names the list."""
        safety = cfg.safety
        waivers = {w.list: w.reason for w in safety.waivers}
        lists: list[tuple[HashList, HashListConfig | None]] = []
        waived: list[dict] = []
        for lc in safety.hash_lists:
            try:
                hl = load_hash_list(lc)
            except HashListError as e:
                if lc.name not in waivers:
                    raise
                waived.append({"list": lc.name, "problem": str(e), "reason": waivers[lc.name]})
                continue
            if lc.max_age_days is not None and age_days(hl.updated_at) > lc.max_age_days:
                problem = (f"{lc.path}: hash list '{lc.name}' was updated {hl.updated_at}, "
                           f"{age_days(hl.updated_at)} days ago, over its maximum age of {lc.max_age_days} days")
                if lc.name not in waivers:
                    raise HashListError(problem + "; fetch the current list, or waive it explicitly in the config")
                waived.append({"list": lc.name, "problem": problem, "reason": waivers[lc.name]})
            lists.append((hl, lc))
        if safety.confirmed_list and Path(safety.confirmed_list).exists():
            lists.append((load_hash_list(HashListConfig(name=CONFIRMED, path=safety.confirmed_list, type="sha256",
                                                        provider="this pipeline")), None))
        m = cls(lists, waived, safety.url_field)
        m.pdq_max_distance, m.phash_max_distance, m.dihedral = safety.pdq_max_distance, safety.phash_max_distance, safety.dihedral
        return m

    @property
    def active(self) -> bool:
        """True when at least one list is loaded."""
        return bool(self.lists)

    def needs(self, typ: str) -> bool:
        """Whether any list holds hashes of this type."""
        return bool(self.exact.get(typ))

    def _lookup(self, typ: str, h: str, matched_on: str, hashes: dict) -> Match | None:
        hit = self.exact.get(typ, {}).get(h)
        if hit is None:
            return None
        return Match(hit[0], hit[1], hit[2], typ, 0, matched_on, hashes)

    def match_text(self, texts: pa.Array | pa.ChunkedArray, digests: list[bytes], urls: list | None = None) -> list[Match | None]:
        """One Match (or None) per text record."""
        n = len(digests)
        out: list[Match | None] = [None] * n
        if not self.active:
            return out
        norm = string_digests(normalize_text(texts, TEXT_NORMALISATION)) if self.needs("sha256") else [None] * n
        raw_bytes = None
        if self.needs("md5") or self.needs("sha1"):
            raw_bytes = [v.encode() if v is not None else b"" for v in (texts.to_pylist())]
        for i in range(n):
            hashes = {"sha256": digests[i].hex()}
            if norm[i] is not None:
                hashes["sha256_normalised"] = norm[i].hex()
            if raw_bytes is not None:
                hashes["md5"] = hashlib.md5(raw_bytes[i]).hexdigest()
                hashes["sha1"] = hashlib.sha1(raw_bytes[i]).hexdigest()
            url = urls[i] if urls is not None else None
            if url:
                try:
                    nu = normalise_url(str(url))
                    hashes["url"] = hashlib.sha256(nu.encode()).hexdigest()
                except ValueError:
                    nu = None
            else:
                nu = None
            out[i] = (
                self._lookup("sha256", hashes["sha256"], "sha256 of the text", hashes)
                or (self._lookup("sha256", hashes["sha256_normalised"], "sha256 of the normalised text", hashes)
                    if "sha256_normalised" in hashes else None)
                or (self._lookup("md5", hashes["md5"], "md5 of the text", hashes) if "md5" in hashes else None)
                or (self._lookup("sha1", hashes["sha1"], "sha1 of the text", hashes) if "sha1" in hashes else None)
                or (self._lookup("url", nu, "normalised URL", hashes) if nu else None)
                or (self._lookup("url", hashes["url"], "sha256 of the normalised URL", hashes) if nu else None)
            )
        return out

    def summary(self) -> list[dict]:
        """Every list's manifest entry (name, version, digest, entry counts, age limit, waiver)."""
        waived = {w["list"]: w["reason"] for w in self.waivers}
        out = [hl.summary(lc.max_age_days if lc else None, waived.get(hl.name)) for hl, lc in self.lists]
        loaded = {hl.name for hl, _ in self.lists}
        out += [{"name": w["list"], "missing": True, "problem": w["problem"], "waived": w["reason"]}
                for w in self.waivers if w["list"] not in loaded]
        return out


def known_hash_types() -> list[str]:
    """The hash types lists may hold."""
    return list(HASH_TYPES)
