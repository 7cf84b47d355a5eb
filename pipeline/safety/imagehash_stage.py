"""Hashing image records for matching and dedup: bytes digests, then safe decode, PDQ and pHash.

Usage::

    hashed = hash_images(blobs, dihedral=False)     # one ImageHashes per blob (or a rejection reason)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.safety.images import ImageRejected, decode_image
from pipeline.safety.perceptual import pdq, pdq_dihedral, phash


@dataclass
class ImageHashes:
    """Every hash of one image; `rejected` is the reason when it could not be decoded."""

    sha256: str
    md5: str
    sha1: str
    pdq: str | None = None
    pdq_quality: int | None = None
    pdq_variants: list[str] | None = None
    phash: str | None = None
    rejected: str | None = None

    def as_dict(self) -> dict:
        """For incident records: hashes only."""
        d = {"sha256": self.sha256, "md5": self.md5, "sha1": self.sha1}
        if self.pdq:
            d.update(pdq=self.pdq, pdq_quality=self.pdq_quality)
        if self.phash:
            d["phash"] = self.phash
        return d


def hash_image(data: bytes, dihedral: bool = False) -> ImageHashes:
    """Digests of the bytes; then decode (safely, capped) and compute PDQ (+ quality) and pHash."""
    h = ImageHashes(hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest())
    try:
        rgb = decode_image(data)
    except ImageRejected as e:
        h.rejected = str(e)
        return h
    if dihedral:
        d = pdq_dihedral(rgb)
        h.pdq, h.pdq_quality, h.pdq_variants = d.hexes[0], d.quality, list(d.hexes)
    else:
        p = pdq(rgb)
        h.pdq, h.pdq_quality = p.hex, p.quality
    h.phash = phash(rgb)
    return h


def hash_images(blobs: list[bytes], dihedral: bool = False) -> list[ImageHashes]:
    """hash_image over a batch."""
    return [hash_image(b, dihedral) for b in blobs]
