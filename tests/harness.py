"""A dispatcher driven by hand: a manual clock and deferred inline attempts.

Tests register workers, move time, and finish attempts in the order they choose; the
dispatcher's step is called until it has nothing left to do, so every decision it takes is
a pure function of what the test did.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from orchestrator.clock import ManualClock
from orchestrator.config import build_config
from orchestrator.dispatcher import Dispatcher
from orchestrator.events import EventBus
from orchestrator.execution.inline import InlineExecutor
from orchestrator.schedule import plan
from orchestrator.status import build_status

START = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)  # a Monday


def noop():
    return None


class Harness:
    def __init__(self, max_concurrent: int = 5, start: datetime = START,
                 zone: str = "UTC", store=None):
        self.clock = ManualClock(start)
        self.executor = InlineExecutor(deferred=True, now=self.clock.now)
        self.events: list = []
        bus = EventBus()
        bus.add_listener(self.events.append)
        self.dispatcher = Dispatcher(self.executor, max_concurrent=max_concurrent,
                                     clock=self.clock, default_timezone=ZoneInfo(zone),
                                     events=bus, store=store)

    # -- driving ----------------------------------------------------------------------------

    def add(self, name: str, fn=noop, **options) -> None:
        self.dispatcher.call(self.dispatcher.register, build_config(name, fn, None, options))

    def start(self) -> None:
        self.dispatcher.store.open()
        self.dispatcher.call(self.dispatcher.begin)
        self.settle()

    def crash(self) -> None:
        """Vanish like a killed process: release the state file, finish nothing."""
        self.dispatcher.store.close()

    def settle(self) -> float | None:
        """Step until the dispatcher waits for time or for an attempt to end."""
        for _ in range(10_000):
            timeout = self.dispatcher.step()
            if timeout != 0.0:
                return timeout
        raise AssertionError("dispatcher never settled")

    def plan(self, end: datetime):
        """What ``plan()`` says from the clock's time to ``end``: ``(due time in the worker's
        zone, worker)`` pairs, in order."""
        snapshot = self.dispatcher.snapshot
        return plan(snapshot.workers.values(), snapshot.default_timezone, self.clock.now(),
                    end, limit=10**9)

    def run_until(self, end: datetime) -> list[tuple[datetime, str]]:
        """Start, then run the dispatcher from its clock to ``end``, finishing every run at
        once; every due time that became a run, as ``(due time in UTC, worker)``, in order."""
        self.start()
        while True:
            for name in self.running:
                self.finish(name)
            wait = self.settle()
            if wait is None or self.clock.now() + timedelta(seconds=wait) >= end:
                break
            self.advance(wait)
        return sorted((record.due_at, record.worker) for record in self.history())

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()

    def finish(self, worker: str, outcome: str = "succeeded", error: str | None = None):
        """End the running attempt of ``worker`` with ``outcome``."""
        spec = self.attempt(worker)
        self.executor.finish(spec.run_id, outcome, error)
        self.settle()

    def attempt(self, worker: str):
        specs = [s for s in self.executor.waiting if s.worker == worker]
        assert specs, f"{worker} is not running; running: {self.running}"
        return specs[0]

    def enable(self, worker: str) -> None:
        self.dispatcher.call(self.dispatcher.enable, worker)

    def disable(self, worker: str, stop: bool = False) -> None:
        self.dispatcher.call(self.dispatcher.disable, worker, stop)

    def begin_stop(self) -> None:
        self.dispatcher.call(self.dispatcher.begin_stop)

    def trigger(self, worker: str):
        waiter = self.dispatcher.call(self.dispatcher.trigger, worker)
        self.settle()
        return waiter

    # -- reading ----------------------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        return sorted(spec.worker for spec in self.executor.waiting)

    def status(self, worker: str | None = None):
        document = build_status(self.dispatcher.snapshot, self.clock.now())
        return document if worker is None else document["worker_states"][worker]

    def reason(self, worker: str) -> str:
        return self.status(worker)["reason"]

    def history(self, worker: str | None = None, limit: int = 1000):
        return self.dispatcher.store.recent(worker, limit)

    def kinds(self, worker: str) -> list[str]:
        return [event.kind for event in self.events if event.worker == worker]
