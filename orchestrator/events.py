"""Run events: one log line each, and the listeners that want them.

Logging goes through loguru under the name ``orchestrator``; the package disables it on
import, so a library user sees nothing until ``logger.enable("orchestrator")``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from datetime import datetime
from typing import Any, Callable

from loguru import logger


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """Something that happened to a worker or a run.

    ``kind`` is one of: due, started, succeeded, failed, timed_out, stalled, memory_exceeded,
    crashed,
    cancelled, interrupted, retried, skipped, missed, replacing, disabled, enabled.
    ``final`` is false on the outcome of an attempt that a retry follows (the run goes on).
    """

    kind: str
    worker: str
    at: datetime
    run_id: str | None = None
    attempt: int | None = None
    duration_seconds: float | None = None
    message: str = ""
    final: bool = True

    def line(self) -> str:
        parts = [f"{self.kind} {self.worker}"]
        if self.run_id is not None:
            parts.append(f"run={self.run_id}")
        if self.attempt is not None:
            parts.append(f"attempt={self.attempt}")
        if self.duration_seconds is not None:
            parts.append(f"duration={self.duration_seconds:.3f}s")
        if self.message:
            parts.append(f"- {self.message}")
        return " ".join(parts)


_LEVELS = {"failed": "WARNING", "timed_out": "WARNING", "stalled": "WARNING",
           "memory_exceeded": "WARNING",
           "crashed": "WARNING", "disabled": "WARNING", "due": "DEBUG", "skipped": "INFO",
           "missed": "WARNING", "interrupted": "WARNING"}


class EventBus:
    """Logs each event and hands it to listeners; a failing listener is logged and ignored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[RunEvent], Any]] = []
        self._held: list[RunEvent] | None = None  # events of the open transaction

    @contextlib.contextmanager
    def deferred(self):
        """Hold the events emitted inside until the block ends (after the state change they
        report has been committed), then emit them in order. Nested blocks join the outer."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for event in held:
                self._deliver(event)

    def add_listener(self, callback: Callable[[RunEvent], Any]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[RunEvent], Any]) -> None:
        with self._lock:
            self._listeners.remove(callback)

    def emit(self, event: RunEvent) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._deliver(event)

    def _deliver(self, event: RunEvent) -> None:
        logger.bind(worker=event.worker, run_id=event.run_id, event=event.kind).log(
            _LEVELS.get(event.kind, "INFO"), event.line())
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(event)
            except Exception:
                logger.exception("listener {!r} failed on {} event of {}", callback,
                                 event.kind, event.worker)
