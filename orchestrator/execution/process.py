"""Run every attempt in a fresh OS process started with ``subprocess.Popen``.

::

    caller thread                           executor thread (owns every running attempt)
    -------------                           ---------------------------------------------
    submit_run(spec)
      pickle the call (functions)
      Popen(argv, process_group=0)
        argv = [python, _child.py, fds]     selector over
            or the command                    the wake-up pipe
      pidfd_open(pid)                         and per attempt: pidfd, stdout, stderr,
      ("start", attempt) --queue+wake-->        result pipe, payload pipe, leftover pidfds
    RunFuture.kill, kill_all,                 timeout = nearest deadline (timeout,
      shutdown ------------queue+wake-->        SIGKILL escalation, memory sample)
                                            pipe readable   -> keep the last 64 KiB
                                            deadline        -> _kill(): TERM, grace, KILL
                                            pidfd readable  -> wait4 (CPU, peak RSS),
                                                               drain pipes, kill leftovers,
                                                               wait for them to exit,
                                                               future.set_result(...)

The orchestrator has threads, so it never calls ``os.fork()`` itself: ``Popen`` forks and
execs in one step. Function attempts run ``_child.py`` by path (see its docstring for the
payload and result format); it does not import this package.

Each attempt's processes carry ``ORCHESTRATOR_RUN_TOKEN`` in their environment. Together with
the process group and the live descendants of the attempt's process, it finds what a run left
behind, including a daemon that called ``setsid`` and double-forked. A process that clears its
environment and leaves the group escapes; only cgroups would catch it.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import itertools
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import queue
import secrets
import selectors
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from datetime import datetime, timezone

import psutil
from loguru import logger

from ..runs import Outcome
from .base import AttemptResult, RunExecutor, RunFuture, RunSpec

__all__ = ["ProcessExecutor"]

TAIL_BYTES = 64 * 1024
"""How much of the end of stdout and of stderr an attempt keeps."""

MEMORY_SAMPLE_SECONDS = 0.5
"""How often the process tree of an attempt with a memory limit is measured."""

LEFTOVER_WAIT_SECONDS = 5.0
"""How long to wait for SIGKILLed leftovers to exit before completing the attempt anyway."""

RUN_TOKEN_VARIABLE = "ORCHESTRATOR_RUN_TOKEN"
"""Environment variable that marks every process of one attempt."""

_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
_READ_SIZE = 64 * 1024
_DRAIN_LIMIT = 1024 * 1024  # after exit, read at most this much: a grandchild may keep writing
_FRAME_HEADER = struct.Struct(">Q")
_MIB = 1024 * 1024


class ProcessExecutor(RunExecutor):
    """Runs each attempt in a new process, in a new process group, watched by one thread.

    Attempts start at once, with no limit on how many run together (admission is the
    dispatcher's job). The result of every future is an :class:`AttemptResult`; nothing a run
    does makes :meth:`submit_run` raise, except submitting after :meth:`shutdown`.

    :raises RuntimeError: from :meth:`submit_run` after :meth:`shutdown`.
    """

    def __init__(self) -> None:
        # Guards the fields below, and is held across Popen so that no attempt can start
        # after the executor thread has decided to end.
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: str | None = None  # why the executor thread failed, if it did
        self._closed = False  # the executor thread has ended (or never will take commands)
        self._thread: threading.Thread | None = None  # started by the first submit_run
        self._wake_read = self._wake_write = -1
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._token_prefix = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._serials = itertools.count(1)
        # Owned by the executor thread once it runs:
        self._selector: selectors.BaseSelector | None = None
        self._attempts: dict[RunFuture, _Attempt] = {}
        self._stopping = False

    # -- public ----------------------------------------------------------------------------

    def submit_run(self, spec: RunSpec) -> RunFuture:
        """Start one attempt now and return its future.

        A run that cannot start (a command not found, a bad ``cwd``, a function or argument
        that cannot be pickled) completes its future at once with ``FAILED``.

        :raises RuntimeError: after :meth:`shutdown`.
        """
        future = RunFuture(spec, self._request_kill)
        future.set_running_or_notify_cancel()  # only kill() can stop it from here on
        self._refuse_if_shut_down()
        failed: AttemptResult | None = None
        try:
            launch = _Launch.build(spec, f"{self._token_prefix}-{next(self._serials)}")
        except _CannotStart as exc:
            failed = _not_started(str(exc))
        else:
            with self._lock:
                self._refuse_if_shut_down()
                attempt = launch.start(future)
                if isinstance(attempt, AttemptResult):
                    failed = attempt
                else:
                    self._start_thread()
                    self._post(("start", attempt))
        if failed is not None:
            future.set_result(failed)
        return future

    def kill_all(self, outcome: Outcome = Outcome.CANCELLED) -> None:
        """Kill every attempt in progress (TERM, grace, KILL); each completes with ``outcome``.

        Returns at once; the futures complete when the processes are gone.
        """
        with self._lock:
            self._post(("kill_all", Outcome(outcome)))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no new attempts; optionally kill those in progress and wait for the end.

        :param wait: return only when every attempt's processes are gone and the executor
            thread has ended.
        :param cancel_futures: kill every attempt in progress; each completes ``CANCELLED``.
        """
        with self._lock:
            self._shutdown = True
            self._post(("shutdown", cancel_futures))
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- commands from other threads (hold self._lock) -----------------------------------------

    def _refuse_if_shut_down(self) -> None:
        if self._broken is not None:
            raise RuntimeError(f"this ProcessExecutor failed ({self._broken}); "
                               f"create a new one")
        if self._shutdown:
            raise RuntimeError("cannot submit a run to a ProcessExecutor after shutdown()")

    def _start_thread(self) -> None:
        if self._thread is None:
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._wake_read, selectors.EVENT_READ, self._on_wake)
            self._thread = threading.Thread(target=self._run, name="process-executor",
                                            daemon=True)
            self._thread.start()
            _live_executors.add(self)

    def _post(self, command: tuple) -> None:
        if self._thread is None or self._closed:
            return  # nothing runs, so there is nothing to kill or stop
        self._commands.put(command)
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _request_kill(self, future: RunFuture, outcome: Outcome, immediately: bool) -> None:
        with self._lock:
            self._post(("kill", future, outcome, immediately))

    def _close_wake_pipe(self) -> None:
        os.close(self._wake_read)
        os.close(self._wake_write)

    # -- the executor thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                events = self._selector.select(self._seconds_to_next_deadline())
                for key, _mask in events:
                    # A handler earlier in this batch may have closed (and reused) the fd.
                    if self._selector.get_map().get(key.fd) is key:
                        key.data()
                self._handle_deadlines(time.monotonic())
                if self._stopping and not self._attempts:
                    with self._lock:
                        if self._commands.empty():
                            self._closed = True
                            break
        except BaseException as exc:
            logger.exception("the process executor thread failed; killing its attempts")
            with self._lock:  # from now on submit_run refuses, and nothing more is queued
                self._closed = True
                self._shutdown = True
                self._broken = repr(exc)
            self._abandon(exc)
        finally:
            self._selector.close()
            with self._lock:
                self._closed = True
                self._close_wake_pipe()

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            kind = command[0]
            if kind == "start":
                self._adopt(command[1])
            elif kind == "kill":
                attempt = self._attempts.get(command[1])
                if attempt is not None:
                    self._kill(attempt, command[2], f"killed ({command[2].value})", command[3])
            elif kind == "kill_all":
                for attempt in list(self._attempts.values()):
                    self._kill(attempt, command[1], f"killed ({command[1].value})")
            elif kind == "shutdown":
                self._stopping = True
                if command[1]:
                    for attempt in list(self._attempts.values()):
                        self._kill(attempt, Outcome.CANCELLED, "executor shut down")

    def _adopt(self, attempt: _Attempt) -> None:
        self._attempts[attempt.future] = attempt
        register = self._selector.register
        register(attempt.pidfd, selectors.EVENT_READ, lambda: self._on_exit(attempt))
        for pipe in attempt.pipes:
            register(pipe.fd, selectors.EVENT_READ, lambda p=pipe: self._on_readable(attempt, p))
        if attempt.payload:
            register(attempt.payload_fd, selectors.EVENT_WRITE,
                     lambda: self._on_payload_writable(attempt))

    def _seconds_to_next_deadline(self) -> float | None:
        deadlines = [d for attempt in self._attempts.values() for d in attempt.deadlines()]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _handle_deadlines(self, now: float) -> None:
        for attempt in list(self._attempts.values()):
            if attempt.reaped:
                if now >= attempt.leftover_deadline:
                    logger.warning("run {} of {}: leftover processes {} did not exit within "
                                   "{}s of SIGKILL", attempt.spec.run_id, attempt.spec.worker,
                                   sorted(attempt.tree), LEFTOVER_WAIT_SECONDS)
                    self._complete(attempt)
            elif attempt.sigkill_at is not None and now >= attempt.sigkill_at:
                attempt.sigkill_at = None
                self._signal_tree(attempt, signal.SIGKILL)
            elif attempt.kill_outcome is not None:
                continue
            elif attempt.timeout_at is not None and now >= attempt.timeout_at:
                self._kill(attempt, Outcome.TIMED_OUT,
                           f"timed out after {_plain(attempt.spec.timeout_seconds)}s")
            elif attempt.sample_at is not None and now >= attempt.sample_at:
                attempt.sample_at = now + MEMORY_SAMPLE_SECONDS
                self._check_memory(attempt)

    # -- killing ---------------------------------------------------------------------------

    def _kill(self, attempt: _Attempt, outcome: Outcome, error: str,
              immediately: bool = False) -> None:
        """End an attempt for any cause: SIGTERM to its tree, SIGKILL after the grace
        (at once with ``immediately``, which also cuts short a grace already running).

        The first cause wins; the escalation to SIGKILL happens in :meth:`_handle_deadlines`
        and, for whatever outlives the attempt's own process, in :meth:`_on_exit`.
        """
        if attempt.reaped:
            return
        if attempt.kill_outcome is not None:
            if immediately and attempt.sigkill_at is not None:
                attempt.sigkill_at = None
                self._signal_tree(attempt, signal.SIGKILL)
            return
        attempt.kill_outcome, attempt.kill_error = outcome, error
        grace = 0 if immediately else attempt.spec.kill_grace_seconds
        if grace > 0:
            self._signal_tree(attempt, signal.SIGTERM)
            attempt.sigkill_at = time.monotonic() + grace
        else:
            self._signal_tree(attempt, signal.SIGKILL)

    def _signal_tree(self, attempt: _Attempt, sig: int) -> None:
        """Send ``sig`` to the attempt's process, its process group and every process of it
        found now (descendants, and processes carrying its token that left the group)."""
        self._find_tree(attempt)
        if not attempt.reaped:
            try:
                signal.pidfd_send_signal(attempt.pidfd, sig)
            except ProcessLookupError:
                pass
        try:
            # The group id stays reserved while any member lives; we only call this before
            # or right after reaping the leader, so it cannot name someone else's group.
            os.killpg(attempt.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pidfd in attempt.tree.values():
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                pass

    def _find_tree(self, attempt: _Attempt) -> None:
        """Add the attempt's other live processes to ``attempt.tree`` (pid -> pidfd)."""
        root = None if attempt.reaped else attempt.pid
        for process in _processes_of_run(root, attempt.token, attempt.started_epoch).values():
            if process.pid in attempt.tree:
                continue
            try:
                pidfd = os.pidfd_open(process.pid)
            except ProcessLookupError:
                continue
            if process.is_running():  # still the process we found, not a reused pid
                attempt.tree[process.pid] = pidfd
            else:
                os.close(pidfd)

    def _check_memory(self, attempt: _Attempt) -> None:
        try:
            root = psutil.Process(attempt.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for process in processes:
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                pass
        limit_mb = attempt.spec.memory_limit_mb
        if rss > limit_mb * _MIB:
            self._kill(attempt, Outcome.MEMORY_EXCEEDED,
                       f"memory limit {_plain(limit_mb)} MB exceeded (rss {rss / _MIB:.0f} MB)")

    # -- pipes and exit ----------------------------------------------------------------------

    def _on_readable(self, attempt: _Attempt, pipe: _Pipe) -> None:
        try:
            chunk = os.read(pipe.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            pipe.add(chunk)
        else:
            self._close_pipe(pipe)

    def _on_payload_writable(self, attempt: _Attempt) -> None:
        try:
            written = os.write(attempt.payload_fd, attempt.payload[:_READ_SIZE])
        except BlockingIOError:
            return
        except OSError:  # the child died before reading it all; its exit tells the rest
            written = len(attempt.payload)
        attempt.payload = attempt.payload[written:]
        if not attempt.payload:
            self._selector.unregister(attempt.payload_fd)
            os.close(attempt.payload_fd)
            attempt.payload_fd = None

    def _close_pipe(self, pipe: _Pipe) -> None:
        if not pipe.closed:
            self._selector.unregister(pipe.fd)
            pipe.close()

    def _on_exit(self, attempt: _Attempt) -> None:
        """The attempt's process ended: reap it, collect its output, clear what it left."""
        self._selector.unregister(attempt.pidfd)
        try:
            _, attempt.status, rusage = os.wait4(attempt.pid, 0)
        except ChildProcessError:  # reaped by someone else; its status is lost
            attempt.status = None
            attempt.process.returncode = -1
        else:
            attempt.cpu_seconds = rusage.ru_utime + rusage.ru_stime
            attempt.peak_rss_bytes = rusage.ru_maxrss * 1024
            attempt.process.returncode = os.waitstatus_to_exitcode(attempt.status)
        # From here on the pid may belong to someone else (Popen, told the returncode above,
        # will never wait on it either).
        attempt.reaped = True
        attempt.leftover_deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        attempt.sigkill_at = None
        attempt.ended_at = datetime.now(timezone.utc)
        os.close(attempt.pidfd)
        attempt.pidfd = None
        for pipe in attempt.pipes:
            if not pipe.closed:
                pipe.drain()
                self._close_pipe(pipe)
        if attempt.payload_fd is not None:
            self._selector.unregister(attempt.payload_fd)
            os.close(attempt.payload_fd)
            attempt.payload_fd = None
        if attempt.kill_outcome is not None or attempt.spec.kill_leftovers:
            self._signal_tree(attempt, signal.SIGKILL)
        for pid, pidfd in list(attempt.tree.items()):
            self._selector.register(pidfd, selectors.EVENT_READ,
                                    lambda pid=pid: self._on_leftover_exit(attempt, pid))
        if not attempt.tree:
            self._complete(attempt)

    def _on_leftover_exit(self, attempt: _Attempt, pid: int) -> None:
        pidfd = attempt.tree.pop(pid)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        if not attempt.tree:
            self._complete(attempt)

    def _complete(self, attempt: _Attempt) -> None:
        del self._attempts[attempt.future]
        for pidfd in attempt.tree.values():
            self._selector.unregister(pidfd)
            os.close(pidfd)
        attempt.tree.clear()
        result = attempt.result()
        attempt.future.set_result(result)  # callbacks run here, with no lock held

    def _abandon(self, exc: BaseException) -> None:
        """Last resort when the loop itself failed: kill, reap and complete everything."""
        attempts = list(self._attempts.values())
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            if command[0] == "start":
                attempts.append(command[1])
        for attempt in attempts:
            if not attempt.reaped:
                try:
                    self._signal_tree(attempt, signal.SIGKILL)
                except Exception:
                    logger.exception("could not kill the processes of run {}",
                                     attempt.spec.run_id)
                try:
                    os.wait4(attempt.pid, 0)
                except ChildProcessError:
                    pass
                attempt.process.returncode = -signal.SIGKILL
                attempt.kill_outcome = Outcome.CRASHED
                attempt.kill_error = f"the process executor failed: {exc!r}"
                attempt.ended_at = datetime.now(timezone.utc)
            for fd in [attempt.pidfd, attempt.payload_fd, *attempt.tree.values()]:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            for pipe in attempt.pipes:
                pipe.close()
            if not attempt.future.done():
                attempt.future.set_result(attempt.result())
        self._attempts.clear()


@dataclasses.dataclass
class _Launch:
    """What to Popen for one spec; built (and pickled) before any process exists."""

    spec: RunSpec
    token: str
    argv: list[str]
    env: dict[str, str]
    payload: bytes | None

    @classmethod
    def build(cls, spec: RunSpec, token: str) -> "_Launch":
        """:raises _CannotStart: for a malformed spec, or a call that cannot be pickled."""
        env = dict(os.environ)
        env.update(spec.env or {})
        env[RUN_TOKEN_VARIABLE] = token
        if (spec.function is None) == (spec.command is None):
            raise _CannotStart("the run spec must set exactly one of function and command")
        if spec.function is not None:
            return cls(spec, token, [sys.executable, _CHILD_SCRIPT], env, _pickle_call(spec))
        command = spec.command
        if spec.shell:
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else \
                ["/bin/sh", "-c", *command]
        elif isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise _CannotStart(f"cannot split command {command!r}: {exc}") from None
        else:
            argv = list(command)
        if not argv:
            raise _CannotStart("the command is empty")
        return cls(spec, token, argv, env, None)

    def start(self, future: RunFuture) -> "_Attempt | AttemptResult":
        """Popen the attempt; a failed start comes back as a FAILED result."""
        spec = self.spec
        pass_fds: tuple[int, ...] = ()
        parent_fds: list[int] = []
        argv = self.argv
        started_at = datetime.now(timezone.utc)
        try:
            if self.payload is not None:
                payload_read, payload_write = os.pipe()
                parent_fds.append(payload_write)
                pass_fds = (payload_read,)
                result_read, result_write = os.pipe()
                parent_fds.append(result_read)
                pass_fds = (payload_read, result_write)
                argv = [*argv, str(payload_read), str(result_write)]
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, cwd=spec.cwd, env=self.env,
                                       pass_fds=pass_fds, process_group=0)
        except Exception as exc:  # not found, not executable, bad cwd, bad argument
            for fd in parent_fds:
                os.close(fd)
            return _not_started(_start_error(self.argv[0], spec.cwd, exc), started_at)
        finally:
            for fd in pass_fds:
                os.close(fd)
        started = time.monotonic()
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError as exc:  # out of fds: we cannot watch it, so it must not run
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            process.stdout.close()
            process.stderr.close()
            for fd in parent_fds:
                os.close(fd)
            return _not_started(f"cannot watch {self.argv[0]!r}: {exc}", started_at)
        future.pid = process.pid
        future.started.set()
        attempt = _Attempt(future, spec, process, pidfd, self.token, started_at, started)
        if self.payload is not None:
            attempt.payload_fd = parent_fds[0]
            attempt.pipes.append(_Pipe(parent_fds[1], None, limit=None))
            os.set_blocking(attempt.payload_fd, False)
            attempt.payload = memoryview(self.payload)
            try:  # usually it all fits in the pipe now; the executor thread writes the rest
                attempt.payload = attempt.payload[os.write(attempt.payload_fd,
                                                           attempt.payload):]
            except BlockingIOError:
                pass
            except OSError:  # the child is already gone; its exit tells why
                attempt.payload = attempt.payload[:0]
            if not attempt.payload:
                os.close(attempt.payload_fd)
                attempt.payload_fd = None
        return attempt


class _Attempt:
    """One attempt in progress. Built by ``submit_run``; owned by the executor thread after
    the "start" command hands it over."""

    def __init__(self, future: RunFuture, spec: RunSpec, process: subprocess.Popen, pidfd: int,
                 token: str, started_at: datetime, started: float):
        self.future = future
        self.spec = spec
        self.process = process
        self.pid = process.pid
        self.pidfd: int | None = pidfd  # None once closed, after the reap
        self.token = token
        self.started_at = started_at
        self.started_epoch = started_at.timestamp()
        self.pipes = [_Pipe(process.stdout.fileno(), process.stdout, TAIL_BYTES),
                      _Pipe(process.stderr.fileno(), process.stderr, TAIL_BYTES)]
        self.payload_fd: int | None = None
        self.payload: memoryview | None = None
        self.timeout_at = None if spec.timeout_seconds is None else started + spec.timeout_seconds
        self.sample_at = None if spec.memory_limit_mb is None else started + MEMORY_SAMPLE_SECONDS
        self.kill_outcome: Outcome | None = None
        self.kill_error: str | None = None
        self.sigkill_at: float | None = None
        self.tree: dict[int, int] = {}  # other processes of the run: pid -> pidfd
        self.reaped = False
        self.leftover_deadline = 0.0
        self.status: int | None = None
        self.cpu_seconds: float | None = None
        self.peak_rss_bytes: int | None = None
        self.ended_at: datetime | None = None

    def deadlines(self) -> list[float]:
        if self.reaped:
            return [self.leftover_deadline]
        if self.sigkill_at is not None:
            return [self.sigkill_at]
        if self.kill_outcome is not None:
            return []
        return [t for t in (self.timeout_at, self.sample_at) if t is not None]

    def result(self) -> AttemptResult:
        exit_code = signal_number = None
        if self.status is not None:
            if os.WIFSIGNALED(self.status):
                signal_number = os.WTERMSIG(self.status)
            else:
                exit_code = os.waitstatus_to_exitcode(self.status)
        stdout, stderr = self.pipes[0], self.pipes[1]
        outcome, error, trace, value = self._outcome(exit_code, signal_number)
        return AttemptResult(
            outcome=outcome, started_at=self.started_at,
            ended_at=self.ended_at or datetime.now(timezone.utc), pid=self.pid, result=value,
            error=error, traceback=trace, exit_code=exit_code, signal=signal_number,
            cpu_seconds=self.cpu_seconds, peak_rss_bytes=self.peak_rss_bytes,
            stdout_tail=stdout.text(), stderr_tail=stderr.text())

    def _outcome(self, exit_code, signal_number):
        """(outcome, error, traceback, value) from how the process ended and what it said."""
        if self.kill_outcome is not None:
            return self.kill_outcome, self.kill_error, None, None
        message = self._message() if self.spec.function is not None else None
        if message is not None:
            return message
        if self.status is None:
            return Outcome.CRASHED, "exit status lost: the process was reaped elsewhere", \
                None, None
        if signal_number is not None:
            return Outcome.CRASHED, f"killed by {_signal_name(signal_number)}", None, None
        if self.spec.function is not None:
            return Outcome.CRASHED, f"exited with code {exit_code} without a result", None, None
        if exit_code == 0:
            return Outcome.SUCCEEDED, None, None, None
        return Outcome.FAILED, f"exit code {exit_code}", None, None

    def _message(self):
        data = self.pipes[2].data
        if len(data) < _FRAME_HEADER.size:
            return None
        (size,) = _FRAME_HEADER.unpack_from(data)
        if len(data) < _FRAME_HEADER.size + size:
            return None
        try:
            message = pickle.loads(data[_FRAME_HEADER.size:_FRAME_HEADER.size + size])
            kind = message[0]
        except Exception as exc:
            return Outcome.FAILED, f"malformed result from the child: {exc!r}", None, None
        if kind == "failed":
            return Outcome.FAILED, message[1], message[2], None
        type_name, pickled = message[1], message[2]
        try:
            return Outcome.SUCCEEDED, None, None, pickle.loads(pickled)
        except Exception as exc:
            return (Outcome.FAILED, f"result of type {type_name!r} cannot be unpickled: "
                    f"{type(exc).__name__}: {exc}", None, None)


class _Pipe:
    """The parent's end of one pipe from the child, and what came through it.

    ``limit`` keeps only the last so many bytes (stdout, stderr); ``None`` keeps everything
    (the result pipe).
    """

    def __init__(self, fd: int, file, limit: int | None):
        self.fd = fd
        self.file = file
        self.limit = limit
        self.data = bytearray()
        self.closed = False
        os.set_blocking(fd, False)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if self.limit is not None and len(self.data) > self.limit:
            del self.data[:-self.limit]

    def drain(self) -> None:
        """Read what is buffered now, without waiting for an EOF that may never come."""
        taken = 0
        while taken < _DRAIN_LIMIT:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.add(chunk)
            taken += len(chunk)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.file is not None:
                self.file.close()
            else:
                os.close(self.fd)


class _CannotStart(Exception):
    """The spec cannot become a process; the attempt fails without one."""


def _pickle_call(spec: RunSpec) -> bytes:
    chosen = multiprocessing.get_start_method(allow_none=True)
    data = multiprocessing.spawn.get_preparation_data(spec.worker)
    if chosen is None:
        # get_preparation_data fixed the start method of this process as a side effect;
        # undo it, and let the child use its own default.
        multiprocessing.set_start_method(None, force=True)
        del data["start_method"]
    data["authkey"] = bytes(data["authkey"])
    if spec.cwd is not None:
        data["dir"] = os.path.abspath(spec.cwd)
    try:
        call = pickle.dumps((spec.function, spec.pass_argument, spec.argument),
                            pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise _CannotStart(f"cannot pickle the function or its argument: "
                           f"{type(exc).__name__}: {exc}") from None
    return pickle.dumps((data, call), pickle.HIGHEST_PROTOCOL)


def _processes_of_run(root: int | None, token: str, since: float) -> dict[int, psutil.Process]:
    """Live descendants of ``root`` and processes carrying ``token``, in one pass over /proc.

    Only processes created after ``since`` (epoch seconds) can carry the token; the margin
    covers psutil's create times, which rest on a boot time rounded to the second.
    """
    children: dict[int, list[psutil.Process]] = collections.defaultdict(list)
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        info = process.info
        if info["ppid"] is not None:
            children[info["ppid"]].append(process)
        created = info["create_time"]
        if created is None or created < since - 1.5 or process.pid == root:
            continue
        try:
            if process.environ().get(RUN_TOKEN_VARIABLE) == token:
                found[process.pid] = process
        except psutil.Error:
            pass
    if root is not None:
        stack = [root]
        while stack:
            for child in children.pop(stack.pop(), ()):
                found[child.pid] = child
                stack.append(child.pid)
    return found


def _not_started(error: str, at: datetime | None = None) -> AttemptResult:
    at = at or datetime.now(timezone.utc)
    return AttemptResult(outcome=Outcome.FAILED, started_at=at,
                         ended_at=datetime.now(timezone.utc), error=error)


def _start_error(program: str, cwd: str | None, exc: Exception) -> str:
    if isinstance(exc, OSError):
        detail = f"[Errno {exc.errno}] {exc.strerror}"
        if cwd is not None and exc.filename == cwd:
            detail = f"working directory {cwd!r}: {detail}"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return f"cannot start {program!r}: {detail}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _plain(number: float) -> str:
    """``5`` for 5.0, ``0.5`` for 0.5: numbers as a person would write them."""
    return f"{number:f}".rstrip("0").rstrip(".")


# Executors whose thread runs; at interpreter exit their attempts are killed, so that no
# run outlives the orchestrator that started it.
_live_executors: "weakref.WeakSet[ProcessExecutor]" = weakref.WeakSet()


@atexit.register
def _kill_attempts_at_exit() -> None:
    for executor in list(_live_executors):
        executor.shutdown(wait=True, cancel_futures=True)
