"""Finalize a run: number the outputs, write the manifest, and publish everything into the run directory.

Publishing is a sequence of renames that a killed run simply repeats: the manifest is moved in
last, so a run directory without `manifest.json` is never a finished run.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.audit.chain import HEAD_FILE, archive_replaced, chain_lock, location_of, read_head, set_head
from pipeline.audit.ledger import ledger_schema
from pipeline.core.registry import run_stages
from pipeline.audit.manifest import build_manifest, validate_manifest
from pipeline.audit.signing import KEY_ENV, key_id, load_private_key, make_statement, sign_envelope, signing_key_path
from pipeline.errors import SourceError
from pipeline.fileio import atomic_write_json, fsync_dir
from pipeline.plan import RunPlan
from pipeline.safety.quarantine import add_confirmed, merge_incidents
from pipeline.sinks.card import CARD, CROISSANT, write_metadata
from pipeline.sinks.shards import ShardWriter, WrittenFile
from pipeline.spill import remove_spill
from pipeline.storage import RemoteRunDir, drop_local_copies, object_info, quarantine_access
from pipeline.run.index_feed import index_additions, stage_additions, write_stage_additions
from pipeline.run.workdir import read_done, read_schema, shard_ids, unit_name

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ATTESTATION = "attestation.dsse.json"
METADATA_FILES = (CARD, CROISSANT)
OUTPUT_DIRS = ("shards", "ledger", "index")
# Built-in stages whose evidence has typed ledger columns; any other stage (a user's, or a built-in
# filter such as the quality stages) records its evidence in the `evidence` column.
TYPED_EVIDENCE_KINDS = frozenset({"safety", "exact_dedup", "near_dedup", "pii"})


def ledger_table(unit, decisions: pl.DataFrame, schema: pa.Schema = ledger_schema(False)) -> pa.Table:
    """A unit's ledger rows from its decisions (content digests as hex; never content)."""
    table = pa.Table.from_pydict(
        {
            "record_id": decisions["record_id"].to_arrow(),
            "source": pa.array([unit.source] * decisions.height, pa.string()),
            "location": decisions["location"].to_arrow(),
            "row": decisions["row"].to_arrow(),
            "content_sha256": decisions["content_sha256"].bin.encode("hex").to_arrow(),
            "decision": decisions["decision"].to_arrow(),
            "stage": decisions["stage"].to_arrow(),
            "reason": decisions["reason"].to_arrow(),
            "duplicate_of": decisions["duplicate_of"].to_arrow(),
            "cluster_id": decisions["cluster_id"].to_arrow(),
            "similarity": decisions["similarity"].to_arrow(),
            "text_bytes": decisions["text_bytes"].to_arrow(),
            "hash_list": decisions["hash_list"].to_arrow(),
            "hash_entry": decisions["hash_entry"].to_arrow(),
            "hash_type": decisions["hash_type"].to_arrow(),
            "hash_distance": decisions["hash_distance"].to_arrow(),
            "pii_counts": _column_or_null(decisions, "pii_counts"),
            "pii_action": _column_or_null(decisions, "pii_action"),
            **{k: _column_or_null(decisions, k) for k in ("pii_language", "pii_coverage") if k in schema.names},
            **({"evidence": _column_or_null(decisions, "evidence")} if "evidence" in schema.names else {}),
        }
    )
    return table.cast(schema)


def _column_or_null(df: pl.DataFrame, name: str) -> pa.Array:
    return df[name].to_arrow() if name in df.columns else pa.nulls(df.height, pa.string())


def write_ledger(work: Path, plan: RunPlan, directory: Path) -> list[WrittenFile]:
    """The ledger in input order (unit, row), cut into parts of `ledger_part_rows` rows."""
    cfg = plan.config
    # The built-in stages before the language stage record their evidence in typed columns; every
    # other stage (a user's, or a filter such as `language`) in the JSON `evidence` column.
    schema = ledger_schema(any(s.origin != "built-in" or s.kind not in TYPED_EVIDENCE_KINDS for s in run_stages(cfg)),
                           with_pii_routing=cfg.pii is not None and cfg.pii.enabled and cfg.pii.route_by_language)
    with ShardWriter(directory, schema, max_rows=cfg.output.ledger_part_rows,
                     name=lambda k: f"part-{k:05d}.parquet", row_group_rows=cfg.output.row_group_rows * 10,
                     compression="zstd") as writer:
        for u in plan.units:
            writer.write(ledger_table(u, pl.read_parquet(work / "decisions" / f"{unit_name(u.unit_id)}.parquet"), schema))
    return writer.files


