"""Quarantine end to end: planted matches never reach any file the run writes; fail closed before reading."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.executor import run_local
from pipeline.safety.hashlist import HashListError
from tests.conftest import build_config

CANARY = "CANARY-7f3a benign planted sentence that stands in for listed material"


def scan(root, needles) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            data = open(os.path.join(dirpath, f), "rb").read()
            hits += [f"{dirpath}/{f}" for n in needles if n in data]
    return hits


@pytest.fixture
def planted(tmp_path):
    rows = [{"id": f"ok{i}", "text": f"an ordinary record number {i} with some words"} for i in range(20)]
    rows.insert(7, {"id": "planted-1", "text": CANARY})
    rows.insert(12, {"id": "planted-2", "text": "  " + CANARY.replace(" ", "   ") + "\n"})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lst = tmp_path / "list.txt"
    lst.write_text("# type: sha256\n# version: 1\n# updated: 2026-11-20\n" + hashlib.sha256(CANARY.encode()).hexdigest() + "\n")
    return tmp_path, lst


def test_planted_matches_are_quarantined_and_no_byte_of_them_is_written(planted, caplog, capsys):
    tmp, lst = planted
    caplog.set_level(logging.DEBUG)
    cfg = build_config(tmp / "out", [{"name": "w", "kind": "jsonl", "paths": [str(tmp / "in")], "id_field": "id"}],
                       safety={"hash_lists": [{"name": "demo", "path": str(lst)}]})
    manifest = run_local(cfg)
    ledger = pl.read_parquet(str(tmp / "out" / "ledger" / "*.parquet"))
    q = ledger.filter(pl.col("decision") == "quarantined")
    assert sorted(q["record_id"]) == ["planted-1", "planted-2"] and set(q["stage"]) == {"safety"}
    assert manifest["conservation"]["overall"]["quarantined"] == 2 and manifest["conservation"]["balanced"]
    assert manifest["hash_lists"][0]["entries"] == {"sha256": 1} and manifest["quarantine"]["count"] == 2
    needles = [CANARY.encode(), CANARY[:24].encode(), b"stands in for listed"]
    assert scan(tmp / "out", needles) == []
    out, err = capsys.readouterr()
    assert not any(n.decode() in out + err + caplog.text for n in needles)
    qdir = tmp / "out" / "quarantine"
    assert stat.S_IMODE(qdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((qdir / "incidents.jsonl").stat().st_mode) == 0o600
    incident = json.loads((qdir / "incidents.jsonl").read_text().splitlines()[0])
    assert incident["human_viewed"] is False and incident["list"] == "demo" and incident["row"] == 7
    assert set(incident["hashes"]) >= {"sha256", "sha256_normalised"}


def test_a_stale_list_stops_the_run_before_any_record_is_read(planted):
    tmp, lst = planted
    lst.write_text(lst.read_text().replace("2026-11-20", "2020-01-01"))
    cfg = build_config(tmp / "out", [{"name": "w", "kind": "jsonl", "paths": [str(tmp / "in")]}],
                       safety={"hash_lists": [{"name": "demo", "path": str(lst), "max_age_days": 30}]})
    with pytest.raises(HashListError, match="maximum age"):
        run_local(cfg)
    assert not (tmp / "out" / "_work").exists() and not (tmp / "out" / "manifest.json").exists()


def test_a_waiver_lets_the_run_go_on_and_is_written_in_the_manifest(planted):
    tmp, lst = planted
    cfg = build_config(tmp / "out", [{"name": "w", "kind": "jsonl", "paths": [str(tmp / "in")]}],
                       safety={"hash_lists": [{"name": "demo", "path": str(tmp / "missing.txt")}],
                               "waivers": [{"list": "demo", "reason": "list server down, approved by T&S lead"}]})
    manifest = run_local(cfg)
    assert manifest["waivers"][0]["reason"].startswith("list server down")
    assert manifest["hash_lists"][0]["missing"] is True


def test_confirmed_matches_are_refused_at_ingest_next_time(planted):
    tmp, lst = planted
    confirmed = tmp / "confirmed.txt"
    src = [{"name": "w", "kind": "jsonl", "paths": [str(tmp / "in")], "id_field": "id"}]
    run_local(build_config(tmp / "o1", src, safety={"hash_lists": [{"name": "demo", "path": str(lst)}],
                                                    "confirmed_list": str(confirmed)}))
    assert stat.S_IMODE(confirmed.stat().st_mode) == 0o600
    # The next run has no external list at all: the confirmed list alone refuses both items.
    manifest = run_local(build_config(tmp / "o2", src, safety={"confirmed_list": str(confirmed)}))
    assert manifest["conservation"]["overall"]["quarantined"] == 2


def test_cli_hash_list_flag_and_incidents_summary(planted, tmp_path):
    tmp, lst = planted
    cfg = tmp / "c.yaml"
    cfg.write_text(f"sources: [{{name: w, kind: jsonl, paths: [{tmp / 'in'}], id_field: id}}]\noutput: {{dir: {tmp / 'out'}}}\n")
    r = CliRunner().invoke(main, ["run", str(cfg), "--hash-list", str(lst), "--no-prefect"])
    assert r.exit_code == 0, r.output
    s = CliRunner().invoke(main, ["incidents", str(tmp / "out")])
    assert "2 quarantined item(s)" in s.output and "planted-1" in s.output and CANARY[:20] not in s.output
