"""The seed pipeline: fetch -> process, a cleanup that never runs beside process, a backup.

Demonstrates interval and cron schedules, ``depends_on``, ``blocks``, priorities, a
timeout, retries, ``trigger_worker(wait=True)`` and ``get_status()`` with the reason each
waiting worker gives. The intervals of the original design (60 s, 120 s, 1 h) are scaled
down so that a short demo shows them all.

    python examples/seed_pipeline.py              # a 20-second demo, then a clean stop
    python examples/seed_pipeline.py --forever    # until Ctrl-C (run_forever)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from loguru import logger

from orchestrator import JobPriority, WorkerOrchestrator

DATA = Path(tempfile.gettempdir()) / "orchestrator-seed-pipeline"


def fetch_data():
    """Pretend to download a batch of numbers; fails now and then like a real network."""
    time.sleep(random.uniform(0.2, 1.0))
    if random.random() < 0.2:
        raise ConnectionError("upstream API answered 503")
    DATA.mkdir(exist_ok=True)
    batch = [random.randint(1, 100) for _ in range(1000)]
    (DATA / f"batch-{time.time_ns()}.json").write_text(json.dumps(batch))
    return len(batch)


def process_data(config):
    """Sum every fetched batch into a report; receives its own WorkerConfig."""
    time.sleep(random.uniform(0.5, 1.5))
    batches = sorted(DATA.glob("batch-*.json"))
    total = sum(sum(json.loads(path.read_text())) for path in batches)
    (DATA / "report.txt").write_text(f"{config.name}: {len(batches)} batches, total {total}\n")
    return total


def cleanup():
    """Delete all but the newest five batches; must never run while process-data reads."""
    batches = sorted(DATA.glob("batch-*.json"))
    for path in batches[:-5]:
        path.unlink()
    return len(batches[:-5])


def build() -> WorkerOrchestrator:
    orch = WorkerOrchestrator(max_concurrent=2)
    orch.register_worker("fetch-data", fetch_data, interval_seconds=3, timeout_seconds=30,
                         priority=JobPriority.HIGH, max_retries=2, retry_delay_seconds=0.5)
    orch.register_worker("process-data", process_data, interval_seconds=6,
                         depends_on=["fetch-data"])
    orch.register_worker("cleanup", cleanup, interval_seconds=10, priority=JobPriority.LOW,
                         blocks=["process-data"])
    orch.register_worker("backup", command=["tar", "czf", str(DATA) + ".tgz", str(DATA)],
                         cron="* * * * *", depends_on=["fetch-data"])
    return orch


def print_status(orch: WorkerOrchestrator) -> None:
    status = orch.get_status()
    print(f"\n{time.strftime('%H:%M:%S')}  state={status['state']}  "
          f"running={status['running']}  pending={status['pending']}")
    for name, worker in status["worker_states"].items():
        print(f"  {name:<13} {worker['state']:<8} last={worker['last_outcome'] or '-':<10} "
              f"{worker['reason']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    parser.add_argument("--seconds", type=float, default=20, help="length of the demo")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{time:HH:mm:ss.SSS} {level:<7} {message}")
    logger.enable("orchestrator")

    orch = build()
    if args.forever:
        orch.run_forever()
        return 0
    orch.start()
    try:
        print("trigger fetch-data and wait for it:", orch.trigger_worker("fetch-data",
                                                                        wait=True))
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            print_status(orch)
            time.sleep(2)
    finally:
        orch.stop(timeout=10)
    print("\nlast runs:")
    for record in orch.history(limit=8):
        print(f"  {record.worker:<13} {record.cause.value:<9} {record.outcome.value:<10} "
              f"attempts={record.attempts} {record.error or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
