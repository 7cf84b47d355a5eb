"""Image corpora end to end: safe decoding, PDQ matching on Meta's public benign vectors, quarantine
without copies, image dedup, and the hashing commands."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.executor import run_local
from pipeline.safety.imagehash_stage import hash_image
from tests.conftest import REPO, SHARED_DATA, build_config

BRIDGE = SHARED_DATA / "hashmatch" / "pdq-vectors" / "files" / "pdq" / "data" / "bridge-mods"
needs_vectors = pytest.mark.skipif(not BRIDGE.exists(), reason="../shared/data/hashmatch/pdq-vectors is not present")


@needs_vectors
def test_every_benign_edit_of_the_bridge_is_quarantined_against_the_original_and_never_copied(tmp_path):
    corpus = tmp_path / "in"
    shutil.copytree(BRIDGE, corpus)
    (corpus / "aaa-orig.jpg").unlink()                 # only edits reach the pipeline
    shutil.copy(REPO / "data_samples" / "images" / "field-0.png", corpus / "unrelated.png")
    original = hash_image((BRIDGE / "aaa-orig.jpg").read_bytes())
    lst = tmp_path / "bridge.csv"
    lst.write_text(f"hash,type,entry_id\n{original.pdq},pdq,BRIDGE-1\n")
    cfg = build_config(tmp_path / "out", [{"name": "img", "kind": "image_dir", "paths": [str(corpus)]}],
                       safety={"hash_lists": [{"name": "bridge", "path": str(lst)}]})
    manifest = run_local(cfg)
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    decisions = dict(zip(ledger["location"], ledger["decision"]))
    edits = [p.name for p in BRIDGE.iterdir() if p.name != "aaa-orig.jpg"]
    assert all(decisions[e] == "quarantined" for e in edits), decisions
    assert decisions["unrelated.png"] == "kept"
    q = ledger.filter(pl.col("decision") == "quarantined")
    assert (q["hash_type"] == "pdq").all() and (q["hash_distance"] <= 31).all()
    # No byte sequence of any quarantined image appears in anything the run wrote.
    blobs = [(BRIDGE / e).read_bytes() for e in edits]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(b[1000:1064] in data for b in blobs), f"image bytes leaked into {path}"
    assert manifest["quarantine"]["count"] == len(edits)


def test_the_sample_images_are_deduplicated_and_the_broken_one_rejected(tmp_path):
    cfg = build_config(tmp_path / "out", [{"name": "img", "kind": "image_dir", "paths": [str(REPO / "data_samples" / "images")],
                                           "keep": "path"}])
    run_local(cfg)
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    d = dict(zip(ledger["location"], ledger["decision"]))
    # Identical bytes: the lowest record id survives; near copies: the largest file survives.
    assert d["field-2-copy.png"] == "kept" and d["field-2.png"] == "dropped_duplicate"
    assert d["field-1.png"] == "kept" and d["field-1-small.jpg"] == "dropped_near_duplicate"
    assert d["not-an-image.png"] == "rejected"
    reason = ledger.filter(pl.col("location") == "not-an-image.png")["reason"][0]
    assert reason.startswith("not a usable image")
    shards = pl.read_parquet(str(tmp_path / "out" / "shards" / "*.parquet"))
    assert "image" not in shards.columns and set(shards["path"]) == {k for k, v in d.items() if v == "kept"}


def test_hash_command_and_list_builder_agree(tmp_path):
    img = REPO / "data_samples" / "images" / "field-3.png"
    out = CliRunner().invoke(main, ["hash", "--json", str(img)])
    assert out.exit_code == 0
    h = json.loads(out.output)
    assert len(h["pdq"]) == 64 and h["pdq_quality"] >= 50 and len(h["phash"]) == 16
    built = CliRunner().invoke(main, ["hashlist", "build", "--type", "pdq", "--from", str(img.parent), "--out", str(tmp_path / "l.csv")])
    assert built.exit_code == 0 and "skipped" in built.output and "not-an-image.png" in built.output
    assert f"{h['pdq']},pdq,field-3.png" in (tmp_path / "l.csv").read_text()
