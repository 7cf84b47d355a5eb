"""Prefect UI artifacts of a run: a markdown summary and a table per source. Counts only, never content."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact


def publish_run_artifacts(manifest: dict) -> None:
    """Attach the run's summary to the current flow run in the Prefect UI."""
    o = manifest["conservation"]["overall"]
    stages = "\n".join(f"| {name} | {st['seen']:,} | {st['kept']:,} | {st['dropped']:,} |" for name, st in manifest["stages"].items())
    sig = manifest["signature"]
    markdown = (
        f"# hygiene run `{manifest['run_id']}`\n\n"
        f"**{o['input']:,}** records in = **{o['kept']:,}** kept + {o['dropped']:,} dropped + {o['quarantined']:,} quarantined "
        f"+ {o['rejected']:,} rejected ({'balanced' if manifest['conservation']['balanced'] else 'NOT BALANCED'}).\n\n"
        f"| stage | seen | kept | dropped |\n|---|---|---|---|\n{stages}\n\n"
        f"Shards: {len(manifest['outputs']['shards'])}; ledger digest `{manifest['ledger']['sha256'][:16]}…`; "
        f"{'signed, key ' + sig['keyid'][:16] + '…' if sig['signed'] else 'unsigned'}.\n"
    )
    pii = manifest.get("pii")
    if pii:
        res = pii.get("residual_scan") or {}
        types = ", ".join(f"{e} {n:,}" for e, n in pii["by_entity"].items()) or "none"
        markdown += (f"\nPII ({pii['engine']['model'].get('name')} {pii['engine']['model'].get('version')}): "
                     f"spans by type: {types}; records by action: {pii['records_by_action']}; "
                     f"residual scan: {res.get('spans', 'not run')} span(s) in {res.get('records', 0):,} records.\n")
    create_markdown_artifact(key="hygiene-run-summary", markdown=markdown, description="counts and digests only")
    rows = [{"source": name, **{k: t[k] for k in ("input", "kept", "dropped", "quarantined", "rejected")}}
            for name, t in manifest["conservation"]["per_source"].items()]
    create_table_artifact(key="hygiene-sources", table=rows, description="records per source and decision")
