"""Matching records against the configured hash lists, failing closed.

A `Matcher` is built before any record is read: a configured list that is missing, malformed or
older than its allowed age stops the run with `HashListError`, unless the config carries an
explicit waiver for it (the waiver is written into the manifest). Text records are matched on the
sha256 (and md5/sha1, when lists hold those) of their UTF-8 bytes and of their normalised text
(NFC, whitespace collapsed), and on a URL column when one is configured.

Images are matched on the digests of their bytes, then on PDQ and pHash within their radius. A
listed picture must be found whatever happened to its metadata and frame (issue #16), so besides
the hash of the image as shown the matcher looks up, by default:

- `safety.exif_variants`: for a file with an EXIF orientation tag, the hash of its stored pixel
  order (lists built with the tag ignored, as the reference tools do, hold that one); for a file
  without a tag, the PDQ hashes of the 7 ways a tag could have shown it (an editor that re-encoded
  the listed photo without metadata kept its stored pixels). These are dihedral hashes, computed
  exactly (`pipeline.safety.dihedral`), and quality-gated like the image's own. pHash gets the
  stored-pixel look-up only (see `queries`).
- `safety.trim_borders`: when the image has a near-uniform border, the same hashes of the picture
  inside it (a copy with a frame added).
- `safety.dihedral`: every rotation and flip of every image (rotated copies as such).

A match names the variant that matched (`Match.variant`, `variant_hash`, and the list's own
`variant` column if it has one), and the incident records it. The best match is the smallest
distance over all lists and variants; on a tie the image's own hash, then the earlier list, wins.

Usage::

    matcher = Matcher.from_config(cfg)           # raises HashListError (fail closed)
    hits = matcher.match_text(texts, digests, urls)   # one Match or None per record
    m = matcher.match_image(hash_image(data))         # Match(..., variant="stored_pixels") or None
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config import HashListConfig, NormalizeConfig
from pipeline.dedup.exact import normalize_text
from pipeline.safety.dihedral import EXIF_SHOWN_AS, EXIF_STORED_AS
from pipeline.safety.hashlist import HASH_TYPES, HashList, HashListError, age_days, load_hash_list, normalise_url
from pipeline.safety.perceptual import DIHEDRAL_NAMES, PDQ_MIN_QUALITY
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
    variant: str | None = None          # which of the image's hashes matched: "image", "stored_pixels", ...
    variant_hash: str | None = None     # that hash, when it is not the image's own
    list_variant: str | None = None     # the `variant` the list gives for the matched entry, if any

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
        self.exif_variants, self.trim_borders = True, True

    def _index(self, typ: str, hl: HashList):
        """A Hamming index over one list's perceptual hashes (built once); its ids are the listed hashes."""
        key = (typ, hl.name)
        if key not in self._perceptual:
            from pipeline.safety.index import HammingIndex, LinearIndex
            from pipeline.safety.perceptual import hexes_to_words

            entries = hl.entries.get(typ, {})
            bits = 256 if typ == "pdq" else 64
            index = HammingIndex() if len(entries) > 4096 else LinearIndex()
            if entries:
                index.build(hexes_to_words(list(entries), bits=bits), list(entries))
            self._perceptual[key] = (index, bits, bool(entries))
        return self._perceptual[key]

    def match_image(self, h) -> Match | None:
        """Exact digests of the bytes first, then PDQ and pHash (and their variants, see above) within their radius."""
        hashes = h.as_dict()
        for typ in ("sha256", "md5", "sha1"):
            m = self._lookup(typ, getattr(h, typ), f"{typ} of the file", hashes)
            if m:
                return m
        from pipeline.safety.perceptual import hexes_to_words

        best = None
        for typ in ("pdq", "phash"):
            if not any(hl.entries.get(typ) for hl, _ in self.lists):
                continue
            queries = self.queries(h, typ)
            if not queries:
                continue  # PDQ unhashable: recorded with the record, never a silent pass or a match
            bits = 256 if typ == "pdq" else 64
            words = hexes_to_words([q for _, q in queries], bits=bits)
            for hl, lc in self.lists:
                if not hl.entries.get(typ):
                    continue
                radius = (lc.max_distance if lc and lc.max_distance is not None
                          else self.pdq_max_distance if typ == "pdq" else self.phash_max_distance)
                index, _, _ = self._index(typ, hl)
                found = [(hits[0][1], k, hits[0][0]) for k, hits in enumerate(index.query_many(words, radius)) if hits]
                if not found:
                    continue
                distance, k, listed = min(found)
                if best is None or distance < best.distance:
                    variant, value = queries[k]
                    entry = hl.entries[typ][listed]
                    on = f"{typ} within {radius} bits" + ("" if variant == "image" else f" ({describe_variant(variant, h)})")
                    best = Match(hl.name, hl.version, entry, typ, int(distance), on, hashes, variant,
                                 None if variant == "image" else value, hl.variants.get(typ, {}).get(listed))
        return best

    def queries(self, h, typ: str) -> list[tuple[str, str]]:
        """The (variant, hash) pairs of one image to look up for `typ`, its own hash first, no hash twice."""
        if typ == "pdq":
            own, dihedral, stored = h.pdq, h.pdq_dihedral or h.pdq_variants, h.pdq_stored
            trimmed = h.pdq_trimmed if (h.pdq_trimmed_quality or 0) >= PDQ_MIN_QUALITY else None
            if own is None or (h.pdq_quality or 0) < PDQ_MIN_QUALITY:
                return []
        else:
            own, dihedral, stored, trimmed = h.phash, h.phash_dihedral, h.phash_stored, h.phash_trimmed
            # A picture PDQ rates as too flat to hash has no meaningful pHash either: every one-colour
            # image but black hashes to 8000000000000000, so red would match a listed green.
            if own is None or (h.pdq_quality is not None and h.pdq_quality < PDQ_MIN_QUALITY):
                return []
            if h.pdq_trimmed_quality is not None and h.pdq_trimmed_quality < PDQ_MIN_QUALITY:
                trimmed = None
        out: dict[str, str] = {}
        # pHash (64 bits, radius 6, no quality score) cannot afford 7 more looks at every untagged
        # image: on 406 tiles of natural photos they made 4 false pairs (dark, nearly plain tiles),
        # PDQ's made none. Its tag-less copies are caught through lists built with stored rows.
        lost_tag = typ == "pdq"
        self._add_variants(out, "", own, dihedral, stored, h.exif_orientation, lost_tag)
        if self.trim_borders and trimmed:
            stored_trimmed = (trimmed[DIHEDRAL_NAMES.index(EXIF_STORED_AS[h.exif_orientation])]
                              if h.exif_orientation != 1 else None)
            self._add_variants(out, "trimmed", trimmed[0], trimmed, stored_trimmed, h.exif_orientation, lost_tag)
        return [(v, q) for q, v in out.items()]

    def _add_variants(self, out: dict[str, str], prefix: str, own: str, dihedral, stored, orientation: int,
                      lost_tag: bool) -> None:
        def add(name: str, value: str | None) -> None:
            if value is not None and value not in out:
                out[value] = f"{prefix}+{name}" if prefix and name != "image" else (prefix or name)

        add("image", own)
        if self.exif_variants and orientation != 1:
            add("stored_pixels", stored)
        elif self.exif_variants and lost_tag and dihedral:
            for tag in range(2, 9):
                add(f"exif_orientation_{tag}", dihedral[DIHEDRAL_NAMES.index(EXIF_SHOWN_AS[tag])])
        if self.dihedral and dihedral:
            for name, value in zip(DIHEDRAL_NAMES[1:], dihedral[1:]):
                add(name, value)

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
        m.exif_variants, m.trim_borders = safety.exif_variants, safety.trim_borders
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


def describe_variant(variant: str, h) -> str:
    """A variant name in words, for ledger reasons ("stored pixels: EXIF orientation 6 not applied")."""
    parts = []
    for name in variant.split("+"):
        if name == "trimmed":
            b = h.border
            parts.append(f"border trimmed: {b.top}/{b.bottom}/{b.left}/{b.right} px" if b else "border trimmed")
        elif name == "stored_pixels":
            parts.append(f"stored pixels: EXIF orientation {h.exif_orientation} not applied")
        elif name.startswith("exif_orientation_"):
            parts.append(f"as shown with EXIF orientation {name.rsplit('_', 1)[1]}, a tag the copy may have lost")
        else:
            parts.append(f"dihedral variant {name}")
    return "; ".join(parts)


def known_hash_types() -> list[str]:
    """The hash types lists may hold."""
    return list(HASH_TYPES)
