"""Run history kept in memory, bounded per worker (``state_path=None``).

The dispatcher thread saves a record at each transition (the record exists before its
process starts); readers on any thread get copies. The SQLite
:class:`~orchestrator.state.StateStore` has the same methods and stands in its place when
state is persistent; here the worker-state methods have nothing to keep.
"""

from __future__ import annotations

import collections
import contextlib
import threading

from .runs import RunRecord


class MemoryHistory:
    """The newest ``limit_per_worker`` runs of each worker."""

    def __init__(self, limit_per_worker: int = 1000):
        self.limit_per_worker = limit_per_worker
        self._lock = threading.Lock()  # the dispatcher writes, any thread reads
        self._runs: dict[str, collections.OrderedDict[str, RunRecord]] = {}

    def save(self, record: RunRecord) -> None:
        """Insert or update a copy of ``record`` (keyed by run id)."""
        copy = record.snapshot()
        with self._lock:
            runs = self._runs.setdefault(record.worker, collections.OrderedDict())
            runs[record.run_id] = copy
            while len(runs) > self.limit_per_worker:
                runs.popitem(last=False)

    def recent(self, worker: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Copies of the newest records, newest first (all workers when ``worker`` is None)."""
        with self._lock:
            if worker is not None:
                records = list(self._runs.get(worker, {}).values())
            else:
                records = [r for runs in self._runs.values() for r in runs.values()]
        records.sort(key=_order, reverse=True)
        return [record.snapshot() for record in records[:limit]]

    def find(self, run_id: str) -> RunRecord | None:
        with self._lock:
            for runs in self._runs.values():
                if run_id in runs:
                    return runs[run_id].snapshot()
        return None

    # Nothing outlives the process in memory: no worker state to keep or load.
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def save_worker(self, values: dict) -> None:
        pass

    def announce(self, **values) -> None:
        pass

    def retry_in(self) -> float | None:
        return None

    def check_file(self) -> str:
        return "ok"

    def batch(self):
        return contextlib.nullcontext()

    def load_workers(self) -> dict[str, dict]:
        return {}

    def unfinished(self) -> list[RunRecord]:
        return []


def _order(record: RunRecord):
    return (record.started_at or record.ended_at or record.due_at, record.due_at)
