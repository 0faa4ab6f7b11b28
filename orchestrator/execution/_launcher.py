"""The launcher: one small single-threaded process that forks, watches and kills every run.

``process.py`` starts it as ``python _launcher.py SOCKET_FD`` (by path: it never imports the
orchestrator package, only its sibling files ``wire.py`` and ``cgroups.py``, by path) and
talks to it over one socket, in ``wire`` frames::

    orchestrator                          launcher (this file)                 run processes
    ------------                          --------------------                 -------------
    Init(preparation, interval,     -->   multiprocessing.spawn.prepare()
         cgroups)                         (sys.path, cwd, the user's __main__)
                                          make a cgroup, fork a spare into it ->  spare: waits
    Run(job, limits, token,         -->   set the cgroup's limits, hand the
        child job, modules)               job to a spare -------------------->  function: call
                                          import the modules of its function     command: exec
                                          and argument; when idle, fork the
                                          next spares
                        <-- Started(job, pid, start ticks, epoch, cgroup)
                        <-- StartFailed(job, message)                 (exec or chdir failed)
    Kill(job, outcome, error, now)  -->   SIGTERM to the run's tree; SIGKILL after the grace
    KillAll(outcome, error)         -->
                        <-- Usage([Sample(job, cpu, rss, peak, processes, at), ...])
                                          every sample interval
                        <-- Finished(job, Ending(...))                (reaped, leftovers
                                                                       gone, cgroup removed)
                        <-- Log(level, text)                          (for the orchestrator's
                                                                       log)
    EOF (orchestrator gone or done) -->   SIGKILL every run's tree, wait for it, exit

The child job is an encoded ``wire.FunctionJob`` or ``wire.CommandJob`` the launcher passes
on unread. A function's result comes back on its own pipe as one ``wire.Returned`` or
``wire.Raised`` frame, which the launcher relays unread; so a failure travels as plain
strings, and a value that cannot be unpickled fails only in the orchestrator, for that run.

Containment. With cgroups (``Init.cgroups`` set), each spare is moved into a cgroup of its
own right after the fork, before any job reaches it, so every process the run ever makes is
in it: a kill is ``cgroup.kill`` (or the freezer), limits are the kernel's, CPU and peak
memory are the whole tree's. Without cgroups each run is its own process group, and carries
``ORCHESTRATOR_RUN_TOKEN`` in its environment; a function run also writes it into the
environment block the kernel shows in ``/proc/PID/environ``, so processes it forks without
exec carry it visibly. The launcher is a child subreaper: whatever is orphaned below it
becomes its child, is found by that token (or by having been seen in the run's tree in a
sample), and is killed with its run; an orphan that no running run owns is killed when a run
ends. Either way every run dies with the launcher (PR_SET_PDEATHSIG).

Processes are forked from this process only, which has one thread and little memory, so a
fork costs about a millisecond; the next ones are forked ahead of time, so a run starts as
soon as its job arrives.
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
import importlib.util  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

import _signal  # noqa: E402


def _load_sibling(name: str, module_name: str):
    """Load ``name.py`` beside this file as ``module_name``, without the package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pickle finds classes through sys.modules
    spec.loader.exec_module(module)
    return module


wire = _load_sibling("wire", "_orchestrator_wire")
cgroups = _load_sibling("cgroups", "_orchestrator_cgroups")

LEFTOVER_WAIT_SECONDS = 5.0   # how long SIGKILLed leftovers may take to exit
EXIT_WAIT_SECONDS = 10.0      # at exit, how long to wait for every run to be gone
SPARES = 2                    # processes forked ahead of time, together, when none is left
STALL_CPU_SECONDS = 0.001      # less CPU than this between samples is no progress
SWEEP_ROUNDS = 200            # orphan sweeps in a row, for a lineage that forks as it dies
FREE_GROUPS = 4               # emptied cgroups kept for the next spares
IMPORT_SECONDS = 3.0          # longest import of a worker's module ahead of its next run
ERROR_BYTES = 8 * 1024        # longest error line of a function that raised
PREPARE_SECONDS = 20.0        # longest import of the main script at start
_FRAME = wire.FRAME
_READ_SIZE = 256 * 1024
_PIPE_SIZE = 256 * 1024       # fewer wake-ups for a run that prints a lot
_DRAIN_LIMIT = 1024 * 1024    # after exit, read at most this much: a leftover may keep writing
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TOKEN_PREFIX = (wire.RUN_TOKEN_VARIABLE + "=").encode()
_SIGCHLD, _SIGTERM, _SIGHUP, _SIGINT = (int(number) for number in (
    signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT))

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


