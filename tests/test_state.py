"""S4 missed runs and S8 state: what survives a restart, and what a second instance meets."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from harness import START, Harness
from orchestrator import StateError, WorkerOrchestrator
from orchestrator import state as state_module
from orchestrator.execution.inline import InlineExecutor
from orchestrator.state import StateReader, StateStore


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "state.db")


def boot(path, start=START, **workers) -> Harness:
    h = Harness(start=start, store=StateStore(path, limit_per_worker=1000))
    for name, options in workers.items():
        h.add(name, **options)
    h.start()
    return h


def test_disabled_state_failure_count_and_history_survive_a_restart(path):
    h = boot(path, bad={"interval_seconds": 10, "max_retries": 0,
                        "max_consecutive_failures": 2},
             good={"interval_seconds": 10})
    h.finish("good")
    h.finish("bad", "failed", "OSError: disk full")
    h.advance(10)
    h.finish("bad", "failed", "OSError: disk full")
    h.finish("good")
    assert h.status("bad")["enabled"] is False
    h.begin_stop()
    h.crash()

    h2 = boot(path, start=START + timedelta(seconds=15),
              bad={"interval_seconds": 10, "max_retries": 0, "max_consecutive_failures": 2},
              good={"interval_seconds": 10})
    bad = h2.status("bad")
    assert bad["enabled"] is False and bad["failures"] == 2
    assert bad["reason"] == "disabled after 2 consecutive failures: OSError: disk full"
    assert bad["last_error"] == "OSError: disk full"
    assert [r.outcome.value for r in h2.history("bad")] == ["failed", "failed"]
    assert h2.status("good")["last_outcome"] == "succeeded"
    h2.enable("bad")
    assert h2.status("bad")["failures"] == 0


def test_no_stampede_interval_resumes_one_interval_after_the_last_start(path):
    h = boot(path, tick={"interval_seconds": 60})
    h.finish("tick")
    h.crash()
    h2 = boot(path, start=START + timedelta(seconds=10), tick={"interval_seconds": 60})
    assert h2.running == []
    assert h2.status("tick")["next_run"] == (START + timedelta(seconds=60)).isoformat()
    h2.advance(50)
    assert h2.running == ["tick"]


def test_missed_interval_runs_catch_up_once(path):
    h = boot(path, tick={"interval_seconds": 60})
    h.finish("tick")
    h.crash()
    # down from 12:00:00 to 12:02:30: 12:01 and 12:02 passed; 12:02 is within one interval
    h2 = boot(path, start=START + timedelta(seconds=150), tick={"interval_seconds": 60})
    assert h2.running == ["tick"]
    record = h2.history("tick", limit=1)[0]
    assert record.cause.value == "catch-up"
    assert record.due_at == START + timedelta(seconds=120)
    missed = [r for r in h2.history("tick") if r.outcome and r.outcome.value == "missed"]
    assert len(missed) == 1 and missed[0].error.startswith("1 due time(s) from")
    assert h2.status("tick")["missed"] == 1
    h2.finish("tick")
    assert h2.running == []  # never more than one catch-up run
    assert h2.status("tick")["next_run"] == (START + timedelta(seconds=180)).isoformat()


def test_misses_older_than_the_grace_are_counted_not_run(path):
    options = {"interval_seconds": 60, "misfire_grace_seconds": 10}
    h = boot(path, tick=options)
    h.finish("tick")
    h.crash()
    h2 = boot(path, start=START + timedelta(seconds=1000), tick=options)
    assert h2.running == []
    assert h2.status("tick")["missed"] == 16  # 12:01 ... 12:16
    assert h2.status("tick")["next_run"] == (START + timedelta(seconds=1020)).isoformat()


def test_missed_cron_run_catches_up_within_an_hour_by_default(path):
    h = boot(path, start=datetime(2026, 1, 5, 9, 59, 30, tzinfo=timezone.utc),
             hourly={"cron": "0 * * * *"})
    h.advance(30)
    h.finish("hourly")
    h.crash()
    h2 = boot(path, start=datetime(2026, 1, 5, 12, 30, tzinfo=timezone.utc),
              hourly={"cron": "0 * * * *"})
    assert h2.running == ["hourly"]
    latest = h2.history("hourly", limit=1)[0]
    assert latest.cause.value == "catch-up"
    assert latest.due_at == datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    assert h2.status("hourly")["missed"] == 1  # 11:00


def test_fresh_state_file_has_no_catch_up(path):
    h = boot(path, start=START + timedelta(seconds=30), hourly={"cron": "0 * * * *"},
             tick={"interval_seconds": 60})
    assert h.running == ["tick"]
    assert h.status("hourly")["missed"] == 0


def test_runs_left_running_by_a_dead_instance_become_interrupted(path):
    h = boot(path, fetch={"interval_seconds": 60},
             process={"interval_seconds": 60, "depends_on": ["fetch"]})
    h.finish("fetch")
    assert h.running == ["process"]
    run_id = h.attempt("process").run_id
    h.crash()  # killed mid-run: nothing finished
    h2 = boot(path, start=START + timedelta(seconds=5), fetch={"interval_seconds": 60},
              process={"interval_seconds": 60, "depends_on": ["fetch"]})
    [record] = [r for r in h2.history("process") if r.run_id == run_id]
    assert record.outcome.value == "interrupted"
    assert record.error == "the orchestrator stopped during attempt 1"
    assert h2.status("process")["last_outcome"] == "interrupted"
    assert h2.status("process")["failures"] == 0  # not the worker's failure
    assert h2.running == []  # it resumes one interval after its (interrupted) start
    assert "interrupted" in [e.kind for e in h2.events]


def test_history_is_bounded_per_worker(path):
    h = Harness(store=StateStore(path, limit_per_worker=5))
    h.add("tick", interval_seconds=1)
    h.start()
    for _ in range(30):
        h.finish("tick")
        h.advance(1)
    records = StateReader(path).recent("tick", limit=100)
    assert len(records) == 6  # the five newest finished runs and the one in progress


def test_a_record_is_written_before_its_process_starts(path):
    h = boot(path, slow={"interval_seconds": 60})
    run_id = h.attempt("slow").run_id
    reader = StateReader(path)  # another connection: sees only what was committed
    [record] = reader.recent("slow")
    assert record.run_id == run_id and record.state.value == "running"
    assert record.started_at == START and record.attempts == 1


def test_second_instance_is_refused_with_the_holder_pid(path):
    first = StateStore(path)
    first.open()
    try:
        with pytest.raises(StateError, match=f"is in use by another orchestrator "
                                             f"\\(pid {os.getpid()}\\)"):
            StateStore(path).open()
        assert StateReader(path).holder_pid() == os.getpid()
        orch = WorkerOrchestrator(state_path=path, executor=InlineExecutor())
        with pytest.raises(StateError, match="in use by another orchestrator"):
            orch.start()
        orch.stop()
    finally:
        first.close()
    assert StateReader(path).holder_pid() is None


def test_newer_schema_is_refused_and_left_untouched(path):
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.execute("CREATE TABLE future (x)")
    db.commit()
    db.close()
    before = open(path, "rb").read()
    with pytest.raises(StateError, match="schema version 99, newer than this release"):
        StateStore(path).open()
    assert open(path, "rb").read() == before


def test_read_only_state_file_is_refused_and_left_untouched(path):
    store = StateStore(path)
    store.open()
    store.close()
    before = open(path, "rb").read()
    if os.geteuid() == 0:  # root writes through permission bits: make the file immutable
        protect = subprocess.run(["chattr", "+i", path], capture_output=True)
        if protect.returncode != 0:
            pytest.skip(f"cannot make a file read-only for root here: {protect.stderr!r}")
        unprotect = ["chattr", "-i", path]
    else:
        os.chmod(path, 0o444)
        unprotect = ["chmod", "644", path]
    try:
        with pytest.raises(StateError, match="cannot be used: attempt to write a readonly"):
            StateStore(path).open()
        assert StateReader(path).recent() == []  # still readable
    finally:
        subprocess.run(unprotect, check=True)
    assert open(path, "rb").read() == before


def test_migration_steps_apply_in_order_and_keep_data(path, monkeypatch):
    h = boot(path, tick={"interval_seconds": 60})
    h.finish("tick")
    h.crash()
    monkeypatch.setattr(state_module, "MIGRATIONS",
                        [*state_module.MIGRATIONS, "ALTER TABLE runs ADD COLUMN note TEXT"])
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", len(state_module.MIGRATIONS))
    store = StateStore(path)
    store.open()
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(state_module.MIGRATIONS)
    assert db.execute("SELECT count(*) FROM runs WHERE note IS NULL").fetchone()[0] == 1
    db.close()


def test_orchestrator_history_reads_the_file_before_start(path):
    h = boot(path, tick={"interval_seconds": 60})
    h.finish("tick")
    h.crash()
    orch = WorkerOrchestrator(state_path=path, executor=InlineExecutor())
    assert [r.outcome.value for r in orch.history("tick")] == ["succeeded"]


def test_processes_of_interrupted_runs_are_killed_by_pid_and_creation_time(path):
    """A run a dead instance left behind is killed only if pid AND creation time match."""
    import psutil

    from orchestrator.runs import Cause, RunRecord

    left = subprocess.Popen(["sleep", "300"], start_new_session=True)
    reused = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        store = StateStore(path)
        store.open()
        for name, process, create_time in (
                ("left", left, psutil.Process(left.pid).create_time()),
                ("reused", reused, psutil.Process(reused.pid).create_time() - 1000)):
            record = RunRecord(f"{name}-1", name, Cause.SCHEDULE, START)
            record.start(START)
            record.pid, record.pid_create_time = process.pid, create_time
            store.save(record)
        store.close()
        orch = WorkerOrchestrator(state_path=path, executor=InlineExecutor())
        for name in ("left", "reused"):
            orch.register_worker(name, job_for_state, execution_mode="triggered")
        orch.start()
        assert left.wait(timeout=30) == -9      # its pid and creation time matched
        assert reused.poll() is None            # same pid, another process: left alone
        assert [r.outcome.value for r in orch.history("left")] == ["interrupted"]
        assert [r.outcome.value for r in orch.history("reused")] == ["interrupted"]
        orch.stop()
    finally:
        for process in (left, reused):
            if process.poll() is None:
                process.kill()
            process.wait()


def job_for_state():
    return None


def test_calls_before_start_meet_the_saved_state(path):
    h = boot(path, a={"execution_mode": "triggered"}, b={"execution_mode": "triggered"})
    h.disable("a")
    h.disable("b")
    h.crash()
    orch = WorkerOrchestrator(state_path=path, executor=InlineExecutor())
    orch.register_worker("a", job_for_state, execution_mode="triggered")
    orch.register_worker("b", job_for_state, execution_mode="triggered")
    assert orch.trigger_worker("a") is True  # not known to be disabled until start()
    orch.enable_worker("b")                   # an explicit call before start() wins
    orch.start()
    status = orch.get_status()["worker_states"]
    assert status["a"]["enabled"] is False and status["a"]["pending"] is False
    assert orch.history("a")[0].outcome.value == "cancelled"  # never ran while disabled
    assert status["b"]["enabled"] is True
    orch.stop()


def test_a_due_run_that_never_started_survives_a_crash(path):
    options = {"cron": "0 12 * * *", "depends_on": ["up"]}
    h = boot(path, start=START - timedelta(seconds=30), up={"execution_mode": "triggered"},
             nightly=options)
    h.advance(30)
    assert h.status("nightly")["pending"] is True  # waits: 'up' never ran
    h.crash()
    h2 = boot(path, start=START + timedelta(minutes=5), up={"execution_mode": "triggered"},
              nightly=options)
    assert h2.status("nightly")["pending"] is True  # queued again: within the hour's grace
    [record] = h2.history("nightly")
    assert record.due_at == START and record.state.value == "pending"
    h2.trigger("up")
    h2.finish("up")
    h2.finish("nightly")
    assert [r.outcome.value for r in h2.history("nightly")] == ["succeeded"]
    h2.crash()
    # beyond the grace, a run that never started is recorded as missed, not run
    h3 = boot(path, start=START + timedelta(days=1, hours=3),
              up={"execution_mode": "triggered"}, nightly=options)
    assert "missed" in [r.outcome.value for r in h3.history("nightly") if r.outcome]


def test_a_disabled_worker_has_no_catch_up_and_no_misses(path):
    options = {"interval_seconds": 60}
    h = boot(path, tick=options)
    h.finish("tick")
    h.disable("tick")
    h.crash()
    h2 = boot(path, start=START + timedelta(seconds=1000), tick=options)
    assert h2.running == [] and h2.status("tick")["missed"] == 0
    assert [r.outcome.value for r in h2.history("tick")] == ["succeeded"]
