"""The dispatcher: the one thread that decides which due run starts, and when.

::

    trigger_worker / enable / disable /      executor callbacks
    register / get_status (other threads)    (a run's attempt ended)
                  |                                   |
                  +------> command queue + wake-up <--+
                                  |
                   Dispatcher thread: step(now), one SQLite transaction
                     1. run queued commands (finished and started attempts among them)
                     2. due times <= now      -> pending runs   (schedule.py)
                     3. pending runs, by priority, that pass   -> runs to start
                        overlap / dependencies / exclusion / slots   (admission.py)
                     4. commit; publish a Snapshot (views.py) for readers; deliver the
                        step's events; answer the commands; hand the runs to start to
                        executor.submit_run, which returns at once
                     5. sleep until the next due time or retry, or a wake-up

The dispatcher thread owns every piece of mutable scheduling state: the workers' runtime
state, the constraint graph, the pending set, the running table, the timer heap and the
state store. Other threads never touch them: they send a command (:meth:`Dispatcher.call`) and
get its result back once it is committed, or read the newest :attr:`Dispatcher.snapshot`.
Before the thread starts and after it ends, commands run in the calling thread under a
lock, so the owner is still one at a time. The thread never waits on anything outside it:
not on an executor, not on a reader.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import heapq
import itertools
import queue
import threading
import types
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable

from loguru import logger

from . import admission
from .clock import SystemClock
from .watches import ClockWatch
from .config import (DEFAULT_MAX_RESULT_BYTES, MAX_SECONDS, OverlapPolicy, WorkerConfig,
                     WorkerExecutionMode, check_name, suggest)
from .errors import ConfigError, UnknownWorkerError
from .events import EventBus, RunEvent
from .execution.base import AttemptResult, RunExecutor, RunFuture, RunSpec
from .graph import ConstraintGraph
from .history import MemoryHistory
from .memory import available_bytes, human
from .runs import Cause, Outcome, RunRecord, RunState, new_run_id
from .schedule import Schedule, missed_while_down
from .views import RunView, Snapshot, WorkerView

#: Longest sleep between steps where steps of the wall clock cannot be watched (no timerfd).
MAX_SLEEP_SECONDS = 60.0
#: Successful runs whose tree peaks a worker's learned memory comes from.
LEARNED_RUNS = 5
#: How often a run waiting for memory looks again when no run ends meanwhile.
MEMORY_RECHECK_SECONDS = 5.0
#: How often changes the state file could not take are tried again.
RETRY_WRITE_SECONDS = 5.0
#: How long an ``on_failure`` command may run before it is killed.
ON_FAILURE_TIMEOUT_SECONDS = 300.0
#: Ceiling of the back-off of a failing CONTINUOUS worker.
MAX_BACKOFF_SECONDS = 300.0


@dataclasses.dataclass
class WorkerState:
    """A worker's runtime state, owned by the dispatcher thread."""

    config: WorkerConfig
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    consecutive_failures: int = 0
    last_run: datetime | None = None          # start of the newest run
    last_success: datetime | None = None      # end of the newest successful run
    last_error: str | None = None
    last_outcome: Outcome | None = None       # of the newest finished (not skipped) run
    last_duration: float | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    schedule: Schedule | None = None
    schedule_anchor: datetime | None = None   # an interval's first due time
    next_due: datetime | None = None
    last_due: datetime | None = None          # the newest due time that fired
    missed: int = 0                           # due times missed while down
    fresh_upstreams: set[str] = dataclasses.field(default_factory=set)
    steered_before_start: bool = False        # enable/disable called before start()
    skipped: int = 0
    peaks: collections.deque = dataclasses.field(  # tree peaks of its last successful runs
        default_factory=lambda: collections.deque(maxlen=LEARNED_RUNS))

    @property
    def learned_peak(self) -> int | None:
        """The most memory its last successful runs' trees used, if any is known."""
        return max(self.peaks) if self.peaks else None

    @property
    def name(self) -> str:
        return self.config.name


@dataclasses.dataclass
class PendingRun:
    record: RunRecord
    seq: int
    not_before: datetime | None = None
    waiters: list[concurrent.futures.Future] = dataclasses.field(default_factory=list)
    waiting_for: str | None = None  # what held it back at the last admission (memory)


@dataclasses.dataclass
class RunningRun:
    record: RunRecord
    future: RunFuture | None  # None until the step that started it has committed
    waiters: list[concurrent.futures.Future]
    killing: Outcome | None = None
    immediately: bool = False

    def kill(self, outcome: Outcome, immediately: bool = False) -> None:
        """Kill the attempt (the first cause wins; ``immediately`` may follow)."""
        self.killing = self.killing or outcome
        self.immediately |= immediately
        if self.future is not None:
            self.future.kill(self.killing, self.immediately)


