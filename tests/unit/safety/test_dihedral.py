"""Rotated and flipped PDQ/pHash from one pass: equal to hashing the turned pixels, and the EXIF tables."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from pipeline.safety.dihedral import EXIF_SHOWN_AS, EXIF_STORED_AS, Crop, apply, pdq_dihedral_exact, phash_dihedral
from pipeline.safety.images import decode_image
from pipeline.safety.perceptual import DIHEDRAL_NAMES, hamming, pdq, phash
from tests.conftest import SHARED_DATA

VECTORS = SHARED_DATA / "hashmatch" / "pdq-vectors" / "files"
needs_vectors = pytest.mark.skipif(not VECTORS.exists(), reason="../shared/data/hashmatch/pdq-vectors is not present")
PHOTOS = ["pdq/data/bridge-mods/aaa-orig.jpg", "pdq/data/misc-images/c.png", "pdq/data/reg-test-input/pen-and-coaster.png",
          "pdq/data/reg-test-input/labelme-subset/q0122.jpg", "pdq/data/misc-images/wee.jpg"]


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """A benign generated picture: smooth colour noise with a few flat shapes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    a = np.array(im)
    for _ in range(3):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        a[y0:y0 + h // 5, x0:x0 + w // 5] = rng.integers(0, 256, 3)
    return a


def turned_hashes(rgb: np.ndarray) -> list[str]:
    return [pdq(np.ascontiguousarray(apply(rgb, name))).hex for name in DIHEDRAL_NAMES]


@needs_vectors
@pytest.mark.parametrize("rel", PHOTOS)
def test_every_variant_equals_pdq_of_the_turned_pixels_on_the_reference_photos(rel):
    full = decode_image((VECTORS / rel).read_bytes())
    for width in (None, 97, 256, 333):
        rgb = full if width is None else np.asarray(
            Image.fromarray(full).resize((width, max(1, round(full.shape[0] * width / full.shape[1]))), Image.LANCZOS))
        ours = pdq_dihedral_exact(rgb)
        assert ours.hexes == turned_hashes(rgb), (rel, rgb.shape)
        assert ours.quality == pdq(rgb).quality


@needs_vectors
def test_the_reference_cores_own_dihedral_hashes_miss_rotated_small_photos():
    import pdqhash

    from pipeline.safety.perceptual import _bits_to_hex

    rgb = decode_image((VECTORS / "pdq/data/reg-test-input/labelme-subset/q0122.jpg").read_bytes())   # 256 x 256
    theirs = [_bits_to_hex(v) for v in pdqhash.compute_dihedral(rgb)[0]]
    truth = turned_hashes(rgb)
    assert max(hamming(a, b) for a, b in zip(theirs, truth)) > 31          # why dihedral.py exists
    assert pdq_dihedral_exact(rgb).hexes == truth


@settings(max_examples=25, deadline=None)
@given(st.integers(64, 300), st.integers(64, 300), st.integers(0, 2**31))
def test_variants_of_any_size_are_the_hashes_of_the_turned_pixels(h, w, seed):
    rgb = picture(h, w, seed)
    ours, quality = pdq_dihedral_exact(rgb), pdq(rgb).quality
    assert abs(ours.quality - quality) <= 2
    if quality >= 50:
        # Float rounding may move a coefficient that sits on the median: at most a bit or two. (Below
        # quality 50 the coefficients are all about equal, the bits are noise and never matched. Under
        # 64 px a side the reference repeats pixels, many coefficients are 0 up to rounding: same.)
        assert all(hamming(a, b) <= 2 for a, b in zip(ours.hexes, turned_hashes(rgb)))


def test_a_crop_is_hashed_without_copying_it():
    rgb = picture(300, 420, 7)
    crop = Crop(12, 280, 30, 400)
    region = np.ascontiguousarray(rgb[12:280, 30:400])
    assert pdq_dihedral_exact(rgb, crop).hexes == turned_hashes(region)
    assert phash_dihedral(rgb, crop)[0] == phash(region)


def test_the_first_phash_variant_is_imagehash_and_the_others_are_close():
    rgb = picture(240, 320, 3)
    ours = phash_dihedral(rgb)
    assert ours[0] == phash(rgb)
    # The 32x32 Lanczos thumbnail does not commute with flips exactly: a few bits at most.
    assert all(hamming(ours[k], phash(np.ascontiguousarray(apply(rgb, n)))) <= 8 for k, n in enumerate(DIHEDRAL_NAMES))


@pytest.mark.parametrize("tag", range(1, 9))
def test_the_exif_tables_agree_with_pillows_exif_transpose(tag):
    shown = picture(60, 90, tag)
    stored = np.ascontiguousarray(apply(shown, EXIF_STORED_AS[tag]))
    exif = Image.Exif()
    exif[0x0112] = tag
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "PNG", exif=exif.tobytes())
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB"))
    assert np.array_equal(viewed, shown)
    assert np.array_equal(apply(stored, EXIF_SHOWN_AS[tag]), shown)


def test_a_pathological_strip_is_hashed_without_variants():
    from pipeline.safety.dihedral import MAX_SIDE
    from pipeline.safety.imagehash_stage import hash_image

    strip = np.random.default_rng(0).integers(0, 256, (2, MAX_SIDE + 10, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, "PNG")
    h = hash_image(buf.getvalue())
    assert h.rejected is None and h.pdq is not None and h.pdq_dihedral is None and h.phash is not None
    with pytest.raises(ValueError, match="MAX_SIDE"):
        pdq_dihedral_exact(strip)
