"""Crontab schedules with the meaning crontab(5) and cron(8) give them.

An expression is the five time fields of a crontab line (``minute hour day-of-month month
day-of-week``) or one of the nicknames ``@yearly @annually @monthly @weekly @daily @midnight
@hourly``. As in crontab(5): day-of-week 0 and 7 are both Sunday, ``1-5`` is Monday to Friday,
month and weekday names (``jan``, ``mon-fri``) work in any case, and when both day fields are
restricted (neither starts with ``*``) a day matches if EITHER matches; otherwise both must
match, which for a plain ``*`` means only the other field counts (cron(8)'s own rule, so
``*/2`` in day-of-month still restricts the days).

Times are wall-clock times of the trigger's timezone. Daylight saving follows cron(8) (Vixie
cron, cronie):

* a *fixed-time* job (neither the minute nor the hour field starts with ``*``) whose wall time
  is skipped by a forward jump runs once, at the first instant after the jump (several skipped
  matches of one job coalesce into that one run); a wall time that a backward jump repeats
  runs once, at its first occurrence;
* a *wildcard* job (minute or hour field starts with ``*``) follows the clock: skipped wall
  times do not happen, repeated ones happen twice.

APScheduler's ``CronTrigger.from_crontab`` is not used because its dialect disagrees with
crontab(5): its weekday 0 is Monday, 7 is refused, ``1-5`` means Tuesday to Saturday, the two
day fields are ANDed, nicknames are refused, and it returns wall times that do not exist on
spring-forward days.

::

    "0 3 * * mon-fri" --parse_crontab--> CrontabSpec (allowed values per field + flags)
                                              |
    CrontabTrigger.get_next_fire_time:  next matching wall time, field by field
                                        -> placed on the real timeline of the timezone
                                           (gap and fold rules above) -> aware datetime
"""

from __future__ import annotations

import bisect
import calendar
import dataclasses
import difflib
import re
from datetime import MAXYEAR, datetime, timedelta, timezone as _fixed_timezone, tzinfo

from apscheduler.triggers.base import BaseTrigger

__all__ = ["CrontabSpec", "CrontabTrigger", "check_timezone", "parse_crontab"]

_UTC = _fixed_timezone.utc
_ONE_MINUTE = timedelta(minutes=1)
_FIELDS_HINT = "5 fields (minute hour day-of-month month day-of-week)"

_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# The longest each month ever gets (February: 29), to refuse schedules that can never fire.
_LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                  11: 30, 12: 31}


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for the value low + i

    @property
    def names_hint(self) -> str:
        return f"{self.names[0]}..{self.names[-1]}"


