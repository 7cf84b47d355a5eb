"""The sign-off gate as a Prefect flow: automatic checks, then a pause until a person approves.

Usage (a scheduled job that stops at the gate)::

    from flows.gate import clean_and_gate
    clean_and_gate(config_path="configs/sample.yaml", policy_path="configs/policy-dedup-only.yaml")
    # ... the run pauses; a reviewer resumes it in the Prefect UI (or resume_flow_run) with
    # {"approve": true, "approver": "A. Reviewer", "note": "ticket DATA-42"}
"""

from __future__ import annotations

from pathlib import Path

from flows.settings import apply_offline_defaults

apply_offline_defaults()

from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.flow_runs import pause_flow_run  # noqa: E402
from prefect.input import RunInput  # noqa: E402

from pipeline.audit.signing import signing_key_path  # noqa: E402
from pipeline.audit.signoff import evaluate, load_policy, record_signoff  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.storage import writable_run  # noqa: E402


class Approval(RunInput):
    """What the reviewer enters to resume the gate."""

    approve: bool
    approver: str
    note: str = ""


@flow(name="hygiene-signoff-gate")
def signoff_gate(run_dir: str, policy_path: str, approver_key: str | None = None, timeout_seconds: int = 86_400) -> dict:
    """Evaluate the policy; if it passes, wait for a human approval, then record the sign-off."""
    with writable_run(run_dir) as local:  # a run on a store: a local copy; the record is uploaded
        return _gate(local, policy_path, approver_key, timeout_seconds)


def _gate(run_dir: Path, policy_path: str, approver_key: str | None, timeout_seconds: int) -> dict:
    """The gate on a local run directory (the pause blocks here, the copy kept meanwhile)."""
    logger = get_run_logger()
    result = evaluate(Path(run_dir), load_policy(policy_path))
    create_table_artifact(key="hygiene-signoff-rules", description="sign-off rules (values and thresholds)",
                          table=[{k: str(v) for k, v in r.items()} for r in result["rules"]])
    if not result["passed"]:
        failed = [r["rule"] for r in result["rules"] if not r["passed"]]
        logger.warning("automatic checks failed (%s): not asking for approval", ", ".join(failed))
        record = record_signoff(Path(run_dir), Path(policy_path), result, "automatic checks", None,
                                note="failed before human review")
        return {"passed": False, "failed_rules": failed, "run_id": record["run_id"]}
    logger.info("automatic checks passed; waiting for a reviewer's approval")
    approval = pause_flow_run(wait_for_input=Approval, timeout=timeout_seconds, poll_interval=2)
    human = {"rule": "human_approval", "passed": bool(approval.approve), "value": approval.approver,
             "threshold": "approve", "detail": approval.note or ("approved" if approval.approve else "rejected")}
    result = {**result, "rules": [*result["rules"], human], "passed": result["passed"] and approval.approve}
    record = record_signoff(Path(run_dir), Path(policy_path), result, approval.approver,
                            signing_key_path(approver_key) if approver_key else None, note=approval.note or None)
    return {"passed": record["passed"], "approver": record["approver"], "run_id": record["run_id"]}


@flow(name="hygiene-clean-and-gate")
def clean_and_gate(config_path: str, policy_path: str, approver_key: str | None = None) -> dict:
    """Clean with the config, then stop at the sign-off gate."""
    from flows.clean import clean_flow, task_runner_for

    cfg = load_config(config_path)
    clean_flow.with_options(task_runner=task_runner_for(cfg))(cfg.model_dump(mode="json"))
    return signoff_gate(cfg.output.dir, policy_path, approver_key)
