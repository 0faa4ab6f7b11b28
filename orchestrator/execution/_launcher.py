"""The launcher: one small single-threaded process that forks, watches and kills every run.

``process.py`` starts it as ``python _launcher.py SOCKET_FD`` (by path: it never imports the
orchestrator package) and talks to it over one socket, in frames of an 8-byte big-endian
length and a pickle::

    orchestrator                          launcher (this file)                 run processes
    ------------                          --------------------                 -------------
    ("init", preparation, interval) -->   multiprocessing.spawn.prepare()
                                          (sys.path, cwd, the user's __main__)
                                          fork two spares ------------------->  spare: waits
    ("run", job, limits, token,     -->   hand the job to a spare ----------->  function: call
         child job, modules)              import the modules of its function     command: exec
                                          and argument; when idle and none
                                          is left, fork the next two
                        <-- ("started", job, pid, start ticks, epoch)  (function: handed
                                                                        over; command:
                                                                        status pipe closed)
                        <-- ("start_failed", job, message)             (exec or chdir failed)
    ("kill", job, outcome, error, now) -> SIGTERM to the run's tree; SIGKILL after the grace
    ("kill_all", outcome, error)    -->
                        <-- ("usage", [(job, cpu, rss, peak, processes, at), ...])
                                          every sample interval, one /proc pass for all runs
                        <-- ("finished", job, fields)                  (reaped with wait4,
                                                                        leftovers gone)
    EOF (orchestrator gone or done) -->   SIGKILL every run's tree, wait for it, exit

The child job is a pickle the launcher passes on unread: ``("function", sys.path, cwd,
environment or None, run's variables, pickled (function, pass_argument, argument), account)``
or ``("command", argv, cwd, environment or None, run's variables, account)``, the account
being ``(name, uid, gid)`` to switch to, or None; the environment is sent
only when the orchestrator's differs from the launcher's. A function's result comes back on
its own pipe as an 8-byte length and one pickled message, ``("returned", type name, pickled
value)`` or ``("failed", one-line error, traceback text)``, which the launcher relays
unread; so a failure travels as plain strings, and a value that cannot be unpickled fails
only in the orchestrator, for that run.

Each run is its own process group, dies with the launcher (PR_SET_PDEATHSIG), and carries
``ORCHESTRATOR_RUN_TOKEN`` in its environment. The launcher is a child subreaper, so a
daemon that double-forked out of a run becomes the launcher's child: it is found by that
token, and killed with the run. Processes are forked from this process only, which has
one thread and little memory, so a fork costs about a millisecond; the next ones are forked
ahead of time, so a run starts as soon as its job arrives.
"""

import sys

# The interpreter put this file's directory first on sys.path. It holds the orchestrator's
# own modules (base.py, process.py, ...), which must not shadow the user's.
if not (sys.flags.isolated or sys.flags.safe_path):
    del sys.path[0]

import atexit  # noqa: E402  (only after sys.path is fixed)
import ctypes  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import _signal  # noqa: E402

TAIL_BYTES = 64 * 1024
RUN_TOKEN_VARIABLE = "ORCHESTRATOR_RUN_TOKEN"
IMPORTING_VARIABLE = "ORCHESTRATOR_LAUNCHER_IMPORTING"  # set while loading user modules
LEFTOVER_WAIT_SECONDS = 5.0   # how long SIGKILLed leftovers may take to exit
EXIT_WAIT_SECONDS = 10.0      # at exit, how long to wait for every run to be gone
SPARES = 2                    # processes forked ahead of time, together, when none is left
_FRAME = struct.Struct(">Q")
_READ_SIZE = 256 * 1024
_PIPE_SIZE = 256 * 1024       # fewer wake-ups for a run that prints a lot
_DRAIN_LIMIT = 1024 * 1024    # after exit, read at most this much: a leftover may keep writing
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TOKEN_PREFIX = (RUN_TOKEN_VARIABLE + "=").encode()
_SIGCHLD, _SIGTERM, _SIGHUP, _SIGINT = (int(number) for number in (
    signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT))

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


# -- the run's side: what a spare does once forked ----------------------------------------------

