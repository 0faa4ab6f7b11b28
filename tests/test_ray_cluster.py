"""The orchestrator on a real two-node Ray cluster (``ray.cluster_utils.Cluster`` on this
machine): placement by resources, where each run ran, a run waiting to be placed, a node lost
in the middle of a run, the orchestrator killed with runs on every node, a script's own
functions, an address nothing answers on.

The nodes ``b`` and ``c`` have one CPU and a resource named after them (``nodeb``,
``nodec``); the head runs nothing.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest

import contract_workers as workers
from conftest import finish, gone, wait_for
from orchestrator import WorkerOrchestrator

pytestmark = pytest.mark.timeout(240)

WAIT = 90
HOST = socket.gethostname()


@pytest.fixture
def make(ray_cluster, tmp_path):
    """``make(**options)``: an orchestrator whose attempts run on the session's cluster."""
    from orchestrator.execution.ray import RayExecutor

    made = []

    def build(**options):
        orch = WorkerOrchestrator(state_path=tmp_path / "state.db",
                                  executor=RayExecutor(ray_cluster.address), **options)
        made.append(orch)
        return orch

    yield build
    for orch in made:
        orch.stop()


def installation(folder: Path, address: str, workers: str) -> Path:
    """``folder``/jobs.toml: a state file beside it, attempts on the Ray cluster at
    ``address``, and the ``workers`` tables given."""
    path = folder / "jobs.toml"
    path.write_text(f'[orchestrator]\nstate_path = "state.db"\nexecutor = "ray"\n'
                    f'ray_address = "{address}"\n{textwrap.dedent(workers)}')
    return path


def lineage(pid: int) -> str:
    """A process and its ancestors, for a failure's message."""
    import psutil

    try:
        process = psutil.Process(pid)
        return " < ".join(f"{each.pid} {each.name()}"
                          for each in [process, *process.parents()])
    except psutil.NoSuchProcess:
        return f"{pid} gone"


def running_where(orch, worker: str):
    """The worker's status while a process of its run exists on a node, else None."""
    state = orch.get_status()["worker_states"][worker]
    return state if state["running"] and state["pid"] and state["node"] else None


def test_a_pipeline_runs_its_steps_on_the_nodes_their_resources_name(make, ray_cluster,
                                                                     tmp_path):
    orch = make()
    orch.register_worker("fetch", functools.partial(workers.produce, str(tmp_path)),
                         execution_mode="triggered", resources={"nodeb": 1})
    orch.register_worker("process", functools.partial(workers.consume, str(tmp_path)),
                         execution_mode="triggered", resources={"nodec": 1},
                         depends_on=["fetch"])
    orch.start()
    assert orch.trigger_worker("fetch", wait=True, timeout=WAIT)
    wait_for(lambda: orch.history("process") and orch.history("process")[0].outcome,
             timeout=WAIT, message="the dependent step ended")
    [fetch], [process] = orch.history("fetch"), orch.history("process")
    assert process.outcome.value == "succeeded" and process.cause.value == "upstream"
    assert process.result == "43"  # it read what the first step wrote (history keeps reprs)
    assert fetch.node == ray_cluster.node_id("b") and process.node == ray_cluster.node_id("c")
    assert fetch.host == process.host == HOST
    assert process.started_at >= fetch.ended_at
    assert fetch.cpu_seconds > 0 and fetch.peak_rss_bytes > 0  # measured on the node


def test_status_says_where_a_run_runs_and_what_an_unplaced_run_waits_for(make, ray_cluster,
                                                                           tmp_path):
    orch = make(http="127.0.0.1:0")
    orch.register_worker("hold", functools.partial(workers.write_pid_and_wait, str(tmp_path)),
                         execution_mode="triggered", resources={"nodeb": 1})
    orch.register_worker("queued", workers.report, execution_mode="triggered",
                         resources={"nodeb": 1})
    orch.start()
    orch.trigger_worker("hold")
    held = wait_for(lambda: running_where(orch, "hold"), timeout=WAIT,
                    message="hold running on a node")
    assert held["node"] == ray_cluster.node_id("b") and held["host"] == HOST
    assert held["reason"].startswith("running since ") and f" on {HOST} " in held["reason"]
    with urllib.request.urlopen(orch.http_url + "/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    assert (f'orchestrator_worker_node_info{{host="{HOST}",node="{held["node"]}",'
            f'worker="hold"}} 1.0') in metrics

    orch.trigger_worker("queued")  # node b's one CPU is taken: Ray cannot place it yet
    reasons = []
    wait_for(lambda: reasons.append(orch.get_status()["worker_states"]["queued"]["reason"])
             or reasons[-1] == "submitted, waiting for a node with 1 CPU free and 1 nodeb",
             timeout=WAIT, message=lambda: f"the placement reason, not {set(reasons)!r} "
                                          f"{orch.history('queued')} {ray_cluster.node_id('b')}")
    assert orch.get_status()["worker_states"]["queued"]["pid"] is None
    orch.disable_worker("queued", stop=True)
    wait_for(lambda: orch.history("queued") and orch.history("queued")[0].outcome,
             timeout=WAIT, message="the unplaced run cancelled")
    [queued] = orch.history("queued")
    assert queued.outcome.value == "cancelled" and queued.node is None, [
        (r.worker, r.outcome, r.error, r.started_at, r.ended_at, r.node)
        for r in orch.history()]

    (tmp_path / "go").touch()
    wait_for(lambda: orch.history("hold")[0].outcome, timeout=WAIT, message="hold ended")
    [hold] = orch.history("hold")
    assert hold.outcome.value == "succeeded" and hold.node == held["node"]
    assert hold.result == repr((tmp_path / "pids").read_text().split()[0])


