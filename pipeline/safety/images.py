"""Safe image decoding in one place: untrusted bytes in, an (H, W, 3) uint8 RGB array or a refusal out.

Every image the safety stage hashes goes through `decode_image`, so the limits below hold for all
of them. What is bounded, and how:

- Formats: only `ALLOWED_FORMATS` are tried (no EPS/PostScript, which would run Ghostscript, no
  PDF, PSD, ICO, ...). Anything else is `not_an_image`.
- Pixels: the width and height in the header are checked against `max_pixels` right after the
  header is parsed and before any pixel memory is allocated. `PIL.Image.MAX_IMAGE_PIXELS` is set
  explicitly (to `PIL_PIXEL_CEILING`) and a `DecompressionBombWarning` is an error here, so
  Pillow's own check can only reject earlier, never let a bigger image through.
- Frames: an image declaring more than `max_frames` frames (animated GIF, APNG, WebP, multi-page
  TIFF) is refused. MPO files (phone JPEGs carrying a depth map or preview as a second image)
  count as one frame: the primary image is what is shown and what is hashed.
- Truncation: a file that ends before its pixel data does is refused (`truncated`); this module
  never sets `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`, and refuses to run if someone else did.
- Time: `time_limit_s` is a deadline checked before every read Pillow makes from the input (at
  most 64 KiB per read for the block-streamed formats: JPEG, PNG, GIF, BMP) and between the
  steps (header, frame count, decode, orientation, colour conversion). Decoders that take the
  whole input in one C call (WebP, TIFF through libtiff) and the C conversion routines cannot be
  interrupted: they are bounded only by `max_pixels`. A hard wall-clock bound needs a worker
  process that can be killed; run the stage in a process pool for that.

Colour: every mode becomes RGB (see `to_rgb`): alpha is composited on white; palette, 1-bit,
grey, CMYK (including Adobe's inverted CMYK JPEGs), YCbCr, LAB and HSV go through Pillow's
converters; 16-bit grey is scaled (v / 257, rounded, as ImageMagick and browsers do) instead of
Pillow's clipping at 255, which turns most 16-bit images white.

EXIF orientation: `exif="apply"` (the default) rotates/flips the pixels as a viewer shows them, so
a hash of a phone photo matches the hash of its screenshot; `exif="ignore"` hashes the stored
pixel order (what the PDQ reference tools and `threatexchange` do). `decode_image_info` also says
which tag it found, so the caller can hash the stored pixel order too (an edited copy that lost the
tag keeps it). The pixels are turned with `Image.transpose` only: the EXIF block is never rewritten,
so a broken block cannot make a decodable image unusable. An EXIF block too broken to read, or an
orientation value outside 1-8, is treated as orientation 1 and reported in `exif_problem`.

Usage::

    try:
        rgb = decode_image(data)                        # (H, W, 3) uint8
    except ImageRejected as e:
        record_unhashable(e.reason.value)               # e.g. "too_many_pixels"
    small = decode_image(data, draft_max_side=512)      # JPEG only: decode at 1/2, 1/4 or 1/8 scale
    info = decode_image_info(data)                      # DecodedImage(rgb, orientation=6, exif_problem=None)
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import struct
import time
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
# Pillow's own limit, set explicitly instead of trusting its default (89,478,485 warns, twice that
# raises). A caller may lower `max_pixels` per call, never raise it above this ceiling.
PIL_PIXEL_CEILING = DEFAULT_MAX_PIXELS
Image.MAX_IMAGE_PIXELS = PIL_PIXEL_CEILING

DEFAULT_TIME_LIMIT_S = 10.0
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_SINGLE_IMAGE_CONTAINERS = frozenset({"MPO"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE = (255, 255, 255, 255)

# What Pillow raises on malformed input (its own fuzzers treat these as "expected" errors).
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError,
                   ZeroDivisionError, OverflowError, struct.error)


class RejectReason(enum.Enum):
    """Why an image was refused; the value is what the ledger records."""

    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_MANY_FRAMES = "too_many_frames"
    TIME_LIMIT = "time_limit"
    UNSUPPORTED_MODE = "unsupported_mode"


class ExifPolicy(enum.Enum):
    """What to do with an EXIF orientation tag."""

    APPLY = "apply"
    IGNORE = "ignore"


# EXIF orientation -> the transpose a viewer applies to the stored pixels (as PIL's exif_transpose).
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
ORIENTATION_UNDO = {**ORIENTATION_TRANSPOSE, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


class DecodedImage(NamedTuple):
    """Decoded pixels and what the decoder learned about the file's EXIF orientation."""

    rgb: np.ndarray
    orientation: int             # the tag found, 1-8 (1 when absent or unusable); applied unless exif="ignore"
    exif_problem: str | None     # why an EXIF block or orientation value was ignored (no content)


