"""The pre-training sign-off gate: a policy file, evaluated against a verified run, signed by a person.

Usage::

    policy = load_policy("configs/policy-pretraining.yaml")
    result = evaluate(Path("runs/sample"), policy)           # every rule with value, threshold, pass/fail
    record = record_signoff(Path("runs/sample"), policy_path, result, "A. Reviewer", key_path)
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.audit.signing import cosign_envelope, key_id, load_private_key, sign_envelope, subjects_of
from pipeline.audit.verify import load_manifest, verify_run
from pipeline.errors import ConfigError
from pipeline.fileio import atomic_write_json, sha256_path

SIGNOFF_PREDICATE = "https://hygiene-pipeline.example.com/attestations/signoff/v1"
SIGNOFF_DIR = "signoffs"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HashListPolicy(_Strict):
    """Hash lists must have been checked, and be fresh."""

    required: bool = True
    max_age_days: int | None = Field(default=None, ge=0)


class QuarantinePolicy(_Strict):
    """Quarantined items must be zero unless acknowledged in writing."""

    allow_unresolved: bool = False
    acknowledgement: str | None = None


class PiiPolicy(_Strict):
    """Residual PII in the output, from the PII scan of the run's own shards."""

    require_scan: bool = False
    # The share of output records that may still hold personal data, compared with the residual
    # scan's upper confidence bound (a sampled scan), or its point rate for older manifests.
    max_residual_rate: float = Field(default=0.001, ge=0)
    # With PII routed by language, records in a language without a model get the pattern
    # recognizers only (names not searched). True: no kept record may have had that coverage.
    require_full_coverage: bool = False


class SignoffPolicy(_Strict):
    """A sign-off policy: every rule must pass for the run to be approved."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    required_stages: tuple[str, ...] = ("read", "exact_dedup", "near_dedup")
    hash_lists: HashListPolicy = HashListPolicy()
    quarantine: QuarantinePolicy = QuarantinePolicy()
    pii: PiiPolicy = PiiPolicy()
    max_drop_rate_per_source: float = Field(default=0.5, ge=0, le=1)
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)
    licenses_allowed: tuple[str, ...] | None = None
    require_signature: bool = True


def load_policy(path: str | Path) -> SignoffPolicy:
    """Load a policy file strictly (unknown keys are errors naming the file and key)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: policy file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return SignoffPolicy.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{p}: invalid sign-off policy: {problems}. See configs/policy-pretraining.yaml") from e


def _rule(rules: list, name: str, passed: bool, value, threshold, detail: str) -> None:
    rules.append({"rule": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail})


