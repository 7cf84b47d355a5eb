"""The sign-off gate: policy rules with values and thresholds, a signed record, a co-signed attestation."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.audit.signing import generate_keypair, load_public_key, verify_envelope
from pipeline.audit.signoff import evaluate, latest_signoff, load_policy
from pipeline.audit.verify import verify_run
from pipeline.cli import main
from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from tests.conftest import REPO

PRETRAINING = REPO / "configs" / "policy-pretraining.yaml"
DEDUP = REPO / "configs" / "policy-dedup-only.yaml"


@pytest.fixture
def signed_run(tmp_path):
    pipeline_key, pipeline_pub = generate_keypair(tmp_path / "keys", "pipeline")
    approver_key, approver_pub = generate_keypair(tmp_path / "keys", "approver")
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "run")
    data["signing"] = {"key": str(pipeline_key)}
    run_local(parse_config(data))
    return tmp_path / "run", (pipeline_key, pipeline_pub), (approver_key, approver_pub)


def rules(result):
    return {r["rule"]: r for r in result["rules"]}


@pytest.fixture
def dedup_policy(tmp_path):
    """The dedup-only gate, with the sample's two planted quarantine items acknowledged."""
    p = tmp_path / "policy.yaml"
    p.write_text(DEDUP.read_text() + "quarantine:\n  allow_unresolved: true\n"
                 "  acknowledgement: 'sample data - planted stand-ins, reported by T&S on 2026-11-22'\n")
    return p


def test_the_pretraining_policy_fails_on_unresolved_quarantine_and_says_why(signed_run):
    run, _, _ = signed_run
    result = evaluate(run, load_policy(PRETRAINING))
    r = rules(result)
    assert result["passed"] is False and r["quarantine_resolved"]["passed"] is False
    assert r["quarantine_resolved"]["value"] == 2 and r["hash_lists_present"]["passed"]
    assert r["verify"]["passed"] and r["signature"]["passed"] and r["licenses_allowed"]["passed"]
    assert r["max_reject_rate"]["value"] == round(8 / 471, 4) and r["max_reject_rate"]["threshold"] == 0.05


def test_a_passing_signoff_is_recorded_signed_and_co_signs_the_run(signed_run, dedup_policy):
    run, pipeline, approver = signed_run
    result = CliRunner().invoke(main, ["signoff", str(run), "--policy", str(dedup_policy), "--approver", "A. Reviewer",
                                       "--key", str(approver[0]), "--note", "ticket DATA-42"])
    assert result.exit_code == 0, result.output
    record = latest_signoff(run)
    assert record["passed"] and record["approver"] == "A. Reviewer" and record["note"] == "ticket DATA-42"
    assert len(record["policy"]["sha256"]) == 64 and record["policy"]["content"]["name"] == "dedup-gate"
    assert "acknowledged" in {r["rule"]: r for r in record["rules"]}["quarantine_resolved"]["detail"]
    envelope = json.loads(next((run / "signoffs").glob("*.dsse.json")).read_text())
    statement = verify_envelope(envelope, [load_public_key(approver[1])])
    assert statement["predicate"]["run_id"] == record["run_id"]
    # The run's attestation now carries both signatures: the pipeline's and the approver's.
    assert verify_run(run, [pipeline[1], approver[1]]).ok


def test_a_failing_policy_exits_1_listing_the_failing_rules(signed_run):
    run, _, approver = signed_run
    result = CliRunner().invoke(main, ["signoff", str(run), "--policy", str(PRETRAINING), "--approver", "B",
                                       "--key", str(approver[0])])
    assert result.exit_code == 1 and "FAIL quarantine_resolved" in result.output
    assert latest_signoff(run)["passed"] is False
    assert verify_run(run, [approver[1]]).ok is False  # a failed sign-off does not co-sign the run


def test_a_tampered_run_cannot_be_signed_off(signed_run, dedup_policy):
    run, _, _ = signed_run
    shard = next((run / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")
    assert rules(evaluate(run, load_policy(dedup_policy)))["verify"]["passed"] is False


def test_a_policy_with_an_unknown_key_is_a_clear_error(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: x\nmax_drop_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"p.yaml.*max_drop_rate"):
        load_policy(p)


def test_licences_off_the_allow_list_fail(signed_run, tmp_path):
    run, _, _ = signed_run
    p = tmp_path / "lic.yaml"
    p.write_text("version: 1\nname: lic\nhash_lists: {required: false}\nlicenses_allowed: [CC0-1.0]\n")
    r = rules(evaluate(run, load_policy(p)))["licenses_allowed"]
    assert r["passed"] is False and "web" in r["detail"]


def test_hash_list_freshness_is_judged_at_sign_off_time(tmp_path):
    from datetime import datetime, timedelta, timezone

    lst = tmp_path / "l.txt"
    updated = (datetime.now(timezone.utc) - timedelta(days=10)).strftime("%Y-%m-%d")
    lst.write_text(f"# type: sha256\n# updated: {updated}\n" + "ab" * 32 + "\n")
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "run")
    data["safety"]["hash_lists"] = [{"name": "ten-days-old", "path": str(lst)}]
    run_local(parse_config(data))
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nname: fresh\nrequire_signature: false\nhash_lists: {required: true, max_age_days: 5}\n")
    r = rules(evaluate(tmp_path / "run", load_policy(policy)))
    assert r["hash_lists_present"]["passed"] and r["hash_lists_fresh"]["passed"] is False
    assert r["hash_lists_fresh"]["value"] == {"ten-days-old": 10}
