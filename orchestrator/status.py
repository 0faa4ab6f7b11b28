"""The ``get_status()`` document and the one-sentence reason for every worker.

::

    dispatcher thread --publishes--> Snapshot (views.py) <--reads-- StatusBoard.document()
                                                                     on the caller's thread

Built from the newest published snapshot on the reader's own thread, never on the
dispatcher's, as plain JSON types (names, numbers, ISO-8601 strings). Readers that ask at
once share one build (one at a time, so readers never crowd out the dispatcher); a worker's
unchanged fields are reused from the previous build.
"""

from __future__ import annotations

import os
import threading
import time
import types
from datetime import datetime, tzinfo
from typing import Callable

from . import admission
from .config import WorkerExecutionMode
from .views import Snapshot, WorkerView

#: How old a document may be before live figures of running runs are read anew.
FRESH_SECONDS = 0.5

_NOT_YET = types.SimpleNamespace(enabled=True, last_outcome=None)  # named, not registered


class StatusBoard:
    """Builds status documents from published snapshots, for any thread.

    A worker's entry is made anew only when it may have changed: its view was replaced, the
    orchestrator's state or the day changed, or it is running or waiting (its live figures
    and its reason depend on others then). Builds and copies happen one at a time, so that
    however many threads read, at most one of them competes with the dispatcher for the
    interpreter.

    :param snapshot: returns the newest published :class:`~orchestrator.views.Snapshot`.
    :param now: returns the current aware datetime.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], now: Callable[[], datetime]):
        self._snapshot = snapshot
        self._now = now
        self._lock = threading.Lock()
        self._built: tuple[Snapshot, float, dict] | None = None
        self._entries: dict[str, tuple[tuple, dict]] = {}  # name -> (what it depends on, entry)

    def document(self) -> dict:
        """The newest status document, shared: treat it as read-only."""
        with self._lock:
            return self._document()

    def copy(self) -> dict:
        """The newest status document: the caller's own dict and lists; the per-worker
        dicts are shared with other callers until they change (copying 10,000 of them for
        every caller would compete with the dispatcher): read them, do not change them."""
        with self._lock:
            document = self._document()
            return {**document, "worker_states": dict(document["worker_states"]),
                    "worker_names": list(document["worker_names"]),
                    "running_workers": list(document["running_workers"]),
                    "pending_workers": list(document["pending_workers"])}

    def _document(self) -> dict:
        snapshot = self._snapshot()
        built = self._built
        if built is not None and built[0] is snapshot and (
                not snapshot.running or time.monotonic() - built[1] < FRESH_SECONDS):
            return built[2]
        document = self._build(snapshot, self._now())
        self._built = (snapshot, time.monotonic(), document)
        return document

    def _build(self, snapshot: Snapshot, now: datetime) -> dict:
        running, pending = snapshot.running, snapshot.pending
        today = now.date()
        states = {}
        for name, view in snapshot.workers.items():
            key = (view, snapshot.state, today)
            cached = self._entries.get(name)
            if cached is None or view.running is not None or view.pending is not None \
                    or cached[0][0] is not view or cached[0][1:] != key[1:]:
                entry = _worker(snapshot, view, _fixed_fields(view, snapshot.default_timezone),
                                now)
                self._entries[name] = (key, entry)
            else:
                entry = cached[1]
            states[name] = entry
        return {
            "state": snapshot.state,
            "pid": os.getpid(),
            "workers": len(snapshot.workers),
            "running": len(running),
            "pending": len(pending),
            "max_concurrent": snapshot.max_concurrent,
            "containment": snapshot.containment,
            "containment_detail": snapshot.containment_detail,
            "worker_names": list(snapshot.workers),
            "running_workers": sorted(running),
            "pending_workers": sorted(pending),
            "worker_states": states,
        }


def build_status(snapshot: Snapshot, now: datetime) -> dict:
    """One status document for ``snapshot`` (no caching)."""
    return StatusBoard(lambda: snapshot, lambda: now).document()


def _fixed_fields(view: WorkerView, default_timezone: tzinfo) -> dict:
    """What depends on the worker's view alone."""
    config = view.config
    return {
        "enabled": view.enabled,
        "failures": view.consecutive_failures,
        "execution_mode": config.execution_mode.value,
        "priority": config.priority.value,
        "schedule": view.schedule,
        "timezone": str(config.timezone or default_timezone),
        "next_run": _iso(view.next_due) if view.enabled else None,
        "last_run": _iso(view.last_run),
        "last_success": _iso(view.last_success),
        "last_outcome": view.last_outcome.value if view.last_outcome else None,
        "last_duration": view.last_duration,
        "last_error": view.last_error,
        "skipped": view.skipped,
        "missed": view.missed,
        "disabled_reason": view.disabled_reason,
        "disabled_at": _iso(view.disabled_at),
    }


