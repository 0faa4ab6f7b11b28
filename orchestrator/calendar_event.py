"""Calendar events with the meaning systemd.time(7) gives them, computed as systemd 252 does.

An expression is what a systemd timer's ``OnCalendar=`` takes::

    [weekdays] [[year-]month-day] [hour:minute[:second]] [zone]      or a shorthand [zone]

* weekdays: English names, short or long, any case, as a list with ranges: ``Mon..Fri``,
  ``Sat,Sun``, ``Mon,Wed..Fri`` (``Mon-Fri`` works too). A weekday list is ANDed with the
  date: ``Fri *-*-13`` is Friday the 13th (crontab(5) would OR them).
* each date and time field is ``*`` or a comma-separated list of ``value``,
  ``first..last`` and either followed by ``/repetition``: ``*-*-1/7`` is days 1, 8, 15, 22
  and 29, ``2024..2030/2-*-*`` every other year, ``*:0/15`` every quarter hour. ``~``
  instead of the last ``-`` counts days from the month's end: ``*-*~01`` is the last day,
  ``Mon *-05~07/1`` the last Monday of May. Seconds take fractions (``05:40:23.5``), rounded
  to microseconds. A two-digit year means 2000-2069 (``00..69``) or 1970-1999 (``70..99``);
  years are 1970 to 2199.
* a missing date is ``*-*-*``, a missing time ``00:00:00``, missing seconds ``:00``.
* a zone at the end is ``UTC`` or an IANA name (``Europe/Berlin``); without one the trigger's
  timezone is meant.
* shorthands: ``minutely hourly daily weekly monthly quarterly semiannually yearly
  annually`` (and systemd's spellings ``anually biannually bi-annually semi-annually``).

:meth:`CalendarSpec.normalized` is systemd-analyze's "Normalized form:", such as
``Mon..Fri *-*-* 02:00:00`` or ``*-*-* *:00/15:00``.

The next elapse is systemd's own search (``find_next`` in calendarspec.c): it walks the
fields from the year down to the second on a broken-down wall time and lets glibc's
``mktime`` normalize it after each step. That normalization is where daylight saving comes
in, so this module reproduces glibc's ``mktime`` too, including the guess of the UTC offset
it keeps from one call to the next. What comes out (checked against ``systemd-analyze
calendar``):

* a wall time that a forward jump skips does not happen: ``*-*-* 02:30`` has no elapse on
  2024-03-31 in Europe/Berlin, and ``*:0/15`` goes 01:45, 03:00, 03:15 there;
* a wall time that a backward jump repeats happens once, in the occurrence the search is in:
  coming from before the fold that is the first (summer time) one, so ``*:0/15`` goes
  02:45 CEST, 03:00 CET on 2024-10-27 and skips the repeated hour; starting inside the
  repeated hour it goes on in that hour (02:15 CET, 02:30 CET, ...);
* when a step lands inside a gap and mktime moves it back before the start (a 30-minute
  jump such as Australia/Lord_Howe's, or a negative DST such as Europe/Dublin's), systemd
  retries an hour later and from then on keeps the DST flag mktime found; so does this
  module (the Debian build of systemd 252 checked here has that fix);
* where systemd's search gives up after 1000 steps ("Infinite loop in calendar
  calculation", as ``*-03/7-17`` in Europe/Berlin after October), there is no further
  elapse here either, and a warning is logged.

::

    "Mon..Fri 02:00" --parse_calendar--> CalendarSpec (weekdays + field chains + zone)
                                              |
    CalendarTrigger.get_next_fire_time:  systemd's field-by-field search on wall time,
                                         each step normalized by an emulated glibc mktime
                                         in the zone -> aware datetime
"""

from __future__ import annotations

import calendar
import dataclasses
import difflib
import re
from datetime import date, datetime, timedelta, timezone as _fixed_timezone, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from loguru import logger

from .cron import check_timezone

__all__ = ["CalendarComponent", "CalendarSpec", "CalendarTrigger", "parse_calendar"]

_UTC = _fixed_timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MICROSECONDS = 1_000_000
_MIN_YEAR, _MAX_YEAR = 1970, 2199  # systemd refuses other years and stops searching at 2199
_MAX_ITERATIONS = 1000  # systemd gives up a search after this many steps
_MAX_LIST = 241  # systemd's limit on the items of one field
_INT_MAX = 2 ** 31 - 1

_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAY_HINT = "use Mon, Tue, Wed, Thu, Fri, Sat or Sun"
# Long names first, so that 'Monday' is not read as 'Mon' followed by 'day'.
_WEEKDAY_WORDS = tuple((word, number) for number, short in enumerate(_WEEKDAY_NAMES)
                       for word in (date(2024, 1, 1 + number).strftime("%A").lower(),
                                    short.lower()))
_WEEKDAY_NUMBERS = dict(_WEEKDAY_WORDS)
_ALL_WEEKDAYS = frozenset(range(7))

# Shorthand -> (weekdays, months, days, hours, minutes); seconds are always 00.
_SHORTHANDS = {
    "minutely": (None, None, None, None, None),
    "hourly": (None, None, None, None, (0,)),
    "daily": (None, None, None, (0,), (0,)),
    "monthly": (None, None, (1,), (0,), (0,)),
    "weekly": (frozenset({0}), None, None, (0,), (0,)),
    "yearly": (None, (1,), (1,), (0,), (0,)),
    "annually": (None, (1,), (1,), (0,), (0,)),
    "anually": (None, (1,), (1,), (0,), (0,)),
    "quarterly": (None, (1, 4, 7, 10), (1,), (0,), (0,)),
    "semiannually": (None, (1, 7), (1,), (0,), (0,)),
    "semi-annually": (None, (1, 7), (1,), (0,), (0,)),
    "biannually": (None, (1, 7), (1,), (0,), (0,)),
    "bi-annually": (None, (1, 7), (1,), (0,), (0,)),
}
_SHORTHAND_HINT = "minutely, hourly, daily, weekly, monthly, quarterly, semiannually, yearly"

_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_CRONTAB_FIELD = r"([0-9*,/-]+|[A-Za-z,-]+)"
_CRONTAB_LINE = re.compile(rf"@[A-Za-z]+|{_CRONTAB_FIELD}(\s+{_CRONTAB_FIELD}){{4}}")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_ABBREVIATION = re.compile(r"[A-Z]{2,5}")


