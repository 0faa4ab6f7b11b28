"""``jitter_seconds``: each due time moves later by a planned amount in ``[0, jitter)``, the
same in ``plan()`` and in the live schedule, spread over the window, different per worker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from harness import Harness, noop
from orchestrator import WorkerOrchestrator
from orchestrator.config import build_config
from orchestrator.errors import ConfigError
from orchestrator.execution.inline import InlineExecutor
from orchestrator.schedule import Schedule

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 28, 0, 0, tzinfo=BERLIN)


def test_plan_is_the_same_twice_and_spreads_a_shared_cron_line_over_the_window():
    orch = WorkerOrchestrator(executor=InlineExecutor(), timezone="Europe/Berlin")
    for index in range(40):
        orch.register_worker(f"report-{index}", noop, cron="0 3 * * *", jitter_seconds=600)
    first = orch.plan(START, hours=48)
    assert first == orch.plan(START, hours=48)  # planned, not drawn
    assert len(first) == 80
    for when, _name in first:
        nominal = when.replace(hour=3, minute=0, second=0, microsecond=0)
        assert nominal <= when < nominal + timedelta(seconds=600)
    offsets = sorted((when - when.replace(hour=3, minute=0, second=0, microsecond=0))
                     .total_seconds() for when, _name in first)
    assert len(set(offsets)) == 80  # no two in the same instant
    assert offsets[0] < 60 and offsets[-1] > 540  # spread over the whole window
    by_worker = {}
    for when, name in first:
        by_worker.setdefault(name, []).append(when.time())
    assert sum(times[0] != times[1] for times in by_worker.values()) >= 35  # day by day too


def test_the_live_schedule_fires_at_the_planned_jittered_times():
    workers = {"nightly": {"cron": "30 2 * * *", "timezone": "Europe/Berlin",
                           "jitter_seconds": 900},
               "often": {"interval_seconds": 5400, "jitter_seconds": 120},
               "plain": {"interval_seconds": 3600}}
    h = Harness(start=START.astimezone(timezone.utc), zone="Europe/Berlin")
    for name, options in workers.items():
        h.add(name, noop, **options)
    end = START + timedelta(hours=72)
    planned = h.plan(end)
    live = h.run_until(end)
    assert [(t.astimezone(timezone.utc), n) for t, n in planned] == live
    nightly = [t for t, n in planned if n == "nightly"]
    assert len(nightly) == 3 and all(t.minute >= 30 or t.hour == 3 for t in nightly)
    plain = [t for t, n in planned if n == "plain"]
    assert all(t.minute == 0 and t.second == 0 for t in plain)  # no jitter, no move


def test_a_due_time_read_back_after_a_restart_is_followed_by_the_same_next_one():
    config = build_config("hourly", noop, None, {"cron": "0 * * * *", "jitter_seconds": 1800})
    anchor = START.astimezone(timezone.utc)
    running = Schedule(config, anchor, BERLIN)
    due = running.first_due(anchor)
    following = running.next_due(due)
    restarted = Schedule(config, anchor, BERLIN)  # knows nothing of what the first produced
    assert restarted.next_due(due) == following


@pytest.mark.parametrize("options, message", [
    ({"execution_mode": "triggered", "jitter_seconds": 5}, "has no effect for a triggered"),
    ({"interval_seconds": 60, "jitter_seconds": 60}, "must be less than interval_seconds"),
    ({"cron": "0 3 * * *", "jitter_seconds": 90_000}, "must be at most 86400"),
    ({"cron": "0 3 * * *", "jitter_seconds": -1}, "must be greater than 0"),
    ({"cron": "0 3 * * *", "jitter_seconds": True}, "must be a number of seconds"),
    ({"cron": "0 3 * * *", "jitter_seconds": float("nan")}, "jitter_seconds"),
])
def test_bad_jitter_is_one_line_naming_worker_and_field(options, message):
    with pytest.raises(ConfigError) as caught:
        build_config("report", noop, None, options)
    text = str(caught.value)
    assert text.startswith("worker 'report': jitter_seconds ") and message in text
    assert "\n" not in text
