"""Uniform borders: found to the pixel on frames and letterbox bars, never on busy edges or flat images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.safety.borders import Border, find_border
from pipeline.safety.dihedral import pdq_dihedral_exact
from pipeline.safety.images import decode_image
from pipeline.safety.perceptual import hamming, pdq
from tests.unit.safety.test_dihedral import picture

COLOURS = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 30, 30), (246, 244, 240)]


def framed(rgb: np.ndarray, t: int, b: int, left: int, r: int, colour) -> np.ndarray:
    h, w = rgb.shape[:2]
    out = np.empty((h + t + b, w + left + r, 3), np.uint8)
    out[:] = colour
    out[t:t + h, left:left + w] = rgb
    return out


def jpeg(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return decode_image(buf.getvalue())


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("pct", [2, 5, 10])
def test_a_frame_is_found_to_the_pixel_and_the_trimmed_hash_is_the_originals(colour, pct):
    pic = picture(480, 640, pct)
    t, s = round(pct / 100 * 480), round(pct / 100 * 640)
    copy = framed(pic, t, t, s, s, colour)
    assert find_border(copy) == Border(t, t, s, s)
    if pct >= 5:
        assert hamming(pdq(copy).hex, pdq(pic).hex) > 31        # the frame alone moves it out of reach
    jp = jpeg(copy)
    border = find_border(jp)
    assert border is not None and max(abs(a - b) for a, b in zip(border, (t, t, s, s))) <= 1
    assert hamming(pdq_dihedral_exact(jp, border.crop(jp.shape)).hexes[0], pdq(jpeg(pic)).hex) <= 12


def test_letterbox_bars_and_sides_of_different_colours_are_found():
    pic = picture(300, 400, 1)
    assert find_border(framed(pic, 40, 40, 0, 0, (0, 0, 0))) == Border(40, 40, 0, 0)
    assert find_border(framed(pic, 10, 20, 30, 5, (255, 255, 255))) == Border(10, 20, 30, 5)
    two = framed(framed(pic, 0, 0, 25, 25, (255, 255, 255)), 15, 15, 0, 0, (0, 0, 0))
    assert find_border(two) == Border(15, 15, 25, 25)


def test_busy_edges_a_one_pixel_line_and_flat_images_have_no_border():
    pic = picture(300, 400, 2)
    assert find_border(pic) is None
    assert find_border(framed(pic, 1, 0, 0, 0, (255, 255, 255))) is None      # under MIN_TRIM: not worth a hash
    for colour in COLOURS:
        assert find_border(np.full((200, 300, 3), colour, np.uint8)) is None
    canvas = np.full((600, 600, 3), 255, np.uint8)
    canvas[280:320, 280:320] = pic[:40, :40]                                   # a small picture on a big canvas
    assert find_border(canvas) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.sampled_from(["flat", "noise", "framed"]), st.integers(0, 2**31))
def test_find_border_never_fails_and_leaves_a_picture(h, w, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "flat":
        rgb = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    elif kind == "noise":
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        rgb = framed(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 3, 3, 3, 3, (255, 255, 255))
    border = find_border(rgb)
    if border is not None:
        c = border.crop(rgb.shape)
        assert c.r1 - c.r0 >= 32 and c.c1 - c.c0 >= 32
