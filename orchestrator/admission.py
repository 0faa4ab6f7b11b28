"""Whether a due run may start: the rules of dependencies and exclusion, as pure functions.

The dispatcher asks them about its live state before it starts a run; the status asks them
about a published snapshot, to say why a run waits. One rule, two callers, no copy.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable

from .runs import Outcome


def describe_outcome(outcome: Outcome) -> str:
    """``"failed"``, ``"timed out"``, ... as words for a sentence."""
    return _OUTCOME_WORDS.get(outcome, outcome.value)


_OUTCOME_WORDS = {
    Outcome.TIMED_OUT: "timed out", Outcome.STALLED: "stalled",
    Outcome.MEMORY_EXCEEDED: "exceeded its memory limit",
    Outcome.CRASHED: "crashed", Outcome.CANCELLED: "was cancelled",
    Outcome.INTERRUPTED: "was interrupted", Outcome.FAILED: "failed",
    Outcome.SUCCEEDED: "succeeded"}


def blocker(dependencies: Iterable[str], conflicts: Iterable[str], worker: Callable,
            running: Collection[str], pending: Collection[str]) -> str | None:
    """Why dependencies or exclusions keep a run from starting now, or ``None``.

    :param worker: name -> an object with ``enabled`` and ``last_outcome`` (the dispatcher's
        worker state, or a snapshot's view of it).
    :param running: names of workers with a run in progress.
    :param pending: names of workers with a run waiting to start.
    """
    for dependency in dependencies:
        why = _dependency_problem(dependency, worker(dependency), running, pending)
        if why:
            return f"waiting for dependency {dependency}: {why}"
    for other in conflicts:
        if other in running:
            return f"blocked by {other} (running)"
    return None


def _dependency_problem(name: str, state, running, pending) -> str | None:
    if name in running:
        return "it is running"
    if name in pending:
        return "it has a pending run"
    if not state.enabled:
        return "it is disabled"
    if state.last_outcome is None:
        return "it has not run yet"
    if state.last_outcome is not Outcome.SUCCEEDED:
        return f"its last run {describe_outcome(state.last_outcome)}"
    return None
