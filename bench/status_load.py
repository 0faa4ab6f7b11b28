"""Lateness of a 0.5 s worker while readers hammer the status.

An orchestrator with ``workers`` registered (all triggered, so idle) and one worker due every
0.5 s; ``readers`` threads call ``get_status()`` without pause. Each run's lateness is when its
user code started minus its due time. Status is built from a published snapshot on the
readers' own threads, one build at a time, so the dispatcher keeps its rhythm.

Run in a fresh interpreter (``measure`` is called through a spawned process by bench.run).
"""

from __future__ import annotations

import threading
import time


def beat(config) -> float:
    """Record when user code starts."""
    return time.time()


def never() -> None:
    return None


def measure(workers: int, readers: int, seconds: float) -> dict:
    from orchestrator import WorkerOrchestrator

    orch = WorkerOrchestrator(max_concurrent=10, timezone="UTC")
    for number in range(workers):
        orch.register_worker(f"idle-{number}", never, execution_mode="triggered")
    orch.register_worker("beat", beat, interval_seconds=0.5, max_retries=0)
    stop = threading.Event()
    reads = [0] * readers

    def read(index: int) -> None:
        while not stop.is_set():
            orch.get_status()
            reads[index] += 1

    orch.start()
    begun = time.time()
    threads = [threading.Thread(target=read, args=(index,)) for index in range(readers)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(seconds)  # the measurement window
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        records = orch.history("beat", limit=10_000)
        orch.stop()
    # runs due once the readers are at it (the first, due at start, waits for the start-up
    # of 10,000 workers, which is row 5's figure)
    late = [record.result - record.due_at.timestamp() for record in records
            if isinstance(record.result, float) and record.due_at.timestamp() >= begun + 1.0]
    return {"lateness": late, "reads": sum(reads), "seconds": seconds}
