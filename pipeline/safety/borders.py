"""Finding a near-uniform border (a frame, letterbox bars) around an image, to hash the image without it.

A copy of a picture with a frame of a few percent added is 36-58 PDQ bits from the original
(bench/hashmatch.py, section `borders`), beyond the matching radius of 31. Trimming the frame and
hashing what is left brings it back within a few bits. The trimmed hash is an *extra* query hash:
an image without a border is matched exactly as before.

How a side is trimmed: its outermost line (row or column) sets the border colour (per-channel
median); the line and each next one inward is border while at least `MIN_UNIFORM` of its pixels
are within `TOLERANCE` of that colour in every channel (JPEG ringing and a stray speck stay
inside). Each side has its own colour (letterbox bars, a frame with a shadow). Two rounds, so a
side of a different colour does not stop the others at the corners. The trim is kept only when
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

TOLERANCE = 24          # max |pixel - border colour| per channel (q 75 JPEG frames stay within about 12)
MIN_UNIFORM = 0.97      # fraction of a line's pixels that must be within TOLERANCE
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


def _run(lines: np.ndarray, limit: int, tolerance: int) -> int:
    """How many of the first `limit` lines of (n, length, 3) `lines` are uniform in line 0's colour."""
    if limit <= 0 or lines.shape[0] == 0 or lines.shape[1] == 0:
        return 0
    colour = np.median(lines[0], axis=0).astype(np.int16)
    done, step = 0, 1
    while done < limit:
        block = lines[done:min(limit, done + step)].astype(np.int16)
        ok = (np.abs(block - colour) <= tolerance).all(axis=2).mean(axis=1) >= MIN_UNIFORM
        if not ok.all():
            return done + int(np.argmin(ok))
        done += block.shape[0]
        step *= 4
    return done


def find_border(rgb: np.ndarray, *, tolerance: int = TOLERANCE) -> Border | None:
    """The near-uniform border around an (H, W, 3) uint8 image, or None if there is none worth trimming."""
    h, w = rgb.shape[:2]
    top = bottom = left = right = 0
    max_rows, max_cols = int(MAX_FRACTION * h), int(MAX_FRACTION * w)
    for _ in range(2):
        inner = rgb[:, left:w - right]
        top += _run(inner[top:], max_rows - top, tolerance)
        bottom += _run(inner[::-1][bottom:], max_rows - bottom, tolerance)
        inner = rgb[top:h - bottom]
        left += _run(inner.swapaxes(0, 1)[left:], max_cols - left, tolerance)
        right += _run(inner.swapaxes(0, 1)[::-1][right:], max_cols - right, tolerance)
    if max(top, bottom) >= max_rows or max(left, right) >= max_cols:
        return None         # uniform that far in: a flat image or a small picture on a canvas, not a frame
    rows_left, cols_left = h - top - bottom, w - left - right
    if rows_left < MIN_SIDE or cols_left < MIN_SIDE:
        return None
    if top + bottom < max(2, MIN_TRIM * h) and left + right < max(2, MIN_TRIM * w):
        return None
    return Border(top, bottom, left, right)
