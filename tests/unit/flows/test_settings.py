"""Which Prefect API a run uses: the hygiene switch, then the user's PREFECT_API_URL, then local."""

from __future__ import annotations

import pytest

from flows.settings import API_ENV, resolve_api
from pipeline.errors import ConfigError


@pytest.mark.parametrize("explicit, env, configured, expected", [
    (None, {}, None, ("local", None, "default")),
    (None, {}, "http://server:4200/api", ("user", "http://server:4200/api", "PREFECT_API_URL")),
    (None, {API_ENV: "ephemeral"}, None, ("ephemeral", None, API_ENV)),
    (None, {API_ENV: "local"}, "http://server:4200/api", ("local", None, API_ENV)),
    ("ephemeral", {API_ENV: "local"}, None, ("ephemeral", None, "--prefect-api")),
    ("http://127.0.0.1:4200/api/", {}, "http://server:4200/api", ("url", "http://127.0.0.1:4200/api", "--prefect-api")),
    (None, {API_ENV: "  "}, None, ("local", None, "default")),
])
def test_the_hygiene_switch_wins_then_the_users_url_then_the_local_server(explicit, env, configured, expected):
    choice = resolve_api(explicit, env, configured)
    assert (choice.kind, choice.url, choice.source) == expected


def test_an_unknown_choice_names_the_switch_and_the_valid_values():
    with pytest.raises(ConfigError, match=f"{API_ENV}: 'lokal'.*local.*ephemeral.*URL"):
        resolve_api(None, {API_ENV: "lokal"}, None)
