"""PDQ and pHash of an image's 8 rotations and flips, and of any crop of it, from one pass over its pixels.

Why not the reference core's own dihedral hashes (`pdqhash.compute_dihedral`): it rotates and
flips the 16x16 DCT of the *original* image's 64x64 downsample, but the reference downsampling
(two box-filter passes, then sampling at floor((i + 0.5) * n / 64)) is not symmetric when an axis
is reversed. Measured on the benign PDQ vectors and their resizes: its hashes differ from
`pdq(rotated image)` by 0-14 bits at 640-2048 px, 18-58 bits at 128-512 px and 26-100 bits on
the 256x256 LabelMe photos (quality 100), so a rotated small copy escapes.

Here the reference downsampling is written as what it is, a linear map: the 64x64 buffer of an
H x W luma image L is A_H L A_W^T, where row i of A_n (64 x n) is the sampling of row s_i of F_n^2
(F_n: the reference's box filter with its partial windows at the edges, window
(n + 127) // 128). Reversing an axis only reverses the columns of its A, and transposing the image
transposes the buffer, so one pass over the pixels computes [A_H; A_H J] L (128 x W), and the four
64 x 64 buffers of the axis reversals follow from it; their transposes give the other four. DCT and
median threshold are the reference's. The result equals `pdq()` of the rotated or flipped pixels
bit for bit on every benign vector and resize measured (tests/unit/safety/test_dihedral.py); float
rounding can move a coefficient lying on the median (a bit or two, rarely). Images under 64 px on a
side are the exception: the reference repeats their pixels, many coefficients are zero up to
rounding, and those bits are rounding noise in both implementations.

The same map on a crop (rows r0:r1, cols c0:c1) hashes the crop without copying it, which is how
a copy with a uniform border added is hashed after trimming (see `pipeline.safety.borders`).

pHash variants come from imagehash's 32x32 thumbnail, rotated and flipped before its DCT.

Usage::

    v = pdq_dihedral_exact(rgb)               # PdqDihedral(hexes=[8 hex strings], quality)
    v.hexes[DIHEDRAL_NAMES.index("rotate90")] # == pdq(np.rot90(rgb)).hex
    apply(rgb, "rotate90")                    # the pixels of that variant (a view)
    phash_dihedral(rgb)                       # 8 pHash hex strings, same order
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from pipeline.safety.pdq_types import DIHEDRAL_NAMES, PdqDihedral

DOWNSAMPLED = 64
DCT_SIDE = 16
# Rows of pixels turned into luma and projected at a time: bounds the float copy to chunk x W.
CHUNK_ROWS = 256
CACHED_SIDE = 16384
# Above this side the weight tables alone would hold about a float per pixel row, for images that
# are mostly pathological (a 1 x 50,000,000 strip is within the pixel cap): no variants are made.
MAX_SIDE = 32768
_LUMA = (np.float32(0.299), np.float32(0.587), np.float32(0.114))

# Each variant as (reverse rows, reverse columns, then transpose), applied to the image as shown.
# Names and order are the reference core's (DIHEDRAL_NAMES); numpy equivalents in `apply`.
_GEOMETRY: dict[str, tuple[bool, bool, bool]] = {
    "original": (False, False, False),
    "rotate90": (False, True, True),      # np.rot90(a, 1): counter-clockwise
    "rotate180": (True, True, False),
    "rotate270": (True, False, True),     # np.rot90(a, 3): clockwise
    "flipx": (True, False, False),        # a[::-1]: upside down
    "flipy": (False, True, False),        # a[:, ::-1]: mirrored left-right
    "flipplus1": (False, False, True),    # transpose
    "flipminus1": (True, True, True),     # transpose about the anti-diagonal
}

# EXIF orientation tag -> the variant a viewer shows for the stored pixels (PIL's exif_transpose).
EXIF_SHOWN_AS: dict[int, str] = {1: "original", 2: "flipy", 3: "rotate180", 4: "flipx", 5: "flipplus1",
                                 6: "rotate270", 7: "flipminus1", 8: "rotate90"}
# ... and its inverse: the variant of the image as shown that gives back the stored pixels.
EXIF_STORED_AS: dict[int, str] = {**EXIF_SHOWN_AS, 6: "rotate90", 8: "rotate270"}


class Crop(NamedTuple):
    """Rows r0:r1 and columns c0:c1 of an image."""

    r0: int
    r1: int
    c0: int
    c1: int


def apply(a: np.ndarray, name: str) -> np.ndarray:
    """The variant `name` (one of DIHEDRAL_NAMES) of an (H, W, ...) array, as a view."""
    rev_rows, rev_cols, transpose = _GEOMETRY[name]
    out = a[::-1] if rev_rows else a
    out = out[:, ::-1] if rev_cols else out
    return out.swapaxes(0, 1) if transpose else out


def _window(n: int) -> int:
    # computeJaroszFilterWindowSize(n, 64) of the reference core.
    return (n + 2 * DOWNSAMPLED - 1) // (2 * DOWNSAMPLED)


def _axis(n: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Row i of A_n as (lo[i], hi[i], weights[i]): nonzero on lo..hi-1 only (about n / 64 + 1 wide).

    F is box1DFloat: output o averages inputs max(0, o - (w - half)) .. min(n - 1, o + half - 1),
    half = (w + 2) // 2, dividing by the number actually summed. Two passes (PDQ_NUM_JAROSZ_XY_PASSES).
    """
    w = _window(n)
    half = (w + 2) // 2

    def window(o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.maximum(0, o - (w - half)), np.minimum(n - 1, o + half - 1) + 1

    samples = ((np.arange(DOWNSAMPLED) + 0.5) * n / DOWNSAMPLED).astype(np.int64)
    los, his, weights = [], [], []
    for s in samples.tolist():
        s0, s1 = window(np.array([s]))
        ks = np.arange(s0[0], s1[0])                         # first pass: inputs averaged into s
        starts, ends = window(ks)                            # second pass: their own windows
        counts = (ends - starts).astype(np.float64)
        lo, hi = int(starts.min()), int(ends.max())
        diff = np.zeros(hi - lo + 1)
        np.add.at(diff, starts - lo, 1.0 / counts)
        np.add.at(diff, ends - lo, -1.0 / counts)
        los.append(lo)
        his.append(hi)
        weights.append(np.cumsum(diff[:-1]) / ks.size)
    return np.array(los), np.array(his), tuple(weights)


def _stacked(n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """[A_n; A_n J] as 128 bands (the second 64: the same axis read backwards)."""
    lo, hi, w = _axis(n)
    return (np.concatenate([lo, n - hi]), np.concatenate([hi, n - lo]),
            list(w) + [x[::-1] for x in w])


def _plan(n: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """[A_n; A_n J] cut into chunks of CHUNK_ROWS columns: (a, b, bands touching a:b, their weights there)."""
    lo, hi, weights = _stacked(n)
    out = []
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        rows = np.flatnonzero((lo < b) & (hi > a))
        s = np.zeros((rows.size, b - a), dtype=np.float32)
        for k, r in enumerate(rows.tolist()):
            x0, x1 = max(int(lo[r]), a), min(int(hi[r]), b)
            s[k, x0 - a:x1 - a] = weights[r][x0 - lo[r]:x1 - lo[r]]
        out.append((a, b, rows, s))
    return out


_cached_plan = functools.lru_cache(maxsize=64)(_plan)


def _project(n: int, block, width: int) -> np.ndarray:
    """[A_n; A_n J] @ M for an n x width matrix M given by block(a, b) -> M[a:b] (float32), by chunks."""
    # The plan holds about 12 floats per pixel row: cached for the common sizes only.
    plan = _cached_plan(n) if n <= CACHED_SIDE else _plan(n)
    out = np.zeros((2 * DOWNSAMPLED, width), dtype=np.float64)
    for a, b, rows, s in plan:
        out[rows] += s @ block(a, b)
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., k] for k in range(3))
    return r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]