@dataclasses.dataclass(frozen=True)
class CalendarComponent:
    """One item of a field's list: ``start``, ``start..stop`` or either with ``/repeat``.

    It matches ``start`` and ``start + n * repeat`` for n >= 1 up to ``stop`` (no bound if
    ``stop`` is None). ``repeat`` 0 means no repetition; a plain range has repeat 1 (one
    second, 1_000_000, in the seconds field). With ``end_of_month`` the day field counts
    from the month's end: 1 is the last day.
    """

    start: int
    stop: int | None
    repeat: int


@dataclasses.dataclass(frozen=True)
class CalendarSpec:
    """A parsed and normalized calendar event (see :func:`parse_calendar`).

    Each field is a sorted tuple of :class:`CalendarComponent` without duplicates, in the
    shape systemd normalizes it to; an empty tuple is ``*``. ``microseconds`` is the seconds
    field counted in microseconds (``*`` is ``(0, None, 1_000_000)``, never empty).
    ``weekdays`` holds 0 (Monday) to 6 (Sunday), all seven when unrestricted. ``timezone``
    is ``"UTC"``, an IANA name, or None for the trigger's timezone.
    """

    weekdays: frozenset[int]
    years: tuple[CalendarComponent, ...]
    months: tuple[CalendarComponent, ...]
    days: tuple[CalendarComponent, ...]
    end_of_month: bool
    hours: tuple[CalendarComponent, ...]
    minutes: tuple[CalendarComponent, ...]
    microseconds: tuple[CalendarComponent, ...]
    timezone: str | None = None
    # The fields as (start, stop, repeat) triples with -1 for "no stop", systemd's encoding,
    # which the search arithmetic relies on; derived, so kept out of init, repr and equality.
    _chains: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_chains", tuple(
            tuple((item.start, -1 if item.stop is None else item.stop, item.repeat)
                  for item in field)
            for field in (self.years, self.months, self.days, self.hours, self.minutes,
                          self.microseconds)))

    def normalized(self) -> str:
        """The expression as ``systemd-analyze calendar`` prints it after "Normalized form:"."""
        years, months, days, hours, minutes, microseconds = self._chains
        text = f"{_format_chain(years, 4)}-{_format_chain(months, 2)}" \
               f"{'~' if self.end_of_month else '-'}{_format_chain(days, 2)} " \
               f"{_format_chain(hours, 2)}:{_format_chain(minutes, 2)}:" \
               f"{_format_chain(microseconds, 2, _MICROSECONDS)}"
        if self.weekdays != _ALL_WEEKDAYS:
            text = f"{_format_weekdays(self.weekdays)} {text}"
        return text if self.timezone is None else f"{text} {self.timezone}"

    def next_elapse(self, after: datetime, zone: tzinfo) -> datetime | None:
        """The first elapse strictly after ``after``, as systemd computes it; None if never.

        The fields are wall times of the spec's own zone if it names one, else of ``zone``;
        the result is an aware datetime in that zone. Like systemd it finds nothing after
        the year 2199 and nothing before 1970 (an earlier ``after`` counts as 1970).

        :raises ValueError: if ``after`` is naive.
        """
        if after.utcoffset() is None:
            raise ValueError(f"next_elapse needs a timezone-aware datetime, got {after!r}")
        zone = self.zone(zone)
        since_epoch = after - _EPOCH
        base = max(since_epoch // timedelta(microseconds=1), -1)
        found = _Search(self, zone).next_elapse(base)
        if found is None:
            return None
        return (_EPOCH + timedelta(microseconds=found)).astimezone(zone)

    def zone(self, default: tzinfo) -> tzinfo:
        """The zone the fields refer to: the expression's own, else ``default``."""
        if self.timezone is None:
            return default
        return _UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)

    def __str__(self) -> str:
        return self.normalized()


def parse_calendar(expression: str) -> CalendarSpec:
    """Parse a systemd.time(7) calendar event, such as ``Mon..Fri 02:00`` or ``daily``.

    It accepts what systemd 252 accepts (surrounding whitespace aside), with the same
    normalization, except a zone suffix that is a zone abbreviation (``CET``), which systemd
    reads as the local zone's standard or summer time.

    :raises ValueError: with one line saying what is wrong and how to fix it; also for an
        expression that never elapses (``*-02-30``, ``Mon 2024-12-03``: no date from 1970
        to 2199 matches), which systemd accepts and never runs.
    :raises TypeError: if ``expression`` is not a string.
    """
    if not isinstance(expression, str):
        raise TypeError(f"a calendar expression must be a string, not "
                        f"{type(expression).__name__}")
    spec = _Parser(expression.strip()).parse()
    _check_elapses(spec, expression.strip())
    return spec


# -- parsing ---------------------------------------------------------------------------------

@dataclasses.dataclass
class _Raw:
    """The fields as parsed, before systemd's normalization; None is '*'."""

    weekday_bits: int = 0
    years: list | None = None
    months: list | None = None
    days: list | None = None
    end_of_month: bool = False
    hours: list | None = None
    minutes: list | None = None
    microseconds: list | None = None
    timezone: str | None = None


