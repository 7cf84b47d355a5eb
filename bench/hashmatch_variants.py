"""Issue #16 measurements for bench/hashmatch.py: copies that lost their EXIF orientation tag or gained
a frame, false matches on unrelated images, bad input, and hashing speed before/after.

Only benign pictures: the public PDQ reference photos (read from ../shared/data, never copied) and
generated ones (gradients, shapes, smooth noise, stripes, text). "Before" is the code as it was:
`hash_image(variants=False)` (the hash of the image as shown) and a matcher with
`exif_variants=False, trim_borders=False`; "after" is the default.

Sections (each returns a JSON-ready dict):

  orientation  10 listed photos, each stored under EXIF orientation t = 1..8, 8 benign edits of
               each, saved (a) with the tag, (b) without it, stored pixel order kept (an editor
               that re-encodes without metadata), (c) without it, turned upright first. Matched
               against three lists: `plain` (the hash of each original as shown: what the old
               `hashlist build` wrote, or a provider that applies the tag), `built` (the new
               `hashlist build`: plus the stored-order row) and `raw` (the stored order only: a
               provider hashing with the tag ignored, as the reference tools do). Plus the
               issue's exact case: one of the 10 photos tagged 6, its 80 edits' tags lost.
  borders      uniform borders of 2, 5, 10% (per side) in 5 colours, letterbox and pillarbox bars,
               a frame on the listed original, crops of 5, 10 and 20% (centred, one corner, one side): distances before and after
               trimming, and matches before/after.
  falsematch   unrelated pairs within the radius, before/after: the reference photos pairwise
               (different pictures only), and a pool of generated images pairwise (PDQ r=31,
               pHash r=6), and the pool against the 10-photo list.
  badinput     every orientation tag 1-8 in JPEG/PNG/WebP/TIFF, broken EXIF blocks, one-colour
               and near-flat images, tiny and elongated ones: outcome counts, never an exception,
               never a match.
  imagespeed   images/s per core, hash_image before/after, and match_image against a 100k list.
"""

from __future__ import annotations

import io
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from pipeline.config import HashListConfig  # noqa: E402
from pipeline.safety.dihedral import EXIF_SHOWN_AS, EXIF_STORED_AS, apply  # noqa: E402
from pipeline.safety.hashlist import load_hash_list  # noqa: E402
from pipeline.safety.imagehash_stage import hash_image, summarize  # noqa: E402
from pipeline.safety.images import decode_image  # noqa: E402
from pipeline.safety.matcher import Matcher  # noqa: E402
from pipeline.safety.perceptual import hamming, hexes_to_words, pdq  # noqa: E402

VECTORS = REPO.parent / "shared" / "data" / "hashmatch" / "pdq-vectors" / "files"
PHOTOS = [
    "pdq/data/bridge-mods/aaa-orig.jpg", "pdq/data/misc-images/c.png", "pdq/data/reg-test-input/pen-and-coaster.png",
    "pdq/data/reg-test-input/labelme-subset/q0122.jpg", "pdq/data/reg-test-input/labelme-subset/q0291.jpg",
    "pdq/data/reg-test-input/labelme-subset/q0746.jpg", "pdq/data/reg-test-input/labelme-subset/q1050.jpg",
    "pdq/data/reg-test-input/labelme-subset/q2821.jpg", "python-threatexchange/threatexchange/tests/hashing/resources/rgb.jpeg",
    "python-threatexchange/threatexchange/tests/hashing/resources/LA.png",
]
SEED = 20261207


# ------------------------------------------------------------------------------------------------
# Files and edits


def encode(rgb: np.ndarray, fmt: str = "JPEG", orientation: int | None = None, **kw) -> bytes:
    """Pixels as a file, with an EXIF orientation tag if given (and no other metadata)."""
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if fmt == "JPEG":
        kw.setdefault("quality", 92)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg_roundtrip(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# Benign edits that PDQ itself survives on all 10 photos when nothing else happens (so a miss below
# is the orientation's doing). Blur, sharpen, a 60% shrink, a 1% crop and a caption box were tried
# first: on the 256 px LabelMe photos PDQ alone loses them (2-8 of 10 matched, 36-108 bits).
EDITS = {
    "contrast_140": lambda im: ImageEnhance.Contrast(im).enhance(1.4),
    "saturation_brightness": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.6)).enhance(1.1),
    "jpeg_q50": lambda im: _jpeg_roundtrip(im, 50),
    "greyscale": lambda im: im.convert("L").convert("RGB"),
    "gamma_08": lambda im: im.point(lambda v: int(255 * (v / 255) ** 0.8)),
    "brightness_115": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "noise": lambda im: Image.fromarray((np.asarray(im).astype(np.float32)
                                         + np.random.default_rng(SEED).normal(0, 6, np.asarray(im).shape))
                                        .clip(0, 255).astype(np.uint8)),
    "square_256": lambda im: im.resize((256, 256), Image.LANCZOS),
}


