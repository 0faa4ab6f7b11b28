"""The ``get_status()`` document and the one-sentence reason for every worker.

Built by the dispatcher thread from its own state (so it is consistent), as plain JSON
types: names, numbers, ISO-8601 strings.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from .config import WorkerExecutionMode
from .runs import Outcome


def describe_outcome(outcome: Outcome) -> str:
    """``"failed"``, ``"timed out"``, ... as words for a sentence."""
    return _OUTCOME_WORDS.get(outcome, outcome.value)


_OUTCOME_WORDS = {
    Outcome.TIMED_OUT: "timed out", Outcome.MEMORY_EXCEEDED: "exceeded its memory limit",
    Outcome.CRASHED: "crashed", Outcome.CANCELLED: "was cancelled",
    Outcome.INTERRUPTED: "was interrupted", Outcome.FAILED: "failed",
    Outcome.SUCCEEDED: "succeeded"}


def build_status(dispatcher, now: datetime) -> dict:
    """The whole status document; see README "Status" for its fields."""
    running = sorted(dispatcher.running)
    pending = sorted(dispatcher.pending)
    executor = dispatcher.executor
    return {
        "state": dispatcher.state,
        "containment": executor.containment if executor is not None else "none",
        "containment_detail": executor.containment_detail if executor is not None else "",
        "max_concurrent": dispatcher.max_concurrent,
        "workers": list(dispatcher.workers),
        "running": running,
        "pending": pending,
        "worker_states": {name: _worker(dispatcher, state, now)
                          for name, state in dispatcher.workers.items()},
    }


def _worker(dispatcher, state, now: datetime) -> dict:
    name = state.name
    config = state.config
    running = dispatcher.running.get(name)
    pending = dispatcher.pending.get(name)
    tz = config.timezone or dispatcher.default_timezone
    if running is not None:
        word = "running"
    elif not state.enabled:
        word = "disabled"
    elif pending is not None:
        word = "pending"
    else:
        word = "idle"
    current = running.record if running is not None else None
    usage = running.future.usage if running is not None else None  # live, while it runs
    return {
        "state": word,
        "enabled": state.enabled,
        "is_running": running is not None,
        "pending": pending is not None,
        "execution_mode": config.execution_mode.value,
        "priority": config.priority.value,
        "schedule": state.schedule.description if state.schedule else None,
        "next_run": _iso(state.next_due) if state.enabled else None,
        "run_id": current.run_id if current else (pending.record.run_id if pending else None),
        "attempt": current.attempts if current else None,
        "started_at": _iso(current.started_at) if current else None,
        "pid": running.future.pid if running is not None else None,
        "last_run": _iso(state.last_run),
        "last_success": _iso(state.last_success),
        "last_outcome": state.last_outcome.value if state.last_outcome else None,
        "last_duration": state.last_duration,
        "last_error": state.last_error,
        "consecutive_failures": state.consecutive_failures,
        "cpu_seconds": usage.cpu_seconds if usage else state.cpu_seconds,
        "peak_rss_bytes": usage.peak_rss_bytes if usage else state.peak_rss_bytes,
        "rss_bytes": usage.rss_bytes if usage else None,
        "processes": usage.processes if usage else None,
        "skipped": state.skipped,
        "missed": state.missed,
        "disabled_reason": state.disabled_reason,
        "reason": reason(dispatcher, state, now, tz),
    }


def reason(dispatcher, state, now: datetime, tz: tzinfo) -> str:
    """One sentence on why ``state``'s worker is not running right now (or since when it is)."""
    name = state.name
    config = state.config
    running = dispatcher.running.get(name)
    if running is not None:
        record = running.record
        return (f"running since {_clock(record.started_at, now, tz)} "
                f"(attempt {record.attempts} of {config.max_retries + 1})")
    if not state.enabled:
        return state.disabled_reason or "disabled"
    pending = dispatcher.pending.get(name)
    if pending is not None:
        if dispatcher.state == "created":
            return "due, but the orchestrator has not been started"
        if dispatcher.state != "running":
            return f"the orchestrator is {dispatcher.state}"
        if pending.not_before is not None and pending.not_before > now:
            return (f"retry {pending.record.attempts + 1} of {config.max_retries + 1} at "
                    f"{_clock(pending.not_before, now, tz)} after: "
                    f"{pending.record.error or 'a failure'}")
        blocker = dispatcher.blocker(name)
        if blocker:
            return blocker
        busy = len(dispatcher.running)
        if busy >= dispatcher.max_concurrent:
            return f"no free slot ({busy}/{dispatcher.max_concurrent} running)"
        return "starting"
    mode = config.execution_mode
    if dispatcher.state in ("stopping", "stopped"):
        return f"the orchestrator is {dispatcher.state}"
    if mode is WorkerExecutionMode.TRIGGERED:
        upstreams = dispatcher.graph.dependencies_of(name)
        if upstreams:
            return f"runs when {', '.join(upstreams)} succeeded (or on trigger_worker())"
        return "runs only when triggered (trigger_worker())"
    if state.next_due is None:
        return "not scheduled until the orchestrator starts"
    sentence = f"next run at {_clock(state.next_due, now, tz)}"
    if mode is WorkerExecutionMode.CONTINUOUS and state.consecutive_failures:
        sentence += f" (backing off after {state.consecutive_failures} consecutive failures)"
    return sentence


def _clock(when: datetime, now: datetime, tz: tzinfo) -> str:
    """``12:05:00`` today, ``2026-11-29 03:00:00`` on another day, in the worker's zone."""
    local = when.astimezone(tz)
    if local.date() == now.astimezone(tz).date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
