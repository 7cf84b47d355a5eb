"""The run plan: resolved config, inputs with digests, and units, persisted so any worker can load it.

Usage::

    plan = make_plan(cfg)          # lists inputs, splits them into units, writes _work/plan.json
                                   # (input digests: start_input_digests after pass 1, RunPlan.with_digests)
    plan = RunPlan.load(work_dir)  # in a task, possibly in another process
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import RunConfig, parse_config
from pipeline.errors import OutputError, PlanError
from pipeline.fileio import atomic_write_json, sha256_path
from pipeline.audit.chain import HEAD_FILE
from pipeline.sources import InputFile, Unit, reader_for
from pipeline.storage import RemoteRunDir, local_copy
from pipeline.spill import choose_spill_dir, claim, remove_spill, sweep_memory_spills

log = logging.getLogger(__name__)
_DIGESTS_LOCK = threading.Lock()
_DIGEST_THREADS: dict[str, threading.Thread] = {}  # work dir -> the thread hashing its inputs

WORK_DIR = "_work"
PLAN_FILE = "plan.json"
DIGESTS_FILE = "digests.json"


@dataclass
class RunPlan:
    """Everything a task needs to process one unit, and the finalizer to account for all of them."""

    run_id: str
    started_at: str
    config: RunConfig
    config_sha256: str
    out_dir: str
    inputs: list[InputFile]
    units: list[Unit]
    previous_manifest_sha256: str | None = None
    attempts: int = 1
    skipped_inputs: list[dict] = field(default_factory=list)
    hash_lists: list[dict] = field(default_factory=list)
    waivers: list[dict] = field(default_factory=list)
    spill_dir: str | None = None  # a memory spill directory (units.spill_to), else the scratch space
    # Where this process loaded the plan from (a worker's copy of a shared scratch space); not saved.
    loaded_from: str | None = field(default=None, compare=False, repr=False)

    @property
    def resumed(self) -> bool:
        """True when this run was restarted after an earlier attempt was killed."""
        return self.attempts > 1

    @property
    def work_dir(self) -> Path:
        """Scratch space of the run, removed once the outputs are published (in a worker, its copy)."""
        return Path(self.loaded_from) if self.loaded_from else Path(self.out_dir) / WORK_DIR

    @property
    def spill_root(self) -> Path:
        """Where pass 1 keeps the parsed batches of its units (see `pipeline.spill`)."""
        return Path(self.spill_dir) if self.spill_dir else self.work_dir / "spill"

    def with_digests(self) -> "RunPlan":
        """This plan with every input's sha256: those the planner deferred come from the digest
        thread it started (`digests.json`), or are computed now when that thread did not finish
        (another process, a resumed run)."""
        if all(f.sha256 is not None for f in self.inputs):
            return self
        wait_for_digests(self.work_dir)
        done = _read_digests(self.work_dir)
        missing = [f for f in self.inputs if f.sha256 is None and (f.source, f.path) not in done]
        if missing:
            done.update(_digest_inputs(self.work_dir, missing))
        inputs = [f if f.sha256 is not None else replace(f, sha256=done[(f.source, f.path)]) for f in self.inputs]
        return replace(self, inputs=inputs)

    def source(self, name: str):
        """The config of the named source."""
        for s in self.config.sources:
            if s.name == name:
                return s
        raise PlanError(f"the plan names an unknown source '{name}'")

    def to_json(self) -> dict:
        """A JSON-ready dict of the plan."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "config": self.config.model_dump(mode="json"),
            "config_sha256": self.config_sha256,
            "out_dir": self.out_dir,
            "inputs": [asdict(f) for f in self.inputs],
            "units": [u.to_dict() for u in self.units],
            "previous_manifest_sha256": self.previous_manifest_sha256,
            "attempts": self.attempts,
            "skipped_inputs": self.skipped_inputs,
            "hash_lists": self.hash_lists,
            "waivers": self.waivers,
            "spill_dir": self.spill_dir,
        }

    @classmethod
    def from_json(cls, d: dict) -> "RunPlan":
        """Inverse of `to_json`."""
        return cls(
            run_id=d["run_id"],
            started_at=d["started_at"],
            config=parse_config(d["config"], "plan.json"),
            config_sha256=d["config_sha256"],
            out_dir=d["out_dir"],
            inputs=[InputFile(**f) for f in d["inputs"]],
            units=[Unit.from_dict(u) for u in d["units"]],
            previous_manifest_sha256=d.get("previous_manifest_sha256"),
            attempts=d.get("attempts", 1),
            skipped_inputs=d.get("skipped_inputs", []),
            hash_lists=d.get("hash_lists", []),
            waivers=d.get("waivers", []),
            spill_dir=d.get("spill_dir"),
        )

    def save(self) -> None:
        """Write plan.json atomically into the work dir."""
        atomic_write_json(self.work_dir / PLAN_FILE, self.to_json())

    @classmethod
    def load(cls, work_dir: str | os.PathLike) -> "RunPlan":
        """Load the plan a worker was pointed at."""
        path = Path(work_dir) / PLAN_FILE
        try:
            return replace(cls.from_json(json.loads(path.read_text())), loaded_from=str(work_dir))
        except FileNotFoundError as e:
            raise PlanError(f"{path}: no run plan here; start the run with `hygiene run`") from e


