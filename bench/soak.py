"""Soak: many random workers for N minutes, then every S12 promise checked over the history.

Usage::

    python -m bench.soak --minutes 30 [--workers 50] [--seed 1] [--max-concurrent 8] [--keep]

Fifty workers (by default) get random dependencies, exclusions, priorities, intervals,
durations and fault rates: a run may succeed, raise, exit without a result (a crash) or hang
past its timeout. The orchestrator runs in this process with a state file in a temporary
directory; each worker journals its start and end (CLOCK_MONOTONIC), and the orchestrator's
events are appended to a file (not kept in memory, so they do not weigh on the figures).
Meanwhile this process's RSS, open file descriptors, threads and child processes are sampled;
at the end their slope per minute is printed, the history goes through
``tests/history_invariants.py``, and the exit status is 0 only if no promise was broken. The
directory is removed after a clean run unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 2.0


def _journal(event: str, name: str) -> None:
    line = f"{event} {name} {time.monotonic():.6f} {os.getpid()}\n"
    fd = os.open(Path(os.environ["SOAK_DIR"]) / "journal",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def soak_job(config):
    """One run: journal the start, then do what the worker's fault rates draw."""
    with open(Path(os.environ["SOAK_DIR"]) / "plan.json") as file:
        plan = json.load(file)[config.name]
    _journal("start", config.name)
    draw = random.random()
    time.sleep(random.uniform(*plan["duration"]))
    if draw < plan["hang"]:
        def end_on_sigterm(*_):  # the timeout's SIGTERM: say so, so the journal stays exact
            _journal("end", config.name)
            os._exit(143)

        signal.signal(signal.SIGTERM, end_on_sigterm)
        while True:  # until the timeout kills it
            time.sleep(3600)
    if draw < plan["hang"] + plan["crash"]:
        _journal("end", config.name)
        os._exit(3)
    _journal("end", config.name)
    if draw < plan["hang"] + plan["crash"] + plan["fail"]:
        raise RuntimeError(f"{config.name}: drawn to fail")
    return config.name


def make_plan(count: int, rng: random.Random) -> dict[str, dict]:
    """Random workers: options for ``register_worker`` plus the job's fault rates."""
    names = [f"w{i:02d}" for i in range(count)]
    plan = {}
    for index, name in enumerate(names):
        options = dict(interval_seconds=round(rng.uniform(0.5, 4.0), 2),
                       timeout_seconds=round(rng.uniform(1.0, 2.5), 2),
                       kill_grace_seconds=0.2,
                       priority=rng.choice(["low", "normal", "high", "critical"]),
                       max_retries=rng.choice([0, 0, 1, 2]),
                       retry_delay_seconds=0.1,
                       max_consecutive_failures=rng.choice([3, 5, None]),
                       overlap=rng.choice(["skip", "queue"]))
        if index and rng.random() < 0.3:
            options["depends_on"] = [rng.choice(names[:index])]
        plan[name] = dict(options=options, duration=[0.0, rng.choice([0.05, 0.2, 0.6])],
                          fail=rng.choice([0.0, 0.05, 0.1]), crash=rng.choice([0.0, 0.02]),
                          hang=rng.choice([0.0, 0.0, 0.01]))
    for _ in range(count // 3):
        a, b = rng.sample(names, 2)
        dependencies = set(plan[a]["options"].get("depends_on", ())) | \
            set(plan[b]["options"].get("depends_on", ()))
        if a not in dependencies and b not in dependencies:
            plan[a]["options"].setdefault("blocks", []).append(b)
    for name in rng.sample(names, 2):  # a couple of hopeless ones, to be auto-disabled
        plan[name].update(fail=0.9)
        plan[name]["options"]["max_consecutive_failures"] = 3
    return plan


def sample(process: psutil.Process) -> tuple[float, int, int, int, int]:
    return (time.monotonic(), process.memory_info().rss, process.num_fds(),
            process.num_threads(), len(process.children(recursive=True)))


def read_events(path: Path):
    with open(path, "rb") as file:
        while True:
            try:
                yield pickle.load(file)
            except EOFError:
                return


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true",
                        help="keep the state file and journals even when every check passed")
    arguments = parser.parse_args(argv)
    seed = arguments.seed if arguments.seed is not None else random.randrange(2 ** 32)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from history_invariants import check_run_history
    from orchestrator import WorkerOrchestrator

    directory = Path(tempfile.mkdtemp(prefix="soak-"))
    os.environ["SOAK_DIR"] = str(directory)
    plan = make_plan(arguments.workers, random.Random(seed))
    (directory / "plan.json").write_text(json.dumps(plan))
    event_file = open(directory / "events.pickle", "wb")
    orch = WorkerOrchestrator(max_concurrent=arguments.max_concurrent,
                              state_path=directory / "state.db", history_limit=1_000_000)
    orch.add_listener(lambda event: pickle.dump(event, event_file))
    for name, entry in plan.items():
        orch.register_worker(name, soak_job, **entry["options"])
    me = psutil.Process()
    samples = []
    done = threading.Event()
    print(f"soak: {arguments.workers} workers for {arguments.minutes} min, seed {seed}, "
          f"state in {directory}", flush=True)
    orch.start()
    try:
        deadline = time.monotonic() + arguments.minutes * 60
        while not done.wait(min(SAMPLE_SECONDS, max(0.0, deadline - time.monotonic()))):
            samples.append(sample(me))
            if time.monotonic() >= deadline:
                done.set()
    finally:
        orch.stop(timeout=30)
    after_stop = sample(me)
    event_file.close()
    events = list(read_events(directory / "events.pickle"))

    workers = {name: {key: value for key, value in entry["options"].items()
                      if key in ("depends_on", "blocks", "max_retries",
                                 "max_consecutive_failures")}
               for name, entry in plan.items()}
    kinds = Counter(event.kind for event in events)
    violation = None
    try:
        records = check_run_history(directory / "state.db", directory / "journal", workers,
                                    arguments.max_concurrent, events=events)
    except AssertionError as error:
        violation, records = str(error), []
    outcomes = Counter(getattr(r.outcome, "value", r.outcome) for r in records)
    start = samples[0][0] if samples else 0.0
    print(f"runs: {len(records)} records, outcomes {dict(sorted(outcomes.items()))}")
    print(f"events: {dict(sorted(kinds.items()))}")
    print(f"faults injected (attempts): {kinds['failed']} failed, {kinds['crashed']} crashed, "
          f"{kinds['timed_out']} timed out; {kinds['retried']} retries; "
          f"{kinds['disabled']} workers auto-disabled")
    for column, label, unit, scale in ((1, "rss", "MB", 1 / 2 ** 20), (2, "fds", "", 1),
                                       (3, "threads", "", 1), (4, "children", "", 1)):
        points = [(s[0] - start, s[column] * scale) for s in samples]
        values = [v for _, v in points] or [0]
        second_half = points[len(points) // 2:]
        print(f"{label:>8}: first {values[0]:.1f}{unit}, last {values[-1]:.1f}{unit}, "
              f"max {max(values):.1f}{unit}, slope {slope_per_minute(points):+.3f}{unit}/min, "
              f"second half {slope_per_minute(second_half):+.3f}{unit}/min")
    print(f"after stop: {after_stop[4]} child processes, {after_stop[3]} threads")
    print(f"invariant violations: {0 if violation is None else 1}"
          + ("" if violation is None else f" - {violation}"))
    clean = violation is None and after_stop[4] == 0
    if clean and not arguments.keep:
        shutil.rmtree(directory)
    else:
        print(f"state file, journal and events kept in {directory}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