def photos() -> dict[str, np.ndarray]:
    """The 10 listed pictures as shown (decoded RGB)."""
    return {Path(p).name: decode_image((VECTORS / p).read_bytes()) for p in PHOTOS}


def _matcher(rows: list[tuple[str, str, str | None]], tmp: Path, name: str, *, after: bool, typ: str = "pdq") -> Matcher:
    """A matcher over one CSV list of (hash, entry id, variant) rows; `after`: the new defaults."""
    path = tmp / f"{name}-{typ}.csv"
    path.write_text("hash,type,entry_id,variant\n" + "".join(f"{h},{typ},{e},{v or ''}\n" for h, e, v in rows))
    hl = load_hash_list(HashListConfig(name=name, path=str(path), updated="2026-12-01"))
    m = Matcher([(hl, None)], [], None)
    m.exif_variants = m.trim_borders = after
    return m


def _list_rows(h, entry: str, built: bool, typ: str = "pdq") -> list[tuple[str, str, str | None]]:
    """What `hashlist build` writes for one file (old: the hash as shown; new: plus stored/trimmed rows)."""
    own = getattr(h, typ)
    rows = [(own, entry, None)]
    if built:
        stored = h.pdq_stored if typ == "pdq" else h.phash_stored
        trimmed = (h.pdq_trimmed[0] if h.pdq_trimmed and (h.pdq_trimmed_quality or 0) >= 50 else None) if typ == "pdq" \
            else (h.phash_trimmed[0] if h.phash_trimmed else None)
        rows += [(x, entry, v) for x, v in ((stored, "stored_pixels"), (trimmed, "trimmed")) if x and x != own]
    return rows


# ------------------------------------------------------------------------------------------------
# orientation


def section_orientation(tmp: Path) -> dict:
    pics = photos()
    kinds = ("tag_kept", "tag_lost_stored_order", "tag_lost_turned_upright")
    out: dict = {"photos": list(pics), "edits": list(EDITS), "per_orientation": {}}
    totals: dict = {}
    for t in range(1, 9):
        originals, copies = {}, []
        for name, shown in pics.items():
            stored = np.ascontiguousarray(apply(shown, EXIF_STORED_AS[t]))
            originals[name] = (encode(stored, orientation=None if t == 1 else t), stored)
            for edit, fn in EDITS.items():
                e_stored = np.asarray(fn(Image.fromarray(stored)).convert("RGB"))
                e_shown = np.asarray(fn(Image.fromarray(shown)).convert("RGB"))
                copies.append((name, edit, "tag_kept", encode(e_stored, orientation=None if t == 1 else t)))
                copies.append((name, edit, "tag_lost_stored_order", encode(e_stored)))
                copies.append((name, edit, "tag_lost_turned_upright", encode(e_shown)))
        old = {n: hash_image(data, variants=False) for n, (data, _) in originals.items()}
        new = {n: hash_image(data) for n, (data, _) in originals.items()}
        lists = {
            "plain": [r for n, h in old.items() for r in _list_rows(h, n, False)],
            "built": [r for n, h in new.items() for r in _list_rows(h, n, True)],
            "raw": [(pdq(stored).hex, n, "raw") for n, (_, stored) in originals.items()],
        }
        before = {k: _matcher(v, tmp, f"o{t}-{k}", after=False) for k, v in lists.items()}
        after = {k: _matcher(v, tmp, f"o{t}-{k}", after=True) for k, v in lists.items()}
        res: dict = {}
        for name, edit, kind, data in copies:
            h_old, h_new = hash_image(data, variants=False), hash_image(data)
            for lst in lists:
                for when, m, h in (("before", before[lst], h_old), ("after", after[lst], h_new)):
                    hit = m.match_image(h)
                    r = res.setdefault(kind, {}).setdefault(lst, {}).setdefault(when, {"matched": 0, "wrong_entry": 0,
                                                                                          "copies": 0, "variants": {}})
                    r["copies"] += 1
                    if hit is not None and hit.entry_id == name:
                        r["matched"] += 1
                        r["variants"][hit.variant] = r["variants"].get(hit.variant, 0) + 1
                    elif hit is not None:
                        r["wrong_entry"] += 1
        out["per_orientation"][str(t)] = res
        for kind, by_list in res.items():
            for lst, by_when in by_list.items():
                for when, r in by_when.items():
                    agg = totals.setdefault(kind, {}).setdefault(lst, {}).setdefault(when, {"matched": 0, "copies": 0,
                                                                                              "wrong_entry": 0})
                    for k in ("matched", "copies", "wrong_entry"):
                        agg[k] += r[k]
    out["totals_all_orientations"] = totals
    out["issue_case"] = _issue_case(pics, tmp)
    return out


