"""Crontab schedules: parsing, crontab(5) meaning, cron(8) daylight saving, speed.

croniter is the independent reference for ordinary days; daylight-saving days are checked
against explicit expected lists and against a minute-by-minute model of cron(8).
"""

from __future__ import annotations

import pickle
import time
from datetime import date, datetime, time as wall_time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from orchestrator.cron import CrontabSpec, CrontabTrigger, parse_crontab

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # moves by 30 minutes
SANTIAGO = ZoneInfo("America/Santiago")  # moves at midnight

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


def fire_times(expression, zone, start, count):
    """The first ``count`` fire times at or after ``start``, chaining previous_fire_time."""
    trigger = CrontabTrigger(expression, zone)
    result, previous = [], None
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, start)
        result.append(previous)
    return result


def iso(times):
    """ISO strings with offsets: compares instants and offsets, which == on one zone won't."""
    return [moment.isoformat() for moment in times]


def at(zone, *fields, fold=0):
    return datetime(*fields, tzinfo=zone, fold=fold)


# -- croniter as the reference on ordinary days --------------------------------------------

CORPUS = [
    "*/5 * * * *", "* * * * *", "0 3 * * 0", "47 6 * * 7", "0 9 * * 1-5", "0 0 1,15 * 5",
    "30 4 1 * *", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
    "@hourly", "0 22 * * mon-fri", "5 0 * aug *", "0 0 29 2 *", "0 */2 1-7 * *",
    "15 14 1 * *", "0 12 * * sat,sun", "23 0-20/2 * * *", "0 0 13 * 5", "*/15 9-17 * * 1-5",
    "0 0 * * 7", "30 1 1 1 *", "0 8-18/3 * * *", "1-59/7 * * * *", "0 6,18 * * *",
    "10 10 10 10 *", "0 0 1 */3 *", "0 0 * jan,apr,jul,oct mon", "45 23 * * 6",
    "0 4 8-14 * *", "0 4 8-14 * 2", "0 0 31 * *", "0 0 30 * *", "0 12 1-10/3 * *",
    "0 0 * * 0-6", "0 0 * * 0,7", "0 0 * * 5-7", "20 */4 * * sun", "0 0 * FEB-MAY *",
    "0 5 * * Tue", "30 0 1 1,7 *", "0,30 * * * 1", "59 23 31 12 *", "0 0 28-31 * *",
    "5 4 * * sun", "0 9-17 * * mon-fri", "0 */6 * * *", "7\t3  *\t* *",
]

# Spread over a year, none on (or just before) a daylight-saving day of Berlin or New York.
STARTS = [(2026, 1, 7, 5, 13, 17), (2026, 4, 16, 11, 47, 17), (2026, 7, 2, 23, 58, 17),
          (2026, 11, 20, 16, 31, 17)]


def is_transition_day(moment):
    """Whether the zone changes its UTC offset during the local date of ``moment``."""
    zone = moment.tzinfo
    day = moment.date()
    midnight = datetime.combine(day, wall_time(), tzinfo=zone).astimezone(timezone.utc)
    next_midnight = datetime.combine(day + timedelta(days=1), wall_time(), tzinfo=zone)
    return midnight.astimezone(zone).utcoffset() != next_midnight.utcoffset()


@pytest.mark.parametrize("zone", [UTC, BERLIN, NEW_YORK], ids=str)
@pytest.mark.parametrize("expression", CORPUS)
def test_agrees_with_croniter_on_ordinary_days(expression, zone):
    assert len(CORPUS) >= 40
    for fields in STARTS:
        start = datetime(*fields, tzinfo=zone)
        ours = fire_times(expression, zone, start, 40)
        reference = croniter(expression, start)  # day_or=True by default: Vixie's OR
        theirs = [reference.get_next(datetime) for _ in range(40)]
        # croniter has its own daylight-saving rules; compare every other day.
        ours = [moment for moment in ours if not is_transition_day(moment)]
        theirs = [moment for moment in theirs if not is_transition_day(moment)]
        compared = min(len(ours), len(theirs))
        assert compared >= 30, (expression, start)
        assert iso(ours[:compared]) == iso(theirs[:compared]), (expression, start)


