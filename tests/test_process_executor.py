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
from pathlib import Path

import psutil
import pytest

import workers_for_executor as workers
from conftest import live_children, wait_for
from orchestrator.execution.base import RunSpec
from orchestrator.execution.process import (RUN_TOKEN_VARIABLE, TAIL_BYTES, TOKEN_PLACEHOLDER,
                                            ProcessExecutor)
from orchestrator.execution.stale import kill_stale
from orchestrator.runs import Outcome

RESULT_WAIT = 30  # seconds; generous for a busy 2-core machine
SAFETY_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["cgroup", "process-group"])
def executor(request):
    """The engine under each containment: every test here holds for both."""
    executor = ProcessExecutor(containment=request.param)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def function_spec(function, argument=None, **options) -> RunSpec:
    return RunSpec(run_id="r1", worker=function.__name__, function=function,
                   argument=argument, pass_argument=argument is not None, **options)


def command_spec(command, **options) -> RunSpec:
    return RunSpec(run_id="r1", worker="command", command=command, **options)


def run(executor, spec):
    return executor.submit_run(spec).result(timeout=RESULT_WAIT)


def read_pid(path: Path) -> psutil.Process | None:
    """The process whose pid a worker wrote to ``path`` (pinned by its creation time), or
    None if it is already gone."""
    wait_for(path.exists, message=f"{path.name} written")
    try:
        return psutil.Process(int(path.read_text()))
    except psutil.NoSuchProcess:
        return None


def gone(process: psutil.Process | None) -> bool:
    """Dead; a zombie counts as dead (this machine's pid 1 may never reap orphans)."""
    if process is None:
        return True
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- functions ------------------------------------------------------------------------------

def test_function_returns_its_value_and_takes_the_argument(executor):
    result = run(executor, function_spec(workers.double, 21))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.result == 42
    assert result.exit_code is None and result.signal is None  # no process exit involved
    assert result.pid and result.cpu_seconds > 0 and result.peak_rss_bytes > 0
    assert result.started_at.tzinfo is not None and result.ended_at >= result.started_at

    result = run(executor, function_spec(workers.constant))
    assert result.result == "called without an argument"


def test_an_argument_is_unpickled_once_per_run(executor, tmp_path):
    """Spares may unpickle a recent job ahead of time, to be quicker, but only when that runs
    no user code: an argument's own unpickling is a side effect that happens once per run."""
    marks = tmp_path / "unpickled"
    for _ in range(4):
        result = run(executor, function_spec(workers.takes_noisy,
                                             workers.NoisyToUnpickle(str(marks))))
        assert result.outcome is Outcome.SUCCEEDED, result.error
        assert run(executor, function_spec(workers.constant)).outcome is Outcome.SUCCEEDED
    assert len(marks.read_text().split()) == 4


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
    assert_next_run_works(executor)


def test_segfault_is_a_crash(executor):
    result = run(executor, function_spec(workers.segfault))
    assert result.outcome is Outcome.CRASHED
    assert result.error == "killed by SIGSEGV"
    assert result.signal == signal.SIGSEGV and result.exit_code is None
    assert_next_run_works(executor)


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
    result = run(executor, function_spec(workers.double, b"ab" * 2_000_000,
                                         max_result_bytes=16 * 1024 * 1024))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert result.result == b"ab" * 4_000_000


def assert_next_run_works(executor) -> None:
    """After a fault: a new run starts and succeeds, and no process of any earlier run is
    left under the launcher (only its spare, which carries no run token)."""
    result = run(executor, function_spec(workers.double, 4))
    assert result.outcome is Outcome.SUCCEEDED and result.result == 8, result.error
    assert run_processes(executor.launcher_pid) == []


def run_processes(launcher_pid: int) -> list[psutil.Process]:
    """Live processes under the launcher that belong to a run (carry a run token)."""
    found = []
    for process in psutil.Process(launcher_pid).children(recursive=True):
        try:
            token = process.environ().get(RUN_TOKEN_VARIABLE, TOKEN_PLACEHOLDER)
            if process.status() != psutil.STATUS_ZOMBIE and token != TOKEN_PLACEHOLDER:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


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

@pytest.mark.parametrize("grace", [0, 0.5])
def test_timeout_escalates_to_sigkill_after_the_grace(executor, tmp_path, grace):
    marker = tmp_path / "started"
    future = executor.submit_run(function_spec(
        workers.ignore_sigterm_and_hang, str(marker), timeout_seconds=1.0,
        kill_grace_seconds=grace))
    wait_for(marker.exists, message="worker started")
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.error == "timed out after 1s"
    assert result.signal == signal.SIGKILL  # SIGTERM was ignored, or never sent
    assert 1.0 + grace <= result.duration_seconds < 1.0 + grace + 2.0
    assert not psutil.pid_exists(result.pid)
    assert_next_run_works(executor)


