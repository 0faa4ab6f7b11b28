"""The functions of ``jobs.toml``: a fetch -> process pipeline and a cleanup.

Demonstrates what a function worker of a TOML file looks like: module-level functions in a
module beside the file (``function = "jobs:fetch_data"``), one of them taking its
WorkerConfig. They only write under the temporary directory, so the example is safe to run.

    python examples/jobs.py      # run each function once, in this process
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

DATA = Path(tempfile.gettempdir()) / "orchestrator-example"


def fetch_data():
    """Pretend to download a batch of readings; fails now and then like a real network."""
    time.sleep(random.uniform(0.1, 0.5))
    if random.random() < 0.1:
        raise ConnectionError("upstream API answered 503")
    inbox = DATA / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    batch = [random.randint(1, 100) for _ in range(1000)]
    (inbox / f"batch-{time.time_ns()}.json").write_text(json.dumps(batch))
    return len(batch)


def process_data(config):
    """Sum every fetched batch into one report; receives its WorkerConfig."""
    inbox, done = DATA / "inbox", DATA / "processed"
    done.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(inbox.glob("batch-*.json")) if inbox.exists() else []:
        total += sum(json.loads(path.read_text()))
        path.rename(done / path.name)
    (DATA / "report.txt").write_text(f"{config.name}: total {total}\n")
    return total


def cleanup(max_age_seconds: float = 3600.0):
    """Delete processed batches older than an hour."""
    done = DATA / "processed"
    removed = 0
    cutoff = time.time() - max_age_seconds
    for path in done.glob("batch-*.json") if done.exists() else []:
        if path.stat().st_mtime < cutoff:
            path.unlink()
            removed += 1
    return removed


if __name__ == "__main__":
    from types import SimpleNamespace

    print("fetched", fetch_data())
    print("processed, total", process_data(SimpleNamespace(name="process-data")))
    print("cleaned up", cleanup())