def _issue_case(pics: dict[str, np.ndarray], tmp: Path) -> dict:
    """The issue's numbers: 10 listed photos, the first stored under orientation 6; 80 edits without tags."""
    first = next(iter(pics))
    originals, copies = {}, []
    for name, shown in pics.items():
        t = 6 if name == first else 1
        stored = np.ascontiguousarray(apply(shown, EXIF_STORED_AS[t]))
        originals[name] = encode(stored, orientation=None if t == 1 else t)
        for edit, fn in EDITS.items():
            copies.append((name, encode(np.asarray(fn(Image.fromarray(stored)).convert("RGB")))))
    res = {}
    for label, built, after in (("before (old build, old matcher)", False, False),
                                ("after, list from the old build", False, True),
                                ("after, new build, query variants off", True, False),
                                ("after (new build, new matcher)", True, True)):
        rows = [r for n, d in originals.items() for r in _list_rows(hash_image(d, variants=built), n, built)]
        m = _matcher(rows, tmp, f"issue-{built}-{after}", after=after)
        hits = [m.match_image(hash_image(d, variants=after or built)) for _, d in copies]
        res[label] = {"copies": len(copies), "matched": sum(1 for (n, _), x in zip(copies, hits) if x and x.entry_id == n),
                      "escaped": [f"{n}" for (n, _), x in zip(copies, hits) if not (x and x.entry_id == n)]}
        res[label]["escaped"] = {n: res[label]["escaped"].count(n) for n in sorted(set(res[label]["escaped"]))}
    return res


# ------------------------------------------------------------------------------------------------
# borders


COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "red": (200, 30, 30),
           "near_white": (246, 244, 240)}


def add_border(rgb: np.ndarray, top: float, bottom: float, left: float, right: float, colour) -> np.ndarray:
    h, w = rgb.shape[:2]
    t, b, le, r = round(top * h), round(bottom * h), round(left * w), round(right * w)
    out = np.empty((h + t + b, w + le + r, 3), np.uint8)
    out[:] = colour
    out[t:t + h, le:le + w] = rgb
    return out


