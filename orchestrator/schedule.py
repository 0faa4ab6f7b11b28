"""When a scheduled worker is due: the one place that asks APScheduler's triggers.

The live dispatcher and :meth:`WorkerOrchestrator.plan` both call :class:`Schedule`, so a
plan is what the orchestrator will really do. Interval workers use APScheduler's
``IntervalTrigger`` (fixed rate, start to start, anchored at the orchestrator's start or the
last recorded start); cron workers use :class:`~orchestrator.cron.CrontabTrigger`
(crontab(5) and cron(8)'s daylight-saving rule). A worker's ``jitter_seconds`` moves each
due time later by an amount that a hash of the host, the worker and the trigger time gives,
so a plan shows the moved times.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import socket
from datetime import datetime, timedelta, timezone, tzinfo

import tzlocal
from apscheduler.triggers.interval import IntervalTrigger

from .config import WorkerConfig, WorkerExecutionMode
from .calendar_event import CalendarTrigger
from .cron import CrontabTrigger


def local_timezone() -> tzinfo:
    """The machine's time zone (``TZ`` or ``/etc/localtime``), as a zoneinfo zone."""
    return tzlocal.get_localzone()


class Schedule:
    """Due times of one SCHEDULED worker.

    :param anchor: for interval workers, the first due time; later ones follow at fixed
        rate from it. Ignored for cron workers.
    """

    def __init__(self, config: WorkerConfig, anchor: datetime, default_timezone: tzinfo):
        self.timezone = config.timezone or default_timezone
        if config.cron is not None:
            self.trigger = CrontabTrigger(config.cron, self.timezone)
            self.description = f"cron '{config.cron}' ({self.timezone})"
        elif config.calendar is not None:
            self.trigger = CalendarTrigger(config.calendar, self.timezone)
            self.timezone = self.trigger.spec.zone(self.timezone)  # its own zone, if it names one
            self.description = f"calendar '{self.trigger.spec.normalized()}'"
            if self.trigger.spec.timezone is None:
                self.description += f" ({self.timezone})"
        else:
            self.trigger = IntervalTrigger(seconds=config.interval_seconds, start_date=anchor,
                                           timezone=self.timezone)
            self.description = f"every {config.interval_seconds:g}s"
        self.jitter = timedelta(seconds=config.jitter_seconds or 0)
        if self.jitter:
            self.description += f", up to {config.jitter_seconds:g}s later (jitter)"
            self._seed = f"{socket.gethostname()}\0{config.name}\0".encode()
            self._nominal: dict[datetime, datetime] = {}  # due time -> its trigger time

    # Due times leave this class in UTC: Python ignores ``fold`` when it compares two
    # datetimes of one zone, so 02:30 before and after an autumn jump would compare equal.

    def first_due(self, at: datetime) -> datetime | None:
        """The earliest due time at or after ``at`` (UTC)."""
        if not self.jitter:
            return _utc(self.trigger.get_next_fire_time(None, at))
        nominal = _utc(self.trigger.get_next_fire_time(None, at - self.jitter))
        while nominal is not None:
            due = self._moved(nominal)
            if due >= at:
                return due
            nominal = _utc(self.trigger.get_next_fire_time(nominal, nominal))
        return None

    def next_due(self, previous: datetime) -> datetime | None:
        """The due time that follows the due time ``previous`` (UTC)."""
        if not self.jitter:
            return _utc(self.trigger.get_next_fire_time(previous, previous))
        nominal = self._nominal.get(previous) or self._trigger_time(previous)
        following = _utc(self.trigger.get_next_fire_time(nominal, nominal))
        return None if following is None else self._moved(following)

    def _moved(self, nominal: datetime) -> datetime:
        """``nominal`` moved later by its jitter: a fraction of ``jitter`` that a hash of the
        host, the worker and the time gives, so that a plan shows it and every host spreads
        differently."""
        digest = hashlib.blake2b(self._seed + nominal.isoformat().encode(), digest_size=8)
        fraction = int.from_bytes(digest.digest(), "big") / 2**64
        due = nominal + timedelta(microseconds=int(self.jitter / _MICROSECOND * fraction))
        if len(self._nominal) >= 256:
            self._nominal.clear()
        self._nominal[due] = nominal
        return due

    def _trigger_time(self, due: datetime) -> datetime:
        """The trigger time that ``due`` was moved from (a due time read back from the state
        file after a restart), or ``due`` itself if none was."""
        nominal = _utc(self.trigger.get_next_fire_time(None, due - self.jitter))
        for _ in range(JITTER_SEARCH_LIMIT):
            if nominal is None or nominal > due:
                break
            if self._moved(nominal) == due:
                return nominal
            nominal = _utc(self.trigger.get_next_fire_time(nominal, nominal))
        return due

    def local(self, when: datetime) -> datetime:
        """``when`` in the worker's zone, for people."""
        return when.astimezone(self.timezone)

    def due_times(self, start: datetime, end: datetime):
        """Every due time in ``[start, end)``, in order."""
        due = self.first_due(start)
        while due is not None and due < end:
            yield due
            due = self.next_due(due)

    def catch_up(self, previous: datetime, now: datetime) -> tuple[datetime, int]:
        """After firing ``previous``: the next due time after ``now`` and how many were passed.

        Used when the dispatcher is behind by more than one period (a suspended machine, a
        long stall): the due times in between coalesce into the run just fired.
        """
        following = self.next_due(previous)
        passed = 0
        while following is not None and following <= now:
            passed += 1
            if passed > 100:  # far behind: jump instead of walking every period
                following = self.first_due(now + timedelta(microseconds=1))
                break
            following = self.next_due(following)
        return following, passed