class _Parser:
    """systemd's grammar, read left to right, with a message for each way it can fail."""

    def __init__(self, text: str):
        self.text = text
        self.body = ""
        self.position = 0

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"calendar {self.text!r}: {problem}")

    def parse(self) -> CalendarSpec:
        if not self.text:
            raise ValueError("the calendar expression is empty; write one such as "
                             "'Mon..Fri 02:00', '*-*-01 06:00' or 'daily'")
        if self.text.upper() == "UTC" or ("/" in self.text and _load_zone_name(self.text)):
            raise self.fail("a time zone alone is no calendar event; put the event before "
                            "it, as in 'daily UTC'")
        if _CRONTAB_LINE.fullmatch(self.text) and not _SHORTHANDS.get(self.text.lower()):
            raise self.fail("this is crontab syntax, not a systemd calendar event; write "
                            "it as [weekdays] [year-]month-day hour:minute, as in "
                            "'Mon..Fri *-*-* 03:00' or 'daily'")
        raw = _Raw()
        self.body, raw.timezone = self._split_zone()
        shorthand = _SHORTHANDS.get(self.body.lower())
        if shorthand is not None:
            weekdays, months, days, hours, minutes = shorthand
            raw.weekday_bits = sum(1 << day for day in weekdays) if weekdays else 0
            raw.months, raw.days = _constants(months), _constants(days)
            raw.hours, raw.minutes = _constants(hours), _constants(minutes)
            raw.microseconds = [[0, -1, 0]]
        else:
            raw.weekday_bits = self._weekdays()
            if not self._date(raw):
                self._time(raw)
            if self.position < len(self.body):  # the grammar above ends at the end
                raise self.fail(f"unexpected {self.body[self.position:]!r} at the end")
        return self._normalize(raw)

    # - zone

    def _split_zone(self) -> tuple[str, str | None]:
        text = self.text
        if text[-4:].upper() == " UTC" and len(text) > 4:
            body, zone = text[:-4], "UTC"
        else:
            body, space, word = text.rpartition(" ")
            if not space:
                return text, None
            zone = _load_zone_name(word)
            if zone is None:
                self._refuse_zone_like(word)
                return text, None
            if _ABBREVIATION.fullmatch(word):
                raise self.fail(f"{word!r} is a time zone abbreviation, which systemd reads "
                                f"as the local zone's standard or summer time; use an IANA "
                                f"name such as Europe/Berlin, or UTC")
        if body != body.rstrip():
            raise self.fail(f"put a single space before the time zone {zone!r}")
        return body, zone

    def _refuse_zone_like(self, word: str) -> None:
        """Name a last word meant as a zone that is none (an area/location name or an
        abbreviation), before the grammar fails on it less clearly."""
        if word[:1].isalpha() and ("/" in word or _ABBREVIATION.fullmatch(word)) \
                and not _is_weekday_list(word):
            raise self.fail(f"{word!r} is not a time zone this machine knows; use an IANA "
                            f"name such as Europe/Berlin (names are case-sensitive), or UTC")

    # - weekdays

    def _weekday_at(self) -> tuple[str, int] | None:
        rest = self.body[self.position:].lower()
        for word, number in _WEEKDAY_WORDS:
            if rest.startswith(word):
                return word, number
        return None

    def _weekdays(self) -> int:
        body = self.body
        bits, range_start, first = 0, None, True
        while True:
            found = self._weekday_at()
            if found is None:
                if first:
                    self._refuse_word()
                    return 0
                self._refuse_weekday_item(range_start)
            word, number = found
            after = self.position + len(word)
            if body[after:after + 1] not in ("", "-", ".", ",", " "):
                if body[after].isalpha():
                    self._refuse_word()
                raise self.fail(f"expected ',', '..' or a space after the weekday "
                                f"{body[self.position:after]!r}, got {body[after:]!r}")
            bits |= 1 << number
            if range_start is not None:
                if range_start > number:
                    raise self.fail(_backwards_weekdays(range_start, number))
                for between in range(range_start + 1, number):
                    bits |= 1 << between
            self.position = after
            separator = body[after:after + 1]
            if separator in ("", " "):
                self._skip_spaces()
                return bits
            if separator == ".":
                if range_start is not None:
                    first_name, last_name = _WEEKDAY_NAMES[range_start], _WEEKDAY_NAMES[number]
                    raise self.fail(f"a weekday range has two ends; write it as "
                                    f"'{first_name}..{last_name}' and add more days after a "
                                    f"comma")
                if body[after + 1:after + 2] != ".":
                    raise self.fail("write a weekday range with '..', as in 'Mon..Fri'")
                range_start, self.position = number, after + 2
            elif separator == "-":
                if range_start is not None:
                    raise self.fail("a weekday range has two ends; add more days after a "
                                    "comma, as in 'Mon..Wed,Fri'")
                range_start, self.position = number, after + 1
            else:  # ','
                range_start, self.position = None, after + 1
            if body[self.position:self.position + 1] in ("", " "):
                if range_start is not None:
                    name = _WEEKDAY_NAMES[range_start]
                    raise self.fail(f"the weekday range '{name}..' has no end; write it as "
                                    f"'{name}..Sun'")
                self._skip_spaces()  # systemd allows a trailing comma
                return bits
            first = False

    def _refuse_word(self) -> None:
        """Refuse a word where a weekday may stand; return if no word is there."""
        match = re.match(r"[A-Za-z]+", self.body[self.position:])
        if match is None:
            return
        word = match.group()
        if re.fullmatch(r"[A-Za-z-]+", self.body):  # one word: a shorthand or a weekday
            word = self.body
            close = difflib.get_close_matches(word.lower(), [*_SHORTHANDS, *_WEEKDAY_NUMBERS],
                                              n=1)
            if not close:
                raise self.fail(f"{word!r} is not a weekday or a shorthand; use weekdays "
                                f"such as Mon..Fri, or one of {_SHORTHAND_HINT}")
            if close[0] in _SHORTHANDS:
                raise self.fail(f"{word!r} is not a shorthand; did you mean {close[0]}? "
                                f"(shorthands: {_SHORTHAND_HINT})")
            guess = _WEEKDAY_NAMES[_WEEKDAY_NUMBERS[close[0]]]
            raise self.fail(f"{word!r} is not a weekday; did you mean {guess}? "
                            f"{_WEEKDAY_HINT}")
        raise self.fail(f"{word!r} is not a weekday; {_WEEKDAY_HINT}")

    def _refuse_weekday_item(self, range_start: int | None) -> None:
        rest = self.body[self.position:]
        if rest[:1].isalpha():
            self._refuse_word()
        if range_start is not None:
            name = _WEEKDAY_NAMES[range_start]
            raise self.fail(f"the weekday range '{name}..' has no end; write it as "
                            f"'{name}..Sun'")
        if rest[:1] in (",", ".", "-"):
            raise self.fail("the weekday list has an empty item; separate weekdays with "
                            "single commas and ranges with '..', as in 'Mon,Wed..Fri'")
        raise self.fail(f"expected a weekday at {rest!r}; put a space between the weekdays "
                        f"and the date or time, as in 'Mon,Fri 12:00'")

    def _skip_spaces(self) -> None:
        while self.body[self.position:self.position + 1] == " ":
            self.position += 1

    # - date and time

    def _date(self, raw: _Raw) -> bool:
        """Parse the date if there is one; True if it was a '@' timestamp (date and time)."""
        body, start = self.body, self.position
        if start == len(body):
            return False
        if body[start] == "@":
            self._timestamp(raw)
            return True
        if body[start].isalpha():
            self._refuse_word_in_date()
        first = self._chain(seconds=False)
        separator = body[self.position:self.position + 1]
        if separator in ("", ":"):
            self.position = start  # it was the hour: no date
            return False
        if separator not in ("-", "~"):
            raise self.fail(self._unexpected("'-' (a date) or ':' (a time)"))
        raw.end_of_month = separator == "~"
        self.position += 1
        second = self._chain(seconds=False)
        separator = body[self.position:self.position + 1]
        if separator in ("", " "):
            raw.months, raw.days = first, second
            self._skip_spaces()
            return False
        if raw.end_of_month:
            raise self.fail("'~' separates the month from the day, as in '*-02~01' or "
                            "'2024-02~01'; write the year with '-'")
        if separator not in ("-", "~"):
            raise self.fail(self._unexpected("'-' or '~' before the day"))
        raw.end_of_month = separator == "~"
        self.position += 1
        third = self._chain(seconds=False)
        separator = body[self.position:self.position + 1]
        if separator not in ("", " "):
            if separator in ("-", "~"):
                raise self.fail("a date has at most three parts, year-month-day, as in "
                                "'2024-*-01'")
            raise self.fail(self._unexpected("a space after the date"))
        raw.years, raw.months, raw.days = first, second, third
        self._skip_spaces()
        return False

    def _refuse_word_in_date(self) -> None:
        word = re.match(r"[A-Za-z]+", self.body[self.position:]).group()
        if _is_weekday_list(word):
            raise self.fail(f"weekdays come first and in one list without spaces, as in "
                            f"'Mon,Fri 12:00'; got {word!r} later")
        raise self.fail(f"{word!r} is not a date or time; write a date as "
                        f"[year-]month-day and a time as hour:minute[:second]")

    def _timestamp(self, raw: _Raw) -> None:
        digits = re.match(r"[0-9]+", self.body[self.position + 1:])
        if digits is None:
            raise self.fail("write '@' followed by the seconds since 1970-01-01 UTC, as in "
                            "'@1700000000'")
        self.position += 1 + len(digits.group())
        if self.position < len(self.body):
            raise self.fail("a '@' timestamp is a whole date and time; write nothing after "
                            "it but a time zone")
        try:
            moment = _EPOCH + timedelta(seconds=int(digits.group()))
        except OverflowError:
            moment = datetime(9999, 1, 1, tzinfo=_UTC)
        raw.years, raw.months, raw.days = [[moment.year, -1, 0]], [[moment.month, -1, 0]], \
            [[moment.day, -1, 0]]
        raw.hours, raw.minutes = [[moment.hour, -1, 0]], [[moment.minute, -1, 0]]
        raw.microseconds = [[moment.second * _MICROSECONDS, -1, 0]]
        raw.timezone = "UTC"  # systemd computes a timestamp in UTC, whatever zone follows

    def _time(self, raw: _Raw) -> None:
        body = self.body
        if self.position == len(body):
            raw.hours, raw.minutes, raw.microseconds = [[0, -1, 0]], [[0, -1, 0]], \
                [[0, -1, 0]]
            return
        if body[self.position].isalpha():
            self._refuse_word_in_date()
        start = self.position
        hours = self._chain(seconds=False)
        if self.position == len(body):
            raise self.fail(f"{body[start:]!r} is not a whole time; write hour:minute, as "
                            f"in '02:00' or '*:0/15'")
        if body[self.position] != ":":
            raise self.fail(self._unexpected("':' and the minutes (a time is hour:minute, "
                                             "as in 02:00 or *:0/15)"))
        self.position += 1
        minutes = self._chain(seconds=False)
        microseconds = [[0, -1, 0]]
        if self.position < len(body):
            if body[self.position] != ":":
                raise self.fail(self._unexpected("':' and the seconds"))
            self.position += 1
            microseconds = self._chain(seconds=True)
            if self.position < len(body):
                if body[self.position] == ":":
                    raise self.fail("a time has at most three parts, hour:minute:second")
                raise self.fail(self._unexpected("the end after the seconds"))
        raw.hours, raw.minutes, raw.microseconds = hours, minutes, microseconds

    def _unexpected(self, expected: str) -> str:
        rest = self.body[self.position:]
        if not rest:
            return f"expected {expected}, got the end"
        word = re.match(r"[A-Za-z.,-]+", rest.lstrip(" "))
        if rest.startswith(" ") and word and _is_weekday_list(word.group()):
            return (f"weekdays come first, as in '{word.group()} "
                    f"{self.body[:self.position].strip()}'")
        if rest.startswith(" "):
            return f"expected {expected}, got a space before {rest.lstrip()!r}"
        return f"expected {expected}, got {rest!r}"

    def _chain(self, seconds: bool) -> list | None:
        """A field: '*' (None; every second for the seconds) or a list of components."""
        body = self.body
        if body[self.position:self.position + 1] == "*":
            self.position += 1
            following = body[self.position:self.position + 1]
            if following == "/":
                raise self.fail("'*/n' is crontab syntax; systemd writes a repetition as "
                                "start/n, as in '*:0/15' or '*-*-1/2'")
            if following == ",":
                raise self.fail("'*' already matches every value; write it alone or list "
                                "the values")
            return [[0, -1, _MICROSECONDS]] if seconds else None
        unit = _MICROSECONDS if seconds else 1
        components = []
        while True:
            start = self._number(seconds)
            stop, repeat = -1, 0
            if body[self.position:self.position + 2] == "..":
                self.position += 2
                stop, repeat = self._number(seconds), unit
            if body[self.position:self.position + 1] == "/":
                self.position += 1
                repeat = self._number(seconds)
                if repeat == 0:
                    raise self.fail("a repetition after '/' must be more than 0"
                                    + (" (fractions round to microseconds)" if seconds
                                       else ""))
            elif seconds and stop >= 0 and start + repeat > stop:
                shown = _format_item((start, stop, 0), 2, unit)
                raise self.fail(f"the seconds range {shown} spans less than a second; add a "
                                f"repetition such as '/0.1'")
            following = body[self.position:self.position + 1]
            if following not in ("", " ", ",", "-", "~", ":"):
                raise self.fail(self._bad_following(following, seconds))
            components.append([start, stop, repeat])
            if following != ",":
                return components
            if len(components) >= _MAX_LIST:
                raise self.fail(f"a field may list at most {_MAX_LIST} items; use a range or "
                                f"a repetition")
            self.position += 1

    def _bad_following(self, following: str, seconds: bool) -> str:
        rest = self.body[self.position:]
        if following == "." and rest[1:2].isdigit() and not seconds:
            return "only the seconds may have a fraction"
        if following == ".":
            return f"write a range with '..', as in '1..5', got {rest!r}"
        if following == "/":
            return "a value takes one repetition, as in '0/15'"
        return (f"unexpected {rest!r}; write each field as '*' or a list such as '1,15', "
                f"'8..18' or '0/15'")

    def _number(self, seconds: bool) -> int:
        body, position = self.body, self.position
        digits = re.match(r"[0-9]+", body[position:])
        if digits is None:
            rest = body[position:]
            if rest[:1] in ("", " ", ",", "-", ":", "~"):
                raise self.fail(f"a value is missing before {rest!r}" if rest else
                                "a value is missing at the end")
            if rest[:1] == "*":
                raise self.fail("'*' stands for a whole field; it cannot be part of a list "
                                "or range")
            raise self.fail(f"expected a number at {rest!r}; write each field as '*' or a "
                            f"list such as '1,15', '8..18' or '0/15'")
        position += len(digits.group())
        value = int(digits.group())
        if seconds:
            value *= _MICROSECONDS
            if body[position:position + 1] == "." and body[position + 1:position + 2] != ".":
                fraction = re.match(r"[0-9]+", body[position + 1:])
                if fraction is None:
                    raise self.fail(f"a decimal point needs digits after it, as in "
                                    f"'{digits.group()}.5'")
                position += 1 + len(fraction.group())
                value += _round_fraction(fraction.group())
        if value > _INT_MAX:
            raise self.fail(f"the number {body[self.position:position]!r} is too large")
        self.position = position
        return value

    # - normalization and validity, as systemd's calendar_spec_normalize() and _valid()

    def _normalize(self, raw: _Raw) -> CalendarSpec:
        if raw.years is not None:
            for component in raw.years:
                component[0] = _full_year(component[0])
                if component[1] >= 0:
                    component[1] = _full_year(component[1])
        if raw.days is None:
            raw.end_of_month = False
        chains = [_normalize_chain(chain) for chain in (
            raw.years, raw.months, raw.days, raw.hours, raw.minutes, raw.microseconds)]
        years, months, days, hours, minutes, microseconds = chains
        self._check_chain(years, "year", _MIN_YEAR, _MAX_YEAR)
        self._check_chain(months, "month", 1, 12)
        self._check_chain(days, "day", 1, 31, raw.end_of_month)
        self._check_chain(hours, "hour", 0, 23)
        self._check_chain(minutes, "minute", 0, 59)
        self._check_chain(microseconds, "second", 0, 60 * _MICROSECONDS - 1)
        bits = raw.weekday_bits
        weekdays = frozenset(day for day in range(7) if bits & (1 << day)) \
            if 0 < bits < 127 else _ALL_WEEKDAYS
        components = [tuple(CalendarComponent(start, None if stop < 0 else stop, repeat)
                            for start, stop, repeat in chain) for chain in chains]
        return CalendarSpec(weekdays, *components[:3], raw.end_of_month, *components[3:],
                            timezone=raw.timezone)

    def _check_chain(self, chain: list, field: str, low: int, high: int,
                     end_of_month: bool = False) -> None:
        unit = _MICROSECONDS if field == "second" else 1
        width = 4 if field == "year" else 2
        for index, (start, stop, repeat) in enumerate(chain):
            if end_of_month:
                # systemd 252 lowers the bound by 3 for each item of a '~' list (sorted):
                # 28 days back for the first, 25 for the second, 22 for the third, ...
                high -= 3
            item = _format_item((start, stop, repeat), width, unit)
            shown = f"~{item}" if end_of_month else item
            if not low <= start <= high or (stop >= 0 and not low <= stop <= high):
                value = start if not low <= start <= high else stop
                raise self.fail(self._out_of_range(field, value, low, high, end_of_month,
                                                   index))
            if repeat > high - low:
                raise self.fail(f"the {field} repetition in {shown!r} is longer than the "
                                f"{field} field; use at most "
                                f"{_format_value(high - low, unit)}")
            if stop >= 0:
                if start + repeat > stop:
                    raise self.fail(f"the {field} range {shown!r} runs backwards; write "
                                    f"{_format_value(stop, unit, width)}.."
                                    f"{_format_value(start, unit, width)}")
            elif end_of_month and start - repeat < low:
                raise self.fail(f"the day {shown!r} repeats past the month's end; counted "
                                f"from the end the repetition must be less than "
                                f"{start} (as in '~07/1')")
            elif not end_of_month and start + repeat > high:
                raise self.fail(f"the {field} {shown!r} never repeats, "
                                f"{_format_value(start, unit)} + "
                                f"{_format_value(repeat, unit)} is past "
                                f"{_format_value(high, unit)}; drop the repetition or use "
                                f"a smaller one")

    def _out_of_range(self, field: str, value: int, low: int, high: int,
                      end_of_month: bool, index: int = 0) -> str:
        if end_of_month and index == 0:
            return f"'~{value:02d}' counts too far back; '~' takes 1 (the last day) to 28"
        if end_of_month:
            return (f"'~{value:02d}' counts too far back for item {index + 1} of a '~' "
                    f"list; systemd allows 28 days back for the smallest item and 3 fewer for "
                    f"each further one (25, 22, ...), so use smaller values or fewer items")
        if field == "year":
            return (f"year {value} is out of range; systemd handles {_MIN_YEAR} to "
                    f"{_MAX_YEAR} (00..69 mean 2000..2069, 70..99 mean 1970..1999)")
        unit = _MICROSECONDS if field == "second" else 1
        shown = _format_value(value, unit)
        return f"{field} {shown} is out of range {low}..{_format_value(high, unit, 0, True)}"


