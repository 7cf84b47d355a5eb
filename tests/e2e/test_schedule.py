"""The deployment takes its cron schedule from the config, and fires when the config says."""

from __future__ import annotations

from datetime import datetime, timezone

from pipeline.config import parse_config
from tests.conftest import REPO


def cfg(cron: str, tz: str):
    return parse_config({"sources": [{"name": "a", "kind": "jsonl", "paths": ["/x"]}],
                         "schedule": {"cron": cron, "timezone": tz}})


def test_the_deployment_carries_the_configured_cron_and_timezone():
    from flows.serve import build_deployment

    dep = build_deployment(str(REPO / "configs" / "sample.yaml"), cfg("30 2 * * 1-5", "Europe/Berlin"), "nightly")
    assert dep.name == "nightly"
    (sched,) = dep.schedules
    assert sched.schedule.cron == "30 2 * * 1-5" and sched.schedule.timezone == "Europe/Berlin"
    assert dep.parameters == {"config_path": str(REPO / "configs" / "sample.yaml")}


def test_next_fire_times_follow_the_cron_in_its_timezone_across_a_dst_change():
    from flows.serve import next_fire_times

    # Berlin leaves summer time on 2026-10-25 at 03:00 CEST: 02:30 local is 00:30 UTC until then
    # (the first of that day's two 02:30s included) and 01:30 UTC after.
    times = next_fire_times(cfg("30 2 * * *", "Europe/Berlin"), 3, after=datetime(2026, 10, 23, 12, tzinfo=timezone.utc))
    assert [t.astimezone(timezone.utc).strftime("%m-%d %H:%M") for t in times] == ["10-24 00:30", "10-25 00:30", "10-26 01:30"]
    assert all(t.hour == 2 and t.minute == 30 for t in times)
