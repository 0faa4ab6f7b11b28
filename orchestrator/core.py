"""The public face: :class:`WorkerOrchestrator`.

It validates input, owns the lifecycle (start, stop, signals) and forwards everything else
to the :class:`~orchestrator.dispatcher.Dispatcher` thread as commands. It holds no
scheduling state of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import grp
import os
import signal
import threading
from datetime import datetime, timedelta, timezone as dt_timezone, tzinfo
from typing import Any, Callable

from loguru import logger

from .config import (DEFAULT_MAX_RESULT_BYTES, MAX_MAX_RESULT_BYTES, MAX_MEMORY_LIMIT_MB,
                     WorkerConfig, build_config, check_name, parse_timezone, suggest)
from .dispatcher import Dispatcher
from .errors import (ConfigError, NestedStartError, NotRunningError, OrchestratorError,
                     UnknownWorkerError)
from .events import EventBus, RunEvent
from .execution.base import RunExecutor
from .execution.process import CONTAINMENTS, ProcessExecutor
from .execution.wire import IMPORTING_VARIABLE
from .history import MemoryHistory
from .state import StateStore
from .runs import Outcome, RunRecord
from .schedule import Plan, local_timezone, plan as plan_due_times
from .status import StatusBoard
from .watches import FileWatch

#: The longest window plan() computes (ten years).
MAX_PLAN_HOURS = 87600
#: How many due times plan() gives at most, unless told otherwise, and at most at all.
DEFAULT_PLAN_LIMIT = 10_000
MAX_PLAN_LIMIT = 10_000_000
#: Why start() refuses inside the launcher (see execution/_launcher.py: it imports the main
#: script to find the workers' functions, as multiprocessing's spawn does).
UNGUARDED_START = ("the main script starts an orchestrator when it is imported, and the "
                   "launcher imports it to find the workers' functions; put the start (start() "
                   "or run_forever()) under  if __name__ == \"__main__\":")
#: How long stop() waits for killed runs to be gone, beyond their kill grace.
KILL_SETTLE_SECONDS = 30.0


class WorkerOrchestrator:
    """Runs registered workers on their schedules under the admission rules.

    :param max_concurrent: most runs in progress at once (default 5).
    :param state_path: ``None`` keeps state and history in memory.
    :param timezone: zone of cron workers that name none (default: the machine's).
    :param executor: where attempts execute (default: a fresh OS process per attempt).
    :param clock: ``now()``/``monotonic()`` provider, for tests.
    :param history_limit: runs kept per worker (default 1,000).
    :param http: ``"host:port"`` to serve status, metrics and a dashboard on (port 0: any
        free port; see :attr:`http_url`); ``None`` (default) serves nothing.
    :param http_token: the bearer token that allows the ``POST`` control routes; without
        it those routes are off.
    :param control_socket: the Unix socket the command line steers this orchestrator
        through (``orchestrator status|trigger|logs FILE ...``); its file permissions are the
        access control (owner only). Default: ``STATE_PATH.sock`` beside the state file, none
        without a state file; ``False``: none.
    :param control_socket_group: a group whose members may use the control socket too.
    :param max_result_bytes: the largest pickled result a function worker may return
        (default 1 MiB; a worker's own ``max_result_bytes`` wins); a bigger one fails its run.
    :param containment: what keeps each attempt's processes together: ``"auto"``
        (default: a cgroup per attempt where cgroups may be made, else process groups),
        ``"cgroup"`` (refuse where they cannot) or ``"process-group"``; see the
        containment guide.
    :param admit_by_memory: start a run only if its worker's learned peak (the largest tree
        peak of its last 5 successful runs) fits in the memory the machine can still give
        (``MemAvailable``, or this process's cgroup's room if lower) less
        ``memory_reserve_mb``; a run that does not fit waits (others pass it), and starts
        anyway, with a warning, when nothing else runs. Default ``False``.
    :param memory_reserve_mb: memory kept free for everything else (default 256).
    :raises ConfigError: on an invalid option.
    :raises ContainmentError: for ``containment="cgroup"`` where cgroups cannot be made.
    """

    def __init__(self, max_concurrent: int = 5, state_path: str | None = None, *,
                 timezone: str | tzinfo | None = None, executor: RunExecutor | None = None,
                 clock=None, history_limit: int = 1000, http: str | None = None,
                 http_token: str | None = None, containment: str = "auto",
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                 control_socket: str | os.PathLike | bool | None = None,
                 control_socket_group: str | None = None, admit_by_memory: bool = False,
                 memory_reserve_mb: float = 256.0):
        if not isinstance(admit_by_memory, bool):
            raise ConfigError(f"orchestrator: admit_by_memory must be true or false, got "
                              f"{admit_by_memory!r}", field="admit_by_memory")
        if isinstance(memory_reserve_mb, bool) \
                or not isinstance(memory_reserve_mb, (int, float)) \
                or not 0 <= memory_reserve_mb <= MAX_MEMORY_LIMIT_MB:
            raise ConfigError(f"orchestrator: memory_reserve_mb must be a number of megabytes "
                              f"from 0 to {MAX_MEMORY_LIMIT_MB}, got {memory_reserve_mb!r}",
                              field="memory_reserve_mb")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) \
                or max_concurrent < 1:
            raise ConfigError(f"orchestrator: max_concurrent must be a whole number of at "
                              f"least 1, got {max_concurrent!r}", field="max_concurrent")
        if isinstance(history_limit, bool) or not isinstance(history_limit, int) \
                or history_limit < 1:
            raise ConfigError(f"orchestrator: history_limit must be a whole number of at "
                              f"least 1, got {history_limit!r}", field="history_limit")
        if state_path is not None and not isinstance(state_path, (str, os.PathLike)):
            raise ConfigError(f"orchestrator: state_path must be a file path or None, got "
                              f"{state_path!r}", field="state_path")
        if state_path is not None:
            directory = os.path.dirname(os.path.abspath(os.fspath(state_path)))
            if not os.path.isdir(directory):
                raise ConfigError(f"orchestrator: state_path {os.fspath(state_path)!r} is in "
                                  f"{directory}, which does not exist; create it, or choose "
                                  f"another state_path", field="state_path")
        if timezone is not None:
            timezone = parse_timezone(timezone)
        if isinstance(max_result_bytes, bool) or not isinstance(max_result_bytes, int) \
                or not 1 <= max_result_bytes <= MAX_MAX_RESULT_BYTES:
            raise ConfigError(f"orchestrator: max_result_bytes must be a whole number of bytes "
                              f"from 1 to {MAX_MAX_RESULT_BYTES}, got {max_result_bytes!r}",
                              field="max_result_bytes")
        if containment not in CONTAINMENTS:
            raise ConfigError(f"orchestrator: containment must be one of "
                              f"{', '.join(map(repr, CONTAINMENTS))}, got {containment!r}",
                              field="containment")
        if executor is None:
            executor = ProcessExecutor(containment=containment)
        elif containment != "auto":
            raise ConfigError("orchestrator: containment applies to the default process "
                              "executor; leave it out when you pass an executor",
                              field="containment")
        self._events = EventBus()
        self._executor = executor
        self._dispatcher = Dispatcher(executor, max_concurrent=max_concurrent, clock=clock,
                                      default_timezone=timezone or local_timezone(),
                                      store=(MemoryHistory(history_limit) if state_path is None
                                             else StateStore(os.fspath(state_path),
                                                             history_limit)),
                                      events=self._events, max_result_bytes=max_result_bytes,
                                      admit_by_memory=admit_by_memory,
                                      memory_reserve_mb=memory_reserve_mb)
        self._status = StatusBoard(lambda: self._dispatcher.snapshot,
                                   self._dispatcher.clock.now)
        self._file_watch: FileWatch | None = None
        self._forever_wake: int | None = None  # run_forever's pipe, while it runs
        #: Why the orchestrator stopped on its own (its state file was replaced), or None.
        self.failure: str | None = None
        self._http_address = parse_http(http)
        if control_socket is None and state_path is not None:
            control_socket = os.fspath(state_path) + ".sock"
        if control_socket is not None and control_socket is not False and \
                not isinstance(control_socket, (str, os.PathLike)):
            raise ConfigError(f"orchestrator: control_socket must be a path, None or False, "
                              f"got {control_socket!r}", field="control_socket")
        self._control_path = None if control_socket in (None, False) else \
            os.path.abspath(os.fspath(control_socket))
        if control_socket_group is not None:
            try:
                grp.getgrnam(control_socket_group)
            except (KeyError, TypeError):
                raise ConfigError(f"orchestrator: control_socket_group {control_socket_group!r} "
                                  f"is not a group of this machine", field="control_socket_group"
                                  ) from None
        self._control_group = control_socket_group
        self._control_server = None
        if http_token is not None and (not isinstance(http_token, str) or not http_token
                                       or not http_token.isascii()
                                       or not http_token.isprintable() or " " in http_token):
            raise ConfigError("orchestrator: http_token must be a non-empty string of "
                              "printable ASCII characters without spaces", field="http_token")
        self._http_token = http_token
        self._http_server = None
        self._lifecycle = threading.Lock()
        self._kill_now = False

    # -- registration ---------------------------------------------------------------------

    def register_worker(self, name: str, fn: Callable | None = None, *,
                        command: list[str] | str | None = None, **options: Any) -> WorkerConfig:
        """Register a worker; the user guide's "Workers and options" page lists ``options``.

        Allowed while running; validated the same way either way.

        :returns: the worker's configuration.
        :raises ConfigError: naming the worker, the option and the fix.
        """
        return self._register(build_config(name, fn, command, options))

    def worker(self, name: str | None = None, **options: Any):
        """Decorator form of :meth:`register_worker` for module-level functions; the name
        defaults to the function's, with ``_`` written as ``-``.
        """
        def register(fn: Callable) -> Callable:
            worker_name = name or getattr(fn, "__name__", "").replace("_", "-")
            self._register(build_config(worker_name, fn, None, options, decorating=True))
            return fn
        return register

    def _register(self, config: WorkerConfig) -> WorkerConfig:
        self._dispatcher.call(self._dispatcher.register, config)
        return self.get_worker(config.name)  # published before the call returned

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start scheduling; returns at once. A second call does nothing.

        :raises UnknownWorkerError: if ``depends_on``/``blocks`` name an unregistered worker.
        :raises StateError: if the state file is used by another instance, read-only, or
            from a newer release.
        :raises OrchestratorError: if this orchestrator was already stopped.
        """
        if os.environ.get(IMPORTING_VARIABLE):
            raise NestedStartError(UNGUARDED_START)
        with self._lifecycle:
            dispatcher = self._dispatcher
            if dispatcher.state == "running":
                return
            if dispatcher.state != "created":
                raise OrchestratorError("this orchestrator was stopped; create a new "
                                        "WorkerOrchestrator to start again")
            dispatcher.store.open()  # the instance lock; raises StateError if taken
            try:
                self._control_server = self._bind_control()
                self._http_server = self._bind_http()
                dispatcher.call(dispatcher.begin)
                self._executor.start()  # cleans up after dead launchers; starts its own
            except BaseException:
                dispatcher.store.close()
                for server in (self._control_server, self._http_server):
                    if server is not None:
                        server.stop()
                self._control_server = self._http_server = None
                raise
            dispatcher.start_thread()
            self._watch_state_file()
            announced = {}
            for server, key in ((self._control_server, "socket"), (self._http_server, "url")):
                if server is not None:
                    server.start()
                    announced[key] = server.url
                    logger.info("serving status and control on {}", server.url)
            if announced:
                dispatcher.call(functools.partial(dispatcher.store.announce, **announced))
            logger.info("orchestrator started with {} workers, max_concurrent={}",
                        len(dispatcher.names()), dispatcher.max_concurrent)

    def stop(self, timeout: float = 30.0) -> None:
        """Start nothing new, let runs finish for ``timeout`` seconds, then kill them.

        Killed runs are recorded ``cancelled``. Returns when no process started by this
        orchestrator is left. Calling it twice, or before :meth:`start`, is harmless.
        """
        if self._dispatcher.on_dispatcher_thread():
            raise OrchestratorError("stop() was called from a listener, which runs on the "
                                    "dispatcher thread it would wait for; call it from "
                                    "another thread")
        with self._lifecycle:
            dispatcher = self._dispatcher
            if dispatcher.state in ("created", "stopped"):
                return  # nothing started, or already stopped: harmless
            dispatcher.call(dispatcher.begin_stop)
            if self._kill_now or not dispatcher.idle.wait(timeout):
                logger.info("stop: killing runs still in progress after {}s", timeout)
                dispatcher.call(dispatcher.kill_running, Outcome.CANCELLED, self._kill_now)
                grace = dispatcher.call(dispatcher.longest_kill_grace)
                if not dispatcher.idle.wait(KILL_SETTLE_SECONDS + grace):
                    logger.error("stop: runs did not end after being killed; giving up "
                                 "waiting for them")
            dispatcher.halt_thread()
            if self._file_watch is not None:
                self._file_watch.stop()
                self._file_watch = None
            self._executor.shutdown(wait=True, cancel_futures=True)
            dispatcher.call(dispatcher.end)
            for server in (self._http_server, self._control_server):
                if server is not None:
                    server.stop()  # before the store it reads from closes
            dispatcher.store.close()
            logger.info("orchestrator stopped")

    def _watch_state_file(self) -> None:
        """Have the kernel say when the state file is deleted or replaced (see
        ``StateStore.check_file``); the check runs on the dispatcher thread."""
        path = getattr(self._dispatcher.store, "path", None)
        if path is None:
            return
        watch = FileWatch(path, lambda: self._dispatcher.post(self._check_state_file))
        self._file_watch = watch if watch.start() else None

    def _check_state_file(self) -> None:
        outcome = self._dispatcher.store.check_file()
        if outcome == "recreated":  # a new file at the path: watch that one
            watch, self._file_watch = self._file_watch, None
            if watch is not None:
                watch.stop()
            self._watch_state_file()
        elif outcome == "replaced":
            self._stop_on_its_own(f"the state file {self._dispatcher.store.path} was "
                                  f"replaced by another file")

    def _stop_on_its_own(self, reason: str) -> None:
        """Stop cleanly from inside (the dispatcher thread cannot wait for itself)."""
        if self.failure is not None:
            return
        self.failure = reason
        if self._forever_wake is not None:  # run_forever stops as on SIGTERM
            try:
                os.write(self._forever_wake, bytes([signal.SIGTERM]))
            except OSError:
                pass
            return
        threading.Thread(target=self.stop, name="orchestrator-stop", daemon=True).start()

    def _bind_http(self):
        """The status server, bound but not yet serving; ``None`` without ``http``."""
        if self._http_address is None:
            return None
        from .http import StatusServer

        host, port = self._http_address
        try:
            return StatusServer(self, host, port, self._http_token)
        except OSError as error:
            raise ConfigError(f"orchestrator: http cannot listen on {host}:{port}: "
                              f"{error.strerror}; choose another port, or leave http out "
                              f"(in a TOML file: http = false)", field="http") from None

    def _bind_control(self):
        """The control socket's server, bound but not yet serving; ``None`` without one."""
        if self._control_path is None:
            return None
        from .http import StatusServer

        try:
            return StatusServer(self, unix_socket=self._control_path,
                                socket_group=self._control_group)
        except OSError as error:
            raise ConfigError(f"orchestrator: the control socket {self._control_path} cannot "
                              f"be made: {error.strerror or error}", field="control_socket"
                              ) from None

    @property
    def control_socket(self) -> str | None:
        """The path of the control socket (served once started), or ``None``."""
        return self._control_path

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the status server once started, else ``None``."""
        return self._http_server.url if self._http_server is not None else None

    def run_forever(self, stop_timeout: float = 30.0) -> None:
        """Start, block until SIGINT or SIGTERM, then :meth:`stop` (a second signal kills
        the runs at once). Call it from the main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            raise OrchestratorError("run_forever() installs signal handlers and must be "
                                    "called from the main thread; use start()/stop() "
                                    "elsewhere")
        # The handlers only write the signal number to a pipe (async-signal-safe, no lock
        # taken); this thread reads it and does the work, a helper thread runs stop().
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)

        def on_signal(signum, _frame):
            try:
                os.write(write_end, bytes([signum]))
            except BlockingIOError:
                pass

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT,
                                                                   signal.SIGTERM)}
        stopper = threading.Thread(target=self._stop_then_wake, name="orchestrator-stop",
                                   args=(stop_timeout, write_end))
        self._forever_wake = write_end
        try:
            self.start()
            while True:
                signum = os.read(read_end, 1)[0]
                if signum == 0:  # the stopper has finished
                    break
                name = signal.Signals(signum).name
                if not stopper.is_alive() and stopper.ident is None:
                    logger.info("{} received: stopping (send it again to kill running runs)",
                                name)
                    stopper.start()
                else:
                    logger.info("{} received again: killing running runs", name)
                    self._kill_now = True
                    self._dispatcher.post(self._dispatcher.kill_running, Outcome.CANCELLED,
                                          True)
            stopper.join()
        finally:
            self._forever_wake = None
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(read_end)
            os.close(write_end)

    def _stop_then_wake(self, timeout: float, wake_fd: int) -> None:
        try:
            self.stop(timeout)
        finally:
            os.write(wake_fd, b"\0")

    def __enter__(self) -> "WorkerOrchestrator":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- steering -------------------------------------------------------------------------

    def trigger_worker(self, name: str, wait: bool = False,
                       timeout: float | None = None) -> bool:
        """Make a run of ``name`` due now (it still waits for its dependencies, exclusions and
        a free slot).

        A worker that is running gets one run queued behind the current one.

        :param wait: block until that run has ended.
        :param timeout: with ``wait``, the most seconds to block.
        :returns: without ``wait``, whether a run was made due (False for a disabled
            worker); with ``wait``, whether the run succeeded.
        :raises UnknownWorkerError: if no worker has that name.
        :raises NotRunningError: ``wait=True`` before :meth:`start`.
        :raises TimeoutError: if ``timeout`` passed first.
        """
        if wait and self._dispatcher.state != "running":
            raise NotRunningError(f"worker {name!r}: trigger_worker(wait=True) needs a "
                                  f"running orchestrator; call start() first")
        if wait and self._dispatcher.on_dispatcher_thread():
            raise OrchestratorError(f"worker {name!r}: trigger_worker(wait=True) was called "
                                    f"from a listener, which runs on the dispatcher thread "
                                    f"the run needs; use wait=False there")
        waiter = self._dispatcher.call(self._dispatcher.trigger, name)
        if waiter is None:
            logger.info("trigger {}: not triggered, the worker is disabled or the "
                        "orchestrator is stopping", name)
            return False
        if not wait:
            return True
        record: RunRecord = waiter.result(timeout)
        return record.outcome is Outcome.SUCCEEDED

    def run_worker(self, name: str, timeout: float | None = None) -> RunRecord:
        """Make a run of ``name`` due now, wait until it has ended, and return its record
        (``trigger_worker(wait=True)`` with the whole answer).

        :raises UnknownWorkerError: if no worker has that name.
        :raises NotRunningError: before :meth:`start`, for a disabled worker, or while the
            orchestrator stops.
        :raises TimeoutError: if ``timeout`` passed first.
        """
        if self._dispatcher.state != "running":
            raise NotRunningError(f"worker {name!r}: run_worker() needs a running "
                                  f"orchestrator; call start() first")
        if self._dispatcher.on_dispatcher_thread():
            raise OrchestratorError(f"worker {name!r}: run_worker() was called from a "
                                    f"listener, on the dispatcher thread the run needs")
        waiter = self._dispatcher.call(self._dispatcher.trigger, name)
        if waiter is None:
            raise NotRunningError(f"worker {name!r} is disabled (or the orchestrator is "
                                  f"stopping); enable it first")
        return waiter.result(timeout)

    def output(self, run_id: str, stdout_from: int = 0, stderr_from: int = 0) -> dict:
        """What run ``run_id`` wrote to stdout and stderr after those byte offsets: live
        while it runs (the last 64 KiB are kept), else from its record.

        :returns: ``{"run_id", "worker", "running", "stdout", "stderr", "stdout_offset",
            "stderr_offset"}``; ask again from the offsets for what follows.
        :raises UnknownWorkerError: if no run has that id.
        """
        for view in self._dispatcher.snapshot.workers.values():
            run = view.running
            if run is None or run.run_id != run_id or run.future is None:
                continue
            answer = self._executor.output(run.future, stdout_from, stderr_from)
            live = answer.result(5) if answer is not None else None
            if live is not None:
                return {"run_id": run_id, "worker": view.name, "running": True,
                        "stdout": live.stdout, "stderr": live.stderr,
                        "stdout_offset": live.stdout_offset,
                        "stderr_offset": live.stderr_offset}
            break  # it ended meanwhile: its record says the rest
        record = self._dispatcher.store.find(run_id)
        if record is None:
            raise UnknownWorkerError(f"no run {run_id!r} (it may be older than the history "
                                     f"kept)")
        out, err = _after(record.stdout_tail, record.stdout_bytes, stdout_from), \
            _after(record.stderr_tail, record.stderr_bytes, stderr_from)
        return {"run_id": run_id, "worker": record.worker, "running": record.ended_at is None,
                "stdout": out, "stderr": err,
                "stdout_offset": record.stdout_bytes or len(record.stdout_tail.encode()),
                "stderr_offset": record.stderr_bytes or len(record.stderr_tail.encode())}

    def enable_worker(self, name: str) -> None:
        """Enable ``name`` and reset its consecutive failures."""
        self._dispatcher.call(self._dispatcher.enable, name)

    def disable_worker(self, name: str, stop: bool = False) -> None:
        """Disable ``name``: its pending run is dropped; a run in progress finishes, or is
        killed (recorded ``cancelled``) when ``stop`` is true.
        """
        self._dispatcher.call(self._dispatcher.disable, name, stop)

    # -- reading --------------------------------------------------------------------------

    def get_status(self) -> dict:
        """What runs, what waits and why; see the user guide's "Status" page. Read from the
        newest state the dispatcher published, on the caller's thread: it never waits for a
        run or a step, and never delays one. The dict and its lists are the caller's; each worker's
        dict is shared with other callers until it changes: read it, do not change it."""
        return self._status.copy()

    def get_worker(self, name: str) -> WorkerConfig:
        """A read-only snapshot of ``name``'s configuration and runtime fields."""
        view = self._view(name)
        return dataclasses.replace(
            view.config, is_enabled=view.enabled, is_running=view.running is not None,
            consecutive_failures=view.consecutive_failures, last_run=view.last_run,
            last_success=view.last_success, last_error=view.last_error)

    def _view(self, name: str):
        check_name(name)
        workers = self._dispatcher.snapshot.workers
        view = workers.get(name)
        if view is None:
            raise UnknownWorkerError(f"no worker named {name!r}{suggest(name, workers)}",
                                     worker=name)
        return view

    def history(self, worker: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Run records, newest first; all workers when ``worker`` is None. Read on the
        caller's thread (a connection of its own to the state file)."""
        if worker is not None:
            check_name(worker)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"history: limit must be a whole number of at least 1, got "
                              f"{limit!r}", field="limit")
        records = self._dispatcher.store.recent(worker, limit)
        if worker is not None and not records:
            self._view(worker)  # unknown, and not in the state file either: say so
        return records

    def plan(self, start: datetime | None = None, hours: float = 24.0, *,
             limit: int = DEFAULT_PLAN_LIMIT, worker: str | None = None) -> Plan:
        """Due times of scheduled workers in ``[start, start + hours)``, in time order, at
        most ``limit`` of them (the result's ``cut`` says whether more fell in the window).

        Computed by the same code that schedules, on the caller's thread. A naive ``start``
        is read as local time of the orchestrator's zone; interval workers not yet started
        are anchored at ``start``. ``worker`` keeps one worker's due times only.
        """
        zone = self._dispatcher.default_timezone
        if start is None:
            start = self._dispatcher.clock.now()
        elif not isinstance(start, datetime):
            raise ConfigError(f"plan: start must be a datetime, got {start!r}", field="start")
        elif start.tzinfo is None:
            start = start.replace(tzinfo=zone)
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) \
                or not 0 < hours <= MAX_PLAN_HOURS:
            raise ConfigError(f"plan: hours must be a positive number up to {MAX_PLAN_HOURS} "
                              f"(ten years), got {hours!r}", field="hours")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= \
                MAX_PLAN_LIMIT:
            raise ConfigError(f"plan: limit must be a whole number from 1 to {MAX_PLAN_LIMIT}, "
                              f"got {limit!r}", field="limit")
        snapshot = self._dispatcher.snapshot
        if worker is not None:
            self._view(worker)
        self._check_known(snapshot)
        try:
            end = start + timedelta(hours=hours)
            return plan_due_times(snapshot.workers.values(), zone,
                                  start.astimezone(dt_timezone.utc),
                                  end.astimezone(dt_timezone.utc), limit, worker)
        except OverflowError:
            raise ConfigError(f"plan: the window from {start.isoformat()} for {hours} hours "
                              f"goes past the year 9999; choose an earlier start",
                              field="start") from None

    def _check_known(self, snapshot) -> None:
        """A plan of workers that name unregistered ones would not be what runs."""
        for view in snapshot.workers.values():
            for field in ("depends_on", "blocks"):
                for other in getattr(view.config, field):
                    if other not in snapshot.workers:
                        raise UnknownWorkerError(
                            f"worker {view.name!r}: {field} names {other!r}, which is not "
                            f"registered; register it or remove it from {field}",
                            worker=view.name, field=field)

    def add_listener(self, callback: Callable[[RunEvent], Any]) -> None:
        """Call ``callback(event)`` for every run event; its errors are logged and ignored."""
        self._events.add_listener(callback)

    def remove_listener(self, callback: Callable[[RunEvent], Any]) -> None:
        """Stop calling ``callback``.

        :raises ValueError: if it was not added.
        """
        self._events.remove_listener(callback)


def _after(tail: str, total: int | None, offset: int) -> str:
    """The part of a run's kept tail after byte ``offset`` of its whole output."""
    data = tail.encode()
    total = len(data) if total is None else total
    return data[max(0, offset - (total - len(data))):].decode("utf-8", "replace")


def parse_http(value) -> tuple[str, int] | None:
    """``"host:port"`` -> ``(host, port)``; ``None``/``False`` -> ``None``."""
    if value is None or value is False:
        return None
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"orchestrator: http must be 'host:port' like '127.0.0.1:8765' "
                          f"(port 0 for any free port), got {value!r}", field="http")
    return host, int(port)