@functools.lru_cache(maxsize=1)
def _dct() -> np.ndarray:
    i = np.arange(1, DCT_SIDE + 1)[:, None]
    j = np.arange(DOWNSAMPLED)[None, :]
    return (np.float32(np.sqrt(2.0 / DOWNSAMPLED)) * np.cos((np.pi / 2 / DOWNSAMPLED) * i * (2 * j + 1))).astype(np.float64)


def _buffers(rgb: np.ndarray, crop: Crop | None = None) -> dict[tuple[bool, bool], np.ndarray]:
    """The reference 64x64 downsample of the image (or crop) with rows and/or columns reversed."""
    c = crop or Crop(0, rgb.shape[0], 0, rgb.shape[1])
    h, w = c.r1 - c.r0, c.c1 - c.c0
    region = rgb[c.r0:c.r1, c.c0:c.c1]
    x = _project(h, lambda a, b: _luma(region[a:b]), w)                    # (128, w)
    xt = _project(w, lambda a, b: x[:, a:b].T.astype(np.float32), 2 * DOWNSAMPLED)  # (128 cols, 128 rows)
    return {(rr, rc): xt[rc * DOWNSAMPLED:(rc + 1) * DOWNSAMPLED, rr * DOWNSAMPLED:(rr + 1) * DOWNSAMPLED].T
            for rr in (False, True) for rc in (False, True)}