def evaluate(run_dir: Path, policy: SignoffPolicy, now: datetime | None = None) -> dict:
    """Evaluate every rule of `policy` on the run; nothing is written."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    now = now or datetime.now(timezone.utc)
    rules: list[dict] = []
    report = verify_run(run_dir)
    _rule(rules, "verify", report.ok, "ok" if report.ok else "; ".join(f"{f.name}: {f.detail}" for f in report.failures),
          "all checks pass", "hygiene verify: digests, Merkle root, conservation, chain")
    signed = manifest["signature"]["signed"]
    _rule(rules, "signature", signed or not policy.require_signature, signed, policy.require_signature,
          "the run attestation is signed" if signed else "the run is unsigned")
    stages = set(manifest["stages"])
    missing = [s for s in policy.required_stages if s not in stages]
    _rule(rules, "required_stages", not missing, sorted(stages), list(policy.required_stages),
          "missing: " + ", ".join(missing) if missing else "every required stage ran")

    lists = manifest.get("hash_lists", [])
    if policy.hash_lists.required:
        _rule(rules, "hash_lists_present", bool(lists), len(lists), ">= 1",
              "hash lists checked" if lists else "no prohibited-material hash list was checked in this run")
    if policy.hash_lists.max_age_days is not None and lists:
        ages = {h["name"]: (now - datetime.fromisoformat(h["updated_at"])).days for h in lists if h.get("updated_at")}
        stale = {k: v for k, v in ages.items() if v > policy.hash_lists.max_age_days}
        _rule(rules, "hash_lists_fresh", not stale, ages, policy.hash_lists.max_age_days,
              f"older than allowed: {stale}" if stale else "every list is fresh")

    q = manifest["conservation"]["overall"]["quarantined"]
    acknowledged = policy.quarantine.allow_unresolved and bool(policy.quarantine.acknowledgement)
    _rule(rules, "quarantine_resolved", q == 0 or acknowledged, q, 0,
          "no quarantined item" if q == 0 else ("acknowledged: " + policy.quarantine.acknowledgement if acknowledged
                                                 else f"{q} quarantined item(s) unresolved"))

    scan = (manifest.get("pii") or {}).get("residual_scan")
    if scan is None:
        _rule(rules, "residual_pii", not policy.pii.require_scan, None, policy.pii.max_residual_rate,
              "no residual-PII scan in this run" + (" (required)" if policy.pii.require_scan else " (not required)"))
    elif "upper_bound" in scan:
        # A sampled scan: the policy holds only if the rate's upper bound does, not the point estimate.
        bound = scan["upper_bound"]
        what = "every kept record" if scan.get("full") else f"a sample of {scan['records']:,} of {scan['population']:,}"
        _rule(rules, "residual_pii", bound <= policy.pii.max_residual_rate, bound, policy.pii.max_residual_rate,
              f"{scan['records_with_residual']} of {scan['records']} scanned records hold residual PII ({what}); "
              f"rate {scan['rate']:.4%}, {scan['confidence']:.0%} upper bound {bound:.4%}")
    else:  # manifests before the sampled scan: residual spans per scanned record
        rate = scan["spans"] / max(1, scan["records"])
        _rule(rules, "residual_pii", rate <= policy.pii.max_residual_rate, round(rate, 6), policy.pii.max_residual_rate,
              f"{scan['spans']} residual span(s) in {scan['records']} records")

    _coverage_rule(rules, manifest.get("pii"), policy.pii.require_full_coverage)

    worst = {}
    for name, t in manifest["conservation"]["per_source"].items():
        worst[name] = round((t["dropped"] + t["rejected"] + t["quarantined"]) / t["input"], 4) if t["input"] else 0.0
    over = {k: v for k, v in worst.items() if v > policy.max_drop_rate_per_source}
    _rule(rules, "max_drop_rate_per_source", not over, worst, policy.max_drop_rate_per_source,
          f"too many removed from: {sorted(over)}" if over else "every source within the limit")
    o = manifest["conservation"]["overall"]
    reject_rate = round(o["rejected"] / o["input"], 4) if o["input"] else 0.0
    _rule(rules, "max_reject_rate", reject_rate <= policy.max_reject_rate, reject_rate, policy.max_reject_rate,
          f"{o['rejected']} of {o['input']} records rejected")
    if policy.licenses_allowed is not None:
        lic = {s["name"]: s["license"] for s in manifest["sources"]}
        bad = {k: v for k, v in lic.items() if v not in policy.licenses_allowed}
        _rule(rules, "licenses_allowed", not bad, lic, list(policy.licenses_allowed),
              f"not on the allow list: {bad}" if bad else "every source's licence is allowed")
    return {"run_id": manifest["run_id"], "passed": all(r["passed"] for r in rules), "rules": rules}


def _coverage_rule(rules: list, pii: dict | None, required: bool) -> None:
    """`pii_coverage`: how many kept records were scanned by the pattern recognizers only (their
    language had no model); fails on any when the policy requires full coverage. Shown whenever
    the run routed PII by language, or the policy asks."""
    routed = pii is not None and "records_patterns_only" in pii
    if not routed and not required:
        return
    if pii is None:
        _rule(rules, "pii_coverage", False, None, 0, "no PII scan in this run (full coverage required)")
        return
    if not routed:
        _rule(rules, "pii_coverage", True, 0, 0, "every record went through the default model "
              f"({(pii.get('engine') or {}).get('language', '?')}); PII was not routed by language")
        return
    n = pii["records_patterns_only"]
    per = pii.get("records_patterns_only_by_language") or {}
    detail = (f"{n} kept record(s) scanned by the pattern recognizers only, names not searched"
              + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(per.items())) + ")" if per else "")
              if n else "every kept record was scanned with an NER model for its language")
    _rule(rules, "pii_coverage", n == 0 or not required, n, 0 if required else None,
          detail + ("" if required or not n else " (full coverage not required)"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "approver"


def record_signoff(run_dir: Path, policy_path: Path, result: dict, approver: str, key_path: str | None,
                   note: str | None = None, now: datetime | None = None) -> dict:
    """Write the sign-off record (and, with a key, its signed envelope and a co-signature on the
    run's attestation). Returns the record."""
    run_dir = Path(run_dir)
    now = now or datetime.now(timezone.utc)
    manifest = load_manifest(run_dir)
    record = {
        "kind": "hygiene-signoff",
        "version": 1,
        "run_id": manifest["run_id"],
        "manifest_sha256": sha256_path(run_dir / "manifest.json"),
        "approver": approver,
        "at": now.isoformat(timespec="seconds"),
        "policy": {"path": str(policy_path), "sha256": sha256_path(policy_path),
                   "content": load_policy(policy_path).model_dump(mode="json")},
        "passed": result["passed"],
        "rules": result["rules"],
        "note": note,
        "signed_by": None,
    }
    stem = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{_safe(approver)}"
    out = run_dir / SIGNOFF_DIR
    if key_path:
        key = load_private_key(key_path)
        record["signed_by"] = key_id(key.public_key())
        statement = {"_type": "https://in-toto.io/Statement/v1",
                     "subject": [{"name": "manifest.json", "digest": {"sha256": record["manifest_sha256"]}},
                                 *subjects_of(manifest)],
                     "predicateType": SIGNOFF_PREDICATE, "predicate": record}
        atomic_write_json(out / f"{stem}.dsse.json", sign_envelope(statement, key))
        attestation = run_dir / (manifest["signature"]["attestation"] or "")
        if manifest["signature"]["signed"] and attestation.is_file() and record["passed"]:
            # The approver co-signs the run attestation itself: a second DSSE signature.
            envelope = json.loads(attestation.read_text())
            if record["signed_by"] not in {s["keyid"] for s in envelope["signatures"]}:
                atomic_write_json(attestation, cosign_envelope(envelope, key))
    atomic_write_json(out / f"{stem}.json", record)
    return record


def latest_signoff(run_dir: Path) -> dict | None:
    """The newest sign-off record of a run, if any."""
    records = sorted((Path(run_dir) / SIGNOFF_DIR).glob("*.json"))
    records = [r for r in records if not r.name.endswith(".dsse.json")]
    return json.loads(records[-1].read_text()) if records else None

