"""Notice steps of the wall clock, so the dispatcher can sleep until its next due time.

Due times are wall-clock times, but a sleep counts monotonic seconds: when the clock is set
(``date -s``, an NTP step, a resume from suspend) a sleeping dispatcher would wake at the
wrong wall time. Linux says when this happens: a ``timerfd`` on ``CLOCK_REALTIME`` armed with
``TFD_TIMER_CANCEL_ON_SET`` becomes readable, and its read fails with ``ECANCELED``, at every
such step (systemd watches time the same way). :class:`ClockWatch` runs one thread blocked on
that descriptor and calls back on each step; it costs nothing while the clock runs smoothly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
import time
from typing import Callable

from loguru import logger

_CLOCK_REALTIME = 0
_TFD_TIMER_ABSTIME = 1
_TFD_TIMER_CANCEL_ON_SET = 2
_FAR_FUTURE_SECONDS = 100 * 365 * 86400  # the timer must be armed; it never fires


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "timerfd_create") else None
    except OSError:
        return None


class ClockWatch:
    """Calls ``on_step()`` from its own thread each time the wall clock is stepped.

    :meth:`start` returns ``False`` where ``timerfd`` is not available; the caller must then
    wake up on its own now and then.
    """

    def __init__(self, on_step: Callable[[], None]):
        self._on_step = on_step
        self._timer = -1
        self._libc = None
        self._stop_read = self._stop_write = -1
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        libc = _libc()
        if libc is None:
            return False
        timer = libc.timerfd_create(_CLOCK_REALTIME, os.O_CLOEXEC | os.O_NONBLOCK)
        if timer < 0:
            return False
        self._timer, self._libc = timer, libc
        if not self._arm():
            os.close(timer)
            self._timer = -1
            return False
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._watch, name="orchestrator-clock",
                                        daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_write, b"x")
        self._thread.join()
        self._thread = None
        for descriptor in (self._timer, self._stop_read, self._stop_write):
            os.close(descriptor)
        self._timer = self._stop_read = self._stop_write = -1

    def _arm(self) -> bool:
        far = _Timespec(int(time.time()) + _FAR_FUTURE_SECONDS, 0)
        spec = _Itimerspec(_Timespec(0, 0), far)
        flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
        return self._libc.timerfd_settime(self._timer, flags, ctypes.byref(spec), None) == 0

    def _watch(self) -> None:
        while True:
            readable, _, _ = select.select([self._timer, self._stop_read], [], [])
            if self._stop_read in readable:
                return
            try:
                os.read(self._timer, 8)
            except BlockingIOError:
                continue
            except OSError as error:
                if error.errno != errno.ECANCELED:
                    raise
            self._arm()  # re-armed before the callback, so no step is missed
            logger.debug("the wall clock was set; due times are checked again")
            self._on_step()
