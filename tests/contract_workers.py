"""Workers for the executor contract: importable wherever an attempt runs (a Ray node's
workers find them through the driver's code search path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class Report:
    """A result with some structure, to check it comes back whole."""

    def __init__(self, rows: list[dict], note: str) -> None:
        self.rows, self.note = rows, note

    def __eq__(self, other) -> bool:
        return isinstance(other, Report) and (self.rows, self.note) == (other.rows, other.note)


def report() -> Report:
    return Report([{"n": n, "square": n * n} for n in range(3)], "ü" * 3)


class TooEarly(Exception):
    """Raised with a field, to check the error comes back whole."""


def fail() -> None:
    def inner():
        raise TooEarly("the data is not there yet")
    inner()


def unpicklable():
    return (n for n in range(3))


def hold_with_grandchild(pid_file: str) -> None:
    """Ignore SIGTERM, start a grandchild that ignores it too, write both pids, print a
    line, hang."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"])
    print("holding", flush=True)
    temporary = f"{pid_file}.tmp"
    Path(temporary).write_text(f"{os.getpid()} {child.pid}\n")
    os.replace(temporary, pid_file)
    while True:
        time.sleep(3600)


def allocate_without_bound() -> None:
    blocks = []
    for _ in range(400):
        blocks.append(b"\x01" * (10 * 1024 * 1024))
        time.sleep(0.01)
    while True:
        time.sleep(3600)


def write_pid_and_wait(directory: str) -> str:
    """Write this process's pid to ``directory``/pids, then wait until ``directory``/go
    exists; return the pid."""
    folder = Path(directory)
    with open(folder / "pids", "a") as pids:
        pids.write(f"{os.getpid()}\n")
    while not (folder / "go").exists():
        time.sleep(0.02)
    return str(os.getpid())


def produce(directory: str) -> str:
    """The first step of a pipeline: write a file the next step reads."""
    (Path(directory) / "fetched").write_text("42\n")
    return "fetched"


def consume(directory: str) -> int:
    """The second step: read what the first wrote."""
    return int((Path(directory) / "fetched").read_text()) + 1
