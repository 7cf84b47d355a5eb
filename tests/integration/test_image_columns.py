"""Parquet and Hugging Face datasets with an image column (bytes or the HF `Image` feature) end to end:
one row per image record, captions kept, exact and near image dedup, quarantine naming the file and row,
rejects with reasons, conservation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SourceError
from pipeline.safety.imagehash_stage import hash_image
from tests.conftest import REPO

IMAGES = REPO / "data_samples" / "images"


def image(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


# (image file or None, caption): a duplicate, a near copy, a non-image blob and a null image among them.
ROWS = [("field-0.png", "a synthetic field"), ("field-3.png", "another field"), ("field-3.png", "the same bytes again"),
        ("not-an-image.png", "not an image"), (None, "no image at all"), ("field-1.png", "a large field"),
        ("field-1-small.jpg", "a smaller copy")]


def write_parquet(path: Path, rows=ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"caption": pa.array([c for _, c in rows], pa.string()),
                      "img": pa.array([image(f) if f else None for f, _ in rows], pa.binary())})
    pq.write_table(table, path)
    return path


def pq_source(path: Path, **kw) -> dict:
    return {"name": "pq", "kind": "parquet", "paths": [str(path)], "image_column": "img", "text_field": "caption", **kw}


def write_hf(path: Path, rows=ROWS) -> Path:
    import datasets

    features = datasets.Features({"name": datasets.Value("string"), "photo": datasets.Image(),
                                  "caption": datasets.Value("string")})
    data = {"name": [f"n{i}" for i in range(len(rows))],
            "photo": [{"bytes": image(f), "path": f} if f else None for f, _ in rows],
            "caption": [c for _, c in rows]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(path))
    return path


def test_each_parquet_row_becomes_an_image_record_that_keeps_its_caption_and_duplicates_are_dropped(run_pipeline, tmp_path):
    src = write_parquet(tmp_path / "in" / "images.parquet")
    manifest, ledger, shards = run_pipeline([pq_source(src)])
    d = dict(zip(ledger["record_id"], ledger["decision"]))
    assert d == {"pq/images.parquet:0": "kept", "pq/images.parquet:1": "kept", "pq/images.parquet:2": "dropped_duplicate",
                 "pq/images.parquet:3": "rejected", "pq/images.parquet:4": "rejected", "pq/images.parquet:5": "kept",
                 "pq/images.parquet:6": "dropped_near_duplicate"}
    reasons = dict(zip(ledger["record_id"], ledger["reason"]))
    assert reasons["pq/images.parquet:2"] == "exact duplicate (identical image bytes)"
    assert reasons["pq/images.parquet:3"].startswith("not a usable image")
    assert reasons["pq/images.parquet:4"] == "image column is empty"
    dup = ledger.filter(pl.col("decision") == "dropped_duplicate")
    assert dup["duplicate_of"].to_list() == ["pq/images.parquet:1"]
    assert set(ledger["location"]) == {"images.parquet"}
    rows = shards.sort("record_id").to_dicts()
    assert shards.columns == ["record_id", "caption", "image"]
    assert [r["caption"] for r in rows] == ["a synthetic field", "another field", "a large field"]
    assert [r["image"] for r in rows] == [image("field-0.png"), image("field-3.png"), image("field-1.png")]
    kept = ledger.filter(pl.col("decision") == "kept").sort("record_id")
    assert kept["text_bytes"].to_list() == [len(r["image"]) for r in rows]
    assert manifest["conservation"]["balanced"]


def test_a_listed_image_in_a_parquet_column_is_quarantined_naming_the_file_and_row_and_its_bytes_reach_no_output(
        run_pipeline, tmp_path):
    src = write_parquet(tmp_path / "in" / "images.parquet")
    listed = image("field-3.png")
    lst = tmp_path / "list.csv"
    lst.write_text(f"hash,type,entry_id\n{hash_image(listed).pdq},pdq,PQ-1\n")
    out = tmp_path / "run"
    manifest, ledger, shards = run_pipeline([pq_source(src)], out=out, safety={"hash_lists": [{"name": "l", "path": str(lst)}]})
    q = ledger.filter(pl.col("decision") == "quarantined")
    assert sorted(q["record_id"]) == ["pq/images.parquet:1", "pq/images.parquet:2"]
    assert (q["hash_type"] == "pdq").all() and manifest["quarantine"]["count"] == 2
    incidents = [json.loads(x) for x in (out / "quarantine" / "incidents.jsonl").read_text().splitlines()]
    assert sorted((i["uri"], i["location"], i["row"]) for i in incidents) == [
        (str(src.resolve()), "images.parquet", 1), (str(src.resolve()), "images.parquet", 2)]
    assert "another field" not in shards["caption"].to_list() and manifest["conservation"]["balanced"]
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert listed[200:264] not in data and listed[-64:] not in data, f"listed image bytes in {f}"


def test_a_saved_hf_dataset_with_the_image_feature_is_read_as_image_records_with_its_id_field(run_pipeline, tmp_path):
    ds = write_hf(tmp_path / "in" / "photos")
    manifest, ledger, shards = run_pipeline([{"name": "hf", "kind": "hf_disk", "paths": [str(ds)], "image_column": "photo",
                                              "text_field": "caption", "id_field": "name"}])
    d = dict(zip(ledger["record_id"], ledger["decision"]))
    assert d == {"n0": "kept", "n1": "kept", "n2": "dropped_duplicate", "n3": "rejected", "n4": "rejected",
                 "n5": "kept", "n6": "dropped_near_duplicate"}
    reasons = dict(zip(ledger["record_id"], ledger["reason"]))
    assert reasons["n3"].startswith("not a usable image") and reasons["n4"] == "image column is empty"
    assert ledger.filter(pl.col("record_id") == "n2")["duplicate_of"].to_list() == ["n1"]
    rows = shards.sort("record_id").to_dicts()
    assert shards.columns == ["record_id", "name", "image", "caption"]
    assert [(r["name"], r["caption"]) for r in rows] == [("n0", "a synthetic field"), ("n1", "another field"),
                                                         ("n5", "a large field")]
    assert [r["image"] for r in rows] == [image("field-0.png"), image("field-3.png"), image("field-1.png")]
    assert manifest["conservation"]["balanced"]


def test_hf_load_over_parquet_files_reads_the_image_column_too(run_pipeline, tmp_path):
    src = write_parquet(tmp_path / "in" / "images.parquet", ROWS[:3])
    manifest, ledger, shards = run_pipeline([{"name": "hl", "kind": "hf_load", "builder": "parquet", "paths": [str(src)],
                                              "image_column": "img", "text_field": "caption"}])
    assert sorted(ledger["decision"]) == ["dropped_duplicate", "kept", "kept"]
    assert sorted(shards["image"].to_list()) == sorted([image("field-0.png"), image("field-3.png")])
    assert manifest["conservation"]["balanced"]


def test_an_image_struct_with_a_path_but_no_bytes_is_rejected_and_no_file_is_read(run_pipeline, tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"img": pa.array([{"bytes": image("field-0.png"), "path": "a.png"},
                                       {"bytes": None, "path": str(IMAGES / "field-3.png")},
                                       None], struct)})
    src = tmp_path / "in" / "structs.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    manifest, ledger, shards = run_pipeline([pq_source(src)])
    reasons = dict(zip(ledger["record_id"], ledger["reason"]))
    assert ledger["decision"].to_list() == ["kept", "rejected", "rejected"]
    assert reasons["pq/structs.parquet:1"] == "image column has no bytes"
    assert reasons["pq/structs.parquet:2"] == "image column is empty"
    assert shards["image"].to_list() == [image("field-0.png")] and manifest["conservation"]["balanced"]


def test_a_column_that_is_neither_binary_nor_an_image_struct_rejects_every_row_with_the_reason(run_pipeline, tmp_path):
    src = tmp_path / "in" / "text.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"img": ["a.png", "b.png"]}), src)
    manifest, ledger, _ = run_pipeline([pq_source(src)])
    assert ledger["decision"].to_list() == ["rejected", "rejected"]
    assert set(ledger["reason"]) == {"image column 'img' is not binary or an Image struct (string)"}
    assert manifest["conservation"]["balanced"]


def test_a_second_column_named_image_beside_the_image_column_fails_naming_the_file(run_pipeline, tmp_path):
    src = tmp_path / "in" / "both.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"img": [image("field-0.png")], "image": ["x"]}), src)
    with pytest.raises(SourceError, match="both.parquet: a column 'image' besides image_column 'img'"):
        run_pipeline([pq_source(src)])


def test_pii_scans_the_caption_of_an_image_column_source(tmp_path):
    from types import SimpleNamespace

    from pipeline.stages.pii import text_fields
    from pipeline.sources import is_image_source
    from tests.conftest import build_config

    cfg = build_config(tmp_path / "out", [pq_source(tmp_path), {"name": "plain", "kind": "parquet", "paths": [str(tmp_path)]}],
                       pii={"fields": ["alt"]})
    plan = SimpleNamespace(config=cfg, source=lambda name: next(s for s in cfg.sources if s.name == name))
    assert text_fields(plan.config, "pq") == ["caption", "alt"]
    assert [is_image_source(s) for s in cfg.sources] == [True, False]


def test_small_image_batches_give_the_same_decisions_and_shards_as_one_batch(run_pipeline, tmp_path):
    src = write_parquet(tmp_path / "in" / "images.parquet")
    _, one, shards_one = run_pipeline([pq_source(src)], out=tmp_path / "r1")
    _, many, shards_many = run_pipeline([pq_source(src)], out=tmp_path / "r2", units={"batch_bytes": 1024})
    assert one.select("record_id", "decision", "reason").equals(many.select("record_id", "decision", "reason"))
    assert shards_one.equals(shards_many)