class ImageRejected(PipelineError):
    """An input cannot be decoded safely; `reason` says why. The record is unhashable, not fatal."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"image rejected ({reason.value}): {detail}")
        self.reason = reason


class DecoderSettingsError(PipelineError):
    """Process-wide Pillow settings make decoding unsafe (e.g. truncated images allowed)."""


class _DeadlineExceeded(Exception):
    """Raised from inside Pillow's read loop; never escapes this module."""


class _DeadlineReader(io.BytesIO):
    """The input bytes, refusing to hand out more once the decode deadline has passed."""

    def __init__(self, data: bytes, deadline: float) -> None:
        super().__init__(data)
        self._deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _DeadlineExceeded
        return super().read(size)

    def readline(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _DeadlineExceeded
        return super().readline(size)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = 1,
    exif: ExifPolicy | str = ExifPolicy.APPLY,
    draft_max_side: int | None = None,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
) -> np.ndarray:
    """Decode untrusted bytes to an (H, W, 3) uint8 RGB array, or raise `ImageRejected`.

    `draft_max_side` (JPEG only; None = full decode) lets libjpeg decode at 1/2, 1/4 or 1/8 scale:
    the smallest scale whose longer side is still >= `draft_max_side`. It is several times faster
    and changes PDQ hashes by a few bits (see bench/hashmatch.py). Other formats ignore it.
    """
    return decode_image_info(data, max_pixels=max_pixels, max_frames=max_frames, exif=exif,
                             draft_max_side=draft_max_side, time_limit_s=time_limit_s, formats=formats).rgb


def decode_image_info(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = 1,
    exif: ExifPolicy | str = ExifPolicy.APPLY,
    draft_max_side: int | None = None,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
) -> DecodedImage:
    """`decode_image`, also returning the EXIF orientation found and any EXIF problem."""
    policy = ExifPolicy(exif)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image takes bytes, not {type(data).__name__}")
    if not 0 < max_pixels <= PIL_PIXEL_CEILING:
        raise ValueError(f"max_pixels must be in 1..{PIL_PIXEL_CEILING} (PIL_PIXEL_CEILING), got {max_pixels}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if draft_max_side is not None and draft_max_side < 1:
        raise ValueError(f"draft_max_side must be >= 1 or None, got {draft_max_side}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DecoderSettingsError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True somewhere in this process: truncated "
                                   "images would decode as grey padding. Unset it; decode_image refuses to run.")

    deadline = time.monotonic() + time_limit_s if time_limit_s is not None else float("inf")
    fp = _DeadlineReader(bytes(data), deadline)
    # catch_warnings is process-wide before Python 3.14: decode in processes, not threads. The
    # explicit header check below is the primary guard either way.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _rejecting("header"), warnings.catch_warnings(record=True) as header_warnings:
                # Pillow parses EXIF while opening (JPEG: for the DPI) and warns about damage there.
                warnings.simplefilter("always")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fp, formats=list(formats))
            _check_size(im.size, max_pixels)
            _check_deadline(deadline, "header")
            with _rejecting("frame count"):
                frames = 1 if im.format in _SINGLE_IMAGE_CONTAINERS else int(getattr(im, "n_frames", 1))
                if frames > max_frames:
                    raise ImageRejected(RejectReason.TOO_MANY_FRAMES,
                                        f"{im.format} with {frames} frames, over the cap of {max_frames}")
                if frames > 1 or im.tell() != 0:
                    im.seek(0)
            _check_deadline(deadline, "frame count")
            # Pillow's TIFF loader turns the pixels itself and drops the tag: read it first.
            tiff_tag = read_orientation(im) if im.format == "TIFF" else None
            with _rejecting("decode"):
                if draft_max_side is not None and im.format in ("JPEG", "MPO"):
                    _draft(im, draft_max_side)
                im.load()
            _check_size(im.size, max_pixels)
            _check_deadline(deadline, "decode")
            orientation, exif_problem = tiff_tag or read_orientation(im)
            if exif_problem is None and header_warnings:
                exif_problem = f"damaged metadata ({len(header_warnings)} warning(s) reading the header)"
            turned_by_pillow = tiff_tag is not None and ExifTags.Base.Orientation not in getattr(im, "tag_v2", {})
            if orientation != 1 and (policy is ExifPolicy.APPLY) != turned_by_pillow:
                with _rejecting("orientation"):
                    im = im.transpose(ORIENTATION_TRANSPOSE[orientation] if not turned_by_pillow
                                      else ORIENTATION_UNDO[orientation])
                _check_deadline(deadline, "orientation")
            with _rejecting("colour conversion"):
                rgb = to_rgb(im)
            _check_deadline(deadline, "colour conversion")
        finally:
            fp.close()
    return DecodedImage(rgb, orientation, exif_problem)