def _spare_main(launcher_pid: int, job_read: int, status_write: int, out_write: int,
                err_write: int, result_write: int, warm_job: bytes | None) -> None:
    """Wait for one job, then run it. Never returns.

    ``warm_job``: a recent function job, unpickled (and thrown away) while waiting, so that
    the pages the next job's unpickling touches are this process's own before it arrives: a
    freshly forked process pays a page fault on the first touch of each, and that time would
    otherwise come between the job's due time and its first line of user code.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher_pid:  # the launcher died before PDEATHSIG was armed
        os._exit(1)
    signal.set_wakeup_fd(-1)
    # The C functions: signal.signal would turn each previous handler (the launcher's Python
    # functions) into an enum, through a caught ValueError, several times slower.
    for number in (_SIGCHLD, _SIGTERM, _SIGHUP):
        _signal.signal(number, _signal.SIG_DFL)
    _signal.signal(_SIGINT, signal.default_int_handler)
    try:
        os.setpgid(0, 0)
    except OSError:  # the launcher did it first
        pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_write, 1)
    os.dup2(err_write, 2)
    keep = sorted({0, 1, 2, job_read, status_write, result_write})
    for low, high in zip(keep, keep[1:] + [1 << 20]):
        if high > low + 1:
            os.closerange(low + 1, high)
    if warm_job is not None:
        try:
            _, _, _, _, _, call, _ = pickle.loads(warm_job)  # as _call_function unpacks it
            pickle.loads(call)
        except BaseException:
            pass
    header = _read_exactly(job_read, _FRAME.size)
    if len(header) < _FRAME.size:  # the launcher closed the spare without a job
        os._exit(0)
    job = pickle.loads(_read_exactly(job_read, _FRAME.unpack(header)[0]))
    os.close(job_read)
    if job[0] == "command":
        _exec_command(job, status_write)
    else:
        _call_function(job, status_write, result_write)


def _set_environment(full: dict[str, str] | None, extra: dict[str, str]) -> None:
    """Make os.environ ``full`` (None: keep the launcher's) updated with ``extra``."""
    environ = os.environ
    if full is not None:
        for name in [name for name in environ if name not in full]:
            del environ[name]
        for name, value in full.items():
            if environ.get(name) != value:
                environ[name] = value
    for name, value in extra.items():  # not environ.update: the generic one is slower
        environ[name] = value


def _become(identity: tuple | None, status_write: int) -> None:
    """Switch to the run's account (``(name, uid, gid)``), as login(1) would; the launcher
    runs as root when a worker names another user."""
    if identity is None:
        return
    name, uid, gid = identity
    try:
        os.initgroups(name, gid)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        _fail_start(status_write, "user", exc)


def _enter(identity: tuple | None, cwd: str | None, status_write: int) -> None:
    """Become the run's account, then enter its working directory (as that account)."""
    _become(identity, status_write)
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            _fail_start(status_write, "cwd", exc)


def _exec_command(job: tuple, status_write: int) -> None:
    _, argv, cwd, full_env, extra_env, identity = job
    _enter(identity, cwd, status_write)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    _set_environment(full_env, extra_env)
    env = os.environ
    program = argv[0]
    if os.path.dirname(program):
        candidates = [program]
    else:
        candidates = [os.path.join(directory, program) for directory in os.get_exec_path(env)]
    first_error = last_error = None
    for path in candidates:
        try:
            os.execve(path, argv, env)  # the status pipe closes on exec: that means started
        except OSError as exc:
            last_error = exc
            if first_error is None and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                first_error = exc
    _fail_start(status_write, "exec", first_error or last_error)


def _fail_start(status_write: int, stage: str, exc: OSError) -> None:
    os.write(status_write, f"{stage} {exc.errno}".encode())
    os._exit(127)


def _call_function(job: tuple, status_write: int, result_write: int) -> None:
    _, sys_path, cwd, full_env, extra_env, call, identity = job
    _enter(identity, cwd, status_write)
    # Started: nothing below can fail to start, and the orchestrator, waiting for this,
    # goes on while the rest is set up. (User code runs only once the function is loaded.)
    os.close(status_write)
    _set_environment(full_env, extra_env)
    sys.path[:] = sys_path
    atexit._clear()  # the launcher's exit handlers are not the run's
    code = 0
    try:
        function, pass_argument, argument = pickle.loads(call)
    except BaseException as exc:  # reported to the orchestrator, which records it
        message = ("failed", f"cannot load the function: {_error_line(exc)}",
                   _format_traceback(exc))
    else:
        del call
        message = _call(function, pass_argument, argument)
    try:
        _send_result(result_write, message)
    except OSError:
        code = 1
    _flush_std()
    try:
        # As an exiting interpreter would: wait for the user's non-daemon threads, run the
        # exit handlers the run registered, and multiprocessing's clean-up (its own
        # handler was registered in the launcher, so it is not among them).
        import threading
        threading._shutdown()
        atexit._run_exitfuncs()
        if "multiprocessing.util" in sys.modules:
            sys.modules["multiprocessing.util"]._exit_function()
    except BaseException:
        pass
    _flush_std()
    os._exit(code)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _call(function, pass_argument: bool, argument) -> tuple:
    try:
        value = function(argument) if pass_argument else function()
    except BaseException as exc:  # every way out of user code is a result
        return ("failed", _error_line(exc), _format_traceback(exc))
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:
        return ("failed",
                f"result of type {type(value).__name__!r} cannot be pickled: {_error_line(exc)}",
                _format_traceback(exc))
    return ("returned", type(value).__name__, data)


def _error_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        text = "<exception str() failed>"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:
        return f"{_error_line(exc)}\n(the traceback could not be formatted)\n"


def _send_result(fd: int, message: tuple) -> None:
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _FRAME.pack(len(body)) + body)
    os.close(fd)


