"""Independent verification of a published run directory.

Usage::

    report = verify_run(Path("runs/sample"), public_keys=[Path("keys/hygiene.key.pub")])
    report.ok          # every check passed
    report.failures    # (check, file, message) of each failed check

`CouldNotVerify` is raised when verification cannot even start (no readable manifest, an
unknown schema version, an unreadable public key): that is not the same as a failed check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import polars as pl
import pyarrow.parquet as pq

from pipeline.audit.chain import find_manifest
from pipeline.audit.manifest import conservation, count_decisions, ledger_digest, manifest_json_schema, pii_routing_counts
from pipeline.core.registry import manifest_decisions
from pipeline.audit.signing import (
    SignatureError,
    load_public_key,
    make_statement,
    merkle_root,
    subjects_of,
    verify_envelope,
)
from pipeline.errors import PipelineError
from pipeline.fileio import sha256_path

SUPPORTED_MAJOR = "1"


class CouldNotVerify(PipelineError):
    """Verification could not start: the manifest or a key cannot be read or understood."""


@dataclass
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str
    file: str | None = None


@dataclass
class VerifyReport:
    """Every check run on a run directory."""

    run_dir: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str, file: str | None = None) -> bool:
        self.checks.append(Check(name, ok, detail, file))
        return ok


def load_manifest(run_dir: Path) -> dict:
    """The run's manifest, or CouldNotVerify saying why not."""
    path = run_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CouldNotVerify(f"{path}: no manifest; this is not a finished run directory") from e
    except (OSError, json.JSONDecodeError) as e:
        raise CouldNotVerify(f"{path}: the manifest is not readable JSON ({e.__class__.__name__})") from e
    version = str(manifest.get("schema_version", "")) if isinstance(manifest, dict) else ""
    if version.split(".")[0] != SUPPORTED_MAJOR:
        raise CouldNotVerify(f"{path}: manifest schema version {version or '(none)'!r} is not supported "
                             f"(this tool reads {SUPPORTED_MAJOR}.x); use the hygiene version that wrote it")
    return manifest