def _constants(values: tuple[int, ...] | None) -> list | None:
    return None if values is None else [[value, -1, 0] for value in values]


def _round_fraction(digits: str) -> int:
    """Six decimals, the seventh rounding half up, as systemd's parse_fractional_part_u."""
    value = int(digits[:6].ljust(6, "0"))
    return value + 1 if len(digits) > 6 and digits[6] >= "5" else value


def _full_year(year: int) -> int:
    if 0 <= year < 70:
        return year + 2000
    return year + 1900 if 70 <= year < 100 else year


def _normalize_chain(chain: list | None) -> list:
    """systemd's normalize_chain: trim stops to the repetition, sort, drop duplicates."""
    if chain is None:
        return []
    for component in chain:
        start, stop, repeat = component
        if stop > start and repeat > 0:
            stop -= (stop - start) % repeat
        if (stop > start and repeat > 0 and start + repeat > stop) or start == stop:
            repeat, stop = 0, -1
        component[:] = [start, stop, repeat]
    unique = sorted({tuple(component) for component in chain})
    return [list(component) for component in unique]


def _load_zone_name(word: str) -> str | None:
    """The word if systemd's timezone_is_valid() would take it and this machine has it."""
    if not _ZONE_NAME.fullmatch(word):
        return None
    try:
        ZoneInfo(word)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None
    return word