#: Most trigger times looked at to find the one a jittered due time came from.
JITTER_SEARCH_LIMIT = 10_000

_MICROSECOND = timedelta(microseconds=1)

#: Most due times counted one by one when reporting misses after downtime.
MISSED_COUNT_LIMIT = 100_000


def missed_while_down(schedule: Schedule, first: datetime, now: datetime,
                      grace: float) -> tuple[datetime | None, int, bool]:
    """Due times from ``first`` (a due time) to ``now`` that passed while nobody ran them.

    :returns: ``(catch_up, missed, exact)``: the newest passed due time if it lies within
        ``grace`` seconds of ``now`` (it runs once, late), how many others were missed, and
        whether that count is exact (it stops at :data:`MISSED_COUNT_LIMIT`).
    """
    window_start = now - timedelta(seconds=grace)
    missed, due = 0, first
    while due is not None and due < window_start and missed < MISSED_COUNT_LIMIT:
        missed += 1
        due = schedule.next_due(due)
    exact = due is None or due >= window_start
    if not exact:
        due = schedule.first_due(window_start)
    catch_up = None
    while due is not None and due <= now:
        if catch_up is not None:
            missed += 1  # coalesced into the one catch-up run
        catch_up = due
        due = schedule.next_due(due)
    return catch_up, missed, exact


def _utc(when: datetime | None) -> datetime | None:
    return when.astimezone(timezone.utc) if when is not None else None


def _labelled(schedule: Schedule, name: str, start: datetime, end: datetime):
    for due in schedule.due_times(start, end):
        yield due, name, schedule


class Plan(list):
    """``[(due time, worker name), ...]`` in time order; :attr:`cut` is true when more due
    times fell in the window than the limit let through."""

    cut = False


def plan(views, default_timezone: tzinfo, start: datetime, end: datetime, limit: int,
         worker: str | None = None) -> Plan:
    """Due times of scheduled workers in ``[start, end)``, at most ``limit`` of them, computed
    by the same :class:`Schedule` the dispatcher uses, from a published snapshot's views (on
    the caller's thread: a plan never holds up scheduling).

    Interval workers not yet started are anchored at ``start``.
    """
    streams = []
    for view in views:
        config = view.config
        if config.execution_mode is not WorkerExecutionMode.SCHEDULED or \
                worker is not None and config.name != worker:
            continue
        schedule = Schedule(config, view.schedule_anchor or start, default_timezone)
        streams.append(_labelled(schedule, config.name, start, end))
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))  # UTC: fold-safe
    out = Plan((schedule.local(due), name)
               for due, name, schedule in itertools.islice(merged, limit))
    out.cut = next(merged, None) is not None
    return out
