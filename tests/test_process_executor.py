"""ProcessExecutor end to end, with real processes.

Tests that act on a running attempt wait for the worker's marker file (``wait_for``) first.
Attempts that could hang carry a safety timeout well above what the test needs, so that a
bug fails the test instead of blocking it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

import workers_for_executor as workers
from conftest import wait_for
from orchestrator.execution.base import RunSpec
from orchestrator.execution.process import TAIL_BYTES, ProcessExecutor
from orchestrator.runs import Outcome

RESULT_WAIT = 30  # seconds; generous for a busy 2-core machine
SAFETY_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def executor():
    executor = ProcessExecutor()
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def function_spec(function, argument=None, **options) -> RunSpec:
    return RunSpec(run_id="r1", worker=function.__name__, function=function,
                   argument=argument, pass_argument=argument is not None, **options)


def command_spec(command, **options) -> RunSpec:
    return RunSpec(run_id="r1", worker="command", command=command, **options)


def run(executor, spec):
    return executor.submit_run(spec).result(timeout=RESULT_WAIT)


def read_pid(path: Path) -> psutil.Process:
    """The process whose pid a worker wrote to ``path`` (pinned by its creation time)."""
    wait_for(path.exists, message=f"{path.name} written")
    return psutil.Process(int(path.read_text()))


def gone(process: psutil.Process) -> bool:
    """Dead; a zombie counts as dead (this machine's pid 1 may never reap orphans)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- functions ------------------------------------------------------------------------------

def test_function_returns_its_value_and_takes_the_argument(executor):
    result = run(executor, function_spec(workers.double, 21))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.result == 42
    assert result.exit_code == 0 and result.signal is None
    assert result.pid and result.cpu_seconds > 0 and result.peak_rss_bytes > 0
    assert result.started_at.tzinfo is not None and result.ended_at >= result.started_at

    result = run(executor, function_spec(workers.constant))
    assert result.result == "called without an argument"


def test_function_output_is_captured(executor):
    result = run(executor, function_spec(workers.print_both))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.stdout_tail == "to stdout\n"
    assert result.stderr_tail == "to stderr\n"


def test_raised_exception_comes_back_with_type_message_and_traceback(executor):
    result = run(executor, function_spec(workers.raise_value_error))
    assert result.outcome is Outcome.FAILED
    assert result.error == "ValueError: bad value 42"
    assert "in raise_value_error" in result.traceback
    assert 'raise ValueError("bad value 42")' in result.traceback


def test_unpicklable_exception_comes_back_whole(executor):
    result = run(executor, function_spec(workers.raise_unpicklable))
    assert result.outcome is Outcome.FAILED
    assert result.error == "UnpicklableError: carries a lock"
    assert "UnpicklableError: carries a lock" in result.traceback


def test_unpicklable_return_value_fails_the_attempt(executor):
    result = run(executor, function_spec(workers.return_generator))
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("result of type 'generator' cannot be pickled: ")


def test_value_that_cannot_be_unpickled_in_the_parent_fails_the_attempt(executor):
    result = run(executor, function_spec(workers.return_unloadable))
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("result of type 'LoadsNowhere' cannot be unpickled: ")
    assert "refuses to be loaded" in result.error


def test_function_that_cannot_be_pickled_fails_without_a_process(executor):
    result = run(executor, function_spec(lambda: 1))
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("cannot pickle the function or its argument: ")
    assert result.pid is None


def test_exit_without_result_is_a_crash(executor):
    result = run(executor, function_spec(workers.exit_without_result))
    assert result.outcome is Outcome.CRASHED
    assert result.error == "exited with code 3 without a result"
    assert result.exit_code == 3


def test_segfault_is_a_crash(executor):
    result = run(executor, function_spec(workers.segfault))
    assert result.outcome is Outcome.CRASHED
    assert result.error == "killed by SIGSEGV"
    assert result.signal == signal.SIGSEGV and result.exit_code is None


def test_function_defined_in_a_main_script(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent("""
        from orchestrator.execution.base import RunSpec
        from orchestrator.execution.process import ProcessExecutor

        def triple(value):
            return value * 3

        if __name__ == "__main__":
            with ProcessExecutor() as executor:
                future = executor.submit_run(RunSpec(run_id="1", worker="triple",
                    function=triple, argument=14, pass_argument=True))
                result = future.result(timeout=60)
            print(result.outcome.value, result.result, result.error)
    """))
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=90, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "succeeded 42 None"


def test_plain_submit_returns_the_value_or_raises(executor):
    assert executor.submit(workers.double, 5).result(timeout=RESULT_WAIT) == 10
    with pytest.raises(RuntimeError, match="ValueError: bad value 42"):
        executor.submit(workers.raise_value_error).result(timeout=RESULT_WAIT)


def test_large_argument_and_result_cross_the_pipes(executor):
    result = run(executor, function_spec(workers.double, b"ab" * 2_000_000))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.result == b"ab" * 4_000_000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_concurrent_attempts_all_complete():
    fds_before = open_fds()
    executor = ProcessExecutor()
    futures = [executor.submit_run(function_spec(workers.double, n)) for n in range(20)]
    results = [future.result(timeout=60) for future in futures]
    executor.shutdown(wait=True)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 20
    assert [r.result for r in results] == [2 * n for n in range(20)]
    assert len({r.pid for r in results}) == 20
    assert open_fds() == fds_before


# -- killing --------------------------------------------------------------------------------

def test_timeout_escalates_to_sigkill_after_the_grace(executor, tmp_path):
    marker = tmp_path / "started"
    future = executor.submit_run(function_spec(
        workers.ignore_sigterm_and_hang, str(marker), timeout_seconds=1.5,
        kill_grace_seconds=0.5))
    wait_for(marker.exists, message="worker started")
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.error == "timed out after 1.5s"
    assert result.signal == signal.SIGKILL  # SIGTERM was ignored
    assert 2.0 <= result.duration_seconds < 2.0 + 2.0
    assert not psutil.pid_exists(result.pid)


def test_kill_cancels_a_running_attempt(executor, tmp_path):
    marker = tmp_path / "started"
    future = executor.submit_run(function_spec(workers.hang, str(marker),
                                               timeout_seconds=SAFETY_TIMEOUT,
                                               kill_grace_seconds=0.5))
    assert future.started.is_set() and future.pid
    wait_for(marker.exists, message="worker started")
    future.kill()
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CANCELLED
    assert result.error == "killed (cancelled)"
    assert result.signal == signal.SIGTERM
    future.kill()  # harmless once done


def test_kill_all_uses_the_given_outcome(executor, tmp_path):
    markers = [tmp_path / f"started-{n}" for n in range(2)]
    futures = [executor.submit_run(function_spec(workers.hang, str(m), kill_grace_seconds=0,
                                                 timeout_seconds=SAFETY_TIMEOUT))
               for m in markers]
    for marker in markers:
        wait_for(marker.exists, message=f"{marker.name}")
    executor.kill_all(Outcome.FAILED)
    results = [f.result(timeout=RESULT_WAIT) for f in futures]
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert all(r.signal == signal.SIGKILL for r in results)


@pytest.mark.parametrize("worker", [workers.spawn_grandchild, workers.spawn_daemon],
                         ids=["grandchild", "setsid-daemon"])
@pytest.mark.parametrize("ending", ["return", "timeout"])
def test_processes_left_behind_are_killed(executor, tmp_path, worker, ending):
    pid_file = tmp_path / "descendant.pid"
    hangs = ending == "timeout"
    future = executor.submit_run(function_spec(
        worker, (str(pid_file), hangs), timeout_seconds=3.0 if hangs else SAFETY_TIMEOUT,
        kill_grace_seconds=0.5))
    descendant = read_pid(pid_file)
    result = future.result(timeout=RESULT_WAIT)
    expected = Outcome.TIMED_OUT if hangs else Outcome.SUCCEEDED
    assert result.outcome is expected, result.error
    # The future completes only once the leftovers have exited.
    assert gone(descendant)


def test_leftovers_are_kept_when_asked(executor, tmp_path):
    pid_file = tmp_path / "descendant.pid"
    result = run(executor, function_spec(workers.spawn_grandchild, (str(pid_file), False),
                                         kill_leftovers=False))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    grandchild = read_pid(pid_file)
    try:
        assert not gone(grandchild)
    finally:
        grandchild.kill()
        wait_for(lambda: gone(grandchild), message="grandchild killed by the test")


def test_memory_limit_kills_the_attempt(executor):
    result = run(executor, function_spec(workers.allocate_and_hang, 300,
                                         memory_limit_mb=100, kill_grace_seconds=0,
                                         timeout_seconds=SAFETY_TIMEOUT))
    assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
    assert result.error.startswith("memory limit 100 MB exceeded (rss ")


def test_shutdown_with_cancel_futures_leaves_no_process(tmp_path):
    executor = ProcessExecutor()
    markers = [tmp_path / f"started-{n}" for n in range(3)]
    futures = [executor.submit_run(function_spec(workers.hang, str(m),
                                                 timeout_seconds=SAFETY_TIMEOUT,
                                                 kill_grace_seconds=0.5))
               for m in markers]
    for marker in markers:
        wait_for(marker.exists, message=marker.name)
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert {f.result().outcome for f in futures} == {Outcome.CANCELLED}
    assert psutil.Process().children(recursive=True) == []
    executor.shutdown()  # twice is harmless
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit_run(function_spec(workers.constant))


def test_shutdown_without_cancel_waits_for_attempts():
    executor = ProcessExecutor()
    future = executor.submit_run(function_spec(workers.double, 1))
    executor.shutdown(wait=True)
    assert future.done() and future.result().result == 2


# -- commands -------------------------------------------------------------------------------

@pytest.mark.parametrize("code, outcome, error", [
    (0, Outcome.SUCCEEDED, None),
    (7, Outcome.FAILED, "exit code 7"),
])
def test_command_exit_codes(executor, code, outcome, error):
    result = run(executor, command_spec(["sh", "-c", f"exit {code}"]))
    assert (result.outcome, result.error, result.exit_code) == (outcome, error, code)
    assert result.signal is None


def test_command_killed_by_a_signal_is_a_crash(executor):
    result = run(executor, command_spec("kill -SEGV $$", shell=True))
    assert result.outcome is Outcome.CRASHED
    assert result.error == "killed by SIGSEGV"
    assert result.signal == signal.SIGSEGV


def test_shell_command_with_env_and_cwd(executor, tmp_path):
    result = run(executor, command_spec('echo "$GREETING"; pwd; echo oops >&2', shell=True,
                                        env={"GREETING": "hello there"}, cwd=str(tmp_path)))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.stdout_tail == f"hello there\n{tmp_path}\n"
    assert result.stderr_tail == "oops\n"


def test_string_command_without_shell_is_split(executor):
    result = run(executor, command_spec("printf '%s|' 'a b' c"))
    assert result.stdout_tail == "a b|c|"


@pytest.mark.parametrize("command, cwd, error", [
    (["no-such-program-here"], None,
     "cannot start 'no-such-program-here': [Errno 2] No such file or directory"),
    (["/dev/null"], None, "cannot start '/dev/null': [Errno 13] Permission denied"),
    (["true"], "/no/such/dir",
     "cannot start 'true': working directory '/no/such/dir': [Errno 2] No such file or "
     "directory"),
])
def test_command_that_cannot_start_fails(executor, command, cwd, error):
    future = executor.submit_run(command_spec(command, cwd=cwd))
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.FAILED
    assert result.error == error
    assert result.pid is None


def _peak_rss_since_reset() -> int | None:
    """Reset this process's RSS high-water mark; return a reader for it (None if unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return lambda: int(next(line.split()[1] for line in
                            Path("/proc/self/status").read_text().splitlines()
                            if line.startswith("VmHWM:"))) * 1024


def test_huge_output_keeps_only_the_tail(executor):
    rss_before = psutil.Process().memory_info().rss
    peak = _peak_rss_since_reset()
    result = run(executor, command_spec("head -c 300000000 /dev/zero | tr '\\0' x",
                                        shell=True))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.stdout_tail == "x" * TAIL_BYTES
    grown = (peak() if peak else psutil.Process().memory_info().rss) - rss_before
    assert grown < 50 * 1024 * 1024


def test_a_failing_executor_thread_completes_every_future_and_kills_everything(tmp_path):
    executor = ProcessExecutor()
    break_now = threading.Event()
    check_memory = executor._check_memory

    def check_memory_or_fail(attempt):
        if break_now.is_set():
            raise OSError("injected fault")
        check_memory(attempt)

    # The next memory sample after break_now is set breaks the executor thread.
    executor._check_memory = check_memory_or_fail
    pid_file = tmp_path / "descendant.pid"
    future = executor.submit_run(function_spec(workers.spawn_daemon, (str(pid_file), True),
                                               memory_limit_mb=1000,
                                               timeout_seconds=SAFETY_TIMEOUT))
    daemon = read_pid(pid_file)
    break_now.set()
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CRASHED
    assert "injected fault" in result.error
    wait_for(lambda: gone(daemon), message="daemon killed")
    with pytest.raises(RuntimeError, match="injected fault"):
        executor.submit_run(function_spec(workers.constant))
    executor.shutdown()
