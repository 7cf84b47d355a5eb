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

# A long-lived process (a served deployment, a Dask worker) runs many runs: instances are kept for
# the few most recent configs only, so models of old configs are freed.
KEEP_CONFIGS = 4
_INSTANCES: dict[tuple[str, str], Stage] = {}
_LOCK = threading.Lock()


def stage_instance(spec: StageSpec, plan) -> Stage:
    """The process's set-up instance of `spec` for the plan's config; StageError naming the stage
    when a user stage fails to set up. Runs of one config write to one output directory, which
    they hold locked, so an instance serves one run at a time; it is pointed at the current plan."""
    digest = plan.config.digest()
    key = (digest, spec.kind)
    with _LOCK:
        if key in _INSTANCES and _INSTANCES[key].plan.run_id != plan.run_id and spec.kind == "safety":
            del _INSTANCES[key]  # hash lists are loaded afresh for every run (they may have been updated)
        if key in _INSTANCES:
            _INSTANCES[key].plan = plan
        else:
            digests = list(dict.fromkeys(d for d, _ in _INSTANCES))
            for old in digests[: max(0, len(digests) - KEEP_CONFIGS + 1)]:
                for k in [k for k in _INSTANCES if k[0] == old]:
                    del _INSTANCES[k]
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


def release_all() -> None:
    """Forget every instance (their resources are freed with them)."""
    with _LOCK:
        _INSTANCES.clear()
