"""Issue #16 end to end: a list built from oriented files catches copies that lost the tag or gained a frame;
bad input (every orientation, broken EXIF, one colour) is handled and never quarantined."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
from click.testing import CliRunner
from PIL import Image, ImageFilter

from pipeline.cli import main
from pipeline.executor import run_local
from pipeline.safety.dihedral import EXIF_STORED_AS, apply
from tests.conftest import build_config
from tests.unit.safety.test_borders import framed
from tests.unit.safety.test_dihedral import picture
from tests.unit.safety.test_images import broken_exif_jpegs


def save(path, rgb: np.ndarray, tag: int | None = None, blur: float = 0.0, fmt: str = "JPEG") -> None:
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    kw = {"quality": 90} if fmt == "JPEG" else {}
    if tag is not None:
        exif = Image.Exif()
        exif[0x0112] = tag
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    path.write_bytes(buf.getvalue())


def test_a_built_list_catches_tag_less_and_framed_copies_and_bad_input_is_never_quarantined(tmp_path):
    a, b, c = picture(360, 480, 21), picture(400, 300, 22), picture(330, 500, 23)
    listed = tmp_path / "listed"
    listed.mkdir()
    save(listed / "a.jpg", apply(a, EXIF_STORED_AS[6]), tag=6)           # phone photos, stored sideways
    save(listed / "b.jpg", apply(b, EXIF_STORED_AS[8]), tag=8)
    save(listed / "c.jpg", c)
    save(listed / "flat.png", np.full((200, 200, 3), 40, np.uint8), fmt="PNG")
    out = CliRunner().invoke(main, ["hashlist", "build", "--type", "pdq", "--from", str(listed), "--out",
                                    str(tmp_path / "list.csv"), "--name", "demo"])
    assert out.exit_code == 0, out.output
    rows = (tmp_path / "list.csv").read_text().splitlines()
    assert rows[0] == "hash,type,entry_id,list,variant" and len(rows) == 1 + 5           # a, b twice; c once
    assert sum(r.endswith(",stored_pixels") for r in rows) == 2
    assert "with an EXIF orientation tag: 2" in out.output and "PDQ unhashable: 1" in out.output

    corpus = tmp_path / "in"
    corpus.mkdir()
    save(corpus / "a-tag-lost.jpg", apply(a, EXIF_STORED_AS[6]), blur=1.0)   # re-encoded without metadata
    save(corpus / "a-upright.jpg", a, blur=1.0)
    save(corpus / "b-tag-kept.jpg", apply(b, EXIF_STORED_AS[8]), tag=8, blur=1.0)
    save(corpus / "b-tag-lost.jpg", apply(b, EXIF_STORED_AS[8]))
    save(corpus / "c-framed.jpg", framed(c, 20, 20, 25, 25, (255, 255, 255)))
    save(corpus / "c-framed-tag-lost.jpg", apply(framed(c, 20, 20, 25, 25, (0, 0, 0)), "rotate90"))
    copies = {p.name for p in corpus.iterdir()}
    for k in range(8):
        save(corpus / f"unrelated-{k}.jpg", picture(300, 420, 300 + k), tag=k + 1)
    for name, data in broken_exif_jpegs().items():
        (corpus / f"broken-exif-{name.replace(' ', '-')}.jpg").write_bytes(data)
    for colour in (0, 255):
        save(corpus / f"flat-{colour}.png", np.full((240, 320, 3), colour, np.uint8), fmt="PNG")
        save(corpus / f"flat-{colour}-o6.jpg", np.full((240, 320, 3), colour, np.uint8), tag=6)
    for name, rgb in (("red", (200, 30, 30)), ("green", (30, 200, 30))):  # every one-colour pHash but black's is 8000...
        save(corpus / f"flat-{name}.png", np.full((240, 320, 3), rgb, np.uint8), fmt="PNG")
    (corpus / "not-an-image.jpg").write_bytes(b"\xff\xd8 not really")

    cfg = build_config(tmp_path / "out", [{"name": "img", "kind": "image_dir", "paths": [str(corpus)], "keep": "path"}],
                       safety={"hash_lists": [{"name": "demo", "path": str(tmp_path / "list.csv")}]})
    manifest = run_local(cfg)
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    decision = dict(zip(ledger["location"], ledger["decision"]))
    assert {k for k, v in decision.items() if v == "quarantined"} == copies
    assert decision["not-an-image.jpg"] == "rejected"
    assert all(decision[k] in ("kept", "dropped_near_duplicate", "dropped_duplicate") for k in decision
               if k.startswith(("unrelated", "broken-exif")))
    # One-colour images of different colours (and different files of one colour) are not near duplicates.
    assert all(v == "kept" for k, v in decision.items() if k.startswith("flat")) and manifest["near_dedup"]["images"][
        "too_flat_to_compare"] >= 6
    reasons = dict(zip(ledger["location"], ledger["reason"]))
    assert all("unhashable" in reasons[k] for k in decision if k.startswith("flat") and decision[k] == "kept")
    incidents = [json.loads(x) for x in (tmp_path / "out" / "quarantine" / "incidents.jsonl").read_text().splitlines()]
    by_loc = {i["location"]: i for i in incidents}
    assert manifest["quarantine"]["count"] == len(copies) == len(incidents)
    assert by_loc["a-tag-lost.jpg"]["list_variant"] == "stored_pixels" or by_loc["a-tag-lost.jpg"]["variant"] == "exif_orientation_6"
    assert by_loc["b-tag-kept.jpg"]["variant"] == "image" and by_loc["b-tag-kept.jpg"]["hashes"]["exif_orientation"] == 8
    assert by_loc["c-framed.jpg"]["variant"] == "trimmed" and by_loc["c-framed.jpg"]["hashes"]["border"] == [20, 20, 25, 25]
    assert by_loc["c-framed-tag-lost.jpg"]["variant"] == "trimmed+exif_orientation_6"
    # The manifest counts the matches per variant (no ids, no hashes), and `hygiene inspect` shows them.
    q = manifest["quarantine"]
    assert sum(q["by_variant"].values()) == len(incidents)
    assert q["by_variant"]["trimmed"] == 1 and q["by_variant"]["trimmed+exif_orientation_6"] == 1
    assert q["variant_matches"]["border_trimmed"] == 2 and q["variant_matches"]["dihedral"] == 0
    tag_lost = [by_loc[k] for k in ("a-tag-lost.jpg", "b-tag-lost.jpg", "c-framed-tag-lost.jpg")]
    assert q["variant_matches"]["exif_orientation"] + q["variant_matches"]["list_variant"] >= len(tag_lost)
    assert all(i["variant"] != "image" or i["list_variant"] == "stored_pixels" for i in tag_lost)
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "out"), "--no-verify"])
    text = " ".join(shown.output.split())  # the terminal view wraps long lines
    assert shown.exit_code == 0 and "matched through a variant: border trimmed 2," in text
    assert f"exif orientation {q['variant_matches']['exif_orientation']}" in text and "trimmed+exif_orientation_6 1" in text
    assert all(set(i["hashes"]) <= {"sha256", "md5", "sha1", "pdq", "pdq_quality", "phash", "exif_orientation", "border"}
               for i in incidents)


def test_with_the_variants_switched_off_the_old_escapes_come_back(tmp_path):
    a = picture(360, 480, 31)
    listed = tmp_path / "listed"
    listed.mkdir()
    save(listed / "a.jpg", apply(a, EXIF_STORED_AS[6]), tag=6)
    assert CliRunner().invoke(main, ["hashlist", "build", "--type", "pdq", "--from", str(listed), "--out",
                                     str(tmp_path / "list.csv"), "--no-variants"]).exit_code == 0
    corpus = tmp_path / "in"
    corpus.mkdir()
    save(corpus / "a-tag-lost.jpg", apply(a, EXIF_STORED_AS[6]), blur=1.0)
    save(corpus / "a-framed.jpg", framed(a, 30, 30, 40, 40, (255, 255, 255)))
    decisions = {}
    for on in (False, True):
        cfg = build_config(tmp_path / f"out-{on}", [{"name": "img", "kind": "image_dir", "paths": [str(corpus)]}],
                           safety={"hash_lists": [{"name": "demo", "path": str(tmp_path / "list.csv")}],
                                   "exif_variants": on, "trim_borders": on})
        run_local(cfg)
        ledger = pl.read_parquet(str(tmp_path / f"out-{on}" / "ledger" / "*.parquet"))
        decisions[on] = dict(zip(ledger["location"], ledger["decision"]))
    assert set(decisions[False].values()) == {"kept"}
    assert set(decisions[True].values()) == {"quarantined"}
