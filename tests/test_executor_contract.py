"""The contract every executor keeps, checked against each: the process engine under both
containments, and the Ray executor on a real two-node cluster (each attempt there runs under
its node's own process engine).

What a run returns or raises comes back whole; a command's exit code and output too; a run
that ignores SIGTERM and started a grandchild is killed at its timeout with nothing left; a
memory limit holds; an unpicklable result fails its run with a clear line; a kill ends the
whole tree; output is readable while the run goes on.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

import contract_workers as workers
from conftest import gone, sharing, wait_for
from orchestrator.execution.base import RunSpec
from orchestrator.execution.process import ProcessExecutor
from orchestrator.runs import Outcome

pytestmark = pytest.mark.timeout(180)

RESULT_WAIT = 60


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    from orchestrator.execution.ray import RayExecutor

    with sharing():  # one executor for the module: its launchers start once per node
        executor = RayExecutor(ray_cluster.address)
        executor.start()
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(params=["cgroup", "process-group", "ray"])
def executor(request):
    if request.param == "ray":
        yield request.getfixturevalue("ray_executor")
        return
    executor = ProcessExecutor(containment=request.param)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def spec(function=None, *, command=None, argument=None, **options) -> RunSpec:
    return RunSpec(run_id="r1", worker="contract", function=function, command=command,
                   argument=argument, pass_argument=argument is not None, **options)


def run(executor, run_spec: RunSpec):
    return executor.submit_run(run_spec).result(timeout=RESULT_WAIT)


def pids(path: Path) -> list[int]:
    wait_for(path.exists, timeout=RESULT_WAIT, message=f"{path.name} written")
    return [int(pid) for pid in path.read_text().split()]


def test_a_result_comes_back_whole(executor):
    result = run(executor, spec(workers.report))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.result == workers.report()
    assert result.exit_code is None and result.pid and result.cpu_seconds > 0


def test_an_exception_comes_back_whole(executor):
    result = run(executor, spec(workers.fail))
    assert result.outcome is Outcome.FAILED
    assert result.error == "TooEarly: the data is not there yet"
    assert "in inner" in result.traceback and "raise TooEarly" in result.traceback


def test_a_command_exit_code_and_output_tails(executor):
    result = run(executor, spec(command="echo out; echo err >&2; exit 3", shell=True))
    assert (result.outcome, result.exit_code, result.error) == (Outcome.FAILED, 3,
                                                                "exit code 3")
    assert (result.stdout_tail, result.stderr_tail) == ("out\n", "err\n")


def test_a_hang_that_ignores_sigterm_times_out_with_its_grandchild(executor, tmp_path):
    pid_file = tmp_path / "pids"
    future = executor.submit_run(spec(workers.hold_with_grandchild, argument=str(pid_file),
                                      timeout_seconds=2, kill_grace_seconds=0.5))
    run_pid, grandchild = pids(pid_file)
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.TIMED_OUT and result.error == "timed out after 2s"
    for pid in (run_pid, grandchild):
        wait_for(lambda: gone(pid), timeout=10, message=f"process {pid} is gone")


def test_a_kill_ends_the_whole_tree(executor, tmp_path):
    pid_file = tmp_path / "pids"
    future = executor.submit_run(spec(workers.hold_with_grandchild, argument=str(pid_file),
                                      timeout_seconds=120, kill_grace_seconds=0.5))
    run_pid, grandchild = pids(pid_file)
    future.kill(Outcome.CANCELLED)
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CANCELLED
    for pid in (run_pid, grandchild):
        wait_for(lambda: gone(pid), timeout=10, message=f"process {pid} is gone")


def test_output_is_readable_while_the_run_goes_on(executor, tmp_path):
    pid_file = tmp_path / "pids"
    future = executor.submit_run(spec(workers.hold_with_grandchild, argument=str(pid_file),
                                      timeout_seconds=120, kill_grace_seconds=0))
    pids(pid_file)
    output = wait_for(lambda: (lambda o: o if o and o.stdout else None)(
        executor.output(future).result(RESULT_WAIT)), timeout=RESULT_WAIT)
    assert (output.stdout, output.stdout_offset) == ("holding\n", 8)
    future.kill(Outcome.CANCELLED, immediately=True)
    assert future.result(timeout=RESULT_WAIT).outcome is Outcome.CANCELLED


def test_a_memory_limit_holds(executor):
    result = run(executor, spec(workers.allocate_without_bound, memory_limit_mb=100,
                                kill_grace_seconds=0, timeout_seconds=60))
    assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
    assert result.error.startswith("memory limit 100 MB exceeded")


def test_an_unpicklable_result_fails_its_run(executor):
    result = run(executor, spec(workers.unpicklable))
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("result of type 'generator' cannot be pickled: ")


def test_each_process_it_started_is_gone_after_shutdown(tmp_path, ray_cluster):
    """The executors of this module leave no process of theirs behind (the Ray nodes'
    launchers included) once shut down."""
    from orchestrator.execution.ray import RayExecutor

    executor = RayExecutor(ray_cluster.address)
    with sharing():
        executor.start()
    actors = [psutil.Process(node["pid"]) for node in executor.nodes]
    assert len(actors) == 3  # the head's, b's and c's
    launchers = actors + [child for actor in actors for child in actor.children()]
    assert len(launchers) >= 6  # each actor's launcher process
    pid_file = tmp_path / "pids"
    executor.submit_run(spec(workers.hold_with_grandchild, argument=str(pid_file),
                             timeout_seconds=120))
    run_pid, grandchild = pids(pid_file)
    executor.shutdown(wait=True, cancel_futures=True)
    for process in launchers:
        wait_for(lambda: not process.is_running() or
                 process.status() == psutil.STATUS_ZOMBIE, timeout=30)
    for pid in (run_pid, grandchild):
        assert gone(pid)