_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                 "sep", "oct", "nov", "dec"))
_DAY_OF_WEEK = _Field("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
_FIELDS = (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)


@dataclasses.dataclass(frozen=True)
class CrontabSpec:
    """The allowed values of each field of a crontab expression, and how days combine.

    Day-of-week values are 0 (Sunday) to 6 (Saturday); a 7 in the expression is stored as 0.
    ``day_of_month_restricted`` / ``day_of_week_restricted`` say whether that field did not
    start with ``*``. ``wildcard`` is cron(8)'s daylight-saving class: the minute or the hour
    field starts with ``*``.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    day_of_month_restricted: bool
    day_of_week_restricted: bool
    wildcard: bool
    # Sorted copies for bisecting; derived, so kept out of init, repr and equality.
    _sorted: tuple[tuple[int, ...], ...] = dataclasses.field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sorted", tuple(
            tuple(sorted(values))
            for values in (self.minutes, self.hours, self.months)))

    def day_matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date matches the day-of-month and day-of-week fields (month not checked).

        Both fields restricted: either may match. Otherwise both must (a plain ``*`` matches
        every day, so then only the other field counts).
        """
        cron_weekday = (calendar.weekday(year, month, day) + 1) % 7  # 0 = Sunday
        return self._combine_days(day in self.days_of_month,
                                  cron_weekday in self.days_of_week)

    def matches(self, wall_time: datetime) -> bool:
        """Whether a wall-clock time (its minute; seconds are ignored) matches every field."""
        return (wall_time.minute in self.minutes and wall_time.hour in self.hours
                and wall_time.month in self.months
                and self.day_matches(wall_time.year, wall_time.month, wall_time.day))

    def next_match(self, start: datetime) -> datetime | None:
        """The earliest matching wall time at or after ``start``, naive, on a whole minute.

        ``start`` is read as a naive wall time (any tzinfo and fold are ignored); a start
        with seconds is rounded up to the next minute. It jumps field by field (month, day,
        hour, minute), so it costs a few dozen steps, not one per minute. Returns ``None``
        if no match exists before the year 10000.
        """
        minutes, hours, months = self._sorted
        year, month, day, hour, minute = start.year, start.month, start.day, start.hour, \
            start.minute
        if start.second or start.microsecond:
            minute += 1
        while year <= MAXYEAR:
            index = bisect.bisect_left(months, month)
            if index == len(months):
                year, month, day, hour, minute = year + 1, months[0], 1, hours[0], minutes[0]
                continue
            if months[index] != month:
                month, day, hour, minute = months[index], 1, hours[0], minutes[0]
            next_day = self._next_day(year, month, day)
            if next_day is None:
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                day, hour, minute = 1, hours[0], minutes[0]
                continue
            if next_day != day:
                day, hour, minute = next_day, hours[0], minutes[0]
            index = bisect.bisect_left(hours, hour)
            if index == len(hours):
                day, hour, minute = day + 1, hours[0], minutes[0]
                continue
            if hours[index] != hour:
                hour, minute = hours[index], minutes[0]
            index = bisect.bisect_left(minutes, minute)
            if index == len(minutes):
                hour, minute = hour + 1, minutes[0]
                continue
            return datetime(year, month, day, hour, minutes[index])
        return None

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        first_weekday, length = calendar.monthrange(year, month)  # 0 = Monday
        for candidate in range(day, length + 1):
            cron_weekday = (first_weekday + candidate) % 7  # Sunday 0, from Monday-based
            if self._combine_days(candidate in self.days_of_month,
                                  cron_weekday in self.days_of_week):
                return candidate
        return None

    def _combine_days(self, day_of_month_ok: bool, day_of_week_ok: bool) -> bool:
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return day_of_month_ok or day_of_week_ok
        return day_of_month_ok and day_of_week_ok


def parse_crontab(expression: str) -> CrontabSpec:
    """Parse a crontab(5) schedule: five fields or a nickname such as ``@daily``.

    Fields are separated by runs of spaces or tabs. Each is a comma-separated list of
    ``*``, ``n``, ``a-b``, ``*/step``, ``a-b/step`` or ``a/step`` (meaning ``a-max/step``);
    month and day-of-week also take three-letter names in any case.

    :raises ValueError: with one line naming the field at fault and how to fix it, also for
        ``@reboot`` (not a time schedule) and for a schedule that can never fire
        (``0 0 30 2 *``).
    :raises TypeError: if ``expression`` is not a string.
    """
    if not isinstance(expression, str):
        raise TypeError(f"a crontab expression must be a string, not "
                        f"{type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ValueError(f"the crontab expression is empty; expected {_FIELDS_HINT} or a "
                         f"nickname like @daily")
    if text.startswith("@"):
        fields = _expand_nickname(text)
    else:
        fields = re.split(r"[ \t]+", text)
    if len(fields) != 5:
        hint = "; give the schedule only, without a user name or command" \
            if len(fields) > 5 else ""
        raise ValueError(f"expected {_FIELDS_HINT} or a nickname like @daily, "
                         f"got {len(fields)}: {text!r}{hint}")

    values = [_parse_field(field_text, field) for field_text, field in zip(fields, _FIELDS)]
    minute_text, hour_text, dom_text, month_text, dow_text = fields
    values[4] = frozenset(0 if day == 7 else day for day in values[4])
    spec = CrontabSpec(
        minutes=values[0], hours=values[1], days_of_month=values[2], months=values[3],
        days_of_week=values[4],
        day_of_month_restricted=not dom_text.startswith("*"),
        day_of_week_restricted=not dow_text.startswith("*"),
        wildcard=minute_text.startswith("*") or hour_text.startswith("*"),
    )
    # With both day fields restricted a matching weekday exists in every month. Otherwise the
    # day-of-month set must fit an allowed month: every (month, day) pair that exists falls
    # on every weekday within a few decades, so that test is exact.
    either_day = spec.day_of_month_restricted and spec.day_of_week_restricted
    if not either_day and not any(day <= _LONGEST_MONTH[month]
                                  for month in spec.months for day in spec.days_of_month):
        raise ValueError(f"crontab {text!r} can never fire: no month in the month field "
                         f"{month_text!r} has a day in the day-of-month field {dom_text!r}")
    return spec


def _expand_nickname(text: str) -> list[str]:
    word, *rest = re.split(r"[ \t]+", text)
    key = word.lower()
    if key == "@reboot":
        raise ValueError("'@reboot' is not a time schedule (cron runs such a job once when it "
                         "starts); use a time schedule such as '@daily' or '0 3 * * *'")
    if key not in _NICKNAMES:
        close = difflib.get_close_matches(key, list(_NICKNAMES), n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"unknown nickname {word!r}; {guess}valid nicknames: "
                         f"{' '.join(_NICKNAMES)}")
    if rest:
        raise ValueError(f"the nickname {word!r} stands for all 5 fields; write nothing after "
                         f"it, got {text!r}")
    return _NICKNAMES[key].split()


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    elements = text.split(",")
    most = field.high - field.low + 1
    if len(elements) > most:
        raise ValueError(f"{field.name} field has {len(elements)} list items, more than the "
                         f"{most} values it can take; use a range or a step, as in '1-5' "
                         f"or '*/15'")
    for element in elements:
        if not element:
            raise ValueError(f"{field.name} field {text!r} has an empty list element; "
                             f"separate values with single commas, as in '1,15'")
        values.update(_parse_element(element, field, text))
    return frozenset(values)


def _parse_element(element: str, field: _Field, field_text: str) -> range:
    body, slash, step_text = element.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()):
            raise ValueError(f"{field.name} field: step {element!r} needs a whole number "
                             f"after '/', as in '*/15'")
        step = int(step_text) if len(step_text) <= 6 else 10 ** 6
        if step < 1:
            raise ValueError(f"{field.name} field: step {element!r} must be at least 1")
    if body == "*":
        return range(field.low, field.high + 1, step)
    if "-" in body:
        start_text, _, end_text = body.partition("-")
        if not start_text or not end_text or "-" in end_text:
            raise ValueError(f"{field.name} field {element!r} is not a valid range; write "
                             f"a range as 'first-last', as in '1-5'")
        first = _parse_value(start_text, field, field_text)
        last = _parse_value(end_text, field, field_text)
        if first > last:
            raise ValueError(_backwards_message(start_text, end_text, first, last, field))
        return range(first, last + 1, step)
    first = _parse_value(body, field, field_text)
    return range(first, (field.high if slash else first) + 1, step)


