"""Whole runs over inputs that are too large to read: decompression bombs, huge records and cells,
and records with nothing to read. Each becomes ledger rows, never a machine out of memory."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SourceError
from pipeline.executor import run_local
from tests.conftest import REPO, build_config

datasets.disable_progress_bars()
IMAGES = REPO / "data_samples" / "images"
MIB = 1 << 20
# Small limits, so that what is over them stays small too.
LIMITS = {"max_record_bytes": 64 * 1024, "max_image_bytes": 10_000}


def gzip_bomb(path: Path, line_bytes: int, before: int = 2, after: int = 2) -> Path:
    """A .jsonl.gz: `before` records, one line of `line_bytes` repeated characters, `after` records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = "".join(json.dumps({"text": f"before {i}"}) + "\n" for i in range(before))
    tail = "".join(json.dumps({"text": f"after {i}"}) + "\n" for i in range(after))
    with open(path, "wb") as f:
        f.write(c.compress(head.encode() + b'{"text": "'))
        piece = b"a" * (4 * MIB)
        for i in range(0, line_bytes, len(piece)):
            f.write(c.compress(piece[: min(len(piece), line_bytes - i)]))
        f.write(c.compress(b'"}\n' + tail.encode()) + c.flush())
    return path


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def by_record(ledger: pl.DataFrame) -> dict[str, tuple[str, str | None]]:
    return {r["record_id"]: (r["decision"], r["reason"]) for r in ledger.iter_rows(named=True)}


def too_big(size: int, knob: str = "max_record_bytes", limit: int = 64 * 1024) -> str:
    return f"record of {size:,} bytes exceeds units.limits.{knob} ({limit:,})"


def test_a_gzip_bomb_line_is_one_rejected_ledger_row_and_never_reaches_a_shard(tmp_path, run_pipeline):
    bomb = gzip_bomb(tmp_path / "in" / "bomb.jsonl.gz", 20 * MIB)
    assert bomb.stat().st_size < 40_000

    manifest, ledger, shards = run_pipeline([{"name": "web", "kind": "jsonl", "paths": [str(bomb)]}],
                                            units={"limits": LIMITS})

    assert by_record(ledger)["web/bomb.jsonl.gz:2"] == ("rejected", too_big(20 * MIB + 12))
    assert sorted(shards["text"].to_list()) == ["after 0", "after 1", "before 0", "before 1"]
    assert manifest["conservation"]["balanced"] and manifest["conservation"]["overall"]["rejected"] == 1
    assert manifest["rejections"]["by_reason"] == {too_big(20 * MIB + 12): 1}


def test_a_file_past_its_decompression_budget_fails_the_run_naming_the_file_and_the_limit(tmp_path):
    bomb = gzip_bomb(tmp_path / "in" / "bomb.jsonl.gz", 20 * MIB)
    cfg = build_config(tmp_path / "run", [{"name": "web", "kind": "jsonl", "paths": [str(bomb)]}],
                       units={"limits": {**LIMITS, "ratio_exempt_bytes": 4 * MIB}})
    with pytest.raises(SourceError, match=r"bomb.jsonl.gz: decompresses to more than 4,194,304 bytes "
                                          r"\(over 100 times .*units.limits.max_compression_ratio"):
        run_local(cfg)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_with_on_file_error_reject_the_records_before_the_budget_stay_and_the_rest_is_one_row(tmp_path, run_pipeline):
    bomb = gzip_bomb(tmp_path / "in" / "bomb.jsonl.gz", 20 * MIB)
    manifest, ledger, shards = run_pipeline([{"name": "web", "kind": "jsonl", "paths": [str(bomb)]}],
                                            units={"limits": {**LIMITS, "max_decompressed_bytes": 4 * MIB}},
                                            errors={"on_file_error": "reject"})
    assert sorted(shards["text"].to_list()) == ["before 0", "before 1"]
    (rest,) = ledger.filter(pl.col("decision") == "rejected").iter_rows(named=True)
    assert rest["record_id"] == "web/bomb.jsonl.gz:2"
    assert rest["reason"].startswith(f"unreadable input: {bomb}: decompresses to more than 4,194,304 bytes "
                                     "(units.limits.max_decompressed_bytes)")
    assert manifest["conservation"]["balanced"] and ledger.height == 3


