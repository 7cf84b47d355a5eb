"""The PII canary test through the real Prefect flow: planted personal data is redacted or dropped
and no detected value is left in anything the run writes: shards, ledger, manifest, report,
dataset card, logs, Prefect's storage and database."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from pipeline.audit.report import render_report
from pipeline.config import parse_config

pytestmark = pytest.mark.e2e
# Synthetic values that every default recognizer finds (RFC 5737 address, the documented
# Woolworth SSN, a Visa test card number, an ISO 13616 example IBAN, example.com mail).
CANARIES = {
    "EMAIL_ADDRESS": "canary.q7x2v@example.com",
    "US_SSN": "078-05-1121",
    "IP_ADDRESS": "192.0.2.173",
    "IBAN_CODE": "GB82WEST12345698765432",
    "CREDIT_CARD": "4111 1111 1111 1111",
}


def files_under(root: Path):
    for dirpath, _d, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


def test_no_detected_value_reaches_any_file_log_or_prefect_storage(tmp_path, caplog, capsys, monkeypatch):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    from flows.clean import run_flow

    monkeypatch.setenv("HYGIENE_PII_HMAC_KEY", "canary-test-key-0123456789")
    caplog.set_level(logging.DEBUG)
    (tmp_path / "text").mkdir()
    rows = [{"id": f"t{i}", "text": f"harmless record {i} with a few ordinary words"} for i in range(10)]
    rows += [{"id": "mail", "text": f"Write to {CANARIES['EMAIL_ADDRESS']} for details."},
             {"id": "ssn", "text": f"My social security number is {CANARIES['US_SSN']}."},
             {"id": "net", "text": f"The server at {CANARIES['IP_ADDRESS']} holds the files, IBAN {CANARIES['IBAN_CODE']}."},
             {"id": "card", "text": f"Pay with card {CANARIES['CREDIT_CARD']} today."}]
    (tmp_path / "text" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = parse_config({
        "sources": [{"name": "t", "kind": "jsonl", "paths": [str(tmp_path / "text")], "id_field": "id"}],
        "output": {"dir": str(tmp_path / "out")},
        "pii": {"actions": {"CREDIT_CARD": "drop", "EMAIL_ADDRESS": "hash"}},
    })
    manifest = run_flow(cfg)
    assert manifest["conservation"]["overall"]["kept_redacted"] == 3
    assert manifest["conservation"]["overall"]["dropped"] == 1
    (tmp_path / "report.html").write_text(render_report(tmp_path / "out"))

    needles = [v.encode() for v in CANARIES.values()] + [b"canary.q7x2v", b"canary-test-key"]
    roots = [tmp_path / "out", tmp_path / "report.html", Path(str(PREFECT_HOME.value()))]
    db = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    if db.startswith("sqlite"):
        roots.append(Path(db.split("///", 1)[-1]).parent)
    scanned = 0
    for root in roots:
        for f in ([root] if root.is_file() else files_under(root) if root.exists() else []):
            data = f.read_bytes()
            scanned += 1
            found = [n for n in needles if n in data]
            assert not found, f"a planted PII value was found in {f}"
    assert scanned > 10
    out, err = capsys.readouterr()
    for name, text in (("stdout", out), ("stderr", err), ("logs", caplog.text), ("flow result", json.dumps(manifest))):
        leaked = [k for k, v in CANARIES.items() if v in text]
        assert not leaked, f"planted {leaked} value(s) found in the {name}"
