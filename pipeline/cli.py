"""The `hygiene` command line.

Usage::

    hygiene run configs/sample.yaml
    hygiene run configs/sample.yaml --input ~/corpus/*.jsonl.gz --output runs/mine
    hygiene schedule configs/sample.yaml --next 5
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import click

from pipeline.cli_common import exits_on_error, fast_exit, refused_writes_explained
from pipeline.config import RunConfig, load_config, parse_config
from pipeline.sources.inputs import sources_from_inputs  # noqa: F401 - part of the CLI's API
from pipeline.storage import readable_run, writable_run
from pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, ConfigError, PipelineError, RejectionsError  # noqa: F401

def resolve_run_config(config_path: str, inputs: tuple[str, ...], output: str | None, runner: str | None,
                       workers: int | None, fail_on_reject: bool, full: bool = False,
                       hash_lists: tuple[str, ...] = ()) -> RunConfig:
    """The config file plus command-line overrides, validated again as a whole."""
    cfg = load_config(config_path)
    data = cfg.model_dump(mode="json")
    if inputs:
        first = data["sources"][0]
        template = {"text_field": first["text_field"], "id_field": first["id_field"]}
        data["sources"] = sources_from_inputs(inputs, template)
    if output:
        data["output"]["dir"] = output if "://" in output else str(Path(output).expanduser().resolve())
    if runner:
        data["runner"]["kind"] = runner
    if workers:
        data["runner"]["max_workers"] = workers
        data["runner"]["dask_workers"] = workers
    if fail_on_reject:
        data["errors"]["fail_on_reject"] = True
    if full and data.get("state"):
        data["state"]["incremental"] = False
    for path in hash_lists:
        names = {h["name"] for h in data["safety"]["hash_lists"]}
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]) or "list"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        where = path if "://" in path else str(Path(path).expanduser().resolve())  # a URL is used as written
        data["safety"]["hash_lists"].append({"name": name, "path": where})
    return parse_config(data, config_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's and the pipeline's INFO logs.")
@click.version_option(package_name="hygiene-pipeline")
def main(verbose: bool) -> None:
    """Clean training data: read corpora, deduplicate, and write audited Parquet shards.

    Every command takes --help. A run writes shards/, ledger/ and manifest.json into its output
    directory (see the README's "Run directory" section).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    fast_exit()
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--input", "inputs", multiple=True, metavar="PATH",
              help="A file, directory or glob to read instead of the config's sources (repeatable).")
@click.option("--output", metavar="DIR", help="The run directory to write (overrides output.dir).")
@click.option("--runner", type=click.Choice(["thread", "dask"]), help="Prefect task runner (overrides runner.kind).")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel units (threads or Dask workers).")
@click.option("--fail-on-reject", is_flag=True, help="Fail (exit 3) and publish nothing if any record is rejected.")
@click.option("--no-prefect", is_flag=True, help="Run with the plain local executor instead of the Prefect flow.")
@click.option("--prefect-api", metavar="local|ephemeral|URL", help="Prefect API: local (a server on 127.0.0.1, started once and "
              "reused), ephemeral (one per run) or a URL. Default: $HYGIENE_PREFECT_API, your PREFECT_API_URL, local.")
@click.option("--full", is_flag=True, help="Read every input, even those a published run already processed.")
@click.option("--hash-list", "hash_lists", multiple=True, metavar="LIST",
              help="A hash list to match against, besides the configured ones (repeatable; type declared in the file).")
def run(config, inputs, output, runner, workers, fail_on_reject, no_prefect, prefect_api, full, hash_lists) -> None:
    """Run the cleaning job described by CONFIG and publish a run directory."""
    if no_prefect and prefect_api:
        raise click.UsageError("--prefect-api chooses the API of the Prefect flow: it has no use with --no-prefect")
    with exits_on_error(config=EXIT_USAGE, rejected=EXIT_REJECTED):
        cfg = resolve_run_config(config, inputs, output, runner, workers, fail_on_reject, full, hash_lists)
        api = None
        with refused_writes_explained(str(cfg.output.local_path)):
            if no_prefect:
                from pipeline.executor import run_local
                from pipeline.progress import Progress

                progress = Progress()
                try:
                    manifest = run_local(cfg, progress=progress)
                finally:
                    progress.stop()
            else:
                from flows.clean import run_flow
                from flows.settings import prefect_api as chosen_api
                with chosen_api(prefect_api, notify=lambda msg: click.echo(msg, err=True)) as api:
                    manifest = run_flow(cfg)
    _print_summary(cfg, manifest)
    if api is not None and api.kind == "local":
        click.echo(f"Prefect UI: {api.url.removesuffix('/api')} (kept for the next runs; `hygiene prefect-server stop`)", err=True)


