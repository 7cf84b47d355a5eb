"""Perceptual hashes of decoded RGB pixels: PDQ (256 bits, with its 8 dihedral variants) and pHash.

PDQ convention (decided here, recorded in every manifest through `PDQ_CONVENTION`):

- `PdqConvention.FULL` (the default) hashes the full-resolution pixels with Meta's reference C++
  core (through `pdqhash`): for the same pixels the hash is bit-identical to the reference core,
  to `pdqhash` and to `threatexchange` (52 of 52 benign vectors). This is what Meta's
  hasher-matcher-actioner and `threatexchange` produce, so lists built with them match exactly.
- `PdqConvention.CLI_512` first squashes any image larger than 512 px on a side to 512x512 by
  nearest neighbour, as the reference command-line tool (`pdq-photo-hasher`, CImg `resize`) does:
  bit-identical to the CLI on the same pixels (52 of 52). Use it to reproduce CLI-made lists
  exactly; it is also cheaper on big images.

The two conventions differ by 0-10 bits on the vectors (mean about 4), far inside the matching
radius of 31, so either matches the other's lists. Quality is the reference core's 0-100 gradient
score; below `PDQ_MIN_QUALITY` (50, Meta's threshold) a hash is too flat to match reliably and the
caller records the image as unhashable instead of matching it.

Hex strings are 64 lower-case hex digits, most significant bit first (the reference tools'
format). `hex_to_words` splits them into 4 big-endian uint64 words, the layout the indexes use.

Usage::

    rgb = decode_image(data)
    h = pdq(rgb)                       # PdqHash(hex='f8f8...', quality=100)
    if not h.hashable: ...             # quality < 50: record "unhashable"
    d = pdq_dihedral(rgb)              # PdqDihedral(hexes=[8 hex strings], quality=100)
    hamming(h.hex, other_hex)          # 0..256
    words = hexes_to_words(d.hexes)    # (8, 4) uint64 for HammingIndex.query_many
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from pipeline.errors import PipelineError
from pipeline.safety.pdq_types import DIHEDRAL_NAMES, PDQ_MIN_QUALITY, PdqDihedral  # noqa: F401 - re-exported

PDQ_BITS = 256
PDQ_WORDS = PDQ_BITS // 64
PDQ_MATCH_DISTANCE = 31
# The benign bridge photo of the ThreatExchange test vectors (full-resolution convention).
PDQ_EXAMPLE = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
CLI_DOWNSAMPLE_DIMS = 512


class HashFormatError(PipelineError):
    """A hash string or word array is not of the expected shape (e.g. not 64 hex digits for PDQ)."""


class PdqConvention(enum.Enum):
    """Which pixels PDQ hashes: the full image, or the reference CLI's 512x512 squash."""

    FULL = "full"
    CLI_512 = "cli512"


PDQ_CONVENTION = PdqConvention.FULL


class PdqHash(NamedTuple):
    """A PDQ hash as 64 hex digits, and its quality (0-100)."""

    hex: str
    quality: int

    @property
    def hashable(self) -> bool:
        """Whether the quality reaches PDQ_MIN_QUALITY; below it, record the image as unhashable."""
        return self.quality >= PDQ_MIN_QUALITY