def _parse_value(token: str, field: _Field, field_text: str) -> int:
    context = f" (in {field_text!r})" if token != field_text else ""
    if token.isascii() and token.isdigit():
        value = int(token) if len(token) <= 6 else 10 ** 6
        if not field.low <= value <= field.high:
            raise ValueError(f"{field.name} field {token!r} is out of range "
                             f"{field.low}-{field.high}{context}")
        return value
    if field.names:
        lowered = token.lower()
        if lowered in field.names:
            return field.low + field.names.index(lowered)
        raise ValueError(f"{field.name} field {token!r} is not a number or a name "
                         f"({field.names_hint}){context}")
    raise ValueError(f"{field.name} field {token!r} is not a number{context}")


def _backwards_message(start_text: str, end_text: str, first: int, last: int,
                       field: _Field) -> str:
    message = (f"{field.name} field: range '{start_text}-{end_text}' runs backwards; "
               f"write '{end_text}-{start_text}'")
    if field.names:
        # Months and weekdays go round; the user may have meant to wrap around the end.
        if start_text.isdigit():
            top, bottom = str(field.high), str(field.low)
        else:
            top, bottom = field.names[-1], field.names[0]
        if field is _DAY_OF_WEEK and last == 0:
            wrapped = f"{start_text}-7"
        else:
            wrapped = f"{start_text}-{top},{bottom}-{end_text}"
        message += f", or '{wrapped}' to wrap around"
    return message


def check_timezone(timezone: tzinfo) -> None:
    """Refuse what a trigger cannot compute wall times in.

    :raises TypeError: for anything but a :class:`datetime.tzinfo` with a UTC offset (pytz
        zones, which need ``localize``, included).
    """
    if not isinstance(timezone, tzinfo) or hasattr(timezone, "localize"):
        raise TypeError(f"timezone must be a datetime.tzinfo such as "
                        f"zoneinfo.ZoneInfo('Europe/Berlin'), not {timezone!r} "
                        f"(pytz zones are not supported)")
    if timezone.utcoffset(datetime(2000, 1, 1)) is None:
        raise TypeError(f"timezone {timezone!r} gives no UTC offset")