def _is_weekday_list(word: str) -> bool:
    parts = re.split(r"\.\.|,|-", word.lower())
    return bool(parts[0]) and all(part in _WEEKDAY_NUMBERS for part in parts if part)


def _backwards_weekdays(first: int, last: int) -> str:
    start, end = _WEEKDAY_NAMES[first], _WEEKDAY_NAMES[last]
    tail = "Sun" if first == 6 else f"{start}..Sun"
    head = "Mon" if last == 0 else f"Mon..{end}"
    return (f"the weekday range '{start}..{end}' runs backwards (weeks run Mon to Sun); "
            f"write '{end}..{start}', or '{tail},{head}' to wrap around the weekend")


# -- formatting, as systemd's calendar_spec_to_string() ----------------------------------------

def _format_weekdays(weekdays: frozenset[int]) -> str:
    runs: list[list[int]] = []
    for day in sorted(weekdays):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_WEEKDAY_NAMES[run[0]]}..{_WEEKDAY_NAMES[run[-1]]}")
        else:
            parts.extend(_WEEKDAY_NAMES[day] for day in run)
    return ",".join(parts)


def _format_chain(chain: tuple, width: int, unit: int = 1) -> str:
    if not chain or (unit > 1 and (0, -1, unit) in chain):
        return "*"
    return ",".join(_format_item(item, width, unit) for item in chain)