def _pdqhash():
    # Imported lazily: the C extension is only needed where images are hashed.
    import pdqhash

    return pdqhash


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise TypeError("expected an (H, W, 3) uint8 RGB array, as decode_image returns; got "
                        f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
    return rgb


def cli_squash(rgb: np.ndarray) -> np.ndarray:
    """The reference CLI's pre-resize: larger than 512 on either side -> 512x512, nearest neighbour.

    CImg's nearest-neighbour resize takes source index floor(i * old / new); with new = 512 a power
    of two, that float product is exact, so integer arithmetic reproduces it bit for bit.
    """
    h, w = rgb.shape[:2]
    if h <= CLI_DOWNSAMPLE_DIMS and w <= CLI_DOWNSAMPLE_DIMS:
        return rgb
    rows = (np.arange(CLI_DOWNSAMPLE_DIMS) * h) // CLI_DOWNSAMPLE_DIMS
    cols = (np.arange(CLI_DOWNSAMPLE_DIMS) * w) // CLI_DOWNSAMPLE_DIMS
    return np.ascontiguousarray(rgb[rows[:, None], cols[None, :]])


def _prepare(rgb: np.ndarray, convention: PdqConvention) -> np.ndarray:
    rgb = _check_rgb(rgb)
    if PdqConvention(convention) is PdqConvention.CLI_512:
        rgb = cli_squash(rgb)
    return rgb


def _bits_to_hex(bits: np.ndarray) -> str:
    # pdqhash returns 256 bits most significant first (hash_to_vector reverses the C++ word order).
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq(rgb: np.ndarray, *, convention: PdqConvention = PDQ_CONVENTION) -> PdqHash:
    """PDQ hash and quality of an RGB image (see the module docstring for `convention`)."""
    bits, quality = _pdqhash().compute(_prepare(rgb, convention))
    return PdqHash(_bits_to_hex(bits), int(quality))


def pdq_dihedral(rgb: np.ndarray, *, convention: PdqConvention = PDQ_CONVENTION) -> PdqDihedral:
    """The 8 PDQ hashes of the image's rotations and flips (order of DIHEDRAL_NAMES), from one pass.

    hexes[k] is what pdq() gives for the image rotated by 90, 180, 270 degrees, flipped about the
    x axis, the y axis, the main and the anti diagonal (hexes[0]: the image itself); see
    `pipeline.safety.dihedral` for how, and for why not the reference core's `compute_dihedral`
    (its flips are 0-14 bits off at 640-2048 px and up to 100 bits off on 256 px photos).
    """
    from pipeline.safety.dihedral import pdq_dihedral_exact

    return pdq_dihedral_exact(_prepare(rgb, convention))


def phash(rgb: np.ndarray) -> str:
    """imagehash's 64-bit DCT pHash as 16 hex digits (grey, 32x32 Lanczos, DCT, median)."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(_check_rgb(rgb), "RGB")))


def normalise_hex(value: str, bits: int = PDQ_BITS) -> str:
    """Lower-case hex of exactly bits/4 digits, or HashFormatError."""
    v = value.strip().lower()
    if len(v) != bits // 4 or any(c not in "0123456789abcdef" for c in v):
        raise HashFormatError(f"not a {bits}-bit hash: expected {bits // 4} hex digits, got {len(v)} characters")
    return v


def hex_to_words(value: str, bits: int = PDQ_BITS) -> np.ndarray:
    """One hex hash as big-endian uint64 words: shape (bits/64,)."""
    return np.frombuffer(bytes.fromhex(normalise_hex(value, bits)), dtype=">u8").astype(np.uint64)


def hexes_to_words(values: Sequence[str], bits: int = PDQ_BITS) -> np.ndarray:
    """Many hex hashes as an (n, bits/64) uint64 array, in order."""
    words = bits // 64
    if not values:
        return np.zeros((0, words), dtype=np.uint64)
    raw = b""
    if all(len(v) == bits // 4 for v in values):
        try:
            raw = bytes.fromhex("".join(values))
        except ValueError:
            raw = b""
    if len(raw) != len(values) * bits // 8:
        # Slow path only to name the bad value.
        for v in values:
            normalise_hex(v, bits)
        raise HashFormatError(f"hashes do not join to {len(values)} x {bits} bits")
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(values), words)


def words_to_hex(words: np.ndarray) -> str:
    """Inverse of hex_to_words."""
    return np.asarray(words, dtype=np.uint64).astype(">u8").tobytes().hex()


def words_to_hexes(words: np.ndarray) -> list[str]:
    """Inverse of hexes_to_words."""
    arr = np.asarray(words, dtype=np.uint64)
    if arr.ndim != 2:
        raise HashFormatError(f"expected an (n, words) array, got shape {arr.shape}")
    raw = arr.astype(">u8").tobytes()
    step = arr.shape[1] * 8
    return [raw[i:i + step].hex() for i in range(0, len(raw), step)]


def hamming(a: str | np.ndarray, b: str | np.ndarray) -> int:
    """Bits that differ between two hashes, both hex strings or both uint64 word arrays."""
    if isinstance(a, str) and isinstance(b, str):
        bits = len(a.strip()) * 4
        return (int(normalise_hex(a, bits), 16) ^ int(normalise_hex(b, bits), 16)).bit_count()
    wa, wb = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    if wa.shape != wb.shape:
        raise HashFormatError(f"word arrays of different shapes {wa.shape} and {wb.shape}")
    return int(np.bitwise_count(wa ^ wb).sum())