def _fingerprint(inputs: list[InputFile]) -> list[tuple]:
    """What must be unchanged for a killed run to resume: every input's size and modification
    time (and its digest, where the planner computed it rather than deferring it)."""
    return [(f.source, f.path, f.bytes, f.mtime_ns) for f in inputs]


def _same_inputs(old: list[InputFile], new: list[InputFile]) -> bool:
    return _fingerprint(old) == _fingerprint(new) and all(
        a.sha256 == b.sha256 for a, b in zip(old, new) if a.sha256 is not None and b.sha256 is not None)


def _read_digests(work: Path) -> dict[tuple[str, str], str]:
    path = work / DIGESTS_FILE
    if not path.exists():
        return {}
    return {(d["source"], d["path"]): d["sha256"] for d in json.loads(path.read_text())}


def _digest_inputs(work: Path, inputs: list[InputFile]) -> dict[tuple[str, str], str]:
    """sha256 of each input file; recorded in `digests.json` (atomically, merged with what is there)."""
    digests = {(f.source, f.path): sha256_path(local_copy(f.path, f.etag)) for f in inputs}
    with _DIGESTS_LOCK:
        if not (work / PLAN_FILE).exists():  # the run was published (or discarded) meanwhile
            return digests
        merged = {**_read_digests(work), **digests}
        atomic_write_json(work / DIGESTS_FILE, [{"source": k[0], "path": k[1], "sha256": v} for k, v in sorted(merged.items())])
    return digests


def wait_for_digests(work_dir: str | os.PathLike) -> None:
    """Wait for the thread this process started to hash a run's inputs, if any: the finalize step
    must not publish while it could still write into the scratch space."""
    running = _DIGEST_THREADS.pop(str(work_dir), None)
    if running is not None:
        running.join()


def start_input_digests(work_dir: str | os.PathLike) -> None:
    """Hash the inputs whose digests the planner deferred, in a background thread of this process
    (the hash runs without the GIL). The runners start it when pass 1 is done, so that it fills the
    core the single-threaded barrier and the last shards of pass 2 leave idle instead of taking one
    from pass 1. A failure, or a process that ends first, is left to `RunPlan.with_digests`, which
    hashes what is missing when the run is finalized."""
    work = Path(work_dir)
    if str(work) in _DIGEST_THREADS:
        return
    plan = RunPlan.load(work)
    done = _read_digests(work)
    missing = [f for f in plan.inputs if f.sha256 is None and (f.source, f.path) not in done]
    if not missing:
        return

    def run() -> None:
        try:
            _digest_inputs(work, missing)
        except Exception:  # noqa: BLE001 - retried, and reported, by with_digests
            log.debug("background input digest failed", exc_info=True)

    thread = threading.Thread(target=run, name="hygiene-input-digests", daemon=True)
    _DIGEST_THREADS[str(work)] = thread
    thread.start()


