"""Prefect settings for running offline (no analytics) and the choice of the Prefect API a run uses.

Import before `prefect`. Which API `hygiene run` talks to, first match wins:

1. `--prefect-api` on the command line, else `$HYGIENE_PREFECT_API`: `local` (the persistent
   local server of `flows.api_server`), `ephemeral` (Prefect's own temporary API in the run's
   process, 10-15 s a run) or an `http(s)://.../api` URL;
2. a PREFECT_API_URL the user configured for Prefect (environment, profile, prefect.toml): used as is;
3. `local`.

Usage::

    from flows.settings import prefect_api
    with prefect_api("local") as api:    # or None: the choice above
        manifest = run_flow(cfg)
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal, Mapping

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The ephemeral API can take well over the default 20 s to start on a fresh machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
}

API_ENV = "HYGIENE_PREFECT_API"
# Set by the user, these keep flow-run heartbeats on (see `prefect_api`).
HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def apply_offline_defaults() -> None:
    """Set the offline defaults unless the user already chose a value."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class ApiChoice:
    """The Prefect API a run uses: `kind` user (the user's PREFECT_API_URL, untouched), url (one
    given to hygiene), local or ephemeral; `source` says where the choice came from."""

    kind: Literal["user", "url", "local", "ephemeral"]
    url: str | None
    source: str


def resolve_api(explicit: str | None, env: Mapping[str, str], configured_url: str | None) -> ApiChoice:
    """The API to use: `explicit` (--prefect-api), else $HYGIENE_PREFECT_API, else the user's
    `configured_url` (Prefect's own PREFECT_API_URL setting), else the local server."""
    source = "--prefect-api" if explicit else API_ENV
    value = (explicit or env.get(API_ENV) or "").strip()
    if not value:
        if configured_url:
            return ApiChoice("user", configured_url, "PREFECT_API_URL")
        return ApiChoice("local", None, "default")
    if value in ("local", "ephemeral"):
        return ApiChoice(value, None, source)
    if value.startswith(("http://", "https://")):
        return ApiChoice("url", value.rstrip("/"), source)
    raise ConfigError(f"{source}: {value!r} is not a Prefect API; use local (a persistent server on 127.0.0.1), "
                      f"ephemeral (a temporary API per run) or the API's URL, e.g. http://127.0.0.1:4200/api")


def _point_process_at(url: str | None) -> None:
    """Make `url` this process's Prefect API (None: no API, so Prefect starts its ephemeral one).

    Through the environment and Prefect's process-wide settings, not only a settings context:
    Prefect's background workers (events, logs) and child processes read those, and one that saw
    no URL would start an ephemeral API of its own while the flow ends."""
    from prefect.context import refresh_global_settings_context

    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


@contextmanager
def prefect_api(explicit: str | None = None, notify: Callable[[str], None] | None = None) -> Iterator[ApiChoice]:
    """Point this process at the chosen Prefect API (starting the local server if needed, which
    `notify` hears about) while its flow runs. Meant for a process that runs one flow and exits
    (`hygiene run`): the URL stays set for the rest of the process, so that Prefect's shutdown
    flushes reach the same API.

    With the local or ephemeral API, flow-run heartbeats are off unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    is set: nothing on those servers reads them (they feed crash-detection automations that a
    user sets up on their own server), and stopping their thread costs up to 1 s per run.
    """
    from prefect.settings import get_current_settings, temporary_settings

    choice = resolve_api(explicit, os.environ, get_current_settings().api.url)
    if choice.kind == "local":
        from flows.api_server import ensure_server

        choice = replace(choice, url=ensure_server(notify=notify).url)
    if choice.kind in ("local", "url"):
        _point_process_at(choice.url)
    elif choice.kind == "ephemeral":
        _point_process_at(None)
        configured = get_current_settings().api.url
        if configured:
            raise ConfigError(f"{choice.source}: ephemeral asked for, but Prefect's profile sets PREFECT_API_URL={configured}; "
                              f"remove it (`prefect config unset PREFECT_API_URL`) or use that API")
    log.info("Prefect API: %s (%s, from %s)", choice.url or "ephemeral", choice.kind, choice.source)
    own_server = choice.kind in ("local", "ephemeral")
    updates = {"flows.heartbeat_frequency": None} if own_server and not any(k in os.environ for k in HEARTBEAT_ENV) else {}
    with temporary_settings(updates=updates):
        yield choice
