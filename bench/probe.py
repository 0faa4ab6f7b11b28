"""A scheduler set up in a process of its own, for measuring its CPU time from outside.

``python -m bench.probe KIND`` builds one of the set-ups below, starts it, prints ``ready``
once it is in the state to measure and keeps it so until its standard input closes; then it
stops it and exits. :func:`measure_cpu` runs probes side by side and reads the CPU seconds
of each probe's process tree (the scheduler, and for this project its launcher) over the
same window.

- ``idle-orchestrator``: 1,000 interval workers due hourly, started, nothing due;
- ``idle-apscheduler``: APScheduler 3 ``BackgroundScheduler`` (``ProcessPoolExecutor``)
  with the same 1,000 hourly jobs;
- ``monitor SECONDS``: two runs that sleep for an hour under a process executor that
  samples every running tree every ``SECONDS``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

IDLE_WORKERS = 1000
ROOT = Path(__file__).resolve().parent.parent


def idle_orchestrator():
    from orchestrator import WorkerOrchestrator

    from bench.workloads import never

    orch = WorkerOrchestrator(max_concurrent=200, timezone="UTC")
    for index in range(IDLE_WORKERS):
        orch.register_worker(f"w{index:04d}", never, interval_seconds=3600)
    orch.start()
    return orch.stop


def idle_apscheduler():
    from apscheduler.executors.pool import ProcessPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    from bench.workloads import never

    scheduler = BackgroundScheduler(executors={"default": ProcessPoolExecutor(200)},
                                    timezone="UTC")
    for index in range(IDLE_WORKERS):
        scheduler.add_job(never, "interval", seconds=3600, id=f"w{index:04d}")
    scheduler.start()
    return scheduler.shutdown


def monitor(sample_interval: float):
    from orchestrator import WorkerOrchestrator
    from orchestrator.execution.process import ProcessExecutor

    from bench.workloads import hang_for_an_hour

    both_running = threading.Event()
    started: set[str] = set()

    def on_event(event) -> None:
        if event.kind == "started":
            started.add(event.worker)
            if len(started) == 2:
                both_running.set()

    orch = WorkerOrchestrator(max_concurrent=2, timezone="UTC",
                              executor=ProcessExecutor(sample_interval=sample_interval))
    orch.add_listener(on_event)
    for name in ("long-a", "long-b"):
        orch.register_worker(name, hang_for_an_hour, interval_seconds=3600,
                             run_at_start=True, timeout_seconds=None, max_retries=0,
                             kill_grace_seconds=0)
    orch.start()
    if not both_running.wait(30):
        orch.stop()
        raise SystemExit("monitor probe: the two runs did not start within 30 s")
    return orch.stop


def main(argv: list[str]) -> int:
    from loguru import logger

    logger.remove()  # measure the scheduler, not a terminal sink
    kind = argv[0]
    if kind == "idle-orchestrator":
        stop = idle_orchestrator()
    elif kind == "idle-apscheduler":
        stop = idle_apscheduler()
    elif kind == "monitor":
        stop = monitor(float(argv[1]))
    else:
        raise SystemExit(f"unknown probe {kind!r}; use idle-orchestrator, idle-apscheduler "
                         f"or monitor SECONDS")
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes it
    stop()
    return 0


# -- the measuring side -------------------------------------------------------------------------

def tree_cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and its live descendants.

    Summed from every thread's ``/proc/PID/task/TID/schedstat`` (nanoseconds), since
    ``cpu_times()`` counts in 10 ms ticks, too coarse for an idle process; falls back to
    ``cpu_times()`` where schedstat is missing.
    """
    total = 0.0
    for member in [process] + process.children(recursive=True):
        try:
            total += _schedstat_seconds(member.pid)
        except OSError:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def _schedstat_seconds(pid: int) -> float:
    tasks = Path(f"/proc/{pid}/task")
    total = 0
    for task in tasks.iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return total / 1e9


def measure_cpu(probes: list[list[str]], seconds: float, settle: float = 2.0) -> list[float]:
    """Start every probe, wait for each to be ready and ``settle`` more seconds, then
    return each probe's CPU seconds over the same ``seconds`` window."""
    children = [subprocess.Popen([sys.executable, "-m", "bench.probe", *arguments],
                                 cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for arguments in probes]
    try:
        for child, arguments in zip(children, probes):
            line = child.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"probe {' '.join(arguments)} did not start "
                                   f"(exit code {child.poll()})")
        time.sleep(settle)  # let start-up work finish before the window opens
        handles = [psutil.Process(child.pid) for child in children]
        before = [tree_cpu_seconds(handle) for handle in handles]
        time.sleep(seconds)  # the measurement window
        after = [tree_cpu_seconds(handle) for handle in handles]
    finally:
        for child in children:
            child.stdin.close()
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return [end - begin for begin, end in zip(before, after)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
