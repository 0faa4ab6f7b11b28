"""Run every attempt in a fresh OS process, forked by a small launcher process.

::

    caller threads                      reader thread (one per launcher)   launcher process
    --------------                      --------------------------------   ----------------
    start()                                                                 Popen; a cgroup
      scavenge homes of dead launchers                                      home is made for
      Init(preparation, cgroup home) ----------- socket ----------------->  it (cgroups.py)
    submit_run(spec)
      pickle the call or command
      Run(...) -------------------------------------------------------->  hand the job to
      return the future at once                                             the spare process
                                         <-- Started | StartFailed          fork the next one
      future.pid, pid_create_time   <--  set the start
    RunFuture.kill, kill_all,
      shutdown: Kill, KillAll -------------------------------------------> TERM, grace, KILL
                                         <-- Usage     future.usage = Usage(...)
                                         <-- Log       to the orchestrator's log
                                         <-- Finished
                                             build the AttemptResult,
                                             future.set_result(...)
                                         EOF: the launcher died:
                                             kill what is left of its runs
                                             (its cgroup home), complete them
                                             CRASHED; the next submit_run
                                             starts a new launcher

The orchestrator has threads, so it never forks: the launcher (``_launcher.py``, run by path,
without importing this package) is started with ``subprocess.Popen`` and does every fork,
wait and kill; see its docstring for the protocol and the process tree, and ``wire.py`` for
the messages. This module chooses the containment (a cgroup per attempt, or process groups),
keeps the futures, turns what the launcher reports into :class:`AttemptResult` objects, and
cleans up after a launcher that died.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import io
import itertools
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import pwd
import secrets
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import weakref
from datetime import datetime, timezone

import psutil
from loguru import logger

from ..config import WorkerConfig
from ..errors import ContainmentError
from ..runs import Outcome
from . import cgroups, wire
from .base import AttemptResult, Output, RunExecutor, RunFuture, RunSpec, Usage
from .wire import RUN_TOKEN_VARIABLE, TAIL_BYTES

__all__ = ["CONTAINMENTS", "ProcessExecutor", "TAIL_BYTES", "RUN_TOKEN_VARIABLE"]

CONTAINMENTS = ("auto", "cgroup", "process-group")
"""What keeps an attempt's processes together: a cgroup each where the orchestrator may make
them (``auto`` falls back to process groups elsewhere; ``cgroup`` refuses to start)."""

TOKEN_PLACEHOLDER = "-" * 48
"""The launcher's environment holds the run token variable with this value: a function run
writes its own token over it, where ``/proc/PID/environ`` shows it (see ``_launcher``)."""

HEARTBEAT_SECONDS = 1.0
"""While a launcher has work, it is pinged this often if it has said nothing meanwhile."""

SUSPECT_SECONDS = 2.5
"""A launcher silent this long gets no new runs (a new launcher takes them), and the
timeouts of its runs are enforced by the orchestrator itself."""

SILENT_SECONDS = 10.0
"""A launcher silent this long (stopped, or stuck) is killed; its runs end ``crashed``."""

PREPARE_SECONDS = 30.0
"""How long a new launcher may take to import the main script before it counts as stuck
(it gives up itself after 20 s)."""

LAUNCHER_EXIT_SECONDS = 15.0
"""How long a launcher that closed its socket may take to exit before it is SIGKILLed."""

_LAUNCHER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
_FRAME = wire.FRAME
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessExecutor(RunExecutor):
    """Runs each attempt in a new process, forked by a launcher, contained by a cgroup of its
    own where the orchestrator may make cgroups, else by a process group.

    Attempts start at once, with no limit on how many run together (admission is the
    dispatcher's job). The result of every future is an :class:`AttemptResult`; nothing a run
    does makes :meth:`submit_run` raise, except submitting after :meth:`shutdown`. If the
    launcher dies, its attempts complete ``CRASHED`` (what they left is killed) and the next
    submission starts a new one.

    :param containment: ``"auto"`` (default): a cgroup per attempt where cgroups may be made,
        else process groups; ``"cgroup"``: cgroups or refuse; ``"process-group"``: never
        cgroups.
    :param sample_interval: seconds between two live samples of every running attempt's
        processes (``RunFuture.usage``; without cgroups also the check of
        ``memory_limit_mb``).
    :param main_script: load the main script in the launcher, as multiprocessing's spawn
        does, so that functions defined in it can run (default). A host process whose main
        script is not the user's (a Ray worker) passes False; functions defined in a
        ``__main__`` then travel by value (with cloudpickle).
    :raises ContainmentError: with ``containment="cgroup"`` where cgroups cannot be made,
        naming what is missing and how to get it.
    :raises RuntimeError: from :meth:`submit_run` after :meth:`shutdown`.
    """

    def __init__(self, *, containment: str = "auto", sample_interval: float = 0.5,
                 main_script: bool = True) -> None:
        if containment not in CONTAINMENTS:
            raise ValueError(f"containment must be one of {', '.join(CONTAINMENTS)}, got "
                             f"{containment!r}")
        if sample_interval <= 0:
            raise ValueError(f"sample_interval must be > 0, got {sample_interval!r}")
        self.sample_interval = sample_interval
        self.main_script = main_script
        self._cgroups: cgroups.Support | None = None
        if containment == "process-group":
            self.containment = "process-group"
            self.containment_detail = "process groups (cgroups not asked for)"
        else:
            found = cgroups.probe()
            if isinstance(found, cgroups.Support):
                self._cgroups = found
                self.containment = "cgroup"
                self.containment_detail = found.detail
            elif containment == "cgroup":
                raise ContainmentError(f"containment 'cgroup' is not available: {found}")
            else:
                self.containment = "process-group"
                self.containment_detail = f"process groups (no cgroups: {found})"
        # Guards every field below, and the ``runs`` of each launcher link. Sending to the
        # launcher happens under it, so that a kill never overtakes the run it names.
        self._lock = threading.Lock()
        self._shutdown = False
        self._scavenged = False
        self._link: _LauncherLink | None = None      # the launcher new runs go to
        self._links: list[_LauncherLink] = []        # every link whose thread may still run
        self._futures: dict[RunFuture, tuple[_LauncherLink, int]] = {}
        self._job_ids = itertools.count(1)
        self._requests = itertools.count(1)
        self._token_prefix = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._base_env = dict(os.environ)  # every launcher of this executor starts with it

    # -- public ----------------------------------------------------------------------------

    @property
    def launcher_pid(self) -> int | None:
        """The pid of the launcher process now serving, if one runs."""
        link = self._link
        return None if link is None else link.process.pid

    def start(self) -> None:
        """Clean up after launchers that died with their orchestrator, and start the
        launcher now rather than at the first run. Called by the orchestrator's start().

        :raises RuntimeError: after :meth:`shutdown`.
        """
        with self._lock:
            self._refuse_if_shut_down()
            self._current_link()

    def submit_run(self, spec: RunSpec) -> RunFuture:
        """Start one attempt and return its future at once; ``future.started`` is set (and
        its start callbacks run) when the launcher reports the process started.

        A run that cannot start (a command not found, a bad ``cwd``, a function or argument
        that cannot be pickled) completes its future with ``FAILED``.

        :raises RuntimeError: after :meth:`shutdown`.
        """
        if os.environ.get(wire.IMPORTING_VARIABLE):
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
        run = _Run(job_id, future, token, spec)
        with self._lock:
            self._refuse_if_shut_down()
            link = self._current_link()
            link.runs[job_id] = run
            self._futures[future] = (link, job_id)
            link.send(message)
        return future

    def output(self, future: RunFuture, stdout_from: int = 0,
               stderr_from: int = 0) -> concurrent.futures.Future | None:
        """A future of what the running attempt wrote after those offsets (its result is
        None if the attempt has ended); see :class:`~orchestrator.execution.base.Output`."""
        answer: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            entry = self._futures.get(future)
            if entry is None:
                answer.set_result(None)
                return answer
            link, job_id = entry
            request = next(self._requests)
            link.tails[request] = answer
            link.send(wire.TailRequest(job_id, request, stdout_from, stderr_from))
        return answer

    def kill_all(self, outcome: Outcome = Outcome.CANCELLED) -> None:
        """Kill every attempt in progress (TERM, grace, KILL); each completes with ``outcome``.

        Returns at once; the futures complete when the processes are gone.
        """
        outcome = Outcome(outcome)
        with self._lock:
            if self._link is not None:
                self._link.send(wire.KillAll(outcome.value, f"killed ({outcome.value})"))

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
                    link.send(wire.KillAll(Outcome.CANCELLED.value, "executor shut down"))
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

    def _current_link(self) -> "_LauncherLink":
        """The launcher new runs go to, started if none serves (with the lock held)."""
        if self._link is not None and self._link.suspect:
            self._link = None  # silent: a new launcher takes the new runs
        if self._link is None:
            if self._cgroups is not None and not self._scavenged:
                self._scavenged = True
                for name in cgroups.scavenge(self._cgroups):
                    logger.warning("removed the cgroups of launcher {}, which is gone, and "
                                   "killed what was left in them", name)
            self._link = _LauncherLink(self)
            self._links.append(self._link)
        return self._link

    def _request_kill(self, future: RunFuture, outcome: Outcome, immediately: bool) -> None:
        with self._lock:
            entry = self._futures.get(future)
            if entry is not None:
                link, job_id = entry
                link.send(wire.Kill(job_id, outcome.value, f"killed ({outcome.value})",
                                    immediately))

    # -- from a link's reader thread -----------------------------------------------------------

    def _on_message(self, link: "_LauncherLink", message) -> None:
        if isinstance(message, wire.Usage):
            for sample in message.samples:
                run = link.runs.get(sample.job_id)
                if run is not None:
                    run.future.usage = Usage(
                        cpu_seconds=sample.cpu_seconds, rss_bytes=sample.rss_bytes,
                        peak_rss_bytes=sample.peak_rss_bytes, processes=sample.processes,
                        sampled_at=sample.sampled_at)
        elif isinstance(message, wire.Started):
            run = link.runs.get(message.job_id)
            if run is not None:
                run.started_at = datetime.fromtimestamp(message.started_epoch, timezone.utc)
                run.started_monotonic = time.monotonic()
                created = None if message.start_ticks is None else \
                    message.start_ticks / _CLOCK_TICKS + psutil.boot_time()
                run.future.set_started(message.pid, created, cgroup=message.cgroup,
                                       at=run.started_at)
        elif isinstance(message, wire.Ready):
            link.ready = True
            if message.problem:
                logger.error("launcher {}: {}", link.process.pid, message.problem)
        elif isinstance(message, wire.StartFailed):
            self._complete(link, message.job_id, _not_started(message.message))
        elif isinstance(message, wire.Finished):
            run = link.runs.get(message.job_id)
            if run is not None:
                self._complete(link, message.job_id, _result(run, message.ending))
        elif isinstance(message, wire.TailReply):
            with self._lock:
                answer = link.tails.pop(message.request, None)
            if answer is not None:
                answer.set_result(None if not message.found else Output(
                    message.stdout.decode("utf-8", "replace"),
                    message.stderr.decode("utf-8", "replace"), message.stdout_total,
                    message.stderr_total))
        elif isinstance(message, wire.Log):
            logger.log(message.level.upper(), "launcher {}: {}", link.process.pid,
                       message.text)

    def _complete(self, link: "_LauncherLink", job_id: int, result: AttemptResult) -> None:
        with self._lock:
            run = link.runs.pop(job_id, None)
            if run is None:
                return
            self._futures.pop(run.future, None)
            if self._shutdown and not link.runs:
                link.close()
        run.future.set_result(result)  # callbacks run here, with no lock held

    def _time_out_overdue(self, link: "_LauncherLink") -> None:
        """The launcher of these runs is not answering: kill those past their timeout (and
        grace) from here, by cgroup or process group, and record them ``timed_out``."""
        now = time.monotonic()
        with self._lock:
            overdue = [run for run in link.runs.values()
                       if run.started_monotonic is not None and run.overdue_after is not None
                       and now - run.started_monotonic >= run.overdue_after]
            for run in overdue:
                link.runs.pop(run.job_id, None)
                self._futures.pop(run.future, None)
        v2 = link.plan is not None and link.plan.roles["kill"] == "unified"
        for run in overdue:
            _kill_directly(run.future, v2)
            timeout = run.future.spec.timeout_seconds
            logger.error("run {} of {}: killed by the orchestrator at its timeout, its launcher "
                         "{} not answering", run.future.spec.run_id, run.future.spec.worker,
                         link.process.pid)
            ended = datetime.now(timezone.utc)
            run.future.set_result(AttemptResult(
                outcome=Outcome.TIMED_OUT, started_at=run.started_at or ended, ended_at=ended,
                pid=run.future.pid, error=f"timed out after {timeout:g}s (killed by the "
                                          f"orchestrator: the launcher was not answering)"))

    def _on_launcher_gone(self, link: "_LauncherLink") -> None:
        """The launcher's socket closed: reap it; if it died, fail and clean up its runs."""
        with self._lock:
            if self._link is link:
                self._link = None
            runs = list(link.runs.values())
            link.runs.clear()
            tails, link.tails = list(link.tails.values()), {}
        for answer in tails:
            answer.set_result(None)
        with self._lock:
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
        if link.plan is not None:
            try:
                killed = cgroups.destroy(link.plan)
            except Exception:
                logger.exception("could not remove the cgroups of launcher {}",
                                 link.process.pid)
            else:
                if killed:
                    logger.warning("killed {} process(es) left in the cgroups of launcher {}",
                                   killed, link.process.pid)
        if runs or not link.closing:
            now = datetime.now(timezone.utc)
            for run in runs:
                run.future.set_result(AttemptResult(
                    outcome=Outcome.CRASHED, started_at=run.started_at or now, ended_at=now,
                    pid=run.future.pid, error=error))
        with self._lock:
            if link in self._links and link.thread is threading.current_thread():
                self._links.remove(link)


class _Run:
    """An attempt sent to a launcher; its ``runs`` entry is guarded by the executor lock."""

    def __init__(self, job_id: int, future: RunFuture, token: str, spec: RunSpec):
        self.job_id = job_id
        self.future = future
        self.token = token
        self.started_at: datetime | None = None
        self.started_monotonic: float | None = None
        # when the orchestrator kills it itself, should its launcher not answer
        self.overdue_after = None if spec.timeout_seconds is None else \
            spec.timeout_seconds + spec.kill_grace_seconds + SUSPECT_SECONDS


class _LauncherLink:
    """One launcher process, the socket to it and the thread that reads that socket."""

    def __init__(self, executor: ProcessExecutor):
        self.executor = executor
        self.runs: dict[int, _Run] = {}   # job id -> run in progress (executor lock)
        self.closing = False              # we closed our side on purpose
        self.ready = False                # the launcher has prepared; see wire.Ready
        self.suspect = False              # silent for SUSPECT_SECONDS: gets no new runs
        self.heard_at = time.monotonic()  # when it last said anything (reader thread)
        self.pings = itertools.count(1)
        self.tails: dict[int, concurrent.futures.Future] = {}  # answers to come (exec. lock)
        self.plan: cgroups.Plan | None = None  # its cgroup home, if any
        self._send_lock = threading.Lock()
        self._outbox = bytearray()        # bytes the socket did not take yet (send lock)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, _LAUNCHER_SCRIPT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, process_group=0,
                env={**executor._base_env, RUN_TOKEN_VARIABLE: TOKEN_PLACEHOLDER})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        if executor._cgroups is not None:
            try:
                self.plan = executor._cgroups.home(self.process.pid)
            except OSError as error:
                logger.error("cannot create the cgroups of launcher {} ({}); its runs are "
                             "contained by process groups", self.process.pid, error)
        self.thread = threading.Thread(target=self._read, daemon=True,
                                       name=f"launcher-{self.process.pid}")
        self.thread.start()
        _live_executors.add(executor)
        plan = None if self.plan is None else wire.CgroupPlan(*self.plan)
        self.send(wire.Init(_preparation_data(executor.main_script), executor.sample_interval,
                            plan))

    def send(self, message) -> None:
        """Queue ``message`` and send what the socket takes now, never waiting: what a
        launcher that reads nothing (stopped) leaves queued, the reader thread sends later."""
        with self._send_lock:
            self._outbox += wire.encode(message)
            self._flush()

    def _flush(self) -> None:
        """Send queued bytes without blocking (with the send lock held)."""
        while self._outbox:
            try:
                sent = self.sock.send(self._outbox, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:  # the launcher is gone; the reader thread completes its runs
                self._outbox.clear()
                return
            del self._outbox[:sent]

    def close(self) -> None:
        """Tell the launcher we are done: it exits once its runs are gone."""
        if not self.closing:
            self.closing = True
            with self._send_lock:
                self._flush()
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
        """Read the launcher's messages; between them, watch that it still answers."""
        buffer = bytearray()
        self.sock.settimeout(HEARTBEAT_SECONDS)
        try:
            while True:
                try:
                    chunk = self.sock.recv(1 << 20)
                except TimeoutError:
                    self._watch()
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self.heard_at = time.monotonic()
                self.suspect = False
                buffer += chunk
                offset = 0
                while len(buffer) - offset >= _FRAME.size:
                    (size,) = _FRAME.unpack_from(buffer, offset)
                    end = offset + _FRAME.size + size
                    if len(buffer) < end:
                        break
                    message = wire.decode(memoryview(buffer)[offset + _FRAME.size:end])
                    offset = end
                    try:
                        self.executor._on_message(self, message)
                    except Exception:
                        logger.exception("could not handle {} from launcher {}",
                                         type(message).__name__, self.process.pid)
                del buffer[:offset]
                if time.monotonic() - self.heard_at >= HEARTBEAT_SECONDS:
                    self._watch()
        finally:
            try:
                self.executor._on_launcher_gone(self)
            finally:
                self.sock.close()

    def _watch(self) -> None:
        """No word from the launcher for a while: ping it if it has work; past the
        deadlines, stop giving it runs, time its runs out from here, and kill it."""
        with self._send_lock:
            self._flush()
        silent = time.monotonic() - self.heard_at
        if not self.runs and self.ready or self.closing and not self.runs:
            return  # nothing it owes an answer for
        deadline = SILENT_SECONDS if self.ready else PREPARE_SECONDS
        if silent >= deadline:
            logger.error("launcher {} has not answered for {:.0f}s; killing it (its runs end "
                         "crashed)", self.process.pid, silent)
            self.kill_launcher()
            return
        if silent >= SUSPECT_SECONDS and self.ready and not self.suspect:
            self.suspect = True
            logger.warning("launcher {} has not answered for {:.1f}s; new runs go to a new "
                           "launcher", self.process.pid, silent)
        if self.suspect:
            self.executor._time_out_overdue(self)
        self.send(wire.Ping(next(self.pings)))


class _CannotStart(Exception):
    """The spec cannot become a process; the attempt fails without one."""


def _run_message(spec: RunSpec, job_id: int, token: str, base_env: dict[str, str]) -> wire.Run:
    """The launcher's ``Run`` message for ``spec``.

    :raises _CannotStart: for a malformed spec, or a call that cannot be pickled.
    """
    if (spec.function is None) == (spec.command is None):
        raise _CannotStart("the run spec must set exactly one of function and command")
    # The launcher (and so every spare) has ``base_env``; send the whole environment only
    # when the orchestrator's has changed since, and the run's own variables always.
    environment = dict(os.environ)
    env = None if environment == base_env else environment
    identity, variables = _identity(spec.user)
    variables.update(spec.env or {})
    variables[RUN_TOKEN_VARIABLE] = token
    if spec.cwd is not None:
        cwd = os.path.abspath(spec.cwd)
    elif identity is not None:  # another account starts in its home, as cron does
        cwd = variables["HOME"] if os.path.isdir(variables["HOME"]) else "/"
    else:
        cwd = os.getcwd()
    modules: list[str] = []
    if spec.function is not None:
        call = (spec.function, spec.pass_argument, spec.argument)
        try:
            call, modules = _pickle_noting_modules(call)
            by_value = False
        except Exception as exc:
            call, by_value = _pickle_by_value(call, exc), True
        program = spec.worker
        # A module-level function (pickled by name) with no argument or the WorkerConfig:
        # unpickling that runs no user code, so spares may unpickle a copy ahead of time
        # (see _launcher._spare_main). Any other object may do anything when unpickled.
        warm = not by_value and isinstance(spec.function, types.FunctionType) and (
            spec.argument is None or type(spec.argument) is WorkerConfig)
        job = wire.FunctionJob(list(sys.path), cwd, env, variables, call, identity,
                               spec.max_result_bytes)
    else:
        argv = _command_argv(spec)
        program, warm = argv[0], False
        job = wire.CommandJob(argv, cwd, env, variables, identity)
    limits = wire.Limits(
        program=program, timeout=spec.timeout_seconds, grace=spec.kill_grace_seconds,
        memory_limit_mb=spec.memory_limit_mb, pids_limit=spec.pids_limit,
        cpu_limit=spec.cpu_limit, kill_leftovers=spec.kill_leftovers, cwd=spec.cwd,
        workdir=cwd, function=spec.function is not None, user=spec.user,
        sys_path=list(sys.path) if spec.function is not None else None, warm=warm,
        max_result_bytes=spec.max_result_bytes, stall=spec.stall_seconds)
    return wire.Run(job_id, limits, token, wire.encode(job), modules)


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


def _pickle_by_value(call: tuple, error: Exception) -> bytes:
    """``call`` pickled with cloudpickle, which takes functions of a ``__main__`` this
    process did not load from a file (a Ray node's copy of the orchestrator's) by value.

    :raises _CannotStart: with the plain pickler's ``error`` where that does not apply.
    """
    function = call[0]
    if getattr(function, "__module__", None) == "__main__":
        try:
            import cloudpickle
        except ImportError:
            pass
        else:
            try:
                return cloudpickle.dumps(call, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                error = exc
    raise _CannotStart(f"cannot pickle the function or its argument: "
                       f"{type(error).__name__}: {error}") from None


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


def _preparation_data(main_script: bool = True) -> dict:
    """What the launcher needs to load the workers' modules, as multiprocessing's spawn does
    (sys.path, cwd, and with ``main_script`` the main script, loaded as ``__mp_main__``)."""
    chosen = multiprocessing.get_start_method(allow_none=True)
    data = multiprocessing.spawn.get_preparation_data("orchestrator-launcher")
    if chosen is None:
        # get_preparation_data fixed the start method of this process as a side effect;
        # undo it, and let the launcher use its own default.
        multiprocessing.set_start_method(None, force=True)
        del data["start_method"]
    data["authkey"] = bytes(data["authkey"])
    if not main_script:
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _result(run: _Run, ending: wire.Ending) -> AttemptResult:
    """The AttemptResult of a reaped run, from what the launcher reported."""
    status = ending.status
    exit_code = signal_number = None
    if status is not None:
        if os.WIFSIGNALED(status):
            signal_number = os.WTERMSIG(status)
        else:
            exit_code = os.waitstatus_to_exitcode(status)
    outcome, error, trace, value = _outcome(run, ending, exit_code, signal_number)
    if run.future.spec.function is not None and _message(ending.result) is not None:
        exit_code = None  # the function returned or raised: no process exit was involved
    return AttemptResult(
        outcome=outcome,
        started_at=datetime.fromtimestamp(ending.started_epoch, timezone.utc),
        ended_at=datetime.fromtimestamp(ending.ended_epoch, timezone.utc),
        pid=run.future.pid, result=value, error=error, traceback=trace, exit_code=exit_code,
        signal=signal_number, cpu_seconds=ending.cpu_seconds,
        peak_rss_bytes=ending.peak_rss_bytes,
        stdout_tail=ending.stdout.decode("utf-8", errors="replace"),
        stderr_tail=ending.stderr.decode("utf-8", errors="replace"),
        stdout_bytes=ending.stdout_total, stderr_bytes=ending.stderr_total)


def _outcome(run: _Run, ending: wire.Ending, exit_code, signal_number):
    """(outcome, error, traceback, value) from how the process ended and what it said."""
    if ending.kill_outcome is not None:
        return Outcome(ending.kill_outcome), ending.kill_error, None, None
    is_function = run.future.spec.function is not None
    message = _message(ending.result) if is_function else None
    if message is not None:
        return message
    if ending.status is None:
        return Outcome.CRASHED, "exit status lost: the process was reaped elsewhere", None, None
    if signal_number is not None:
        return Outcome.CRASHED, f"killed by {_signal_name(signal_number)}", None, None
    if is_function:
        return Outcome.CRASHED, f"exited with code {exit_code} without a result", None, None
    if exit_code == 0:
        return Outcome.SUCCEEDED, None, None, None
    return Outcome.FAILED, f"exit code {exit_code}", None, None


def _message(data: bytes):
    """(outcome, error, traceback, value) from a function's result frame, or None if it
    sent none (it died first)."""
    if len(data) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack_from(data)
    if len(data) < _FRAME.size + size:
        return None
    try:
        message = wire.decode(data[_FRAME.size:_FRAME.size + size])
    except Exception as exc:
        return Outcome.FAILED, f"malformed result from the child: {exc!r}", None, None
    if isinstance(message, wire.Raised):
        return Outcome.FAILED, message.error, message.traceback or None, None
    try:
        return Outcome.SUCCEEDED, None, None, pickle.loads(message.value)
    except Exception as exc:
        return (Outcome.FAILED, f"result of type {message.type_name!r} cannot be unpickled: "
                f"{type(exc).__name__}: {exc}", None, None)


def _kill_processes_of(runs: list[_Run]) -> None:
    """SIGKILL what is left of runs whose launcher died, outside cgroups: their process
    groups and every process carrying one of their tokens. (The runs' own processes died
    with the launcher; their children did not.)"""
    runs = [run for run in runs if run.future.pid_create_time is not None
            and run.future.cgroup is None]
    if not runs:
        return  # none had started, or their cgroups hold what is left
    tokens = {run.token for run in runs}
    groups = {run.future.pid for run in runs}
    since = min(run.future.pid_create_time for run in runs)
    for process in psutil.process_iter(["create_time"]):
        created = process.info["create_time"]
        if created is None or created < since - 1.5 or process.pid == os.getpid():
            continue
        try:
            if os.getpgid(process.pid) in groups or \
                    process.environ().get(RUN_TOKEN_VARIABLE, "").strip() in tokens:
                process.kill()
        except (psutil.Error, OSError):
            pass


def _kill_directly(future: RunFuture, v2: bool) -> None:
    """SIGKILL an attempt without its launcher, and wait (a few seconds at most) until its
    processes are gone: its cgroup (``v2``: a cgroup v2 one, else a v1 freezer), or its
    process group (the pid is still reserved: the launcher, its parent, has not reaped it)."""
    pidfds: dict[int, int] = {}
    if future.cgroup is not None:
        try:
            cgroups.kill_cgroup(future.cgroup, v2)
        except OSError as error:
            logger.error("cannot kill cgroup {}: {}", future.cgroup, error)
        pidfds = cgroups.signal_members(future.cgroup, signal.SIGKILL)
    elif future.pid is not None:
        try:
            pidfds[future.pid] = os.pidfd_open(future.pid)
        except OSError:
            pass
        for kill in (os.killpg, os.kill):
            try:
                kill(future.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + cgroups.EXIT_WAIT_SECONDS
    for pidfd in pidfds.values():
        try:
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(pidfd)


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