def _read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the launcher's side ------------------------------------------------------------------------

class _Tail:
    """The launcher's end of one pipe from a run, keeping the last ``limit`` bytes
    (everything when ``limit`` is None)."""

    def __init__(self, fd: int, limit: int | None):
        self.fd = fd
        self.limit = limit
        self.data = bytearray()
        self.open = True
        os.set_blocking(fd, False)

    def read(self) -> int:
        """Read what is there: the byte count, 0 at end of file, -1 if nothing is there now."""
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return -1
        except OSError:
            chunk = b""
        if chunk:
            self.data += chunk
            if self.limit is not None and len(self.data) > self.limit:
                del self.data[:-self.limit]
        return len(chunk)

    def drain(self, limit: int | None = _DRAIN_LIMIT) -> None:
        """Read what is buffered now, without waiting for an end of file that a leftover
        process holding the pipe may never give."""
        taken = 0
        while self.open and (limit is None or taken < limit):
            count = self.read()
            if count <= 0:
                return
            taken += count


class _Spare:
    """A process forked ahead of time, waiting for its job."""

    def __init__(self, pid, job_write, status_read, out_read, err_read, result_read):
        self.pid = pid
        self.start_ticks = _start_ticks(pid)  # read now, off the path of a start
        self.job_write = job_write
        self.status_read = status_read
        self.out_read = out_read
        self.err_read = err_read
        self.result_read = result_read

    def close(self) -> None:
        for fd in (self.job_write, self.status_read, self.out_read, self.err_read,
                   self.result_read):
            try:
                os.close(fd)
            except OSError:
                pass


class _Run:
    """One run handed to a spare; owned by the launcher loop."""

    def __init__(self, job_id: int, limits: dict, token: str, spare: _Spare):
        self.job_id = job_id
        self.limits = limits
        self.token = token
        self.pid = spare.pid
        self.start_ticks = spare.start_ticks
        self.starting = True  # until the status pipe closes
        self.start_reported = False
        self.start_failed = False
        self.status_read = spare.status_read
        os.set_blocking(self.status_read, False)
        self.status = bytearray()
        self.out = _Tail(spare.out_read, TAIL_BYTES)
        self.err = _Tail(spare.err_read, TAIL_BYTES)
        self.result = _Tail(spare.result_read, None)
        self.started = time.monotonic()
        self.started_epoch = time.time()
        timeout = limits["timeout"]
        self.timeout_at = None if timeout is None else self.started + timeout
        self.kill_outcome: str | None = None
        self.kill_error: str | None = None
        self.sigkill_at: float | None = None
        self.reaped = False
        self.wait_status: int | None = None
        self.cpu_seconds: float | None = None
        self.peak_rss_bytes: int | None = None
        self.ended_epoch: float | None = None
        self.tree: dict[int, int] = {}  # other processes of the run: pid -> pidfd
        self.leftover_deadline: float | None = None
        self.rescanned = False
        self.sampled_peak = 0

    def deadline(self) -> float | None:
        if self.reaped:
            return self.leftover_deadline
        if self.sigkill_at is not None:
            return self.sigkill_at
        if self.kill_outcome is not None:
            return None
        return self.timeout_at