def _print_summary(cfg: RunConfig, manifest: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {manifest['run_id']}")
    for col in ("source", "input", "kept", "dropped", "quarantined", "rejected"):
        table.add_column(col, justify="right" if col != "source" else "left")
    per = manifest["conservation"]["per_source"]
    for name, t in list(per.items()) + [("total", manifest["conservation"]["overall"])]:
        table.add_row(name, *(f"{t[k]:,}" for k in ("input", "kept", "dropped", "quarantined", "rejected")))
    console = Console(stderr=False)
    console.print(table)
    balanced = "balanced" if manifest["conservation"]["balanced"] else "NOT BALANCED"
    console.print(f"{len(manifest['outputs']['shards'])} shard(s) in {cfg.output.dir}/shards; "
                  f"ledger {manifest['ledger']['rows']:,} rows; conservation {balanced}")
    pii = manifest.get("pii")
    if pii:
        acts = pii["records_by_action"]
        types = ", ".join(f"{e} {n:,}" for e, n in pii["by_entity"].items()) or "none found"
        res = pii.get("residual_scan")
        console.print(f"PII: {acts.get('redacted', 0):,} record(s) redacted, {acts.get('dropped', 0):,} dropped "
                      f"(spans: {types})" + (f"; residual scan: {res.get('records_with_residual', res['spans']):,} of {res['records']:,} "
                                             f"sampled records" + (f" (rate <= {res['upper_bound']:.3%} at "
                                                                   f"{res['confidence']:.0%})" if "upper_bound" in res else "")
                                             if res else ""))
        if pii.get("records_patterns_only"):
            console.print(f"PII coverage: {pii['records_patterns_only']:,} kept record(s) in a language without a model "
                          f"were scanned by the pattern recognizers only (names not searched): "
                          f"{pii.get('records_patterns_only_by_language') or {}}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config) -> None:
    """Check CONFIG without running anything; print the resolved config and its digest."""
    with exits_on_error(config=EXIT_USAGE):
        cfg = load_config(config)
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    click.echo(f"config_sha256 {cfg.digest()}")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Also list the stages this config names (your own `module:Class` stages).")
@click.option("--json", "as_json", is_flag=True, help="Print the stages as JSON.")
def stages(config_path, as_json) -> None:
    """List the available stages: built-in, installed (`hygiene.stages` entry points) and a config's own."""
    import json as _json

    from pipeline.core.registry import describe_available

    with exits_on_error():
        cfg = load_config(config_path) if config_path else None
        found = describe_available(cfg)
    if as_json:
        click.echo(_json.dumps(found, indent=2, default=str))
        return
    from rich.table import Table

    t = Table(title="stages")
    for c in ("kind", "origin", "runs", "decisions", "config"):
        t.add_column(c)
    for d in found:
        if "error" in d:
            t.add_row(d["kind"], d["origin"], "-", "-", d["error"])
            continue
        conf = d["config"]
        keys = (f"section {conf['section']}" if "section" in conf else
                ", ".join(f"{k}={v['default']!r}" for k, v in conf["keys"].items()) or "-")
        decisions = ", ".join(f"{n} ({v['category']})" for n, v in d["decisions"].items()) or "-"
        t.add_row(d["kind"], d["origin"], d["runs"], decisions, keys)
    _console().print(t)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--next", "show_next", type=click.IntRange(min=1), help="Print the next N fire times and exit.")
@click.option("--name", default=None, help="Deployment name (default: the config's name).")
def schedule(config, show_next, name) -> None:
    """Serve a Prefect deployment that runs CONFIG on its cron schedule (`schedule.cron`)."""
    with exits_on_error(config=EXIT_USAGE):
        cfg = load_config(config)
        from flows.serve import next_fire_times, serve_config

        if cfg.schedule is None:
            raise ConfigError(f"{config}: no `schedule:` section; add `schedule: {{cron: \"0 3 * * *\"}}`")
        if show_next:
            for t in next_fire_times(cfg, show_next):
                click.echo(t.isoformat())
            return
        serve_config(config, cfg, name)


@main.group()
def keys() -> None:
    """Ed25519 keys that sign run attestations and sign-offs."""


@keys.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the key pair.")
@click.option("--name", default="hygiene", show_default=True, help="File name stem of the key pair.")
def keys_generate(out_dir, name) -> None:
    """Write NAME.key (private, mode 0600) and NAME.key.pub into --out."""
    from pipeline.audit.signing import generate_keypair, key_id, load_public_key

    with exits_on_error():
        priv, pub = generate_keypair(Path(out_dir), name)
    click.echo(f"private key {priv} (keep it secret; set signing.key or $HYGIENE_SIGNING_KEY)")
    click.echo(f"public key  {pub} (give it to reviewers: hygiene verify RUN --public-key {pub})")
    click.echo(f"key id      {key_id(load_public_key(pub))}")


EXIT_VERIFY_FAILED, EXIT_CANNOT_VERIFY = 1, 2


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(dir_okay=False),
              help="Check the attestation's signature with this Ed25519 public key (repeatable).")
@click.option("--no-chain", is_flag=True, help="Do not walk the chain of earlier runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def verify(run_dir, public_keys, no_chain, as_json) -> None:
    """Check a published run: schema, digests, Merkle root, signature, conservation, chain.

    Exit 0 when every check passes, 1 when a check fails (the output names the check and the
    file), 2 when the run cannot be verified at all (no readable manifest, an unsupported schema
    version, an unreadable public key).
    """
    from pipeline.audit.verify import verify_run

    with exits_on_error(EXIT_CANNOT_VERIFY, prefix="cannot verify"):
        with readable_run(run_dir) as local:
            report = verify_run(local, [Path(p) for p in public_keys], check_chain=not no_chain)
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), "ok": report.ok,
                               "checks": [c.__dict__ for c in report.checks]}, indent=2))
    else:
        for c in report.checks:
            click.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name:<14} {c.detail}" + (f"  [{c.file}]" if c.file and not c.ok else ""))
        click.echo("verified" if report.ok else f"verification FAILED ({len(report.failures)} check(s))")
    sys.exit(0 if report.ok else EXIT_VERIFY_FAILED)


