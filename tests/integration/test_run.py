"""Whole runs through the local executor: shards, ledger and manifest agree with each other."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from pipeline.audit.manifest import ledger_digest, validate_manifest
from pipeline.config import load_config
from pipeline.errors import RejectionsError, SourceError
from pipeline.executor import run_local
from tests.conftest import REPO, build_config

SAMPLE = REPO / "configs" / "sample.yaml"


def sample_config(out: Path, **changes):
    cfg = load_config(SAMPLE)
    data = cfg.model_dump(mode="json")
    data["output"]["dir"] = str(out)
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    from pipeline.config import parse_config

    return parse_config(data)


def file_digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    manifest = run_local(sample_config(out))
    return out, manifest


def test_the_sample_run_balances_and_matches_the_published_schema(sample_run):
    out, manifest = sample_run
    validate_manifest(json.loads((out / "manifest.json").read_text()))
    c = manifest["conservation"]
    assert c["balanced"]
    for totals in [*c["per_source"].values(), c["overall"]]:
        assert totals["input"] == totals["kept"] + totals["dropped"] + totals["quarantined"] + totals["rejected"]
    assert c["overall"]["dropped"] > 0 and c["overall"]["rejected"] > 0


def test_every_input_record_has_exactly_one_ledger_row(sample_run):
    out, manifest = sample_run
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    assert ledger.height == manifest["conservation"]["overall"]["input"] == manifest["ledger"]["rows"]
    assert ledger["record_id"].n_unique() == ledger.height - ledger.filter(pl.col("reason") == "duplicate record_id").height
    # 234 lines in part-0.jsonl of which 1 is blank, then the planted record; 105 in part-1; 30 in part-2.
    assert manifest["conservation"]["per_source"]["web"]["input"] == 233 + 1 + 105 + 30


def test_shards_hold_exactly_the_kept_records_and_the_ledger_holds_no_text(sample_run):
    out, _ = sample_run
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    kept = ledger.filter(pl.col("decision").is_in(["kept", "kept_redacted"]))
    assert sorted(shards["record_id"].to_list()) == sorted(kept["record_id"].to_list())
    assert "text" not in ledger.columns
    by_id = dict(zip(kept["record_id"], kept["content_sha256"]))
    redacted = set(kept.filter(pl.col("decision") == "kept_redacted")["record_id"])
    assert redacted
    for rid, text, image in zip(shards["record_id"], shards["text"], shards["image"]):
        content = text.encode() if text is not None else image   # image records: the digest is of the file's bytes
        # The ledger digests the input; a redacted record's output differs from it by the tags.
        assert (hashlib.sha256(content).hexdigest() == by_id[rid]) == (rid not in redacted)
        assert rid not in redacted or "<EMAIL_ADDRESS>" in text


def test_every_dropped_copy_names_a_kept_survivor_with_the_same_normalised_text(sample_run):
    out, _ = sample_run
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    kept_ids = set(ledger.filter(pl.col("decision").is_in(["kept", "kept_redacted"]))["record_id"])
    dropped = ledger.filter(pl.col("decision") == "dropped_duplicate")
    assert dropped.height > 0 and set(dropped["duplicate_of"]) <= kept_ids


def test_the_manifest_digests_match_the_files(sample_run):
    out, manifest = sample_run
    for section in ("shards", "ledger"):
        for f in manifest["outputs"][section]:
            p = out / f["path"]
            assert hashlib.sha256(p.read_bytes()).hexdigest() == f["sha256"] and p.stat().st_size == f["bytes"]
    assert ledger_digest(manifest["outputs"]["ledger"]) == manifest["ledger"]["sha256"]
    for inp in manifest["inputs"]:
        assert hashlib.sha256(Path(inp["path"]).read_bytes()).hexdigest() == inp["sha256"]


def test_rejections_carry_reasons_and_the_original_columns_are_kept(sample_run):
    out, manifest = sample_run
    reasons = manifest["rejections"]["by_reason"]
    assert {"malformed JSON", "invalid UTF-8", "expected 3 fields, found 2"} <= set(reasons)
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    assert {"record_id", "id", "text", "url", "lang", "title", "path"} <= set(shards.columns)


def test_shards_load_with_datasets_and_polars(sample_run):
    import datasets

    out, manifest = sample_run
    ds = datasets.load_dataset("parquet", data_files=str(out / "shards" / "*.parquet"), split="train",
                               cache_dir=str(out.parent / "hf_cache"))
    assert ds.num_rows == manifest["conservation"]["overall"]["kept"]
    assert pl.scan_parquet(str(out / "shards" / "*.parquet")).select(pl.len()).collect().item() == ds.num_rows


def test_the_same_input_and_config_give_byte_identical_shards_and_ledger(sample_run, tmp_path):
    out, _ = sample_run
    again = tmp_path / "again"
    run_local(sample_config(again), workers=1)
    assert file_digests(again) == file_digests(out)


def test_a_second_run_into_the_same_directory_replaces_it_and_chains_the_manifest(tmp_path):
    out = tmp_path / "run"
    first = run_local(sample_config(out))
    first_sha = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    second = run_local(sample_config(out))
    assert second["previous_manifest_sha256"] == first_sha
    assert file_digests(out) and not (out / "_work").exists()
    # Shards and ledger are the same bytes; the card and Croissant file name their own run.
    assert first["outputs"]["shards"] == second["outputs"]["shards"] and first["outputs"]["ledger"] == second["outputs"]["ledger"]


def test_fail_on_reject_publishes_nothing_and_names_the_report(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RejectionsError, match="rejections.parquet"):
        run_local(sample_config(out, errors={"fail_on_reject": True}))
    assert not (out / "manifest.json").exists() and not (out / "shards").exists()
    report = pl.read_parquet(out / "_work" / "rejections.parquet")
    assert report.height == 8 and "text" not in report.columns


def test_a_truncated_gzip_fails_the_run_by_default_naming_the_file(tmp_path):
    data = (REPO / "data_samples" / "web" / "part-1.jsonl.gz").read_bytes()
    bad = tmp_path / "in" / "cut.jsonl.gz"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2])
    src = [{"name": "web", "kind": "jsonl", "paths": [str(bad)]}]
    with pytest.raises(SourceError, match="cut.jsonl.gz"):
        run_local(build_config(tmp_path / "run", src))


def test_a_truncated_gzip_becomes_one_rejected_row_when_told_to_continue(tmp_path, run_pipeline):
    data = (REPO / "data_samples" / "web" / "part-1.jsonl.gz").read_bytes()
    bad = tmp_path / "in" / "cut.jsonl.gz"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2])
    good = tmp_path / "in" / "ok.parquet"
    src = [{"name": "web", "kind": "jsonl", "paths": [str(bad)]},
           {"name": "pq", "kind": "parquet", "paths": [str(good)]}]
    good.write_bytes(b"this is not parquet")
    manifest, ledger, shards = run_pipeline(src, errors={"on_file_error": "reject"})
    rejected = ledger.filter(pl.col("decision") == "rejected")
    assert rejected.filter(pl.col("reason").str.starts_with("unreadable input")).height == 2
    assert manifest["conservation"]["balanced"] and len(manifest["rejections"]["file_errors"]) == 2
    assert shards.height == ledger.filter(pl.col("decision") == "kept").height > 0


def test_an_input_path_that_does_not_exist_stops_before_any_work(tmp_path):
    src = [{"name": "web", "kind": "jsonl", "paths": [str(tmp_path / "missing.jsonl")]}]
    with pytest.raises(SourceError, match="no such file or directory"):
        run_local(build_config(tmp_path / "run", src))
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_an_empty_file_is_an_input_with_zero_records(tmp_path, run_pipeline):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "one.jsonl").write_bytes(b'{"text": "hello"}\n')
    manifest, ledger, shards = run_pipeline([{"name": "w", "kind": "jsonl", "paths": [str(tmp_path / "empty.jsonl"), str(tmp_path / "one.jsonl")]}])
    assert [i["records"] for i in manifest["inputs"]] == [0, 1]
    assert shards["text"].to_list() == ["hello"]


def test_a_reserved_record_id_column_is_a_clear_error(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"record_id": "x", "text": "t"}\n')
    with pytest.raises(SourceError, match="reserves"):
        run_local(build_config(tmp_path / "run", [{"name": "w", "kind": "jsonl", "paths": [str(tmp_path / "a.jsonl")]}]))


def test_any_number_of_units_gives_byte_identical_shards_and_ledger(tmp_path):
    src = shutil.copy(REPO / "data_samples" / "web" / "part-0.jsonl", tmp_path / "p.jsonl")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(src)], "id_field": "id"}]
    one = run_local(build_config(tmp_path / "one", sources))
    many = run_local(build_config(tmp_path / "many", sources, units={"target_bytes": 4096, "batch_bytes": 2048}))
    assert many["units"] > 10 and one["units"] == 1
    assert file_digests(tmp_path / "one") == file_digests(tmp_path / "many")
