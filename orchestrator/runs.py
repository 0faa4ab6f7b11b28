"""A run's life: its outcome vocabulary, its state machine and its record.

::

    PENDING --start--> RUNNING --finish(outcome)--> SUCCEEDED | FAILED | TIMED_OUT |
       |                  |                          MEMORY_EXCEEDED | CRASHED | CANCELLED
       |                  +--retry--> PENDING (same record, attempt + 1)
       +--drop--> CANCELLED                          INTERRUPTED (found at restart)

Each transition goes through one method of :class:`RunRecord`; an illegal one raises
:class:`IllegalTransition`. The dispatcher thread is the only writer of a record; other
threads only ever see copies (:meth:`RunRecord.snapshot`).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import time
from datetime import datetime

from .errors import OrchestratorError


class RunState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


class Outcome(str, enum.Enum):
    """How a run ended. The value is the string shown in history and status."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"
    MEMORY_EXCEEDED = "memory_exceeded"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    MISSED = "missed"

    def __str__(self) -> str:
        return self.value

    @property
    def is_failure(self) -> bool:
        """True for the outcomes that count towards retries and auto-disable."""
        return self in _FAILURES


# INTERRUPTED is not the worker's failure (the orchestrator died): it is neither retried nor
# counted towards auto-disable, but a dependent still waits for a success.
_FAILURES = {Outcome.FAILED, Outcome.TIMED_OUT, Outcome.STALLED, Outcome.MEMORY_EXCEEDED,
             Outcome.CRASHED}


class Cause(str, enum.Enum):
    """Why a run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    UPSTREAM = "upstream"
    CATCH_UP = "catch-up"
    CONTINUOUS = "continuous"
    STARTUP = "startup"

    def __str__(self) -> str:
        return self.value


class IllegalTransition(OrchestratorError):
    """A run was asked to move to a state its current state does not lead to."""


_run_numbers = itertools.count(1)
_run_prefix = f"{time.time_ns() // 1_000_000:x}"


def new_run_id() -> str:
    """A run id unique across restarts: this process's start time (ms, hex) and a counter."""
    return f"{_run_prefix}-{next(_run_numbers)}"


@dataclasses.dataclass
class RunRecord:
    """Everything known about one run; the unit of history.

    Times are timezone-aware UTC datetimes. ``attempts`` counts the attempts started so far.
    """

    run_id: str
    worker: str
    cause: Cause
    due_at: datetime
    state: RunState = RunState.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    attempts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    pid_create_time: float | None = None
    error: str | None = None
    traceback: str | None = None
    result: object = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int | None = None  # written in all (the tails keep the last 64 KiB)
    stderr_bytes: int | None = None
    node: str | None = None    # where it ran, on a cluster (a Ray node id)
    host: str | None = None    # that node's host name

    # -- transitions (one gate each) -------------------------------------------------------

    def start(self, at: datetime) -> None:
        """PENDING -> RUNNING: a new attempt begins."""
        self._require(RunState.PENDING, "start")
        self.state = RunState.RUNNING
        self.attempts += 1
        if self.started_at is None:
            self.started_at = at

    def retry(self) -> None:
        """RUNNING -> PENDING: the attempt failed and another one will follow."""
        self._require(RunState.RUNNING, "retry")
        self.state = RunState.PENDING

    def finish(self, outcome: Outcome, at: datetime) -> None:
        """PENDING or RUNNING -> FINISHED with ``outcome``."""
        if self.state is RunState.FINISHED:
            raise IllegalTransition(f"run {self.run_id} of {self.worker} already ended "
                                    f"({self.outcome}); it cannot end again as {outcome}")
        self.state = RunState.FINISHED
        self.outcome = Outcome(outcome)
        self.ended_at = at

    def _require(self, state: RunState, action: str) -> None:
        if self.state is not state:
            raise IllegalTransition(f"run {self.run_id} of {self.worker} is {self.state.value}; "
                                    f"it cannot {action}")

    # -- reading ---------------------------------------------------------------------------

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def snapshot(self) -> "RunRecord":
        """A copy for readers outside the dispatcher thread."""
        return dataclasses.replace(self)

    def as_dict(self) -> dict:
        """A JSON-friendly dict (times as ISO-8601 strings, the result as its repr)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, enum.Enum):
                value = value.value
            elif field.name == "result" and value is not None:
                value = repr(value)
            out[field.name] = value
        out["duration_seconds"] = self.duration_seconds
        return out