def test_kill_cancels_a_running_attempt(executor, tmp_path):
    marker = tmp_path / "started"
    future = executor.submit_run(function_spec(workers.hang, str(marker),
                                               timeout_seconds=SAFETY_TIMEOUT,
                                               kill_grace_seconds=0.5))
    assert future.started.wait(RESULT_WAIT) and future.pid
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
    assert_next_run_works(executor)


def test_kill_of_a_tree_that_obeys_sigterm_completes_at_once(executor, tmp_path):
    pid_file = tmp_path / "descendant.pid"
    future = executor.submit_run(function_spec(workers.spawn_grandchild, (str(pid_file), True),
                                               kill_grace_seconds=SAFETY_TIMEOUT,
                                               timeout_seconds=SAFETY_TIMEOUT))
    grandchild = read_pid(pid_file)
    future.kill()
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CANCELLED and result.signal == signal.SIGTERM
    assert result.duration_seconds < 5  # not the grace, nor the wait for leftovers
    assert gone(grandchild)
    assert_next_run_works(executor)


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
    result = run(executor, function_spec(workers.allocate_without_bound, None,
                                         memory_limit_mb=100, kill_grace_seconds=0,
                                         timeout_seconds=SAFETY_TIMEOUT))
    assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
    if executor.containment == "cgroup":  # the kernel's limit
        assert result.error == ("memory limit 100 MB exceeded: the kernel killed 1 process "
                                "at the limit")
        assert result.peak_rss_bytes <= 100 * 1024 * 1024
    else:
        assert result.error.startswith("memory limit 100 MB exceeded (rss ")
    assert_next_run_works(executor)


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
    assert live_children() == []  # (a Ray cluster other tests share is not ours)
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


def test_function_runs_in_its_working_directory(executor, tmp_path):
    result = run(executor, function_spec(os.getcwd, cwd=str(tmp_path)))
    assert result.outcome is Outcome.SUCCEEDED
    assert result.result == str(tmp_path)


def test_function_with_a_missing_working_directory_fails_to_start(executor, tmp_path):
    missing = tmp_path / "gone"
    future = executor.submit_run(function_spec(workers.constant, cwd=str(missing)))
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.FAILED
    assert result.error == (f"cannot start 'constant': working directory {str(missing)!r}: "
                            f"[Errno 2] No such file or directory")
    assert result.pid is None


def test_runs_of_newly_imported_modules_keep_starting(executor):
    # The first run of a module the launcher has not loaded yet makes it drop the processes
    # it forked ahead of time; the runs after it must still start, one after the other and
    # two at a time.
    assert run(executor, function_spec(os.getpid)).outcome is Outcome.SUCCEEDED
    for _ in range(3):
        assert run(executor, function_spec(workers.double, 4)).result == 8
    futures = [executor.submit_run(function_spec(workers.double, n)) for n in range(6)]
    assert [f.result(timeout=RESULT_WAIT).result for f in futures] == [0, 2, 4, 6, 8, 10]
    assert len({f.pid for f in futures}) == 6

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


