"""Image matching whatever happened to the EXIF orientation tag or the frame; the variant is named; flat never matches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pipeline.config import HashListConfig
from pipeline.safety.dihedral import EXIF_STORED_AS, apply
from pipeline.safety.hashlist import load_hash_list
from pipeline.safety.imagehash_stage import ImageHashes, hash_image, hash_images
from pipeline.safety.matcher import Match, Matcher
from pipeline.safety.perceptual import pdq
from pipeline.safety.quarantine import incident
from tests.unit.safety.test_borders import framed
from tests.unit.safety.test_dihedral import picture


def jpeg(rgb: np.ndarray, tag: int | None = None, **edit) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if edit.get("blur"):
        im = im.filter(ImageFilter.GaussianBlur(edit["blur"]))
    kw = {}
    if tag is not None:
        exif = Image.Exif()
        exif[0x0112] = tag
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def matcher(tmp_path, rows: list[tuple[str, str, str]], typ: str = "pdq", **flags) -> Matcher:
    path = tmp_path / f"list-{len(rows)}-{typ}.csv"
    path.write_text("hash,type,entry_id,variant\n" + "".join(f"{h},{typ},{e},{v}\n" for h, e, v in rows))
    m = Matcher([(load_hash_list(HashListConfig(name="demo", path=str(path), updated="2026-12-01")), None)], [], None)
    for k, v in flags.items():
        setattr(m, k, v)
    return m


SHOWN = picture(360, 480, 11)
UNRELATED = [picture(360, 480, s) for s in range(100, 110)]


@pytest.mark.parametrize("tag", range(2, 9))
def test_a_tagged_listed_photo_matches_its_copies_whether_or_not_the_tag_survived(tmp_path, tag):
    stored = np.ascontiguousarray(apply(SHOWN, EXIF_STORED_AS[tag]))
    listed = hash_image(jpeg(stored, tag))                       # hashed as shown: the tag applied
    m = matcher(tmp_path, [(listed.pdq, "photo", "")])
    kept, lost, upright = (hash_image(jpeg(stored, tag, blur=1)), hash_image(jpeg(stored, blur=1)),
                           hash_image(jpeg(SHOWN, blur=1)))
    assert m.match_image(kept).variant == "image"
    hit = m.match_image(lost)                                    # an editor dropped the tag, kept the stored order
    assert hit is not None and hit.entry_id == "photo" and hit.variant == f"exif_orientation_{tag}"
    assert f"EXIF orientation {tag}" in hit.matched_on and hit.variant_hash != lost.pdq
    assert m.match_image(upright).variant == "image"
    # Before this change (no query variants) the tag-less copy escaped.
    assert matcher(tmp_path, [(listed.pdq, "photo", "")], exif_variants=False).match_image(lost) is None
    assert not any(m.match_image(hash_image(jpeg(u))) for u in UNRELATED)


def test_a_list_built_with_the_tag_ignored_matches_a_tagged_copy_on_its_stored_pixels(tmp_path):
    stored = np.ascontiguousarray(apply(SHOWN, EXIF_STORED_AS[6]))
    m = matcher(tmp_path, [(pdq(stored).hex, "raw", "")])        # the reference tools hash the stored order
    hit = m.match_image(hash_image(jpeg(stored, 6, blur=1)))
    assert hit is not None and hit.variant == "stored_pixels" and "EXIF orientation 6 not applied" in hit.matched_on


def test_a_built_list_catches_tag_less_copies_even_with_query_variants_off(tmp_path):
    stored = np.ascontiguousarray(apply(SHOWN, EXIF_STORED_AS[6]))
    listed = hash_image(jpeg(stored, 6))
    rows = [(listed.pdq, "photo", ""), (listed.pdq_stored, "photo", "stored_pixels")]   # what `hashlist build` writes
    hit = matcher(tmp_path, rows, exif_variants=False).match_image(hash_image(jpeg(stored, blur=1)))
    assert hit is not None and hit.variant == "image" and hit.list_variant == "stored_pixels"


def test_a_framed_copy_matches_on_the_trimmed_picture_and_says_so(tmp_path):
    m = matcher(tmp_path, [(hash_image(jpeg(SHOWN)).pdq, "photo", "")])
    copy = hash_image(jpeg(framed(SHOWN, 24, 24, 32, 32, (255, 255, 255))))
    assert copy.border is not None and m.match_image(copy).variant == "trimmed"
    assert "border trimmed: " in m.match_image(copy).matched_on
    assert matcher(tmp_path, [(hash_image(jpeg(SHOWN)).pdq, "photo", "")], trim_borders=False).match_image(copy) is None
    tagless_framed = hash_image(jpeg(framed(np.ascontiguousarray(apply(SHOWN, "rotate90")), 24, 24, 32, 32, (0, 0, 0))))
    assert m.match_image(tagless_framed).variant == "trimmed+exif_orientation_6"


def test_one_colour_and_low_quality_images_never_match_through_any_variant(tmp_path):
    flat = [hash_image(jpeg(np.full((300, 400, 3), c, np.uint8), tag)) for c in ((0, 0, 0), (255, 255, 255)) for tag in
            (None, 6)]
    rows = [(h.pdq, f"flat{k}", "") for k, h in enumerate(flat)] + [(hash_image(jpeg(SHOWN)).pdq, "photo", "")]
    m = matcher(tmp_path, rows, dihedral=True)
    assert all(h.pdq_quality < 50 and m.match_image(h) is None for h in flat)
    # A hashable image whose trimmed picture is flat: the trimmed hashes are not looked up.
    h = hash_image(jpeg(framed(SHOWN, 30, 30, 30, 30, (255, 255, 255))))
    assert h.pdq_trimmed and ("trimmed", h.pdq_trimmed[0]) in m.queries(h, "pdq")
    h.pdq_trimmed_quality = 10
    assert not any(v.startswith("trimmed") for v, _ in m.queries(h, "pdq"))


def test_phash_lists_get_the_stored_pixels_and_trimmed_variants_but_not_seven_more_looks(tmp_path):
    stored = np.ascontiguousarray(apply(SHOWN, EXIF_STORED_AS[8]))
    listed = hash_image(jpeg(stored, 8))
    raw = matcher(tmp_path, [(hash_image(jpeg(stored)).phash, "raw", "")], typ="phash")
    assert raw.match_image(listed).variant == "stored_pixels"
    m = matcher(tmp_path, [(listed.phash, "photo", "")], typ="phash")
    tagless = hash_image(jpeg(stored))
    assert [v for v, _ in m.queries(tagless, "phash")] == ["image"] and m.match_image(tagless) is None
    built = matcher(tmp_path, [(listed.phash, "photo", ""), (listed.phash_stored, "photo", "stored_pixels")], typ="phash")
    assert built.match_image(tagless).list_variant == "stored_pixels"
    assert m.match_image(hash_image(jpeg(framed(SHOWN, 20, 20, 20, 20, (0, 0, 0))))).variant == "trimmed"


def test_the_incident_names_the_variant_and_holds_hashes_only(tmp_path):
    stored = np.ascontiguousarray(apply(SHOWN, EXIF_STORED_AS[6]))
    m = matcher(tmp_path, [(hash_image(jpeg(stored, 6)).pdq, "photo", "")])
    h = hash_image(jpeg(framed(stored, 20, 20, 20, 20, (255, 255, 255))))
    rec = incident(m.match_image(h), "r1", "src", "file:///x.jpg", "x.jpg", 0)
    assert rec["variant"] == "trimmed+exif_orientation_6" and len(rec["variant_hash"]) == 64
    assert rec["hashes"]["border"] == [20, 20, 20, 20] and rec["list_variant"] is None
    assert set(rec["hashes"]) <= {"sha256", "md5", "sha1", "pdq", "pdq_quality", "phash", "exif_orientation", "border"}


def test_old_callers_keep_working():
    m = Match("l", None, "e", "pdq", 3, "pdq within 31 bits", {})
    assert m.variant is None and incident(m, "r", "s", "u", "l", 0)["variant"] is None
    data = jpeg(SHOWN)
    (a,), (b,) = hash_images([data], dihedral=True), hash_images([data], dihedral=False, variants=False)
    assert a.pdq == b.pdq and len(a.pdq_variants) == 8 and b.pdq_variants is None and b.pdq_dihedral is None
    bare = ImageHashes("0" * 64, "0" * 32, "0" * 40, pdq=a.pdq, pdq_quality=100, pdq_variants=a.pdq_variants)
    assert Matcher([], [], None).queries(bare, "pdq")[0] == ("image", a.pdq)


def test_a_phash_list_never_matches_a_one_colour_image_of_another_colour(tmp_path):
    # Every one-colour image but black has the pHash 8000000000000000: red would match a listed green.
    green, red = (hash_image(jpeg(np.full((240, 320, 3), c, np.uint8))) for c in ((30, 200, 30), (200, 30, 30)))
    assert green.phash == red.phash and red.pdq_quality < 50
    m = matcher(tmp_path, [(green.phash, "green", ""), (hash_image(jpeg(SHOWN)).phash, "photo", "")], typ="phash")
    assert m.match_image(red) is None and m.queries(red, "phash") == []
    assert m.match_image(hash_image(jpeg(SHOWN, blur=1.0))).entry_id == "photo"   # a real picture still matches


def test_the_manifest_counts_matches_per_variant_and_kind():
    from pipeline.safety.quarantine import count_variants

    rows = [{"variant": "image", "hash_type": "pdq"}, {"variant": None, "hash_type": "sha256"},
            {"variant": "exif_orientation_6", "hash_type": "pdq"}, {"variant": "stored_pixels", "hash_type": "phash"},
            {"variant": "rotate90", "hash_type": "pdq"}, {"variant": "trimmed+exif_orientation_6", "hash_type": "pdq"},
            {"variant": "image", "list_variant": "stored_pixels", "hash_type": "pdq"}]
    c = count_variants(rows)
    assert c["variant_matches"] == {"exif_orientation": 3, "dihedral": 1, "border_trimmed": 1, "list_variant": 1}
    assert c["by_variant"] == {"exif_orientation_6": 1, "image": 2, "rotate90": 1, "sha256": 1, "stored_pixels": 1,
                               "trimmed+exif_orientation_6": 1}
