"""Set-up stage instances, one per process, run config and stage: loading a spaCy model or a hash
index takes seconds, so the unit tasks a worker process runs share one instance.

Usage::

    stage = stage_instance(spec, plan)      # built and set up on first use in this process
"""

from __future__ import annotations

import threading

from pipeline.core.registry import StageSpec
from pipeline.core.stage import Stage
from pipeline.core.verdicts import StageError

_INSTANCES: dict[tuple[str, str, str], Stage] = {}
_LOCK = threading.Lock()


def stage_instance(spec: StageSpec, plan) -> Stage:
    """The process's set-up instance of `spec` for the plan's run; StageError naming the stage when
    a user stage fails to set up."""
    key = (plan.run_id, plan.config.digest(), spec.kind)
    with _LOCK:
        if key not in _INSTANCES:
            stage = spec.build(plan.config)
            stage.plan = plan
            try:
                stage.setup()
            except Exception as e:
                if spec.origin == "built-in":
                    raise
                raise StageError(f"stage '{spec.kind}' failed in setup(): {e.__class__.__name__}: {e}") from e
            _INSTANCES[key] = stage
        return _INSTANCES[key]


def release(run_id: str) -> None:
    """Forget the instances of a finished run (their resources are freed with them)."""
    with _LOCK:
        for key in [k for k in _INSTANCES if k[0] == run_id]:
            del _INSTANCES[key]
