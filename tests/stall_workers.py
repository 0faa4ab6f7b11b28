"""Workers for the stall and memory-admission tests: one that waits without a sound, one that
computes, one that peaks at 300 MB, one that holds a slot until told."""

from __future__ import annotations

import time


def wait_silently() -> None:
    """Hung on a peer that never answers: no CPU, no output."""
    time.sleep(60)


def compute() -> int:
    """Busy for 5 s, silent: CPU time is progress."""
    end, count = time.monotonic() + 5.0, 0
    while time.monotonic() < end:
        count += 1
    return count


def allocate_300_mb() -> int:
    """Touch 300 MB, then free it: a peak the orchestrator learns."""
    block = b"\x01" * (300 * 1024 * 1024)
    return len(block)


def wait_for_go(directory: str) -> None:
    """Hold a slot until ``directory``/go exists."""
    from pathlib import Path

    while not (Path(directory) / "go").exists():
        time.sleep(0.02)