class CrontabTrigger(BaseTrigger):
    """An APScheduler trigger that fires on a crontab(5) schedule in one timezone.

    :param expression: five crontab fields or a nickname (see :func:`parse_crontab`).
    :param timezone: the zone whose wall clock the fields refer to, normally a
        :class:`zoneinfo.ZoneInfo`.
    :raises ValueError: for an invalid expression (see :func:`parse_crontab`).
    :raises TypeError: if ``timezone`` is not a usable :class:`datetime.tzinfo`.
    """

    __slots__ = ("expression", "timezone", "spec")

    def __init__(self, expression: str, timezone: tzinfo):
        check_timezone(timezone)
        self.spec = parse_crontab(expression)
        self.expression = expression.strip()
        self.timezone = timezone

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        """The next fire time, as an aware datetime in :attr:`timezone`.

        Without ``previous_fire_time``: the earliest fire time at or after ``now``. With it:
        the earliest fire time strictly after it, even if that is before ``now`` (the caller
        decides about missed times). Daylight-saving gaps and folds follow cron(8), see the
        module documentation. Returns ``None`` only if no fire time exists before year 10000.

        :raises ValueError: if the given datetime is naive.
        """
        if previous_fire_time is not None:
            threshold, inclusive = previous_fire_time, False
        else:
            threshold, inclusive = now, True
        if threshold.utcoffset() is None:
            raise ValueError(f"get_next_fire_time needs timezone-aware datetimes, got "
                             f"{threshold!r}")
        try:
            fire_time = self._next_instant(threshold.astimezone(_UTC), inclusive)
        except OverflowError:  # at the very ends of the datetime range
            return None
        return None if fire_time is None else fire_time.astimezone(self.timezone)

    def _next_instant(self, threshold: datetime, inclusive: bool) -> datetime | None:
        """The first firing instant (aware UTC) after ``threshold`` (or at it, if inclusive).

        It walks matching wall times in order and places each on the real timeline:

        * a wall time that exists once fires at that instant;
        * one repeated by a fold fires at its first occurrence, and for a wildcard job also
          at its second;
        * one skipped by a gap fires (fixed-time jobs only) at the instant the gap ends.

        Real-time order equals wall-time order except for the second occurrences in a fold,
        which come after the first occurrences of later wall times of the same fold; so a
        result taken from a second occurrence is kept only once no later wall time of that
        fold can still beat it.
        """
        spec, zone = self.spec, self.timezone
        offset = zone.utcoffset  # reads the fold of a naive wall time
        # Start early enough to see wall times that lie before the threshold's own wall time
        # but fire after it: second occurrences when the threshold is in a fold's first
        # occurrence, and a gap's wall times when the threshold is the instant the gap ends.
        local = threshold.astimezone(zone)
        here = local.utcoffset()
        wall = local.replace(tzinfo=None, fold=0)
        repeated = offset(wall.replace(fold=1))
        if local.fold == 0 and here > repeated:
            wall -= here - repeated
        just_before = self._offset_at(threshold - timedelta(microseconds=1))
        if just_before < here:
            wall -= here - just_before
        best: datetime | None = None
        while True:
            wall = spec.next_match(wall)
            if wall is None:
                return best
            first_offset, second_offset = offset(wall), offset(wall.replace(fold=1))
            if first_offset < second_offset:
                # Skipped by a forward jump: a fixed-time job fires when the jump ends.
                gap_end = self._gap_end(wall, first_offset, second_offset)
                instants = [] if spec.wildcard else [gap_end]
                settled = True
                next_wall = (gap_end + second_offset).replace(tzinfo=None)
            else:
                # Exists once, or twice in a fold (the first occurrence has the larger offset).
                first = (wall - first_offset).replace(tzinfo=_UTC)
                instants = [first]
                if first_offset != second_offset and spec.wildcard:
                    instants.append((wall - second_offset).replace(tzinfo=_UTC))
                # Nothing later in wall order fires before this wall's first occurrence.
                settled = first_offset == second_offset or _after(first, threshold, inclusive)
                next_wall = wall + _ONE_MINUTE
            for instant in instants:
                if _after(instant, threshold, inclusive) and (best is None or instant < best):
                    best = instant
            if best is not None and settled:
                return best
            wall = next_wall

    def _offset_at(self, instant: datetime) -> timedelta:
        return instant.astimezone(self.timezone).utcoffset()

    def _gap_end(self, wall: datetime, before: timedelta, after: timedelta) -> datetime:
        """The instant (aware UTC) a forward jump over the naive ``wall`` time ended.

        The jump lies between ``wall - after`` (still the old offset) and ``wall - before``
        (already the new one); transitions fall on whole seconds, so bisect on seconds.
        """
        low = (wall - after).replace(tzinfo=_UTC)
        low_seconds, high_seconds = 0, int((after - before).total_seconds())
        while low_seconds < high_seconds:
            middle = (low_seconds + high_seconds) // 2
            if self._offset_at(low + timedelta(seconds=middle)) == before:
                low_seconds = middle + 1
            else:
                high_seconds = middle
        return low + timedelta(seconds=low_seconds)

    def __getstate__(self) -> dict:
        return {"version": 1, "expression": self.expression, "timezone": self.timezone}

    def __setstate__(self, state: dict) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"cannot restore a CrontabTrigger saved in state version "
                             f"{state['version']}; this version reads version 1 only")
        self.expression = state["expression"]
        self.timezone = state["timezone"]
        self.spec = parse_crontab(self.expression)

    def __str__(self) -> str:
        return f"crontab[{self.expression}, timezone={self.timezone}]"

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} (expression={self.expression!r}, "
                f"timezone='{self.timezone}')>")


def _after(instant: datetime, threshold: datetime, inclusive: bool) -> bool:
    return instant >= threshold if inclusive else instant > threshold
