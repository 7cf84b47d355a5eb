"""`hygiene verify` catches every kind of tampering, naming the check and the file."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.audit.signing import generate_keypair
from pipeline.audit.verify import CouldNotVerify, verify_run
from pipeline.cli import main
from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from pipeline.fileio import sha256_path
from tests.conftest import REPO


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys"), "test")


def make_chain(root, key, pii: bool = True):
    """Three signed runs in one output location (without the PII stage when `pii` is false: the
    tampering tests do not need it, and it is the slowest stage)."""
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["signing"] = {"key": str(key)}
    if not pii:
        data["pii"] = None
    for i in range(3):
        data["output"]["dir"] = str(root / f"r{i}")
        run_local(parse_config(data))
    return root


@pytest.fixture(scope="module")
def chain_of_runs(tmp_path_factory, keys):
    return make_chain(tmp_path_factory.mktemp("loc"), keys[0])


@pytest.fixture
def runs(tmp_path, keys):
    """A fresh chain for a test to tamper with (links name absolute paths, so no copying)."""
    return make_chain(tmp_path / "loc", keys[0], pii=False)


def failures(report):
    return {c.name: c for c in report.failures}


def test_an_untouched_signed_run_verifies_with_its_public_key(chain_of_runs, keys):
    report = verify_run(chain_of_runs / "r2", [keys[1]])
    assert report.ok, [c.__dict__ for c in report.failures]
    assert {c.name for c in report.checks} >= {"schema", "digests", "merkle_root", "signature", "conservation", "chain"}


def test_a_flipped_byte_in_a_shard_is_caught_naming_the_shard(runs, keys):
    shard = next((runs / "r2" / "shards").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    f = failures(verify_run(runs / "r2", [keys[1]], check_chain=False))
    assert f["digests"].file == str(shard) and "differs from the manifest" in f["digests"].detail


def test_an_edited_number_in_the_manifest_breaks_the_signature_and_the_totals(runs, keys):
    p = runs / "r2" / "manifest.json"
    m = json.loads(p.read_text())
    m["conservation"]["overall"]["kept"] += 1
    p.write_text(json.dumps(m))
    f = failures(verify_run(runs / "r2", [keys[1]], check_chain=False))
    assert "edited after signing" in f["signature"].detail
    assert "differ from the ledger" in f["conservation"].detail


def test_a_deleted_ledger_row_is_caught_even_when_the_digests_are_forged(runs, keys):
    run = runs / "r2"
    part = run / "ledger" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(1), part)
    assert "digests" in failures(verify_run(run, [keys[1]], check_chain=False))
    # Forge the manifest's file digest and row count too: the ledger no longer balances with it.
    m = json.loads((run / "manifest.json").read_text())
    entry = m["outputs"]["ledger"][0]
    entry.update(sha256=sha256_path(part), bytes=part.stat().st_size, rows=entry["rows"] - 1)
    (run / "manifest.json").write_text(json.dumps(m))
    f = failures(verify_run(run, [keys[1]], check_chain=False))
    assert "signature" in f and "conservation" in f and "digests" not in f


def test_a_run_removed_from_the_middle_of_the_chain_is_caught(runs, keys):
    shutil.rmtree(runs / "r1")
    f = failures(verify_run(runs / "r2", [keys[1]]))
    assert "a run was deleted from the chain" in f["chain"].detail


def test_a_rewritten_earlier_manifest_breaks_the_chain(runs, keys):
    p = runs / "r0" / "manifest.json"
    p.write_text(p.read_text().replace('"resumed": false', '"resumed": true'))
    f = failures(verify_run(runs / "r2", [keys[1]]))
    assert "rewritten" in f["chain"].detail and f["chain"].file == str(p)


def test_a_wrong_public_key_fails_the_signature_check(runs, tmp_path):
    _, other_pub = generate_keypair(tmp_path / "other", "x")
    f = failures(verify_run(runs / "r2", [other_pub], check_chain=False))
    assert "no signature by key" in f["signature"].detail


def test_a_missing_shard_fails_and_names_it(runs, keys):
    shard = next((runs / "r2" / "shards").glob("*.parquet"))
    shard.unlink()
    f = failures(verify_run(runs / "r2", [keys[1]], check_chain=False))
    assert f["files"].file == str(shard)


def test_cli_exit_codes_separate_failed_from_could_not_verify(runs, keys, tmp_path):
    ok = CliRunner().invoke(main, ["verify", str(runs / "r2"), "--public-key", str(keys[1])])
    assert ok.exit_code == 0 and "verified" in ok.output
    shard = next((runs / "r2" / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"!")
    failed = CliRunner().invoke(main, ["verify", str(runs / "r2"), "--public-key", str(keys[1]), "--no-chain"])
    assert failed.exit_code == 1 and "FAIL digests" in failed.output and shard.name in failed.output
    missing_key = CliRunner().invoke(main, ["verify", str(runs / "r2"), "--public-key", str(tmp_path / "nope.pub")])
    assert missing_key.exit_code == 2 and "nope.pub" in missing_key.output
    m = json.loads((runs / "r1" / "manifest.json").read_text())
    (runs / "r1" / "manifest.json").write_text(json.dumps({**m, "schema_version": "7.0"}))
    unknown = CliRunner().invoke(main, ["verify", str(runs / "r1")])
    assert unknown.exit_code == 2 and "7.0" in unknown.output


def test_a_truncated_ledger_part_fails(runs, keys):
    part = runs / "r2" / "ledger" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    f = failures(verify_run(runs / "r2", [keys[1]], check_chain=False))
    assert f["digests"].file == str(part)


def test_an_unsigned_run_says_so_and_fails_only_when_a_key_is_demanded(tmp_path, keys):
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "u")
    manifest = run_local(parse_config(data))
    assert manifest["signature"]["signed"] is False and "unsigned" in manifest["signature"]["note"]
    assert verify_run(tmp_path / "u").ok
    assert "signature" in failures(verify_run(tmp_path / "u", [keys[1]]))


def test_no_manifest_cannot_be_verified(tmp_path):
    with pytest.raises(CouldNotVerify, match="not a finished run"):
        verify_run(tmp_path)


def test_a_run_published_over_an_older_one_keeps_the_chain_checkable(tmp_path, keys):
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["signing"] = {"key": str(keys[0])}
    data["output"]["dir"] = str(tmp_path / "same")
    first = run_local(parse_config(data))
    second = run_local(parse_config(data))
    assert second["previous_run"]["run_id"] == first["run_id"]
    assert (tmp_path / "same" / "history" / first["run_id"] / "manifest.json").exists()
    report = verify_run(tmp_path / "same", [keys[1]])
    assert report.ok, [c.__dict__ for c in report.failures]
