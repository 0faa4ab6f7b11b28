"""Measure the execution engine against its floor and two process pools; print one table.

Demonstrates what a run costs in :class:`orchestrator.execution.process.ProcessExecutor`
(a launcher that pre-forks a fresh process per run), with a cgroup per run and with process
groups only, beside a bare ``os.fork()`` +
``waitpid`` loop (the floor), the stdlib ``ProcessPoolExecutor`` and pebble (if installed):

- start: submit -> first line of user code, p50 / p99 (one run at a time);
- kill: deadline -> process dead, p50 / p99, for a task that ignores SIGTERM, with a grace
  of 0 and of 0.5 s (the deadline is taken at submit + timeout, so it includes the start);
- throughput: no-op runs per second with 2 in flight.

Run as ``python bench/engine.py`` (``--quick`` for fewer samples). Numbers move by tens of
percent between runs on a shared machine; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TIMEOUT = 0.1  # seconds before a hanging task is killed


# -- tasks (module level, so that every backend can pickle them by reference) -------------------

def started_at() -> float:
    return time.monotonic()


def noop() -> None:
    return None


def ignore_sigterm_and_hang() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


# -- helpers ------------------------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def milliseconds(values: list[float] | None) -> str:
    if not values:
        return "n/a"
    return f"{percentile(values, 0.5) * 1000:7.2f} / {percentile(values, 0.99) * 1000:7.2f}"


def wait_dead(pid: int) -> float:
    """Block until ``pid`` has exited; return when (monotonic)."""
    pidfd = os.pidfd_open(pid)
    try:
        select.select([pidfd], [], [])
        return time.monotonic()
    finally:
        os.close(pidfd)


# -- the floor: os.fork() + waitpid -------------------------------------------------------------

def floor_start(samples: int) -> list[float]:
    latencies = []
    for _ in range(samples):
        read_end, write_end = os.pipe()
        begun = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.write(write_end, repr(time.monotonic()).encode())
            os._exit(0)
        os.close(write_end)
        latencies.append(float(os.read(read_end, 64)) - begun)
        os.close(read_end)
        os.waitpid(pid, 0)
    return latencies


def floor_kill(samples: int, grace: float) -> list[float]:
    latencies = []
    for _ in range(samples):
        begun = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            ignore_sigterm_and_hang()
        deadline = begun + TIMEOUT
        time.sleep(max(0.0, deadline - time.monotonic()))
        if grace:
            os.killpg(pid, signal.SIGTERM)
            time.sleep(grace)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        latencies.append(time.monotonic() - deadline - grace)
    return latencies


def floor_throughput(runs: int) -> float:
    begun = time.monotonic()
    in_flight = 0
    for _ in range(runs):
        if in_flight == 2:
            os.wait()
            in_flight -= 1
        if os.fork() == 0:
            noop()
            os._exit(0)
        in_flight += 1
    while in_flight:
        os.wait()
        in_flight -= 1
    return runs / (time.monotonic() - begun)


def python_floor_throughput(runs: int) -> float:
    """The floor of a Python run in a fresh process: fork, send the pickled function down a
    pipe, call it in the child, send the pickled result back, reap. No process group, no
    kill, no resources, no output capture: what any fork-per-run design pays at least."""
    import pickle

    job = pickle.dumps(noop)
    begun = time.monotonic()
    in_flight: dict[int, int] = {}

    def reap() -> None:
        pid, _ = os.wait()
        result_read = in_flight.pop(pid)
        pickle.loads(os.read(result_read, 65536))
        os.close(result_read)

    for _ in range(runs):
        if len(in_flight) == 2:
            reap()
        job_read, job_write = os.pipe()
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(job_write)
            os.close(result_read)
            function = pickle.loads(os.read(job_read, 65536))
            os.write(result_write, pickle.dumps(("returned", function())))
            os._exit(0)
        os.close(job_read)
        os.close(result_write)
        os.write(job_write, job)
        os.close(job_write)
        in_flight[pid] = result_read
    while in_flight:
        reap()
    return runs / (time.monotonic() - begun)


# -- pools --------------------------------------------------------------------------------------

def pool_start(submit, samples: int) -> list[float]:
    latencies = []
    for _ in range(samples):
        begun = time.monotonic()
        latencies.append(submit(started_at).result() - begun)
    return latencies


def pool_throughput(submit, runs: int) -> float:
    slots = threading.Semaphore(2)
    done = threading.Event()
    remaining = [runs]
    lock = threading.Lock()

    def finished(_future):
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    begun = time.monotonic()
    for _ in range(runs):
        slots.acquire()
        submit(noop).add_done_callback(finished)
    done.wait()
    return runs / (time.monotonic() - begun)


def pebble_kill(samples: int) -> list[float]:
    import pebble

    latencies = []
    with pebble.ProcessPool(max_workers=2) as pool:
        pool.schedule(noop).result()
        for _ in range(samples):
            begun = time.monotonic()
            future = pool.schedule(ignore_sigterm_and_hang, timeout=TIMEOUT)
            try:
                future.result()
            except concurrent.futures.TimeoutError:
                pass
            # pebble hides the worker's pid; its future completes once it has stopped it.
            latencies.append(time.monotonic() - begun - TIMEOUT)
    return latencies


# -- the engine ---------------------------------------------------------------------------------

def engine_start(executor, samples: int) -> list[float]:
    from orchestrator.execution.base import RunSpec

    latencies = []
    for _ in range(samples):
        begun = time.monotonic()
        future = executor.submit_run(RunSpec(run_id="b", worker="started_at",
                                             function=started_at))
        latencies.append(future.result().result - begun)
    return latencies


def engine_kill(executor, samples: int, grace: float) -> list[float]:
    from orchestrator.execution.base import RunSpec

    latencies = []
    for _ in range(samples):
        begun = time.monotonic()
        future = executor.submit_run(RunSpec(
            run_id="b", worker="hang", function=ignore_sigterm_and_hang,
            timeout_seconds=TIMEOUT, kill_grace_seconds=grace))
        future.started.wait()
        dead = wait_dead(future.pid)
        latencies.append(dead - begun - TIMEOUT - grace)
        future.result()
    return latencies


def engine_throughput(executor, runs: int) -> float:
    from orchestrator.execution.base import RunSpec

    spec = RunSpec(run_id="b", worker="noop", function=noop)
    return pool_throughput(lambda _fn: executor.submit_run(spec), runs)


# -- the table ----------------------------------------------------------------------------------

def measure(quick: bool = False) -> list[tuple]:
    """Measure every backend; call before this process starts any thread (the floor forks).

    :returns: rows ``(name, start latencies, kill latencies grace 0, kill latencies grace
        0.5, runs per second)``, latencies in seconds or ``None`` where a backend cannot
        kill; the floor first, then the engine with cgroups (where it can make them), then
        the engine with process groups.
    """
    starts, kills0, kills5, runs = (50, 10, 4, 300) if quick else (300, 40, 12, 2000)
    rows = []

    # The floor forks this process itself: measure it before any thread exists.
    floor_start(10)
    floor_row = ("os.fork + waitpid (floor)", floor_start(starts), floor_kill(kills0, 0.0),
                 floor_kill(kills5, 0.5), floor_throughput(runs))
    rows.append(("os.fork + pickled call and result (Python run floor)", None, None, None,
                 python_floor_throughput(runs)))

    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        pool_start(pool.submit, 10)
        rows.append(("stdlib ProcessPoolExecutor (warm)", pool_start(pool.submit, starts),
                     None, None, pool_throughput(pool.submit, runs)))

    try:
        import pebble
    except ImportError:
        pebble = None
    if pebble is not None:
        with pebble.ProcessPool(max_workers=2) as pool:
            pool_start(pool.schedule, 10)
            start = pool_start(pool.schedule, starts)
            throughput = pool_throughput(pool.schedule, runs)
        with pebble.ProcessPool(max_workers=2, max_tasks=1) as pool:
            pool_start(pool.schedule, 5)
            fresh_throughput = pool_throughput(pool.schedule, max(100, runs // 4))
            fresh_start = pool_start(pool.schedule, max(20, starts // 4))
        pebble_kills = pebble_kill(2 if quick else 3)
        rows.append(("pebble ProcessPool (warm; kill: fixed 3 s grace)", start, pebble_kills,
                     None, throughput))
        rows.append(("pebble ProcessPool (max_tasks=1, fresh)", fresh_start, None, None,
                     fresh_throughput))

    from orchestrator.errors import ContainmentError
    from orchestrator.execution.process import ProcessExecutor

    engine_rows = []
    for containment in ("cgroup", "process-group"):
        try:
            executor = ProcessExecutor(containment=containment)
        except ContainmentError:  # no cgroups here: the process-group row only
            continue
        with executor:
            engine_start(executor, 20)  # starts the launcher and loads this module there
            engine_rows.append((f"orchestrator ProcessExecutor ({containment})",
                                engine_start(executor, starts),
                                engine_kill(executor, kills0, 0.0),
                                engine_kill(executor, kills5, 0.5),
                                engine_throughput(executor, runs)))
    return [floor_row, *engine_rows] + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 15 s)")
    options = parser.parse_args()
    rows = measure(options.quick)
    floor_row, engine_row = rows[0], rows[1]
    group_row = next(row for row in rows if row[0].endswith("(process-group)"))

    header = (f"{'backend':<50} {'start p50 / p99 ms':>19} {'kill g=0 p50 / p99 ms':>22} "
              f"{'kill g=0.5 p50 / p99 ms':>24} {'runs/s':>8}")
    print(f"python bench/engine.py{' --quick' if options.quick else ''}   "
          f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]}; kill figures are past "
          f"the deadline + grace)")
    print(header)
    print("-" * len(header))
    for name, start, kill0, kill5, throughput in rows:
        print(f"{name:<50} {milliseconds(start):>19} {milliseconds(kill0):>22} "
              f"{milliseconds(kill5):>24} {throughput:>8.0f}")

    engine_start_p50 = percentile(engine_row[1], 0.5) * 1000
    engine_kill_p99 = max(percentile(engine_row[2], 0.99), percentile(engine_row[3], 0.99))
    ratio = engine_row[4] / floor_row[4]
    print()
    print(f"target start p50 <= 1 ms: {engine_start_p50:.2f} ms "
          f"{'met' if engine_start_p50 <= 1 else 'MISSED'}")
    print(f"target kill <= grace + 20 ms at p99: +{engine_kill_p99 * 1000:.1f} ms "
          f"{'met' if engine_kill_p99 <= 0.020 else 'MISSED'}")
    print(f"target throughput >= 75% of the floor: {ratio:.0%} "
          f"{'met' if ratio >= 0.75 else 'MISSED'}")
    if engine_row is not group_row:
        share = engine_row[4] / group_row[4]
        print(f"target throughput with cgroups >= 85% of process groups: {share:.0%} "
              f"{'met' if share >= 0.85 else 'MISSED'}")


if __name__ == "__main__":
    main()
