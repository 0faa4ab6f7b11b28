"""Run every attempt in a fresh OS process, forked by a small launcher process.

::

    caller threads                      reader thread (one per launcher)   launcher process
    --------------                      --------------------------------   ----------------
    submit_run(spec)
      pickle the call or command
      ("run", ...) ----------------------------- socket ----------------->  hand the job to
      wait for the start                                                    the spare process
                                         <-- ("started" | "start_failed")   fork the next one
      future.pid, pid_create_time   <--  set the start
    RunFuture.kill, kill_all,
      shutdown ("kill", ...) ---------------------------------------------> TERM, grace, KILL
                                         <-- ("usage", ...)  future.usage = Usage(...)
                                         <-- ("finished", ...)
                                             build the AttemptResult,
                                             future.set_result(...)
                                         EOF: the launcher died:
                                             kill what is left of its runs,
                                             complete them CRASHED; the next
                                             submit_run starts a new launcher

The orchestrator has threads, so it never forks: the launcher (``_launcher.py``, run by path,
without importing this package) is started with ``subprocess.Popen`` and does every fork,
wait and kill; see its docstring for the protocol and the process tree. This module keeps
the futures, turns what the launcher reports into :class:`AttemptResult` objects, and cleans
up after a launcher that died.
"""

from __future__ import annotations

import atexit
import io
import itertools
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import pwd
import secrets
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import types
import weakref
from datetime import datetime, timezone

import psutil
from loguru import logger

from ..config import WorkerConfig
from ..runs import Outcome
from .base import AttemptResult, RunExecutor, RunFuture, RunSpec, Usage

__all__ = ["ProcessExecutor", "TAIL_BYTES", "RUN_TOKEN_VARIABLE"]

TAIL_BYTES = 64 * 1024
"""How much of the end of stdout and of stderr an attempt keeps."""

RUN_TOKEN_VARIABLE = "ORCHESTRATOR_RUN_TOKEN"
"""Environment variable that marks every process of one attempt."""

START_WAIT_SECONDS = 60.0
"""How long ``submit_run`` waits for the launcher to start a run before giving it up for
hung: the launcher is then killed (its runs die with it) and replaced."""

LAUNCHER_EXIT_SECONDS = 15.0
"""How long a launcher that closed its socket may take to exit before it is SIGKILLed."""