def _console():
    from rich.console import Console

    return Console(highlight=False)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip the verification checks (faster on big runs).")
def inspect(run_dir, as_json, no_verify) -> None:
    """Summarise a run: inputs, funnel per stage, removals by reason and source, verification."""
    from pipeline.audit.inspect import summarize, to_json
    from pipeline.cli_views import show_summary

    with exits_on_error(EXIT_CANNOT_VERIFY):
        with readable_run(run_dir) as local:
            s = summarize(local, verify=not no_verify)
    click.echo(to_json(s)) if as_json else show_summary(s, _console())


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="Print the story as JSON.")
def explain(run_dir, record_id, as_json) -> None:
    """The full story of one record: source, every stage's decision, and the evidence (never content)."""
    from pipeline.audit.inspect import explain as explain_record, to_json
    from pipeline.cli_views import show_story

    with exits_on_error():
        with readable_run(run_dir) as local:
            st = explain_record(local, record_id)
    click.echo(to_json(st)) if as_json else show_story(st, _console())


@main.command()
@click.argument("run_a", type=click.Path(file_okay=False))
@click.argument("run_b", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--limit", default=50, show_default=True, help="How many changed records to list.")
@click.option("--reason", help="Only changes where a decision or stage is this, or a decision or reason starts with it.")
def diff(run_a, run_b, as_json, limit, reason) -> None:
    """What changed from RUN_A to RUN_B: counts per stage and reason, decisions (with the stage that
    caused each change), config, inputs."""
    from pipeline.audit.inspect import diff_runs, to_json
    from pipeline.cli_views import show_diff

    with exits_on_error(EXIT_CANNOT_VERIFY):
        with readable_run(run_a) as a, readable_run(run_b) as b:
            d = diff_runs(a, b, limit=limit, reason=reason)
    click.echo(to_json(d)) if as_json else show_diff(d, _console())


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--samples", default=0, show_default=True, type=click.IntRange(min=0),
              help="Add N records of each dropped decision, read back from the inputs with PII masked.")
