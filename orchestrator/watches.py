"""Things the kernel tells about, so the dispatcher never polls: steps of the wall clock,
and a state file that was deleted or replaced.

Each watch is one thread blocked on one descriptor (and a pipe that stops it); it costs
nothing while nothing happens.

- :class:`ClockWatch`. Due times are wall-clock times, but a sleep counts monotonic seconds:
  when the clock is set (``date -s``, an NTP step, a resume from suspend) a sleeping
  dispatcher would wake at the wrong wall time. A ``timerfd`` on ``CLOCK_REALTIME`` armed
  with ``TFD_TIMER_CANCEL_ON_SET`` becomes readable, and its read fails with ``ECANCELED``,
  at every such step (systemd watches time the same way).
- :class:`FileWatch`. ``inotify`` on a file and on its directory: the file deleted, renamed,
  its links gone, or another file put at its name.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
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



class _DescriptorWatch:
    """One thread blocked on one descriptor until :meth:`stop`; ``_handle`` on each event."""

    name = "orchestrator-watch"

    def __init__(self) -> None:
        self._fd = -1
        self._stop_read = self._stop_write = -1
        self._thread: threading.Thread | None = None

    def _run(self, fd: int) -> None:
        self._fd = fd
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_write, b"x")
        self._thread.join()
        self._thread = None
        for descriptor in (self._fd, self._stop_read, self._stop_write):
            os.close(descriptor)
        self._fd = self._stop_read = self._stop_write = -1

    def _watch(self) -> None:
        while True:
            readable, _, _ = select.select([self._fd, self._stop_read], [], [])
            if self._stop_read in readable:
                return
            try:
                self._handle()
            except Exception:  # a watch must not die of one odd event
                logger.exception("{} failed on an event", self.name)

    def _handle(self) -> None:
        raise NotImplementedError


class ClockWatch(_DescriptorWatch):
    """Calls ``on_step()`` from its own thread each time the wall clock is stepped.

    :meth:`start` returns ``False`` where ``timerfd`` is not available; the caller must then
    wake up on its own now and then.
    """

    name = "orchestrator-clock"

    def __init__(self, on_step: Callable[[], None]):
        super().__init__()
        self._on_step = on_step
        self._libc = None

    def start(self) -> bool:
        libc = _libc()
        if libc is None:
            return False
        timer = libc.timerfd_create(_CLOCK_REALTIME, os.O_CLOEXEC | os.O_NONBLOCK)
        if timer < 0:
            return False
        self._libc = libc
        self._fd = timer
        if not self._arm():
            os.close(timer)
            self._fd = -1
            return False
        self._run(timer)
        return True

    def _arm(self) -> bool:
        far = _Timespec(int(time.time()) + _FAR_FUTURE_SECONDS, 0)
        spec = _Itimerspec(_Timespec(0, 0), far)
        flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
        return self._libc.timerfd_settime(self._fd, flags, ctypes.byref(spec), None) == 0

    def _handle(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.ECANCELED:
                raise
        self._arm()  # re-armed before the callback, so no step is missed
        logger.debug("the wall clock was set; due times are checked again")
        self._on_step()


_IN_ATTRIB, _IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x4, 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


class FileWatch(_DescriptorWatch):
    """Calls ``on_change()`` from its own thread when ``path`` may no longer be the file it
    was: deleted, renamed, unlinked (its link count changes), or replaced by another.

    :meth:`start` returns ``False`` where ``inotify`` is not available.
    """

    name = "orchestrator-file"

    def __init__(self, path: str, on_change: Callable[[], None]):
        super().__init__()
        self.path = path
        self._on_change = on_change

    def start(self) -> bool:
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            return False
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return False
        directory, name = os.path.split(self.path)
        self._name = os.fsencode(name)
        watched = [libc.inotify_add_watch(fd, os.fsencode(self.path),
                                          _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF),
                   libc.inotify_add_watch(fd, os.fsencode(directory or "."),
                                          _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
                                          | _IN_DELETE)]
        if min(watched) < 0:
            os.close(fd)
            return False
        self._file_watch = watched[0]
        self._run(fd)
        return True

    def _handle(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        relevant = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            watch, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            relevant |= watch == self._file_watch or name == self._name
        if relevant:
            self._on_change()