_IMPORTING_VARIABLE = "ORCHESTRATOR_LAUNCHER_IMPORTING"  # set by the launcher; see there
_LAUNCHER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
_FRAME = struct.Struct(">Q")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessExecutor(RunExecutor):
    """Runs each attempt in a new process, in a new process group, forked by a launcher.

    Attempts start at once, with no limit on how many run together (admission is the
    dispatcher's job). The result of every future is an :class:`AttemptResult`; nothing a run
    does makes :meth:`submit_run` raise, except submitting after :meth:`shutdown`. If the
    launcher dies, its attempts complete ``CRASHED`` and the next submission starts a new one.

    :param sample_interval: seconds between two live samples of every running attempt's
        processes (``RunFuture.usage``, and the check of ``memory_limit_mb``).
    :raises RuntimeError: from :meth:`submit_run` after :meth:`shutdown`.
    """

    def __init__(self, *, sample_interval: float = 0.5) -> None:
        if sample_interval <= 0:
            raise ValueError(f"sample_interval must be > 0, got {sample_interval!r}")
        self.sample_interval = sample_interval
        # Guards every field below, and the ``runs`` of each launcher link. Sending to the
        # launcher happens under it, so that a kill never overtakes the run it names.
        self._lock = threading.Lock()
        self._shutdown = False
        self._link: _LauncherLink | None = None      # the launcher new runs go to
        self._links: list[_LauncherLink] = []        # every link whose thread may still run
        self._futures: dict[RunFuture, tuple[_LauncherLink, int]] = {}
        self._job_ids = itertools.count(1)
        self._token_prefix = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._base_env = dict(os.environ)  # every launcher of this executor starts with it

    # -- public ----------------------------------------------------------------------------

    @property
    def launcher_pid(self) -> int | None:
        """The pid of the launcher process now serving, if one runs."""
        link = self._link
        return None if link is None else link.process.pid

    def submit_run(self, spec: RunSpec) -> RunFuture:
        """Start one attempt now and return its future, once its process has started.

        A run that cannot start (a command not found, a bad ``cwd``, a function or argument
        that cannot be pickled) completes its future at once with ``FAILED``.

        :raises RuntimeError: after :meth:`shutdown`.
        """
        if os.environ.get(_IMPORTING_VARIABLE):
            raise RuntimeError(
                "a run was submitted while the launcher was importing the main script; "
                "start the orchestrator under  if __name__ == '__main__':  in that script")
        future = RunFuture(spec, self._request_kill)
        future.set_running_or_notify_cancel()  # only kill() can stop it from here on
        self._refuse_if_shut_down()
        job_id = next(self._job_ids)
        token = f"{self._token_prefix}-{job_id}"
        try:
            message = _run_message(spec, job_id, token, self._base_env)
        except _CannotStart as exc:
            future.set_result(_not_started(str(exc)))
            return future
        run = _Run(job_id, future, token)
        with self._lock:
            self._refuse_if_shut_down()
            link = self._link
            if link is None:
                link = self._link = _LauncherLink(self)
                self._links.append(link)
            link.runs[job_id] = run
            self._futures[future] = (link, job_id)
            link.send(message)
        if threading.current_thread() is not link.thread:  # else it cannot answer us now
            if not run.start_known.wait(START_WAIT_SECONDS):
                logger.error("launcher {} did not start run {} of {} within {}s; killing it",
                             link.process.pid, spec.run_id, spec.worker, START_WAIT_SECONDS)
                link.kill_launcher()
                run.start_known.wait()
        return future

    def kill_all(self, outcome: Outcome = Outcome.CANCELLED) -> None:
        """Kill every attempt in progress (TERM, grace, KILL); each completes with ``outcome``.

        Returns at once; the futures complete when the processes are gone.
        """
        outcome = Outcome(outcome)
        with self._lock:
            if self._link is not None:
                self._link.send(("kill_all", outcome.value, f"killed ({outcome.value})"))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no new attempts; optionally kill those in progress and wait for the end.

        :param wait: return only when every attempt's processes are gone and the launcher
            has exited.
        :param cancel_futures: kill every attempt in progress; each completes ``CANCELLED``.
        """
        with self._lock:
            self._shutdown = True
            link = self._link
            if link is not None:
                if cancel_futures:
                    link.send(("kill_all", Outcome.CANCELLED.value, "executor shut down"))
                if not link.runs:
                    link.close()
            links = list(self._links)
        if wait:
            for link in links:
                if link.thread is not threading.current_thread():
                    link.thread.join()

    # -- from any thread ---------------------------------------------------------------------

    def _refuse_if_shut_down(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot submit a run to a ProcessExecutor after shutdown()")

    def _request_kill(self, future: RunFuture, outcome: Outcome, immediately: bool) -> None:
        with self._lock:
            entry = self._futures.get(future)
            if entry is not None:
                link, job_id = entry
                link.send(("kill", job_id, outcome.value, f"killed ({outcome.value})",
                           immediately))

    # -- from a link's reader thread -----------------------------------------------------------

    def _on_message(self, link: "_LauncherLink", message: tuple) -> None:
        kind = message[0]
        if kind == "usage":
            for job_id, cpu, rss, peak, processes, at in message[1]:
                run = link.runs.get(job_id)
                if run is not None:
                    run.future.usage = Usage(cpu_seconds=cpu, rss_bytes=rss,
                                             peak_rss_bytes=peak, processes=processes,
                                             sampled_at=at)
        elif kind == "started":
            _, job_id, pid, start_ticks, started_epoch = message
            run = link.runs.get(job_id)
            if run is not None:
                run.started_at = datetime.fromtimestamp(started_epoch, timezone.utc)
                run.future.pid = pid
                if start_ticks is not None:
                    run.future.pid_create_time = start_ticks / _CLOCK_TICKS + psutil.boot_time()
                run.future.started.set()
                run.start_known.set()
        elif kind == "start_failed":
            self._complete(link, message[1], _not_started(message[2]))
        elif kind == "finished":
            run = link.runs.get(message[1])
            if run is not None:
                self._complete(link, message[1], _result(run, message[2]))

    def _complete(self, link: "_LauncherLink", job_id: int, result: AttemptResult) -> None:
        with self._lock:
            run = link.runs.pop(job_id, None)
            if run is None:
                return
            self._futures.pop(run.future, None)
            if self._shutdown and not link.runs:
                link.close()
        run.start_known.set()
        run.future.set_result(result)  # callbacks run here, with no lock held

    def _on_launcher_gone(self, link: "_LauncherLink") -> None:
        """The launcher's socket closed: reap it; if it died, fail and clean up its runs."""
        with self._lock:
            if self._link is link:
                self._link = None
            runs = list(link.runs.values())
            link.runs.clear()
            for run in runs:
                self._futures.pop(run.future, None)
        code = link.reap()
        if runs or not link.closing:
            reason = _describe_exit(code)
            error = f"the launcher (pid {link.process.pid}) died ({reason}); the run's " \
                    f"processes were killed with it"
            logger.error("launcher {} died ({}); {} run(s) in progress fail as crashed",
                         link.process.pid, reason, len(runs))
            try:
                _kill_processes_of(runs)
            except Exception:
                logger.exception("could not clean up after launcher {}", link.process.pid)
            now = datetime.now(timezone.utc)
            for run in runs:
                run.start_known.set()
                run.future.set_result(AttemptResult(
                    outcome=Outcome.CRASHED, started_at=run.started_at or now, ended_at=now,
                    pid=run.future.pid, error=error))
        with self._lock:
            if link in self._links and link.thread is threading.current_thread():
                self._links.remove(link)


