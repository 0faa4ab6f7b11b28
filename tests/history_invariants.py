"""The S12 promises, checked after the fact from the SQLite history and the workers' journal.

Two sources, each for what it knows best::

    journal (start/end lines, CLOCK_MONOTONIC, pid) --> who ran beside whom: self-overlap,
                                                        exclusion, max_concurrent, a dependent
                                                        inside its dependency's run
    state file (StateReader.recent)                 --> one terminal record per run, attempts
                                                        within max_retries, a dependent after a
                                                        failed dependency, auto-disable

Events collected in-process with ``orch.add_listener`` may be passed too: they are checked with
``tests/invariants.py`` (the same rules over the event stream) and against the history.

A run that a fault cut short lacks its ``end`` line: it is taken to end at the ``ended_at`` of
the record with its pid (converted to CLOCK_MONOTONIC), else (an earlier attempt of a retried
run) at its worker's next start.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from invariants import Violation, check_events, check_history
from orchestrator.state import StateReader

FAILURES = {"failed", "timed_out", "memory_exceeded", "crashed"}
#: Seconds by which a converted end time may be early (see :func:`monotonic_ends`).
CLOCK_MARGIN = 0.02
TERMINAL = FAILURES | {"succeeded", "cancelled", "interrupted", "skipped", "missed"}


@dataclass(frozen=True)
class Span:
    worker: str
    pid: int
    start: float
    end: float  # CLOCK_MONOTONIC seconds


def read_journal(path: Path) -> list[tuple[str, str, float, int]]:
    """``(event, worker, monotonic seconds, pid)`` per line, in file order."""
    if not Path(path).exists():
        return []
    entries = []
    for line in Path(path).read_text().splitlines():
        event, worker, when, pid = line.split()[:4]
        entries.append((event, worker, float(when), int(pid)))
    return entries


def spans(entries, ended=None) -> list[Span]:
    """Pair each ``start`` with the ``end`` of the same process.

    :param ended: pid -> CLOCK_MONOTONIC end taken from the history, for a run killed before
        its ``end`` line; without one, an open run lasts until its worker's next start (or
        the end of the journal).
    """
    if not entries:
        return []
    ended = ended or {}
    last = max(when for _, _, when, _ in entries)
    open_runs: dict[int, tuple[str, float]] = {}
    result = []
    for event, worker, when, pid in entries:
        if event == "start":
            if pid in open_runs:
                raise Violation(f"pid {pid} started {worker} twice")
            open_runs[pid] = (worker, when)
        elif event == "end" and pid in open_runs:
            name, start = open_runs.pop(pid)
            result.append(Span(name, pid, start, when))
    # Killed before its end line. The history names only a run's last attempt's pid; an
    # earlier attempt (crashed, then retried) is bounded by the worker's next start instead,
    # and its self-overlap is left to the event stream (``check_events``).
    starts = sorted((when, worker) for event, worker, when, _ in entries if event == "start")
    for pid, (name, start) in open_runs.items():
        if pid in ended:
            end = ended[pid]
        else:
            end = next((when for when, worker in starts if worker == name and when > start),
                       last + 1e-6)
        result.append(Span(name, pid, start, max(start, end)))
    return sorted(result, key=lambda span: span.start)


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def monotonic_ends(records, margin: float = CLOCK_MARGIN) -> dict[int, float]:
    """pid -> the record's ``ended_at`` on CLOCK_MONOTONIC, less ``margin``.

    The orchestrator writes ``ended_at`` after it saw the process end and before it admits
    the next run, so the converted time lies between both; the margin covers the drift
    between the wall clock and CLOCK_MONOTONIC while the test ran.
    """
    offset = time.time() - time.monotonic()
    return {r.pid: r.ended_at.timestamp() - offset - margin
            for r in records if r.pid is not None and r.ended_at is not None}


def check_journal(entries, workers: dict, max_concurrent: int, ended=None) -> None:
    """Self-overlap, exclusion, dependency-running and the cap, from the journal.

    :param ended: see :func:`spans`.
    """
    conflicts = defaultdict(set)
    for name, options in workers.items():
        for other in options.get("blocks", ()):
            conflicts[name].add(other)
            conflicts[other].add(name)
    all_spans = spans(entries, ended)
    for index, span in enumerate(all_spans):
        beside = [other for other in all_spans[:index] if _overlap(other, span)]
        for other in beside:
            if other.worker == span.worker:
                raise Violation(f"{span.worker} overlaps itself (pids {other.pid}, {span.pid})")
            if other.worker in conflicts[span.worker]:
                raise Violation(f"{span.worker} (pid {span.pid}) ran beside exclusive "
                                f"{other.worker} (pid {other.pid})")
            if other.worker in workers.get(span.worker, {}).get("depends_on", ()) and \
                    other.start <= span.start:
                raise Violation(f"{span.worker} (pid {span.pid}) started while its dependency "
                                f"{other.worker} (pid {other.pid}) ran")
        # the runs alive at this start: those started before it that have not ended yet
        if len(beside) + 1 > max_concurrent:
            raise Violation(f"{len(beside) + 1} runs at once, max_concurrent is "
                            f"{max_concurrent}: {sorted(s.worker for s in beside + [span])}")


def check_records(records, workers: dict, entries=(), enabled_again=()) -> None:
    """Terminal records, retries, dependencies' last outcome and auto-disable, from history.

    :param enabled_again: workers re-enabled by the test, whose failure count restarted.
    """
    seen = set()
    for record in records:
        if record.run_id in seen:
            raise Violation(f"run {record.run_id} has two records")
        seen.add(record.run_id)
        outcome = getattr(record.outcome, "value", record.outcome)
        if outcome not in TERMINAL or record.ended_at is None:
            raise Violation(f"run {record.run_id} of {record.worker} has no terminal record "
                            f"(outcome {outcome}, ended_at {record.ended_at})")
        limit = workers.get(record.worker, {}).get("max_retries", 3)
        if record.attempts > limit + 1:
            raise Violation(f"run {record.run_id} of {record.worker}: {record.attempts} "
                            f"attempts, max_retries is {limit}")
    started = [r for r in records if r.started_at is not None]
    by_worker = defaultdict(list)
    for record in sorted(started, key=lambda r: r.started_at):
        by_worker[record.worker].append(record)
    # Every journal start belongs to an attempt the history counts.
    journal_starts = defaultdict(int)
    for event, worker, _, _ in entries:
        if event == "start":
            journal_starts[worker] += 1
    for worker, count in journal_starts.items():
        attempts = sum(r.attempts for r in by_worker.get(worker, ()))
        if count > attempts:
            raise Violation(f"{worker}: {count} starts in the journal, {attempts} attempts in "
                            f"the history: a run was lost")
    for name, options in workers.items():
        for record in by_worker.get(name, ()):
            for dependency in options.get("depends_on", ()):
                before = [r for r in by_worker.get(dependency, ())
                          if r.ended_at is not None and r.ended_at <= record.started_at]
                last = getattr(before[-1].outcome, "value", before[-1].outcome) if before \
                    else None
                if last != "succeeded":
                    raise Violation(f"{name} run {record.run_id} started although dependency "
                                    f"{dependency}'s last run was {last}")
        limit = options.get("max_consecutive_failures", 5)
        if limit is None or name in enabled_again:
            continue
        failures = 0
        runs = by_worker.get(name, [])
        for index, record in enumerate(runs):
            outcome = getattr(record.outcome, "value", record.outcome)
            if outcome in FAILURES:
                failures += 1
            elif outcome == "succeeded":
                failures = 0
            if failures >= limit and index + 1 < len(runs):
                raise Violation(f"{name} reached {failures} consecutive failures at run "
                                f"{record.run_id} but ran again ({runs[index + 1].run_id})")


def check_run_history(state_path, journal_path, workers: dict, max_concurrent: int,
                      events=None, enabled_again=()) -> list:
    """Check every S12 promise over one orchestrator's history; return the records.

    :param workers: name -> dict(depends_on, blocks, max_retries, max_consecutive_failures).
    :param events: the ``RunEvent``s of the same orchestrator, if it ran in this process.
    :raises Violation: on the first broken promise, saying which runs broke it.
    """
    reader = StateReader(str(state_path))
    try:
        records = reader.recent(None, limit=1_000_000)
        stored = reader.workers()
    finally:
        reader.close()
    entries = read_journal(journal_path)
    check_journal(entries, workers, max_concurrent, monotonic_ends(records))
    check_records(records, workers, entries, enabled_again)
    for name, options in workers.items():
        limit = options.get("max_consecutive_failures", 5)
        state = stored.get(name)
        if state and limit is not None and state["consecutive_failures"] >= limit \
                and state["enabled"] and name not in enabled_again:
            raise Violation(f"{name}: {state['consecutive_failures']} consecutive failures "
                            f"stored, yet still enabled")
    if events is not None:
        check_events(list(events), workers, max_concurrent)
        check_history(records, list(events))
    return records
