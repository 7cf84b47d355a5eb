"""`hygiene prefect-server ...`: the persistent local Prefect API that `hygiene run` starts and reuses.

Usage::

    hygiene prefect-server status        # where it is, its pid, port and UI, healthy or not
    hygiene prefect-server start         # start it now (a run would start it anyway)
    hygiene prefect-server stop          # stop it; the next `hygiene run` starts it again
"""

from __future__ import annotations

import json
import sys

import click

from pipeline.cli_common import exits_on_error


@click.group("prefect-server")
def prefect_server() -> None:
    """The local Prefect API (and UI) that `hygiene run` starts on 127.0.0.1 and reuses.

    It lives in $HYGIENE_PREFECT_HOME (default ~/.cache/hygiene/prefect): its database, server.json
    (pid, port) and server.log. Not used when PREFECT_API_URL is set or with --prefect-api ephemeral
    (or HYGIENE_PREFECT_API=ephemeral).
    """


@prefect_server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json) -> None:
    """Show the local server. Exit 0 when it runs and answers, 1 otherwise."""
    from flows.api_server import server_status

    s = server_status()
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
    elif not s["recorded"]:
        click.echo(f"no local Prefect API recorded in {s['home']}")
    else:
        state = "running" if s["healthy"] else ("running, NOT answering /health" if s["running"] else "not running (stale record)")
        click.echo(f"local Prefect API {state}\n  api   {s['url']}\n  ui    {s['ui_url']}\n  pid   {s['pid']}\n"
                   f"  since {s['started_at']} (Prefect {s['prefect_version']})\n  home  {s['home']}\n  log   {s['log']}")
    sys.exit(0 if s["healthy"] else 1)


@prefect_server.command("start")
def start() -> None:
    """Start the local server unless it already runs; print its API and UI addresses."""
    from flows.api_server import ensure_server

    with exits_on_error():
        record = ensure_server()
    click.echo(f"local Prefect API {record.url} (UI {record.ui_url}, pid {record.pid})")


@prefect_server.command("stop")
def stop() -> None:
    """Stop the local server that hygiene started (only that process); its database is kept."""
    from flows.api_server import server_home, stop_server

    with exits_on_error():
        record = stop_server()
    if record is None:
        click.echo(f"no local Prefect API running (home {server_home()})")
    else:
        click.echo(f"stopped the local Prefect API (pid {record.pid}, port {record.port})")