def _guard_indexed_output(out_dir: Path, index) -> None:
    """Never replace a run the corpus index refers to: its records would vanish from the output."""
    indexed = {r["run_id"] for r in index.runs}
    work_plan = out_dir / WORK_DIR / PLAN_FILE
    if work_plan.exists():
        try:
            leftover = json.loads(work_plan.read_text()).get("run_id")
        except (OSError, json.JSONDecodeError):
            leftover = None
        if leftover in indexed:
            # Killed after publishing and indexing, during the last cleanup: the run is complete.
            shutil.rmtree(out_dir / WORK_DIR)
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        try:
            run_id = json.loads(manifest.read_text()).get("run_id")
        except (OSError, json.JSONDecodeError):
            run_id = None
        if run_id in indexed:
            raise OutputError(
                f"{out_dir}: holds run {run_id}, which is published and in the corpus index; write each run to a "
                "new directory (for scheduled jobs, e.g. `output: {dir: runs/{date}}`)"
            )


def _warm_kernels(cfg: RunConfig) -> None:
    """Load numba's cached machine code of the pass-1 kernels in this process (a few tenths of a
    second each on first call); a failure here surfaces where the kernel is really used."""
    try:
        import numpy as np
        import pyarrow as pa

        from pipeline.dedup.exact import exact_keys
        from pipeline.sinks.shards import plan_shards
        from pipeline.sources.jsonscan import scan_chunk

        scan_chunk(b"{}\n")
        exact_keys(pa.array(["a  b", "caf\u00e9 b"], pa.large_string()), cfg.dedup.exact.normalize)
        plan_shards(np.ones(1, dtype=np.int64), 1, 1024)
    except Exception:  # noqa: BLE001 - an optimisation only
        log.debug("warming the compiled kernels failed", exc_info=True)


