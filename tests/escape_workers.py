"""Workers that try to escape their run, as an attacker would.

Every process one of them makes notes itself in a pid file (``pid start-ticks`` per line,
appended), so a test can tell by those pids, not by walking a tree, whether anything is left.
Each writes ``ready`` files the test waits for instead of sleeping.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def note(pid_file: str, pid: int | None = None) -> None:
    """Append ``pid start-ticks`` of ``pid`` (default: this process) to ``pid_file``."""
    pid = os.getpid() if pid is None else pid
    data = Path(f"/proc/{pid}/stat").read_bytes()
    ticks = data[data.rfind(b")") + 2:].split()[19].decode()
    fd = os.open(pid_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, f"{pid} {ticks}\n".encode())
    finally:
        os.close(fd)


def noted(pid_file: str) -> list[tuple[int, int]]:
    """The ``(pid, start ticks)`` a worker noted."""
    try:
        text = Path(pid_file).read_text()
    except FileNotFoundError:
        return []
    return [(int(pid), int(ticks)) for pid, ticks in
            (line.split() for line in text.splitlines() if line.strip())]


def alive(pid_file: str) -> list[int]:
    """Noted processes that still exist (the same pid and start time, not a zombie)."""
    left = []
    for pid, ticks in noted(pid_file):
        try:
            data = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if int(fields[19]) == ticks and fields[0] != b"Z":
            left.append(pid)
    return left


def named(name: str) -> list[int]:
    """Live processes called ``name`` (their ``comm``, which a fork inherits)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            comm = data[data.index(b"(") + 1:data.rfind(b")")].decode(errors="replace")
            if comm == name and data[data.rfind(b")") + 2:][:1] != b"Z":
                found.append(int(entry))
    return found


def _rename(name: str) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def _ready(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


# -- the escapes --------------------------------------------------------------------------------

def python_daemon(arguments):
    """fork, setsid, fork, no exec: a plain Python daemon; the run returns at once."""
    pid_file, ready = arguments
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            note(pid_file)
            _ready(ready)
            _sleep_forever()
        os._exit(0)
    while not os.path.exists(ready):
        time.sleep(0.005)
    return "daemonized"


def disguised_daemon(arguments):
    """A double-forked daemon that execs with an empty environment and a kernel thread's
    name; the run returns at once."""
    pid_file, ready = arguments
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            note(pid_file)
            _ready(ready)
            os.execve("/bin/sleep", ["[kworker/0:1-events]", "100000"], {})
        os._exit(0)
    while not os.path.exists(ready):
        time.sleep(0.005)
    return "daemonized"


def new_group_then_hang(arguments):
    """A child in a process group of its own; the parent hangs past its timeout."""
    pid_file, ready = arguments
    if os.fork() == 0:
        os.setpgid(0, 0)
        note(pid_file)
        _ready(ready)
        _sleep_forever()
    note(pid_file)
    _sleep_forever()


def many_groups(arguments):
    """``count`` children, each in a process group of its own; the parent hangs."""
    pid_file, ready, count = arguments
    read_end, write_end = os.pipe()
    for _ in range(count):
        if os.fork() == 0:
            os.setpgid(0, 0)
            note(pid_file)
            os.write(write_end, b".")
            _sleep_forever()
    noted = 0
    while noted < count:
        noted += len(os.read(read_end, count))
    note(pid_file)
    _ready(ready)
    _sleep_forever()


def pid_hopper(arguments):
    """A lineage that forks, exits and takes a new process group every 2 ms; the run
    returns once it hops. Every process of the lineage is called ``name``."""
    pid_file, ready, name = arguments
    if os.fork() == 0:
        _rename(name)
        os.setsid()
        first = True
        while True:
            if os.fork():
                os._exit(0)  # the child goes on under a new pid
            os.setpgid(0, 0)
            note(pid_file)
            if first:
                _ready(ready)
                first = False
            time.sleep(0.002)
    while not os.path.exists(ready):
        time.sleep(0.005)
    return "hopping"


def busy_with_sleeps(arguments):
    """Hold ``count`` ``sleep`` processes until ``release`` exists, then end them; return."""
    import subprocess

    pid_file, ready, release, count = arguments
    children = [subprocess.Popen(["sleep", "100000"]) for _ in range(count)]
    for child in children:
        note(pid_file, child.pid)
    _ready(ready)
    while not os.path.exists(release):
        time.sleep(0.02)
    for child in children:
        child.kill()
        child.wait()
    return count


def _touched(megabytes: int) -> bytearray:
    """``megabytes`` of memory, every page of it resident."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])
    return block


def allocate(megabytes):
    """Touch ``megabytes`` of memory."""
    return len(_touched(megabytes))


def burst(megabytes):
    """Touch ``megabytes`` and free them again at once (well under a sampling interval)."""
    del _touched(megabytes)[:]
    return "freed"


def children_holding(arguments):
    """``count`` children each touch ``megabytes`` and hold it until all have (and ``hold``
    seconds more), then exit; the parent waits for them."""
    count, megabytes, pid_file, hold = arguments
    read_end, write_end = os.pipe()
    go_read, go_write = os.pipe()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            note(pid_file)
            block = _touched(megabytes)
            os.write(write_end, b".")
            os.read(go_read, 1)  # wait until every sibling holds its memory too
            time.sleep(hold)
            del block
            os._exit(0)
        pids.append(pid)
    held = 0
    while held < count:
        chunk = os.read(read_end, count)
        if not chunk:
            break
        held += len(chunk)
    os.write(go_write, b"." * count)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    if any(codes):
        raise RuntimeError(f"children ended with {codes}")
    return held


def kill_own_launcher(arguments):
    """Leave a Python daemon behind, then SIGKILL the launcher that forked this run."""
    pid_file, ready = arguments
    python_daemon((pid_file, ready))
    os.kill(os.getppid(), signal.SIGKILL)
    _sleep_forever()


def daemon_then_hang(arguments):
    """Leave a Python daemon behind, then hang (for tests that kill the orchestrator)."""
    pid_file, ready = arguments
    python_daemon((pid_file, ready))
    note(pid_file)
    _sleep_forever()


def fork_bomb(arguments):
    """Fork children that sleep until forking fails; note how many there were; hang."""
    pid_file, ready = arguments
    made = 0
    while made < 10_000:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            _sleep_forever()
        note(pid_file, pid)
        made += 1
    Path(ready).write_text(str(made))
    _sleep_forever()


def burn_cpu(seconds):
    """Spin for ``seconds`` of wall time; return the CPU seconds this process got."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    times = os.times()
    return times.user + times.system
