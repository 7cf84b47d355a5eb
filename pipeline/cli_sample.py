"""`hygiene sample`: what a filter removed, read back from the inputs, for a steward to audit.

Usage::

    hygiene sample runs/sample --reason dropped_near_duplicate -n 5 --seed 1
    hygiene sample runs/sample --record long-002 --plain
    hygiene sample runs/sample --reason dropped_short --json
"""

from __future__ import annotations

import sys

import click

from pipeline.cli_common import exits_on_error
from pipeline.errors import EXIT_USAGE
from pipeline.storage import readable_run

EXIT_REFUSED = 4
"""Exit code when a quarantined record was asked for (refused, nothing read)."""

_STYLE = {"-": "red strike", "+": "bold green"}
def _content_lines(c: dict) -> tuple[str, str | None]:
    """(a one-line description, the text to print or None)."""
    if c.get("status") not in ("ok", "unverified"):
        return f"[{c.get('status')}] {c.get('note') or ''}".strip(), None
    verified = "sha256 verified" if c["status"] == "ok" else "not verified (the ledger has no digest)"
    if c.get("kind") == "image":
        dims = f"{c['width']}×{c['height']}, " if "width" in c else ""
        hashes = f", pdq {c['pdq']} (quality {c['pdq_quality']}), phash {c['phash']}" if c.get("pdq") else ""
        return f"image: {dims}{c['bytes']:,} bytes, sha256 {c['sha256']}{hashes} ({verified}; bytes not shown)", None
    cut = f", first {len(c['text']):,} shown" if c.get("truncated") else ""
    masked = "" if c.get("masked_spans") is None else f", {c['masked_spans']} PII span(s) masked"
    return f"text: {c['chars']:,} chars{cut} ({verified}{masked})", c["text"]


def show_samples(s: dict, console, plain: bool) -> None:
    """Print a sample: per record its ids, decision, evidence, text, and the diff against its survivor."""
    from rich.text import Text

    def line(text: str = "", style: str | None = None) -> None:
        console.print(Text(text, style=style or ""), soft_wrap=True)

    asked = s["asked"] if isinstance(s["asked"], str) else ", ".join(s["asked"])
    line(f"run {s['run_id']}: {s['matching']:,} record(s) match {asked!r} (by {s['matched_by']}); "
         f"showing {len(s['records'])}, seed {s['seed']}", None if plain else "bold")
    if s["quarantined_excluded"]:
        line(f"{s['quarantined_excluded']} quarantined record(s) left out: never shown; see {s['incident_file']}")
    mode = s["masking"]
    line(f"personal data: {mode['note']}", None if plain or mode["mode"] != "off" else "bold red")
    for i, r in enumerate(s["records"], 1):
        line()
        line(f"── {i}/{len(s['records'])} {r['record_id']}  ({r['source']}: {r['location']} row {r['row']})",
             None if plain else "bold cyan")
        line(f"decision {r['decision']} ({r['category']}) at {r['stage']}: {r['reason'] or '-'}")
        if r["evidence"]:
            line("evidence: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in r["evidence"].items()))
        desc, text = _content_lines(r["content"])
        line(desc)
        if text is not None:
            line(text)
        sv = r.get("survivor")
        if sv:
            where = f" ({sv['source']}: {sv['location']} row {sv['row']}, {sv['decision']})" if sv.get("in_this_run") and "source" in sv else ""
            sdesc, _ = _content_lines(sv["content"])
            line(f"survivor {sv['record_id']}{where}: {sdesc}")
        if "phash_distance" in r:
            line(f"pHash distance to the survivor: {r['phash_distance']} bits")
        if r.get("diff") is not None:
            from pipeline.audit.sample import condensed, visible

            pieces = visible(condensed(r["diff"]))
            if all(op == "=" for op, _ in r["diff"]):
                over = f" in their first {r['diff_chars']:,} characters" if r.get("diff_chars") else ""
                line(f"diff: identical to the survivor's text{over} (after masking)")
                continue
            if r.get("diff_chars"):
                line(f"(compared over the first {r['diff_chars']:,} characters)")
            line("diff (survivor → this record; [-only in the survivor-] {+only in this record+}):" if plain else
                 "diff (survivor → this record; red struck: only in the survivor, green: only in this record):")
            if plain:
                from pipeline.audit.sample import plain_diff

                line(plain_diff(pieces))
            else:
                t = Text()
                for op, piece in pieces:
                    t.append(piece, style=_STYLE.get(op, ""))
                console.print(t, soft_wrap=True)


@click.command("sample")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--reason", help="A decision of the run (e.g. dropped_near_duplicate, or a filter's own), a prefix "
              "of one, or the start of a reason string.")
@click.option("--record", "record_ids", multiple=True, metavar="ID", help="Show this record instead (repeatable).")
@click.option("-n", "n", default=5, show_default=True, type=click.IntRange(min=1), help="How many records to show.")
@click.option("--seed", default=0, show_default=True, help="The sample's seed: the same seed shows the same records.")
@click.option("--max-chars", default=2000, show_default=True, type=click.IntRange(min=20),
              help="Show at most this many characters of each text.")
@click.option("--plain", is_flag=True, help="Mark differences as [-removed-]{+added+} (the default when not a terminal).")
@click.option("--no-mask", is_flag=True, help="Show personal data in clear (printed with a warning; default: masked).")
@click.option("--json", "as_json", is_flag=True, help="Print the sample as JSON.")
def sample(run_dir, reason, record_ids, n, seed, max_chars, plain, no_mask, as_json) -> None:
    """Show N records that RUN_DIR removed for a reason, read back from the inputs, with their evidence.

    Near and exact duplicates come with their survivor and the differences marked; personal data
    is masked as the run's PII policy would (the default recognizers if the run had no PII stage);
    a record whose input changed since the run is reported, never shown. Quarantined records are
    never shown or read back: asking for one exits with code 4 and names the incident file.
    """
    from pathlib import Path

    from pipeline.audit.inspect import to_json
    from pipeline.audit.sample import QuarantinedRecordError, UnknownReasonError, sample_records

    if bool(reason) == bool(record_ids):
        raise click.UsageError("give either --reason (a decision of the run) or --record ID")
    if no_mask:
        click.echo("warning: --no-mask shows personal data in clear; do not paste this output into tickets or chats",
                   err=True)
    with exits_on_error():
        try:
            with readable_run(run_dir) as local:
                s = sample_records(local, reason, record_ids=tuple(record_ids), n=n, seed=seed,
                                   max_chars=max_chars, mask=not no_mask)
        except QuarantinedRecordError as e:
            click.echo(f"refused: {e}", err=True)
            sys.exit(EXIT_REFUSED)
        except UnknownReasonError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(to_json(s))
        return
    from rich.console import Console

    console = Console(highlight=False)
    show_samples(s, console, plain or not console.is_terminal)