def test_a_node_lost_mid_run_crashes_the_attempt_and_the_retry_runs_on_another(
        make, ray_cluster, tmp_path):
    orch = make()
    orch.register_worker("long", functools.partial(workers.write_pid_and_wait, str(tmp_path)),
                         execution_mode="triggered", max_retries=1, retry_delay_seconds=0)
    events = []
    orch.add_listener(events.append)
    orch.start()
    orch.trigger_worker("long")
    first = wait_for(lambda: running_where(orch, "long"), timeout=WAIT,
                     message="the first attempt running")
    lost = ray_cluster.remove_node_running(first["node"])
    try:
        crashed = wait_for(lambda: [event for event in events if event.kind == "crashed"],
                           timeout=WAIT, message="the attempt recorded crashed")
        assert crashed[0].final is False and "node lost" in crashed[0].message
        second = wait_for(lambda: running_where(orch, "long"), timeout=WAIT,
                          message="the retry running")
        assert second["node"] != first["node"] and second["attempt"] == 2
        (tmp_path / "go").touch()
        wait_for(lambda: orch.history("long")[0].outcome, timeout=WAIT, message="long ended")
        [record] = orch.history("long")
        assert (record.outcome.value, record.attempts) == ("succeeded", 2)
        assert record.node == second["node"]
        wait_for(lambda: gone(first["pid"]), timeout=WAIT,
                 message="the first attempt's process gone with its node")
    finally:
        ray_cluster.add_node(lost)


def test_the_orchestrator_killed_leaves_nothing_on_any_node(ray_cluster, tmp_path):
    config = installation(tmp_path, ray_cluster.address, "".join(f"""
        [workers.on-{node}]
        command = "sleep 1000 & echo $$ $! > on-{node}.tmp && mv on-{node}.tmp on-{node}; wait"
        cwd = "{tmp_path}"
        shell = true
        execution_mode = "triggered"
        resources = {{ node{node} = 1 }}
        """ for node in "bc"))
    cli = [sys.executable, "-m", "orchestrator"]
    driver = subprocess.Popen([*cli, "run", str(config)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errors = []
    threading.Thread(target=lambda: errors.append(driver.stderr.read()), daemon=True).start()
    try:
        wait_for(lambda: driver.poll() is not None or (tmp_path / "state.db.sock").exists(),
                 timeout=WAIT, message="the orchestrator serving")
        assert driver.poll() is None, errors
        for worker in ("on-b", "on-c"):
            trigger = subprocess.run([*cli, "trigger", str(config), worker], cwd=tmp_path,
                                     capture_output=True, text=True, timeout=WAIT)
            assert trigger.returncode == 0, trigger.stderr
        pids = []
        for worker in ("on-b", "on-c"):
            path = tmp_path / worker
            wait_for(path.exists, timeout=WAIT, message=f"{worker}'s processes started")
            pids += [int(pid) for pid in path.read_text().split()]
        assert not any(gone(pid) for pid in pids)
    finally:
        driver.send_signal(signal.SIGKILL)
        finish(driver)
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=WAIT,
             message=lambda: f"every run's processes gone from both nodes; left: "
                             f"{[lineage(pid) for pid in pids if not gone(pid)]}")


def test_a_scripts_own_function_runs_on_the_cluster(ray_cluster, tmp_path):
    script = tmp_path / "tally.py"
    script.write_text(textwrap.dedent(f"""\
        import socket

        from orchestrator import WorkerOrchestrator
        from orchestrator.execution.ray import RayExecutor


        def tally():
            return sum(range(10)), socket.gethostname()


        if __name__ == "__main__":
            orch = WorkerOrchestrator(executor=RayExecutor({ray_cluster.address!r}))
            orch.register_worker("tally", tally, execution_mode="triggered")
            orch.start()
            try:
                assert orch.trigger_worker("tally", wait=True, timeout=60)
                [record] = orch.history("tally")
                print(record.result, record.node is not None)
            finally:
                orch.stop()
        """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=WAIT + 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"(45, {HOST!r}) True"


def test_an_address_nothing_answers_on_is_one_line(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = installation(tmp_path, f"127.0.0.1:{port}", """
        [workers.w]
        command = "true"
        execution_mode = "triggered"
        """)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("orchestrator: ") and f"127.0.0.1:{port}" in lines[0]
