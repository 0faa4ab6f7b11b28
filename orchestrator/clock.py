"""Time as a parameter: the dispatcher asks a clock, so tests can hold time still."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


class SystemClock:
    """Wall time (aware, UTC) for due times, monotonic seconds for durations."""

    #: Its ``now()`` is the system's wall clock, so a step of that clock moves due times.
    follows_wall_clock = True

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for tests and dry runs."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
        return self._now

    def set(self, when: datetime) -> datetime:
        return self.advance((when - self._now).total_seconds())