class _Run:
    """An attempt sent to a launcher; its ``runs`` entry is guarded by the executor lock."""

    def __init__(self, job_id: int, future: RunFuture, token: str):
        self.job_id = job_id
        self.future = future
        self.token = token
        self.start_known = threading.Event()  # started, failed to start, or lost
        self.started_at: datetime | None = None


class _LauncherLink:
    """One launcher process, the socket to it and the thread that reads that socket."""

    def __init__(self, executor: ProcessExecutor):
        self.executor = executor
        self.runs: dict[int, _Run] = {}   # job id -> run in progress (executor lock)
        self.closing = False              # we closed our side on purpose
        self._send_lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, _LAUNCHER_SCRIPT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, process_group=0,
                env=executor._base_env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.thread = threading.Thread(target=self._read, daemon=True,
                                       name=f"launcher-{self.process.pid}")
        self.thread.start()
        _live_executors.add(executor)
        self.send(("init", _preparation_data(), executor.sample_interval))

    def send(self, message: tuple) -> None:
        body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            try:
                self.sock.sendall(_FRAME.pack(len(body)) + body)
            except OSError:
                pass  # the launcher is gone; the reader thread completes its runs

    def close(self) -> None:
        """Tell the launcher we are done: it exits once its runs are gone."""
        if not self.closing:
            self.closing = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def kill_launcher(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass

    def reap(self) -> int:
        try:
            return self.process.wait(LAUNCHER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.error("launcher {} did not exit; killing it", self.process.pid)
            self.process.kill()
            return self.process.wait()

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                try:
                    chunk = self.sock.recv(1 << 20)
                except OSError:
                    break
                if not chunk:
                    break
                buffer += chunk
                offset = 0
                while len(buffer) - offset >= _FRAME.size:
                    (size,) = _FRAME.unpack_from(buffer, offset)
                    end = offset + _FRAME.size + size
                    if len(buffer) < end:
                        break
                    message = pickle.loads(memoryview(buffer)[offset + _FRAME.size:end])
                    offset = end
                    try:
                        self.executor._on_message(self, message)
                    except Exception:
                        logger.exception("could not handle {!r} from launcher {}",
                                         message[0], self.process.pid)
                del buffer[:offset]
        finally:
            try:
                self.executor._on_launcher_gone(self)
            finally:
                self.sock.close()


class _CannotStart(Exception):
    """The spec cannot become a process; the attempt fails without one."""


def _run_message(spec: RunSpec, job_id: int, token: str, base_env: dict[str, str]) -> tuple:
    """The ("run", ...) message for the launcher.

    :raises _CannotStart: for a malformed spec, or a call that cannot be pickled.
    """
    if (spec.function is None) == (spec.command is None):
        raise _CannotStart("the run spec must set exactly one of function and command")
    # The launcher (and so every spare) has ``base_env``; send the whole environment only
    # when the orchestrator's has changed since, and the run's own variables always.
    environment = dict(os.environ)
    env = None if environment == base_env else environment
    identity, extra = _identity(spec.user)
    extra.update(spec.env or {})
    extra[RUN_TOKEN_VARIABLE] = token
    if spec.cwd is not None:
        cwd = os.path.abspath(spec.cwd)
    elif identity is not None:  # another account starts in its home, as cron does
        cwd = extra["HOME"] if os.path.isdir(extra["HOME"]) else "/"
    else:
        cwd = os.getcwd()
    limits = {"timeout": spec.timeout_seconds, "grace": spec.kill_grace_seconds,
              "memory_limit_mb": spec.memory_limit_mb, "kill_leftovers": spec.kill_leftovers,
              "cwd": spec.cwd, "workdir": cwd, "function": spec.function is not None,
              "user": spec.user}
    modules: list[str] = []
    if spec.function is not None:
        try:
            call, modules = _pickle_noting_modules(
                (spec.function, spec.pass_argument, spec.argument))
        except Exception as exc:
            raise _CannotStart(f"cannot pickle the function or its argument: "
                               f"{type(exc).__name__}: {exc}") from None
        limits["program"] = spec.worker
        limits["sys_path"] = list(sys.path)
        # A module-level function (pickled by name) with no argument or the WorkerConfig:
        # unpickling that runs no user code, so spares may unpickle a copy ahead of time
        # (see _launcher._spare_main). Any other object may do anything when unpickled.
        limits["warm"] = isinstance(spec.function, types.FunctionType) and (
            spec.argument is None or type(spec.argument) is WorkerConfig)
        child_job = ("function", list(sys.path), cwd, env, extra, call, identity)
    else:
        argv = _command_argv(spec)
        limits["program"] = argv[0]
        child_job = ("command", argv, cwd, env, extra, identity)
    return ("run", job_id, limits, token, pickle.dumps(child_job, pickle.HIGHEST_PROTOCOL),
            modules)


def _identity(user: str | None) -> tuple[tuple | None, dict[str, str]]:
    """``((name, uid, gid), login variables)`` for a run as ``user``; ``(None, {})`` for a
    run as the orchestrator's own account. HOME, USER and LOGNAME are set as cron sets them
    (the worker's ``env`` may still override them).

    :raises _CannotStart: for a user that does not exist, or when switching needs root.
    """
    if user is None:
        return None, {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise _CannotStart(f"user {user!r} does not exist") from None
    if entry.pw_uid == os.geteuid():
        return None, {}
    if os.geteuid() != 0:
        raise _CannotStart(f"cannot run as user {user!r}: the orchestrator is not root")
    return ((entry.pw_name, entry.pw_uid, entry.pw_gid),
            {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name})


class _ModuleNotingPickler(pickle.Pickler):
    """Pickles as usual, and notes the module of every function, class and object's class
    it meets: what the launcher imports so that the next run finds them loaded."""

    def __init__(self, file):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj):
        module = getattr(obj, "__module__", None) if isinstance(obj, type) or callable(obj) \
            else None
        for name in (module, type(obj).__module__):
            if isinstance(name, str):
                self.modules.add(name)
        return NotImplemented


def _pickle_noting_modules(obj) -> tuple[bytes, list[str]]:
    buffer = io.BytesIO()
    pickler = _ModuleNotingPickler(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), sorted(pickler.modules - {"builtins"})


def _command_argv(spec: RunSpec) -> list[str]:
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
        argv = [os.fspath(part) for part in command]
    if not argv:
        raise _CannotStart("the command is empty")
    return argv


def _preparation_data() -> dict:
    """What the launcher needs to load the workers' modules, as multiprocessing's spawn does
    (sys.path, cwd, and the main script, loaded as ``__mp_main__``)."""
    chosen = multiprocessing.get_start_method(allow_none=True)
    data = multiprocessing.spawn.get_preparation_data("orchestrator-launcher")
    if chosen is None:
        # get_preparation_data fixed the start method of this process as a side effect;
        # undo it, and let the launcher use its own default.
        multiprocessing.set_start_method(None, force=True)
        del data["start_method"]
    data["authkey"] = bytes(data["authkey"])
    return data


def _result(run: _Run, fields: dict) -> AttemptResult:
    """The AttemptResult of a reaped run, from what the launcher reported."""
    status = fields["status"]
    exit_code = signal_number = None
    if status is not None:
        if os.WIFSIGNALED(status):
            signal_number = os.WTERMSIG(status)
        else:
            exit_code = os.waitstatus_to_exitcode(status)
    outcome, error, trace, value = _outcome(run, fields, exit_code, signal_number)
    return AttemptResult(
        outcome=outcome,
        started_at=datetime.fromtimestamp(fields["started_epoch"], timezone.utc),
        ended_at=datetime.fromtimestamp(fields["ended_epoch"], timezone.utc),
        pid=run.future.pid, result=value, error=error, traceback=trace, exit_code=exit_code,
        signal=signal_number, cpu_seconds=fields["cpu_seconds"],
        peak_rss_bytes=fields["peak_rss_bytes"],
        stdout_tail=fields["stdout"].decode("utf-8", errors="replace"),
        stderr_tail=fields["stderr"].decode("utf-8", errors="replace"))


def _outcome(run: _Run, fields: dict, exit_code, signal_number):
    """(outcome, error, traceback, value) from how the process ended and what it said."""
    if fields["kill_outcome"] is not None:
        return Outcome(fields["kill_outcome"]), fields["kill_error"], None, None
    is_function = run.future.spec.function is not None
    message = _message(fields["result"]) if is_function else None
    if message is not None:
        return message
    if fields["status"] is None:
        return Outcome.CRASHED, "exit status lost: the process was reaped elsewhere", None, None
    if signal_number is not None:
        return Outcome.CRASHED, f"killed by {_signal_name(signal_number)}", None, None
    if is_function:
        return Outcome.CRASHED, f"exited with code {exit_code} without a result", None, None
    if exit_code == 0:
        return Outcome.SUCCEEDED, None, None, None
    return Outcome.FAILED, f"exit code {exit_code}", None, None


def _message(data: bytes):
    if len(data) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack_from(data)
    if len(data) < _FRAME.size + size:
        return None
    try:
        message = pickle.loads(data[_FRAME.size:_FRAME.size + size])
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


def _kill_processes_of(runs: list[_Run]) -> None:
    """SIGKILL what is left of runs whose launcher died: their process groups and every
    process carrying one of their tokens. (The runs' own processes died with the launcher;
    their children did not.)"""
    runs = [run for run in runs if run.future.pid_create_time is not None]
    if not runs:
        return  # none had started: nothing of them can be left
    tokens = {run.token for run in runs}
    groups = {run.future.pid for run in runs}
    since = min(run.future.pid_create_time for run in runs)
    for process in psutil.process_iter(["create_time"]):
        created = process.info["create_time"]
        if created is None or created < since - 1.5 or process.pid == os.getpid():
            continue
        try:
            if os.getpgid(process.pid) in groups or \
                    process.environ().get(RUN_TOKEN_VARIABLE) in tokens:
                process.kill()
        except (psutil.Error, OSError):
            pass


def _not_started(error: str, at: datetime | None = None) -> AttemptResult:
    at = at or datetime.now(timezone.utc)
    return AttemptResult(outcome=Outcome.FAILED, started_at=at,
                         ended_at=datetime.now(timezone.utc), error=error)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# Executors that started a launcher; at interpreter exit their attempts are killed, so that
# no run outlives the orchestrator that started it (the launchers would do it on EOF anyway).
_live_executors: "weakref.WeakSet[ProcessExecutor]" = weakref.WeakSet()


@atexit.register
def _kill_attempts_at_exit() -> None:
    for executor in list(_live_executors):
        executor.shutdown(wait=True, cancel_futures=True)
