"""WebDataset tar shards end to end: one sample per record, sidecars, rejects, quarantine inside a tar,
image dedup across shards, damaged shards, conservation and determinism."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import SourceError
from pipeline.safety.imagehash_stage import hash_image
from tests.conftest import REPO

IMAGES = REPO / "data_samples" / "images"


def image(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar shard with fixed member metadata, members in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def sample(key: str, img: str | None, meta: dict | bytes | None = None, caption: str | None = None) -> list:
    """The members of one sample: `key.png`, then `key.json` and `key.txt` when given."""
    out = [(f"{key}.png", image(img))] if img else []
    if meta is not None:
        out.append((f"{key}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode()))
    if caption is not None:
        out.append((f"{key}.txt", caption.encode()))
    return out


def wds(paths, **kw) -> dict:
    return {"name": "wds", "kind": "webdataset", "paths": [str(p) for p in paths], **kw}


@pytest.fixture
def shard(tmp_path) -> Path:
    """Three good samples: with both sidecars, with a caption only, with the image alone."""
    return write_tar(tmp_path / "in" / "shard-000.tar",
                     sample("s/000000", "field-0.png", {"width": 1, "label": "field"}, "a synthetic caption")
                     + sample("s/000001", "field-3.png", caption="another synthetic caption")
                     + sample("s/000002", "field-4.png"))


def test_each_sample_becomes_one_record_with_its_key_member_path_image_and_sidecars(run_pipeline, shard):
    manifest, ledger, shards = run_pipeline([wds([shard])])
    assert ledger["decision"].to_list() == ["kept"] * 3
    rows = shards.sort("record_id").to_dicts()
    assert [r["record_id"] for r in rows] == ["wds/shard-000.tar:0", "wds/shard-000.tar:1", "wds/shard-000.tar:2"]
    assert [r["key"] for r in rows] == ["s/000000", "s/000001", "s/000002"]
    assert [r["path"] for r in rows] == [f"shard-000.tar#s/00000{i}.png" for i in range(3)]
    assert [r["image"] for r in rows] == [image("field-0.png"), image("field-3.png"), image("field-4.png")]
    assert json.loads(rows[0]["json"]) == {"width": 1, "label": "field"} and rows[1]["json"] is None
    assert [r["txt"] for r in rows] == ["a synthetic caption", "another synthetic caption", None]
    assert set(ledger["location"]) == {"shard-000.tar"} and manifest["conservation"]["balanced"]


def test_keep_path_leaves_the_image_bytes_out_and_names_the_member(run_pipeline, shard):
    _, _, shards = run_pipeline([wds([shard], keep="path")])
    assert "image" not in shards.columns
    assert sorted(shards["path"]) == [f"shard-000.tar#s/00000{i}.png" for i in range(3)]


def test_id_field_key_makes_the_sample_key_the_record_id(run_pipeline, shard):
    _, ledger, shards = run_pipeline([wds([shard], id_field="key")])
    assert sorted(shards["record_id"]) == ["s/000000", "s/000001", "s/000002"]
    assert sorted(ledger["record_id"]) == ["s/000000", "s/000001", "s/000002"]


def test_samples_without_an_image_with_bad_json_or_a_repeated_key_are_rejected_with_the_reason(run_pipeline, tmp_path):
    tar = write_tar(tmp_path / "in" / "bad.tar",
                    sample("k/0", "field-0.png", {"ok": True})
                    + sample("k/1", None, {"only": "metadata"}, "caption without image")
                    + sample("k/2", "field-3.png", b'{"broken": ')
                    + sample("k/3", "field-4.png")
                    + sample("k/0", "field-5.png"))
    manifest, ledger, shards = run_pipeline([wds([tar])])
    reasons = dict(zip(ledger["record_id"], ledger["reason"]))
    decisions = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decisions == {"wds/bad.tar:0": "kept", "wds/bad.tar:1": "rejected", "wds/bad.tar:2": "rejected",
                         "wds/bad.tar:3": "kept", "wds/bad.tar:4": "rejected"}
    assert reasons["wds/bad.tar:1"] == "sample has no image member"
    assert reasons["wds/bad.tar:2"] == "sidecar .json is not valid JSON"
    assert reasons["wds/bad.tar:4"] == "repeated sample key"
    assert sorted(shards["key"]) == ["k/0", "k/3"] and manifest["conservation"]["balanced"]


def test_a_listed_image_inside_a_tar_is_quarantined_and_its_bytes_reach_no_output_file(run_pipeline, shard, tmp_path):
    listed = image("field-3.png")
    lst = tmp_path / "list.csv"
    lst.write_text(f"hash,type,entry_id\n{hash_image(listed).pdq},pdq,WDS-1\n")
    out = tmp_path / "run"
    manifest, ledger, shards = run_pipeline([wds([shard])], out=out, safety={"hash_lists": [{"name": "l", "path": str(lst)}]})
    decisions = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decisions["wds/shard-000.tar:1"] == "quarantined"
    assert manifest["quarantine"]["count"] == 1 and manifest["conservation"]["balanced"]
    assert "s/000001" not in shards["key"].to_list()
    (incident,) = [json.loads(x) for x in (out / "quarantine" / "incidents.jsonl").read_text().splitlines()]
    assert incident["location"] == "shard-000.tar#s/000001.png"
    assert incident["uri"] == f"{shard}#s/000001.png" and incident["entry_id"] == "WDS-1"
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert listed[200:264] not in data and listed[-64:] not in data, f"listed image bytes in {f}"


def test_a_listed_image_in_a_sample_the_reader_rejects_is_still_quarantined_with_an_incident(run_pipeline, tmp_path):
    listed = image("field-3.png")
    lst = tmp_path / "list.csv"
    lst.write_text(f"hash,type,entry_id\n{hash_image(listed).pdq},pdq,WDS-2\n")
    bad = write_tar(tmp_path / "in" / "bad.tar", sample("b/0", "field-0.png", b"{not json")
                    + sample("b/1", "field-3.png", b"{not json either"))
    out = tmp_path / "run"
    manifest, ledger, _ = run_pipeline([wds([bad])], out=out, safety={"hash_lists": [{"name": "l", "path": str(lst)}]})
    rows = {r["record_id"]: r for r in ledger.iter_rows(named=True)}
    assert rows["wds/bad.tar:0"]["decision"] == "rejected"            # broken sidecar, image not listed
    assert rows["wds/bad.tar:1"]["decision"] == "quarantined" and rows["wds/bad.tar:1"]["hash_entry"] == "WDS-2"
    (inc,) = [json.loads(x) for x in (out / "quarantine" / "incidents.jsonl").read_text().splitlines()]
    assert inc["uri"] == f"{bad}#b/1.png" and inc["location"] == "bad.tar#b/1.png"
    assert manifest["conservation"]["balanced"]


def test_an_identical_image_in_a_second_tar_is_dropped_as_a_duplicate_of_the_first(run_pipeline, tmp_path):
    a = write_tar(tmp_path / "in" / "a.tar", sample("x/0", "field-0.png") + sample("x/1", "field-3.png"))
    b = write_tar(tmp_path / "in" / "b.tar", sample("y/0", "field-4.png") + sample("y/1", "field-3.png", caption="c"))
    manifest, ledger, shards = run_pipeline([wds([a, b])])
    dup = ledger.filter(pl.col("decision") == "dropped_duplicate")
    assert dup["record_id"].to_list() == ["wds/b.tar:1"] and dup["duplicate_of"].to_list() == ["wds/a.tar:1"]
    assert sorted(shards["key"]) == ["x/0", "x/1", "y/0"] and manifest["conservation"]["balanced"]


def test_a_truncated_tar_fails_the_run_naming_the_file(run_pipeline, shard, tmp_path):
    cut = tmp_path / "in" / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(SourceError, match="cut.tar: cannot read past sample .* truncated or corrupt"):
        run_pipeline([wds([cut])])


def test_a_truncated_tar_with_on_file_error_reject_keeps_what_came_before_and_rejects_the_rest(run_pipeline, shard, tmp_path):
    data = shard.read_bytes()
    cut = tmp_path / "in" / "cut.tar"
    cut.write_bytes(data[: data.index(image("field-3.png")[:64]) + 100])  # inside the second sample's image
    manifest, ledger, shards = run_pipeline([wds([cut])], errors={"on_file_error": "reject"})
    decisions = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decisions == {"wds/cut.tar:0": "kept", "wds/cut.tar:1": "rejected"}
    reason = ledger.filter(pl.col("decision") == "rejected")["reason"][0]
    assert reason.startswith("unreadable input:") and "cut.tar" in reason
    assert shards["key"].to_list() == ["s/000000"] and manifest["conservation"]["balanced"]


def test_the_same_shards_give_byte_identical_output_shards_twice(run_pipeline, shard, tmp_path):
    other = write_tar(tmp_path / "in" / "shard-001.tar", sample("t/0", "field-5.png", {"n": 2}, "caption two"))
    run_pipeline([wds([tmp_path / "in"])], out=tmp_path / "r1")
    run_pipeline([wds([shard, other])], out=tmp_path / "r2")
    first = sorted((tmp_path / "r1" / "shards").glob("*.parquet"))
    second = sorted((tmp_path / "r2" / "shards").glob("*.parquet"))
    assert first and [f.name for f in first] == [f.name for f in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))


def test_pii_scans_the_caption_of_a_webdataset_sample_and_no_field_of_an_image_folder(tmp_path):
    from types import SimpleNamespace

    from pipeline.stages.pii import text_fields
    from tests.conftest import build_config

    cfg = build_config(tmp_path / "out", [wds([tmp_path]), {"name": "img", "kind": "image_dir", "paths": [str(IMAGES)]}],
                       pii={"fields": ["json"]})
    plan = SimpleNamespace(config=cfg, source=lambda name: next(s for s in cfg.sources if s.name == name))
    assert text_fields(plan.config, "wds") == ["txt", "json"] and text_fields(plan.config, "img") == []
