"""What readers see: an immutable snapshot the dispatcher publishes after each step.

::

    dispatcher thread: step() -> commit -> publish Snapshot (only changed workers' views
                                           are made anew)
    any thread: get_status(), plan(), get_worker() read the newest Snapshot; they never
                wait for the dispatcher, and it never works for them

Every object here is frozen. The one live thing a view points to is a running attempt's
future, whose ``usage`` the executor replaces as a whole every sample interval.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, tzinfo
from typing import Any, Mapping

from .config import WorkerConfig
from .runs import Outcome


@dataclasses.dataclass(frozen=True)
class RunView:
    """A run in progress, or waiting to start."""

    run_id: str
    attempts: int
    due_at: datetime
    started_at: datetime | None = None
    pid: int | None = None
    node: str | None = None           # where it runs, on a cluster
    host: str | None = None
    future: Any = None                # running: its RunFuture, for live usage only
    not_before: datetime | None = None  # pending: a retry's earliest start
    error: str | None = None          # pending: why the last attempt failed
    waiting_for: str | None = None    # pending: what admission waits for (memory)


@dataclasses.dataclass(frozen=True)
class WorkerView:
    """One worker as the dispatcher last published it."""

    config: WorkerConfig
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    last_run: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_outcome: Outcome | None
    last_duration: float | None
    cpu_seconds: float | None
    peak_rss_bytes: int | None
    next_due: datetime | None
    schedule: str | None              # a description, or None (not scheduled)
    schedule_anchor: datetime | None  # where its interval's due times are counted from
    skipped: int
    missed: int
    conflicts: tuple[str, ...]        # workers it excludes, whoever declared it
    running: RunView | None
    pending: RunView | None
    learned_peak: int | None = None   # the largest tree peak of its last successful runs

    @property
    def name(self) -> str:
        return self.config.name


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The whole published state; ``version`` grows with every publication."""

    version: int
    state: str
    max_concurrent: int
    containment: str
    containment_detail: str
    default_timezone: tzinfo
    workers: Mapping[str, WorkerView]
    running: frozenset[str]
    pending: frozenset[str]
    taken_at: datetime


EMPTY_WORKERS: Mapping[str, WorkerView] = {}