def section_borders(tmp: Path) -> dict:
    pics = photos()
    cases: dict[str, callable] = {}
    for pct in (2, 5, 10):
        for cname, c in COLOURS.items():
            cases[f"border_{pct}pct_{cname}"] = lambda a, p=pct / 100, c=c: add_border(a, p, p, p, p, c)
    cases["letterbox_10pct_black"] = lambda a: add_border(a, 0.1, 0.1, 0, 0, COLOURS["black"])
    cases["pillarbox_15pct_black"] = lambda a: add_border(a, 0, 0, 0.15, 0.15, COLOURS["black"])
    cases["border_5pct_white_one_side"] = lambda a: add_border(a, 0, 0.05, 0, 0, COLOURS["white"])
    cases["border_5pct_white_and_tag_lost_o6"] = lambda a: add_border(np.ascontiguousarray(apply(a, "rotate90")),
                                                                      0.05, 0.05, 0.05, 0.05, COLOURS["white"])
    for pct in (5, 10, 20):  # crops: pct of each dimension cut (centred: half from each side)
        cases[f"crop_{pct}pct_centred"] = lambda a, p=pct / 200: a[round(p * a.shape[0]):a.shape[0] - round(p * a.shape[0]),
                                                                   round(p * a.shape[1]):a.shape[1] - round(p * a.shape[1])]
        cases[f"crop_{pct}pct_one_corner"] = lambda a, p=pct / 100: a[:a.shape[0] - round(p * a.shape[0]),
                                                                      :a.shape[1] - round(p * a.shape[1])]
        cases[f"crop_{pct}pct_right_side"] = lambda a, p=pct / 100: a[:, :a.shape[1] - round(p * a.shape[1])]
        cases[f"crop_{pct}pct_top_side"] = lambda a, p=pct / 100: a[round(p * a.shape[0]):, :]
    listed_old = {n: hash_image(encode(a), variants=False) for n, a in pics.items()}
    listed_new = {n: hash_image(encode(a)) for n, a in pics.items()}
    m_before = _matcher([r for n, h in listed_old.items() for r in _list_rows(h, n, False)], tmp, "b-plain", after=False)
    m_after = _matcher([r for n, h in listed_old.items() for r in _list_rows(h, n, False)], tmp, "b-plain", after=True)
    # A list from the new `hashlist build` also holds the trimmed picture of a listed photo whose own
    # edge is plain, so a framed copy whose trim also took that edge still matches.
    m_built = _matcher([r for n, h in listed_new.items() for r in _list_rows(h, n, True)], tmp, "b-built", after=True)
    out: dict = {}
    for case, fn in cases.items():
        rows = []
        for name, a in pics.items():
            data = encode(fn(a))
            h_old, h_new = hash_image(data, variants=False), hash_image(data)
            d0 = hamming(h_old.pdq, listed_old[name].pdq)
            dt = hamming(h_new.pdq_trimmed[0], listed_old[name].pdq) if h_new.pdq_trimmed else None
            hb, ha, hbuilt = m_before.match_image(h_old), m_after.match_image(h_new), m_built.match_image(h_new)
            rows.append({"photo": name, "distance_before": d0, "border_found": list(h_new.border) if h_new.border else None,
                         "distance_trimmed": dt, "matched_before": bool(hb and hb.entry_id == name),
                         "matched_after": bool(ha and ha.entry_id == name), "variant_after": ha.variant if ha else None,
                         "distance_after": ha.distance if ha else None, "wrong_entry_after": bool(ha and ha.entry_id != name),
                         "matched_after_built_list": bool(hbuilt and hbuilt.entry_id == name)})
        d0s = [r["distance_before"] for r in rows]
        dts = [r["distance_trimmed"] for r in rows if r["distance_trimmed"] is not None]
        out[case] = {"distance_before": {"min": min(d0s), "median": statistics.median(d0s), "max": max(d0s)},
                     "border_found": sum(r["border_found"] is not None for r in rows),
                     "distance_trimmed": {"min": min(dts), "median": statistics.median(dts), "max": max(dts)} if dts else None,
                     "matched_before": sum(r["matched_before"] for r in rows),
                     "matched_after": sum(r["matched_after"] for r in rows),
                     "matched_after_built_list": sum(r["matched_after_built_list"] for r in rows),
                     "wrong_entry_after": sum(r["wrong_entry_after"] for r in rows), "photos": rows}
    # The reverse: the listed original carries the frame, the copy is the bare picture.
    framed = {n: hash_image(encode(add_border(a, .05, .05, .05, .05, COLOURS["white"]))) for n, a in pics.items()}
    rev: dict = {}
    for label, built in (("old build", False), ("new build", True)):
        m = _matcher([r for n, h in framed.items() for r in _list_rows(h, n, built)], tmp, f"rev-{built}", after=True)
        hits = {n: m.match_image(hash_image(encode(a))) for n, a in pics.items()}
        rev[label] = {"matched": sum(1 for n, x in hits.items() if x and x.entry_id == n), "of": len(pics),
                      "list_variants": sorted({x.list_variant or "-" for x in hits.values() if x})}
    out["listed_original_framed_5pct_copy_bare"] = rev
    return out


# ------------------------------------------------------------------------------------------------
# falsematch