def test_every_kind_of_input_rejects_its_oversized_record_and_keeps_the_rest(tmp_path, run_pipeline):
    big = "b" * 100_000
    root = tmp_path / "in"
    root.mkdir()
    (root / "f.csv").write_text(f"text\nsmall csv\n{big}\nlast csv\n")
    pq.write_table(pa.table({"text": ["small parquet", big + " parquet", "last parquet"]}), root / "p.parquet")
    datasets.Dataset.from_dict({"text": ["small hf", big + " hf"]}).save_to_disk(str(root / "ds"))
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("small text file")
    (root / "docs" / "b.txt").write_text(big)
    (root / "imgs").mkdir()
    for name in ("field-1-small.jpg", "field-0.png"):  # 5.5 KB and 31 KB
        (root / "imgs" / name).write_bytes((IMAGES / name).read_bytes())
    write_tar(root / "s.tar", [("k/0.jpg", (IMAGES / "field-1-small.jpg").read_bytes()), ("k/0.txt", b"caption"),
                               ("k/1.png", (IMAGES / "field-3.png").read_bytes()), ("k/1.txt", b"too big image"),
                               ("k/2.jpg", (IMAGES / "field-1-small.jpg").read_bytes()),
                               ("k/2.txt", big.encode())])
    sources = [{"name": "csv", "kind": "csv", "paths": [str(root / "f.csv")]},
               {"name": "pq", "kind": "parquet", "paths": [str(root / "p.parquet")]},
               {"name": "hf", "kind": "hf_disk", "paths": [str(root / "ds")]},
               {"name": "txt", "kind": "text_dir", "paths": [str(root / "docs")]},
               {"name": "img", "kind": "image_dir", "paths": [str(root / "imgs")]},
               {"name": "wds", "kind": "webdataset", "paths": [str(root / "s.tar")]}]

    manifest, ledger, shards = run_pipeline(sources, units={"limits": LIMITS})

    rows = by_record(ledger)
    assert rows["csv/f.csv:1"] == ("rejected", too_big(100_001))  # the row and its newline
    assert rows["pq/p.parquet:1"] == ("rejected", too_big(100_008))
    assert rows["hf/ds:1"] == ("rejected", too_big(100_003))
    assert rows["txt/b.txt"] == ("rejected", too_big(100_000))
    assert rows["img/field-0.png"] == ("rejected", "image of 31,097 bytes exceeds units.limits.max_image_bytes (10,000)")
    assert rows["wds/s.tar:1"] == ("rejected", "member .png of 32,670 bytes exceeds units.limits.max_image_bytes (10,000)")
    assert rows["wds/s.tar:2"] == ("rejected", "member .txt of 100,000 bytes exceeds units.limits.max_record_bytes (65,536)")
    kept = ledger.filter(pl.col("decision") != "rejected")["record_id"].to_list()
    assert sorted(kept) == sorted(["csv/f.csv:0", "csv/f.csv:2", "pq/p.parquet:0", "pq/p.parquet:2", "hf/ds:0",
                                   "txt/a.txt", "img/field-1-small.jpg", "wds/s.tar:0"])
    assert sorted(shards["record_id"].to_list()) == sorted(r for r in kept if rows[r][0] == "kept")
    assert manifest["conservation"]["balanced"]


def test_one_word_punctuation_only_and_invisible_texts_are_handled(tmp_path, run_pipeline):
    texts = ["word", "word", "Word", "word!", "!!!", "???", "\u200b", "\u200b\u200b", "\x00", "\u00a0", "a", "x  y", "x y"]
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))

    manifest, ledger, shards = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(src)], "id_field": "id"}])

    rows = by_record(ledger)
    decision = {texts[int(rid)]: d for rid, (d, _) in rows.items()}
    # One-word texts are one shingle: the same word in other case or punctuation is a near duplicate.
    assert [rows[str(i)][0] for i in range(4)] == ["dropped_near_duplicate", "dropped_duplicate",
                                                   "dropped_near_duplicate", "kept"]
    # Texts empty once normalised for near dedup have no shingle: kept, never near duplicates of each other.
    assert decision["!!!"] == decision["???"] == decision["a"] == "kept"
    invisible = "no visible character (only whitespace, control or format characters)"
    assert [rows[str(i)] for i in (6, 7, 8)] == [("rejected", invisible)] * 3
    assert rows["9"] == ("rejected", "empty or whitespace-only text")
    assert (rows["11"][0], rows["12"][0]) == ("kept", "dropped_duplicate")  # the lower id survives
    assert manifest["conservation"]["balanced"] and shards.height == 5
