"""Shared fixtures: a leak check after every test, and helpers to wait on conditions."""

from __future__ import annotations

import faulthandler
import sys
import threading
import time

import psutil
import pytest


def wait_for(condition, timeout: float = 20.0, interval: float = 0.01, message: str = ""):
    """Wait until ``condition()`` is truthy and return its value; fail after ``timeout``.

    Used for conditions that have no event to block on (a process appearing or vanishing).
    On expiry it dumps every thread's traceback, so a hang explains itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(file=sys.stderr)
            pytest.fail(f"condition not met within {timeout}s: {message or condition}")
        time.sleep(interval)


def finish(process) -> int:
    """Wait for an ``orchestrator run`` subprocess to exit and return its code; fail (after
    killing it) if it has not stopped within 60 s."""
    import subprocess

    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("orchestrator run did not stop within 60 s")


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: this machine's pid 1 may never reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _live_children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(autouse=True)
def no_leaks():
    """After each test: no child process, zombie or extra thread of ours remains."""
    threads_before = set(threading.enumerate())
    yield
    leftovers = []

    def settled():
        leftovers[:] = _live_children()
        zombies = [c for c in psutil.Process().children(recursive=True)
                   if c.is_running() and c.status() == psutil.STATUS_ZOMBIE]
        extra = [t for t in threading.enumerate()
                 if t not in threads_before and t.is_alive()]
        return not leftovers and not zombies and not extra

    deadline = time.monotonic() + 10
    while not settled():
        if time.monotonic() > deadline:
            for child in leftovers:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            extra = [t.name for t in threading.enumerate()
                     if t not in threads_before and t.is_alive()]
            pytest.fail(f"leak after test: processes {[c.pid for c in leftovers]}, "
                        f"threads {extra}")
        time.sleep(0.02)


_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Make this test process a child subreaper while the test runs, as a service manager
    is: processes orphaned below it come to it, not to pid 1 (which, on this project's
    machines, disposes of orphans itself, so a test of ours could not tell who killed them).
    Zombies it adopted are reaped afterwards."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in psutil.Process().children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)
            except (psutil.NoSuchProcess, ChildProcessError):
                pass
