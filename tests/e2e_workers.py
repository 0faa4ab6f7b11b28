"""Worker functions for the end-to-end tests; they run in worker processes.

Each writes ``start``/``end`` lines with CLOCK_MONOTONIC times (one clock for every process
of the machine) to the journal named by ``E2E_DIR``, so a test can rebuild who ran when.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import journal


def _dir() -> Path:
    return Path(os.environ["E2E_DIR"])


def _journal(event: str, name: str) -> None:
    journal.append(_dir(), event, name)


def short(config):
    """Runs about 0.15 s."""
    _journal("start", config.name)
    time.sleep(0.15)
    _journal("end", config.name)
    return config.name


def quick(config):
    _journal("start", config.name)
    _journal("end", config.name)
    return config.name


def gate(config):
    """Holds its slot until the file ``open-gate`` exists."""
    _journal("start", config.name)
    path = _dir() / "open-gate"
    while not path.exists():
        time.sleep(0.01)
    _journal("end", config.name)


def divide_by_zero():
    return 1 / 0


def fail_twice(config):
    """Fails on its first two attempts, then succeeds."""
    counter = _dir() / f"attempts-{config.name}"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= 2:
        raise RuntimeError(f"attempt {count} fails")
    return count


def hang_ignoring_sigterm(config):
    """Says it started, then ignores SIGTERM and sleeps forever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _journal("start", config.name)
    while True:
        time.sleep(1)


def spawn_grandchild_and_hang(config):
    """Starts a grandchild that sleeps, records its pid, then hangs."""
    import subprocess
    child = subprocess.Popen(["sleep", "300"])
    (_dir() / f"grandchild-{config.name}").write_text(str(child.pid))
    _journal("start", config.name)
    while True:
        time.sleep(1)


def hold_memory(config):
    """Holds 80 MB of touched memory until the file ``open-gate`` exists."""
    block = bytearray(80 * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    gate(config)
    return len(block)


def whoami():
    """The account the run executes as."""
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name, os.getegid()