def generated_pool(n: int, seed: int = SEED) -> list[bytes]:
    """Benign generated pictures of several kinds and sizes (96-1024 px a side), as JPEG or PNG."""
    rng = np.random.default_rng(seed)
    out = []
    words = ["river", "garden", "orange", "window", "planet", "music", "bridge", "coffee", "paper", "summer"]
    for k in range(n):
        h, w = (int(x) for x in rng.integers(96, 1025, 2))
        kind = k % 6
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        if kind == 0:        # gradients + shapes
            a, b, c = rng.uniform(0.5, 3, 3)
            base = np.stack([np.sin(a * 6 * x / w + b), np.cos(b * 5 * y / h + c), np.sin(c * 4 * (x / w + y / h))], -1)
            rgb = ((base * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(rgb)
            d = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(3, 15))):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                box = [x0, y0, x0 + int(rng.integers(8, max(9, w // 2))), y0 + int(rng.integers(8, max(9, h // 2)))]
                (d.rectangle if rng.random() < .5 else d.ellipse)(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        elif kind == 1:      # smooth noise at a random scale
            s = int(rng.integers(3, 24))
            small = rng.integers(0, 256, (s, max(2, s * w // h), 3), dtype=np.uint8)
            im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        elif kind == 2:      # stripes / checks at a random angle and frequency
            th, f = rng.uniform(0, np.pi), rng.uniform(2, 30)
            v = np.sin((x * np.cos(th) + y * np.sin(th)) / max(h, w) * f * 2 * np.pi)
            if rng.random() < .5:
                v = v * np.sin((x * -np.sin(th) + y * np.cos(th)) / max(h, w) * f * 2 * np.pi)
            c1, c2 = rng.integers(0, 256, (2, 3))
            t = (v[..., None] * .5 + .5)
            im = Image.fromarray((c1 * t + c2 * (1 - t)).astype(np.uint8))
        elif kind == 3:      # text on a plain background (a uniform margin: exercises trimming)
            im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(150, 256, 3)))
            d = ImageDraw.Draw(im)
            for line in range(int(rng.integers(2, 12))):
                txt = " ".join(rng.choice(words, int(rng.integers(2, 6))))
                d.text((int(rng.integers(2, max(3, w // 3))), 6 + line * 14), txt, fill=tuple(int(v) for v in rng.integers(0, 100, 3)))
        elif kind == 4:      # objects on a plain canvas (a product-photo layout)
            im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, 3)))
            d = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(1, 5))):
                cx, cy = rng.uniform(.25, .75) * w, rng.uniform(.25, .75) * h
                rx, ry = rng.uniform(.05, .3) * w, rng.uniform(.05, .3) * h
                d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
        else:                # photo-like: smooth noise plus fine noise and a vignette
            s = int(rng.integers(6, 40))
            small = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
            base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.float32)
            vign = 1 - 0.5 * (((x / w - .5) ** 2 + (y / h - .5) ** 2) * 2)
            rgb = (base * vign[..., None] + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(rgb)
        buf = io.BytesIO()
        if rng.random() < .7:
            im.save(buf, "JPEG", quality=int(rng.integers(60, 96)))
        else:
            im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _pairs_within(q: list[list[str]], listed: list[list[str]], radius: int, bits: int, exclude=None) -> list[tuple]:
    """(i, j, distance) for i != j where any query hash of i is within radius of any listed hash of j."""
    qi = [i for i, hs in enumerate(q) for _ in hs]
    lj = [j for j, hs in enumerate(listed) for _ in hs]
    if not qi or not lj:
        return []
    qw = hexes_to_words([x for hs in q for x in hs], bits)
    lw = hexes_to_words([x for hs in listed for x in hs], bits)
    qi, lj = np.array(qi), np.array(lj)
    found: dict[tuple[int, int], int] = {}
    for a in range(0, len(qw), 512):
        d = np.bitwise_count(qw[a:a + 512, None, :] ^ lw[None, :, :]).sum(axis=2)
        ii, jj = np.nonzero(d <= radius)
        for i, j, dist in zip(qi[a + ii].tolist(), lj[jj].tolist(), d[ii, jj].tolist()):
            if i != j and (exclude is None or not exclude(i, j)):
                found[(i, j)] = min(found.get((i, j), 999), dist)
    return sorted((i, j, dd) for (i, j), dd in found.items())


def _query_sets(hashed, typ: str, after: bool, dihedral: bool = False) -> list[list[str]]:
    m = Matcher([], [], None)
    m.exif_variants = m.trim_borders = after
    m.dihedral = dihedral
    return [[q for _, q in m.queries(h, typ)] if h.rejected is None else [] for h in hashed]


def _listed_sets(hashed, typ: str, built: bool) -> list[list[str]]:
    out = []
    for h in hashed:
        if h.rejected is not None or getattr(h, typ) is None or (typ == "pdq" and (h.pdq_quality or 0) < 50):
            out.append([])
        else:
            out.append([x for x, _, _ in _list_rows(h, "-", built, typ)])
    return out


def natural_tiles(folder: Path, side: int = 128) -> tuple[list[bytes], list[str]]:
    """Disjoint side x side tiles of every photo in `folder` (JPEG q90), and the photo each came from."""
    tiles, source = [], []
    for p in sorted(folder.iterdir()):
        try:
            a = decode_image(p.read_bytes())
        except Exception:  # noqa: BLE001 - multi-frame or odd files in a borrowed folder are skipped
            continue
        group = p.stem.split("_")[0]        # motorcycle_left / _right and chessboard_GRAY / _RGB are one picture
        for y in range(0, a.shape[0] - side + 1, side):
            for x in range(0, a.shape[1] - side + 1, side):
                tiles.append(encode(a[y:y + side, x:x + side], quality=90))
                source.append(group)
    return tiles, source


def section_falsematch(tmp: Path, pool_size: int, natural: Path | None = None) -> dict:
    out: dict = {}
    if natural is not None and natural.is_dir():
        # Natural pictures: disjoint tiles of benign public photos (e.g. scikit-image's bundled data);
        # only pairs of tiles from different photos count.
        tiles, source = natural_tiles(natural)
        th = [hash_image(b) for b in tiles]
        other = lambda i, j: source[i] == source[j]  # noqa: E731
        nat: dict = {"folder": str(natural), "tiles": len(tiles), "photos": len(set(source)),
                     "cross_photo_pairs": sum(1 for i in range(len(th)) for j in range(len(th)) if source[i] != source[j]),
                     "summary": summarize(th)}
        for typ, radius, bits in (("pdq", 31, 256), ("phash", 6, 64)):
            nat[typ] = {}
            for label, after, built, dih in (("before", False, False, False), ("after", True, True, False),
                                             ("after_with_dihedral_true", True, True, True)):
                pairs = _pairs_within(_query_sets(th, typ, after, dih), _listed_sets(th, typ, built), radius, bits, other)
                nat[typ][label] = {"pairs": len(pairs), "closest": [(i, j, d) for i, j, d in sorted(pairs, key=lambda p: p[2])[:5]]}
        out["natural_tiles"] = nat
    # 1. The reference photos, pairwise, different pictures only (the bridge family is one picture).
    files = sorted(p for p in VECTORS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".tiff"))
    group = lambda rel: "bridge" if any(s in rel for s in ("bridge", "/dih/", "misc-images/b.jpg", "misc-images/modes/",  # noqa: E731
                                                               "sample-b")) else rel
    rels = [p.relative_to(VECTORS).as_posix() for p in files]
    vec = [hash_image(p.read_bytes()) for p in files]
    same = lambda i, j: group(rels[i]) == group(rels[j])  # noqa: E731
    out["reference_photos"] = {"files": len(files), "pictures": len({group(r) for r in rels})}
    for typ, radius, bits in (("pdq", 31, 256), ("phash", 6, 64)):
        r = {}
        for label, after, built, dih in (("before", False, False, False), ("after", True, True, False),
                                         ("after_with_dihedral_true", True, True, True)):
            pairs = _pairs_within(_query_sets(vec, typ, after, dih), _listed_sets(vec, typ, built), radius, bits, same)
            r[label] = {"pairs": len(pairs), "examples": [(rels[i], rels[j], d) for i, j, d in pairs[:5]]}
        out["reference_photos"][typ] = r
    # 2. A generated pool, pairwise, and against the 10-photo list.
    t0 = time.perf_counter()
    pool = generated_pool(pool_size)
    hashed = [hash_image(b) for b in pool]
    out["pool"] = {"images": len(pool), "hash_s": round(time.perf_counter() - t0, 1), "summary": summarize(hashed)}
    listed = [hash_image(encode(a)) for a in photos().values()]
    for typ, radius, bits in (("pdq", 31, 256), ("phash", 6, 64)):
        r = {}
        for label, after, built in (("before", False, False), ("after", True, True)):
            qs = _query_sets(hashed, typ, after)
            ls = _listed_sets(hashed, typ, built)
            pairs = _pairs_within(qs, ls, radius, bits)
            vs_list = _pairs_within(qs + [[] for _ in listed], [[] for _ in hashed] + _listed_sets(listed, typ, built),
                                    radius, bits)
            r[label] = {"query_hashes": sum(map(len, qs)), "listed_hashes": sum(map(len, ls)),
                        "pairs_within_radius": len(pairs),
                        "pairs_by_kind": _by_kind(pairs), "pool_vs_10_photo_list": len(vs_list),
                        "closest_pairs": [(i, j, d) for i, j, d in sorted(pairs, key=lambda p: p[2])[:5]]}
        out["pool"][typ] = r
    return out


def _by_kind(pairs) -> dict:
    names = ["gradients+shapes", "smooth_noise", "stripes", "text", "objects_on_canvas", "photo_like"]
    out: dict = {}
    for i, j, _ in pairs:
        k = "/".join(sorted((names[i % 6], names[j % 6])))
        out[k] = out.get(k, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------
# badinput


def _exif_with_orientation(typ: int, count: int, value: bytes) -> bytes:
    """A hand-made little-endian EXIF block with one orientation entry of any type, count and value."""
    entry = struct.pack("<HHI", 0x0112, typ, count) + value[:4].ljust(4, b"\x00")
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)


def bad_inputs() -> list[tuple[str, bytes]]:
    """Benign files that are awkward: every orientation, broken EXIF, flat, tiny, elongated."""
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:90, 0:140]
    pic = np.stack([x * 255 // 139, y * 255 // 89, (x * y) % 256], -1).astype(np.uint8)
    pic[20:60, 40:90] = (30, 140, 200)
    out = []
    for t in range(1, 9):
        for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            out.append((f"orientation_{t}_{fmt.lower()}", encode(pic, fmt, orientation=t)))
    good = encode(pic, orientation=6)
    i = good.index(b"Exif\x00\x00")
    tiff = i + 6
    broken = {
        "exif_garbage": good[:tiff] + bytes(rng.integers(0, 256, 20, dtype=np.uint8)) + good[tiff + 20:],
        "exif_bad_byte_order": good[:tiff] + b"XX" + good[tiff + 2:],
        "exif_ifd_offset_out_of_range": good[:tiff + 4] + b"\xff\xff\xff\x00"[::1] + good[tiff + 8:],
        "exif_entry_count_huge": good[:tiff + 8] + b"\xff\xff" + good[tiff + 10:],
    }
    seg_end = i - 2 + int.from_bytes(good[i - 2:i], "big")      # the APP1 length counts itself, not the marker
    broken["exif_truncated_block"] = good[:i - 4] + b"\xff\xe1\x00\x0cExif\x00\x00II*\x00" + good[seg_end:]
    for name, data in broken.items():
        out.append((name, data))
    for label, typ, count, value in (("orientation_0", 3, 1, (0).to_bytes(2, "little")),
                                     ("orientation_9", 3, 1, (9).to_bytes(2, "little")),
                                     ("orientation_65535", 3, 1, (65535).to_bytes(2, "little")),
                                     ("orientation_as_text", 2, 2, b"6\x00"),
                                     ("orientation_two_values", 3, 2, struct.pack("<HH", 6, 3)),
                                     ("orientation_as_rational_out_of_block", 5, 1, struct.pack("<I", 4000))):
        buf = io.BytesIO()
        Image.fromarray(pic).save(buf, "JPEG", exif=_exif_with_orientation(typ, count, value))
        out.append((label, buf.getvalue()))
    for colour in ((0, 0, 0), (255, 255, 255), (128, 64, 200)):
        for size in ((64, 64), (1000, 700)):
            flat = np.zeros((size[1], size[0], 3), np.uint8)
            flat[:] = colour
            out.append((f"one_colour_{colour}_{size[0]}x{size[1]}_png", encode(flat, "PNG")))
            out.append((f"one_colour_{colour}_{size[0]}x{size[1]}_jpeg_o6", encode(flat, orientation=6)))
    near = np.full((300, 300, 3), 200, np.uint8)
    near[140:150, 140:150] = 20
    out.append(("one_colour_with_a_speck", encode(near, "PNG")))
    noisy = (np.full((300, 300, 3), 128) + rng.normal(0, 2, (300, 300, 3))).clip(0, 255).astype(np.uint8)
    out.append(("near_flat_noise", encode(noisy)))
    for w, h in ((1, 1), (2, 3), (31, 31), (1, 2000), (2000, 1), (7, 900)):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append((f"tiny_or_elongated_{w}x{h}", encode(a, "PNG")))
    return out


def section_badinput(tmp: Path) -> dict:
    cases = bad_inputs()
    listed = [hash_image(encode(a)) for a in photos().values()]
    m = _matcher([r for k, h in enumerate(listed) for r in _list_rows(h, f"photo{k}", True)], tmp, "bad", after=True)
    mp = _matcher([r for k, h in enumerate(listed) for r in _list_rows(h, f"photo{k}", True, "phash")], tmp, "badp",
                  after=True, typ="phash")
    m.dihedral = mp.dihedral = True      # the most permissive setting
    rows, hashed, errors = [], [], 0
    for name, data in cases:
        try:
            h = hash_image(data)
            hit, hitp = m.match_image(h), mp.match_image(h)
        except Exception as e:  # noqa: BLE001 - the benchmark counts any exception as a failure
            errors += 1
            rows.append({"case": name, "exception": type(e).__name__})
            continue
        hashed.append(h)
        rows.append({"case": name, "rejected": h.rejected.split(":")[0] if h.rejected else None,
                     "exif_orientation": h.exif_orientation, "exif_problem": h.exif_problem,
                     "pdq_quality": h.pdq_quality, "border": list(h.border) if h.border else None,
                     "trimmed_quality": h.pdq_trimmed_quality, "matched_pdq": hit is not None,
                     "matched_phash": hitp is not None})
    return {"cases": len(cases), "exceptions": errors, "summary": summarize(hashed),
            "pdq_matches": sum(r.get("matched_pdq", False) for r in rows),
            "phash_matches": sum(r.get("matched_phash", False) for r in rows), "rows": rows}


# ------------------------------------------------------------------------------------------------
# imagespeed


def section_imagespeed(repeats: int, synthetic_jpegs) -> dict:
    from pipeline.safety.index import HammingIndex  # noqa: F401 - the matcher builds one above 4096 entries

    pics = photos()
    vector_jpegs = [p.read_bytes() for p in sorted(VECTORS.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg")]
    sets = {
        "vectors_jpeg": vector_jpegs,
        "generated_1024": synthetic_jpegs(40),
        "photos_tagged_6": [encode(np.ascontiguousarray(apply(a, "rotate90")), orientation=6) for a in pics.values()],
        "photos_5pct_border": [encode(add_border(a, .05, .05, .05, .05, COLOURS["white"])) for a in pics.values()],
    }
    fns = {"before": lambda d: hash_image(d, variants=False), "after": lambda d: hash_image(d)}
    for f in fns.values():
        f(vector_jpegs[0])
    out: dict = {"hash_image": {}}
    for s, data in sets.items():
        out["hash_image"][s] = {}
        for label, f in fns.items():
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                for d in data:
                    f(d)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            out["hash_image"][s][label] = {"images": len(data), "seconds_median": round(med, 4),
                                           "images_per_s": round(len(data) / med, 1)}
        b, a = out["hash_image"][s]["before"]["images_per_s"], out["hash_image"][s]["after"]["images_per_s"]
        out["hash_image"][s]["after_over_before"] = round(a / b, 3)
    # Lookup cost: one image's queries against a 100k-entry list (HammingIndex), old vs new query sets.
    rng = np.random.default_rng(SEED)
    tmp = Path(__import__("tempfile").mkdtemp(prefix="hm-speed-"))
    rand = rng.integers(0, 2**64, (100_000, 4), dtype=np.uint64)
    rows = [(r.astype(">u8").tobytes().hex(), f"r{k}", None) for k, r in enumerate(rand)]
    old_h = [hash_image(d, variants=False) for d in sets["vectors_jpeg"]]
    new_h = [hash_image(d) for d in sets["vectors_jpeg"]]
    for label, after, hs in (("before", False, old_h), ("after", True, new_h)):
        m = _matcher(rows, tmp, f"speed-{label}", after=after)
        m.match_image(hs[0])
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for h in hs:
                m.match_image(h)
            times.append(time.perf_counter() - t)
        out[f"match_image_100k_{label}"] = {"images": len(hs), "per_s": round(len(hs) / statistics.median(times), 1),
                                            "queries_per_image": round(statistics.mean(len(m.queries(h, "pdq")) for h in hs), 2)}
    return out