# -- the run's side: what a spare does once forked ----------------------------------------------

def _spare_main(launcher_pid: int, job_read: int, status_write: int, out_write: int,
                err_write: int, result_write: int, warm_job: bytes | None,
                join: list[str]) -> None:
    """Join the cgroup, wait for one job, then run it. Never returns.

    ``join``: the ``cgroup.procs`` files of this run's cgroup, joined before anything else
    (empty: no cgroup; the run's token is then written into the environment block).

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
    _join(join, status_write)
    if warm_job is not None:
        try:
            pickle.loads(wire.decode(warm_job[_FRAME.size:]).call)
        except BaseException:
            pass
    job = _read_frame(job_read)
    if isinstance(job, wire.Join):  # hierarchies for this run's limits: joined first too
        _join(job.procs, status_write)
        job = _read_frame(job_read)
    os.close(job_read)
    if not join:
        _stamp_environment_block(job.variables.get(wire.RUN_TOKEN_VARIABLE, ""))
    if isinstance(job, wire.CommandJob):
        _exec_command(job, status_write)
    else:
        _call_function(job, status_write, result_write)


def _read_frame(fd: int):
    header = _read_exactly(fd, _FRAME.size)
    if len(header) < _FRAME.size:  # the launcher closed the spare without a job
        os._exit(0)
    return wire.decode(_read_exactly(fd, _FRAME.unpack(header)[0]))


def _join(procs: list[str], status_write: int) -> None:
    """Move this process into cgroups (it runs no user code yet); on failure say so on the
    status pipe and end: the run must not run outside its cgroup."""
    for path in procs:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            _fail_start(status_write, "cgroup", exc)


def _stamp_environment_block(token: str) -> None:
    """Write ``token`` into the placeholder the launcher's environment block holds for it.

    ``/proc/PID/environ`` shows that block, not ``os.environ``; a process forked without
    exec keeps it, so a daemon that a function run double-forks still shows its token.
    """
    try:
        fields = _stat_fields(os.getpid())
        start, end = int(fields[47]), int(fields[48])
        block = ctypes.string_at(start, end - start)
        at = block.find(b"\0" + _TOKEN_PREFIX)
        if at < 0:
            return
        at += 1 + len(_TOKEN_PREFIX)
        room = block.index(b"\0", at) - at
        value = token.encode()[:room]
        ctypes.memmove(start + at, value + b" " * (room - len(value)), room)
    except (OSError, ValueError, TypeError, IndexError):
        pass  # not fatal: the run is still found through its process group and samples


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


def _exec_command(job, status_write: int) -> None:
    _enter(job.identity, job.cwd, status_write)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    _set_environment(job.environment, job.variables)
    env = os.environ
    argv = job.argv
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


def _call_function(job, status_write: int, result_write: int) -> None:
    _enter(job.identity, job.cwd, status_write)
    # Started: nothing below can fail to start, and the orchestrator, waiting for this,
    # goes on while the rest is set up. (User code runs only once the function is loaded.)
    os.close(status_write)
    _set_environment(job.environment, job.variables)
    sys.path[:] = job.sys_path
    atexit._clear()  # the launcher's exit handlers are not the run's
    code = 0
    call = job.call
    try:
        function, pass_argument, argument = pickle.loads(call)
    except BaseException as exc:  # reported to the orchestrator, which records it
        message = wire.Raised(f"cannot load the function: {_error_line(exc)}",
                              _format_traceback(exc))
    else:
        del call
        message = _call(function, pass_argument, argument, job.max_result_bytes)
    try:
        _write_all(result_write, wire.encode(message))
        os.close(result_write)
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


def _call(function, pass_argument: bool, argument, max_result_bytes: int):
    try:
        value = function(argument) if pass_argument else function()
        if isinstance(value, types.CoroutineType):  # an async def worker: run it here
            import asyncio
            value = asyncio.run(value)
    except BaseException as exc:  # every way out of user code is a result
        return wire.Raised(_error_line(exc), _format_traceback(exc))
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:
        return wire.Raised(
            f"result of type {type(value).__name__!r} cannot be pickled: {_error_line(exc)}",
            _format_traceback(exc))
    if len(data) > max_result_bytes:
        return wire.Raised(
            f"result of type {type(value).__name__!r} is {len(data)} bytes pickled, over "
            f"max_result_bytes ({max_result_bytes}); return less (write big data to a file), "
            f"or raise max_result_bytes", "")
    return wire.Returned(type(value).__name__, data)


def _error_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        text = "<exception str() failed>"
    name = type(exc).__name__
    line = f"{name}: {text}" if text else name
    return line if len(line) <= ERROR_BYTES else line[:ERROR_BYTES - 3] + "..."


def _format_traceback(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:
        return f"{_error_line(exc)}\n(the traceback could not be formatted)\n"
    return text if len(text) <= wire.TAIL_BYTES else "...\n" + text[-wire.TAIL_BYTES:]


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
    """The launcher's end of one pipe from a run, keeping the last ``limit`` bytes (or, with
    ``head``, the first ``limit`` bytes, and whether more came: ``overflowed``)."""

    def __init__(self, fd: int, limit: int, head: bool = False):
        self.fd = fd
        self.limit = limit
        self.head = head
        self.overflowed = False
        self.total = 0          # bytes read in all
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
            self.total += len(chunk)
            if self.head:
                room = self.limit - len(self.data)
                self.overflowed |= len(chunk) > room
                self.data += chunk[:max(0, room)]
            else:
                self.data += chunk
                if len(self.data) > self.limit:
                    del self.data[:-self.limit]
        return len(chunk)

    def since(self, offset: int) -> bytes:
        """What came after byte ``offset`` of the stream, as far as the tail still has it."""
        first = self.total - len(self.data)  # offset of the tail's first byte
        return bytes(self.data[max(0, offset - first):])

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
    """A process forked ahead of time, waiting for its job (in its cgroup, if any)."""

    def __init__(self, pid, job_write, status_read, out_read, err_read, result_read, group):
        self.pid = pid
        self.start_ticks = _start_ticks(pid)  # read now, off the path of a start
        self.job_write = job_write
        self.status_read = status_read
        self.out_read = out_read
        self.err_read = err_read
        self.result_read = result_read
        self.group = group

    def close(self) -> None:
        for fd in (self.job_write, self.status_read, self.out_read, self.err_read,
                   self.result_read):
            try:
                os.close(fd)
            except OSError:
                pass


class _Run:
    """One run handed to a spare; owned by the launcher loop."""

    def __init__(self, job_id: int, limits, token: str, spare: _Spare):
        self.job_id = job_id
        self.limits = limits
        self.token = token
        self.pid = spare.pid
        self.start_ticks = spare.start_ticks
        self.group = spare.group      # its cgroup, or None (a process group only)
        self.starting = True  # until the status pipe closes
        self.start_reported = False
        self.start_failed = False
        self.status_read = spare.status_read
        os.set_blocking(self.status_read, False)
        self.status = bytearray()
        self.out = _Tail(spare.out_read, wire.TAIL_BYTES)
        self.err = _Tail(spare.err_read, wire.TAIL_BYTES)
        # the result frame, bounded: the run's process refuses a bigger result itself; more
        # than that is a process writing what it should not
        self.result = _Tail(spare.result_read, limits.max_result_bytes + 2 * wire.TAIL_BYTES,
                            head=True)
        self.started = time.monotonic()
        self.started_epoch = time.time()
        timeout = limits.timeout
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
        self.known: dict[int, int] = {}  # pid -> start ticks of members seen in samples
        self.leftover_deadline: float | None = None
        self.rescanned = False
        self.sampled_peak = 0       # the highest memory of the tree seen in a sample
        self.sampled_cpu = 0.0      # CPU seconds of the tree in the newest sample
        self.progress = (0.0, 0)    # CPU seconds and output bytes when it last made progress
        self.progress_at = self.started

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
        self.cgroups = None                       # wire.CgroupPlan, or None
        self.groups_made = 0
        self.free_groups: list = []               # emptied cgroups, ready for a spare
        self.kept_tokens: set[str] = set()        # runs whose leftovers stay (PG mode)
        self.prepare_problem: str | None = None   # why the main script did not load
        self.logged: set[str] = set()             # problems already logged once

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
        self._remove_home()

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
                    self._log("error", f"run {run.job_id}: leftover processes "
                                       f"{sorted(run.tree)} did not exit within "
                                       f"{LEFTOVER_WAIT_SECONDS}s of SIGKILL")
                    self._complete(run)
            elif run.sigkill_at is not None and now >= run.sigkill_at:
                run.sigkill_at = None
                self._signal_tree(run, signal.SIGKILL)
            elif run.kill_outcome is None and run.timeout_at is not None \
                    and now >= run.timeout_at:
                self._kill(run, "timed_out", f"timed out after {_plain(run.limits.timeout)}s")
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

    def _log(self, level: str, text: str, once: str | None = None) -> None:
        """A line for the orchestrator's log; with ``once``, only the first time that key
        comes up (a cgroup file system that broke says so once, not once per run)."""
        if once is not None:
            if once in self.logged:
                return
            self.logged.add(once)
        if self.closing:
            print(f"orchestrator launcher {self.pid}: {text}", file=sys.stderr, flush=True)
        else:
            self._send(wire.Log(level, text))

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
            message = wire.decode(memoryview(self.inbox)[offset + _FRAME.size:end])
            offset = end
            self._on_message(message)
            if self.closing:
                return
        del self.inbox[:offset]

    def _send(self, message) -> None:
        if self.closing:
            return
        self.outbox += wire.encode(message)
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

    def _on_message(self, message) -> None:
        if isinstance(message, wire.Run):
            self._start(message)
        elif isinstance(message, wire.Ping):
            self._send(wire.Pong(message.number))
        elif isinstance(message, wire.TailRequest):
            run = self.runs.get(message.job_id)
            if run is None or run.reaped:
                self._send(wire.TailReply(message.request, False, b"", 0, b"", 0))
            else:
                for tail in (run.out, run.err):
                    tail.read()  # what is in the pipe now, too
                self._send(wire.TailReply(message.request, True,
                                          run.out.since(message.stdout_from), run.out.total,
                                          run.err.since(message.stderr_from), run.err.total))
        elif isinstance(message, wire.Kill):
            run = self.runs.get(message.job_id)
            if run is not None:
                self._kill(run, message.outcome, message.error, message.immediately)
        elif isinstance(message, wire.KillAll):
            for run in list(self.runs.values()):
                self._kill(run, message.outcome, message.error)
        elif isinstance(message, wire.Init):
            self.sample_interval = message.sample_interval
            self.cgroups = message.cgroups
            self.prepare_problem = self._prepare(message.preparation)
            self.ready = True
            self._send(wire.Ready(self.prepare_problem))

    def _prepare(self, preparation: dict) -> str | None:
        """Load the main script (and sys.path, cwd) as multiprocessing's spawn does; why it
        could not be, or None."""
        import multiprocessing.spawn

        problem = None
        try:
            with _ImportDeadline(PREPARE_SECONDS):
                multiprocessing.spawn.prepare(preparation)
        except _ImportTimeout:
            problem = (f"importing the main script took more than {PREPARE_SECONDS:g}s and "
                       f"was given up; functions defined in it cannot run")
        except BaseException as error:  # a user script that fails to import
            if type(error).__name__ == "NestedStartError":  # it starts an orchestrator
                problem = str(error)
            else:
                problem = f"the main script could not be imported: {_error_line(error)}"
                self._log("warning", "could not prepare the workers' modules:\n"
                          + traceback.format_exc())
        _freeze()
        return problem

    # -- starting -----------------------------------------------------------------------------

    def _new_group(self):
        """A fresh cgroup for the next spare, or None (no cgroups, or they failed: the run is
        then contained by its process group, and the failure is logged once)."""
        if self.cgroups is None:
            return None
        if self.free_groups:
            return self.free_groups.pop()
        self.groups_made += 1
        group = cgroups.Group(self.cgroups, f"run-{self.groups_made}")
        try:
            group.create()
        except OSError as error:
            self._log("error", f"cannot create a cgroup for the next run ({error}); runs are "
                               f"contained by process groups until it works again",
                      once=f"create {error.errno}")
            return None
        return group

    def _fork_spare(self) -> None:
        group = self._new_group()
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
        join = group.procs() if group is not None else []
        pid = os.fork()
        if pid == 0:
            try:
                _spare_main(self.pid, job_read, status_write, out_write, err_write,
                            result_write, self.warm_job, join)
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
        # The spare joins its cgroup itself, before it reads a job: every process the run
        # makes is in it, and the launcher never waits on the kernel's migration lock.
        self.spares[pid] = _Spare(pid, job_write, status_read, out_read, err_read,
                                  result_read, group)

    def _drop_spares(self) -> None:
        spares = list(self.spares.values())
        self.spares.clear()
        for spare in spares:
            self._drop_spare(spare)

    def _start(self, message) -> None:
        job_id, limits, token, frame, modules = message
        if self.prepare_problem is not None and "__main__" in modules:
            # its function lives in a main script that did not load: say why, at once
            self._send(wire.StartFailed(job_id, f"cannot start {limits.program!r}: "
                                                f"{self.prepare_problem}"))
            return
        for _attempt in range(2):
            if not self.spares:
                self._fork_spare()
            spare = self.spares.pop(next(iter(self.spares)))
            problem, extra = self._limit(spare, limits)
            if problem is not None:
                self._drop_spare(spare)
                self._send(wire.StartFailed(job_id, f"cannot start {limits.program!r}: "
                                                    f"{problem}"))
                return
            try:
                _write_all(spare.job_write, wire.encode(wire.Join(extra)) + frame if extra
                           else frame)
            except BrokenPipeError:  # the spare died; its reap is handled as an orphan's
                self._drop_spare(spare)
                continue
            break
        else:
            self._send(wire.StartFailed(job_id, "cannot start: the spare process died"))
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
        if limits.function and not limits.user and _can_enter(limits.workdir):
            # A function's spare holds the job now; all that can still fail is its chdir,
            # into a directory just checked: report the start without waiting for the spare
            # to say so (should the directory go away meanwhile, StartFailed follows).
            self._report_start(run)
        if modules:
            self._import(limits.sys_path, modules)
        if limits.warm and all(name in sys.modules for name in modules):
            self.warm_job = frame  # unpickling it runs and imports nothing
        # The next spare is forked as soon as the loop is idle (see serve).

    def _limit(self, spare: _Spare, limits) -> tuple[str | None, list[str]]:
        """Set the run's kernel limits on the spare's cgroup: ``(why they cannot be, or
        None; cgroups the run's process must join for them)``."""
        if spare.group is None:
            if limits.pids_limit is not None or limits.cpu_limit is not None:
                return "pids_limit and cpu_limit need a cgroup, and none could be made", []
            return None, []  # memory_limit_mb is then enforced by sampling
        memory = None if limits.memory_limit_mb is None else \
            int(limits.memory_limit_mb * 1024 * 1024)
        try:
            return None, spare.group.limit(memory, limits.pids_limit, limits.cpu_limit)
        except OSError as error:
            return f"cannot set its limits in {spare.group.path}: {error}", []

    def _cgroup_failed(self, detail: str) -> None:
        """A process could not join its cgroup: runs are contained by process groups from
        now on (this launcher's life), and it is said once."""
        self._log("error", f"a run's process could not join its cgroup ({detail}); runs are "
                           f"contained by process groups until the launcher is restarted",
                  once="join")
        self.cgroups = None
        for group in self.free_groups:
            self._remove_group(group)
        self.free_groups.clear()

    def _drop_spare(self, spare: _Spare) -> None:
        """Kill and reap a spare that was taken out of ``spares``; remove its cgroup."""
        spare.close()
        try:
            os.kill(spare.pid, signal.SIGKILL)
            os.waitpid(spare.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # already reaped (as an orphan)
        if spare.group is not None:
            self._retire_group(spare.group)

    def _import(self, sys_path: list[str], modules: list[str]) -> None:
        """Import the modules of the run's function and argument here too, so that the next
        spare has them loaded already."""
        missing = [name for name in modules if name not in sys.modules]
        if not missing:
            return
        sys.path[:] = sys_path
        imported = False
        for name in missing:
            try:
                # A module that takes long to import is left to the runs: the launcher
                # must keep answering (and keep timing out runs) meanwhile.
                with _ImportDeadline(IMPORT_SECONDS):
                    importlib.import_module(name)
                imported = True
            except _ImportTimeout:
                self._log("warning", f"importing {name} took more than {IMPORT_SECONDS:g}s; "
                                     f"each run imports it itself", once=f"slow {name}")
            except BaseException:  # the run itself reports why it cannot be loaded
                pass
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
            detail = f"working directory {run.limits.workdir!r}: {detail}"
        elif stage == "user":
            detail = f"cannot become user {run.limits.user!r}: {detail}"
        elif stage == "cgroup":
            detail = f"cannot join its cgroup: {detail}"
            self._cgroup_failed(detail)
        run.start_failed = True
        self._send(wire.StartFailed(run.job_id,
                                    f"cannot start {run.limits.program!r}: {detail}"))

    def _report_start(self, run: _Run) -> None:
        run.start_reported = True
        self._send(wire.Started(run.job_id, run.pid, run.start_ticks, run.started_epoch,
                                run.group.path if run.group is not None else None))

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
                spare = self.spares.pop(pid)
                status = _read_quietly(spare.status_read)
                if status.startswith(b"cgroup "):
                    self._cgroup_failed(f"[Errno {status.split()[1].decode()}]")
                spare.close()
                if spare.group is not None:
                    self._retire_group(spare.group)
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
        if run.kill_outcome is not None or run.limits.kill_leftovers:
            # run.tree may hold processes found while it was being killed; they may be
            # gone already, which their pidfds will say at once.
            if run.tree or self._may_have_left_processes(run):
                self._signal_tree(run, signal.SIGKILL)
            if run.tree:
                self._watch_leftovers(run)
        else:
            self._keep_leftovers(run)
        if not run.tree:
            self._complete(run)

    def _may_have_left_processes(self, run: _Run) -> bool:
        """Whether the reaped run may have left processes behind. With a cgroup: whether it
        still has members. Otherwise, without reading all of /proc: every process it left is
        now a descendant of one of the launcher's own children (it is their subreaper), so
        only those need a look."""
        if run.group is not None:
            return bool(run.group.members())
        for pid in self._adopted():
            fields = _stat_fields(pid)
            if fields is None:
                continue
            group = None if fields[0] == b"Z" else int(fields[2])
            if group == run.pid or self._token_of(pid, int(fields[19])) == run.token \
                    or run.known.get(pid) == int(fields[19]):
                return True
        return False

    def _adopted(self) -> list[int]:
        """The launcher's children that are neither a run's process nor a spare: orphans it
        adopted as their subreaper."""
        data = _read_proc(f"/proc/{self.pid}/task/{self.pid}/children")
        if data is None:
            return [pid for pid, row in _scan().items() if row[0] == self.pid
                    and pid not in self.by_pid and pid not in self.spares]
        return [pid for pid in map(int, data.split())
                if pid not in self.by_pid and pid not in self.spares]

    def _keep_leftovers(self, run: _Run) -> None:
        """``kill_leftovers=False``: what the run left is no longer its own."""
        self._close_tree(run)
        if run.group is not None:
            try:
                run.group.release()
            except OSError as error:
                self._log("error", f"cannot move the processes run {run.job_id} left out of "
                                   f"its cgroup ({error})", once=f"release {error.errno}")
        else:
            self.kept_tokens.add(run.token)
            if len(self.kept_tokens) > 10000:
                self.kept_tokens.clear()

    def _watch_leftovers(self, run: _Run) -> None:
        if run.leftover_deadline is None:
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
        # Anything forked between the snapshot and the kill? With a cgroup, look until it
        # is empty (cgroup.kill leaves nothing, but a kill one by one may: a cgroup file
        # system that turned unwritable); without, look once more.
        again = bool(run.group.members()) if run.group is not None else not run.rescanned
        if again:
            run.rescanned = True
            self._signal_tree(run, signal.SIGKILL)
            if run.tree:
                self._watch_leftovers(run)
                return
        self._complete(run)

    def _complete(self, run: _Run) -> None:
        for tail in (run.out, run.err):
            tail.drain()
        run.result.drain(limit=run.result.limit + _READ_SIZE)  # a leftover may keep writing
        result = bytes(run.result.data)
        if run.result.overflowed:
            result = wire.encode(wire.Raised(
                f"the result sent was over max_result_bytes "
                f"({run.limits.max_result_bytes}); it was not kept", ""))
        # Without a cgroup: wait4's figures (the run's process and the children it waited
        # for), or the tree's as last sampled where that is more.
        cpu = max(run.cpu_seconds or 0.0, run.sampled_cpu)
        peak = max(run.peak_rss_bytes or 0, run.sampled_peak)
        oom_kills, whole_tree = 0, False
        if run.group is not None:
            cpu, group_peak, oom_kills = run.group.finish()
            peak = group_peak or peak
            whole_tree = True
            if oom_kills and run.kill_outcome is None:
                run.kill_outcome, run.kill_error = "memory_exceeded", _memory_error(run,
                                                                                    oom_kills)
        ending = wire.Ending(
            status=run.wait_status, cpu_seconds=cpu, peak_rss_bytes=peak,
            started_epoch=run.started_epoch, ended_epoch=run.ended_epoch or time.time(),
            stdout=bytes(run.out.data), stderr=bytes(run.err.data),
            result=result, kill_outcome=run.kill_outcome,
            kill_error=run.kill_error, oom_kills=oom_kills, whole_tree=whole_tree,
            stdout_total=run.out.total, stderr_total=run.err.total)
        self._discard(run)
        self._send(wire.Finished(run.job_id, ending))
        if self.cgroups is None:
            self._sweep_orphans()

    def _discard(self, run: _Run) -> None:
        self._close_tree(run)
        for tail in (run.out, run.err, run.result):
            self._close_tail(tail)
        self.runs.pop(run.job_id, None)
        if run.group is not None:
            self._retire_group(run.group)
        if not any(not r.reaped for r in self.runs.values()):
            self.sample_at = None

    def _retire_group(self, group) -> None:
        """An attempt's cgroup is empty: keep it for the next spare, or remove it."""
        if len(self.free_groups) < FREE_GROUPS and not self.closing and group.recycle():
            self.free_groups.append(group)
        else:
            self._remove_group(group)

    def _remove_group(self, group) -> None:
        try:
            group.remove()
        except OSError as error:
            self._log("error", f"cannot remove cgroup {group.path} ({error}); it is removed "
                               f"when the orchestrator next starts",
                      once=f"remove {error.errno}")

    def _remove_home(self) -> None:
        for group in self.free_groups:
            self._remove_group(group)
        self.free_groups.clear()
        if self.cgroups is not None:
            for home in self.cgroups.homes.values():
                try:
                    os.rmdir(home)
                except OSError:
                    pass  # not empty: the orchestrator cleans it up

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
        grace = 0 if immediately else run.limits.grace
        if grace > 0:
            self._signal_tree(run, signal.SIGTERM)
            run.sigkill_at = time.monotonic() + grace
        else:
            self._signal_tree(run, signal.SIGKILL)

    def _signal_tree(self, run: _Run, sig: int) -> None:
        """Send ``sig`` to every process of the run; they are kept in ``run.tree`` (pinned by
        pidfds) to wait for."""
        if run.group is not None:
            self._signal_group(run, sig)
            return
        # Find the tree first, then signal: a parent killed first would re-parent its
        # children (to the launcher) before they could be found as its descendants.
        self._find_tree(run, _scan())
        if not run.reaped:
            os.kill(run.pid, sig)  # our unreaped child: the pid cannot be someone else's
        try:
            # The group id stays reserved while any member lives; we only call this before
            # or right after reaping the leader, so it cannot name someone else's group.
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pidfd in run.tree.values():
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                pass

    def _signal_group(self, run: _Run, sig: int) -> None:
        if not run.reaped:
            os.kill(run.pid, sig)
        if sig == signal.SIGKILL:
            try:
                run.group.kill()
            except OSError as error:  # the cgroup file system turned unwritable
                self._log("error", f"cannot kill cgroup {run.group.path} ({error}); killing "
                                   f"its processes one by one", once=f"kill {error.errno}")
        for pid, pidfd in run.group.signal(sig).items():
            if pid == run.pid and not run.reaped or pid in run.tree:
                os.close(pidfd)
            else:
                run.tree[pid] = pidfd

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
        """Pids of the run's live processes in ``table``: its process, its group, processes
        adopted by the launcher that carry its token or were seen in its tree before, and
        all their descendants."""
        if run.reaped and (run.pid in self.by_pid or run.pid in self.spares):
            roots = set()  # the group is gone and its id was reused
        else:
            roots = {pid for pid, row in table.items() if row[1] == run.pid and row[6] != "Z"}
        if not run.reaped:
            roots.add(run.pid)
        for pid in children.get(self.pid, ()):
            if pid in self.by_pid or pid in self.spares or table[pid][6] == "Z":
                continue
            if run.known.get(pid) == table[pid][4] or \
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
                    token = entry[len(_TOKEN_PREFIX):].decode(errors="replace").strip()
            if len(self.tokens_seen) > 10000:
                self.tokens_seen.clear()
            self.tokens_seen[key] = token
        return self.tokens_seen[key]

    def _sweep_orphans(self) -> None:
        """Kill orphans the launcher adopted that no run owns any more (without cgroups;
        with them every process is in its run's cgroup). Such an orphan left a run
        that ended, under a new process group, without a token (an exec with an empty
        environment): by elimination, a leftover. Swept again while new ones turn up, for a
        lineage that forks as it dies."""
        live = [run for run in self.runs.values() if run.group is None]
        for _ in range(SWEEP_ROUNDS):
            victims = []
            for pid in self._adopted():
                fields = _stat_fields(pid)
                if fields is None or fields[0] == b"Z":
                    continue
                ticks = int(fields[19])
                token = self._token_of(pid, ticks)
                if token in self.kept_tokens or any(
                        token == run.token or run.known.get(pid) == ticks
                        or int(fields[2]) == run.pid for run in live):
                    continue
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    continue
                if _start_ticks(pid) == ticks:
                    victims.append(pidfd)
                else:
                    os.close(pidfd)
            if not victims:
                return
            for pidfd in victims:
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(pidfd)
            self._on_signal()  # reap them, so the next round sees only new ones

    # -- sampling -----------------------------------------------------------------------------

    def _sample(self) -> None:
        """One look at every running run: CPU, memory, processes; the memory limit."""
        now = time.monotonic()
        self.sample_at = now + self.sample_interval
        samples = []
        table = children = None
        for run in list(self.runs.values()):
            if run.reaped or run.starting:
                continue
            if run.group is not None:
                sample = self._sample_group(run, now)
            else:
                if table is None:
                    table = _scan()
                    children = _children_of(table)
                sample = self._sample_tree(run, table, children, now)
            if sample is not None:
                samples.append(sample)
                self._check_stall(run, sample, now)
        if samples:
            self._send(wire.Usage(samples))

    def _check_stall(self, run: _Run, sample, now: float) -> None:
        """End a run whose whole tree has used no CPU and written no output for its
        ``stall`` seconds (a job hung on a dead peer, say), as a timeout ends one."""
        output = run.out.total + run.err.total
        cpu, written = run.progress
        if sample.cpu_seconds > cpu + STALL_CPU_SECONDS or output > written:
            run.progress = (sample.cpu_seconds, output)
            run.progress_at = now
        elif run.limits.stall is not None and run.kill_outcome is None \
                and now - run.progress_at >= run.limits.stall:
            self._kill(run, "stalled", f"stalled: no CPU or output for "
                                       f"{_plain(run.limits.stall)} s")

    def _sample_group(self, run: _Run, now: float):
        current, peak = run.group.memory()
        run.sampled_peak = max(run.sampled_peak, current)
        oom_kills = run.group.oom_kills()
        if oom_kills and run.kill_outcome is None:
            # The kernel killed part of the tree at the limit; the rest goes too.
            self._kill(run, "memory_exceeded", _memory_error(run, oom_kills), immediately=True)
        return wire.Sample(run.job_id, run.group.cpu_seconds(), current,
                           peak or run.sampled_peak, run.group.processes(), now)

    def _sample_tree(self, run: _Run, table: dict, children: dict, now: float):
        members = self._members(run, table, children)
        ticks = rss_pages = 0
        for pid in members:
            row = table[pid]
            ticks += row[2] + (row[3] if pid == run.pid else 0)
            rss_pages += row[5]
            run.known[pid] = row[4]  # followed should it leave the tree later
        if len(run.known) > 4 * len(members) + 1000:
            run.known = {pid: tick for pid, tick in run.known.items() if pid in members}
        rss = rss_pages * _PAGE_SIZE
        run.sampled_peak = max(run.sampled_peak, rss)
        run.sampled_cpu = max(run.sampled_cpu, ticks / _CLOCK_TICKS)
        limit = run.limits.memory_limit_mb
        if limit is not None and rss > limit * 1024 * 1024 and run.kill_outcome is None:
            self._kill(run, "memory_exceeded", f"memory limit {_plain(limit)} MB "
                                               f"exceeded (rss {rss / 1048576:.0f} MB)")
        return wire.Sample(run.job_id, ticks / _CLOCK_TICKS, rss, run.sampled_peak,
                           len(members), now)


class _ImportTimeout(Exception):
    """An import in the launcher took longer than it may."""


class _ImportDeadline:
    """Interrupt the Python code inside after ``seconds`` (SIGALRM raises in it); while
    inside, the importing marker is set, so a script that would start an orchestrator when
    imported fails at once instead."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        def expire(*_):
            raise _ImportTimeout()

        os.environ[wire.IMPORTING_VARIABLE] = "1"
        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc_info):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        os.environ.pop(wire.IMPORTING_VARIABLE, None)
        return False


def _memory_error(run: _Run, oom_kills: int) -> str:
    return (f"memory limit {_plain(run.limits.memory_limit_mb or 0)} MB exceeded: the kernel "
            f"killed {oom_kills} process{'es' if oom_kills != 1 else ''} at the limit")


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


def _read_quietly(fd: int) -> bytes:
    """What a pipe holds now, without waiting."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


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


def _plain(number: float) -> str:
    """``5`` for 5.0, ``0.5`` for 0.5: numbers as a person would write them."""
    return f"{number:f}".rstrip("0").rstrip(".")


def main(argv: list[str]) -> None:
    launcher = Launcher(int(argv[1]))
    try:
        launcher.serve()
    except BaseException:
        print(f"orchestrator launcher {os.getpid()}: failed; killing every run:\n"
              + traceback.format_exc(), file=sys.stderr, flush=True)
        for run in list(launcher.runs.values()):
            try:
                launcher._signal_tree(run, signal.SIGKILL)
            except BaseException:
                pass
        os._exit(70)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
