"""The S12 promises, checked from what a user can observe: the event stream and the history.

``check_events`` replays the events in order and fails on the first broken promise;
``check_history`` checks the final records against the events.
"""

from __future__ import annotations

from collections import Counter, defaultdict

FINAL_KINDS = {"succeeded", "failed", "timed_out", "memory_exceeded", "crashed", "cancelled"}
FAILURES = {"failed", "timed_out", "memory_exceeded", "crashed"}


class Violation(AssertionError):
    pass


def check_events(events, workers: dict, max_concurrent: int) -> None:
    """``workers``: name -> dict(depends_on, blocks, max_retries, max_consecutive_failures)."""
    conflicts = defaultdict(set)
    for name, options in workers.items():
        for other in options.get("blocks", ()):
            conflicts[name].add(other)
            conflicts[other].add(name)
    running: dict[str, str] = {}            # worker -> run id in progress
    last_final: dict[str, str] = {}         # worker -> outcome of its newest finished run
    undo: dict[str, tuple] = {}             # run id -> previous last_final (until retried)
    enabled = {name: True for name in workers}
    failures = Counter()
    attempts = Counter()
    for index, event in enumerate(events):
        where = f"event {index} ({event.line()})"
        name = event.worker
        if event.kind == "started":
            if name in running:
                raise Violation(f"{where}: {name} overlaps itself (run {running[name]})")
            if len(running) >= max_concurrent:
                raise Violation(f"{where}: more than {max_concurrent} runs: {sorted(running)}")
            if not enabled[name]:
                raise Violation(f"{where}: {name} started while disabled")
            for other in conflicts[name]:
                if other in running:
                    raise Violation(f"{where}: {name} started beside exclusive {other}")
            for dependency in workers[name].get("depends_on", ()):
                if dependency in running:
                    raise Violation(f"{where}: {name} started while dependency "
                                    f"{dependency} runs")
                if last_final.get(dependency) != "succeeded":
                    raise Violation(f"{where}: {name} started although dependency "
                                    f"{dependency}'s last run was {last_final.get(dependency)}")
            running[name] = event.run_id
            attempts[event.run_id] += 1
            if attempts[event.run_id] != event.attempt:
                raise Violation(f"{where}: attempt number {event.attempt}, expected "
                                f"{attempts[event.run_id]}")
        elif event.kind in FINAL_KINDS:
            if running.get(name) == event.run_id:
                del running[name]
                undo[event.run_id] = (name, last_final.get(name), failures[name])
                last_final[name] = event.kind
                if event.kind in FAILURES:
                    failures[name] += 1
                elif event.kind == "succeeded":
                    failures[name] = 0
        elif event.kind == "retried":
            name_, previous, count = undo.pop(event.run_id)
            if previous is None:
                last_final.pop(name_, None)
            else:
                last_final[name_] = previous
            failures[name_] = count
            limit = workers[name_].get("max_retries", 3)
            if attempts[event.run_id] > limit:
                raise Violation(f"{where}: retried after {attempts[event.run_id]} attempts, "
                                f"max_retries is {limit}")
        elif event.kind == "disabled":
            enabled[name] = False
        elif event.kind == "enabled":
            enabled[name] = True
            failures[name] = 0
        limit = workers[name].get("max_consecutive_failures", 5)
        if event.kind in FINAL_KINDS and limit is not None and enabled[name] and \
                failures[name] >= limit:
            following = events[index + 1] if index + 1 < len(events) else None
            if following is None or following.kind not in ("disabled", "retried"):
                raise Violation(f"{where}: {name} reached {failures[name]} consecutive "
                                f"failures but was not disabled")


def check_history(records, events) -> None:
    """Every started run has exactly one terminal record, with the right attempt count."""
    started = Counter(e.run_id for e in events if e.kind == "started")
    finals = Counter(e.run_id for e in events if e.kind in FINAL_KINDS | {"skipped"})
    retried = Counter(e.run_id for e in events if e.kind == "retried")
    by_id = {}
    for record in records:
        if record.run_id in by_id:
            raise Violation(f"run {record.run_id} has two records")
        by_id[record.run_id] = record
        if record.outcome is None or record.ended_at is None:
            raise Violation(f"run {record.run_id} of {record.worker} has no terminal record")
        if record.attempts != started[record.run_id]:
            raise Violation(f"run {record.run_id}: {record.attempts} attempts recorded, "
                            f"{started[record.run_id]} started")
    for run_id, count in started.items():
        if run_id not in by_id:
            raise Violation(f"run {run_id} started but has no record")
        if finals[run_id] - retried[run_id] != 1:
            raise Violation(f"run {run_id} ended {finals[run_id] - retried[run_id]} times")
    for event in events:  # every run that became due ended, once, with a record
        if event.kind == "due":
            if event.run_id not in by_id:
                raise Violation(f"run {event.run_id} of {event.worker} became due but has no "
                                f"record")
            if finals[event.run_id] - retried[event.run_id] != 1:
                raise Violation(f"run {event.run_id} of {event.worker} became due and ended "
                                f"{finals[event.run_id] - retried[event.run_id]} times")
