"""Start lateness of scheduled runs: when user code starts minus when the run was due.

Each function below runs the 200 workers of :mod:`bench.workloads` (0.05-0.5 s of sleep
every 2-6 s) under one scheduler for ``seconds``, with 200 slots, and returns ``(due,
lateness)`` of every run that started, in seconds (``due`` from the start of the scheduler),
and how many due runs were skipped because the worker's previous run had not ended (each
scheduler's default: one instance at a time). Every worker is first due at the start, as
this project's interval workers are (APScheduler is given ``next_run_time`` and ``schedule``
a ``next_run`` of now), so the first round is 200 runs due at once:

- this project: default process executor; due time from the history record (``due_at``),
  start from the function's return value (``RunRecord.result``);
- APScheduler 3 ``BackgroundScheduler`` + its ``ProcessPoolExecutor(200)``, no misfire
  grace (a late run still runs, so it is counted); due time from the executed event's
  ``scheduled_run_time``;
- ``schedule`` in a loop that sleeps until its next due time, starting a thread per run
  (its documented way to run jobs in parallel); due time is the job's ``next_run`` as
  ``run_pending()`` calls it.
"""

from __future__ import annotations

import threading
import time

from bench.workloads import WORKERS, interval_seconds, orchestrator_work, work

SLOTS = 200


def orchestrator_lateness(seconds: float) -> tuple[list[tuple[float, float]], int]:
    from orchestrator import Outcome
    from orchestrator import WorkerOrchestrator

    orch = WorkerOrchestrator(max_concurrent=SLOTS, timezone="UTC",
                              history_limit=1000)
    for index in range(WORKERS):
        orch.register_worker(f"w{index:03d}", orchestrator_work,
                             interval_seconds=interval_seconds(index), timeout_seconds=30,
                             max_retries=0)
    begun = time.time()
    orch.start()
    try:
        time.sleep(seconds)  # the measurement window
        records = orch.history(limit=WORKERS * 1000)
    finally:
        orch.stop()
    return ([(record.due_at.timestamp() - begun, record.result - record.due_at.timestamp())
             for record in records if isinstance(record.result, float)],
            sum(record.outcome is Outcome.SKIPPED for record in records))


def apscheduler_lateness(seconds: float) -> tuple[list[tuple[float, float]], int]:
    import logging
    from datetime import datetime, timezone

    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES
    from apscheduler.executors.pool import ProcessPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    lateness: list[tuple[float, float]] = []
    skipped = [0]
    lock = threading.Lock()
    begun = time.time()
    first = datetime.fromtimestamp(begun, timezone.utc)

    def on_executed(event) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            with lock:
                skipped[0] += 1
        elif isinstance(event.retval, float):
            with lock:
                due = event.scheduled_run_time.timestamp()
                lateness.append((due - begun, event.retval - due))

    scheduler = BackgroundScheduler(executors={"default": ProcessPoolExecutor(SLOTS)},
                                    timezone="UTC")
    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED | EVENT_JOB_MAX_INSTANCES)
    # each skip is counted above; its warning would flood the terminal
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    for index in range(WORKERS):
        scheduler.add_job(work, "interval", seconds=interval_seconds(index), args=(index,),
                          id=f"w{index:03d}", misfire_grace_time=None, coalesce=False,
                          next_run_time=first)
    scheduler.start()
    try:
        time.sleep(seconds)  # the measurement window
    finally:
        scheduler.shutdown(wait=True)
    with lock:
        return list(lateness), skipped[0]


def schedule_lateness(seconds: float) -> tuple[list[tuple[float, float]], int]:
    from datetime import datetime

    import schedule

    lateness: list[tuple[float, float]] = []
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    scheduler = schedule.Scheduler()

    def run_in_thread(index: int, due: float) -> None:
        started = work(index)
        with lock:
            lateness.append((due - begun, started - due))

    def submit(index: int, job_holder: list) -> None:
        due = job_holder[0].next_run.timestamp()  # still this run's due time
        thread = threading.Thread(target=run_in_thread, args=(index, due))
        thread.start()
        threads.append(thread)

    begun = time.time()
    first = datetime.fromtimestamp(begun)  # schedule keeps naive local times
    for index in range(WORKERS):
        holder: list = []
        holder.append(scheduler.every(interval_seconds(index)).seconds.do(submit, index,
                                                                          holder))
        holder[0].next_run = first
    end = time.monotonic() + seconds
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        # schedule has no wake-up to block on: sleep until its next due time
        time.sleep(max(0.0, min(scheduler.idle_seconds, remaining)))
        scheduler.run_pending()
    for thread in threads:
        thread.join()
    with lock:  # schedule starts every due run (a thread each): it never skips
        return list(lateness), 0


PEERS = (
    ("orchestrator (process per run, 200 slots)", orchestrator_lateness),
    ("APScheduler 3 BackgroundScheduler + ProcessPoolExecutor(200)", apscheduler_lateness),
    ("schedule loop + a thread per run", schedule_lateness),
)