def _worker(snapshot: Snapshot, view: WorkerView, fixed: dict, now: datetime) -> dict:
    running, pending = view.running, view.pending
    if running is not None:
        word = "running"
    elif not view.enabled:
        word = "disabled"
    elif pending is not None:
        word = "pending"
    else:
        word = "idle"
    future = running.future if running is not None else None
    usage = getattr(future, "usage", None)  # live, while it runs
    tz = view.config.timezone or snapshot.default_timezone
    current = running or pending
    return {
        "state": word,
        **fixed,
        "running": running is not None,
        "pending": pending is not None,
        "run_id": current.run_id if current else None,
        "attempt": running.attempts if running else None,
        "started_at": _iso(running.started_at) if running else None,
        "pid": (future.pid if future is not None else None) if running else None,
        "node": running.node if running else None,
        "host": running.host if running else None,
        "cpu_seconds": usage.cpu_seconds if usage else view.cpu_seconds,
        "peak_rss_bytes": usage.peak_rss_bytes if usage else view.peak_rss_bytes,
        "learned_peak_bytes": view.learned_peak,
        "rss_bytes": usage.rss_bytes if usage else None,
        "processes": usage.processes if usage else None,
        "reason": reason(snapshot, view, now, tz),
    }


def reason(snapshot: Snapshot, view: WorkerView, now: datetime, tz: tzinfo) -> str:
    """One sentence on why ``view``'s worker is not running right now (or since when it is)."""
    config = view.config
    if view.running is not None:
        run = view.running
        placement = getattr(run.future, "placement", None)
        if placement and run.pid is None:
            return f"submitted, {placement}"
        started = run.started_at or run.due_at
        where = f" on {run.host or run.node}" if run.host or run.node else ""
        return (f"running since {_clock(started, now, tz)}{where} "
                f"(attempt {run.attempts} of {config.max_retries + 1})")
    if not view.enabled:
        why = view.disabled_reason or "disabled"
        if view.disabled_at is not None and why == "disabled by request":
            why += f" at {_clock(view.disabled_at, now, tz, seconds=False)}"
        return why
    pending = view.pending
    if pending is not None:
        if snapshot.state == "created":
            return "due, but the orchestrator has not been started"
        if snapshot.state != "running":
            return f"the orchestrator is {snapshot.state}"
        if pending.not_before is not None and pending.not_before > now:
            return (f"retry {pending.attempts + 1} of {config.max_retries + 1} at "
                    f"{_clock(pending.not_before, now, tz)} after: "
                    f"{pending.error or 'a failure'}")
        workers = snapshot.workers
        blocker = admission.blocker(config.depends_on, view.conflicts,
                                    lambda name: workers.get(name, _NOT_YET),
                                    snapshot.running, snapshot.pending)
        if blocker:
            return blocker
        busy = len(snapshot.running)
        if busy >= snapshot.max_concurrent:
            return f"no free slot ({busy}/{snapshot.max_concurrent} running)"
        if pending.waiting_for:
            return pending.waiting_for
        return "starting"
    mode = config.execution_mode
    if snapshot.state in ("stopping", "stopped"):
        return f"the orchestrator is {snapshot.state}"
    if mode is WorkerExecutionMode.TRIGGERED:
        upstreams = config.depends_on
        if upstreams:
            names = upstreams[0] if len(upstreams) == 1 else \
                f"{', '.join(upstreams[:-1])} and {upstreams[-1]}"
            verb = "succeeds" if len(upstreams) == 1 else "succeed"
            return f"runs after {names} {verb} (or when triggered)"
        return "runs only when triggered"
    if view.next_due is None:
        return "not scheduled until the orchestrator starts"
    sentence = f"next run at {_clock(view.next_due, now, tz)}"
    if mode is WorkerExecutionMode.CONTINUOUS and view.consecutive_failures:
        sentence += f" (backing off after {view.consecutive_failures} consecutive failures)"
    return sentence


def _clock(when: datetime, now: datetime, tz: tzinfo, seconds: bool = True) -> str:
    """``12:05:00`` today, ``2026-11-29 03:00:00`` on another day, in the worker's zone."""
    local = when.astimezone(tz)
    time_of_day = "%H:%M:%S" if seconds else "%H:%M"
    if local.date() == now.astimezone(tz).date():
        return local.strftime(time_of_day)
    return local.strftime(f"%Y-%m-%d {time_of_day}")


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
