"""Adult-content screening: NudeNet parity on benign images, modes and thresholds (through an
injected detector result, never an explicit image), bad images, the term-list filter on a made-up
benign list, and one run through the executor with the ledger's evidence."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import yaml
from PIL import Image, ImageDraw

from pipeline.config import load_config, parse_config
from pipeline.content.nsfw import EXPOSED, Detection, NudeNetModel
from pipeline.content.terms import TermList, term_id
from pipeline.core.registry import resolve_stages
from pipeline.core.stage import BatchContext
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.safety.images import decode_image
from pipeline.stages.adult import AdultImageConfig, AdultImageStage, AdultTextConfig, AdultTextStage
from tests.conftest import SHARED_DATA, build_config

nudenet = pytest.importorskip("nudenet", reason="the adult extra is not installed (pip install '.[adult]')")

PDQ_DATA = SHARED_DATA / "hashmatch" / "pdq-vectors" / "files" / "pdq" / "data"
FACES = PDQ_DATA / "reg-test-input" / "labelme-subset" / "q0291.jpg"     # a street scene with people
needs_photos = pytest.mark.skipif(not FACES.exists(), reason="../shared/data/hashmatch is not present")


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def generated(kind: str, seed: int = 0, size: tuple[int, int] = (200, 150)) -> Image.Image:
    """Benign synthetic pictures: a gradient, shapes, noise or text."""
    rng = np.random.default_rng(seed)
    w, h = size
    if kind == "gradient":
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
        return Image.fromarray(np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                                               np.full((h, w, 1), 128.0)], axis=2).astype(np.uint8))
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    if kind == "shapes":
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            d.ellipse([x0, y0, x0 + 30, y0 + 20], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    else:
        d.text((10, h // 2), "zorblax quuxfoo 123", fill=(0, 0, 0))
    return im


def image_ctx(n: int) -> BatchContext:
    return BatchContext("img", None, np.arange(n, dtype=np.int64), [f"r{i}" for i in range(n)], 0, None, {})


def text_ctx(n: int) -> BatchContext:
    return BatchContext("txt", "text", np.arange(n, dtype=np.int64), [f"t{i}" for i in range(n)], 0, None, {})


@pytest.fixture(scope="module")
def model() -> NudeNetModel:
    return NudeNetModel()


def image_stage(model: NudeNetModel, **options) -> AdultImageStage:
    stage = AdultImageStage(AdultImageConfig(**options))
    stage.model = model          # one loaded model for the module's tests (setup() loads the same file)
    return stage


# -- parity with NudeNet's own API ---------------------------------------------------------------

def _theirs(dets: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dets:
        out[d["class"]] = max(out.get(d["class"], 0.0), d["score"])
    return out


def _ours(dets: list[Detection]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dets:
        out[d.label] = max(out.get(d.label, 0.0), d.score)
    return out


@needs_photos
def test_batched_scores_match_nudedetector_detect_on_the_same_benign_photos(model):
    files = [FACES, PDQ_DATA / "reg-test-input" / "pen-and-coaster.png", *sorted(FACES.parent.glob("*.jpg"))[:4]]
    rgbs = [decode_image(f.read_bytes()) for f in files]
    ours = model.detect_batch(rgbs)                       # one network call for all of them
    reference = nudenet.NudeDetector()
    detected = 0
    for f, rgb, mine in zip(files, rgbs, ours):
        for theirs in (reference.detect(np.ascontiguousarray(rgb[:, :, ::-1])), reference.detect(str(f))):
            a, b = _ours(mine), _theirs(theirs)
            assert set(a) == set(b), f.name
            assert all(abs(a[k] - b[k]) <= 1e-3 for k in a), f.name
            mine_boxes = sorted((d.label, d.box) for d in mine)
            their_boxes = sorted((d["class"], tuple(d["box"])) for d in theirs)
            assert all(x[0] == y[0] and max(abs(p - q) for p, q in zip(x[1], y[1])) <= 1
                       for x, y in zip(mine_boxes, their_boxes)), f.name
        detected += bool(mine)
    assert detected >= 1            # the parity covers real detections, not only empty lists


def test_generated_images_score_nothing_and_agree_with_nudedetector(model):
    ims = [generated(k, seed=i) for i, k in enumerate(("gradient", "shapes", "noise", "text"))]
    rgbs = [np.asarray(im.convert("RGB")) for im in ims]
    reference = nudenet.NudeDetector()
    for rgb, mine in zip(rgbs, model.detect_batch(rgbs)):
        assert _ours(mine) == pytest.approx(_theirs(reference.detect(np.ascontiguousarray(rgb[:, :, ::-1]))), abs=1e-3)
        assert not set(_ours(mine)) & set(EXPOSED)


# -- modes and thresholds: decisions from an injected detector result -----------------------------

class FixedModel:
    """Stands in for the network: the detections given per image, in order."""

    def __init__(self, per_image: list[list[Detection]]) -> None:
        self.per_image = list(per_image)

    def detect_batch(self, rgbs):
        out, self.per_image = self.per_image[:len(rgbs)], self.per_image[len(rgbs):]
        return out


def stage_with(dets: list[list[Detection]], **options) -> tuple[AdultImageStage, pa.Table]:
    stage = AdultImageStage(AdultImageConfig(**options))
    stage.model = FixedModel(dets)
    blobs = [encode(generated("shapes", seed=i)) for i in range(len(dets))]
    return stage, pa.table({"image": blobs})


D = Detection
THREE = [[D("FEMALE_BREAST_EXPOSED", 0.8123, (0, 0, 5, 5)), D("FACE_FEMALE", 0.9, (0, 0, 5, 5))],
         [D("BUTTOCKS_EXPOSED", 0.41, (0, 0, 5, 5))],
         []]


def test_drop_mode_drops_at_the_threshold_and_names_class_and_score():
    stage, table = stage_with(THREE, threshold=0.6)
    v = stage.process(table, image_ctx(3))
    assert v.decision == ["dropped_adult", None, None]
    assert v.reason[0] == "adult_image FEMALE_BREAST_EXPOSED 0.812 >= 0.6"
    # evidence on every screened image; FACE_FEMALE is not a configured class by default
    assert v.evidence["adult_top"] == ["FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", None]
    assert v.evidence["adult_score"] == [0.812, 0.41, 0.0]
    assert v.evidence["adult_scores"] == [{"FEMALE_BREAST_EXPOSED": 0.812}, {"BUTTOCKS_EXPOSED": 0.41}, None]


def test_per_class_thresholds_and_configured_classes_decide():
    stage, table = stage_with(THREE, threshold=0.9, class_thresholds={"BUTTOCKS_EXPOSED": 0.4})
    assert stage.process(table, image_ctx(3)).decision == [None, "dropped_adult", None]
    stage, table = stage_with(THREE, classes=["FACE_FEMALE"], threshold=0.85)
    v = stage.process(table, image_ctx(3))
    assert v.decision == ["dropped_adult", None, None] and v.reason[0] == "adult_image FACE_FEMALE 0.900 >= 0.85"


def test_tag_and_score_modes_keep_every_image():
    stage, table = stage_with(THREE, mode="tag")
    v = stage.process(table, image_ctx(3))
    assert v.decision == [None] * 3 and v.evidence["adult_flagged"] == [True, False, False]
    stage, table = stage_with(THREE, mode="score")
    v = stage.process(table, image_ctx(3))
    assert v.decision == [None] * 3 and "adult_flagged" not in v.evidence and v.evidence["adult_score"][0] == 0.812


@needs_photos
def test_a_real_benign_detection_is_dropped_when_its_class_is_configured(model):
    # The drop path with the real network: a face (a harmless class) configured as if it were screened.
    stage = image_stage(model, classes=["FACE_MALE", "FACE_FEMALE"], threshold=0.3)
    v = stage.process(pa.table({"image": [FACES.read_bytes(), encode(generated("gradient"))]}), image_ctx(2))
    assert v.decision == ["dropped_adult", None]
    assert v.reason[0].startswith("adult_image FACE_MALE 0.6") and v.reason[0].endswith(">= 0.3")
    assert v.evidence["adult_score"][1] == 0.0


def test_image_config_is_validated():
    for bad in ({"classes": ["NOT_A_CLASS"]}, {"classes": []}, {"threshold": 0},
                {"class_thresholds": {"FACE_MALE": 0.5}}, {"mode": "delete"}):
        cfg = {"sources": [{"name": "i", "kind": "image_dir", "paths": ["/nonexistent"]}],
               "stages": [{"kind": "safety"}, {"kind": "adult_image", "config": bad}]}
        with pytest.raises(ConfigError, match="adult_image"):
            resolve_stages(parse_config(cfg))


# -- bad images ------------------------------------------------------------------------------------

def png_declaring(width: int, height: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_images_are_rejected_with_a_reason_and_odd_ones_are_screened(model):
    jpeg = encode(generated("shapes", size=(400, 300)), "JPEG")
    frames = [generated("shapes", seed=i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    rgba = generated("gradient").convert("RGBA")
    rgba.putalpha(90)
    blobs = [jpeg[: len(jpeg) // 2], b"not an image at all", b"", None, png_declaring(40_000, 40_000),
             gif.getvalue(), encode(generated("text").convert("L")), encode(rgba), encode(generated("gradient", size=(1, 3000)))]
    stage = image_stage(model)
    v = stage.process(pa.table({"image": pa.array(blobs, pa.binary())}), image_ctx(len(blobs)))
    assert v.decision[:5] == ["rejected"] * 5
    assert v.reason[:5] == ["adult_image: not a usable image (truncated)", "adult_image: not a usable image (not_an_image)",
                            "adult_image: no image bytes", "adult_image: no image bytes",
                            "adult_image: not a usable image (too_many_pixels)"]
    # animated (first frame), greyscale, translucent and a 1-pixel-wide strip are screened
    assert v.decision[5:] == [None] * 4 and v.evidence["adult_score"][5:] == [0.0] * 4


def test_text_records_pass_the_image_stage_and_image_records_pass_the_text_stage(model):
    table = pa.table({"text": ["zorblax", "plain"]})
    v = image_stage(model).process(table, text_ctx(2))
    assert v.decision == [None, None] and not v.evidence
    text_stage = AdultTextStage(AdultTextConfig(terms=("zorblax",))).setup()
    v = text_stage.process(pa.table({"image": [encode(generated("text"))]}), image_ctx(1))
    assert v.decision == [None] and not v.evidence


# -- the term list -------------------------------------------------------------------------------

def test_terms_match_whole_words_in_any_case_and_unicode_form():
    terms = TermList(["zorblax", "quux foo", "straße", "blörp"])
    assert terms.count("Zorblax ZORBLAX zorblax's xzorblax zorblaxes zorblax_1 ｚｏｒｂｌａｘ") == {"zorblax": 4}
    assert terms.count("QUUX   foo\nquux\tFOO quuxfoo") == {"quux foo": 2}
    assert terms.count("STRASSE Straße strasse") == {"strasse": 3}
    assert terms.count("BLÖRP blo\u0308rp") == {"blörp": 2}          # composed and decomposed umlaut
    assert terms.count("") == {} and terms.count("🙂🙂🙂") == {} and terms.count("שלום zorblax עולם") == {"zorblax": 1}


def test_the_longer_term_wins_and_the_shorter_one_still_counts_alone():
    terms = TermList(["red", "red fox"])
    assert terms.count("a red fox, a red hen, red foxes") == {"red fox": 1, "red": 2}


def test_term_ids_are_stable_and_do_not_spell_the_term():
    assert term_id("Zorblax") == term_id("zorblax") == term_id(" ZORBLAX ")
    assert "zorblax" not in term_id("zorblax") and len(term_id("zorblax")) == 10
    assert TermList(["b", "a"]).digest == TermList(["a", "b", "A"]).digest


def text_stage(**options) -> AdultTextStage:
    return AdultTextStage(AdultTextConfig(**options)).setup()


TEXTS = ["zorblax and ZORBLAX and quuxfoo", "one zorblax among many plain words here today", "nothing to see",
         "", None, "\x00\x01binary\x00zorblax\x7f", "زوربلاكس zorblax", "plain " * 1_700_000 + "zorblax zorblax"]


def test_text_drop_by_count_with_hashed_term_ids():
    v = text_stage(terms=("zorblax", "quuxfoo"), min_matches=2).process(pa.table({"text": TEXTS}), text_ctx(len(TEXTS)))
    assert v.decision == ["dropped_adult_text", None, None, None, None, None, None, "dropped_adult_text"]
    assert v.reason[0] == "adult_text.matches 3 >= 2" and v.reason[-1] == "adult_text.matches 2 >= 2"
    assert v.evidence["adult_matches"][:7] == [3, 1, 0, 0, 0, 1, 1]
    assert v.evidence["adult_terms"][0] == {term_id("zorblax"): 2, term_id("quuxfoo"): 1}
    assert "zorblax" not in json.dumps(v.evidence)


def test_text_density_tag_mode_and_plain_ids():
    v = text_stage(terms=("zorblax",), min_matches=None, min_density=0.2, mode="tag", term_ids="plain").process(
        pa.table({"text": TEXTS[:3]}), text_ctx(3))
    assert v.decision == [None] * 3
    assert v.evidence["adult_flagged"] == [True, False, False]
    assert v.evidence["adult_density"] == [0.4, 0.125, 0.0]
    assert v.evidence["adult_terms"] == [{"zorblax": 2}, {"zorblax": 1}, None]


def test_text_config_needs_one_list_and_a_rule(tmp_path):
    for bad in ({}, {"terms": ["a"], "terms_file": "t.txt"}, {"terms": ["a"], "min_matches": None}):
        with pytest.raises(ValueError):
            AdultTextConfig(**bad)
    with pytest.raises(ConfigError, match="not found"):
        text_stage(terms_file=str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ConfigError, match="empty"):
        text_stage(terms_file=str(tmp_path / "empty.txt"))


# -- end to end ------------------------------------------------------------------------------------

def test_a_run_screens_images_and_texts_and_the_ledger_holds_the_evidence(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, kind in enumerate(("gradient", "shapes", "noise")):
        generated(kind, seed=i).save(images / f"{kind}.png")
    (images / "broken.jpg").write_bytes(encode(generated("shapes"), "JPEG")[:300])
    if FACES.exists():
        (images / "street.jpg").write_bytes(FACES.read_bytes())
    texts = tmp_path / "texts"
    texts.mkdir()
    rows = [{"id": "a", "text": "zorblax quuxfoo zorblax"}, {"id": "b", "text": "a plain sentence"},
            {"id": "c", "text": "just one quuxfoo"}]
    (texts / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "terms.txt").write_text("# made-up benign terms\nzorblax\nquuxfoo\n")
    config = {
        "sources": [{"name": "img", "kind": "image_dir", "paths": [str(images)]},
                    {"name": "txt", "kind": "jsonl", "paths": [str(texts)], "id_field": "id"}],
        "output": {"dir": str(tmp_path / "out")},
        "stages": [{"kind": "safety"},
                   {"kind": "adult_image", "config": {"classes": ["FACE_MALE", *EXPOSED], "threshold": 0.5}},
                   {"kind": "adult_text", "config": {"terms_file": "terms.txt", "min_matches": 2}}],
    }
    (conf / "run.yaml").write_text(yaml.safe_dump(config))
    manifest = run_local(load_config(conf / "run.yaml"))           # terms.txt resolves beside run.yaml
    assert manifest["conservation"]["balanced"]
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    rec = {r["record_id"]: r for r in ledger.iter_rows(named=True)}
    ev = {k: json.loads(r["evidence"]) if r["evidence"] else None for k, r in rec.items()}
    assert rec["a"]["decision"] == "dropped_adult_text" and rec["a"]["reason"] == "adult_text.matches 3 >= 2"
    assert ev["a"] == {"adult_matches": 3, "adult_terms": {term_id("zorblax"): 2, term_id("quuxfoo"): 1}}
    assert rec["c"]["decision"] == "kept" and ev["c"]["adult_matches"] == 1 and ev["b"] == {"adult_matches": 0}
    for name in ("gradient", "shapes", "noise"):
        assert rec[f"img/{name}.png"]["decision"] == "kept" and ev[f"img/{name}.png"] == {"adult_score": 0.0}
    assert rec["img/broken.jpg"]["decision"] == "rejected"
    if FACES.exists():
        street = rec["img/street.jpg"]
        assert street["decision"] == "dropped_adult" and street["stage"] == "adult_image"
        assert street["reason"].startswith("adult_image FACE_MALE 0.6") and ev["img/street.jpg"]["adult_top"] == "FACE_MALE"
        assert set(ev["img/street.jpg"]["adult_scores"]) == {"FACE_MALE"}
    assert manifest["stages"]["adult_text"]["dropped"] == 1
