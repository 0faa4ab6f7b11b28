"""The Ray executor beside bare Ray tasks on the same local Ray, in one process.

- start: submit -> first line of user code, p50 / p99, one run at a time; beside it, the
  round trip of a bare no-op task (submit -> result) and of a bare task that forks a fresh
  process (what a fresh process per run costs without any containment);
- throughput: no-op runs per second, with the same number in flight for both;
- kill: deadline (start + timeout + grace) -> every process of the run gone, p50 / p99, for a
  task that ignores SIGTERM and has started a grandchild, with a grace of 0 and 0.5 s; beside
  it, bare ``ray.cancel(force=True)`` of the same task: how long it takes and how many of the
  daemons it left outlive it.

Run as ``python -m bench ray`` (the table) or ``python bench/cluster.py`` (the raw figures).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IN_FLIGHT = 8
SHARE = 2 / IN_FLIGHT  # CPUs each no-op asks for, so that all in flight fit on 2 CPUs


# -- tasks (module level, so that both sides run the same code) ---------------------------------

def started_at() -> float:
    return time.monotonic()


def noop() -> None:
    return None


def forked() -> float:
    """A bare task's fresh process: fork, run nothing, wait."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.monotonic()


def hang_with_grandchild(path: str) -> None:
    """Ignore SIGTERM, leave a daemon behind (a shell starts ``setsid sleep`` in the
    background and exits: a session of its own, as any program that daemonizes makes),
    write both pids, hang."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    daemon = subprocess.run(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 & echo $!"],
                            capture_output=True, text=True, check=True).stdout.split()[0]
    Path(path + ".tmp").write_text(f"{os.getpid()} {daemon}")
    os.replace(path + ".tmp", path)
    while True:
        time.sleep(1)


# -- measuring ----------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_file(path: Path, seconds: float = 60.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written")
        time.sleep(0.005)
    return [int(pid) for pid in path.read_text().split()]


def measure(samples: int = 60, runs: int = 400, kills: int = 20) -> dict:
    """Every figure of the row, from one local Ray started here (2 CPUs)."""
    import ray

    from orchestrator.execution.base import RunSpec
    from orchestrator.execution.ray import RayExecutor

    root = str(Path(__file__).resolve().parent.parent)  # where Ray's workers find bench/
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    figures: dict = {}
    executor = RayExecutor(sample_interval=1.0)
    executor.start()
    try:
        bare_started, bare_noop, bare_forked = (ray.remote(started_at), ray.remote(noop),
                                                ray.remote(forked))
        ray.get([bare_noop.remote() for _ in range(20)])  # warm the worker pool
        figures["bare.round_trip"] = _round_trips(lambda: ray.get(bare_noop.remote()), samples)
        figures["bare.forked"] = _round_trips(lambda: ray.get(bare_forked.remote()), samples)
        starts = []
        for _ in range(samples):
            begun = time.monotonic()
            starts.append(ray.get(bare_started.remote()) - begun)
        figures["bare.start"] = starts
        ours = []
        for _ in range(5 + samples):
            begun = time.monotonic()
            result = executor.submit_run(RunSpec(run_id="s", worker="start",
                                                 function=started_at)).result(60)
            ours.append(result.result - begun)
        figures["ours.start"] = ours[5:]
        figures["ours.round_trip"] = _round_trips(
            lambda: executor.submit_run(RunSpec(run_id="r", worker="noop",
                                                function=noop)).result(60), samples)

        for _ in range(2):  # the first round starts Ray's workers for 8 fractional tasks
            figures["bare.throughput"] = _throughput(
                lambda: bare_noop.options(num_cpus=SHARE).remote(), ray.get, runs)
            figures["ours.throughput"] = _throughput(
                lambda: executor.submit_run(RunSpec(run_id="t", worker="noop", function=noop,
                                                    num_cpus=SHARE)),
                lambda future: future.result(60), runs)

        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-ray-{os.getpid()}"
        folder.mkdir(exist_ok=True)
        for grace in (0.0, 0.5):
            latencies, left = [], 0
            for index in range(kills):
                path = folder / f"ours-{grace}-{index}"
                future = executor.submit_run(RunSpec(
                    run_id="k", worker="hang", function=hang_with_grandchild,
                    argument=str(path), pass_argument=True, timeout_seconds=0.1,
                    kill_grace_seconds=grace))
                pids = _wait_file(path)
                future.result(60)
                done = datetime.now(timezone.utc)
                deadline = future.started_at.timestamp() + 0.1 + grace
                latencies.append(done.timestamp() - deadline)
                left += sum(_alive(pid) for pid in pids)
            figures[f"ours.kill{grace:g}"] = latencies
            figures[f"ours.kill{grace:g}.left"] = left
        bare_hang = ray.remote(hang_with_grandchild)
        latencies, left, grandchildren = [], 0, []
        for index in range(kills):
            path = folder / f"bare-{index}"
            reference = bare_hang.remote(str(path))
            pids = _wait_file(path)
            begun = time.monotonic()
            ray.cancel(reference, force=True)
            try:
                ray.get(reference, timeout=60)
            except Exception:
                pass
            latencies.append(time.monotonic() - begun)
            grandchildren.append(pids[1])
        time.sleep(1.0)  # the measure: still alive a second later
        for pid in grandchildren:
            if _alive(pid):
                left += 1
                os.kill(pid, signal.SIGKILL)  # started by this benchmark's task
        figures["bare.cancel"] = latencies
        figures["bare.cancel.left"] = left
        figures["kills"] = kills
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        ray.shutdown()
    return figures


def _round_trips(call, count: int) -> list[float]:
    for _ in range(5):
        call()
    times = []
    for _ in range(count):
        begun = time.monotonic()
        call()
        times.append(time.monotonic() - begun)
    return times


def _throughput(submit, wait, runs: int) -> float:
    """Runs per second with IN_FLIGHT submitted at any time."""
    begun = time.monotonic()
    flight = [submit() for _ in range(IN_FLIGHT)]
    submitted = IN_FLIGHT
    while flight:
        wait(flight.pop(0))
        if submitted < runs:
            flight.append(submit())
            submitted += 1
    return runs / (time.monotonic() - begun)


if __name__ == "__main__":
    import json

    from loguru import logger

    logger.remove()
    from bench.cluster import measure as by_reference  # tasks pickled by name, not by value

    print(json.dumps(by_reference(), indent=1))
