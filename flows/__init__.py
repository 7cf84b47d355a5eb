"""Prefect flows and deployments over the `pipeline` library."""

from flows.settings import apply_offline_defaults

apply_offline_defaults()