# -- crontab(5) where APScheduler's from_crontab disagrees --------------------------------

MONDAY = datetime(2026, 6, 1, tzinfo=UTC)  # 2026-06-01 is a Monday


def test_day_of_week_zero_and_seven_are_both_sunday():
    assert parse_crontab("0 3 * * 0").days_of_week == {0}
    assert parse_crontab("0 3 * * 7").days_of_week == {0}
    assert parse_crontab("0 3 * * sun").days_of_week == {0}
    assert fire_times("0 3 * * 0", UTC, MONDAY, 2) == [at(UTC, 2026, 6, 7, 3, 0),
                                                       at(UTC, 2026, 6, 14, 3, 0)]
    assert fire_times("47 6 * * 7", UTC, MONDAY, 1) == [at(UTC, 2026, 6, 7, 6, 47)]


def test_one_to_five_is_monday_to_friday():
    assert parse_crontab("0 9 * * 1-5").days_of_week == {1, 2, 3, 4, 5}
    assert parse_crontab("0 9 * * mon-fri") == parse_crontab("0 9 * * 1-5")
    days = [moment.strftime("%a %d") for moment in fire_times("0 9 * * 1-5", UTC, MONDAY, 6)]
    assert days == ["Mon 01", "Tue 02", "Wed 03", "Thu 04", "Fri 05", "Mon 08"]


def test_weekday_ranges_reaching_seven_include_sunday():
    assert parse_crontab("0 0 * * 5-7").days_of_week == {5, 6, 0}
    assert parse_crontab("0 0 * * 0-7").days_of_week == set(range(7))
    assert parse_crontab("0 0 * * */2").days_of_week == {0, 2, 4, 6}


def test_both_day_fields_restricted_means_either_matches():
    # 1st and 15th of the month, and every Friday.
    days = [moment.day for moment in fire_times("0 0 1,15 * 5", UTC, MONDAY, 6)]
    assert days == [1, 5, 12, 15, 19, 26]


def test_one_day_field_star_means_only_the_other_counts():
    assert [m.day for m in fire_times("0 0 1,15 * *", UTC, MONDAY, 3)] == [1, 15, 1]
    assert [m.day for m in fire_times("0 0 * * 5", UTC, MONDAY, 3)] == [5, 12, 19]
    spec = parse_crontab("0 0 * * 5")
    assert (spec.day_of_month_restricted, spec.day_of_week_restricted) == (False, True)


def test_a_stepped_star_day_field_still_restricts_days_as_cron_does():
    # cron(8) ORs the day fields only if neither starts with '*'; else it ANDs them, so
    # '*/2' keeps restricting: odd days that are Mondays. (croniter ORs here instead.)
    spec = parse_crontab("0 0 */2 * mon")
    assert not spec.day_of_month_restricted and spec.day_of_week_restricted
    days = [m.date() for m in fire_times("0 0 */2 * mon", UTC, MONDAY, 3)]
    assert days == [date(2026, 6, 1), date(2026, 6, 15), date(2026, 6, 29)]
    assert [m.day for m in fire_times("0 0 */10 * *", UTC, MONDAY, 4)] == [1, 11, 21, 1]


@pytest.mark.parametrize("nickname, fields", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"), ("  @Weekly\t", "0 0 * * 0"),
])
def test_nicknames_stand_for_their_five_fields(nickname, fields):
    assert parse_crontab(nickname) == parse_crontab(fields)
    start = datetime(2026, 2, 11, 10, 30, tzinfo=BERLIN)
    assert fire_times(nickname, BERLIN, start, 5) == fire_times(fields, BERLIN, start, 5)