def _format_item(item: tuple, width: int, unit: int) -> str:
    start, stop, repeat = item
    text = _format_value(start, unit, width)
    if stop > 0:
        text += f"..{_format_value(stop, unit, width)}"
    if repeat > 0 and not (stop > 0 and repeat == unit):
        text += f"/{_format_value(repeat, unit)}"
    return text


def _format_value(value: int, unit: int, width: int = 0, whole: bool = False) -> str:
    text = f"{value // unit:0{width}d}"
    if value % unit and not whole:
        text += f".{value % unit:06d}"
    return text


# -- refusing expressions that never elapse ---------------------------------------------------

def _check_elapses(spec: CalendarSpec, text: str) -> None:
    """Refuse a spec no date of systemd's years 1970..2199 matches (the time always can)."""
    years, months, days = spec._chains[:3]
    year_range = range(_MIN_YEAR, _MAX_YEAR + 1)
    candidate_years = [year for year in year_range if _chain_has(years, year)]
    candidate_months = [month for month in range(1, 13) if _chain_has(months, month)]

    def matching_day(year_list, weekdays) -> bool:
        for year in year_list:
            for month in candidate_months:
                length = _month_length(year, month)
                first_weekday = date(year, month, 1).weekday()
                for day in _days_of(days, spec.end_of_month, length):
                    if (first_weekday + day - 1) % 7 in weekdays:
                        return True
        return False

    if matching_day(candidate_years, spec.weekdays):
        return
    prefix = f"calendar {text!r} never elapses"
    if not matching_day((2000, 2001), _ALL_WEEKDAYS):  # a leap year and a common one
        months_text = _format_chain(months, 2)
        days_text = ("~" if spec.end_of_month else "") + _format_chain(days, 2)
        raise ValueError(f"{prefix}: no month {months_text} has a day {days_text}; use a day "
                         f"that exists, or *-{months_text}~01 for the month's last day")
    if not matching_day(candidate_years, _ALL_WEEKDAYS):
        raise ValueError(f"{prefix}: none of the years {_format_chain(years, 4)} has the "
                         f"date {_format_chain(months, 2)}-{_format_chain(days, 2)}; check "
                         f"the year")
    single = ""
    if len(candidate_years) == 1 and len(candidate_months) == 1:
        year, month = candidate_years[0], candidate_months[0]
        dates = _days_of(days, spec.end_of_month, _month_length(year, month))
        if len(dates) == 1:
            moment = date(year, month, dates[0])
            single = f" ({moment.isoformat()} is a {moment.strftime('%A')})"
    raise ValueError(f"{prefix}: none of its dates falls on "
                     f"{_format_weekdays(spec.weekdays)}{single}; change the date or the "
                     f"weekdays, or drop the weekdays")


def _chain_has(chain: tuple, value: int) -> bool:
    if not chain:
        return True
    return any(value == start
               or (repeat > 0 and value > start and (value - start) % repeat == 0
                   and (stop < 0 or value <= stop))
               for start, stop, repeat in chain)


def _days_of(chain: tuple, end_of_month: bool, length: int) -> list[int]:
    if not end_of_month:
        return [day for day in range(1, length + 1) if _chain_has(chain, day)]
    resolved = []
    for start, stop, repeat in chain:
        first = length + 1 - start
        last = length + 1 - stop if stop > 0 else -1
        if last > 0:
            first, last = last, first
        resolved.append((first, last, repeat))
    return [day for day in range(1, length + 1) if _chain_has(tuple(resolved), day)]


