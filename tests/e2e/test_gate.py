"""The Prefect sign-off gate pauses for a human and records the approval; artifacts hold counts only."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeline.audit.signoff import latest_signoff
from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def paused_run_id(flow_name: str, timeout: float = 120):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName

    async def find():
        async with get_client() as c:
            runs = await c.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))))
            return [r.id for r in runs if r.name]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = asyncio.run(find())
        if ids:
            return ids[0]
        time.sleep(1)
    raise AssertionError("the gate never paused")


def test_the_gate_waits_for_a_reviewer_and_records_the_approval(tmp_path):
    from prefect.flow_runs import resume_flow_run

    from flows.gate import signoff_gate

    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "run")
    data["signing"] = {"key": None}
    run_local(parse_config(data))
    policy = REPO / "configs" / "policy-dedup-only.yaml"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy.read_text().replace("require_signature: true", "require_signature: false")
                           + "quarantine: {allow_unresolved: true, acknowledgement: 'planted sample items, reported'}\n")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", signoff_gate(str(tmp_path / "run"), str(policy_file))))
    t.start()
    resume_flow_run(paused_run_id("hygiene-signoff-gate"),
                    run_input={"approve": True, "approver": "A. Reviewer", "note": "ticket DATA-7"})
    t.join(timeout=180)
    assert out["r"]["passed"] is True and out["r"]["approver"] == "A. Reviewer"
    record = latest_signoff(tmp_path / "run")
    assert record["passed"] and record["note"] == "ticket DATA-7"
    assert {"rule": "human_approval", "passed": True, "value": "A. Reviewer", "threshold": "approve",
            "detail": "ticket DATA-7"} in record["rules"]


def test_the_gate_does_not_ask_when_the_automatic_checks_fail(tmp_path):
    from flows.gate import signoff_gate

    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "run")
    run_local(parse_config(data))
    result = signoff_gate(str(tmp_path / "run"), str(REPO / "configs" / "policy-pretraining.yaml"))
    assert result["passed"] is False and "quarantine_resolved" in result["failed_rules"]


def test_the_flow_publishes_summary_artifacts_without_content(tmp_path):
    from prefect.client.orchestration import get_client

    from flows.clean import run_flow

    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(tmp_path / "run")
    manifest = run_flow(parse_config(data))

    async def artifacts():
        async with get_client() as c:
            return await c.read_artifacts()

    arts = [a for a in asyncio.run(artifacts()) if a.key in ("hygiene-run-summary", "hygiene-sources")]
    assert any(manifest["run_id"] in str(a.data) for a in arts if a.key == "hygiene-run-summary")
    assert any(a.key == "hygiene-sources" for a in arts)
    sample_text = (REPO / "data_samples" / "notes" / "note-00.txt").read_text()[:30]
    assert all(sample_text not in str(a.data) for a in arts)
