"""Workers for the robustness tests: they attack the orchestrator from inside a run."""

from __future__ import annotations

import os
import signal
import time


def noop():
    return None


def hang():
    while True:
        time.sleep(3600)


def stop_my_launcher():
    """SIGSTOP the launcher that forked this run (its parent), then hang."""
    os.kill(os.getppid(), signal.SIGSTOP)
    hang()


def return_500_megabytes():
    return b"x" * (500 * 1024 * 1024)


def sleep_then_return(seconds: float = 2.0):
    time.sleep(seconds)
    return "slept"
