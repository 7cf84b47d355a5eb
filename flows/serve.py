"""A Prefect deployment that runs a config on its cron schedule.

Usage::

    hygiene schedule configs/sample.yaml             # serve until interrupted
    hygiene schedule configs/sample.yaml --next 5    # print the next fire times
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from flows.settings import apply_offline_defaults

apply_offline_defaults()

from prefect import flow, serve  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

from pipeline.config import RunConfig, load_config  # noqa: E402


@flow(name="hygiene-scheduled")
def scheduled_clean(config_path: str) -> dict:
    """Load the config file at run time (so edits apply to the next run) and run the cleaning flow."""
    from flows.clean import clean_flow, task_runner_for

    cfg = load_config(config_path)
    return clean_flow.with_options(task_runner=task_runner_for(cfg))(cfg.model_dump(mode="json"))


def build_deployment(config_path: str, cfg: RunConfig, name: str | None = None):
    """The deployment for `cfg`: its cron and timezone come from the config's `schedule` section."""
    return scheduled_clean.to_deployment(
        name=name or cfg.name,
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        parameters={"config_path": str(Path(config_path).resolve())},
        description=f"hygiene run of {Path(config_path).name} on cron '{cfg.schedule.cron}' ({cfg.schedule.timezone})",
        tags=["hygiene"],
    )


def next_fire_times(cfg: RunConfig, n: int, after: datetime | None = None) -> list[datetime]:
    """The next `n` times the deployment fires, computed by Prefect's own scheduler schema."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=cfg.schedule.cron, timezone=cfg.schedule.timezone)
    start = after or datetime.now(timezone.utc)
    return [d.astimezone(ZoneInfo(cfg.schedule.timezone)) for d in asyncio.run(schedule.get_dates(n=n, start=start))]


def serve_config(config_path: str, cfg: RunConfig, name: str | None = None) -> None:
    """Serve the deployment (blocks; needs a Prefect API, e.g. `prefect server start`)."""
    serve(build_deployment(config_path, cfg, name))
