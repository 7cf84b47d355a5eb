"""`hygiene pii ...`: PII commands (detection only; nothing is redacted or written but offsets).

Usage::

    hygiene pii scan runs/sample --output spans.jsonl
    hygiene pii scan data/*.jsonl --text-field body --config configs/sample.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli_common import exits_on_error
from pipeline.errors import EXIT_USAGE, ConfigError


@click.group()
def pii() -> None:
    """Detect personal data (PII) with the pipeline's Presidio engine."""


@pii.command("scan")
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write one span per line (JSONL): "
              "record_id, field, entity_type, start, end, score. Never the values.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Take the `pii:` settings from this run config (default: the run's own, or the defaults).")
@click.option("--text-field", default="text", show_default=True, help="The text column of plain inputs.")
@click.option("--id-field", default=None, help="The id column of plain inputs (default: file:row).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def scan(paths, output, config_path, text_field, id_field, as_json) -> None:
    """Scan PATHS (inputs of any supported format, or finished run directories) for residual PII."""
    from pipeline.pii.scan import scan_paths

    with exits_on_error(config=EXIT_USAGE):
        cfg = None
        if config_path:
            from pipeline.config import load_config

            cfg = load_config(config_path).pii
            if cfg is None:
                raise ConfigError(f"{config_path}: has no `pii:` section")
        summary = scan_paths(list(paths), cfg, text_field=text_field, id_field=id_field,
                             output=Path(output) if output else None)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PII in {summary['records']:,} records ({summary['records_with_pii']:,} with any)")
    for col in ("entity type", "spans", "records", "% of records"):
        table.add_column(col, justify="left" if col == "entity type" else "right")
    for entity, c in summary["by_entity"].items():
        share = 100 * c["records"] / summary["records"] if summary["records"] else 0.0
        table.add_row(entity, f"{c['spans']:,}", f"{c['records']:,}", f"{share:.2f}")
    console = Console()
    console.print(table)
    model = summary["engine"]["model"]
    console.print(f"fields: {', '.join(summary['fields'])}; model {model.get('name')} {model.get('version')}"
                  + (f"; spans written to {summary['output']}" if summary["output"] else ""))
