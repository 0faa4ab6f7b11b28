"""The work every scheduler in the lateness row runs, at module level so that every backend
imports it by reference: worker ``i`` sleeps :func:`work_seconds` and repeats every
:func:`interval_seconds`, the same for each peer.
"""

from __future__ import annotations

import time

WORKERS = 200


def work_seconds(index: int) -> float:
    """0.05 to 0.5 s, spread over the workers."""
    return 0.05 + 0.45 * ((index * 61) % WORKERS) / (WORKERS - 1)


def interval_seconds(index: int) -> float:
    """2 to 6 s, spread over the workers independently of the work."""
    return 2.0 + 4.0 * ((index * 37) % WORKERS) / (WORKERS - 1)


def work(index: int) -> float:
    """Record when user code starts (``time.time()``), then do the worker's work."""
    started = time.time()
    time.sleep(work_seconds(index))
    return started


def orchestrator_work(config) -> float:
    """:func:`work` for this project: the worker's name ``w<index>`` says which."""
    return work(int(config.name[1:]))


def hang_for_an_hour() -> None:
    time.sleep(3600)


def never() -> None:
    return None
