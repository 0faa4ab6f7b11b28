"""Worker functions for the fault matrix; they run in worker processes.

Every worker writes ``start``/``end`` lines to the journal named by ``FAULT_DIR``:
``start <worker> <CLOCK_MONOTONIC seconds> <pid>``. A worker's first call misbehaves (the
fault); later calls succeed, so a test can show that the next run works. Pids of processes a
worker leaves behind go to ``<worker>.pids`` so the test can check they are gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from journal import append


def _dir() -> Path:
    return Path(os.environ["FAULT_DIR"])


def journal(event: str, name: str) -> None:
    """One line in the journal (see tests/journal.py)."""
    append(_dir(), event, name)


def _note_pid(name: str, pid: int) -> None:
    with open(_dir() / f"{name}.pids", "a") as file:
        file.write(f"{pid}\n")


def _first_call(name: str) -> bool:
    """True once per worker: on the call that is to misbehave."""
    marker = _dir() / f"{name}.faulted"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def _hang_ignoring_sigterm(name):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _sleep_forever()


def _segfault(name):
    ctypes.string_at(0)


def _exit_without_result(name):
    os._exit(7)


def _grandchild(name):
    child = subprocess.Popen(["sleep", "300"])
    _note_pid(name, child.pid)
    return "left a grandchild"


def _daemon(name):
    """Double-fork a ``sleep`` in its own session: not our descendant any more."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            second = os.fork()
            if second == 0:
                os.close(read_end)
                os.write(write_end, f"{os.getpid()}\n".encode())
                os.close(write_end)
                os.execvp("sleep", ["sleep", "300"])
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end) as pipe:
        _note_pid(name, int(pipe.readline()))
    return "left a daemon"


def _allocate_without_bound(name):
    blocks = []
    for _ in range(400):  # 4 GB at most, should nothing stop it
        blocks.append(b"\x01" * (10 * 1024 * 1024))
        time.sleep(0.01)
    _sleep_forever()


def _endless_output(name):
    line = "x" * 1023 + "\n"
    while True:
        sys.stdout.write(line)


def _unpicklable_result(name):
    return threading.Lock()


FAULTS = {
    "hang": _hang_ignoring_sigterm,
    "segfault": _segfault,
    "exit": _exit_without_result,
    "grandchild": _grandchild,
    "daemon": _daemon,
    "allocate": _allocate_without_bound,
    "output": _endless_output,
    "unpicklable": _unpicklable_result,
}


def faulty(config):
    """Misbehaves as ``config.name`` says on its first call, then succeeds."""
    journal("start", config.name)
    if _first_call(config.name):
        result = FAULTS[config.name](config.name)
    else:
        result = "fine"
    journal("end", config.name)
    return result


def quick(config):
    journal("start", config.name)
    journal("end", config.name)
    return config.name


def gate(config):
    """Holds its slot until the file ``open-<worker>`` exists."""
    journal("start", config.name)
    path = _dir() / f"open-{config.name}"
    while not path.exists():
        time.sleep(0.01)
    journal("end", config.name)


def hang(config):
    """Says it started, then hangs (it obeys SIGTERM)."""
    journal("start", config.name)
    _sleep_forever()


def crash():
    """Dies without a result on every call."""
    os._exit(3)