def test_endless_output_is_cut_by_the_timeout(executor):
    result = run(executor, command_spec(["yes"], timeout_seconds=1.0, kill_grace_seconds=0))
    assert result.outcome is Outcome.TIMED_OUT
    assert result.stdout_tail == "y\n" * (TAIL_BYTES // 2)
    assert_next_run_works(executor)


def test_command_peak_rss_is_its_own_not_the_orchestrators(executor):
    ballast = bytearray(300 * 1024 * 1024)  # an orchestrator that holds much memory
    ballast[::4096] = b"\1" * len(ballast[::4096])
    result = run(executor, command_spec(["true"]))
    assert result.outcome is Outcome.SUCCEEDED
    assert 0 < result.peak_rss_bytes < 100 * 1024 * 1024
    del ballast


# -- the launcher ---------------------------------------------------------------------------

def test_the_start_is_reported_with_the_process(executor, tmp_path):
    marker = tmp_path / "started"
    started = []
    future = executor.submit_run(function_spec(workers.hang, str(marker), kill_grace_seconds=0,
                                               timeout_seconds=SAFETY_TIMEOUT))
    future.add_start_callback(started.append)
    assert future.started.wait(RESULT_WAIT)
    wait_for(lambda: started == [future], message="the start callback ran")
    process = psutil.Process(future.pid)
    assert future.pid_create_time == process.create_time()
    assert os.getpgid(future.pid) == future.pid  # its own process group
    assert process.ppid() == executor.launcher_pid
    wait_for(marker.exists, message="worker started")
    future.kill()
    assert future.result(timeout=RESULT_WAIT).outcome is Outcome.CANCELLED


def test_live_usage_appears_on_the_future(tmp_path):
    executor = ProcessExecutor(sample_interval=0.1)
    try:
        marker = tmp_path / "started"
        future = executor.submit_run(function_spec(
            workers.allocate_and_hang, (60, str(marker)), kill_grace_seconds=0,
            timeout_seconds=SAFETY_TIMEOUT))
        wait_for(marker.exists, message="worker allocated")
        usage = wait_for(lambda: future.usage if future.usage and
                         future.usage.rss_bytes > 60 * 1024 * 1024 else None,
                         message="a sample with the allocation")
        assert usage.processes == 1 and usage.peak_rss_bytes >= usage.rss_bytes
        assert usage.cpu_seconds > 0
        future.kill(immediately=True)
        assert future.result(timeout=RESULT_WAIT).outcome is Outcome.CANCELLED
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def test_kill_immediately_cuts_the_grace_short(executor, tmp_path):
    marker = tmp_path / "started"
    future = executor.submit_run(function_spec(workers.ignore_sigterm_and_hang, str(marker),
                                               kill_grace_seconds=SAFETY_TIMEOUT,
                                               timeout_seconds=SAFETY_TIMEOUT))
    wait_for(marker.exists, message="worker started")
    future.kill(Outcome.CANCELLED)
    future.kill(Outcome.CANCELLED, immediately=True)
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CANCELLED and result.signal == signal.SIGKILL
    assert result.duration_seconds < SAFETY_TIMEOUT / 2


def test_a_killed_launcher_fails_its_runs_and_is_replaced(executor, tmp_path, subreaper):
    pid_file = tmp_path / "descendant.pid"
    future = executor.submit_run(function_spec(workers.spawn_grandchild, (str(pid_file), True),
                                               timeout_seconds=SAFETY_TIMEOUT))
    grandchild = read_pid(pid_file)
    assert future.started.wait(RESULT_WAIT)
    run_process = psutil.Process(future.pid)
    launcher = executor.launcher_pid
    os.kill(launcher, signal.SIGKILL)
    result = future.result(timeout=RESULT_WAIT)
    assert result.outcome is Outcome.CRASHED
    assert result.error == (f"the launcher (pid {launcher}) died (killed by SIGKILL); the "
                            f"run's processes were killed with it")
    assert result.pid == run_process.pid
    wait_for(lambda: gone(run_process) and gone(grandchild), message="run processes gone")
    assert_next_run_works(executor)
    assert executor.launcher_pid != launcher


ORCHESTRATOR_SCRIPT = textwrap.dedent("""
    import sys, time
    from orchestrator.execution.base import RunSpec
    from orchestrator.execution.process import ProcessExecutor
    import workers_for_executor as workers

    if __name__ == "__main__":
        executor = ProcessExecutor()
        worker = getattr(workers, sys.argv[2])
        future = executor.submit_run(RunSpec(run_id="1", worker="w", function=worker,
            argument=(sys.argv[1], True), pass_argument=True))
        future.started.wait(60)
        print(executor.launcher_pid, future.pid, flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("worker", ["spawn_grandchild", "spawn_daemon"])
def test_orchestrator_killed_by_sigkill_leaves_nothing(tmp_path, worker):
    script = tmp_path / "orchestrator_script.py"
    script.write_text(ORCHESTRATOR_SCRIPT)
    pid_file = tmp_path / "descendant.pid"
    environment = dict(os.environ,
                       PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    proc = subprocess.Popen([sys.executable, str(script), str(pid_file), worker],
                            stdout=subprocess.PIPE, text=True, env=environment)
    try:
        launcher_pid, run_pid = map(int, proc.stdout.readline().split())
        processes = [psutil.Process(launcher_pid), psutil.Process(run_pid)]
        descendant = read_pid(pid_file)
        processes.append(descendant)
        proc.kill()
        proc.wait()
        wait_for(lambda: all(gone(p) for p in processes), timeout=20,
                 message="launcher, run and its descendant gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- stale processes of a dead instance ------------------------------------------------------

def test_kill_stale_needs_the_right_creation_time():
    leader = subprocess.Popen(["sh", "-c", "sleep 100 & echo $!; wait"], process_group=0,
                              stdout=subprocess.PIPE, text=True)
    try:
        member = psutil.Process(int(leader.stdout.readline()))
        created = psutil.Process(leader.pid).create_time()
        assert kill_stale(leader.pid, created - 5) is False
        assert kill_stale(2 ** 22 + 12345, created) is False  # no such pid
        assert leader.poll() is None and not gone(member)
        assert kill_stale(leader.pid, created) is True
        assert leader.wait(timeout=RESULT_WAIT) == -signal.SIGKILL
        wait_for(lambda: gone(member), message="group member killed")
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        leader.stdout.close()


def test_kill_stale_with_grace_sends_sigterm_first():
    process = subprocess.Popen(["sleep", "100"], process_group=0)
    created = psutil.Process(process.pid).create_time()
    assert kill_stale(process.pid, created, grace=5.0) is True
    assert process.wait(timeout=RESULT_WAIT) == -signal.SIGTERM