@contextlib.contextmanager
def _rejecting(step: str) -> Iterator[None]:
    """Pillow's errors on bad input become `ImageRejected` with a reason."""
    try:
        yield
    except ImageRejected:
        raise
    except _DeadlineExceeded as e:
        raise ImageRejected(RejectReason.TIME_LIMIT, f"decode deadline passed during {step}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(RejectReason.TOO_MANY_PIXELS, str(e)) from e
    except UnidentifiedImageError as e:
        raise ImageRejected(RejectReason.NOT_AN_IMAGE,
                            f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from e
    except _DECODER_ERRORS as e:
        text = f"{step}: {type(e).__name__}: {e}"
        if "truncated" in str(e).lower() or isinstance(e, EOFError):
            raise ImageRejected(RejectReason.TRUNCATED, text) from e
        raise ImageRejected(RejectReason.CORRUPT, text) from e


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageRejected(RejectReason.CORRUPT, f"empty image ({w}x{h})")
    if w * h > max_pixels:
        raise ImageRejected(RejectReason.TOO_MANY_PIXELS, f"{w}x{h} = {w * h} pixels, over the cap of {max_pixels}")


def _check_deadline(deadline: float, step: str) -> None:
    if time.monotonic() > deadline:
        raise ImageRejected(RejectReason.TIME_LIMIT, f"decode deadline passed after {step}")


def _draft(im: Image.Image, max_side: int) -> None:
    """Ask libjpeg for the smallest DCT scale (1/8..1/1) whose longer side stays >= max_side."""
    w, h = im.size
    for scale in (8, 4, 2):
        if max(w, h) // scale >= max_side:
            # Pillow picks scale = min(w // req_w, h // req_h), which is exactly `scale` here.
            im.draft(None, (max(1, w // scale), max(1, h // scale)))
            return


def read_orientation(im: Image.Image) -> tuple[int, str | None]:
    """The EXIF (or XMP) orientation tag of a loaded image, 1-8, and why it was ignored if it was.

    Never raises on a malformed block: an unreadable block or a value that is not an integer 1-8
    counts as 1 (nothing to turn), with the problem named (types and numbers only, no content).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Pillow warns (instead of raising) about most damage; the warnings are counted, not printed.
            warnings.simplefilter("always")
            exif = im.getexif()
            value = exif.get(ExifTags.Base.Orientation)
    except _DECODER_ERRORS + (RecursionError, MemoryError) as e:
        logger.debug("unreadable EXIF block (%s): orientation treated as 1", type(e).__name__)
        return 1, f"unreadable EXIF block ({type(e).__name__})"
    damaged = f"damaged EXIF block ({len(caught)} warning(s))" if caught else None
    if not exif and len(im.info.get("exif") or b"") > 6:
        damaged = "unreadable EXIF block (no entry could be read)"
    if value is None:
        return 1, damaged
    if isinstance(value, tuple) and len(value) == 1:     # a count-1 array of SHORT
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        return 1, f"EXIF orientation of type {type(value).__name__}, not an integer"
    if not 1 <= value <= 8:
        return 1, f"EXIF orientation {value} outside 1-8" if -10**6 < value < 10**6 else "EXIF orientation outside 1-8"
    return value, damaged


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow image as an (H, W, 3) uint8 RGB array (alpha on white, 16-bit grey scaled)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return _grey_to_rgb(_scale_16bit(np.asarray(im)))
    if mode in ("I", "F"):
        return _grey_to_rgb(_scale_wide_grey(np.asarray(im), mode))
    has_alpha = mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA") if mode != "La" else im.convert("LA").convert("RGBA")
        out = Image.alpha_composite(Image.new("RGBA", im.size, _WHITE), rgba).convert("RGB")
    elif mode == "RGB":
        out = im
    else:
        try:
            out = im.convert("RGB")
        except ValueError as e:
            raise ImageRejected(RejectReason.UNSUPPORTED_MODE, f"no conversion from {mode} to RGB") from e
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8))


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _scale_16bit(a: np.ndarray) -> np.ndarray:
    """16-bit grey to 8 bits, v / 257 rounded (ImageMagick's ScaleQuantumToChar)."""
    v = a.astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _scale_wide_grey(a: np.ndarray, mode: str) -> np.ndarray:
    """32-bit int or float grey to 8 bits by its nominal range: [0, 1] and [0, 255] floats, 8- and
    16-bit ints as such; any other range is stretched min..max (such images carry no standard
    display range, so the stretch is the least surprising choice)."""
    v = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = v * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = v
    elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
        return _scale_16bit(v.astype(np.uint32))
    else:
        scaled = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
