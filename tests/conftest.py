"""Shared fixtures: a leak check after every test, and helpers to wait on conditions."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import psutil
import pytest


def wait_for(condition, timeout: float = 20.0, interval: float = 0.01, message: str = ""):
    """Wait until ``condition()`` is truthy and return its value; fail after ``timeout``.

    Used for conditions that have no event to block on (a process appearing or vanishing).
    On expiry it dumps every thread's traceback, so a hang explains itself; ``message`` may
    be a callable, to say what was seen instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(file=sys.stderr)
            said = message() if callable(message) else message
            pytest.fail(f"condition not met within {timeout}s: {said or condition}")
        time.sleep(interval)


def finish(process) -> int:
    """Wait for an ``orchestrator run`` subprocess to exit and return its code; fail (after
    killing it) if it has not stopped within 60 s."""
    import subprocess

    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("orchestrator run did not stop within 60 s")


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: this machine's pid 1 may never reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


#: Processes that outlive single tests (the Ray cluster a session shares): they and their
#: descendants are not a test's leaks.
SHARED_PROCESSES: set[int] = set()
#: Threads of such shared things (a Ray driver's, an executor's that a module shares).
SHARED_THREADS: set[threading.Thread] = set()


class sharing:
    """``with sharing(): ...``: the processes and threads started inside are shared ones."""

    def __enter__(self):
        self.processes = {child.pid for child in psutil.Process().children(recursive=True)}
        self.threads = set(threading.enumerate())
        return self

    def __exit__(self, *exc_info):
        SHARED_PROCESSES.update(child.pid for child in psutil.Process().children(recursive=True)
                                if child.pid not in self.processes)
        SHARED_THREADS.update(set(threading.enumerate()) - self.threads)


def _ours() -> list[psutil.Process]:
    """This process's descendants, less the shared ones and theirs."""
    shared = set()
    for pid in SHARED_PROCESSES:
        try:
            shared.add(pid)
            shared.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return [child for child in psutil.Process().children(recursive=True)
            if child.pid not in shared]


def live_children() -> list[psutil.Process]:
    alive = []
    for child in _ours():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(autouse=True)
def no_leaks():
    """After each test: no child process, zombie or extra thread of ours remains."""
    threads_before = set(threading.enumerate())
    yield
    leftovers = []

    def settled():
        leftovers[:] = live_children()
        zombies = [c for c in _ours() if c.is_running() and c.status() == psutil.STATUS_ZOMBIE]
        extra = [t for t in threading.enumerate()
                 if t not in threads_before and t not in SHARED_THREADS and t.is_alive()]
        return not leftovers and not zombies and not extra

    deadline = time.monotonic() + 10
    while not settled():
        if time.monotonic() > deadline:
            for child in leftovers:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            extra = [t.name for t in threading.enumerate()
                     if t not in threads_before and t not in SHARED_THREADS and t.is_alive()]
            pytest.fail(f"leak after test: processes {[c.pid for c in leftovers]}, "
                        f"threads {extra}")
        time.sleep(0.02)


_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Make this test process a child subreaper while the test runs, as a service manager
    is: processes orphaned below it come to it, not to pid 1 (which, on this project's
    machines, disposes of orphans itself, so a test of ours could not tell who killed them).
    Zombies it adopted are reaped afterwards."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in psutil.Process().children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)
            except (psutil.NoSuchProcess, ChildProcessError):
                pass


# -- a Ray cluster, for the tests of the Ray executor ------------------------------------------

class RayCluster:
    """A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head
    that runs nothing (0 CPUs) and nodes that each have 1 CPU and a custom resource named
    after them (``nodeb``, ``nodec``). This process is connected to it as a driver."""

    def __init__(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        tests = os.path.dirname(os.path.abspath(__file__))
        with sharing():
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "include_dashboard": False,
                "object_store_memory": 100 * 1024 * 1024})
            self.nodes = {}
            for name in ("b", "c"):
                self.add_node(name)
            ray.init(address=self.cluster.address, log_to_driver=False,
                     job_config=ray.job_config.JobConfig(code_search_path=[tests]))
        self.address = self.cluster.address

    def add_node(self, name: str):
        """Start node ``name`` (again), with 1 CPU and the resource ``node<name>``."""
        with sharing():
            node = self.cluster.add_node(num_cpus=1, resources={f"node{name}": 1},
                                         object_store_memory=100 * 1024 * 1024)
            self.cluster.wait_for_nodes()
        self.nodes[name] = node
        return node

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def remove_node_running(self, node_id: str) -> str:
        """Remove the node with that id (never the head); returns its name."""
        [name] = [name for name, node in self.nodes.items() if node.node_id == node_id]
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)
        return name

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster for the session: a head and the nodes b and c."""
    pytest.importorskip("ray", reason="the Ray tests need the ray extra: "
                                      "pip install -e '.[test,ray]'")
    cluster = RayCluster()
    yield cluster
    cluster.shutdown()