def test_nickname_examples():
    start = at(BERLIN, 2026, 2, 11, 10, 30)
    assert fire_times("@daily", BERLIN, start, 1) == [at(BERLIN, 2026, 2, 12, 0, 0)]
    assert fire_times("@weekly", BERLIN, start, 1) == [at(BERLIN, 2026, 2, 15, 0, 0)]
    assert fire_times("@monthly", BERLIN, start, 1) == [at(BERLIN, 2026, 3, 1, 0, 0)]
    assert fire_times("@yearly", BERLIN, start, 1) == [at(BERLIN, 2027, 1, 1, 0, 0)]
    assert fire_times("@hourly", BERLIN, start, 1) == [at(BERLIN, 2026, 2, 11, 11, 0)]
    assert parse_crontab("@hourly").wildcard and not parse_crontab("@daily").wildcard


def test_field_syntax():
    assert parse_crontab("5/20 * * * *").minutes == {5, 25, 45}  # a/n means a-max/n
    assert parse_crontab("10-30/10 * * * *").minutes == {10, 20, 30}
    assert parse_crontab("*/25 * * * *").minutes == {0, 25, 50}
    assert parse_crontab("0 0 * JAN-Mar,oct *").months == {1, 2, 3, 10}
    assert parse_crontab("0 0 * * SUN,Sat").days_of_week == {0, 6}
    assert parse_crontab("07 3,5 * * *").minutes == {7}
    spec = parse_crontab(" 0\t\t3   *  *\t* ")
    assert spec == parse_crontab("0 3 * * *")
    assert not spec.wildcard and not spec.day_of_month_restricted
    assert parse_crontab("*/5 3 * * *").wildcard and parse_crontab("0 */3 * * *").wildcard
    assert not parse_crontab("0-59 3 * * *").wildcard  # flags come from the leading '*'


def test_fire_time_is_inclusive_of_now_and_exclusive_of_previous():
    trigger = CrontabTrigger("0 * * * *", BERLIN)
    ten = at(BERLIN, 2026, 6, 1, 10, 0)
    assert trigger.get_next_fire_time(None, ten) == ten
    assert trigger.get_next_fire_time(None, ten + timedelta(microseconds=1)) == \
        at(BERLIN, 2026, 6, 1, 11, 0)
    # With a previous fire time, now is ignored: a missed time is returned all the same.
    later = at(BERLIN, 2026, 6, 3, 0, 0)
    assert trigger.get_next_fire_time(ten, later) == at(BERLIN, 2026, 6, 1, 11, 0)
    # Any zone in, the trigger's zone out.
    result = trigger.get_next_fire_time(None, datetime(2026, 6, 1, 7, 30, tzinfo=timezone.utc))
    assert result.tzinfo is BERLIN and result.isoformat() == "2026-06-01T10:00:00+02:00"


def test_leap_day_and_friday_thirteenth():
    start = at(UTC, 2026, 3, 1, 0, 0)
    assert [m.year for m in fire_times("0 0 29 2 *", UTC, start, 3)] == [2028, 2032, 2036]
    assert fire_times("0 0 29 2 *", UTC, at(UTC, 2096, 3, 1), 1) == [at(UTC, 2104, 2, 29)]
    # '13 * 5' is the 13th OR any Friday (crontab(5)), not "Friday the 13th".
    assert [m.day for m in fire_times("0 0 13 * 5", UTC, start, 4)] == [6, 13, 20, 27]


# -- daylight saving as cron(8) handles it -------------------------------------------------

def test_berlin_spring_forward_fixed_time_jobs_run_once_right_after_the_jump():
    start = at(BERLIN, 2026, 3, 28, 12, 0)
    jump_end = at(BERLIN, 2026, 3, 29, 3, 0)
    assert jump_end.isoformat() == "2026-03-29T03:00:00+02:00"
    for minute in ["30", "0", "15", "59"]:
        assert iso(fire_times(f"{minute} 2 * * *", BERLIN, start, 2)) == [
            "2026-03-29T03:00:00+02:00", f"2026-03-30T02:{minute:0>2}:00+02:00"]
    # Several skipped matches of one job coalesce into one run at 03:00.
    assert iso(fire_times("0,15,30,45 2 * * *", BERLIN, start, 3)) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:15:00+02:00"]
    # A match at 03:00 itself is the same run, the next one follows as usual.
    assert iso(fire_times("30 2,3 * * *", BERLIN, start, 3)) == [
        "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert iso(fire_times("0 1,4 * * *", BERLIN, start, 2)) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T04:00:00+02:00"]