def make_plan(cfg: RunConfig, max_workers: int = 2) -> RunPlan:
    """Describe the inputs and split them into units; resume a matching unfinished plan if one exists.

    A plan left behind by a killed run is reused only when the config digest and every input's
    size and modification time are unchanged; otherwise its scratch space is discarded and the
    run starts afresh. Input digests are computed beside pass 1 (see `with_digests`), except for
    incremental runs, which need them to skip inputs already processed.
    """
    # Fail closed before anything else: every configured hash list must load, validate and be fresh.
    from pipeline.safety.matcher import Matcher

    matcher = Matcher.from_config(cfg)
    if cfg.pii is not None and cfg.pii.enabled:
        # The spaCy model and the HMAC key are checked now, not after an hour of reading.
        from pipeline.pii.engine import check_model
        from pipeline.pii.redact import hmac_key

        check_model(cfg.pii)
        hmac_key(cfg.pii)
    out_dir = Path(cfg.output.local_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the output path exists and is not a directory; choose another --output")
    if (remote := RemoteRunDir.parse(cfg.output.dir)) is not None:
        # The staging copy starts from what is published there (its manifest, history and chain head).
        remote.pull_published(out_dir, HEAD_FILE)
    work = out_dir / WORK_DIR
    listed = []
    for s in cfg.sources:
        reader = reader_for(s.kind)
        listed.extend((s, reader, path, rel) for path, rel in reader.list_inputs(s))
    # Input digests are needed now only to skip inputs an incremental run has already processed;
    # otherwise they are computed beside pass 1 and recorded by the time the manifest is written.
    defer = cfg.state is None or not cfg.state.incremental
    # Load the compiled kernels meanwhile (about 0.7 s, most of it numba starting LLVM), so the
    # first units of pass 1 do not wait for them; nothing waits for this thread but the kernels.
    threading.Thread(target=_warm_kernels, args=(cfg,), name="hygiene-warm-kernels", daemon=True).start()
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        inputs = list(pool.map(lambda t: t[1].describe(t[0], t[2], t[3], digest=not defer), listed))

    skipped: list[dict] = []
    if cfg.state is not None:
        from pipeline.dedup.index import CorpusIndex

        index = CorpusIndex.open(cfg.state.dir, cfg)
        _guard_indexed_output(out_dir, index)
    if cfg.state is not None and cfg.state.incremental:
        done = index.processed_inputs()
        skipped = [{"source": f.source, "path": f.path, "sha256": f.sha256, "processed_in_run": done[f.sha256]}
                   for f in inputs if f.sha256 in done]
        inputs = [f for f in inputs if f.sha256 not in done]

    digest = cfg.digest()
    if (work / PLAN_FILE).exists():
        try:
            old = RunPlan.load(work)
        except Exception:  # noqa: BLE001 - an unreadable old plan is simply discarded
            old = None
        if old is not None and old.config_sha256 == digest and _same_inputs(old.inputs, inputs):
            log.info("resuming unfinished run %s (%d units)", old.run_id, len(old.units))
            old.attempts += 1
            old.save()
            return old
        log.info("discarding the scratch space of an earlier, different run")
        if old is not None and old.spill_dir:
            remove_spill(Path(old.spill_dir))
    if work.exists():
        wait_for_digests(work)  # an earlier plan's digest thread in this process may still write there
        shutil.rmtree(work)
    work.mkdir(parents=True)

    units: list[Unit] = []
    by_source: dict[str, list[InputFile]] = {}
    for f in inputs:
        by_source.setdefault(f.source, []).append(f)
    for s in cfg.sources:
        for u in reader_for(s.kind).plan_inputs(s, by_source.get(s.name, []), cfg.units, work_dir=str(work),
                                                 workers=max_workers):
            units.append(Unit(**{**u.to_dict(), "unit_id": len(units), "files": u.files}))
    return _new_plan(cfg, digest, out_dir, inputs, units, skipped, matcher)


def _new_plan(cfg: RunConfig, digest: str, out_dir: Path, inputs: list[InputFile], units: list[Unit],
              skipped: list[dict], matcher) -> RunPlan:
    """A fresh plan over the units, saved in the scratch space."""
    prev = out_dir / "manifest.json"
    run_id = str(uuid.uuid4())
    spill = None
    from pipeline.run.scratch import scratch_url

    if cfg.units.spill and scratch_url(cfg) is None:  # a shared scratch on a store keeps no spill
        sweep_memory_spills()
        # Parsed records take about their input's size; compressed inputs several times it.
        estimate = sum(f.bytes * (5 if f.path.endswith((".gz", ".zst")) else 1.2) for f in inputs)
        where = cfg.units.spill_to
        if cfg.runner.dask_address:
            # Workers of a cluster may be on other machines, each with its own /dev/shm: the spill
            # goes into the run's scratch space, which every worker must see (README, "Running on
            # a cluster"). A spill a worker cannot see is read again from the input (iter_unit_rows).
            if where == "memory":
                log.warning("units.spill_to: memory is ignored with runner.dask_address: the spill goes to %s",
                            out_dir / WORK_DIR / "spill")
            where = "output"
        spill = choose_spill_dir(where, int(estimate), run_id)
    plan = RunPlan(
        run_id=run_id,
        started_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        config=cfg,
        config_sha256=digest,
        out_dir=str(out_dir),
        inputs=inputs,
        units=units,
        previous_manifest_sha256=sha256_path(prev) if prev.exists() else None,
        skipped_inputs=skipped,
        hash_lists=matcher.summary(),
        waivers=matcher.waivers,
        spill_dir=spill,
    )
    plan.save()
    if spill:
        claim(Path(spill), plan.work_dir, run_id)
    return plan