def stage_ledger(work_dir: str) -> dict:
    """Write the ledger parts into the scratch space once every decision is final (after the
    barrier and the PII decision), so it can run beside pass 2; finalize publishes them."""
    work = Path(work_dir)
    done = work / "ledger.json"
    if (cached := read_done(done)) is not None:
        return cached
    plan = RunPlan.load(work)
    directory = work / "ledger"
    if directory.exists():  # parts of a killed attempt
        shutil.rmtree(directory)
    files = write_ledger(work, plan, directory)
    result = {"files": [f.to_dict() for f in files], "rows": sum(f.rows for f in files)}
    atomic_write_json(done, result)
    return result


def _assemble(plan: RunPlan, work: Path, pass2: list[dict], final: Path) -> dict:
    """Stage the outputs under `final/` with their public names; return the outputs section."""
    if final.exists():
        shutil.rmtree(final)
    (final / "shards").mkdir(parents=True)
    shards = []
    for r in pass2:
        f = r["shard"]
        name = f"shards/{Path(f['path']).name}"
        os.link(work / name, final / name)  # by name: a worker may have written it into its own copy of the scratch
        shards.append({**f, "path": name})
    (final / "ledger").mkdir()
    ledgers = []
    for f in stage_ledger(str(work))["files"]:
        name = f"ledger/{Path(f['path']).name}"
        os.link(work / name, final / name)
        ledgers.append({**f, "path": name})
    return {"shards": shards, "ledger": ledgers}


def _check_inputs_unchanged(plan: RunPlan) -> None:
    for f in plan.inputs:
        if plan.source(f.source).kind == "hf_load" and not Path(f.path).is_file():
            continue
        if f.etag is not None:  # an object on a store: its ETag names the version the run read
            now = object_info(f.path)
            if now.etag != f.etag or now.size != f.bytes:
                raise SourceError(f"{f.path}: the object changed during the run (ETag {f.etag}, now {now.etag}); run again")
            continue
        try:
            st = os.stat(f.path)
        except OSError as e:
            raise SourceError(f"{f.path}: the input disappeared during the run; run again") from e
        if Path(f.path).is_file() and (st.st_size != f.bytes or st.st_mtime_ns != f.mtime_ns):
            raise SourceError(f"{f.path}: the input changed during the run; run again")


def finalize(work_dir: str) -> dict:
    """Write the manifest and publish shards, ledger and manifest into the run directory."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    plan = RunPlan.load(work).with_digests()
    _check_inputs_unchanged(plan)
    pass1 = [read_done(work / "pass1" / f"{unit_name(u.unit_id)}.json") for u in plan.units]
    pass2 = [read_done(work / "pass2" / f"s{s:05d}.json") for s in shard_ids(str(work))]
    barrier = read_done(work / "barrier.json")
    final = work / "final"
    outputs = _assemble(plan, work, pass2, final)
    # build_manifest reads the ledger through the run dir's relative paths: point it at final/.
    staged = RunPlan(**{**plan.__dict__, "out_dir": str(final), "loaded_from": None})
    manifest = build_manifest(
        plan=staged, pass1=pass1, barrier=barrier, outputs=outputs,
        ended_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    )
    schema = read_schema(work / "output.schema")
    manifest["outputs"]["metadata"] = write_metadata(final, manifest, schema, plan.config.name)
    additions = stage_additions(work, plan) if plan.config.state is not None else {}
    if additions:
        manifest["outputs"]["index"] = write_stage_additions(final, additions)
    manifest["quarantine"] = merge_incidents(work, final)
    if "pii" in {s.kind for s in run_stages(plan.config)}:
        from pipeline.audit.manifest import pii_section

        manifest["pii"] = pii_section(plan, work, [str(final / f["path"]) for f in outputs["ledger"]])
    manifest["timings"] = _timings(plan, work, pass1, barrier, pass2, time.perf_counter() - t0)
    if manifest["quarantine"]:
        manifest["quarantine"]["access"] = quarantine_access(plan.config.output.dir)
    remote = RemoteRunDir.parse(plan.config.output.dir)
    location = location_of(Path(plan.out_dir))
    with chain_lock(location):
        head = read_head(location)
        if head is not None and head["run_id"] == plan.run_id:
            head = manifest_previous(plan)  # a resumed finalize: keep the link it had
        manifest["previous_run"] = head
        manifest["previous_manifest_sha256"] = head["manifest_sha256"] if head else None
        manifest["signature"] = _sign(plan, manifest, final)
        validate_manifest(manifest)
        atomic_write_json(final / MANIFEST, manifest)
        archive_replaced(Path(plan.out_dir))
        publish(work)
        set_head(location, plan.run_id, Path(plan.out_dir), public=plan.config.output.dir)
        if remote is not None:
            remote.push(Path(plan.out_dir), HEAD_FILE)
    if plan.config.safety.confirmed_list and manifest["quarantine"]:
        add_confirmed(plan.config.safety.confirmed_list, Path(plan.out_dir))
    if plan.config.state is not None:
        # Only a published run feeds the index; if this step is killed, the resumed run repeats it.
        from pipeline.dedup.index import CorpusIndex

        exact, near_keys, near_sig, inputs = index_additions(work, plan)
        CorpusIndex.open(plan.config.state.dir, plan.config).add_run(
            plan.run_id, plan.config.output.dir, exact, near_keys, near_sig, inputs, additions)
    shutil.rmtree(work)
    if plan.spill_dir:
        remove_spill(Path(plan.spill_dir))
    if remote is not None:  # the store holds the run now: keep no second copy here
        clear_staging(Path(plan.out_dir))
    # This machine's copies of inputs and hash lists on a store (a later run fetches them afresh).
    drop_local_copies([f.path for f in plan.inputs] + [h.path for h in plan.config.safety.hash_lists])
    return manifest


def clear_staging(local: Path) -> None:
    """Empty the staging copy of a run published to an object store (its lock file stays: it is held)."""
    for p in local.iterdir():
        if p.name == ".hygiene.lock":
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _timings(plan: RunPlan, work: Path, pass1: list[dict], barrier: dict, pass2: list[dict], publish_s: float) -> dict:
    """The manifest's `timings` (publishing measured up to the signature)."""
    from pipeline.core.registry import stages_at
    from pipeline.core.stage import Placement
    from pipeline.run.timings import timings_section
    from pipeline.run.unit_stages import task_results

    unit_stages = {s.kind: task_results(str(work), s.kind) for s in stages_at(plan.config, Placement.UNIT)}
    return timings_section(str(work), pass1, barrier, pass2, unit_stages, publish_s)


