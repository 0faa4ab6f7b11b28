"""A worker on a systemd calendar event: what plan() shows is what the live dispatcher does,
across a daylight-saving day; ``check`` prints systemd's normalized form; bad expressions
are one line naming worker, option and fix."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from harness import Harness, noop
from orchestrator.config import build_config
from orchestrator.errors import ConfigError
from test_cli import orchestrator, write

BERLIN = ZoneInfo("Europe/Berlin")


def test_plan_equals_the_live_dispatcher_across_the_spring_forward_day():
    start = datetime(2024, 3, 29, 0, 0, tzinfo=BERLIN)
    workers = {
        "weekdays": {"calendar": "Mon..Fri *-*-* 02:30:00"},
        "quarter": {"calendar": "*-*-* 01..03:0/15:00"},
        "last-day": {"calendar": "*-*~01 23:00"},
        "utc-noon": {"calendar": "12:00 UTC"},
        "spread": {"calendar": "daily", "jitter_seconds": 600},
    }
    h = Harness(start=start.astimezone(timezone.utc), zone="Europe/Berlin")
    for name, options in workers.items():
        h.add(name, noop, **options)
    end = start + timedelta(hours=96)
    planned = h.plan(end)
    live = h.run_until(end)
    assert [(t.astimezone(timezone.utc), n) for t, n in planned] == live
    # 2024-03-29 is a Friday, 04-01 a Monday: the weekend is skipped (weekdays ANDed)
    assert [t.date().isoformat() for t, n in planned if n == "weekdays"] == \
        ["2024-03-29", "2024-04-01"]
    assert [t for t, n in planned if n == "last-day"] == [datetime(2024, 3, 31, 23, 0,
                                                                   tzinfo=BERLIN)]
    # 02:00-02:59 does not exist on 2024-03-31: systemd's quarter hours jump from 01:45 to 03:00
    march_31 = [t.strftime("%H:%M") for t, n in planned if n == "quarter" and t.day == 31]
    assert march_31 == ["01:00", "01:15", "01:30", "01:45", "03:00", "03:15", "03:30", "03:45"]
    assert all(t.utcoffset() == timedelta(0) and t.hour == 12
               for t, n in planned if n == "utc-noon")


def test_check_prints_systemds_normalized_form(tmp_path):
    config = write(tmp_path, """\
        [workers.report]
        command = "true"
        calendar = "mon..fri 2:0"

        [workers.close-month]
        command = "true"
        calendar = "*-*~1 23:00 Europe/Berlin"
        """)
    result = orchestrator("check", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "calendar Mon..Fri *-*-* 02:00:00" in result.stdout
    assert "calendar *-*~01 23:00:00 Europe/Berlin" in result.stdout


@pytest.mark.parametrize("options, message", [
    ({"calendar": "Mon..Fry 02:00"}, "'Fry' is not a weekday"),
    ({"calendar": "*-02-30"}, "no month 02 has a day 30"),
    ({"calendar": 5}, "must be a systemd calendar event like"),
    ({"calendar": "daily", "cron": "0 3 * * *"}, "exclude each other"),
    ({"calendar": "daily", "execution_mode": "triggered"}, "has no effect for a triggered"),
])
def test_bad_calendar_is_one_line_naming_worker_and_field(options, message):
    with pytest.raises(ConfigError) as caught:
        build_config("report", noop, None, options)
    text = str(caught.value)
    assert text.startswith("worker 'report': calendar ") and message in text, text
    assert "\n" not in text
