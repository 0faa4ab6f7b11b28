"""S4 timing through the orchestrator: plan() and the live schedule are one code path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from harness import Harness, noop
from orchestrator import WorkerOrchestrator
from orchestrator.execution.inline import InlineExecutor

BERLIN = ZoneInfo("Europe/Berlin")


def test_plan_equals_what_the_live_dispatcher_does_across_a_dst_day():
    start = datetime(2026, 3, 28, 0, 0, tzinfo=BERLIN)
    workers = {
        "nightly": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
        "quarter": {"cron": "*/15 1-3 * * *", "timezone": "Europe/Berlin"},
        "weekday": {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
        "sunday": {"cron": "0 7 * * 0", "timezone": "Europe/Berlin"},
        "often": {"interval_seconds": 5400},
    }
    h = Harness(start=start.astimezone(timezone.utc), zone="Europe/Berlin")
    for name, options in workers.items():
        h.add(name, noop, **options)
    end = start + timedelta(hours=72)
    planned = h.plan(end)
    live = h.run_until(end)
    assert [(t.astimezone(timezone.utc), n) for t, n in planned] == \
        [(t.astimezone(timezone.utc), n) for t, n in live]
    nightly = [t for t, n in planned if n == "nightly"]
    # 02:30 does not exist on 2026-03-29: it runs once, right after the jump
    assert nightly == [datetime(2026, 3, 28, 2, 30, tzinfo=BERLIN),
                       datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),
                       datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)]
    assert nightly[1].utcoffset() == timedelta(hours=2)
    sundays = [t for t, n in planned if n == "sunday"]
    assert sundays == [datetime(2026, 3, 29, 7, 0, tzinfo=BERLIN)]
    assert [t.day for t, n in planned if n == "weekday"] == [30]


def test_plan_on_the_fall_back_day_runs_fixed_times_once():
    orch = WorkerOrchestrator(executor=InlineExecutor(), timezone="Europe/Berlin")
    orch.register_worker("nightly", noop, cron="30 2 * * *")
    orch.register_worker("half-hourly", noop, cron="*/30 2 * * *")
    plan = orch.plan(datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN), hours=24)
    nightly = [t for t, n in plan if n == "nightly"]
    assert nightly == [datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)]
    assert nightly[0].utcoffset() == timedelta(hours=2)  # the first 02:30
    half = [t.astimezone(timezone.utc).strftime("%H:%M") for t, n in plan
            if n == "half-hourly"]
    assert half == ["00:00", "00:30", "01:00", "01:30"]  # 02:00 and 02:30, twice each


def test_plan_is_sorted_and_bounded_and_uses_the_worker_zone():
    orch = WorkerOrchestrator(executor=InlineExecutor(), timezone="UTC")
    orch.register_worker("a", noop, interval_seconds=3600)
    orch.register_worker("b", noop, cron="@daily", timezone="America/New_York")
    orch.register_worker("c", noop, execution_mode="triggered")
    start = datetime(2026, 6, 1, 0, 0, tzinfo=timezone.utc)
    plan = orch.plan(start, hours=24)
    assert plan == sorted(plan, key=lambda item: (item[0], item[1]))
    assert all(start <= t < start + timedelta(hours=24) for t, _ in plan)
    assert [n for _, n in plan].count("a") == 24
    [daily] = [t for t, n in plan if n == "b"]
    assert daily == datetime(2026, 6, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    assert "c" not in {n for _, n in plan}


def test_plan_defaults_to_now_and_reads_naive_start_as_local_time():
    orch = WorkerOrchestrator(executor=InlineExecutor(), timezone="Europe/Berlin")
    orch.register_worker("hourly", noop, cron="@hourly")
    with freeze_time("2026-07-01 10:20:00+00:00"):
        plan = orch.plan(hours=2)
    assert [t.astimezone(timezone.utc).strftime("%H:%M") for t, _ in plan] == ["11:00",
                                                                               "12:00"]
    naive = orch.plan(datetime(2026, 7, 1, 12, 20), hours=1)
    assert naive == [(datetime(2026, 7, 1, 13, 0, tzinfo=BERLIN), "hourly")]


def test_cron_weekday_conventions_follow_crontab_not_apscheduler():
    orch = WorkerOrchestrator(executor=InlineExecutor(), timezone="UTC")
    orch.register_worker("sun0", noop, cron="0 3 * * 0")
    orch.register_worker("sun7", noop, cron="47 6 * * 7")
    orch.register_worker("weekdays", noop, cron="0 9 * * 1-5")
    orch.register_worker("either", noop, cron="0 0 13 * 5")   # the 13th OR any Friday
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)        # a Sunday
    plan = orch.plan(start, hours=24 * 14)
    days = lambda name: [t.strftime("%a %d") for t, n in plan if n == name]  # noqa: E731
    assert days("sun0") == ["Sun 01", "Sun 08"]
    assert days("sun7") == ["Sun 01", "Sun 08"]
    assert days("weekdays") == ["Mon 02", "Tue 03", "Wed 04", "Thu 05", "Fri 06",
                                "Mon 09", "Tue 10", "Wed 11", "Thu 12", "Fri 13"]
    assert days("either") == ["Fri 06", "Fri 13"]


@pytest.mark.parametrize("hours", [0, -1, "2"])
def test_plan_rejects_bad_hours(hours):
    orch = WorkerOrchestrator(executor=InlineExecutor())
    with pytest.raises(ValueError, match="hours must be a positive number"):
        orch.plan(hours=hours)
