"""What a data steward asks of a run: a summary, the story of one record, what changed between runs.

Everything here reads the manifest and the ledger only: no record content is ever shown.

Usage::

    summary = summarize(Path("runs/sample"))
    story = explain(Path("runs/sample"), "web-0001")
    changes = diff_runs(Path("runs/a"), Path("runs/b"))
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipeline.core.decisions import OUTPUT_STAGE, Category
from pipeline.core.registry import manifest_decisions
from pipeline.audit.verify import load_manifest, verify_run
from pipeline.errors import PipelineError


class RecordNotFound(PipelineError):
    """The record id is not in the run's ledger."""


def ledger_frame(run_dir: Path, manifest: dict) -> pl.LazyFrame:
    paths = [str(run_dir / f["path"]) for f in manifest["outputs"]["ledger"]]
    if not paths:
        return pl.LazyFrame(schema={"record_id": pl.String, "source": pl.String, "decision": pl.String,
                                    "stage": pl.String, "reason": pl.String})
    return pl.scan_parquet(paths)


def summarize(run_dir: Path, verify: bool = True) -> dict:
    """The steward's first look: inputs, funnel, removals by reason and source, verification."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    ledger = ledger_frame(run_dir, manifest)
    kept = list(manifest_decisions(manifest).names(Category.KEPT))
    removals = (
        ledger.filter(~pl.col("decision").is_in(kept))
        .group_by("source", "decision", "stage", "reason").agg(pl.len().alias("records"))
        .sort(["records", "source", "reason"], descending=[True, False, False]).collect()
    )
    report = verify_run(run_dir) if verify else None
    c = manifest["conservation"]
    return {
        "run_id": manifest["run_id"],
        "started_at": manifest["started_at"],
        "ended_at": manifest["ended_at"],
        "config_sha256": manifest["config_sha256"],
        "inputs": {"files": len(manifest["inputs"]), "bytes": sum(i["bytes"] for i in manifest["inputs"]),
                   "skipped": len(manifest.get("skipped_inputs", []))},
        "sources": [{**s, **{k: c["per_source"][s["name"]][k] for k in ("input", "kept", "dropped", "quarantined", "rejected")}}
                    for s in manifest["sources"]],
        "funnel": ordered_stages(manifest["stages"], manifest),
        "totals": {k: c["overall"][k] for k in ("input", "kept", "kept_redacted", "dropped", "quarantined", "rejected")},
        "removals": removals.to_dicts(),
        "near_dedup": manifest.get("near_dedup"),
        "pii": manifest.get("pii"),
        "timings": manifest.get("timings"),
        "quarantined": c["overall"]["quarantined"],
        "quarantine": manifest.get("quarantine"),
        "hash_lists": manifest.get("hash_lists", []),
        "signature": manifest["signature"],
        "verification": None if report is None else {"ok": report.ok, "failures": [f.__dict__ for f in report.failures]},
        "signoff": _signoff_summary(run_dir),
        "outputs": {"shards": len(manifest["outputs"]["shards"]), "rows": sum(f["rows"] for f in manifest["outputs"]["shards"]),
                    "bytes": sum(f["bytes"] for f in manifest["outputs"]["shards"])},
    }


def _signoff_summary(run_dir: Path) -> dict | None:
    from pipeline.audit.signoff import latest_signoff

    rec = latest_signoff(run_dir)
    if rec is None:
        return None
    return {"approver": rec["approver"], "at": rec["at"], "passed": rec["passed"], "policy": rec["policy"]["content"]["name"],
            "failed_rules": [r["rule"] for r in rec["rules"] if not r["passed"]], "signed_by": rec["signed_by"]}


def explain(run_dir: Path, record_id: str) -> dict:
    """Everything the run knows about one record: where it came from, each stage, the evidence."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    ledger = ledger_frame(run_dir, manifest)
    rows = ledger.filter(pl.col("record_id") == record_id).collect()
    if rows.height == 0:
        raise RecordNotFound(f"{record_id!r} is not in the ledger of run {manifest['run_id']} ({run_dir}); "
                             "record ids are the id field's value, or source/path:row")
    row = rows.row(0, named=True)
    source = next(s for s in manifest["sources"] if s["name"] == row["source"])
    inputs = [i for i in manifest["inputs"] if i["source"] == row["source"] and i["relpath"] == row["location"]]
    story = {
        "record_id": record_id,
        "run_id": manifest["run_id"],
        "source": {"name": row["source"], "kind": source["kind"], "license": source["license"],
                   "location": row["location"], "row": row["row"],
                   "input": inputs[0] if inputs else None},
        "content_sha256": row["content_sha256"],
        "text_bytes": row.get("text_bytes"),
        "decision": row["decision"],
        "stage": row["stage"],
        "reason": row["reason"],
        "stages": _stages(manifest, row),
        "evidence": {},
        "ledger_rows_with_this_id": rows.height,
    }
    table = manifest_decisions(manifest)
    category = table.category(row["decision"]) if row["decision"] in table else None
    story["category"] = category.value if category is not None else None
    if category == Category.QUARANTINED:
        story["evidence"] = {k: row.get(k) for k in ("hash_list", "hash_entry", "hash_type", "distance") if k in row}
        return story
    if row.get("duplicate_of"):
        survivor = ledger.filter(pl.col("record_id") == row["duplicate_of"]).collect()
        story["evidence"]["duplicate_of"] = row["duplicate_of"]
        story["evidence"]["survivor_in_this_run"] = survivor.height > 0
        if survivor.height:
            s = survivor.row(0, named=True)
            story["evidence"]["survivor"] = {"source": s["source"], "location": s["location"], "row": s["row"],
                                             "decision": s["decision"], "text_bytes": s.get("text_bytes")}
    if row.get("cluster_id") is not None:
        members = ledger.filter(pl.col("cluster_id") == row["cluster_id"]).select(
            "record_id", "decision", "similarity").collect()
        story["evidence"]["cluster_id"] = row["cluster_id"]
        story["evidence"]["similarity_to_survivor"] = row.get("similarity")
        story["evidence"]["cluster"] = members.to_dicts()
    if category == Category.KEPT:
        story["evidence"]["shard"] = _find_shard(run_dir, manifest, record_id)
    for k in ("pii_counts", "pii_action", "pii_language", "pii_coverage"):
        if row.get(k) is not None:
            story["evidence"][k] = row[k]
    if row.get("evidence"):
        story["evidence"].update(json.loads(row["evidence"]))
    return story