def test_berlin_spring_forward_from_the_jump_instant():
    jump_end = at(BERLIN, 2026, 3, 29, 3, 0)
    trigger = CrontabTrigger("30 2 * * *", BERLIN)
    assert trigger.get_next_fire_time(None, jump_end) == jump_end
    assert trigger.get_next_fire_time(jump_end, jump_end) == at(BERLIN, 2026, 3, 30, 2, 30)
    assert trigger.get_next_fire_time(None, jump_end + timedelta(seconds=1)) == \
        at(BERLIN, 2026, 3, 30, 2, 30)


def test_berlin_spring_forward_wildcard_jobs_skip_the_missing_hour():
    start = at(BERLIN, 2026, 3, 29, 1, 0)
    assert iso(fire_times("*/30 * * * *", BERLIN, start, 5)) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-29T04:00:00+02:00"]
    assert iso(fire_times("30 * * * *", BERLIN, start, 3)) == [
        "2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-29T04:30:00+02:00"]
    # Only the 02:xx hour matches: nothing on the spring day at all.
    assert iso(fire_times("*/20 2 * * *", BERLIN, start, 2)) == [
        "2026-03-30T02:00:00+02:00", "2026-03-30T02:20:00+02:00"]


def test_berlin_fall_back_fixed_time_jobs_run_once_at_the_first_occurrence():
    start = at(BERLIN, 2026, 10, 24, 12, 0)
    assert iso(fire_times("30 2 * * *", BERLIN, start, 3)) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    assert iso(fire_times("0,30 2 * * *", BERLIN, start, 3)) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:00:00+01:00"]
    # Asked during the repeated hour, after the first 02:30: that time does not come again.
    trigger = CrontabTrigger("30 2 * * *", BERLIN)
    in_second_hour = at(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert trigger.get_next_fire_time(None, in_second_hour) == at(BERLIN, 2026, 10, 26, 2, 30)
    assert trigger.get_next_fire_time(None, at(BERLIN, 2026, 10, 25, 2, 45)) == \
        at(BERLIN, 2026, 10, 26, 2, 30)


def test_berlin_fall_back_wildcard_jobs_run_in_both_occurrences():
    start = at(BERLIN, 2026, 10, 25, 1, 30)
    assert iso(fire_times("*/30 * * * *", BERLIN, start, 6)) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]
    assert iso(fire_times("@hourly", BERLIN, start, 3)) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]
    assert iso(fire_times("45 * * * *", BERLIN, start, 3)) == [
        "2026-10-25T01:45:00+02:00", "2026-10-25T02:45:00+02:00", "2026-10-25T02:45:00+01:00"]
    assert iso(fire_times("*/20 2 * * *", BERLIN, start, 7)) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:20:00+02:00", "2026-10-25T02:40:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:20:00+01:00", "2026-10-25T02:40:00+01:00",
        "2026-10-26T02:00:00+01:00"]


def test_berlin_fall_back_continues_from_a_previous_fire_time_in_either_occurrence():
    trigger = CrontabTrigger("*/30 * * * *", BERLIN)
    first_0230 = at(BERLIN, 2026, 10, 25, 2, 30)
    second_0200 = at(BERLIN, 2026, 10, 25, 2, 0, fold=1)
    second_0230 = at(BERLIN, 2026, 10, 25, 2, 30, fold=1)
    now = at(BERLIN, 2026, 10, 20, 0, 0)  # ignored when previous is given
    assert iso([trigger.get_next_fire_time(first_0230, now)]) == ["2026-10-25T02:00:00+01:00"]
    assert iso([trigger.get_next_fire_time(second_0200, now)]) == ["2026-10-25T02:30:00+01:00"]
    assert iso([trigger.get_next_fire_time(second_0230, now)]) == ["2026-10-25T03:00:00+01:00"]
    # The same instants given in UTC.
    assert iso([trigger.get_next_fire_time(second_0200.astimezone(timezone.utc), now)]) == \
        ["2026-10-25T02:30:00+01:00"]
    # Starting from now inside the second occurrence.
    assert iso([trigger.get_next_fire_time(None, at(BERLIN, 2026, 10, 25, 2, 10, fold=1))]) \
        == ["2026-10-25T02:30:00+01:00"]
    assert iso([trigger.get_next_fire_time(None, at(BERLIN, 2026, 10, 25, 2, 40))]) == \
        ["2026-10-25T02:00:00+01:00"]