class Dispatcher:
    """Admission and lifecycle of runs; see the module docstring for the data flow.

    :param executor: where attempts execute.
    :param max_concurrent: the cap on runs in progress.
    :param clock: ``now()`` (aware datetime) and ``monotonic()``; injectable for tests.
    :param default_timezone: the zone of workers that name none.
    """

    def __init__(self, executor: RunExecutor, *, max_concurrent: int = 5, clock=None,
                 default_timezone: tzinfo, store=None, events: EventBus | None = None,
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                 admit_by_memory: bool = False, memory_reserve_mb: float = 256.0,
                 available_memory: Callable[[], int | None] = available_bytes):
        self.executor = executor
        self.admit_by_memory = admit_by_memory
        self.memory_reserve = int(memory_reserve_mb * 1024 * 1024)
        self._available_memory = available_memory
        self._memory_blocked = False  # a run waits for memory: look again now and then
        self.max_concurrent = max_concurrent
        self.max_result_bytes = max_result_bytes  # for workers that set none
        self.clock = clock or SystemClock()
        self.default_timezone = default_timezone
        self.store = store if store is not None else MemoryHistory()
        self.events = events or EventBus()
        self.state = "created"  # created -> running -> stopping -> stopped
        # Owned by the dispatcher thread (or the caller, under _inline_lock, when it is not
        # running):
        self._workers: dict[str, WorkerState] = {}
        self._graph = ConstraintGraph()
        self._pending: dict[str, PendingRun] = {}
        self._running: dict[str, RunningRun] = {}
        self._timers: list[tuple[datetime, int, str]] = []   # heap of (when, seq, worker)
        self._seq = itertools.count()
        self._dirty: set[str] = set()         # workers whose view must be made anew
        self._after_commit: list = []         # answers and waiters, once committed
        self._to_submit: list[tuple[RunningRun, RunSpec]] = []  # runs started this step
        # Shared with other threads:
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._inline_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._halt = False
        self._clock_watch: ClockWatch | None = None  # while set, sleeps have no cap
        self.idle = threading.Event()  # set while no run is in progress
        self.idle.set()
        #: The newest published state, for readers on any thread (replaced, never changed).
        self.snapshot = self._new_snapshot(0, types.MappingProxyType({}))

    # -- threading ------------------------------------------------------------------------

    def call(self, function: Callable[..., Any], *args) -> Any:
        """Run ``function(*args)`` as the owner of the state and return its result, once
        what it changed is committed and published.

        From the dispatcher thread itself the call runs at once; while that thread is not
        running it runs in the calling thread, as a step of its own (under a lock);
        otherwise it is queued and waited for. Exceptions raised by ``function`` propagate
        to the caller.
        """
        with self._inline_lock:
            thread = self._thread
            if thread is threading.current_thread():
                return function(*args)
            if thread is None or not thread.is_alive():
                try:
                    with self._transaction():
                        return function(*args)
                finally:
                    self._after_step()
            reply: concurrent.futures.Future = concurrent.futures.Future()
            self._commands.put((function, args, reply))
            self._wakeup.set()
        return reply.result()

    def on_dispatcher_thread(self) -> bool:
        """True in the dispatcher thread itself (a listener, for example)."""
        return self._thread is threading.current_thread()

    def post(self, function: Callable[..., Any], *args) -> None:
        """Queue ``function(*args)`` for the dispatcher thread without waiting for it."""
        self._commands.put((function, args, None))
        self._wakeup.set()

    def start_thread(self) -> None:
        with self._inline_lock:
            self._halt = False
            if getattr(self.clock, "follows_wall_clock", False):
                watch = ClockWatch(self._wakeup.set)
                self._clock_watch = watch if watch.start() else None
            self._thread = threading.Thread(target=self._loop, name="orchestrator-dispatcher",
                                            daemon=True)
            self._thread.start()

    def halt_thread(self) -> None:
        """End the dispatcher thread after its current step; queued commands still run."""
        with self._inline_lock:
            thread = self._thread
        if thread is None:
            return
        self.post(self._set_halt)
        thread.join()  # not under the lock: the thread's own calls may need it
        if self._clock_watch is not None:
            self._clock_watch.stop()
            self._clock_watch = None
        with self._inline_lock:
            self._thread = None
            self.step()  # commands queued while the thread was ending

    def _set_halt(self) -> None:
        self._halt = True

    def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                timeout = self.step()
            except Exception:  # a bug must not stop scheduling; it is logged whole
                logger.exception("dispatcher step failed")
                timeout = 1.0
            if self._halt:
                return
            if self._clock_watch is None:  # no word of clock steps: look once a minute
                timeout = MAX_SLEEP_SECONDS if timeout is None else min(timeout, MAX_SLEEP_SECONDS)
            elif timeout is not None:  # until the next due time, however far
                timeout = min(timeout, threading.TIMEOUT_MAX)
            self._wakeup.wait(timeout)

    # -- the step -------------------------------------------------------------------------

    def step(self) -> float | None:
        """Process commands, fire due times, admit runs: one transaction; then publish,
        answer, and hand the admitted runs to the executor.

        :returns: seconds until the next timed event (a due time, a retry, or another try at
            writing changes the state file refused), 0 if more commands are already queued,
            or ``None`` if nothing is scheduled.
        """
        try:
            with self._transaction():
                self._drain()
                if self.state == "running":
                    now = self.clock.now()
                    self._fire_due(now)
                    self._admit(now)
        finally:
            self._after_step()
        if not self._commands.empty():
            return 0.0
        if self.state != "running":
            return None
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        wait = None
        if self._timers:
            wait = max(0.0, (self._timers[0][0] - self.clock.now()).total_seconds())
        retry = self.store.retry_in()
        if retry is not None:  # the disk refused a write: try again then
            wait = retry if wait is None else min(wait, retry)
        if self._memory_blocked:  # memory freed outside the orchestrator sends no event
            wait = MEMORY_RECHECK_SECONDS if wait is None else min(wait, MEMORY_RECHECK_SECONDS)
        return wait

    def _transaction(self) -> contextlib.ExitStack:
        """Writes inside commit together; then a new snapshot is published; then the
        events of the transaction are delivered (exits run in reverse order)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.events.deferred())
        stack.callback(self._publish)
        stack.enter_context(self.store.batch())
        return stack

    def _after_step(self) -> None:
        """What waits for the commit: answers to callers, then the starts of the runs
        admitted (their records are on disk before their processes exist)."""
        after, self._after_commit = self._after_commit, []
        for action in after:
            action()
        starts, self._to_submit = self._to_submit, []
        for running, spec in starts:
            self._submit(running, spec)
            self._touch(spec.worker)
        if starts:  # readers see each run's future: what it waits for, its live usage
            self._publish()

    def _drain(self) -> None:
        while True:
            try:
                function, args, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            if reply is None:
                try:
                    function(*args)
                except Exception:
                    logger.exception("dispatcher command {} failed", function.__name__)
                continue
            if not reply.set_running_or_notify_cancel():
                continue
            try:
                value = function(*args)
            except BaseException as error:  # handed to the caller, who re-raises it
                self._after_commit.append(functools.partial(reply.set_exception, error))
            else:
                self._after_commit.append(functools.partial(reply.set_result, value))

    # -- the published snapshot -----------------------------------------------------------

    def _touch(self, name: str) -> None:
        """``name``'s view changed: the next publication makes it anew."""
        self._dirty.add(name)

    def _publish(self) -> None:
        """Publish a new snapshot if anything a reader sees has changed."""
        old = self.snapshot
        if not self._dirty and old.state == self.state and old.running == self._running.keys() \
                and old.pending == self._pending.keys():
            return
        views = dict(old.workers)
        for name in self._dirty:
            state = self._workers.get(name)
            if state is not None:
                views[name] = self._view(state)
        self._dirty.clear()
        self.snapshot = self._new_snapshot(old.version + 1, types.MappingProxyType(views))

    def _new_snapshot(self, version: int, views) -> Snapshot:
        return Snapshot(
            version=version, state=self.state, max_concurrent=self.max_concurrent,
            containment=getattr(self.executor, "containment", "none"),
            containment_detail=getattr(self.executor, "containment_detail", ""),
            default_timezone=self.default_timezone, workers=views,
            running=frozenset(self._running), pending=frozenset(self._pending),
            taken_at=self.clock.now())

    def _view(self, state: WorkerState) -> WorkerView:
        name = state.name
        running = self._running.get(name)
        pending = self._pending.get(name)
        run = None
        if running is not None:
            record, future = running.record, running.future
            run = RunView(record.run_id, record.attempts, record.due_at, record.started_at,
                          record.pid, getattr(future, "node", None),
                          getattr(future, "host", None), future)
        waiting = None
        if pending is not None:
            record = pending.record
            waiting = RunView(record.run_id, record.attempts, record.due_at,
                              not_before=pending.not_before, error=record.error,
                              waiting_for=pending.waiting_for)
        return WorkerView(
            config=state.config, enabled=state.enabled, disabled_reason=state.disabled_reason,
            disabled_at=state.disabled_at, consecutive_failures=state.consecutive_failures,
            last_run=state.last_run, last_success=state.last_success,
            last_error=state.last_error, last_outcome=state.last_outcome,
            last_duration=state.last_duration, cpu_seconds=state.cpu_seconds,
            peak_rss_bytes=state.peak_rss_bytes, learned_peak=state.learned_peak,
            next_due=state.next_due,
            schedule=state.schedule.description if state.schedule else None,
            schedule_anchor=state.schedule_anchor, skipped=state.skipped, missed=state.missed,
            conflicts=tuple(self._graph.conflicts_of(name)), running=run, pending=waiting)

    # -- timers ---------------------------------------------------------------------------

    def _set_next_due(self, state: WorkerState, when: datetime | None) -> None:
        state.next_due = when
        self._touch(state.name)
        if when is not None:
            heapq.heappush(self._timers, (when, next(self._seq), state.name))

    def _wake_at(self, when: datetime, name: str) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), name))

    def _timer_valid(self, timer) -> bool:
        when, _, name = timer
        state = self._workers.get(name)
        if state is None:
            return False
        if state.next_due == when:
            return True
        pending = self._pending.get(name)
        return pending is not None and pending.not_before == when

    def _fire_due(self, now: datetime) -> None:
        while self._timers and self._timers[0][0] <= now:
            when, _, name = heapq.heappop(self._timers)
            state = self._workers.get(name)
            if state is None or state.next_due != when:
                continue  # a retry's wake-up, or a superseded due time
            mode = state.config.execution_mode
            if mode is WorkerExecutionMode.CONTINUOUS:
                state.next_due = None
                self._due(state, when, Cause.CONTINUOUS)
            else:
                self._due(state, when, Cause.SCHEDULE)
                following, _ = state.schedule.catch_up(when, now)
                state.last_due = when
                self._persist(state)
                self._set_next_due(state, following)

    # -- due runs -------------------------------------------------------------------------

    def _due(self, state: WorkerState, due_at: datetime, cause: Cause) -> None:
        """A due time arrived for ``state``'s worker: make or join its pending run."""
        name = state.name
        if not state.enabled:
            return
        running = self._running.get(name)
        if running is not None and name not in self._pending:
            policy = state.config.overlap
            if policy is OverlapPolicy.SKIP:
                record = RunRecord(new_run_id(), name, cause, due_at)
                record.error = f"run {running.record.run_id} was still running"
                record.finish(Outcome.SKIPPED, self.clock.now())
                state.skipped += 1
                self._touch(name)
                self.store.save(record)
                self._emit("skipped", record, message=record.error)
                return
            if policy is OverlapPolicy.REPLACE and running.killing is None:
                running.kill(Outcome.CANCELLED)
                self._emit("replacing", running.record,
                           message=f"a new run is due at {due_at.isoformat()}")
        self._make_pending(state, due_at, cause)

    def _make_pending(self, state: WorkerState, due_at: datetime, cause: Cause,
                      waiter: concurrent.futures.Future | None = None) -> PendingRun | None:
        """Make or join ``state``'s pending run; ``None`` once the orchestrator stops (a run
        that could never start is not created, so none is left without a record)."""
        if self.state in ("stopping", "stopped"):
            return None
        pending = self._pending.get(state.name)
        if pending is None:
            pending = PendingRun(RunRecord(new_run_id(), state.name, cause, due_at),
                                 next(self._seq))
            self._pending[state.name] = pending
            self._touch(state.name)
            self.store.save(pending.record)  # a crash before it starts cannot lose it
            self._emit("due", pending.record, message=str(cause))
        if waiter is not None:
            pending.waiters.append(waiter)
        return pending

    # -- admission ------------------------------------------------------------------------

    def _admit(self, now: datetime) -> None:
        if len(self._running) >= self.max_concurrent:
            return
        ready = [p for name, p in self._pending.items()
                 if name not in self._running
                 and (p.not_before is None or p.not_before <= now)]
        ready.sort(key=lambda p: (-self._workers[p.record.worker].config.priority.rank,
                                  p.record.due_at, p.seq))
        self._memory_blocked = False
        room = None
        for pending in ready:  # a run that may not start never holds back one that may
            if len(self._running) >= self.max_concurrent:
                return
            if self.blocker(pending.record.worker) is not None:
                continue
            if self.admit_by_memory:
                if room is None:
                    room = self._memory_room()
                peak = self._workers[pending.record.worker].learned_peak
                if not self._fits(pending, peak, room):
                    continue
                room -= peak or 0
            self._start(pending, now)

    def _memory_room(self) -> float:
        """Memory runs may still take: what the machine can give, less the reserve, less
        what running runs are expected to take beyond what they hold now."""
        available = self._available_memory()
        if available is None:
            return float("inf")
        expected = 0
        for name, running in self._running.items():
            peak = self._workers[name].learned_peak
            usage = getattr(running.future, "usage", None)
            if peak is not None:
                expected += max(0, peak - (usage.rss_bytes if usage is not None else 0))
        return available - self.memory_reserve - expected

    def _fits(self, pending: PendingRun, peak: int | None, room: float) -> bool:
        """Whether ``pending`` may start as far as memory goes; notes why not if it may not.
        A worker with no history fits; one that does not fit starts anyway when nothing
        else runs, so that it never waits for ever."""
        note = None
        fits = peak is None or peak <= room
        if not fits:
            if self._running:  # (runs started this step are in it already)
                note = (f"waiting for memory: its runs peak at {human(peak)}, "
                        f"{human(max(0.0, room))} available")
                self._memory_blocked = True
            else:
                fits = True
                logger.warning("{}: starting although its runs peak at {} and only {} is "
                               "available (nothing else runs, so waiting would not help)",
                               pending.record.worker, human(peak), human(max(0.0, room)))
        if note != pending.waiting_for:
            pending.waiting_for = note
            self._touch(pending.record.worker)
        return fits

    def blocker(self, name: str) -> str | None:
        """Why dependencies or exclusions keep ``name`` from starting now, or ``None``."""
        return admission.blocker(self._graph.dependencies_of(name),
                                 self._graph.conflicts_of(name), self._workers.__getitem__,
                                 self._running, self._pending)

    def _start(self, pending: PendingRun, now: datetime) -> None:
        """Move a pending run to running and record it; its process is started once this
        step's transaction has committed (see _after_step)."""
        record = pending.record
        state = self._workers[record.worker]
        del self._pending[record.worker]
        record.start(now)
        state.last_run = record.started_at if record.attempts == 1 else state.last_run
        config = state.config
        spec = RunSpec(
            run_id=record.run_id, worker=config.name, attempt=record.attempts,
            function=config.function, pass_argument=config.passes_config,
            argument=self._snapshot(state, running=True) if config.passes_config else None,
            command=config.command, shell=config.shell, env=config.env, cwd=config.cwd,
            timeout_seconds=config.timeout_seconds,
            kill_grace_seconds=config.kill_grace_seconds,
            memory_limit_mb=config.memory_limit_mb, pids_limit=config.pids_limit,
            cpu_limit=config.cpu_limit, kill_leftovers=config.kill_leftovers,
            max_result_bytes=config.max_result_bytes or self.max_result_bytes,
            user=config.user, num_cpus=config.num_cpus, memory_mb=config.memory_mb,
            resources=config.resources, stall_seconds=config.stall_seconds)
        self.store.save(record)  # committed before the process exists
        if record.attempts == 1:
            self._persist(state)  # the last start, which a restart resumes from
        self._emit("started", record, message=config.target)
        running = RunningRun(record, None, pending.waiters)
        self._running[record.worker] = running
        self.idle.clear()
        self._to_submit.append((running, spec))

    def _submit(self, running: RunningRun, spec: RunSpec) -> None:
        """Hand a started run to the executor (which returns at once)."""
        name = spec.worker
        try:
            future = self.executor.submit_run(spec)
        except Exception as error:  # the executor is at fault, not the run; record it
            logger.exception("executor failed to start {} run {}", name, spec.run_id)
            now = self.clock.now()
            future = RunFuture(spec, lambda *_: None)  # already done: nothing to kill
            future.set_result(AttemptResult(Outcome.CRASHED, now, now,
                                            error=f"could not start: {error!r}"))
        running.future = future
        if running.killing is not None:  # killed before it was submitted
            future.kill(running.killing, running.immediately)
        future.add_start_callback(lambda started: self.post(self._attempt_started, name,
                                                            started))
        future.add_done_callback(lambda done: self.post(self._finished, name, done))

    def _attempt_started(self, name: str, future: RunFuture) -> None:
        """The executor reports the attempt's process: its pid, for status and history."""
        running = self._running.get(name)
        if running is not None and running.future is future:
            if running.record.attempts == 1 and future.started_at is not None:
                running.record.started_at = future.started_at  # when user code could begin
            running.record.pid = future.pid
            running.record.pid_create_time = future.pid_create_time
            running.record.node = future.node
            running.record.host = future.host
            self._touch(name)

    # -- a run ends -----------------------------------------------------------------------

    def _finished(self, name: str, future: RunFuture) -> None:
        """An attempt ended (a command of the step: its record and its worker's counters
        commit together, in the step's transaction)."""
        running = self._running.get(name)
        if running is None or running.future is not future:
            return
        del self._running[name]
        self._touch(name)
        if not self._running:
            self.idle.set()
        attempt: AttemptResult = future.result()
        record = running.record
        if record.attempts == 1 and attempt.pid is not None:
            record.started_at = attempt.started_at  # a run lasts from its user code's start
        for field in ("pid", "result", "error", "traceback", "exit_code", "signal",
                      "cpu_seconds", "peak_rss_bytes", "stdout_tail", "stderr_tail",
                      "stdout_bytes", "stderr_bytes"):
            setattr(record, field, getattr(attempt, field))
        outcome = attempt.outcome
        state = self._workers[name]
        config = state.config
        if (outcome.is_failure and record.attempts <= config.max_retries
                and state.enabled and self.state == "running"):
            self._retry(state, running, attempt)
            return
        record.finish(outcome, attempt.ended_at)
        self._conclude(state, record, running.waiters, attempt)

    def _retry(self, state: WorkerState, running: RunningRun, attempt: AttemptResult) -> None:
        record = running.record
        record.retry()
        self._touch(state.name)
        delay = backoff(state.config.retry_delay_seconds, record.attempts)
        self._emit(attempt.outcome.value, record, duration=attempt.duration_seconds,
                   message=attempt.error or "", final=False)
        self._emit("retried", record, message=f"attempt {record.attempts + 1} of "
                                              f"{state.config.max_retries + 1} in {delay:g}s")
        waiters = list(running.waiters)
        queued = self._pending.pop(state.name, None)
        if queued is not None:  # a queued due time joins the retry instead of waiting behind
            queued.record.error = f"coalesced into the retry of run {record.run_id}"
            queued.record.finish(Outcome.SKIPPED, self.clock.now())
            self.store.save(queued.record)
            self._emit("skipped", queued.record, message=queued.record.error)
            waiters += queued.waiters
        not_before = self.clock.now() + timedelta(seconds=delay)
        self._pending[state.name] = PendingRun(record, next(self._seq), not_before, waiters)
        self._wake_at(not_before, state.name)
        self.store.save(record)

    def _conclude(self, state: WorkerState, record: RunRecord,
                  waiters: list[concurrent.futures.Future],
                  attempt: AttemptResult | None = None) -> None:
        """Book a finished run: statistics, auto-disable, pipelines, waiters, history."""
        outcome = record.outcome
        now = self.clock.now()
        self._touch(state.name)
        if record.started_at is not None:
            state.last_outcome = outcome
            state.last_duration = record.duration_seconds if attempt else None
            state.cpu_seconds = record.cpu_seconds
            state.peak_rss_bytes = record.peak_rss_bytes
        self.store.save(record)
        self._emit(outcome.value, record,
                   duration=record.duration_seconds if attempt else None,
                   message=record.error or "")
        if outcome is Outcome.SUCCEEDED:
            if record.peak_rss_bytes:
                state.peaks.append(record.peak_rss_bytes)
            state.consecutive_failures = 0
            state.last_success = record.ended_at
            self._release_pipelines(state.name, now)
        elif outcome.is_failure:
            state.consecutive_failures += 1
            state.last_error = record.error
            if state.config.on_failure is not None:
                self._run_on_failure(state.config, record)
            limit = state.config.max_consecutive_failures
            if limit is not None and state.consecutive_failures >= limit and state.enabled:
                self.disable(state.name, reason=(
                    f"disabled after {state.consecutive_failures} consecutive failures: "
                    f"{record.error or outcome.value}"))
        if (state.config.execution_mode is WorkerExecutionMode.CONTINUOUS and state.enabled
                and self.state == "running" and state.name not in self._pending):
            delay = 0.0
            if state.consecutive_failures:
                delay = min(backoff(state.config.retry_delay_seconds,
                                    state.consecutive_failures), MAX_BACKOFF_SECONDS)
            self._set_next_due(state, now + timedelta(seconds=delay))
        self._persist(state)
        copy = record.snapshot()
        for waiter in waiters:  # once committed: a caller who waited sees it done
            if not waiter.done():
                self._after_commit.append(functools.partial(_settle, waiter, copy))

    def _run_on_failure(self, config: WorkerConfig, record: RunRecord) -> None:
        """Start the worker's ``on_failure`` command; its own failure is only logged."""
        command = config.on_failure
        spec = RunSpec(
            run_id=f"{record.run_id}-on-failure", worker=config.name,
            command=command, shell=isinstance(command, str),
            env={**(config.env or {}), "ORCHESTRATOR_WORKER": config.name,
                 "ORCHESTRATOR_OUTCOME": record.outcome.value,
                 "ORCHESTRATOR_ERROR": record.error or "",
                 "ORCHESTRATOR_RUN_ID": record.run_id},
            cwd=config.cwd, timeout_seconds=ON_FAILURE_TIMEOUT_SECONDS,
            kill_grace_seconds=config.kill_grace_seconds, user=config.user)

        def report(done: concurrent.futures.Future) -> None:
            attempt: AttemptResult = done.result()
            if attempt.outcome is Outcome.SUCCEEDED:
                logger.info("on_failure of {} (run {}) ran", config.name, record.run_id)
            else:
                logger.error("on_failure of {} (run {}) {}: {}", config.name, record.run_id,
                             attempt.outcome.value, attempt.error)

        try:
            self.executor.submit_run(spec).add_done_callback(report)
        except Exception:
            logger.exception("on_failure of {} (run {}) could not start", config.name,
                             record.run_id)

    def _release_pipelines(self, name: str, now: datetime) -> None:
        """``name`` succeeded: TRIGGERED dependents whose upstreams all succeeded become due."""
        for dependent in self._graph.dependents_of(name):
            state = self._workers.get(dependent)
            if state is None or state.config.execution_mode is not WorkerExecutionMode.TRIGGERED:
                continue
            state.fresh_upstreams.add(name)
            if state.enabled and state.fresh_upstreams >= set(
                    self._graph.dependencies_of(dependent)):
                state.fresh_upstreams.clear()
                self._make_pending(state, now, Cause.UPSTREAM)

    def _drop_pending(self, name: str, why: str) -> None:
        pending = self._pending.pop(name, None)
        if pending is None:
            return
        record = pending.record
        record.error = why
        record.finish(Outcome.CANCELLED, self.clock.now())
        self._conclude(self._workers[name], record, pending.waiters)

    # -- commands (run as the owner) ------------------------------------------------------

    def register(self, config: WorkerConfig) -> None:
        name = config.name
        if name in self._workers:
            raise ConfigError(f"worker {name!r}: name is already registered; choose another "
                              f"name or unregister the first", worker=name, field="name")
        if self.state in ("running", "stopping"):
            for field in ("depends_on", "blocks"):
                for other in getattr(config, field):
                    if other not in self._workers:
                        raise UnknownWorkerError(
                            f"worker {name!r}: {field} names {other!r}, which is not "
                            f"registered; register {other!r} first", worker=name, field=field)
        if self.state in ("running", "stopping"):
            self._check_dependency_modes(config)
        self._check_containment(config)
        self._graph.add_worker(name, config.depends_on, config.blocks)
        state = WorkerState(config)
        self._workers[name] = state
        for touched in (name, *config.blocks):  # exclusion is symmetric: theirs changed too
            self._touch(touched)
        if self.state == "running":
            self._begin_worker(state, self.clock.now())

    def begin(self) -> None:
        """created -> running: check names, restore persisted state, set first due times.

        Runs a dead instance left unfinished become ``interrupted`` (their processes, if
        still alive and the same by pid and creation time, are killed first).
        """
        if self.state != "created":
            return
        self._graph.check_known()
        for state in self._workers.values():
            self._check_dependency_modes(state.config)
            self._check_containment(state.config)
        now = self.clock.now()
        self._restore(now)
        self.state = "running"
        for state in self._workers.values():
            self._begin_worker(state, now)

    def _check_containment(self, config: WorkerConfig) -> None:
        """``pids_limit`` and ``cpu_limit`` are a cgroup's limits: refused without one."""
        if self.executor is None or self.executor.containment not in ("process-group", "none"):
            return  # cgroups, or decided per node (a cluster): each node refuses on its own
        for field in ("pids_limit", "cpu_limit"):
            if getattr(config, field) is not None:
                raise ConfigError(
                    f"worker {config.name!r}: {field} needs cgroup containment, which this "
                    f"orchestrator does not have ({self.executor.containment_detail}); remove "
                    f"{field}, or run where cgroups can be made (the containment guide)",
                    worker=config.name, field=field)

    def _check_dependency_modes(self, config: WorkerConfig) -> None:
        """A continuous worker is always running or due again, so nothing could ever wait
        for it to be idle: a dependency on one is refused."""
        for dependency in config.depends_on:
            other = self._workers.get(dependency)
            if other is not None and \
                    other.config.execution_mode is WorkerExecutionMode.CONTINUOUS:
                raise ConfigError(
                    f"worker {config.name!r}: depends_on names {dependency!r}, a continuous "
                    f"worker, which is always running or about to; nothing could ever run "
                    f"after it. Make {dependency!r} scheduled, or remove it from depends_on",
                    worker=config.name, field="depends_on")

    def _restore(self, now: datetime) -> None:
        """Bring back what a previous instance saved, and settle the runs it left open."""
        saved = self.store.load_workers()
        for name, state in self._workers.items():
            values = saved.get(name)
            if values is None:
                continue
            fields = ["last_run", "last_success", "last_error", "last_outcome", "last_duration",
                      "last_due", "cpu_seconds", "peak_rss_bytes", "missed"]
            if not state.steered_before_start:  # an enable/disable before start() wins
                fields += ["enabled", "disabled_reason", "disabled_at", "consecutive_failures"]
            for field in fields:
                setattr(state, field, values[field])
            self._touch(name)
            if not state.enabled:
                self._drop_pending(name, "worker disabled (as saved in the state file)")
        if self.admit_by_memory:
            for name, state in self._workers.items():
                peaks = [record.peak_rss_bytes for record in self.store.recent(name, 100)
                         if record.outcome is Outcome.SUCCEEDED and record.peak_rss_bytes]
                state.peaks.extend(reversed(peaks[:LEARNED_RUNS]))
        for record in self.store.unfinished():
            self._settle_unfinished(record, now)

    def _settle_unfinished(self, record: RunRecord, now: datetime) -> None:
        """A run a previous instance left open: kill what is left of it, then either queue
        it again (a due time that never started, still within its misfire grace) or record
        how it ended."""
        state = self._workers.get(record.worker)
        if record.pid is not None and record.pid_create_time is not None:
            from .execution.stale import kill_stale
            if kill_stale(record.pid, record.pid_create_time):
                logger.warning("killed process {} left running by a previous instance "
                               "(run {} of {})", record.pid, record.run_id, record.worker)
        scheduled = record.cause in (Cause.SCHEDULE, Cause.CATCH_UP)
        if record.attempts == 0:
            if (scheduled and state is not None and state.enabled
                    and record.worker not in self._pending
                    and (now - record.due_at).total_seconds() <= _misfire_grace(state.config)):
                self._pending[record.worker] = PendingRun(record, next(self._seq))
                self._touch(record.worker)
                self._emit("due", record, message="due before the restart; runs late, once")
                return
            record.error = "the orchestrator stopped before this run started"
            record.finish(Outcome.MISSED if scheduled else Outcome.INTERRUPTED, now)
        else:
            record.error = (f"the orchestrator stopped during attempt {record.attempts}"
                            if record.state is RunState.RUNNING else
                            f"the orchestrator stopped before attempt {record.attempts + 1}")
            record.finish(Outcome.INTERRUPTED, now)
            if state is not None:
                state.last_outcome = Outcome.INTERRUPTED
                self._persist(state)
        self.store.save(record)
        self._emit(record.outcome.value, record, message=record.error)

    def _begin_worker(self, state: WorkerState, now: datetime) -> None:
        config = state.config
        mode = config.execution_mode
        self._touch(state.name)
        if mode is WorkerExecutionMode.SCHEDULED:
            if config.interval_seconds is not None and state.last_run is not None:
                # no stampede at restart: one interval after the last recorded start
                anchor = state.last_run + timedelta(seconds=config.interval_seconds)
                state.schedule = Schedule(config, anchor, self.default_timezone)
                state.schedule_anchor = first = anchor
            else:
                state.schedule = Schedule(config, now, self.default_timezone)
                state.schedule_anchor = now
                first = (state.schedule.next_due(state.last_due) if state.last_due is not None
                         and config.interval_seconds is None else None)
            if first is not None and first <= now and state.enabled:
                self._catch_up(state, first, now)
            else:  # nothing passed, or a disabled worker, which would not have run anyway
                self._set_next_due(state, first if first is not None and first > now
                                   else state.schedule.first_due(now))
        elif mode is WorkerExecutionMode.CONTINUOUS and state.enabled:
            self._set_next_due(state, now)
        if config.run_at_start and state.enabled:
            self._make_pending(state, now, Cause.STARTUP)

    def _catch_up(self, state: WorkerState, first: datetime, now: datetime) -> None:
        """Due times passed while the orchestrator was down: one catch-up run at most."""
        config = state.config
        grace = _misfire_grace(config)
        catch_up, missed, exact = missed_while_down(state.schedule, first, now, grace)
        if missed:
            state.missed += missed
            record = RunRecord(new_run_id(), state.name, Cause.SCHEDULE, first)
            record.error = (f"{missed}{'' if exact else '+'} due time(s) from "
                            f"{first.isoformat()} missed while the orchestrator was down "
                            f"(misfire_grace_seconds {grace:g})")
            record.finish(Outcome.MISSED, now)
            self.store.save(record)
            self._emit("missed", record, message=record.error)
        if catch_up is not None:
            self._make_pending(state, catch_up, Cause.CATCH_UP)
        last = catch_up or now
        state.last_due = catch_up or state.last_due
        following, _ = state.schedule.catch_up(last, now) if catch_up else (
            state.schedule.first_due(now), 0)
        self._persist(state)
        self._set_next_due(state, following)

    def _persist(self, state: WorkerState) -> None:
        self.store.save_worker({
            "name": state.name, "enabled": state.enabled,
            "disabled_reason": state.disabled_reason, "disabled_at": state.disabled_at,
            "consecutive_failures": state.consecutive_failures, "last_run": state.last_run,
            "last_success": state.last_success, "last_error": state.last_error,
            "last_outcome": state.last_outcome, "last_duration": state.last_duration,
            "last_due": state.last_due, "cpu_seconds": state.cpu_seconds,
            "peak_rss_bytes": state.peak_rss_bytes, "missed": state.missed})

    def trigger(self, name: str) -> concurrent.futures.Future | None:
        """Make ``name`` pending now; the future receives the run's final record (its
        ``run_id`` attribute names the run at once).

        :returns: ``None`` if the worker is disabled or the orchestrator is stopping.
        """
        state = self._state(name)
        if not state.enabled or self.state in ("stopping", "stopped"):
            return None
        waiter: concurrent.futures.Future = concurrent.futures.Future()
        pending = self._make_pending(state, self.clock.now(), Cause.MANUAL, waiter)
        pending.not_before = None  # an explicit request skips a retry's back-off
        waiter.run_id = pending.record.run_id
        return waiter

    def enable(self, name: str) -> None:
        state = self._state(name)
        state.steered_before_start |= self.state == "created"
        state.enabled = True
        state.disabled_reason = None
        state.disabled_at = None
        state.consecutive_failures = 0  # also on an enabled worker: the event says so
        self._touch(name)
        self._emit_worker("enabled", state)
        self._persist(state)
        if (state.config.execution_mode is WorkerExecutionMode.CONTINUOUS
                and self.state == "running" and state.name not in self._running
                and state.name not in self._pending and state.next_due is None):
            self._set_next_due(state, self.clock.now())

    def disable(self, name: str, stop: bool = False,
                reason: str = "disabled by request") -> None:
        state = self._state(name)
        state.steered_before_start |= self.state == "created"
        if state.enabled:
            state.enabled = False
            state.disabled_reason = reason
            state.disabled_at = self.clock.now()
            self._emit_worker("disabled", state, reason)
            self._persist(state)
        if state.config.execution_mode is WorkerExecutionMode.CONTINUOUS:
            state.next_due = None
        self._touch(name)
        self._drop_pending(name, "worker disabled before the run started")
        running = self._running.get(name)
        if stop and running is not None and running.killing is None:
            running.kill(Outcome.CANCELLED)

    def begin_stop(self) -> None:
        """running -> stopping: start nothing new; pending runs are cancelled."""
        if self.state not in ("created", "running"):
            return
        self.state = "stopping"
        for name in list(self._pending):
            self._drop_pending(name, "the orchestrator stopped before the run started")

    def kill_running(self, outcome: Outcome = Outcome.CANCELLED,
                     immediately: bool = False) -> None:
        """Kill every run in progress; ``immediately`` skips (or cuts short) the grace."""
        for running in self._running.values():
            if running.killing is None or immediately:
                running.kill(outcome, immediately)

    def end(self) -> None:
        self.state = "stopped"

    # -- reading (run as the owner) -------------------------------------------------------

    def _state(self, name: str) -> WorkerState:
        check_name(name)
        state = self._workers.get(name)
        if state is None:
            hint = suggest(name, self._workers)
            raise UnknownWorkerError(f"no worker named {name!r}{hint}", worker=name)
        return state

    def _snapshot(self, state: WorkerState, running: bool | None = None) -> WorkerConfig:
        return dataclasses.replace(
            state.config, is_enabled=state.enabled,
            is_running=state.name in self._running if running is None else running,
            consecutive_failures=state.consecutive_failures, last_run=state.last_run,
            last_success=state.last_success, last_error=state.last_error)

    def config(self, name: str) -> WorkerConfig:
        return self._snapshot(self._state(name))

    def names(self) -> list[str]:
        return list(self._workers)

    def longest_kill_grace(self) -> float:
        return max((s.config.kill_grace_seconds for s in self._workers.values()), default=0.0)

    # -- events ---------------------------------------------------------------------------

    def _emit(self, kind: str, record: RunRecord, *, duration: float | None = None,
              message: str = "", final: bool = True) -> None:
        self.events.emit(RunEvent(kind, record.worker, self.clock.now(), record.run_id,
                                  record.attempts or None, duration, message, final))

    def _emit_worker(self, kind: str, state: WorkerState, message: str = "") -> None:
        self.events.emit(RunEvent(kind, state.name, self.clock.now(), message=message))


def _settle(waiter: concurrent.futures.Future, record: RunRecord) -> None:
    if not waiter.done():
        waiter.set_result(record)


def backoff(delay: float, failures: int) -> float:
    """``delay * 2**(failures-1)``, bounded so that no count of failures overflows it."""
    return min(delay * 2.0 ** min(failures - 1, 40), MAX_SECONDS)


def _misfire_grace(config: WorkerConfig) -> float:
    """How late a due time missed while down may still run: the option, else one interval,
    else (cron) an hour."""
    if config.misfire_grace_seconds is not None:
        return config.misfire_grace_seconds
    return config.interval_seconds if config.interval_seconds is not None else 3600.0
