"""Scale: 10,000 workers with 20,000 dependency and exclusion edges.

Demonstrates what a large installation costs the orchestrator itself, with no process
started (an inline executor that holds every run, and a manual clock):

- register and validate every worker (``register_worker`` + the checks of ``start()``);
- one admission decision: the dispatcher's step with every worker due at once, divided by
  the decisions it took (one per pending run it considered);
- ``get_status()`` for all workers;
- the orchestrator's resident memory afterwards.

Targets (issue "Benchmarks"): register + validate < 2 s, < 100 us per admission decision,
< 300 MB RSS. Run as ``python bench/scale.py`` (``--workers N`` to change the size).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import WorkerOrchestrator  # noqa: E402
from orchestrator.clock import ManualClock  # noqa: E402
from orchestrator.execution.inline import InlineExecutor  # noqa: E402


def noop():
    return None


def measure(workers: int = 10_000, edge_count: int = 20_000, seed: int = 7) -> dict:
    """Build the installation, drive the dispatcher by hand and return the figures.

    :returns: ``workers``, ``depends_on``, ``blocks``, ``register_seconds``,
        ``validate_seconds``, ``step_seconds``, ``decisions``, ``end_step_seconds``,
        ``status_seconds``, ``rss_before`` and ``rss_after`` (bytes).
    """
    rng = random.Random(seed)
    names = [f"w{i:05d}" for i in range(workers)]
    depends: dict[str, list[str]] = {name: [] for name in names}
    blocks: dict[str, list[str]] = {name: [] for name in names}
    for _ in range(edge_count):  # half dependencies (to a lower index: a DAG), half exclusions
        a, b = sorted(rng.sample(range(workers), 2))
        if rng.random() < 0.5:
            if names[a] not in depends[names[b]]:
                depends[names[b]].append(names[a])
        elif names[a] not in blocks[names[b]]:
            blocks[names[b]].append(names[a])

    rss_before = psutil.Process().memory_info().rss
    clock = ManualClock(datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc))
    executor = InlineExecutor(deferred=True, now=clock.now)
    orch = WorkerOrchestrator(max_concurrent=50, executor=executor, clock=clock,
                              timezone="UTC")
    started = time.perf_counter()
    for name in names:
        orch.register_worker(name, noop, interval_seconds=3600, depends_on=depends[name],
                             blocks=blocks[name], priority=rng.choice(
                                 ["low", "normal", "high", "critical"]))
    registered = time.perf_counter() - started
    dispatcher = orch._dispatcher  # the benchmark drives the step by hand, as the tests do
    started = time.perf_counter()
    dispatcher.begin()  # start()'s checks, without a thread
    validated = time.perf_counter() - started

    started = time.perf_counter()
    dispatcher.step()  # every worker due at once: 10,000 pending, 50 slots
    step_seconds = time.perf_counter() - started
    decisions = workers
    started = time.perf_counter()
    rounds = 0
    for spec in executor.waiting[:20]:  # 20 runs end: each frees a slot, a decision each
        executor.finish(spec.run_id)
        dispatcher.step()
        rounds += 1
    end_seconds = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    status = orch.get_status()
    status_seconds = time.perf_counter() - started
    rss_after = psutil.Process().memory_info().rss
    assert len(status["worker_states"]) == workers
    return {"workers": workers, "depends_on": sum(map(len, depends.values())),
            "blocks": sum(map(len, blocks.values())), "register_seconds": registered,
            "validate_seconds": validated, "step_seconds": step_seconds,
            "decisions": decisions, "end_step_seconds": end_seconds,
            "status_seconds": status_seconds, "rss_before": rss_before, "rss_after": rss_after}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--edges", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    figures = measure(args.workers, args.edges, args.seed)
    registered, validated = figures["register_seconds"], figures["validate_seconds"]
    step_seconds, decisions = figures["step_seconds"], figures["decisions"]
    end_seconds, status_seconds = figures["end_step_seconds"], figures["status_seconds"]
    rss_before, rss_after = figures["rss_before"], figures["rss_after"]
    edges = figures["depends_on"] + figures["blocks"]
    print(f"{args.workers} workers, {edges} edges "
          f"({figures['depends_on']} depends_on, {figures['blocks']} "
          f"blocks)")
    rows = [
        ("register (validate each)", f"{registered:.2f} s"),
        ("start() checks", f"{validated:.2f} s"),
        ("register + validate", f"{registered + validated:.2f} s   (target < 2 s)"),
        ("first step: all due, per decision",
         f"{step_seconds / decisions * 1e6:.1f} us   (target < 100 us; "
         f"{step_seconds * 1000:.0f} ms for {decisions})"),
        ("a run ends: next admission", f"{end_seconds * 1000:.2f} ms per step"),
        ("get_status(), all workers", f"{status_seconds * 1000:.0f} ms"),
        ("orchestrator RSS", f"{rss_after / 2**20:.0f} MB (+{(rss_after - rss_before) / 2**20:.0f}"
                             f" MB for the workers)   (target < 300 MB)"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