# The funnel of manifests written before the stage contract recorded it.
_HISTORIC_FUNNEL = ["read", "safety", "identity", "exact_dedup", "near_dedup", "pii", "output"]


def ordered_stages(stages: dict, manifest: dict | None = None) -> dict:
    """Stages in pipeline order (the manifest's JSON keys are sorted alphabetically): the funnel the
    manifest records, then the output."""
    funnel = ((manifest or {}).get("pipeline") or {}).get("funnel")
    order = [*funnel, "output"] if funnel else _HISTORIC_FUNNEL
    return dict(sorted(stages.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _stages(manifest: dict, row: dict) -> list[dict]:
    """Each stage the record went through, with what it decided."""
    out = []
    kept = manifest_decisions(manifest).names(Category.KEPT)
    for name in ordered_stages(manifest["stages"], manifest):
        if name == row["stage"]:
            out.append({"stage": name, "result": row["decision"], "reason": row["reason"]})
            if row["decision"] not in kept:
                break
        else:
            out.append({"stage": name, "result": "passed"})
    return out


def _find_shard(run_dir: Path, manifest: dict, record_id: str) -> dict | None:
    for f in manifest["outputs"]["shards"]:
        hit = pl.scan_parquet(str(run_dir / f["path"])).filter(pl.col("record_id") == record_id).select(pl.len()).collect().item()
        if hit:
            return {"path": f["path"], "sha256": f["sha256"]}
    return None


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = d
    return out


def diff_runs(run_a: Path, run_b: Path, limit: int = 50, reason: str | None = None) -> dict:
    """What changed from run A to run B: counts per stage and reason, decisions, config, inputs.

    Each record whose decision changed is attributed to the stage that caused it: the stage that
    removed it in B, else the stage that had removed it in A, else (kept in both, e.g. kept →
    kept_redacted) the stage that marked it. `reason` keeps only the changes where either side's
    decision or stage is `reason`, a decision starts with it, or a reason string starts with it.
    """
    ma, mb = load_manifest(Path(run_a)), load_manifest(Path(run_b))
    la, lb = ledger_frame(Path(run_a), ma), ledger_frame(Path(run_b), mb)

    def counts(lf: pl.LazyFrame) -> dict:
        df = lf.group_by("stage", "decision", "reason").agg(pl.len().alias("n")).collect()
        return {f"{r['stage']} / {r['decision']} / {r['reason'] or '-'}": r["n"] for r in df.to_dicts()}

    ca, cb = counts(la), counts(lb)
    count_changes = {k: {"a": ca.get(k, 0), "b": cb.get(k, 0)} for k in sorted(set(ca) | set(cb)) if ca.get(k, 0) != cb.get(k, 0)}
    # Records are matched on (record id, source, location, row): a repeated id stays two records.
    key = ["record_id", "source", "location", "row"]
    kept_a = list(manifest_decisions(ma).names(Category.KEPT))
    kept_b = list(manifest_decisions(mb).names(Category.KEPT))
    a, b = pl.col("a"), pl.col("b")
    cause = (pl.when(a.is_null()).then(pl.lit("(new in B)"))
             .when(b.is_null()).then(pl.lit("(absent from B)"))
             .when(~b.is_in(kept_b)).then(pl.col("stage_b"))
             .when(~a.is_in(kept_a)).then(pl.col("stage_a"))
             .when(pl.col("stage_b") != OUTPUT_STAGE).then(pl.col("stage_b"))
             .otherwise(pl.col("stage_a")))
    changed = (
        la.select(*key, pl.col("decision").alias("a"), pl.col("reason").alias("reason_a"), pl.col("stage").alias("stage_a"))
        .join(lb.select(*key, pl.col("decision").alias("b"), pl.col("reason").alias("reason_b"), pl.col("stage").alias("stage_b")),
              on=key, how="full", coalesce=True)
        .filter(a.is_null() | b.is_null() | (a != b))
        .with_columns(cause.alias("cause"))
    )
    if reason:
        changed = changed.filter(
            (a == reason) | (b == reason) | (pl.col("stage_a") == reason) | (pl.col("stage_b") == reason)
            | a.str.starts_with(reason) | b.str.starts_with(reason)
            | pl.col("reason_a").str.starts_with(reason) | pl.col("reason_b").str.starts_with(reason))
    joined = changed.sort("record_id").collect()
    transitions = (joined.group_by("a", "b", "cause").agg(pl.len().alias("records"))
                   .sort(["records", "a", "b"], descending=[True, False, False], nulls_last=True).to_dicts())
    by_stage = {r["cause"]: r["records"] for r in
                joined.group_by("cause").agg(pl.len().alias("records")).sort(["records", "cause"], descending=[True, False]).to_dicts()}
    fa, fb = _flatten(ma["config"]), _flatten(mb["config"])
    config_changes = {k: {"a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    ia = {(i["source"], i["relpath"]): i["sha256"] for i in ma["inputs"]}
    ib = {(i["source"], i["relpath"]): i["sha256"] for i in mb["inputs"]}
    input_changes = [{"source": k[0], "relpath": k[1], "a": ia.get(k), "b": ib.get(k)}
                     for k in sorted(set(ia) | set(ib)) if ia.get(k) != ib.get(k)]
    ha = {h.get("name"): h for h in ma.get("hash_lists", [])}
    hb = {h.get("name"): h for h in mb.get("hash_lists", [])}
    hash_list_changes = [{"name": n, "a": ha.get(n), "b": hb.get(n)} for n in sorted(set(ha) | set(hb)) if ha.get(n) != hb.get(n)]
    return {
        "a": {"run_id": ma["run_id"], "path": str(run_a)},
        "b": {"run_id": mb["run_id"], "path": str(run_b)},
        "totals": {k: {"a": ma["conservation"]["overall"][k], "b": mb["conservation"]["overall"][k]}
                   for k in ("input", "kept", "dropped", "quarantined", "rejected")},
        "count_changes": count_changes,
        "decision_changes": {"total": joined.height, "records": joined.head(limit).to_dicts(),
                             "transitions": transitions, "by_stage": by_stage, "filter": reason},
        "config_changes": config_changes,
        "config_sha256": {"a": ma["config_sha256"], "b": mb["config_sha256"]},
        "input_changes": input_changes,
        "hash_list_changes": hash_list_changes,
    }


def to_json(obj: dict) -> str:
    """Indented JSON for `--json` output."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