def manifest_previous(plan: RunPlan) -> dict | None:
    """The previous-run link recorded in the published manifest of this same run, if any."""
    import json

    p = Path(plan.out_dir) / MANIFEST
    if p.exists():
        m = json.loads(p.read_text())
        if m.get("run_id") == plan.run_id:
            return m.get("previous_run")
    return None


def _sign(plan: RunPlan, manifest: dict, final: Path) -> dict:
    """Sign the run's attestation if a key is configured; say so either way."""
    statement = make_statement({**manifest, "signature": None})
    key_path = signing_key_path(plan.config.signing.key)
    root = statement["predicate"]["merkle_root"]
    if key_path is None:
        return {"signed": False, "attestation": None, "keyid": None, "algorithm": None, "merkle_root": root,
                "note": f"no signing key configured (signing.key or ${KEY_ENV}); this manifest is unsigned"}
    key = load_private_key(key_path)
    envelope = sign_envelope(statement, key)
    atomic_write_json(final / ATTESTATION, envelope)
    return {"signed": True, "attestation": ATTESTATION, "keyid": key_id(key.public_key()), "algorithm": "ed25519",
            "merkle_root": root, "note": "DSSE envelope over an in-toto Statement v1; predicate = this manifest without `signature`"}


def publish(work: Path) -> None:
    """Move `work/final/*` into the run directory (idempotent; the manifest goes last)."""
    out = work.parent
    final = work / "final"
    if not (final / MANIFEST).exists():
        return
    (out / MANIFEST).unlink(missing_ok=True)
    for d in OUTPUT_DIRS:
        if (final / d).exists() or d == "index":  # a replaced run's index additions never outlive it
            if (out / d).exists():
                shutil.rmtree(out / d)
        if (final / d).exists():
            os.replace(final / d, out / d)
    for name in METADATA_FILES:
        if (final / name).exists():
            os.replace(final / name, out / name)
    if (final / "quarantine").exists():
        if (out / "quarantine").exists():
            shutil.rmtree(out / "quarantine")
        os.replace(final / "quarantine", out / "quarantine")
    elif (out / "quarantine").exists():
        shutil.rmtree(out / "quarantine")
    if (final / ATTESTATION).exists():
        os.replace(final / ATTESTATION, out / ATTESTATION)
    else:
        (out / ATTESTATION).unlink(missing_ok=True)
    os.replace(final / MANIFEST, out / MANIFEST)
    fsync_dir(out)