def report(run_dir, out, samples) -> None:
    """Write a self-contained HTML report of RUN_DIR (no network needed to view it)."""
    from pipeline.audit.report import render_report
    from pipeline.fileio import atomic_write_bytes

    with exits_on_error(EXIT_CANNOT_VERIFY):
        with readable_run(run_dir) as local:
            page = render_report(local, samples=samples)
    atomic_write_bytes(out, page.encode())
    click.echo(f"wrote {out}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Sign-off policy YAML.")
@click.option("--approver", required=True, help="Who approves (recorded in the sign-off).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False), help="The approver's Ed25519 private key.")
@click.option("--note", help="Free text recorded with the sign-off (e.g. a ticket number).")
def signoff(run_dir, policy_path, approver, key_path, note) -> None:
    """Evaluate a sign-off policy on RUN_DIR and record who approved it, when and why it passed or failed.

    Exit 0 when every rule passes, 1 when a rule fails (each failing rule is listed), 2 when the
    policy or the run cannot be read. The record is written either way, under RUN_DIR/signoffs/.
    """
    from pipeline.audit.signoff import evaluate, load_policy, record_signoff

    with exits_on_error(EXIT_CANNOT_VERIFY):
        policy = load_policy(policy_path)
        with writable_run(run_dir) as local:
            result = evaluate(local, policy)
            record = record_signoff(local, Path(policy_path), result, approver, key_path, note)
    for r in record["rules"]:
        click.echo(f"{'pass' if r['passed'] else 'FAIL'} {r['rule']:<26} value {r['value']!s:<24.24} limit {r['threshold']!s:<12.12} {r['detail']}")
    signed = f", signed by key {record['signed_by'][:16]}…" if record["signed_by"] else ", unsigned (no --key)"
    click.echo(f"sign-off {'PASSED' if record['passed'] else 'FAILED'} for run {record['run_id']} by {approver}{signed}")
    sys.exit(0 if record["passed"] else EXIT_VERIFY_FAILED)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the incidents summary as JSON (ids and hashes lists, no content).")
def incidents(run_dir, as_json) -> None:
    """Summarise RUN_DIR's quarantine for the trust-and-safety team: matches per list, type and source.

    Nothing here shows content: the incident file holds hashes, list entries and locations only.
    """
    from pipeline.safety.quarantine import summarize_incidents

    with exits_on_error(), readable_run(run_dir) as local:
        s = summarize_incidents(local)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    if not s["count"]:
        click.echo("no quarantined item in this run")
        return
    click.echo(f"{s['count']} quarantined item(s); incident file {s['path']} (owner-only); "
               f"{s['human_viewed']} viewed by a person")
    for title, key in (("by list", "by_list"), ("by hash type", "by_type"), ("by source", "by_source")):
        click.echo(f"{title}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    for r in s["records"]:
        click.echo(f"  {r['record_id']}  {r['source']}/{r['location']} row {r['row']}  list {r['list']} entry {r['entry_id']} "
                   f"({r['hash_type']}, distance {r['distance']})")


@main.command("hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.option("--dihedral", is_flag=True, help="Also print the 8 rotated/flipped PDQ hashes.")
def hash_files(files, as_json, dihedral) -> None:
    """Print md5/sha1/sha256 of FILES, and PDQ (with quality) and pHash for images."""
    from pipeline.safety.imagehash_stage import hash_image

    for f in files:
        data = Path(f).read_bytes()
        h = hash_image(data, dihedral=dihedral)
        out = {"file": f, "bytes": len(data), **h.as_dict()}
        if h.rejected:
            out["image"] = f"not hashed as an image: {h.rejected}"
        elif h.pdq_quality is not None and h.pdq_quality < 50:
            out["pdq_note"] = f"unhashable: quality {h.pdq_quality} < 50, do not match on this PDQ"
        if dihedral and h.pdq_variants:
            out["pdq_dihedral"] = h.pdq_variants
        if as_json:
            click.echo(json.dumps(out, sort_keys=True))
        else:
            click.echo(f"{f}")
            for k, v in out.items():
                if k != "file":
                    click.echo(f"  {k:<13} {v}")


@main.group()
def hashlist() -> None:
    """Build hash lists from files."""


@hashlist.command("build")
@click.option("--type", "hash_type", required=True, type=click.Choice(["pdq", "phash", "sha256", "md5", "sha1"]))
@click.option("--from", "src", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of files.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The list to write (CSV).")
@click.option("--name", default="local", show_default=True, help="The list name written in each row.")
@click.option("--variants/--no-variants", default=True, show_default=True,
              help="pdq/phash: also list a file's stored pixel order when it has an EXIF orientation tag, and the "
                   "picture inside a uniform border, under the same entry id (column `variant`).")
def hashlist_build(hash_type, src, out, name, variants) -> None:
    """Hash every file under --from into a CSV hash list (hash, type, entry_id, list, variant).

    A photo with an EXIF orientation tag is hashed as shown; its copies that lost the tag keep
    the stored pixel order, which is listed as a second row of the same entry (variant
    `stored_pixels`). A file with a uniform border also lists the picture inside it (`trimmed`).
    """
    from pipeline.fileio import atomic_write_bytes
    from pipeline.safety.imagehash_stage import hash_image, summarize
    from pipeline.safety.perceptual import PDQ_MIN_QUALITY

    perceptual = hash_type in ("pdq", "phash")
    rows, skipped, hashed = [], [], []
    for p in sorted(q for q in Path(src).rglob("*") if q.is_file()):
        h = hash_image(p.read_bytes(), variants=variants and perceptual)
        hashed.append(h)
        value = getattr(h, hash_type)
        if hash_type == "pdq" and (value is None or (h.pdq_quality or 0) < PDQ_MIN_QUALITY):
            skipped.append(f"{p}: {h.rejected or f'PDQ quality {h.pdq_quality} < {PDQ_MIN_QUALITY}'}")
            continue
        if value is None:
            skipped.append(f"{p}: {h.rejected}")
            continue
        entry = p.relative_to(src)
        listed = {value: ""}
        if variants and perceptual:
            stored = h.pdq_stored if hash_type == "pdq" else h.phash_stored
            trimmed = (h.pdq_trimmed if (h.pdq_trimmed_quality or 0) >= PDQ_MIN_QUALITY else None) \
                if hash_type == "pdq" else h.phash_trimmed
            for extra, variant in ((stored, "stored_pixels"), (trimmed[0] if trimmed else None, "trimmed")):
                if extra is not None:
                    listed.setdefault(extra, variant)
        rows += [f"{v},{hash_type},{entry},{name},{variant}\n" for v, variant in listed.items()]
    atomic_write_bytes(out, ("hash,type,entry_id,list,variant\n" + "".join(rows)).encode())
    click.echo(f"wrote {len(rows)} {hash_type} hash(es) to {out}")
    counts = summarize(hashed)
    tagged = sum(n for k, n in counts["exif_orientation"].items() if k != "1")
    click.echo(f"files: {counts['images']}, rejected: {counts['rejected']}, PDQ unhashable: {counts['pdq_unhashable']}, "
               f"with an EXIF orientation tag: {tagged}, EXIF problems: {counts['exif_problems']}, "
               f"uniform border: {counts['border_trimmed']}")
    for sk in skipped:
        click.echo(f"skipped {sk}", err=True)


@main.group()
def index() -> None:
    """The corpus index of published runs (configured as `state: {dir: ...}`)."""


@index.command("rebuild")
@click.argument("state_dir")  # a path or an fsspec URL (s3://bucket/state): not a click.Path
@click.argument("run_dirs", nargs=-1, required=True)  # paths or URLs of runs on a store
def index_rebuild(state_dir, run_dirs) -> None:
    """Recreate the index in STATE_DIR (a directory or an fsspec URL) from the published RUN_DIRS
    (directories or URLs).

    Each run is checked against its manifest first.
    """
    from contextlib import ExitStack

    from pipeline.dedup.index import rebuild

    with exits_on_error(), ExitStack() as stack:
        local = [stack.enter_context(readable_run(d)) for d in run_dirs]
        idx = rebuild(state_dir, local, names=[d if "://" in d else str(Path(d).resolve()) for d in run_dirs])
    s = idx.summary()
    click.echo(f"index {s['path']}: {len(s['runs'])} run(s), {s['records']:,} records")


from pipeline.cli_pii import pii as _pii_group  # noqa: E402 - registered after `main` exists
from pipeline.cli_prefect import prefect_server as _prefect_server_group  # noqa: E402
from pipeline.cli_sample import sample as _sample_command  # noqa: E402

main.add_command(_pii_group)
main.add_command(_prefect_server_group)
main.add_command(_sample_command)

if __name__ == "__main__":
    main()
