"""The contract between the dispatcher and whatever executes an attempt.

The dispatcher builds a :class:`RunSpec` for each attempt and calls
:meth:`RunExecutor.submit_run`; it gets a :class:`RunFuture` back, whose result is always an
:class:`AttemptResult` (a run's failure is a result, not an exception). ``RunFuture.kill``
ends the attempt early; the future then completes with the outcome the caller named.

Any backend that honours this small surface can replace another without the dispatcher
noticing: the in-process :class:`~orchestrator.execution.inline.InlineExecutor` for logic
tests, the process executor for real work.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import functools
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from loguru import logger

from ..runs import Outcome


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What to execute for one attempt, and the limits that apply to it.

    Exactly one of ``function`` / ``command`` is set. ``function`` is a module-level callable
    (pickled by reference); it is called as ``function(argument)`` when ``pass_argument`` is
    true, else as ``function()``. ``command`` is an argv list, or a string for ``/bin/sh -c``
    when ``shell`` is true.
    """

    run_id: str
    worker: str
    attempt: int = 1
    function: Callable[..., Any] | None = None
    argument: Any = None
    pass_argument: bool = False
    command: list[str] | str | None = None
    shell: bool = False
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout_seconds: float | None = None
    kill_grace_seconds: float = 3.0
    memory_limit_mb: float | None = None
    pids_limit: int | None = None          # most processes at once (needs a cgroup)
    cpu_limit: float | None = None         # cores (needs a cgroup)
    max_result_bytes: int = 1024 * 1024    # the largest pickled result the run may return
    kill_leftovers: bool = True
    user: str | None = None  # run as this account (the executor must be root to switch)
    num_cpus: float = 1.0    # what a cluster executor reserves for it where it places it
    memory_mb: float | None = None
    resources: dict[str, float] | None = None
    stall_seconds: float | None = None  # no CPU and no output this long: kill it, "stalled"


@dataclasses.dataclass
class AttemptResult:
    """How one attempt ended and what it cost.

    ``error`` is one line (``"ZeroDivisionError: division by zero"``, ``"exit code 3"``,
    ``"killed by SIGSEGV"``, ``"timed out after 5s"``); ``traceback`` the formatted text
    when the attempt raised. Times are timezone-aware UTC.
    """

    outcome: Outcome
    started_at: datetime
    ended_at: datetime
    pid: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int | None = None  # written in all (the tail keeps the end)
    stderr_bytes: int | None = None

    @property
    def duration_seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True)
class Output:
    """What a running attempt has written after the offsets asked for."""

    stdout: str
    stderr: str
    stdout_offset: int   # the offset after this text: ask from here next time
    stderr_offset: int


@dataclasses.dataclass(frozen=True)
class Usage:
    """A live sample of a running attempt's whole process tree."""

    cpu_seconds: float          # user + system, all processes of the run so far
    rss_bytes: int              # resident memory now, summed over the tree
    peak_rss_bytes: int         # the highest ``rss_bytes`` seen so far
    processes: int              # processes in the tree now
    sampled_at: float           # time.monotonic() of the sample


class RunFuture(concurrent.futures.Future):
    """A future for one attempt that can also be killed.

    The result is an :class:`AttemptResult`. :meth:`kill` is idempotent and returns at
    once; the future completes when the attempt's processes are gone. The start is known
    later than the submission: :attr:`started` is set (and start callbacks run) once the
    attempt's process exists, with :attr:`pid` known.
    """

    def __init__(self, spec: RunSpec, kill: Callable[["RunFuture", Outcome, bool], None]):
        super().__init__()
        self.spec = spec
        self.pid: int | None = None
        self.pid_create_time: float | None = None  # psutil create_time() of ``pid``
        self.usage: Usage | None = None            # the newest live sample, if sampled
        self.cgroup: str | None = None             # the attempt's cgroup, if it has one
        self.node: str | None = None               # where it runs, for a cluster executor
        self.host: str | None = None
        self.started_at: datetime | None = None    # when its process started
        self.placement: str | None = None          # what it waits for before a start, if told
        self.started = threading.Event()  # set once user code may have begun (pid known)
        self._kill = kill
        self._start_callbacks: list[Callable[["RunFuture"], Any]] = []

    def kill(self, outcome: Outcome = Outcome.CANCELLED, immediately: bool = False) -> None:
        """End the attempt (SIGTERM, grace, SIGKILL) and record it with ``outcome``.

        ``immediately`` skips the grace, or cuts short one already running.
        """
        if not self.done():
            self._kill(self, Outcome(outcome), immediately)

    def add_start_callback(self, callback: Callable[["RunFuture"], Any]) -> None:
        """Call ``callback(future)`` once the attempt's process has started (at once if it
        has), from whichever thread learns it. Not called for an attempt that never
        started."""
        with self._condition:
            if not self.started.is_set():
                self._start_callbacks.append(callback)
                return
        callback(self)

    def set_started(self, pid: int | None, pid_create_time: float | None = None, *,
                    cgroup: str | None = None, node: str | None = None,
                    host: str | None = None, at: datetime | None = None) -> None:
        """For executors: the attempt's process exists (since ``at``, default now)."""
        with self._condition:
            self.pid, self.pid_create_time, self.cgroup = pid, pid_create_time, cgroup
            self.node, self.host = node, host
            self.started_at = at or datetime.now(timezone.utc)
            self.started.set()
            callbacks, self._start_callbacks = self._start_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("start callback {!r} failed", callback)


class RunExecutor(concurrent.futures.Executor, abc.ABC):
    """A ``concurrent.futures.Executor`` that runs :class:`RunSpec` attempts.

    ``submit(fn, *args, **kwargs)`` keeps the plain executor meaning: the future's result is
    ``fn``'s return value, or the exception it raised.

    ``containment`` names what keeps an attempt's processes together (``"cgroup"``,
    ``"process-group"``, or ``"none"`` for an executor that runs code in its own process);
    ``containment_detail`` says it in a sentence.
    """

    containment = "none"
    containment_detail = "attempts run in the orchestrator's own process"

    def start(self) -> None:
        """Get ready before the first attempt (the orchestrator's start() calls it)."""

    def output(self, future: "RunFuture", stdout_from: int = 0,
               stderr_from: int = 0) -> concurrent.futures.Future | None:
        """A future of the :class:`Output` a running attempt wrote after those offsets (None
        when the attempt has ended meanwhile), or None where this executor cannot tell."""
        return None

    @abc.abstractmethod
    def submit_run(self, spec: RunSpec) -> RunFuture:
        """Start one attempt and return its future at once, without waiting for the start
        (the caller may be a thread that must never wait on anything outside it)."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        outer: concurrent.futures.Future = concurrent.futures.Future()
        call = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
        inner = self.submit_run(RunSpec(run_id="adhoc", worker=getattr(fn, "__name__", "fn"),
                                        function=call))

        def relay(done: concurrent.futures.Future) -> None:
            attempt: AttemptResult = done.result()
            if attempt.outcome is Outcome.SUCCEEDED:
                outer.set_result(attempt.result)
            else:
                outer.set_exception(RuntimeError(attempt.error or attempt.outcome.value))

        inner.add_done_callback(relay)
        return outer