class Launcher:
    """The loop: one selector over the orchestrator's socket, SIGCHLD, and every run's pipes."""

    def __init__(self, sock_fd: int):
        self.pid = os.getpid()
        self.sock = sock_fd
        os.set_blocking(sock_fd, False)
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock_fd, selectors.EVENT_READ, self._on_socket)
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        self.selector.register(self.wake_read, selectors.EVENT_READ, self._on_signal)
        self.runs: dict[int, _Run] = {}          # job id -> run in progress
        self.by_pid: dict[int, _Run] = {}        # pid of a run not yet reaped -> run
        self.spares: dict[int, _Spare] = {}     # pid -> process forked ahead, oldest first
        self.sample_interval = 0.5
        self.sample_at: float | None = None
        self.closing = False                      # the orchestrator is gone or done
        self.terminate = False
        self.ready = False                        # prepared: spares may be forked
        self.tokens_seen: dict[tuple[int, int], str | None] = {}  # (pid, start) -> token
        self.warm_job: bytes | None = None        # see _spare_main

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector via the wake fd
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        exit_by = None
        while True:
            if self.terminate and not self.closing:
                self._close()
            if self.closing:
                if exit_by is None:
                    exit_by = time.monotonic() + EXIT_WAIT_SECONDS
                if not self.runs or time.monotonic() > exit_by:
                    break
            timeout = self._seconds_to_next_deadline()
            if exit_by is not None:
                timeout = max(0.0, exit_by - time.monotonic()) if timeout is None \
                    else min(timeout, max(0.0, exit_by - time.monotonic()))
            # Fork the next runs' processes ahead of time, but only when idle: not before a
            # start just handed over has been reported (a fork takes a millisecond or more).
            want_spare = not self.spares and self.ready and not self.closing and \
                not any(run.starting for run in self.runs.values())
            if want_spare:
                timeout = 0
            events = self.selector.select(timeout)
            for key, _mask in events:
                # A handler earlier in this batch may have closed (and reused) the fd.
                if self.selector.get_map().get(key.fd) is key:
                    key.data()
            self._handle_deadlines(time.monotonic())
            if want_spare and not events and not self.spares:
                # Idle now: fork the next runs' processes, back to back. Each fork shares
                # every page of this process with the new one again, and the launcher's own
                # next writes copy them; two forks at once share those copies (a third fewer
                # page faults per run here).
                for _ in range(SPARES):
                    self._fork_spare()
        self._drop_spares()

    def _seconds_to_next_deadline(self) -> float | None:
        deadlines = [d for run in self.runs.values() if (d := run.deadline()) is not None]
        if self.sample_at is not None:
            deadlines.append(self.sample_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _handle_deadlines(self, now: float) -> None:
        for run in list(self.runs.values()):
            if run.reaped:
                if run.leftover_deadline is not None and now >= run.leftover_deadline:
                    _log(f"run {run.job_id}: leftover processes {sorted(run.tree)} did not "
                         f"exit within {LEFTOVER_WAIT_SECONDS}s of SIGKILL")
                    self._complete(run)
            elif run.sigkill_at is not None and now >= run.sigkill_at:
                run.sigkill_at = None
                self._signal_tree(run, signal.SIGKILL)
            elif run.kill_outcome is None and run.timeout_at is not None \
                    and now >= run.timeout_at:
                self._kill(run, "timed_out", f"timed out after {_plain(run.limits['timeout'])}s")
        if self.sample_at is not None and now >= self.sample_at:
            self._sample()

    def _on_sigterm(self, *_):
        self.terminate = True

    def _close(self) -> None:
        """The orchestrator is gone (or done): kill every run at once, then exit."""
        self.closing = True
        self.outbox.clear()
        if self.selector.get_map().get(self.sock) is not None:
            self.selector.unregister(self.sock)
        self._drop_spares()
        for run in list(self.runs.values()):
            self._kill(run, "cancelled", "the orchestrator is gone", immediately=True)

    # -- the socket ---------------------------------------------------------------------------

    def _on_socket(self) -> None:
        self._flush()
        if self.closing:
            return
        try:
            chunk = os.read(self.sock, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close()
            return
        self.inbox += chunk
        offset = 0
        while len(self.inbox) - offset >= _FRAME.size:
            (size,) = _FRAME.unpack_from(self.inbox, offset)
            end = offset + _FRAME.size + size
            if len(self.inbox) < end:
                break
            message = pickle.loads(memoryview(self.inbox)[offset + _FRAME.size:end])
            offset = end
            self._on_message(message)
            if self.closing:
                return
        del self.inbox[:offset]

    def _send(self, message: tuple) -> None:
        if self.closing:
            return
        body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self.outbox += _FRAME.pack(len(body))
        self.outbox += body
        self._flush()

    def _flush(self) -> None:
        """Write what the socket takes now; the rest when it is writable again (the
        launcher never blocks on the orchestrator, so it always reads what comes in)."""
        while self.outbox:
            try:
                written = os.write(self.sock, self.outbox)
            except BlockingIOError:
                break
            except OSError:  # the orchestrator is gone; the read side will tell
                self.outbox.clear()
                break
            del self.outbox[:written]
        if self.closing:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0)
        if self.selector.get_key(self.sock).events != events:
            self.selector.modify(self.sock, events, self._on_socket)

    def _on_message(self, message: tuple) -> None:
        kind = message[0]
        if kind == "run":
            self._start(*message[1:])
        elif kind == "kill":
            _, job_id, outcome, error, immediately = message
            run = self.runs.get(job_id)
            if run is not None:
                self._kill(run, outcome, error, immediately)
        elif kind == "kill_all":
            _, outcome, error = message
            for run in list(self.runs.values()):
                self._kill(run, outcome, error)
        elif kind == "init":
            _, preparation, self.sample_interval = message
            self._prepare(preparation)
            self.ready = True

    def _prepare(self, preparation: dict) -> None:
        os.environ[IMPORTING_VARIABLE] = "1"  # an unguarded script must not start runs here
        try:
            import multiprocessing.spawn
            multiprocessing.spawn.prepare(preparation)
        except BaseException:  # a user script that fails to import; its functions will say so
            _log("could not prepare the workers' modules:\n" + traceback.format_exc())
        finally:
            del os.environ[IMPORTING_VARIABLE]
        _freeze()

    # -- starting -----------------------------------------------------------------------------

    def _fork_spare(self) -> None:
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(5)]
        (job_read, job_write), (status_read, status_write), (out_read, out_write), \
            (err_read, err_write), (result_read, result_write) = pipes
        for fd in (out_write, err_write):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _spare_main(self.pid, job_read, status_write, out_write, err_write,
                            result_write, self.warm_job)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(127)
        for fd in (job_read, status_write, out_write, err_write, result_write):
            os.close(fd)
        try:
            os.setpgid(pid, pid)  # also done by the spare; whichever comes first
        except OSError:
            pass
        self.spares[pid] = _Spare(pid, job_write, status_read, out_read, err_read, result_read)

    def _drop_spares(self) -> None:
        spares = list(self.spares.values())
        self.spares.clear()
        for spare in spares:
            spare.close()
            try:
                os.kill(spare.pid, signal.SIGKILL)
                os.waitpid(spare.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def _start(self, job_id: int, limits: dict, token: str, child_job: bytes,
               modules: list[str]) -> None:
        frame = _FRAME.pack(len(child_job)) + child_job
        for _attempt in range(2):
            if not self.spares:
                self._fork_spare()
            spare = self.spares.pop(next(iter(self.spares)))
            try:
                _write_all(spare.job_write, frame)
            except BrokenPipeError:  # the spare died; its reap is handled as an orphan's
                spare.close()
                continue
            break
        else:
            self._send(("start_failed", job_id, "cannot start: the spare process died"))
            return
        os.close(spare.job_write)
        run = _Run(job_id, limits, token, spare)
        self.runs[job_id] = run
        self.by_pid[run.pid] = run
        register = self.selector.register
        register(run.status_read, selectors.EVENT_READ, lambda: self._on_status(run))
        for tail in (run.out, run.err, run.result):
            register(tail.fd, selectors.EVENT_READ, lambda t=tail: self._on_output(t))
        if self.sample_at is None:
            self.sample_at = time.monotonic() + self.sample_interval
        if limits.get("function") and not limits.get("user") and \
                _can_enter(limits.get("workdir")):
            # A function's spare holds the job now; all that can still fail is its chdir,
            # into a directory just checked: report the start without waiting for the spare
            # to say so (should the directory go away meanwhile, start_failed follows).
            self._report_start(run)
        if modules:
            self._import(limits["sys_path"], modules)
        if limits.get("warm") and all(name in sys.modules for name in modules):
            self.warm_job = child_job  # unpickling it runs and imports nothing
        # The next spare is forked as soon as the loop is idle (see serve).

    def _import(self, sys_path: list[str], modules: list[str]) -> None:
        """Import the modules of the run's function and argument here too, so that the next
        spare has them loaded already."""
        missing = [name for name in modules if name not in sys.modules]
        if not missing:
            return
        sys.path[:] = sys_path
        os.environ[IMPORTING_VARIABLE] = "1"
        imported = False
        for name in missing:
            try:
                importlib.import_module(name)
                imported = True
            except BaseException:  # the run itself reports why it cannot be loaded
                pass
        del os.environ[IMPORTING_VARIABLE]
        if imported:
            self._drop_spares()  # forked without these modules: the next ones will have them
            _freeze()

    def _on_status(self, run: _Run) -> None:
        try:
            chunk = os.read(run.status_read, 4096)
        except OSError:
            chunk = b""
        if chunk:
            run.status += chunk
        else:
            self._started(run)

    def _started(self, run: _Run) -> None:
        self.selector.unregister(run.status_read)
        os.close(run.status_read)
        run.starting = False
        if not run.status:
            if not run.start_reported:
                self._report_start(run)
            return
        stage, number = run.status.decode().split()
        detail = f"[Errno {number}] {os.strerror(int(number))}"
        if stage == "cwd":
            detail = f"working directory {run.limits['workdir']!r}: {detail}"
        elif stage == "user":
            detail = f"cannot become user {run.limits['user']!r}: {detail}"
        run.start_failed = True
        self._send(("start_failed", run.job_id,
                    f"cannot start {run.limits['program']!r}: {detail}"))

    def _report_start(self, run: _Run) -> None:
        run.start_reported = True
        self._send(("started", run.job_id, run.pid, run.start_ticks, run.started_epoch))

    def _on_output(self, tail: _Tail) -> None:
        if tail.read() == 0:
            self._close_tail(tail)

    def _close_tail(self, tail: _Tail) -> None:
        if tail.open:
            tail.open = False
            self.selector.unregister(tail.fd)
            os.close(tail.fd)

    # -- reaping ------------------------------------------------------------------------------

    def _on_signal(self) -> None:
        try:
            while os.read(self.wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.by_pid.pop(pid, None)
            if run is not None:
                self._on_exit(run, status, usage)
            elif pid in self.spares:
                self.spares.pop(pid).close()
            # else: an orphan adopted as subreaper, or a leftover: reaped, nothing to record

    def _on_exit(self, run: _Run, status: int, usage) -> None:
        run.reaped = True
        run.wait_status = status
        run.cpu_seconds = usage.ru_utime + usage.ru_stime
        run.peak_rss_bytes = usage.ru_maxrss * 1024
        run.ended_epoch = time.time()
        run.sigkill_at = None
        if run.starting:  # it died before the status pipe said how the start went
            while True:
                try:
                    chunk = os.read(run.status_read, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                run.status += chunk
            self._started(run)
        if run.start_failed:
            self._signal_tree(run, signal.SIGKILL)
            self._discard(run)
            return
        if run.kill_outcome is not None or run.limits["kill_leftovers"]:
            # run.tree may hold processes found while it was being killed; they may be
            # gone already, which their pidfds will say at once.
            if run.tree or self._may_have_left_processes(run):
                self._signal_tree(run, signal.SIGKILL)
            if run.tree:
                self._watch_leftovers(run)
        else:
            self._close_tree(run)
        if not run.tree:
            self._complete(run)

    def _may_have_left_processes(self, run: _Run) -> bool:
        """Whether the reaped run may have left processes behind, without reading all of
        /proc: every process it left is now a descendant of one of the launcher's own
        children (it is their subreaper), so only those need a look."""
        data = _read_proc(f"/proc/{self.pid}/task/{self.pid}/children")
        if data is None:
            return True  # no such file on this kernel: do the full search
        children = [int(pid) for pid in data.split()]
        for pid in children:
            if pid in self.by_pid or pid in self.spares:
                continue
            fields = _stat_fields(pid)
            if fields is None:
                continue
            group = None if fields[0] == b"Z" else int(fields[2])
            if group == run.pid or self._token_of(pid, int(fields[19])) == run.token:
                return True
        return False

    def _watch_leftovers(self, run: _Run) -> None:
        run.leftover_deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        registered = self.selector.get_map()
        for pid, pidfd in run.tree.items():
            if registered.get(pidfd) is None:
                self.selector.register(pidfd, selectors.EVENT_READ,
                                       lambda pid=pid: self._on_leftover_exit(run, pid))

    def _on_leftover_exit(self, run: _Run, pid: int) -> None:
        pidfd = run.tree.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        if run.tree:
            return
        if not run.rescanned:  # something forked between the snapshot and the kill?
            run.rescanned = True
            self._signal_tree(run, signal.SIGKILL)
            if run.tree:
                self._watch_leftovers(run)
                return
        self._complete(run)

    def _complete(self, run: _Run) -> None:
        for tail in (run.out, run.err):
            tail.drain()
        run.result.drain(limit=None)
        fields = {
            "status": run.wait_status, "cpu_seconds": run.cpu_seconds,
            "peak_rss_bytes": run.peak_rss_bytes, "started_epoch": run.started_epoch,
            "ended_epoch": run.ended_epoch or time.time(), "stdout": bytes(run.out.data),
            "stderr": bytes(run.err.data), "result": bytes(run.result.data),
            "kill_outcome": run.kill_outcome, "kill_error": run.kill_error,
        }
        self._discard(run)
        self._send(("finished", run.job_id, fields))

    def _discard(self, run: _Run) -> None:
        self._close_tree(run)
        for tail in (run.out, run.err, run.result):
            self._close_tail(tail)
        self.runs.pop(run.job_id, None)
        if not any(not r.reaped for r in self.runs.values()):
            self.sample_at = None

    def _close_tree(self, run: _Run) -> None:
        for pidfd in run.tree.values():
            if self.selector.get_map().get(pidfd) is not None:
                self.selector.unregister(pidfd)
            os.close(pidfd)
        run.tree.clear()

    # -- killing ------------------------------------------------------------------------------

    def _kill(self, run: _Run, outcome: str, error: str, immediately: bool = False) -> None:
        """End a run for any cause: SIGTERM to its tree, SIGKILL after the grace (at once
        with ``immediately``, which also cuts short a grace already running). The first
        cause wins."""
        if run.reaped:
            return
        if run.kill_outcome is not None:
            if immediately and run.sigkill_at is not None:
                run.sigkill_at = None
                self._signal_tree(run, signal.SIGKILL)
            return
        run.kill_outcome, run.kill_error = outcome, error
        grace = 0 if immediately else run.limits["grace"]
        if grace > 0:
            self._signal_tree(run, signal.SIGTERM)
            run.sigkill_at = time.monotonic() + grace
        else:
            self._signal_tree(run, signal.SIGKILL)

    def _signal_tree(self, run: _Run, sig: int) -> None:
        """Send ``sig`` to the run's process, its process group, and every other process of
        it found now: descendants, and orphans adopted by the launcher carrying its token."""
        if not run.reaped:
            os.kill(run.pid, sig)  # our unreaped child: the pid cannot be someone else's
        try:
            # The group id stays reserved while any member lives; we only call this before
            # or right after reaping the leader, so it cannot name someone else's group.
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        # Then the rest. Children of processes killed above are re-parented to the launcher
        # (a subreaper) and keep the run's token, so this late snapshot still finds them.
        self._find_tree(run, _scan())
        for pidfd in run.tree.values():
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                pass

    def _find_tree(self, run: _Run, table: dict) -> None:
        """Add the run's other live processes to ``run.tree`` (pid -> pidfd)."""
        for pid in self._members(run, table, _children_of(table)):
            if pid in run.tree or pid == run.pid and not run.reaped:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            if _start_ticks(pid) == table[pid][4]:  # still the process we found
                run.tree[pid] = pidfd
            else:
                os.close(pidfd)

    def _members(self, run: _Run, table: dict, children: dict) -> set[int]:
        """Pids of the run's live processes in ``table`` (root, group, adopted, descendants)."""
        if run.reaped and (run.pid in self.by_pid or run.pid in self.spares):
            roots = set()  # the group is gone and its id was reused
        else:
            roots = {pid for pid, row in table.items() if row[1] == run.pid and row[6] != "Z"}
        if not run.reaped:
            roots.add(run.pid)
        for pid in children.get(self.pid, ()):
            if pid not in self.by_pid and table[pid][6] != "Z" and \
                    self._token_of(pid, table[pid][4]) == run.token:
                roots.add(pid)
        found = set()
        stack = list(roots)
        while stack:
            pid = stack.pop()
            if pid in found:
                continue
            found.add(pid)
            stack.extend(children.get(pid, ()))
        return {pid for pid in found if pid in table and table[pid][6] != "Z"}

    def _token_of(self, pid: int, start: int) -> str | None:
        key = (pid, start)
        if key not in self.tokens_seen:
            token = None
            for entry in (_read_proc(f"/proc/{pid}/environ") or b"").split(b"\0"):
                if entry.startswith(_TOKEN_PREFIX):
                    token = entry[len(_TOKEN_PREFIX):].decode(errors="replace")
            if len(self.tokens_seen) > 10000:
                self.tokens_seen.clear()
            self.tokens_seen[key] = token
        return self.tokens_seen[key]

    # -- sampling -----------------------------------------------------------------------------

    def _sample(self) -> None:
        """One /proc pass for every running run: CPU, RSS, processes; the memory limit."""
        now = time.monotonic()
        self.sample_at = now + self.sample_interval
        table = _scan()
        children = _children_of(table)
        samples = []
        for run in list(self.runs.values()):
            if run.reaped or run.starting:
                continue
            members = self._members(run, table, children)
            ticks = rss_pages = 0
            for pid in members:
                row = table[pid]
                ticks += row[2] + (row[3] if pid == run.pid else 0)
                rss_pages += row[5]
            rss = rss_pages * _PAGE_SIZE
            run.sampled_peak = max(run.sampled_peak, rss)
            samples.append((run.job_id, ticks / _CLOCK_TICKS, rss, run.sampled_peak,
                            len(members), now))
            limit = run.limits["memory_limit_mb"]
            if limit is not None and rss > limit * 1024 * 1024 and run.kill_outcome is None:
                self._kill(run, "memory_exceeded", f"memory limit {_plain(limit)} MB "
                                                   f"exceeded (rss {rss / 1048576:.0f} MB)")
        if samples:
            self._send(("usage", samples))


def _freeze() -> None:
    """Keep the garbage collector of every forked run off what is loaded now (modules):
    collecting it there would touch, and so copy, each of its pages."""
    gc.collect()
    gc.freeze()


def _scan() -> dict[int, tuple]:
    """Every process, in one pass over /proc:
    pid -> (ppid, pgrp, own cpu ticks, reaped children's cpu ticks, start ticks, rss pages,
    state)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:
            continue
        try:
            data = os.read(fd, 2048)
        except OSError:
            continue
        finally:
            os.close(fd)
        fields = data[data.rfind(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]),
                            int(fields[13]) + int(fields[14]), int(fields[19]),
                            int(fields[21]), fields[0].decode())
    return table


def _children_of(table: dict) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    return children


def _can_enter(path: str | None) -> bool:
    """Whether a process of ours could chdir into ``path`` now."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode) and os.access(path, os.X_OK)
    except (OSError, TypeError, ValueError):
        return False


def _read_proc(path: str) -> bytes | None:
    """The whole of a /proc file, or None if it cannot be read (the process is gone).
    With os.open and os.read: a buffered file object costs several times more, and this
    runs for every run."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    parts = []
    try:
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(parts)


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    data = _read_proc(f"/proc/{pid}/stat")
    return data[data.rfind(b")") + 2:].split() if data else None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (what psutil's create_time uses)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def _group_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == b"Z" else int(fields[2])


def _plain(number: float) -> str:
    """``5`` for 5.0, ``0.5`` for 0.5: numbers as a person would write them."""
    return f"{number:f}".rstrip("0").rstrip(".")


def _log(text: str) -> None:
    print(f"orchestrator launcher {os.getpid()}: {text}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    launcher = Launcher(int(argv[1]))
    try:
        launcher.serve()
    except BaseException:
        _log("failed; killing every run:\n" + traceback.format_exc())
        for run in list(launcher.runs.values()):
            try:
                launcher._signal_tree(run, signal.SIGKILL)
            except BaseException:
                pass
        os._exit(70)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