def test_new_york_spring_forward():
    start = at(NEW_YORK, 2026, 3, 7, 12, 0)
    assert iso(fire_times("30 2 * * *", NEW_YORK, start, 2)) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert iso(fire_times("*/30 1-3 * * *", NEW_YORK, start, 5)) == [
        "2026-03-08T01:00:00-05:00", "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00", "2026-03-09T01:00:00-04:00"]


def test_new_york_fall_back():
    start = at(NEW_YORK, 2026, 10, 31, 12, 0)
    assert iso(fire_times("30 1 * * *", NEW_YORK, start, 2)) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert iso(fire_times("*/30 * * * *", NEW_YORK, at(NEW_YORK, 2026, 11, 1, 0, 30), 6)) == [
        "2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"]
    assert iso(fire_times("0 1,2 * * *", NEW_YORK, start, 3)) == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-02T01:00:00-05:00"]


def test_half_hour_shift_and_midnight_jumps():
    # Lord Howe Island moves by 30 minutes: 02:00 -> 02:30 in October.
    assert iso(fire_times("15 2 * * *", LORD_HOWE, at(LORD_HOWE, 2026, 10, 3, 12), 2)) == [
        "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    # Santiago jumps from midnight to 01:00: @daily runs at 01:00 that day.
    assert iso(fire_times("@daily", SANTIAGO, at(SANTIAGO, 2026, 9, 5, 12), 2)) == [
        "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]
    # ... and repeats 23:00-24:00 in April: fixed once, wildcard twice.
    assert iso(fire_times("30 23 * * *", SANTIAGO, at(SANTIAGO, 2026, 4, 4, 12), 2)) == [
        "2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]
    assert iso(fire_times("30 * * * *", SANTIAGO, at(SANTIAGO, 2026, 4, 4, 22, 45), 3)) == [
        "2026-04-04T23:30:00-03:00", "2026-04-04T23:30:00-04:00", "2026-04-05T00:30:00-04:00"]


def cron8_fire_times(spec, zone, start, end):
    """cron(8)'s rule simulated minute by minute over real time, in [start, end).

    Each minute of real time shows a wall time; it fires if it matches (a fixed-time job only
    at a wall time's first occurrence). After a forward jump, a fixed-time job that matched
    one of the skipped wall times fires once at the first minute after the jump.
    """
    fires = []
    moment = start.astimezone(timezone.utc)
    previous_wall = None
    while moment < end:
        local = moment.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        fire = spec.matches(wall) and (spec.wildcard or local.fold == 0)
        if previous_wall is not None and not spec.wildcard:
            skipped = previous_wall + timedelta(minutes=1)
            while skipped < wall and not fire:
                fire = spec.matches(skipped)
                skipped += timedelta(minutes=1)
        if fire:
            fires.append(moment)
        previous_wall = wall
        moment += timedelta(minutes=1)
    return fires


TRANSITION_DAYS = [(BERLIN, date(2026, 3, 29)), (BERLIN, date(2026, 10, 25)),
                   (NEW_YORK, date(2026, 3, 8)), (NEW_YORK, date(2026, 11, 1)),
                   (LORD_HOWE, date(2026, 4, 5)), (LORD_HOWE, date(2026, 10, 4)),
                   (SANTIAGO, date(2026, 4, 4)), (SANTIAGO, date(2026, 9, 6))]


@PROPERTY_SETTINGS
@given(day=st.sampled_from(TRANSITION_DAYS), minutes=st.sampled_from(
           ["*", "*/15", "0", "30", "0,30", "15-45/15", "59", "*/7", "10-20"]),
       hours=st.sampled_from(["*", "*/2", "0", "1", "2", "3", "23", "1-3", "0,2", "22-23"]),
       offset_minutes=st.integers(-300, 300), probe_seconds=st.integers(0, 2 * 86400 - 1))
def test_daylight_saving_days_follow_cron8(day, minutes, hours, offset_minutes,
                                           probe_seconds):
    zone, transition_day = day
    expression = f"{minutes} {hours} * * *"
    spec = parse_crontab(expression)
    noon = datetime.combine(transition_day, wall_time(12), tzinfo=zone)
    start = noon - timedelta(days=1) + timedelta(minutes=offset_minutes)
    end = noon + timedelta(days=1)
    simulated = cron8_fire_times(spec, zone, start, end + timedelta(days=1))
    expected = [moment for moment in simulated if moment < end]
    trigger = CrontabTrigger(expression, zone)
    ours, moment = [], trigger.get_next_fire_time(None, start)
    while moment < end:
        ours.append(moment)
        moment = trigger.get_next_fire_time(moment, start)
    assert [m.astimezone(timezone.utc) for m in ours] == expected
    # Asked at any instant (on a whole minute or not), not only chained from the start.
    for probe in [start + timedelta(seconds=probe_seconds),
                  start + timedelta(minutes=probe_seconds // 60)]:
        at_or_after = next(moment for moment in simulated if moment >= probe)
        after = next(moment for moment in simulated if moment > probe)
        # (An ambiguous local time never equals a datetime of another zone: compare in UTC.)
        assert trigger.get_next_fire_time(None, probe).astimezone(timezone.utc) == at_or_after
        assert trigger.get_next_fire_time(probe, start).astimezone(timezone.utc) == after


# -- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("expression, fragments", [
    ("61 * * * *", ["minute field '61' is out of range 0-59"]),
    ("1,61 * * * *", ["minute field '61' is out of range 0-59", "'1,61'"]),
    ("* 24 * * *", ["hour field '24' is out of range 0-23"]),
    ("* * 0 * *", ["day-of-month field '0' is out of range 1-31"]),
    ("* * 32 * *", ["day-of-month field '32' is out of range 1-31"]),
    ("* * * 13 *", ["month field '13' is out of range 1-12"]),
    ("* * * 0 *", ["month field '0' is out of range 1-12"]),
    ("* * * * 8", ["day-of-week field '8' is out of range 0-7"]),
    ("* * * * 99999999999", ["day-of-week field", "out of range 0-7"]),
    ("* * * * mun", ["day-of-week field 'mun' is not a number or a name (sun..sat)"]),
    ("* * * * monday", ["day-of-week field 'monday' is not a number or a name"]),
    ("* * * foo *", ["month field 'foo' is not a number or a name (jan..dec)"]),
    ("x * * * *", ["minute field 'x' is not a number"]),
    ("* mon * * *", ["hour field 'mon' is not a number"]),
    ("* * ² * *", ["day-of-month field '²' is not a number"]),
    ("*/0 * * * *", ["minute field", "step '*/0' must be at least 1"]),
    ("* 0-23/0 * * *", ["hour field", "step '0-23/0' must be at least 1"]),
    ("*/x * * * *", ["minute field", "step '*/x'"]),
    ("5/ * * * *", ["minute field", "step '5/'"]),
    ("*/2/3 * * * *", ["minute field", "step '*/2/3'"]),
    ("* 5-2 * * *", ["hour field", "range '5-2' runs backwards; write '2-5'"]),
    ("* * * * fri-mon", ["day-of-week field", "range 'fri-mon' runs backwards",
                         "'mon-fri'", "'fri-sat,sun-mon'"]),
    ("* * * * sat-sun", ["day-of-week field", "'sat-7'"]),
    ("* * * nov-feb *", ["month field", "'feb-nov'", "'nov-dec,jan-feb'"]),
    ("-5 * * * *", ["minute field '-5' is not a valid range"]),
    ("1-2-3 * * * *", ["minute field '1-2-3' is not a valid range"]),
    ("5- * * * *", ["minute field '5-' is not a valid range"]),
    ("1,,2 * * * *", ["minute field '1,,2' has an empty list element"]),
    ("* * * * 1,", ["day-of-week field '1,' has an empty list element"]),
    ("** * * * *", ["minute field '**' is not a number"]),
    ("1 2 3 4 5 6", ["expected 5 fields (minute hour day-of-month month day-of-week) or a "
                     "nickname like @daily, got 6: '1 2 3 4 5 6'", "without a user name"]),
    ("0 3 * * * /usr/bin/backup", ["got 6"]),
    ("1 2 3 4", ["expected 5 fields", "got 4: '1 2 3 4'"]),
    ("", ["empty", "5 fields"]),
    ("   \t ", ["empty"]),
    ("0 3 * * *\n0 4 * * *", ["got 9"]),
    ("@reboot", ["'@reboot' is not a time schedule"]),
    ("@REBOOT", ["is not a time schedule"]),
    ("@dayly", ["unknown nickname '@dayly'", "did you mean @daily?"]),
    ("@", ["unknown nickname '@'"]),
    ("@daily 5", ["nickname '@daily'", "write nothing after it"]),
    ("0 0 30 2 *", ["'0 0 30 2 *' can never fire", "month field '2'",
                    "day-of-month field '30'"]),
    ("0 0 31 4,6 *", ["can never fire"]),
    ("0 0 30,31 feb *", ["can never fire"]),
])
def test_invalid_expressions_say_which_field_and_how_to_fix_it(expression, fragments):
    with pytest.raises(ValueError) as caught:
        parse_crontab(expression)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(ValueError):
        CrontabTrigger(expression, UTC)


def test_restricted_day_fields_are_never_refused_as_impossible():
    # 30 February OR any Monday: fires on Mondays in February.
    assert fire_times("0 0 30 2 mon", UTC, MONDAY, 1) == [at(UTC, 2027, 2, 1)]
    assert fire_times("0 0 29 2 *", UTC, MONDAY, 1) == [at(UTC, 2028, 2, 29)]


def test_wrong_types_are_refused():
    with pytest.raises(TypeError, match="must be a string"):
        parse_crontab(5)
    with pytest.raises(TypeError, match="timezone"):
        CrontabTrigger("@daily", "Europe/Berlin")
    trigger = CrontabTrigger("@daily", UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        trigger.get_next_fire_time(None, datetime(2026, 1, 1))


# -- properties of random expressions ------------------------------------------------------

def field_text(low, high, names=()):
    """Random crontab field text from its parts: *, n, a-b, */n, a-b/n, a/n, lists."""
    def render(value, as_name):
        if names and as_name and value - low < len(names):
            return names[value - low].upper() if value % 2 else names[value - low]
        return str(value)

    value = st.tuples(st.integers(low, high), st.booleans())
    step = st.integers(1, high - low + 2)
    element = st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        value.map(lambda v: render(*v)),
        st.tuples(value, value).map(
            lambda p: f"{render(min(p)[0], p[0][1])}-{render(max(p)[0], p[1][1])}"),
        st.tuples(value, value, step).map(
            lambda p: f"{render(min(p[:2])[0], True)}-{render(max(p[:2])[0], False)}/{p[2]}"),
        st.tuples(value, step).map(lambda p: f"{render(*p[0])}/{p[1]}"),
    )
    return st.lists(element, min_size=1, max_size=3).map(",".join)


MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
EXPRESSIONS = st.tuples(field_text(0, 59), field_text(0, 23), field_text(1, 31),
                        field_text(1, 12, MONTH_NAMES), field_text(0, 7, WEEKDAY_NAMES),
                        st.sampled_from([" ", "\t", "  ", " \t"])
                        ).map(lambda parts: parts[5].join(parts[:5]))


def parse_or_skip_impossible(expression):
    try:
        return parse_crontab(expression)
    except ValueError as error:
        assume("can never fire" not in str(error))
        raise


def reference_next(spec, after):
    """The first matching wall time strictly after ``after``, day by day (independent)."""
    day = after.date()
    for _ in range(366 * 12):
        weekday = day.isoweekday() % 7
        day_of_month_ok = day.day in spec.days_of_month
        day_of_week_ok = weekday in spec.days_of_week
        if spec.day_of_month_restricted and spec.day_of_week_restricted:
            day_ok = day_of_month_ok or day_of_week_ok
        else:
            day_ok = day_of_month_ok and day_of_week_ok
        if day.month in spec.months and day_ok:
            for hour in sorted(spec.hours):
                for minute in sorted(spec.minutes):
                    candidate = datetime.combine(day, wall_time(hour, minute))
                    if candidate > after:
                        return candidate
        day += timedelta(days=1)
    raise AssertionError(f"no match within 12 years after {after}")


@PROPERTY_SETTINGS
@given(expression=EXPRESSIONS,
       start=st.datetimes(datetime(2000, 1, 1), datetime(2080, 1, 1)))
def test_random_expressions_fire_in_order_on_matching_times(expression, start):
    spec = parse_or_skip_impossible(expression)
    assert isinstance(spec, CrontabSpec)
    trigger = CrontabTrigger(expression, UTC)
    start = start.replace(tzinfo=UTC)
    previous = None
    expected = reference_next(spec, start.replace(tzinfo=None) - timedelta(microseconds=1))
    for _ in range(12):
        moment = trigger.get_next_fire_time(previous, start)
        assert moment.tzinfo is UTC
        assert spec.matches(moment)
        assert moment.replace(tzinfo=None) == expected
        if previous is not None:
            assert moment > previous
        previous = moment
        expected = reference_next(spec, expected)


@PROPERTY_SETTINGS
@given(text=st.one_of(
    st.text(max_size=40),
    st.text(alphabet=" \t*/,-0123456789@abcdefjlmnorstuwyADMS\n", max_size=30),
    EXPRESSIONS.map(lambda text: text.replace("1", "9", 1)),
    EXPRESSIONS.map(lambda text: text + " *")))
def test_junk_raises_only_one_line_value_errors(text):
    try:
        parse_crontab(text)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)


# -- the APScheduler side ------------------------------------------------------------------

def test_pickle_round_trip_and_text():
    trigger = CrontabTrigger(" 0 3 * * mon-fri ", BERLIN)
    copy = pickle.loads(pickle.dumps(trigger))
    assert (copy.expression, copy.timezone, copy.spec) == \
        ("0 3 * * mon-fri", BERLIN, trigger.spec)
    start = at(BERLIN, 2026, 6, 1)
    assert copy.get_next_fire_time(None, start) == trigger.get_next_fire_time(None, start)
    assert str(trigger) == "crontab[0 3 * * mon-fri, timezone=Europe/Berlin]"
    assert repr(trigger) == \
        "<CrontabTrigger (expression='0 3 * * mon-fri', timezone='Europe/Berlin')>"


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 13 * 5", "* * * * *",
                                        "59 23 31 12 *", "30 2 * * *", "*/5 * * * *"])
def test_next_fire_time_jumps_instead_of_scanning(expression):
    # Scanning minute by minute would take seconds for the leap-day schedule; jumping takes
    # microseconds. The bound is loose so that a busy machine does not fail it.
    trigger = CrontabTrigger(expression, BERLIN)
    starts = [at(BERLIN, 2026, 3, 29, 1, 59), at(BERLIN, 2026, 10, 25, 2, 15),
              at(BERLIN, 2026, 6, 1)]
    began = time.perf_counter()
    for _ in range(100):
        for start in starts:
            trigger.get_next_fire_time(None, start)
    per_call = (time.perf_counter() - began) / 300
    assert per_call < 0.005
