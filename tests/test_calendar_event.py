"""systemd calendar events: parsing, normalized forms, elapses and daylight saving.

``systemd-analyze calendar`` (systemd 252) is the reference: for each expression its
"Normalized form:" and its next elapses from a fixed ``--base-time``, read from the
"(in UTC):" lines, must equal ours exactly. The expressions of one zone and base time go to
one systemd-analyze call, so the whole comparison costs a handful of subprocesses.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.calendar_event import (CalendarComponent, CalendarSpec, CalendarTrigger,
                                         parse_calendar)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

# -- the reference corpus -------------------------------------------------------------------

ORDINARY_BASE = "2024-03-30 12:00:00 UTC"
SPRING_FORWARD = "2024-03-30 23:50:00 UTC"  # 00:50 CET 2024-03-31; at 02:00 clocks go to 03:00
FALL_BACK_FIRST = "2024-10-27 00:10:00 UTC"  # 02:10 CEST, the first of the repeated hours
FALL_BACK_SECOND = "2024-10-27 01:10:00 UTC"  # 02:10 CET, the repeated hour itself

# (TZ, base time, iterations) -> expressions
CORPUS = {
    ("Europe/Berlin", ORDINARY_BASE, 8): [
        # weekdays, ANDed with the date
        "Mon..Fri 02:00", "Sat,Sun 10:30", "Mon,Wed..Fri *-*-* 08:15", "monday..FRIDAY 17:45",
        "Sat,Thu,Mon..Wed,Sat..Sun", "Fri *-*-13", "Mon-Fri 7:0:0",
        # '~': days from the month's end
        "*-*~01", "*-02~07/1", "Mon *-05~07/1", "*-*~1..3 06:00", "*-*~01,15",
        # lists, ranges, repetitions
        "2024..2030/2-*-01", "*-*-1/7 04:00", "*-*-1,15 12:00", "*-*-* 8..18:00",
        "*-*-* 8..18/2:30", "*-1/4-3 0:0", "12,14,13,12:20,10,30", "*:2/3",
        # seconds, also fractional
        "*-*-* 12:00:30", "*:*:0/20", "05:40:23.4200004/3.1700005", "*:*:10.5..20.4/2.5",
        # dates: two parts, two-digit years, a timestamp
        "12-25", "24-12-24 18:00", "2025-01-01", "@1735689600",
        # a zone suffix overrides TZ
        "*-*-* 06:00 America/New_York", "Mon *-*-* 09:00 Asia/Tokyo", "daily UTC",
        "*:0/30 utc",
        # every shorthand
        "minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually", "quarterly",
        "semiannually",
    ],
    # Europe/Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST.
    ("Europe/Berlin", SPRING_FORWARD, 8): [
        "*:0/15", "*-*-* 02:30:00", "*-*-* 02:*:00", "hourly", "*-*-* 2..3:0/20", "daily",
        "*-*-* 01:59:59", "*:0/45:30",
    ],
    # Europe/Berlin, 2024-10-27: 03:00 CEST goes back to 02:00 CET.
    ("Europe/Berlin", FALL_BACK_FIRST, 8): [
        "*:0/15", "*-*-* 02:30:00", "hourly", "*-*-* 2..3:0/20", "*-*-* 01:59:59",
        "*:*:0/30",
    ],
    ("Europe/Berlin", FALL_BACK_SECOND, 6): [
        "*:0/15", "*-*-* 02:30:00", "*-*-* 02:*:00",
    ],
    # A zone where the jump is 30 minutes, so resets land inside the gap (systemd's retry).
    ("Australia/Lord_Howe", "2024-10-05 15:11:17 UTC", 6): ["*:0/15", "*:0/20"],
    ("UTC", ORDINARY_BASE, 5): ["Mon..Fri 02:00", "*-*~01", "weekly"],
}
assert sum(len(expressions) for expressions in CORPUS.values()) >= 30

CASES = [(zone, base, count, expression)
         for (zone, base, count), expressions in CORPUS.items() for expression in expressions]


def case_id(case):
    zone, base, _, expression = case
    return f"{zone}@{base[:16]}:{expression}"


def run_systemd_analyze(zone: str, base: str, count: int, expressions: list[str]) -> list:
    """(normalized form, [elapse as naive UTC datetime]) per expression, in order."""
    completed = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", f"--iterations={count}", f"--base-time={base}",
         *expressions],
        env={**os.environ, "TZ": zone}, capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    results: list = []
    pending = None
    for line in completed.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Normalized form":
            results.append((value, []))
        elif key == "Next elapse" or key.startswith("Iter. #"):
            # With TZ=UTC there is no "(in UTC):" line; the line itself is in UTC.
            pending = None if value == "never" else value
            if pending is not None:
                results[-1][1].append(pending)
        elif key == "(in UTC)" and pending is not None:
            results[-1][1][-1] = value
    assert len(results) == len(expressions), completed.stdout
    return [(normalized, [_utc_line(value) for value in elapses])
            for normalized, elapses in results]


def _utc_line(value: str) -> datetime:
    assert value.endswith(" UTC"), value
    return datetime.strptime(value[4:-4], "%Y-%m-%d %H:%M:%S")  # drops "Sat "


@pytest.fixture(scope="module")
def reference():
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not on PATH; it is the reference for these tests")
    answers = {}
    for (zone, base, count), expressions in CORPUS.items():
        for expression, answer in zip(expressions,
                                      run_systemd_analyze(zone, base, count, expressions)):
            answers[zone, base, expression] = answer
    return answers


def our_elapses(expression: str, zone: str, base: str, count: int) -> list[datetime]:
    """The first ``count`` elapses strictly after ``base``, as systemd-analyze lists them."""
    trigger = CalendarTrigger(expression, ZoneInfo(zone))
    previous = datetime.strptime(base, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    result = []
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, previous)
        if previous is None:
            break
        result.append(previous.astimezone(UTC).replace(tzinfo=None, microsecond=0))
    return result


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_agrees_with_systemd_analyze(case, reference):
    zone, base, count, expression = case
    normalized, elapses = reference[zone, base, expression]
    assert parse_calendar(expression).normalized() == normalized
    assert our_elapses(expression, zone, base, count) == elapses


def test_where_systemd_gives_up_the_trigger_stops_too(reference):
    # Month 3/7 reaches 17, which mktime turns into May of the next year; systemd carries May's
    # DST flag back to January, lands in December and loops until it gives up.
    expression, base = "*-03/7-17", "2024-10-05 15:25:00 UTC"
    [(_, first)] = run_systemd_analyze("Europe/Berlin", base, 1, [expression])
    assert first == [datetime(2024, 10, 16, 22, 0)]
    completed = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", "--iterations=2", f"--base-time={base}", expression],
        env={**os.environ, "TZ": "Europe/Berlin"}, capture_output=True, text=True, timeout=30)
    assert "Infinite loop in calendar calculation" in completed.stderr
    assert our_elapses(expression, "Europe/Berlin", base, 2) == first
    assert our_elapses(expression, "UTC", base, 2) == [datetime(2024, 10, 17),
                                                       datetime(2025, 3, 17)]


# -- daylight saving, spelled out (the corpus above checks the same against systemd) -------

def berlin(*fields, fold=0):
    return datetime(*fields, tzinfo=BERLIN, fold=fold)


def fire_times(expression, zone, start, count):
    trigger = CalendarTrigger(expression, zone)
    result, previous = [], None
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, start)
        result.append(previous)
    return result


def test_a_wall_time_skipped_by_spring_forward_does_not_happen():
    start = berlin(2024, 3, 30, 12, 0)
    assert [moment.isoformat() for moment in fire_times("*-*-* 02:30", BERLIN, start, 2)] == [
        "2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]
    quarters = fire_times("*:0/15", BERLIN, berlin(2024, 3, 31, 1, 40), 3)
    assert [moment.isoformat() for moment in quarters] == [
        "2024-03-31T01:45:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:15:00+02:00"]


def test_a_repeated_wall_time_happens_once_in_the_occurrence_the_search_is_in():
    # From before the fold: the summer-time occurrence, and the repeated hour is skipped.
    quarters = fire_times("*:0/15", BERLIN, berlin(2024, 10, 27, 2, 40), 3)
    assert [moment.isoformat() for moment in quarters] == [
        "2024-10-27T02:45:00+02:00", "2024-10-27T03:00:00+01:00", "2024-10-27T03:15:00+01:00"]
    daily = fire_times("*-*-* 02:30", BERLIN, berlin(2024, 10, 27, 0, 0), 2)
    assert [moment.isoformat() for moment in daily] == [
        "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
    # From inside the repeated hour: it goes on in that hour.
    inside = berlin(2024, 10, 27, 2, 10, fold=1)
    assert fire_times("*:0/15", BERLIN, inside, 1)[0].isoformat() == \
        "2024-10-27T02:15:00+01:00"


# -- the trigger ------------------------------------------------------------------------------

def test_fire_time_is_inclusive_of_now_and_exclusive_of_previous():
    trigger = CalendarTrigger("hourly", BERLIN)
    ten = berlin(2026, 6, 1, 10, 0)
    assert trigger.get_next_fire_time(None, ten) == ten
    assert trigger.get_next_fire_time(None, ten + timedelta(microseconds=1)) == \
        berlin(2026, 6, 1, 11, 0)
    later = berlin(2026, 6, 3, 0, 0)  # with a previous fire time, now does not matter
    assert trigger.get_next_fire_time(ten, later) == berlin(2026, 6, 1, 11, 0)
    result = trigger.get_next_fire_time(None, datetime(2026, 6, 1, 7, 30, tzinfo=UTC))
    assert result.tzinfo is BERLIN and result.isoformat() == "2026-06-01T10:00:00+02:00"


def test_a_zone_in_the_expression_overrides_the_trigger_timezone():
    trigger = CalendarTrigger("*-*-* 06:00 America/New_York", BERLIN)
    assert trigger.timezone == NEW_YORK
    fire = trigger.get_next_fire_time(None, datetime(2026, 6, 1, tzinfo=UTC))
    assert fire.isoformat() == "2026-06-01T06:00:00-04:00"
    utc_trigger = CalendarTrigger("daily UTC", BERLIN)
    assert utc_trigger.timezone is UTC
    assert utc_trigger.get_next_fire_time(None, berlin(2026, 6, 1, 12, 0)) == \
        datetime(2026, 6, 2, tzinfo=UTC)


def test_weekdays_and_date_must_both_match():
    fridays = fire_times("Fri *-*-13", UTC, datetime(2026, 1, 1, tzinfo=UTC), 3)
    assert [moment.date().isoformat() for moment in fridays] == [
        "2026-02-13", "2026-03-13", "2026-11-13"]


def test_an_expression_in_the_past_stops_and_returns_none():
    trigger = CalendarTrigger("2020-01-01 12:00", BERLIN)
    assert trigger.get_next_fire_time(None, berlin(2024, 1, 1, 0, 0)) is None
    assert trigger.get_next_fire_time(None, berlin(2019, 6, 1, 0, 0)) == \
        berlin(2020, 1, 1, 12, 0)


def test_attributes_text_and_pickling():
    trigger = CalendarTrigger("  Mon..Fri 02:00 ", BERLIN)
    assert trigger.expression == "Mon..Fri 02:00"
    assert trigger.timezone is BERLIN
    assert isinstance(trigger.spec, CalendarSpec)
    assert str(trigger) == "calendar[Mon..Fri 02:00, timezone=Europe/Berlin]"
    assert repr(trigger) == \
        "<CalendarTrigger (expression='Mon..Fri 02:00', timezone='Europe/Berlin')>"
    copy = pickle.loads(pickle.dumps(trigger))
    assert (copy.expression, copy.timezone, copy.spec) == \
        (trigger.expression, trigger.timezone, trigger.spec)
    now = berlin(2026, 6, 5, 12, 0)
    assert copy.get_next_fire_time(None, now) == berlin(2026, 6, 8, 2, 0)


def test_trigger_refuses_naive_datetimes_and_bad_zones():
    trigger = CalendarTrigger("daily", BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        trigger.get_next_fire_time(None, datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="tzinfo"):
        CalendarTrigger("daily", "Europe/Berlin")


# -- parsing and normalization -------------------------------------------------------------

# The examples of systemd.time(7), "Examples for valid timestamps and their normalized form".
MAN_PAGE_EXAMPLES = [
    ("Sat,Thu,Mon..Wed,Sat..Sun", "Mon..Thu,Sat,Sun *-*-* 00:00:00"),
    ("Mon,Sun 12-*-* 2,1:23", "Mon,Sun 2012-*-* 01,02:23:00"),
    ("Wed *-1", "Wed *-*-01 00:00:00"),
    ("Wed..Wed,Wed *-1", "Wed *-*-01 00:00:00"),
    ("Wed, 17:48", "Wed *-*-* 17:48:00"),
    ("*-*-7 0:0:0", "*-*-07 00:00:00"),
    ("10-15", "*-10-15 00:00:00"),
    ("monday *-12-* 17:00", "Mon *-12-* 17:00:00"),
    ("Mon,Fri *-*-3,1,2 *:30:45", "Mon,Fri *-*-01,02,03 *:30:45"),
    ("12,14,13,12:20,10,30", "*-*-* 12,13,14:10,20,30:00"),
    ("12..14:10,20,30", "*-*-* 12..14:10,20,30:00"),
    ("mon,fri *-1/2-1,3 *:30:45", "Mon,Fri *-01/2-01,03 *:30:45"),
    ("03-05 08:05:40", "*-03-05 08:05:40"),
    ("05:40", "*-*-* 05:40:00"),
    ("Sat,Sun 12-05 08:05:40", "Sat,Sun *-12-05 08:05:40"),
    ("2003-03-05 05:40", "2003-03-05 05:40:00"),
    ("05:40:23.4200004/3.1700005", "*-*-* 05:40:23.420000/3.170001"),
    ("2003-02..04-05", "2003-02..04-05 00:00:00"),
    ("2003-03-05 05:40 UTC", "2003-03-05 05:40:00 UTC"),
    ("daily UTC", "*-*-* 00:00:00 UTC"),
    ("weekly Pacific/Auckland", "Mon *-*-* 00:00:00 Pacific/Auckland"),
    ("annually", "*-01-01 00:00:00"),
    ("*:2/3", "*-*-* *:02/3:00"),
    ("quarterly", "*-01,04,07,10-01 00:00:00"),
    ("semiannually", "*-01,07-01 00:00:00"),
    ("minutely", "*-*-* *:*:00"),
]


@pytest.mark.parametrize("expression, normalized", MAN_PAGE_EXAMPLES)
def test_man_page_normalized_forms(expression, normalized):
    assert parse_calendar(expression).normalized() == normalized


def test_spec_fields():
    spec = parse_calendar("Mon..Fri *-*~01..05/2 8..18:0/15:30.5")
    assert spec.weekdays == {0, 1, 2, 3, 4}
    assert spec.years == () and spec.months == ()
    assert spec.end_of_month
    assert spec.days == (CalendarComponent(1, 5, 2),)
    assert spec.hours == (CalendarComponent(8, 18, 1),)
    assert spec.minutes == (CalendarComponent(0, None, 15),)
    assert spec.microseconds == (CalendarComponent(30_500_000, None, 0),)
    assert spec.timezone is None
    assert parse_calendar("daily Europe/Berlin").timezone == "Europe/Berlin"
    assert parse_calendar("daily utc").timezone == "UTC"
    assert parse_calendar("Mon..Sun").weekdays == set(range(7))


@pytest.mark.parametrize("expression, normalized", [
    ("*-*-1..31/7", "*-*-01..29/7 00:00:00"),  # a range's end trimmed to the repetition
    ("1..5/10:00", "*-*-* 01:00:00"),  # a repetition that never repeats is dropped
    ("*:*:0/1", "*-*-* *:*:*"),
    ("*-*~*", "*-*-* 00:00:00"),
    ("Mon..Sun 12:00", "*-*-* 12:00:00"),
    ("70-1-1", "1970-01-01 00:00:00"),
    ("69-1-1", "2069-01-01 00:00:00"),
    ("@0", "1970-01-01 00:00:00 UTC"),
    ("Mon,", "Mon *-*-* 00:00:00"),
    ("Mon  12:00", "Mon *-*-* 12:00:00"),
    ("anually", "*-01-01 00:00:00"),
    ("bi-annually", "*-01,07-01 00:00:00"),
    ("*:*:59.9999994", "*-*-* *:*:59.999999"),
])
def test_normalization_details(expression, normalized):
    assert parse_calendar(expression).normalized() == normalized


# -- bad input: one line, what is wrong and how to fix it ----------------------------------

BAD_INPUT = [
    ("Mon..Fry 02:00",
     "calendar 'Mon..Fry 02:00': 'Fry' is not a weekday; use Mon, Tue, Wed, Thu, Fri, Sat or "
     "Sun"),
    ("Fri..Mon 02:00", "runs backwards (weeks run Mon to Sun); write 'Mon..Fri', or "
                       "'Fri..Sun,Mon' to wrap around"),
    ("Mon.. 02:00", "has no end; write it as 'Mon..Sun'"),
    ("Mon, Fri 12:00", "weekdays come first and in one list without spaces"),
    ("12:00 Mon", "weekdays come first, as in 'Mon 12:00'"),
    ("dayly", "did you mean daily?"),
    ("*-*-* 24:00", "hour 24 is out of range 0..23"),
    ("*-13-01", "month 13 is out of range 1..12"),
    ("*:*:60", "second 60 is out of range 0..59"),
    ("1969-01-01", "systemd handles 1970 to 2199"),
    ("5..3:00", "the hour range '05..03' runs backwards; write 03..05"),
    ("*:50/10", "never repeats, 50 + 10 is past 59; drop the repetition or use a smaller one"),
    ("*-*-1/0", "a repetition after '/' must be more than 0"),
    ("*/15", "'*/n' is crontab syntax; systemd writes a repetition as start/n"),
    ("0 3 * * *", "this is crontab syntax, not a systemd calendar event"),
    ("*-*~29", "'~' takes 1 (the last day) to 28"),
    ("*-*~1,2,23", "3 fewer for each further one"),
    ("*:*:0.5..0.7", "spans less than a second; add a repetition such as '/0.1'"),
    ("12", "is not a whole time; write hour:minute"),
    ("12.5:00", "only the seconds may have a fraction"),
    ("12:00 Europe/Berln", "'Europe/Berln' is not a time zone this machine knows; use an IANA "
                           "name such as Europe/Berlin"),
    ("daily CET", "'CET' is a time zone abbreviation"),
    ("daily  UTC", "put a single space before the time zone 'UTC'"),
    ("UTC", "a time zone alone is no calendar event"),
    ("@1700000000 12:00", "a '@' timestamp is a whole date and time"),
    ("*-02-30", "never elapses: no month 02 has a day 30; use a day that exists, or "
                "*-02~01 for the month's last day"),
    ("Mon 2024-12-03", "never elapses: none of its dates falls on Mon (2024-12-03 is a "
                       "Tuesday)"),
    # In systemd.time(7)'s examples; systemd accepts it and never runs it.
    ("Wed..Sat,Tue 12-10-15 1:2:3", "never elapses: none of its dates falls on Tue..Sat "
                                    "(2012-10-15 is a Monday)"),
    ("2023-02-29", "never elapses: none of the years 2023 has the date 02-29"),
]


@pytest.mark.parametrize("expression, message", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_refused_with_one_line_naming_the_fix(expression, message):
    with pytest.raises(ValueError) as caught:
        parse_calendar(expression)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and text.startswith("calendar ")
    with pytest.raises(ValueError):
        CalendarTrigger(expression, BERLIN)


def test_systemd_refuses_the_same_syntax(reference):
    # Everything above except the never-elapsing ones (systemd accepts those and never runs
    # them) and the abbreviation (systemd reads 'CET' as the local zone).
    refused_by_both = [expression for expression, message in BAD_INPUT
                       if "never elapses" not in message and "abbreviation" not in message]
    completed = subprocess.run([SYSTEMD_ANALYZE, "calendar", *refused_by_both],
                               env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True,
                               timeout=30)
    failures = [line for line in completed.stderr.splitlines()
                if line.startswith("Failed to parse calendar specification")]
    assert len(failures) == len(refused_by_both), completed.stderr


def test_empty_and_non_string_input():
    with pytest.raises(ValueError, match="is empty; write one such as 'Mon..Fri 02:00'"):
        parse_calendar("   ")
    with pytest.raises(TypeError, match="must be a string"):
        parse_calendar(None)
