"""Worker functions for the process executor tests.

They live at module level so that they pickle by reference. Those that must be acted upon
while running write a marker file (or a pid file) once they have started: the test waits for
it instead of sleeping.
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


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    Path(temporary).write_text(text)
    os.replace(temporary, path)


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def double(value):
    return value * 2


def constant():
    return "called without an argument"


def print_both():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return None


def raise_value_error():
    raise ValueError("bad value 42")


class UnpicklableError(Exception):
    """Holds a lock, so neither it nor anything referring to it can be pickled."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable():
    raise UnpicklableError("carries a lock")


def return_generator():
    return (n for n in range(3))


def _refuse_to_load():
    raise RuntimeError("this value refuses to be loaded")


class LoadsNowhere:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def return_unloadable():
    return LoadsNowhere()


def exit_without_result():
    os._exit(3)


def segfault():
    ctypes.string_at(0)


def hang(marker):
    _write_atomically(marker, str(os.getpid()))
    _sleep_forever()


def ignore_sigterm_and_hang(marker):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write_atomically(marker, str(os.getpid()))
    _sleep_forever()


def allocate_and_hang(arguments):
    """Allocate ``megabytes`` (resident), write the marker, hang."""
    megabytes, marker = arguments
    block = b"\x01" * (megabytes * 1024 * 1024)  # written, so it is resident
    _write_atomically(marker, str(os.getpid()))
    _sleep_forever()
    return len(block)


def allocate_without_bound():
    """Allocate 10 MB more every 10 ms, until something stops it (or 4 GB, to be safe)."""
    blocks = []
    for _ in range(400):
        blocks.append(b"\x01" * (10 * 1024 * 1024))
        time.sleep(0.01)
    _sleep_forever()


def spawn_grandchild(arguments):
    """Start ``sleep`` in our process group; record its pid; return or hang."""
    pid_file, then_hang = arguments
    child = subprocess.Popen(["sleep", "1000"])
    _write_atomically(pid_file, str(child.pid))
    if then_hang:
        _sleep_forever()
    return child.pid


def spawn_daemon(arguments):
    """Double-fork a ``sleep`` that called setsid (own session, not our descendant)."""
    pid_file, then_hang = arguments
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.write(write_end, f"{os.getpid()}\n".encode())
                os.execv("/bin/sleep", ["sleep", "1000"])
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(read_end, 64)
        if not chunk:
            raise RuntimeError("the daemon died before telling its pid")
        line += chunk
    daemon_pid = int(line)
    _write_atomically(pid_file, str(daemon_pid))
    if then_hang:
        _sleep_forever()
    return daemon_pid


class NoisyToUnpickle:
    """An argument whose unpickling leaves a line in ``path``: a visible side effect."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_noisy_unpickled, (self.path,))


def _noisy_unpickled(path: str) -> NoisyToUnpickle:
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    return NoisyToUnpickle(path)


def takes_noisy(argument: NoisyToUnpickle) -> str:
    return argument.path