def _bits_hex(coeffs: np.ndarray) -> str:
    flat = coeffs.ravel()
    median = np.partition(flat, 127)[127]      # the reference's torben(): 128th smallest of 256
    # Bit k (row-major i * 16 + j) of the reference's Hash256 is the (255 - k)-th most significant.
    return np.packbits((flat > median)[::-1]).tobytes().hex()


def _quality(buf: np.ndarray) -> int:
    """computePDQImageDomainQualityMetric: summed vertical and horizontal gradients, truncated as ints."""
    b = buf.astype(np.float32)      # float arithmetic, then truncation to int, as the reference does
    dv = np.trunc((b[:-1, :] - b[1:, :]) * np.float32(100) / np.float32(255))
    dh = np.trunc((b[:, :-1] - b[:, 1:]) * np.float32(100) / np.float32(255))
    return int(min(100, int(np.abs(dv).sum() + np.abs(dh).sum()) // 90))


def pdq_dihedral_exact(rgb: np.ndarray, crop: Crop | None = None) -> PdqDihedral:
    """PDQ of the 8 rotations and flips of an (H, W, 3) uint8 image (or of its crop), DIHEDRAL_NAMES order.

    hexes[k] equals pdq(apply(rgb, DIHEDRAL_NAMES[k])).hex (see the module docstring); quality is
    the reference metric of the unrotated image (rotations do not change it).
    """
    h, w = (rgb.shape[:2] if crop is None else (crop.r1 - crop.r0, crop.c1 - crop.c0))
    if max(h, w) > MAX_SIDE:
        raise ValueError(f"{h}x{w}: over MAX_SIDE ({MAX_SIDE}) on a side; hash the variants of a smaller image")
    bufs = _buffers(rgb, crop)
    d = _dct()
    coeffs = {k: d @ b @ d.T for k, b in bufs.items()}
    hexes = []
    for name in DIHEDRAL_NAMES:
        rev_rows, rev_cols, transpose = _GEOMETRY[name]
        c = coeffs[(rev_rows, rev_cols)]      # reversals first; the buffer of a transpose is transposed
        hexes.append(_bits_hex(c.T if transpose else c))
    return PdqDihedral(hexes, _quality(bufs[(False, False)]))


def phash_dihedral(rgb: np.ndarray, crop: Crop | None = None) -> list[str]:
    """imagehash's pHash of the 8 rotations and flips (DIHEDRAL_NAMES order), from one 32x32 thumbnail."""
    import scipy.fftpack
    from PIL import Image

    region = rgb if crop is None else rgb[crop.r0:crop.r1, crop.c0:crop.c1]
    thumb = np.asarray(Image.fromarray(np.ascontiguousarray(region), "RGB").convert("L").resize((32, 32), Image.LANCZOS))
    out = []
    for name in DIHEDRAL_NAMES:
        px = apply(thumb, name)
        dct = scipy.fftpack.dct(scipy.fftpack.dct(px, axis=0), axis=1)[:8, :8]
        out.append(np.packbits(dct > np.median(dct)).tobytes().hex())
    return out
