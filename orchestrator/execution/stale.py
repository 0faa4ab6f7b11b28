"""Kill what a dead orchestrator instance left running, found by pid and creation time.

The state layer records each run's pid and its creation time (``RunFuture.pid`` and
``RunFuture.pid_create_time``). At start-up, a run still marked running belongs to an
instance that died; if its process still exists *and* was created at the recorded time, it
is that run (a pid alone may have been reused by now), and it is killed with its process
group. Nothing is ever matched by name.
"""

from __future__ import annotations

import os
import select
import signal

import psutil

__all__ = ["kill_stale"]

CREATE_TIME_TOLERANCE = 0.01
"""Seconds two creation times may differ and still name one process (a clock tick)."""

EXIT_WAIT_SECONDS = 5.0
"""How long to wait for the killed processes to be gone."""


def kill_stale(pid: int, create_time: float, grace: float = 0.0) -> bool:
    """Kill the process ``pid`` if it exists and was created at ``create_time``, with its
    process group (when it leads one) and its descendants.

    With ``grace`` > 0 they get SIGTERM first and SIGKILL after ``grace`` seconds (or as
    soon as the process has exited); otherwise SIGKILL at once. Returns once the process is
    gone (or after a few seconds if it will not go).

    :returns: whether a matching process was found and killed.
    """
    try:
        pidfd = os.pidfd_open(pid)  # pins the process: the checks below are about this one
    except (ProcessLookupError, ValueError, OSError):
        return False
    try:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE \
                    or process.status() == psutil.STATUS_ZOMBIE:
                return False
            descendants = process.children(recursive=True)
            leads_group = os.getpgid(pid) == pid
        except (psutil.Error, ProcessLookupError):
            return False
        exited = False
        if grace > 0:
            _signal(pidfd, pid, leads_group, descendants, signal.SIGTERM)
            exited = _exited(pidfd, grace)
        _signal(pidfd, pid, leads_group, descendants, signal.SIGKILL, root=not exited)
        _exited(pidfd, EXIT_WAIT_SECONDS)
        return True
    finally:
        os.close(pidfd)


def _signal(pidfd: int, pid: int, leads_group: bool, descendants: list[psutil.Process],
            sig: int, root: bool = True) -> None:
    if root:
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            pass
    if leads_group:
        try:
            # While the leader's pidfd is open and it has not been reaped, or any member
            # lives, the group id cannot have been reused.
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for process in descendants:
        try:
            process.send_signal(sig)  # psutil checks it is still the process it found
        except psutil.Error:
            pass


def _exited(pidfd: int, timeout: float) -> bool:
    """Wait until the process of ``pidfd`` has exited; False after ``timeout``."""
    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)
