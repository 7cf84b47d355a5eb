"""Hashing image records for matching and dedup: bytes digests, then safe decode, PDQ and pHash.

Besides the hashes of the image as shown (EXIF orientation applied), every decodable image gets the
hashes a copy of it may carry after its metadata or its edges were changed, so that the matcher can
find a copy whatever happened to them (issue #16):

- `pdq_dihedral` / `phash_dihedral`: the image's 8 rotations and flips (`pipeline.safety.dihedral`,
  one pass over the pixels, equal to hashing each turned image). For a file *with* an orientation
  tag, one of them is its stored pixel order (what a list built without applying the tag holds);
  for a file *without* one, they are what it would look like under each tag its original may have
  carried (an editor that re-encodes without metadata keeps the stored order). `phash_stored` is
  imagehash's pHash of the stored pixels of a tagged file, computed directly (the thumbnail
  rotation behind `phash_dihedral` is within a few bits, not exact).
- `border` and `pdq_trimmed` / `phash_trimmed`: when the image has a near-uniform border
  (`pipeline.safety.borders`), the same 8 hashes of the picture inside it.

Which of them are queried is the matcher's decision (`safety.exif_variants`, `safety.trim_borders`,
`safety.dihedral`). `hash_images(blobs, variants=False)` computes only the hashes of the image as
shown, as before this change (for benchmarks and callers that never match).

Usage::

    hashed = hash_images(blobs, dihedral=False)     # one ImageHashes per blob (or a rejection reason)
    hashed[0].exif_orientation, hashed[0].border    # 6, Border(top=12, bottom=12, left=20, right=20)
    summarize(hashed)                               # counts: rejected, unhashable, per orientation, ...
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pipeline.safety.borders import Border, find_border
from pipeline.safety.dihedral import EXIF_STORED_AS, MAX_SIDE, apply, pdq_dihedral_exact, phash_dihedral
from pipeline.safety.images import ImageRejected, decode_image_info
from pipeline.safety.perceptual import DIHEDRAL_NAMES, PDQ_MIN_QUALITY, pdq, phash

logger = logging.getLogger(__name__)


@dataclass
class ImageHashes:
    """Every hash of one image; `rejected` is the reason when it could not be decoded."""

    sha256: str
    md5: str
    sha1: str
    pdq: str | None = None
    pdq_quality: int | None = None
    pdq_variants: list[str] | None = None        # the 8 dihedral PDQ hashes, when asked for with dihedral=True
    phash: str | None = None
    rejected: str | None = None
    exif_orientation: int = 1                    # the tag found (1-8; 1 when absent or unusable)
    exif_problem: str | None = None              # why an EXIF block or value was ignored
    pdq_dihedral: list[str] | None = None        # DIHEDRAL_NAMES order, of the image as shown
    phash_dihedral: list[str] | None = None
    phash_stored: str | None = None              # tagged files: pHash of the stored pixel order
    border: Border | None = None
    pdq_trimmed: list[str] | None = None         # the 8 PDQ hashes of the picture inside the border
    pdq_trimmed_quality: int | None = None
    phash_trimmed: list[str] | None = None

    @property
    def pdq_stored(self) -> str | None:
        """PDQ of the stored pixel order of a tagged file (None without a tag or variants)."""
        if self.exif_orientation == 1 or not self.pdq_dihedral:
            return None
        return self.pdq_dihedral[DIHEDRAL_NAMES.index(EXIF_STORED_AS[self.exif_orientation])]

    def as_dict(self) -> dict:
        """For incident records: hashes only (and the orientation tag and border size behind the variants)."""
        d = {"sha256": self.sha256, "md5": self.md5, "sha1": self.sha1}
        if self.pdq:
            d.update(pdq=self.pdq, pdq_quality=self.pdq_quality)
        if self.phash:
            d["phash"] = self.phash
        if self.exif_orientation != 1:
            d["exif_orientation"] = self.exif_orientation
        if self.border is not None:
            d["border"] = list(self.border)
        return d


def hash_image(data: bytes, dihedral: bool = False, *, variants: bool = True) -> ImageHashes:
    """Digests of the bytes; then decode (safely, capped) and compute PDQ (+ quality) and pHash.

    With `variants` (the default) also the rotated/flipped, stored-order and border-trimmed hashes
    described in the module docstring.
    """
    h = ImageHashes(hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest())
    try:
        decoded = decode_image_info(data)
    except ImageRejected as e:
        h.rejected = str(e)
        return h
    rgb = decoded.rgb
    h.exif_orientation, h.exif_problem = decoded.orientation, decoded.exif_problem
    # The hash of record stays the reference core's own (pdqhash), bit for bit.
    p = pdq(rgb)
    h.pdq, h.pdq_quality = p.hex, p.quality
    if not variants:
        h.phash = phash(rgb)
        if dihedral and max(rgb.shape[:2]) <= MAX_SIDE:
            h.pdq_variants = pdq_dihedral_exact(rgb).hexes
        return h
    if max(rgb.shape[:2]) > MAX_SIDE:           # a pathological strip: the image's own hashes only
        h.phash = phash(rgb)
        return h
    h.pdq_dihedral = pdq_dihedral_exact(rgb).hexes
    h.phash_dihedral = phash_dihedral(rgb)
    h.phash = h.phash_dihedral[0]
    if dihedral:
        h.pdq_variants = list(h.pdq_dihedral)
    if h.exif_orientation != 1:
        import numpy as np

        h.phash_stored = phash(np.ascontiguousarray(apply(rgb, EXIF_STORED_AS[h.exif_orientation])))
    border = find_border(rgb)
    if border is not None:
        crop = border.crop(rgb.shape)
        trimmed = pdq_dihedral_exact(rgb, crop)
        h.border, h.pdq_trimmed, h.pdq_trimmed_quality = border, trimmed.hexes, trimmed.quality
        h.phash_trimmed = phash_dihedral(rgb, crop)
    return h


def hash_images(blobs: list[bytes], dihedral: bool = False, *, variants: bool = True) -> list[ImageHashes]:
    """hash_image over a batch."""
    out = [hash_image(b, dihedral, variants=variants) for b in blobs]
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("hashed images: %s", summarize(out))
    return out


def summarize(hashed: list[ImageHashes]) -> dict:
    """Counts over a batch (no hashes): rejected, PDQ-unhashable, orientation tags, EXIF problems, borders."""
    decoded = [h for h in hashed if h.rejected is None]
    orientations: dict[str, int] = {}
    for h in decoded:
        orientations[str(h.exif_orientation)] = orientations.get(str(h.exif_orientation), 0) + 1
    return {
        "images": len(hashed),
        "rejected": len(hashed) - len(decoded),
        "pdq_unhashable": sum(1 for h in decoded if (h.pdq_quality or 0) < PDQ_MIN_QUALITY),
        "exif_orientation": dict(sorted(orientations.items())),
        "exif_problems": sum(1 for h in decoded if h.exif_problem),
        "border_trimmed": sum(1 for h in decoded if h.border is not None),
        "border_trimmed_unhashable": sum(1 for h in decoded if h.border is not None
                                         and (h.pdq_trimmed_quality or 0) < PDQ_MIN_QUALITY),
    }
