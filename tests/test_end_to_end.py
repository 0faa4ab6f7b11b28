"""End to end with real worker processes: what a user of the library sees.

Runs are observed through history, get_status() and the journal the workers write; every
wait is on a condition with a generous deadline, and the autouse leak check makes sure no
process or thread is left after each test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

import e2e_workers as w
from conftest import gone, wait_for
from orchestrator import WorkerOrchestrator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def journal_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def make(journal_dir):
    made = []

    def factory(**kwargs):
        orch = WorkerOrchestrator(**kwargs)
        made.append(orch)
        return orch

    yield factory
    for orch in made:
        orch.stop(timeout=5)


def read_journal(directory: Path) -> list[tuple[str, str, float]]:
    path = directory / "journal"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        event, name, when, _pid = line.split()
        entries.append((event, name, float(when)))
    return entries


def intervals(directory: Path) -> dict[str, list[tuple[float, float]]]:
    starts, spans = {}, defaultdict(list)
    for event, name, when in read_journal(directory):
        if event == "start":
            starts[name] = when
        else:
            spans[name].append((starts.pop(name), when))
    return spans


def finished(orch, worker: str) -> list:
    return [r for r in orch.history(worker, limit=1000) if r.outcome is not None]


def test_seed_pipeline_example_runs_as_is():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_pipeline.py"),
                             "--seconds", "7"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trigger fetch-data and wait for it:" in result.stdout
    assert "succeeded process-data" in result.stderr
    assert "succeeded fetch-data" in result.stderr
    assert "waiting for dependency fetch-data" in result.stdout or \
        "next run at" in result.stdout


def test_function_result_and_config_reach_the_record(make):
    orch = make()
    orch.register_worker("echo-name", w.quick, execution_mode="triggered")
    orch.start()
    assert orch.trigger_worker("echo-name", wait=True, timeout=60) is True
    [record] = orch.history("echo-name")
    assert record.result == "echo-name"
    assert record.pid and record.cpu_seconds is not None and record.peak_rss_bytes > 0
    status = orch.get_status()["worker_states"]["echo-name"]
    assert status["last_outcome"] == "succeeded" and status["peak_rss_bytes"] > 0


def test_exclusion_is_never_violated(make, journal_dir):
    orch = make(max_concurrent=3)
    orch.register_worker("process", w.short, interval_seconds=0.2, overlap="queue")
    orch.register_worker("cleanup", w.short, interval_seconds=0.2, blocks=["process"],
                         overlap="queue")
    orch.register_worker("other", w.short, interval_seconds=0.2, overlap="queue")
    orch.start()
    wait_for(lambda: len(finished(orch, "process")) >= 4 and
             len(finished(orch, "cleanup")) >= 4, timeout=60)
    orch.stop()
    spans = intervals(journal_dir)
    for a_start, a_end in spans["process"]:
        for b_start, b_end in spans["cleanup"]:
            assert a_end <= b_start or b_end <= a_start, "process and cleanup overlapped"
    # "other" excludes nobody: it did run beside one of them at some point
    assert any(not (o_end <= s or e <= o_start)
               for o_start, o_end in spans["other"]
               for s, e in spans["process"] + spans["cleanup"])


def test_cap_is_never_exceeded(make, journal_dir):
    orch = make(max_concurrent=2)
    for i in range(5):
        orch.register_worker(f"w{i}", w.short, interval_seconds=0.3)
    orch.start()
    wait_for(lambda: all(len(finished(orch, f"w{i}")) >= 2 for i in range(5)), timeout=60)
    orch.stop()
    points = sorted((when, +1 if event == "start" else -1)
                    for event, _, when in read_journal(journal_dir))
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2


def test_priority_order_under_a_cap_of_one(make, journal_dir):
    orch = make(max_concurrent=1)
    orch.register_worker("gate", w.gate, execution_mode="triggered")
    for priority in ("low", "normal", "critical", "high"):
        orch.register_worker(priority, w.quick, execution_mode="triggered", priority=priority)
    orch.start()
    orch.trigger_worker("gate")
    wait_for(lambda: read_journal(journal_dir), timeout=60)  # the gate holds the slot
    for name in ("low", "normal", "critical", "high"):
        orch.trigger_worker(name)
    status = orch.get_status()["worker_states"]
    assert status["low"]["reason"] == "no free slot (1/1 running)"
    (journal_dir / "open-gate").touch()
    wait_for(lambda: len(finished(orch, "low")) == 1, timeout=60)
    order = [name for event, name, _ in read_journal(journal_dir) if event == "start"]
    assert order == ["gate", "critical", "high", "normal", "low"]


def test_retries_then_success_keep_one_record(make):
    orch = make()
    orch.register_worker("flaky", w.fail_twice, execution_mode="triggered", max_retries=3,
                         retry_delay_seconds=0.05)
    orch.start()
    assert orch.trigger_worker("flaky", wait=True, timeout=60) is True
    [record] = orch.history("flaky")
    assert record.attempts == 3 and record.outcome.value == "succeeded"
    assert record.result == 3


def test_auto_disable_after_consecutive_failures(make):
    orch = make()
    orch.register_worker("broken", w.divide_by_zero, interval_seconds=0.1, max_retries=0,
                         max_consecutive_failures=2)
    orch.start()
    wait_for(lambda: not orch.get_status()["worker_states"]["broken"]["enabled"], timeout=60)
    state = orch.get_status()["worker_states"]["broken"]
    assert state["reason"] == ("disabled after 2 consecutive failures: "
                               "ZeroDivisionError: division by zero")
    record = orch.history("broken")[0]
    assert record.outcome.value == "failed"
    assert "1 / 0" in record.traceback
    orch.enable_worker("broken")
    assert orch.get_worker("broken").consecutive_failures == 0
    wait_for(lambda: len(finished(orch, "broken")) >= 3, timeout=60)


def test_triggered_pipeline(make):
    orch = make()
    orch.register_worker("extract", w.quick, execution_mode="triggered")
    orch.register_worker("load", w.quick, execution_mode="triggered", depends_on=["extract"])
    orch.start()
    assert orch.trigger_worker("extract", wait=True, timeout=60)
    wait_for(lambda: finished(orch, "load"), timeout=60)
    [load] = orch.history("load")
    assert load.outcome.value == "succeeded" and load.cause.value == "upstream"


def test_continuous_worker_runs_back_to_back(make):
    orch = make()
    orch.register_worker("loop", w.quick, execution_mode="continuous")
    orch.start()
    wait_for(lambda: len(finished(orch, "loop")) >= 3, timeout=60)
    records = sorted(finished(orch, "loop"), key=lambda r: r.started_at)
    assert all(r.outcome.value == "succeeded" for r in records)
    assert all(r.cause.value == "continuous" for r in records)


def test_timeout_kills_a_run_that_ignores_sigterm(make, journal_dir):
    orch = make()
    orch.register_worker("stuck", w.hang_ignoring_sigterm, execution_mode="triggered",
                         timeout_seconds=0.5, kill_grace_seconds=0.2, max_retries=0)
    orch.start()
    started = time.monotonic()
    assert orch.trigger_worker("stuck", wait=True, timeout=60) is False
    assert time.monotonic() - started < 30
    [record] = orch.history("stuck")
    assert record.outcome.value == "timed_out"
    assert gone(record.pid)


def test_status_tells_the_truth_while_running(make, journal_dir):
    orch = make()
    orch.register_worker("gate", w.gate, execution_mode="triggered")
    orch.register_worker("after", w.quick, execution_mode="triggered", blocks=["gate"])
    orch.start()
    orch.trigger_worker("gate")
    wait_for(lambda: read_journal(journal_dir), timeout=60)
    orch.trigger_worker("after")
    status = orch.get_status()
    assert status["running_workers"] == ["gate"] and status["pending_workers"] == ["after"]
    gate = status["worker_states"]["gate"]
    assert gate["state"] == "running" and psutil.pid_exists(gate["pid"])
    assert gate["reason"].startswith("running since")
    assert status["worker_states"]["after"]["reason"] == "blocked by gate (running)"
    (journal_dir / "open-gate").touch()
    wait_for(lambda: finished(orch, "after"), timeout=60)


def test_stop_kills_runs_after_timeout_and_leaves_no_process(make, journal_dir):
    orch = make()
    orch.register_worker("stuck", w.spawn_grandchild_and_hang, execution_mode="triggered",
                         timeout_seconds=None, kill_grace_seconds=0.3)
    orch.start()
    orch.trigger_worker("stuck")
    wait_for(lambda: read_journal(journal_dir), timeout=60)
    grandchild = int((journal_dir / "grandchild-stuck").read_text())
    orch.stop(timeout=0.2)
    [record] = orch.history("stuck")
    assert record.outcome.value == "cancelled"
    assert gone(grandchild)
    assert orch.get_status()["state"] == "stopped"
    orch.stop()  # twice is harmless


def test_stop_waits_for_runs_that_finish_within_the_timeout(make, journal_dir):
    orch = make()
    orch.register_worker("brief", w.short, execution_mode="triggered")
    orch.start()
    orch.trigger_worker("brief")
    wait_for(lambda: read_journal(journal_dir), timeout=60)
    orch.stop(timeout=60)
    assert orch.history("brief")[0].outcome.value == "succeeded"


def test_stop_before_start_is_harmless():
    orch = WorkerOrchestrator()
    orch.register_worker("w", w.quick)
    orch.stop()
    orch.stop()


RUN_FOREVER_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from loguru import logger
    from orchestrator import WorkerOrchestrator

    def hang():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        folder = Path(os.environ["E2E_DIR"])
        (folder / "started.tmp").write_text(str(os.getpid()))
        os.replace(folder / "started.tmp", folder / "started")  # never seen half written
        time.sleep(300)

    if __name__ == "__main__":
        logger.remove()
        logger.add(sys.stderr, level="INFO")
        logger.enable("orchestrator")
        orch = WorkerOrchestrator()
        orch.register_worker("hang", hang, interval_seconds=3600, timeout_seconds=None,
                             kill_grace_seconds=float(sys.argv[2]))
        orch.run_forever(stop_timeout=float(sys.argv[1]))
        print("clean exit", flush=True)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signals,stop_timeout,grace", [(1, 0.5, 0.2), (2, 300, 300)])
def test_run_forever_stops_on_sigterm(journal_dir, signals, stop_timeout, grace):
    """One signal: stop with its timeout. A second one: kill at once, grace or not."""
    script = journal_dir / "forever.py"
    script.write_text(RUN_FOREVER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(stop_timeout), str(grace)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (journal_dir / "started").exists(), timeout=60)
        worker = psutil.Process(int((journal_dir / "started").read_text()))
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert worker in descendants
        proc.send_signal(signal.SIGTERM)
        seen = ""
        if signals == 2:  # the first one waits up to 300 s; the second kills at once
            while "SIGTERM received: stopping" not in seen:
                line = proc.stderr.readline()
                assert line, "the orchestrator ended before logging the first signal"
                seen += line
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)  # far below the 300 s timeout and grace
        err = seen + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "clean exit" in out
    assert "cancelled hang" in err
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                             for p in descendants if psutil.pid_exists(p.pid)), timeout=20)


def test_on_failure_command_gets_the_failure_in_its_environment(make, journal_dir):
    report = journal_dir / "report"
    orch = make()
    orch.register_worker("broken", w.divide_by_zero, execution_mode="triggered",
                         max_retries=0, on_failure=(
                             'echo "$ORCHESTRATOR_WORKER|$ORCHESTRATOR_OUTCOME|'
                             f'$ORCHESTRATOR_ERROR|$ORCHESTRATOR_RUN_ID" > {report}'))
    orch.register_worker("noisy", w.divide_by_zero, execution_mode="triggered",
                         max_retries=0, on_failure=["false"])
    orch.start()
    assert orch.trigger_worker("broken", wait=True, timeout=60) is False
    wait_for(lambda: report.exists() and report.read_text().endswith("\n"), timeout=60)
    run_id = orch.history("broken")[0].run_id
    assert report.read_text() == f"broken|failed|ZeroDivisionError: division by zero|{run_id}\n"
    # an on_failure that fails itself is logged, never fatal
    assert orch.trigger_worker("noisy", wait=True, timeout=60) is False
    assert orch.trigger_worker("noisy", wait=True, timeout=60) is False
    assert orch.get_status()["state"] == "running"


def test_status_shows_live_cpu_and_memory_while_a_run_goes_on(make, journal_dir):
    orch = make()
    orch.register_worker("hungry", w.hold_memory, execution_mode="triggered")
    orch.start()
    orch.trigger_worker("hungry")
    wait_for(lambda: read_journal(journal_dir), timeout=60)
    live = wait_for(lambda: (orch.get_status()["worker_states"]["hungry"]["rss_bytes"]
                             or 0) > 80_000_000 and orch.get_status()["worker_states"]["hungry"],
                    timeout=30)
    assert live["state"] == "running" and live["processes"] >= 1
    assert live["peak_rss_bytes"] >= live["rss_bytes"]
    (journal_dir / "open-gate").touch()
    wait_for(lambda: finished(orch, "hungry"), timeout=60)
    done = orch.get_status()["worker_states"]["hungry"]
    assert done["rss_bytes"] is None and done["peak_rss_bytes"] > 80_000_000


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_a_worker_runs_as_the_user_it_names(make):
    import pwd

    nobody = pwd.getpwnam("nobody")
    orch = make()
    orch.register_worker("as-nobody", command=["id", "-un"], execution_mode="triggered",
                         user="nobody")
    orch.register_worker("function-as-nobody", w.whoami, execution_mode="triggered",
                         user="nobody")
    orch.register_worker("as-root", command=["id", "-un"], execution_mode="triggered")
    orch.start()
    for name in ("as-nobody", "function-as-nobody", "as-root"):
        assert orch.trigger_worker(name, wait=True, timeout=60), orch.history(name)[0].error
    assert orch.history("as-nobody")[0].stdout_tail == "nobody\n"
    assert orch.history("function-as-nobody")[0].result == ("nobody", nobody.pw_gid)
    assert orch.history("as-root")[0].stdout_tail == "root\n"
