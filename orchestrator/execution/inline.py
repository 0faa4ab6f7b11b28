"""An executor that runs attempts in the calling thread, for logic tests and dry runs.

It enforces no timeout and isolates nothing; it exists so that dependency, exclusion and
priority rules can be exercised without processes (like APScheduler's ``DebugExecutor``).

With ``deferred=True`` attempts wait until the test finishes them, in any order it likes,
with :meth:`InlineExecutor.finish` or :meth:`InlineExecutor.run`; that is how interleavings
of overlapping runs are produced deterministically.
"""

from __future__ import annotations

import threading
import traceback
from datetime import datetime, timezone
from typing import Callable

from ..runs import Outcome
from .base import AttemptResult, RunExecutor, RunFuture, RunSpec


class InlineExecutor(RunExecutor):
    """Runs a function attempt in the thread that submits it (or later, when deferred).

    :param deferred: hold attempts until :meth:`run` or :meth:`finish` is called.
    :param now: a callable returning the current aware datetime (default: system time).
    """

    def __init__(self, *, deferred: bool = False, now: Callable[[], datetime] | None = None):
        self.deferred = deferred
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[RunFuture, datetime]] = {}  # run_id -> held attempt
        self._pids = iter(range(100000, 10**9))

    def submit_run(self, spec: RunSpec) -> RunFuture:
        future = RunFuture(spec, self._kill)
        future.set_running_or_notify_cancel()
        started = self._now()
        future.set_started(next(self._pids), at=started)
        if self.deferred:
            with self._lock:
                self._waiting[spec.run_id] = (future, started)
        else:
            self._complete(future, started, *self._call(spec))
        return future

    # -- test controls --------------------------------------------------------------------

    @property
    def waiting(self) -> list[RunSpec]:
        """Specs of held attempts, in submission order."""
        with self._lock:
            return [future.spec for future, _ in self._waiting.values()]

    def run(self, run_id: str) -> None:
        """Execute a held attempt's function now and complete it."""
        future, started = self._take(run_id)
        self._complete(future, started, *self._call(future.spec))

    def finish(self, run_id: str, outcome: Outcome | str = Outcome.SUCCEEDED,
               error: str | None = None) -> None:
        """Complete a held attempt with ``outcome`` without calling its function."""
        future, started = self._take(run_id)
        outcome = Outcome(outcome)
        if outcome is not Outcome.SUCCEEDED and error is None:
            error = f"{outcome.value} (inline)"
        self._complete(future, started, outcome, None, error, None)

    def _take(self, run_id: str):
        with self._lock:
            return self._waiting.pop(run_id)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _call(spec: RunSpec):
        if spec.function is None:
            return Outcome.FAILED, None, "InlineExecutor runs functions only, not commands", None
        if spec.user is not None:
            return (Outcome.FAILED, None, f"InlineExecutor runs in this process and cannot run "
                                          f"as user {spec.user!r}", None)
        try:
            value = spec.function(spec.argument) if spec.pass_argument else spec.function()
        except Exception as error:  # the attempt's failure is its result
            return (Outcome.FAILED, None, f"{type(error).__name__}: {error}",
                    traceback.format_exc())
        return Outcome.SUCCEEDED, value, None, None

    def _complete(self, future: RunFuture, started: datetime, outcome: Outcome, value,
                  error: str | None, trace: str | None) -> None:
        future.set_result(AttemptResult(outcome=outcome, started_at=started,
                                        ended_at=self._now(), pid=future.pid, result=value,
                                        error=error, traceback=trace))

    def _kill(self, future: RunFuture, outcome: Outcome, immediately: bool = False) -> None:
        with self._lock:
            held = self._waiting.pop(future.spec.run_id, None)
        if held is not None:
            self._complete(future, held[1], outcome, None, f"killed ({outcome.value})", None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._lock:
                held = list(self._waiting.values())
                self._waiting.clear()
            for future, started in held:
                self._complete(future, started, Outcome.CANCELLED, None, "executor shut down",
                               None)