def verify_run(run_dir: Path, public_keys: list[Path] = (), check_chain: bool = True) -> VerifyReport:
    """Run every check on `run_dir` and return the report."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    keys = [load_public_key(p) for p in public_keys]
    r = VerifyReport(run_dir)
    mpath = str(run_dir / "manifest.json")

    try:
        jsonschema.validate(manifest, manifest_json_schema())
        r.add("schema", True, "manifest matches manifest-1.json", mpath)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        r.add("schema", False, f"manifest does not match its schema at {where}: {e.message}", mpath)
        return r

    files_ok = True
    for section in ("shards", "ledger"):
        for f in manifest["outputs"][section]:
            p = run_dir / f["path"]
            if not p.exists():
                files_ok = r.add("files", False, f"{section} file listed in the manifest is missing", str(p)) and files_ok
                continue
            digest = sha256_path(p)
            if digest != f["sha256"]:
                files_ok = r.add("digests", False, f"sha256 {digest[:16]}… differs from the manifest's {f['sha256'][:16]}…", str(p)) and files_ok
                continue
            if p.stat().st_size != f["bytes"]:
                files_ok = r.add("digests", False, "size differs from the manifest", str(p)) and files_ok
            rows = pq.ParquetFile(p).metadata.num_rows
            if rows != f["rows"]:
                files_ok = r.add("rows", False, f"{rows} rows, the manifest says {f['rows']}", str(p)) and files_ok
    extra = sorted({str(p.relative_to(run_dir)) for d in ("shards", "ledger", "index") for p in (run_dir / d).glob("*.parquet")}
                   - {f["path"] for s in ("shards", "ledger", "index") for f in manifest["outputs"].get(s, [])})
    for e in extra:
        files_ok = r.add("files", False, "file not listed in the manifest", str(run_dir / e)) and files_ok
    for section in ("metadata", "index"):
        for f in manifest["outputs"].get(section, []):
            p = run_dir / f["path"]
            if not p.exists():
                files_ok = r.add("files", False, f"{section} file listed in the manifest is missing", str(p)) and files_ok
            elif sha256_path(p) != f["sha256"]:
                files_ok = r.add("digests", False, "sha256 differs from the manifest", str(p)) and files_ok
    if files_ok:
        r.add("digests", True, f"{len(manifest['outputs']['shards'])} shard(s) and {len(manifest['outputs']['ledger'])} "
              "ledger part(s) match their sha256, size and row count")

    r.add("ledger_digest", ledger_digest(manifest["outputs"]["ledger"]) == manifest["ledger"]["sha256"],
          "ledger digest recomputed from the parts' digests", mpath)
    root = merkle_root(subjects_of(manifest))
    r.add("merkle_root", root == manifest["signature"]["merkle_root"],
          "Merkle root over the subjects" + ("" if root == manifest["signature"]["merkle_root"] else
                                              f": recomputed {root[:16]}…, manifest says {manifest['signature']['merkle_root'][:16]}…"), mpath)
    _check_signature(r, run_dir, manifest, keys)
    if files_ok:
        _check_conservation(r, run_dir, manifest)
        if manifest.get("pii"):
            _check_pii(r, run_dir, manifest)
    if check_chain:
        _check_chain(r, run_dir, manifest)
    return r


def _check_signature(r: VerifyReport, run_dir: Path, manifest: dict, keys: list) -> None:
    sig = manifest["signature"]
    if not sig["signed"]:
        r.add("signature", not keys, "the run is unsigned" + (" but a public key was given" if keys else " (nothing to check)"))
        return
    env_path = run_dir / sig["attestation"]
    try:
        envelope = json.loads(env_path.read_text())
    except (OSError, json.JSONDecodeError):
        r.add("signature", False, "the attestation named by the manifest is missing or unreadable", str(env_path))
        return
    if not keys:
        r.add("signature", True, f"signed by key {sig['keyid'][:16]}…; not checked (give --public-key)", str(env_path))
        return
    try:
        statement = verify_envelope(envelope, keys)
    except SignatureError as e:
        r.add("signature", False, str(e), str(env_path))
        return
    expected = make_statement({**manifest, "signature": None})
    if statement != expected:
        r.add("signature", False, "the signed statement differs from the manifest (the manifest was edited after signing)",
              str(run_dir / "manifest.json"))
        return
    r.add("signature", True, "Ed25519 signature valid; the signed statement equals the manifest and its subjects", str(env_path))


def _check_conservation(r: VerifyReport, run_dir: Path, manifest: dict) -> None:
    ledger_paths = [str(run_dir / f["path"]) for f in manifest["outputs"]["ledger"]]
    counts = count_decisions(ledger_paths)
    sources = [s["name"] for s in manifest["sources"]]
    recount = conservation(counts, sources, manifest_decisions(manifest))
    if not recount["balanced"]:
        r.add("conservation", False, "the ledger does not balance: input != kept + dropped + quarantined + rejected")
        return
    if recount != manifest["conservation"]:
        diffs = [name for name in sources if recount["per_source"][name] != manifest["conservation"]["per_source"].get(name)]
        r.add("conservation", False, "the manifest's totals differ from the ledger's"
              + (f" for source(s) {', '.join(diffs)}" if diffs else " (overall)"), str(run_dir / "manifest.json"))
        return
    kept_rows = sum(f["rows"] for f in manifest["outputs"]["shards"])
    if kept_rows != recount["overall"]["kept"]:
        r.add("conservation", False, f"shards hold {kept_rows} rows but the ledger keeps {recount['overall']['kept']}")
        return
    if ledger_paths:
        ids = pl.scan_parquet(ledger_paths).select(pl.len(), pl.col("record_id").n_unique()).collect().row(0)
        if ids[0] != manifest["ledger"]["rows"]:
            r.add("conservation", False, f"the ledger has {ids[0]} rows, the manifest says {manifest['ledger']['rows']}")
            return
    r.add("conservation", True, f"input {recount['overall']['input']} = kept {recount['overall']['kept']} + dropped "
          f"{recount['overall']['dropped']} + quarantined {recount['overall']['quarantined']} + rejected "
          f"{recount['overall']['rejected']}, per source and overall, recounted from the ledger")


def _check_pii(r: VerifyReport, run_dir: Path, manifest: dict) -> None:
    """The manifest's PII totals equal the per-record counts in the ledger."""
    import json

    ledger_paths = [str(run_dir / f["path"]) for f in manifest["outputs"]["ledger"]]
    by_entity: dict[str, int] = {}
    by_source: dict[str, dict[str, int]] = {}
    if ledger_paths:
        rows = pl.scan_parquet(ledger_paths).filter(pl.col("pii_counts").is_not_null()).select("source", "pii_counts").collect()
        for source, counts in rows.iter_rows():
            for entity, n in json.loads(counts).items():
                by_entity[entity] = by_entity.get(entity, 0) + n
                by_source.setdefault(source, {})[entity] = by_source.get(source, {}).get(entity, 0) + n
    pii = manifest["pii"]
    if by_entity != pii["by_entity"] or by_source != pii["by_source"]:
        r.add("pii", False, "the manifest's PII totals differ from the ledger's per-record counts", str(run_dir / "manifest.json"))
        return
    if "records_by_language" in pii:
        from pipeline.core.decisions import Category

        kept = list(manifest_decisions(manifest).names(Category.KEPT))
        recount = pii_routing_counts(pl.scan_parquet(ledger_paths) if ledger_paths else None, kept)
        if any(pii.get(k) != v for k, v in recount.items()):
            r.add("pii", False, "the manifest's PII counts per language and coverage differ from the ledger's",
                  str(run_dir / "manifest.json"))
            return
    r.add("pii", True, f"{sum(by_entity.values())} PII spans over {len(by_entity)} entity type(s), recounted from the ledger")


def _check_chain(r: VerifyReport, run_dir: Path, manifest: dict) -> None:
    link, here, steps = manifest.get("previous_run"), run_dir, 0
    while link is not None:
        found = find_manifest(link, here)
        if found is None:
            r.add("chain", False, f"run {link['run_id']} (named as previous by {here}) is missing from {link['path']}: "
                  "a run was deleted from the chain")
            return
        if sha256_path(found) != link["manifest_sha256"]:
            r.add("chain", False, f"the manifest of run {link['run_id']} was rewritten after the next run linked to it", str(found))
            return
        steps += 1
        here = found.parent if found.parent.name != link["run_id"] else Path(link["path"])
        link = json.loads(found.read_text()).get("previous_run")
    r.add("chain", True, f"{steps} earlier run(s) linked back to the first, every manifest digest matching")