def _month_length(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


# -- the search, as systemd's find_next() with glibc's mktime ---------------------------------

class _Wall:
    """A broken-down wall time like C's struct tm; fields may be out of range until
    normalized. ``month`` counts from 1; ``isdst`` is -1 (unknown), 0 or 1."""

    __slots__ = ("year", "month", "day", "hour", "minute", "second", "isdst")

    def __init__(self, year, month, day, hour, minute, second, isdst):
        self.year, self.month, self.day = year, month, day
        self.hour, self.minute, self.second, self.isdst = hour, minute, second, isdst

    def copy(self) -> _Wall:
        return _Wall(self.year, self.month, self.day, self.hour, self.minute, self.second,
                     self.isdst)

    def set(self, other: _Wall) -> None:
        self.year, self.month, self.day = other.year, other.month, other.day
        self.hour, self.minute, self.second = other.hour, other.minute, other.second
        self.isdst = other.isdst

    def fields(self) -> tuple[int, ...]:
        return self.year, self.month, self.day, self.hour, self.minute, self.second


class _Clock:
    """glibc's localtime() and mktime() in one zone.

    mktime inverts localtime by probing: it guesses the UTC offset, converts, and corrects
    by the difference in wall time. The first guess is the offset it found on its previous
    call, and for a wall time that exists twice (a fold) without a tm_isdst to choose, that
    guess decides which occurrence it returns; so the guess is state here as it is in glibc.
    A wall time that does not exist (a gap) comes back moved by the size of the gap,
    preferring the summer time side: 02:30 in a 02:00->03:00 jump becomes 03:30.
    """

    def __init__(self, zone: tzinfo):
        self.zone = zone
        self.guess = 0  # glibc's offset: seconds from the wall time to UTC (-gmtoff)

    def probe(self, seconds: int) -> tuple[int, bool]:
        """The wall time (seconds since 1970 as if UTC) and DST flag at an instant."""
        local = (_EPOCH + timedelta(seconds=seconds)).astimezone(self.zone)
        return seconds + local.utcoffset() // timedelta(seconds=1), bool(local.dst())

    def localtime(self, seconds: int) -> _Wall:
        local = (_EPOCH + timedelta(seconds=seconds)).astimezone(self.zone)
        self.guess = -(local.utcoffset() // timedelta(seconds=1))
        return _Wall(local.year, local.month, local.day, local.hour, local.minute,
                     local.second, int(bool(local.dst())))

    def mktime(self, wall: _Wall) -> int | None:
        """Normalize ``wall`` in place and return its instant, or None where glibc fails."""
        try:
            return self._mktime(wall)
        except (OverflowError, ValueError):
            return None

    def _mktime(self, wall: _Wall) -> int | None:
        year = wall.year + (wall.month - 1) // 12
        month_index = (wall.month - 1) % 12
        leap_day = 1 if month_index >= 2 and calendar.isleap(year) else 0
        days = (date(year, 1, 1).toordinal() - _EPOCH_ORDINAL + _DAYS_BEFORE_MONTH[month_index]
                + leap_day + wall.day - 1)
        second = min(max(wall.second, 0), 59)  # glibc probes with 0..59, then adds the rest
        target = ((days * 24 + wall.hour) * 60 + wall.minute) * 60 + second
        wanted_dst = wall.isdst
        start = target + self.guess
        instant = previous = before_previous = start
        previous_dst = False
        probes_left = 6
        while True:
            local, dst = self.probe(instant)
            difference = target - local
            if difference == 0:
                break
            if instant == previous and instant != before_previous and (
                    previous_dst <= dst if wanted_dst < 0 else bool(wanted_dst) != dst):
                # Oscillating around a gap: take this side (glibc's rule).
                return self._found(wall, instant, target, second)
            probes_left -= 1
            if probes_left == 0:
                return None
            previous, before_previous = before_previous, instant
            instant, previous_dst = instant + difference, dst
        if wanted_dst >= 0 and bool(wanted_dst) != dst:
            instant = self._with_dst(instant, target, bool(wanted_dst))
        return self._found(wall, instant, target, second)

    def _with_dst(self, instant: int, target: int, dst: bool) -> int:
        """glibc's search for the requested tm_isdst a week, two weeks, ... either side;
        failing that it assumes a one-hour shift."""
        stride = 601200
        for delta in range(stride, 536454000 // 2 + stride, stride):
            for direction in (-1, 1):
                other = instant + delta * direction
                local, other_dst = self.probe(other)
                if other_dst == dst:
                    return other + target - local
        return instant - 3600 if dst else instant + 3600

    def _found(self, wall: _Wall, instant: int, target: int, second: int) -> int:
        self.guess = instant - target
        instant += wall.second - second
        local = (_EPOCH + timedelta(seconds=instant)).astimezone(self.zone)
        wall.set(_Wall(local.year, local.month, local.day, local.hour, local.minute,
                       local.second, int(bool(local.dst()))))
        return instant


class _Search:
    """One next-elapse computation: systemd's find_next() over an emulated glibc."""

    def __init__(self, spec: CalendarSpec, zone: tzinfo):
        self.spec = spec
        self.clock = _Clock(zone)

    def next_elapse(self, base: int) -> int | None:
        """The first elapse strictly after ``base`` (microseconds since 1970), or None."""
        moment = base + 1
        wall = self.clock.localtime(moment // _MICROSECONDS)
        found = self._find_next(wall, moment % _MICROSECONDS)
        if found is None:
            return None
        wall, microsecond = found
        seconds = self.clock.mktime(wall)
        if seconds is None or seconds < 0:
            return None
        return seconds * _MICROSECONDS + microsecond

    def _matching(self, chain: tuple, wall: _Wall, value: int,
                  days: bool = False) -> int | None:
        """The smallest value >= ``value`` a chain allows (systemd's find_matching_component),
        ``value`` itself for '*', None if there is none."""
        if not chain:
            return value
        end_of_month = days and self.spec.end_of_month
        best = None
        for start, stop, repeat in chain:
            if end_of_month:
                start = self._from_month_end(wall, start)
                stop = self._from_month_end(wall, stop)  # called for -1 too: mktime's guess
                if stop > 0:
                    start, stop = stop, start
            if start >= value:
                candidate = start
            elif repeat > 0:
                candidate = start + repeat * -((start - value) // repeat)
                if stop >= 0 and candidate > stop:
                    continue
            else:
                continue
            if best is None or candidate < best:
                best = candidate
        return best

    def _from_month_end(self, wall: _Wall, day: int) -> int:
        probe = wall.copy()
        probe.month += 1
        probe.day = 1 - day
        seconds = self.clock.mktime(probe)
        if seconds is None or seconds < 0 or probe.month != (wall.month - 1) % 12 + 1:
            return -1
        return probe.day

    def _within_bounds(self, wall: _Wall) -> int:
        """systemd's tm_within_bounds: 1 if ``wall`` is a normalized time, 0 after moving it
        forward to the normalized one (lower field reset), -1 if it cannot be used."""
        if wall.year > _MAX_YEAR:
            return -1
        normal = wall.copy()
        seconds = self.clock.mktime(normal)
        if seconds is None or seconds < 0:
            return -1
        reset = ("month", "day", "hour", "minute", "second")
        lowest = {"month": 1, "day": 1}
        comparison = 0
        for index, (mine, theirs) in enumerate(zip(wall.fields(), normal.fields())):
            if mine != theirs:
                comparison = 1 if theirs > mine else -1
                if index < 5:
                    setattr(normal, reset[index], lowest.get(reset[index], 0))
                break
        if comparison < 0:
            return -1  # systemd refuses to go backwards
        if comparison > 0:
            wall.set(normal)
            return 0
        return 1

    def _weekday_matches(self, wall: _Wall) -> bool:
        if self.spec.weekdays == _ALL_WEEKDAYS:
            return True
        normal = wall.copy()
        seconds = self.clock.mktime(normal)
        if seconds is None or seconds < 0:
            return False
        return date(normal.year, normal.month, normal.day).weekday() in self.spec.weekdays

    def _find_next(self, wall: _Wall, microsecond: int) -> tuple[_Wall, int] | None:
        years, months, days, hours, minutes, microseconds = self.spec._chains
        start = (*wall.fields(), microsecond)
        keep_dst = False
        for _ in range(_MAX_ITERATIONS):
            self.clock.mktime(wall)
            if not keep_dst:
                wall.isdst = -1

            year = self._matching(years, wall, wall.year)
            if year is None:
                return None
            if year != wall.year:
                wall.year, wall.month, wall.day = year, 1, 1
                wall.hour = wall.minute = wall.second = microsecond = 0
            if self._within_bounds(wall) <= 0:
                return None

            month = self._matching(months, wall, wall.month)
            status = -1
            if month is not None:
                if month != wall.month:
                    wall.month, wall.day = month, 1
                    wall.hour = wall.minute = wall.second = microsecond = 0
                status = self._within_bounds(wall)
            if status < 0:
                wall.year, wall.month, wall.day = wall.year + 1, 1, 1
                wall.hour = wall.minute = wall.second = microsecond = 0
                continue
            if status == 0:
                continue

            day = self._matching(days, wall, wall.day, days=True)
            status = -1
            if day is not None:
                if day != wall.day:
                    wall.day = day
                    wall.hour = wall.minute = wall.second = microsecond = 0
                status = self._within_bounds(wall)
            if status < 0:
                wall.month, wall.day = wall.month + 1, 1
                wall.hour = wall.minute = wall.second = microsecond = 0
                continue
            if status == 0:
                continue

            if not self._weekday_matches(wall):
                wall.day += 1
                wall.hour = wall.minute = wall.second = microsecond = 0
                continue

            hour = self._matching(hours, wall, wall.hour)
            status = -1
            if hour is not None:
                if hour != wall.hour:
                    wall.hour = hour
                    wall.minute = wall.second = microsecond = 0
                status = self._within_bounds(wall)
            if status < 0:
                wall.day += 1
                wall.hour = wall.minute = wall.second = microsecond = 0
                continue
            if status == 0:  # a daylight-saving jump may have moved the hour: start again
                continue

            minute = self._matching(minutes, wall, wall.minute)
            status = -1
            if minute is not None:
                if minute != wall.minute:
                    wall.minute = minute
                    wall.second = microsecond = 0
                status = self._within_bounds(wall)
            if status < 0:
                wall.hour += 1
                wall.minute = wall.second = microsecond = 0
                continue
            if status == 0:
                continue

            found = self._matching(microseconds, wall,
                                   wall.second * _MICROSECONDS + microsecond)
            status = -1
            if found is not None:
                wall.second, microsecond = divmod(found, _MICROSECONDS)
                status = self._within_bounds(wall)
            if status < 0:
                wall.minute += 1
                wall.second = microsecond = 0
                continue
            if status == 0:
                continue
            if (*wall.fields(), microsecond) < start:
                # A normalization inside a gap went back before the start ("stuck"): like
                # systemd, go on an hour later and let mktime keep the DST flag it finds.
                keep_dst = True
                wall.hour += 1
                continue
            return wall, microsecond
        # systemd gives up here too ("Infinite loop in calendar calculation"), so the timer
        # stops; a month repetition running past December into a month of the other DST
        # state is the usual cause (its DST flag is carried back to January).
        logger.warning("calendar {!r}: the search for the next elapse gives up after {} "
                       "steps, as systemd's does; no further elapse",
                       self.spec.normalized(), _MAX_ITERATIONS)
        return None


# -- the trigger -------------------------------------------------------------------------------

class CalendarTrigger(BaseTrigger):
    """An APScheduler trigger that fires on a systemd.time(7) calendar event.

    :param expression: a calendar event (see :func:`parse_calendar`).
    :param timezone: the zone whose wall clock the expression refers to unless it names its
        own zone, normally a :class:`zoneinfo.ZoneInfo`. :attr:`timezone` is the zone in
        effect: the expression's (``UTC`` is :data:`datetime.timezone.utc`) or this one.
    :raises ValueError: for an invalid expression (see :func:`parse_calendar`).
    :raises TypeError: if ``timezone`` is not a usable :class:`datetime.tzinfo`.
    """

    __slots__ = ("expression", "timezone", "spec")

    def __init__(self, expression: str, timezone: tzinfo):
        check_timezone(timezone)
        self.spec = parse_calendar(expression)
        self.expression = expression.strip()
        self.timezone = self.spec.zone(timezone)

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        """The next fire time, as an aware datetime in :attr:`timezone`.

        Without ``previous_fire_time``: the earliest elapse at or after ``now``. With it:
        the earliest elapse strictly after it, even if that is before ``now`` (the caller
        decides about missed times). Elapses are systemd's (daylight saving included, see
        the module documentation). Returns ``None`` if there is none up to the year 2199.

        :raises ValueError: if the given datetime is naive.
        """
        threshold = now if previous_fire_time is None else previous_fire_time
        if threshold.utcoffset() is None:
            raise ValueError(f"get_next_fire_time needs timezone-aware datetimes, got "
                             f"{threshold!r}")
        threshold = threshold.astimezone(_UTC)  # aware arithmetic would drop a fold
        if previous_fire_time is None:
            threshold -= timedelta(microseconds=1)
        fire_time = self.spec.next_elapse(threshold, self.timezone)
        # systemd only checks that the wall time moved forward, so a fold could in principle
        # give an earlier instant; step on from it to keep this method's contract.
        for _ in range(4):
            if fire_time is None or fire_time > threshold:
                return fire_time
            fire_time = self.spec.next_elapse(fire_time, self.timezone)
        return None

    def __getstate__(self) -> dict:
        return {"version": 1, "expression": self.expression, "timezone": self.timezone}

    def __setstate__(self, state: dict) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"cannot restore a CalendarTrigger saved in state version "
                             f"{state['version']}; this version reads version 1 only")
        self.expression = state["expression"]
        self.spec = parse_calendar(self.expression)
        self.timezone = self.spec.zone(state["timezone"])

    def __str__(self) -> str:
        return f"calendar[{self.expression}, timezone={self.timezone}]"

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} (expression={self.expression!r}, "
                f"timezone='{self.timezone}')>")
