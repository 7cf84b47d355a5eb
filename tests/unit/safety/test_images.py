"""Safe decoding: every mode to RGB, bombs refused from the header, truncation, frames, orientation, deadline."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline.safety import images
from pipeline.safety.images import DecoderSettingsError, ImageRejected, RejectReason, decode_image, to_rgb
from tests.conftest import SHARED_DATA

VECTORS = SHARED_DATA / "hashmatch" / "pdq-vectors" / "files"


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def reference_rgb() -> np.ndarray:
    """A benign synthetic picture: colour gradients and a flat square."""
    y, x = np.mgrid[0:120, 0:160]
    rgb = np.stack([x * 255 // 159, y * 255 // 119, (x + y) % 256], -1).astype(np.uint8)
    rgb[30:90, 50:110] = (200, 30, 30)
    return rgb


def grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def rejection(data: bytes, **kw) -> RejectReason:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **kw)
    return info.value.reason


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels (its data is a few zero bytes)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# mode -> (how to make it from the reference picture, file format that keeps the mode, what it should decode to)
RGB, GREY = "rgb", "grey"
MODES = {
    "L": (lambda im: im.convert("L"), "PNG", GREY),
    "LA": (lambda im: im.convert("LA"), "PNG", GREY),
    "P": (lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", RGB),
    "PA": (lambda im: im.convert("RGBA").convert("PA"), "TIFF", RGB),
    "RGBA": (lambda im: im.convert("RGBA"), "PNG", RGB),
    "CMYK": (lambda im: im.convert("CMYK"), "JPEG", RGB),
    "CMYK-tiff": (lambda im: im.convert("CMYK"), "TIFF", RGB),
    "YCbCr": (lambda im: im.convert("YCbCr"), "TIFF", RGB),
    "LAB": (lambda im: im.convert("LAB"), "TIFF", RGB),
    "I": (lambda im: im.convert("I"), "TIFF", GREY),
    "I;16": (lambda im: Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG", GREY),
    "F": (lambda im: Image.fromarray(np.asarray(im.convert("L")).astype(np.float32) / 255), "TIFF", GREY),
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_file_mode_decodes_to_rgb_close_to_the_picture(name):
    make, fmt, kind = MODES[name]
    ref = reference_rgb()
    data = encode(make(Image.fromarray(ref)), fmt)
    out = decode_image(data)
    assert out.shape == ref.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    target = ref if kind == RGB else np.repeat(grey(ref)[:, :, None], 3, axis=2)
    # Palette quantisation, JPEG and the LAB round trip lose a little; nothing may be far off.
    assert np.abs(out.astype(int) - target.astype(int)).mean() < 12
    if kind == GREY:
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_one_bit_images_decode_to_black_and_white_rgb():
    out = decode_image(encode(Image.fromarray(reference_rgb()).convert("1"), "PNG"))
    assert out.shape == (120, 160, 3) and set(np.unique(out)) <= {0, 255}


@pytest.mark.parametrize("mode", ["RGBa", "La", "HSV", "RGBX", "I;16B", "P"])
def test_in_memory_modes_without_a_file_format_convert_too(mode):
    base = Image.fromarray(reference_rgb())
    im = {"La": lambda: base.convert("LA").convert("La"), "I;16B": lambda: base.convert("L").convert("I;16B"),
          "RGBa": lambda: base.convert("RGBA").convert("RGBa")}.get(mode, lambda: base.convert(mode))()
    out = to_rgb(im)
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_pixels_are_composited_on_white(mode):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[4:, :, 3] = 255          # bottom half opaque red (or its grey), top half fully transparent
    im = Image.fromarray(rgba, "RGBA").convert(mode)
    out = to_rgb(im)
    assert (out[:4] == 255).all()
    assert (out[4:] != 255).any()


def test_a_palette_image_with_a_transparent_index_is_composited_on_white():
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    decoded = decode_image(encode(im, "PNG"))
    assert (decoded == 255).all()


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped_at_255():
    # Pillow's own I;16 -> RGB clips, turning everything above 255 white.
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    out = decode_image(encode(Image.fromarray(ramp), "PNG"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert abs(int(out[32, 0, 0]) - round(int(ramp[32, 0]) / 257)) <= 1


def test_a_png_declaring_30000_by_30000_pixels_is_refused_from_its_header_without_decoding(monkeypatch):
    data = png_declaring(30000, 30000)
    assert len(data) < 200

    def must_not_decode(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    assert rejection(data) is RejectReason.TOO_MANY_PIXELS


def test_pillows_bomb_warning_zone_is_an_error_and_a_lower_cap_is_honoured(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixel data was decoded"))
    assert Image.MAX_IMAGE_PIXELS == images.PIL_PIXEL_CEILING
    # 64M pixels: above MAX_IMAGE_PIXELS (warning zone), below twice it (Pillow's own error).
    assert rejection(png_declaring(8000, 8000)) is RejectReason.TOO_MANY_PIXELS
    assert rejection(png_declaring(100, 100), max_pixels=9_999) is RejectReason.TOO_MANY_PIXELS


def test_a_cap_above_pillows_ceiling_is_a_usage_error():
    with pytest.raises(ValueError, match="PIL_PIXEL_CEILING"):
        decode_image(b"", max_pixels=images.PIL_PIXEL_CEILING + 1)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, -2])
def test_a_truncated_jpeg_is_refused(keep):
    data = encode(Image.fromarray(reference_rgb()), "JPEG", quality=90)
    cut = data[:keep] if keep < 0 else data[: int(len(data) * keep)]
    assert rejection(cut) is RejectReason.TRUNCATED


def test_a_truncated_png_is_refused():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    assert rejection(data[: len(data) // 2]) is RejectReason.TRUNCATED


@pytest.mark.parametrize("data", [b"", b"hello, world\n" * 20, bytes(range(256)) * 4, b"%PDF-1.7\n%\xe2\xe3\n",
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"],
                         ids=["empty", "text", "binary", "pdf", "eps"])
def test_bytes_that_are_not_an_allowed_image_format_are_refused(data):
    assert rejection(data) is RejectReason.NOT_AN_IMAGE


def test_an_allowed_format_list_excludes_the_rest():
    data = encode(Image.fromarray(reference_rgb()), "PNG")
    assert rejection(data, formats=("JPEG",)) is RejectReason.NOT_AN_IMAGE


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_over_the_frame_cap_are_refused(fmt):
    frames = [Image.new("RGB", (32, 32), (40 * i, 90, 0)) for i in range(3)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    assert rejection(data) is RejectReason.TOO_MANY_FRAMES
    first = decode_image(data, max_frames=3)
    assert first.shape == (32, 32, 3) and abs(int(first[0, 0, 1]) - 90) <= 8


def test_a_multi_picture_jpeg_counts_as_its_primary_image():
    primary, depth = Image.fromarray(reference_rgb()), Image.new("RGB", (40, 30), (0, 0, 0))
    data = encode(primary, "MPO", save_all=True, append_images=[depth])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode_image(data).shape == (120, 160, 3)


def test_exif_orientation_is_applied_by_default_and_can_be_ignored():
    exif = Image.Exif()
    exif[0x0112] = 6                          # stored sideways: viewers rotate 90 degrees clockwise
    data = encode(Image.fromarray(reference_rgb()), "JPEG", exif=exif)
    assert decode_image(data).shape == (160, 120, 3)
    assert decode_image(data, exif="ignore").shape == (120, 160, 3)
    with pytest.raises(ValueError):
        decode_image(data, exif="sideways")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("tag", range(1, 9))
def test_every_orientation_tag_in_every_format_is_reported_applied_and_undone(tag, fmt):
    from PIL import ImageOps

    stored = Image.fromarray(reference_rgb())
    exif = Image.Exif()
    exif[0x0112] = tag
    data = encode(stored, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    info = images.decode_image_info(data)
    assert info.orientation == tag and info.exif_problem is None
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encode(stored, "PNG", exif=exif.tobytes())))))
    # Pillow's TIFF loader turns the pixels itself and drops the tag; both come out the same here.
    tol = 4 if fmt == "JPEG" else 0          # mean absolute error
    assert info.rgb.shape == shown.shape and np.abs(info.rgb.astype(int) - shown).mean() <= tol
    raw = decode_image(data, exif="ignore")
    assert raw.shape == (120, 160, 3) and np.abs(raw.astype(int) - reference_rgb()).mean() <= tol


def exif_block(typ: int, count: int, value: bytes) -> bytes:
    """A hand-made EXIF block whose orientation entry has any type, count and value."""
    entry = struct.pack("<HHI", 0x0112, typ, count) + value[:4].ljust(4, b"\x00")
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)


def broken_exif_jpegs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    good = encode(Image.fromarray(reference_rgb()), "JPEG", exif=exif)
    i = good.index(b"Exif\x00\x00")
    tiff, end = i + 6, i - 2 + int.from_bytes(good[i - 2:i], "big")
    jpeg = lambda block: encode(Image.fromarray(reference_rgb()), "JPEG", exif=block)  # noqa: E731
    return {
        "garbage": good[:tiff] + bytes(range(7, 27)) + good[tiff + 20:],
        "bad byte order": good[:tiff] + b"XX" + good[tiff + 2:],
        "IFD offset past the end": good[:tiff + 4] + b"\xff\xff\xff\x00" + good[tiff + 8:],
        "entry count huge": good[:tiff + 8] + b"\xff\xff" + good[tiff + 10:],
        "block cut after its header": good[:i - 4] + b"\xff\xe1\x00\x0cExif\x00\x00II*\x00" + good[end:],
        "orientation 0": jpeg(exif_block(3, 1, b"\x00\x00")),
        "orientation 9": jpeg(exif_block(3, 1, b"\x09\x00")),
        "orientation 65535": jpeg(exif_block(3, 1, b"\xff\xff")),
        "orientation as text": jpeg(exif_block(2, 2, b"6\x00")),
        "orientation as a rational out of the block": jpeg(exif_block(5, 1, struct.pack("<I", 4000))),
    }


@pytest.mark.parametrize("name", sorted(broken_exif_jpegs()))
def test_a_broken_exif_block_is_counted_never_fatal_and_never_turns_the_pixels(name, recwarn):
    info = images.decode_image_info(broken_exif_jpegs()[name])
    assert info.rgb.shape in ((120, 160, 3), (160, 120, 3))
    assert info.exif_problem, name                       # counted: the hashing stage reports it
    if info.orientation == 1:
        assert info.rgb.shape == (120, 160, 3)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]     # recorded, not printed


def test_draft_mode_decodes_a_big_jpeg_at_a_reduced_scale_and_leaves_other_formats_alone():
    big = Image.fromarray(np.repeat(np.repeat(reference_rgb(), 10, axis=0), 10, axis=1))   # 1600 x 1200
    assert decode_image(encode(big, "JPEG"), draft_max_side=512).shape == (600, 800, 3)
    assert decode_image(encode(big, "JPEG"), draft_max_side=100).shape == (150, 200, 3)
    assert decode_image(encode(big, "JPEG"), draft_max_side=2000).shape == (1200, 1600, 3)
    assert decode_image(encode(big, "PNG"), draft_max_side=512).shape == (1200, 1600, 3)


def test_a_decode_that_passes_its_deadline_is_refused(monkeypatch):
    clock = itertools.count(0.0, 1.0)       # every clock reading advances one second
    monkeypatch.setattr(images.time, "monotonic", lambda: next(clock))
    data = encode(Image.fromarray(reference_rgb()), "PNG")
    assert rejection(data, time_limit_s=2.5) is RejectReason.TIME_LIMIT


def test_no_deadline_and_a_generous_deadline_both_decode():
    data = encode(Image.fromarray(reference_rgb()), "PNG")
    assert (decode_image(data, time_limit_s=None) == decode_image(data, time_limit_s=60)).all()


def test_decoding_refuses_to_run_when_truncated_images_are_allowed_process_wide(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DecoderSettingsError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(Image.fromarray(reference_rgb()), "PNG"))


def test_rejections_are_pipeline_errors_carrying_a_reason():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="not_an_image"):
        decode_image(b"nope")


def test_the_reference_mode_images_all_decode_to_rgb_of_their_size():
    modes = VECTORS / "pdq" / "data" / "misc-images" / "modes"
    if not modes.is_dir():
        pytest.skip(f"benign reference vectors not found at {modes} (shared data absent)")
    files = sorted(p for p in modes.iterdir() if p.suffix in (".png", ".jpg", ".webp"))
    assert len(files) >= 14
    for path in files:
        out = decode_image(path.read_bytes())
        w, h = Image.open(path).size
        assert out.shape == (h, w, 3), path.name
