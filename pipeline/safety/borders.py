"""Finding a near-uniform border (a frame, letterbox bars) around an image, to hash the image without it.

A copy of a picture with a frame of a few percent added is 36-58 PDQ bits from the original
(bench/hashmatch.py, section `borders`), beyond the matching radius of 31. Trimming the frame and
hashing what is left brings it back within a few bits. The trimmed hash is an *extra* query hash:
an image without a border is matched exactly as before.

How a side is trimmed: its outermost line (row or column) sets the border level (median luma,
the channel PDQ hashes; JPEG's chroma subsampling bleeds colour across the edge, luma stays
sharp); the line and each next one inward is border while at least `MIN_UNIFORM` of its pixels
are within `TOLERANCE` of that level. Each side has its own level (letterbox bars, a frame with
a shadow). Two rounds, so a side of a different colour does not stop the others at the corners.
The trim must be exact to the pixel on small images: at 256 px a one-pixel crop moves PDQ by up
to 72 bits (its box filter is 2 pixels wide there), while at 1000 px and more it moves 0-4. The trim is kept only when
it is worth a hash and leaves a picture: at least `MIN_TRIM` of the height or width, under
`MAX_FRACTION` of it from any side, and at least `MIN_SIDE` pixels left on each axis. An image of
one colour, or a small picture on a large plain canvas, is uniform beyond `MAX_FRACTION`: no border.

Usage::

    border = find_border(rgb)          # Border(top=20, bottom=20, left=32, right=32) or None
    if border:
        crop = border.crop(rgb.shape)  # rows and columns of the picture inside
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.safety.dihedral import Crop

# Chosen on the 10 listed photos with borders of 2/5/10% in 5 colours (bench/hashmatch.py borders):
# luma within 24 on 99.5% of a line trims 147 of 150 copies to within 31 bits at JPEG quality 92
# and 114 of 150 at quality 60 (all 45 of the photos over 400 px at both). Per-channel colour at
# 24 / 97% got 82 of 150 at quality 92: chroma bleeds a line across the edge on small photos.
TOLERANCE = 24          # max |luma - border luma| of a border pixel
MIN_UNIFORM = 0.995     # share of a line's pixels that must be within TOLERANCE
MAX_FRACTION = 0.35     # at most this share of a dimension is trimmed from one side
MIN_TRIM = 0.01         # a trim below 1% of both dimensions moves PDQ by a few bits only: not hashed again
MIN_SIDE = 32           # pixels left on each axis, at least


class Border(NamedTuple):
    """Pixels of uniform border on each side."""

    top: int
    bottom: int
    left: int
    right: int

    def crop(self, shape: tuple[int, ...]) -> Crop:
        """The rows and columns inside the border, for an image of this shape."""
        return Crop(self.top, shape[0] - self.bottom, self.left, shape[1] - self.right)


def _luma(lines: np.ndarray) -> np.ndarray:
    """Rec. 601 luma (as PDQ's), as int16: colour bleeds across the edge under JPEG's chroma subsampling, luma does not."""
    a = lines.astype(np.int32)
    return ((299 * a[..., 0] + 587 * a[..., 1] + 114 * a[..., 2] + 500) // 1000).astype(np.int16)


def _run(lines: np.ndarray, limit: int, tolerance: int) -> int:
    """How many of the first `limit` lines of (n, length, 3) `lines` are uniform in line 0's luma."""
    if limit <= 0 or lines.shape[0] == 0 or lines.shape[1] == 0:
        return 0
    level = int(np.median(_luma(lines[0])))
    done, step = 0, 1
    while done < limit:
        block = _luma(lines[done:min(limit, done + step)])
        ok = (np.abs(block - level) <= tolerance).mean(axis=1) >= MIN_UNIFORM
        if not ok.all():
            return done + int(np.argmin(ok))
        done += block.shape[0]
        step *= 4
    return done


def find_border(rgb: np.ndarray, *, tolerance: int = TOLERANCE) -> Border | None:
    """The near-uniform border around an (H, W, 3) uint8 image, or None if there is none worth trimming."""
    h, w = rgb.shape[:2]
    max_rows, max_cols = int(MAX_FRACTION * h), int(MAX_FRACTION * w)
    top = bottom = left = right = 0
    # Round 1: top and bottom over full rows, then left and right between them. Round 2: a side
    # still at 0 is tried again between the others (a frame whose sides differ in colour blocks the
    # first lines at the corners); a side already trimmed is not extended with a new colour, which
    # would eat into a picture whose own edge is plain.
    for again in (False, True):
        cols = rgb[:, left:w - right]
        if not (again and top):
            top = _run(cols, max_rows, tolerance)
        if not (again and bottom):
            bottom = _run(cols[::-1], max_rows, tolerance)
        rows = rgb[top:h - bottom].swapaxes(0, 1)
        if not (again and left):
            left = _run(rows, max_cols, tolerance)
        if not (again and right):
            right = _run(rows[::-1], max_cols, tolerance)
    if max(top, bottom) >= max_rows or max(left, right) >= max_cols:
        return None         # uniform that far in: a flat image or a small picture on a canvas, not a frame
    rows_left, cols_left = h - top - bottom, w - left - right
    if rows_left < MIN_SIDE or cols_left < MIN_SIDE:
        return None
    if top + bottom < max(2, MIN_TRIM * h) and left + right < max(2, MIN_TRIM * w):
        return None
    return Border(top, bottom, left, right)
