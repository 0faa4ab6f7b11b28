"""Nothing outside can stall the scheduler, and no second instance can share its state.

One test per attack of the issue that asked for this: a run that stops its launcher, readers
that hammer the status, a huge plan, a second instance on another name of the state file, the
state file deleted or replaced under a running instance, a full disk, a huge result, and
input built to stall. (Slow HTTP clients are in test_http.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

import robust_workers as rw
from conftest import finish, gone, wait_for
from orchestrator import ConfigError, StateError, WorkerOrchestrator
from orchestrator.execution.inline import InlineExecutor
from orchestrator.state import StateReader

REPO = Path(__file__).resolve().parent.parent


# -- the launcher -------------------------------------------------------------------------------

def test_a_run_that_stops_its_launcher_stalls_nothing():
    """A run SIGSTOPs its launcher. Status answers at once; another run's 1 s timeout is
    enforced within seconds; new runs start on a new launcher; the stopped one is killed and
    its runs end crashed."""
    orch = WorkerOrchestrator()
    orch.register_worker("hung", rw.hang, execution_mode="triggered", timeout_seconds=1.0,
                         kill_grace_seconds=0, max_retries=0)
    orch.register_worker("attacker", rw.stop_my_launcher, execution_mode="triggered",
                         timeout_seconds=None, max_retries=0)
    orch.register_worker("later", rw.noop, execution_mode="triggered", max_retries=0)
    orch.start()
    try:
        orch.trigger_worker("hung")
        wait_for(lambda: orch.get_status()["worker_states"]["hung"]["pid"], timeout=30,
                 message="hung started")
        hung_pid = orch.get_status()["worker_states"]["hung"]["pid"]
        launcher = psutil.Process(hung_pid).ppid()
        stopped_at = time.monotonic()
        assert orch.trigger_worker("attacker")
        wait_for(lambda: psutil.Process(launcher).status() == psutil.STATUS_STOPPED,
                 timeout=30, message="the launcher stopped")
        began = time.monotonic()
        orch.get_status()
        assert time.monotonic() - began < 0.5  # never waits for the launcher
        wait_for(lambda: (orch.history("hung") or [None])[0] is not None
                 and orch.history("hung")[0].outcome is not None, timeout=30,
                 message="hung timed out")
        [hung] = orch.history("hung")
        assert hung.outcome.value == "timed_out", hung.error
        assert "the launcher was not answering" in hung.error
        assert time.monotonic() - stopped_at < 8  # 1 s timeout, seconds late, not a minute
        assert gone(hung_pid)
        assert orch.trigger_worker("later", wait=True, timeout=30)  # on a new launcher
        wait_for(lambda: orch.history("attacker")[0].outcome is not None, timeout=30,
                 message="the stopped launcher killed")
        attacker = orch.history("attacker")[0]
        assert attacker.outcome.value == "crashed", attacker.error
        assert gone(launcher)
    finally:
        orch.stop(timeout=10)


# -- readers ------------------------------------------------------------------------------------

def test_status_readers_do_not_hold_up_runs():
    """8 threads read the status of 3,000 workers without pause; a 0.5 s worker keeps its
    rhythm (gaps at most 1.5 s on two busy cores)."""
    orch = WorkerOrchestrator(max_concurrent=10)
    for number in range(3000):
        orch.register_worker(f"idle-{number}", rw.noop, execution_mode="triggered")
    orch.register_worker("beat", rw.noop, interval_seconds=0.5, max_retries=0)
    stop = threading.Event()
    reads = [0] * 8

    def read(index: int) -> None:
        while not stop.is_set():
            orch.get_status()
            reads[index] += 1

    orch.start()
    readers = [threading.Thread(target=read, args=(index,)) for index in range(8)]
    for reader in readers:
        reader.start()
    try:
        wait_for(lambda: len(orch.history("beat", limit=100)) >= 16, timeout=60,
                 message="16 beats")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        orch.stop(timeout=10)
    starts = sorted(record.started_at for record in orch.history("beat", limit=100)
                    if record.started_at is not None)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    assert max(gaps) <= 1.5, gaps
    assert sum(reads) >= 16  # they really read meanwhile


def test_a_huge_plan_is_cut_at_its_limit():
    orch = WorkerOrchestrator(executor=InlineExecutor())
    orch.register_worker("fast", rw.noop, interval_seconds=0.001)
    orch.register_worker("slow", rw.noop, interval_seconds=3600)
    began = time.monotonic()
    plan = orch.plan(hours=0.25)
    assert time.monotonic() - began < 2
    assert len(plan) == 10_000 and plan.cut
    assert [name for _, name in orch.plan(hours=0.25, worker="slow")] == ["slow"]
    small = orch.plan(hours=1, limit=3)
    assert len(small) == 3 and small.cut
    assert not orch.plan(hours=1, worker="slow").cut
    with pytest.raises(ConfigError, match="plan: limit must be a whole number"):
        orch.plan(limit=0)


# -- the state file -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["symlink", "hard link", "relative path"])
def test_a_second_instance_on_another_name_of_the_state_file_is_refused(tmp_path, name,
                                                                         monkeypatch):
    state = tmp_path / "state.db"
    first = WorkerOrchestrator(state_path=state, executor=InlineExecutor())
    first.register_worker("w", rw.noop, execution_mode="triggered")
    first.start()
    try:
        if name == "symlink":
            (tmp_path / "other.db").symlink_to(state)
            other = tmp_path / "other.db"
        elif name == "hard link":
            os.link(state, tmp_path / "other.db")
            other = tmp_path / "other.db"
        else:
            monkeypatch.chdir(tmp_path)
            other = "state.db"
        second = WorkerOrchestrator(state_path=other, executor=InlineExecutor())
        second.register_worker("w", rw.noop, execution_mode="triggered")
        with pytest.raises(StateError, match=f"is in use by another orchestrator "
                                             f"\\(pid {os.getpid()}\\)"):
            second.start()
        assert first.trigger_worker("w", wait=True, timeout=10)  # the first goes on
    finally:
        first.stop()


def test_the_state_file_deleted_while_running_is_written_anew(tmp_path):
    from loguru import logger

    lines = []
    sink = logger.add(lines.append, level="ERROR", filter="orchestrator")
    logger.enable("orchestrator")
    state = tmp_path / "state.db"
    orch = WorkerOrchestrator(state_path=state, executor=InlineExecutor())
    orch.register_worker("w", rw.noop, execution_mode="triggered")
    orch.start()
    try:
        for _ in range(3):
            assert orch.trigger_worker("w", wait=True, timeout=10)
        for path in tmp_path.glob("state.db*"):
            path.unlink()
        wait_for(lambda: any("was deleted while in use" in str(line) for line in lines),
                 timeout=10, message="the deletion logged as an error")
        assert state.exists()
        assert orch.trigger_worker("w", wait=True, timeout=10)
        reader = StateReader(str(state))
        try:
            assert len(reader.recent("w", limit=10)) == 4  # nothing lost, and it goes on
            assert reader.holder_pid() == os.getpid()  # held, like the first one
        finally:
            reader.close()
        second = WorkerOrchestrator(state_path=state, executor=InlineExecutor())
        second.register_worker("w", rw.noop, execution_mode="triggered")
        with pytest.raises(StateError, match="in use by another orchestrator"):
            second.start()
    finally:
        orch.stop()
        logger.remove(sink)
        logger.disable("orchestrator")


def test_the_state_file_replaced_while_running_stops_the_orchestrator(tmp_path):
    """Another file put at the path is not overwritten: `orchestrator run` stops, exit 1."""
    (tmp_path / "jobs.toml").write_text(textwrap.dedent("""
        [orchestrator]
        state_path = "state.db"
        http = false

        [workers.tick]
        command = "true"
        interval_seconds = 3600
    """))
    log = tmp_path / "stderr.log"
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "jobs.toml"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=open(log, "wb"))
    try:
        wait_for(lambda: "succeeded tick" in log.read_text(), timeout=60)
        replacement = tmp_path / "replacement.db"
        sqlite3.connect(replacement).close()
        os.replace(replacement, tmp_path / "state.db")
        assert finish(process) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "was replaced by another file while in use; stopping" in text
    assert "orchestrator stopped" in text
    assert (tmp_path / "state.db").stat().st_size == 0  # not overwritten


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB file system of its own (tmpfs), removed afterwards."""
    place = tmp_path / "disk"
    place.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(place)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr!r}")
    try:
        yield place
    finally:
        subprocess.run(["umount", "-l", str(place)], check=False)


def test_a_full_disk_is_logged_once_and_settled_later(tiny_disk):
    from loguru import logger

    lines = []
    sink = logger.add(lines.append, level="ERROR", filter="orchestrator")
    logger.enable("orchestrator")
    state = tiny_disk / "state.db"
    orch = WorkerOrchestrator(state_path=state)
    orch.register_worker("tick", rw.noop, execution_mode="triggered", max_retries=0)
    orch.register_worker("long", rw.sleep_then_return, execution_mode="triggered",
                         max_retries=0)
    orch.start()
    filler = tiny_disk / "filler"
    try:
        assert orch.trigger_worker("tick", wait=True, timeout=30)
        orch.trigger_worker("long")
        wait_for(lambda: orch.get_status()["worker_states"]["long"]["running"],
                 message="long started (and recorded)")
        with open(filler, "wb") as file:  # fill the disk
            try:
                while True:
                    file.write(b"\0" * 65536)
                    file.flush()
            except OSError:
                pass
        cpu_before = sum(psutil.Process().cpu_times()[:2])
        began = time.monotonic()
        for _ in range(40):
            orch.trigger_worker("tick", wait=True, timeout=30)
        wait_for(lambda: orch.get_status()["worker_states"]["long"]["last_outcome"],
                 timeout=30, message="long ended (not written: the disk is full)")
        cpu = sum(psutil.Process().cpu_times()[:2]) - cpu_before
        elapsed = time.monotonic() - began
        errors = [line for line in lines if "write(s) failed" in str(line)]
        assert len(errors) == 1, errors  # one line, not one per change
        assert cpu < elapsed  # no spinning on the disk while it is full
    finally:
        orch.stop(timeout=10)  # its last writes fail too: "long" stays running in the file
        logger.remove(sink)
        logger.disable("orchestrator")
    reader = StateReader(str(state))
    try:
        assert reader.recent("long")[0].state.value == "running"
    finally:
        reader.close()
    filler.unlink()  # space again
    again = WorkerOrchestrator(state_path=state, executor=InlineExecutor())
    again.register_worker("tick", rw.noop, execution_mode="triggered")
    again.register_worker("long", rw.noop, execution_mode="triggered")
    again.start()
    try:
        [long] = again.history("long")
        assert long.outcome.value == "interrupted"  # settled at the next start
    finally:
        again.stop()


# -- results and input ---------------------------------------------------------------------------

def test_a_huge_result_fails_its_run_and_costs_the_orchestrator_nothing():
    script = textwrap.dedent("""
        import robust_workers as rw
        from orchestrator import WorkerOrchestrator

        if __name__ == "__main__":
            orch = WorkerOrchestrator()
            orch.register_worker("big", rw.return_500_megabytes, execution_mode="triggered",
                                 max_retries=0)
            orch.start()
            print(orch.trigger_worker("big", wait=True, timeout=120))
            [record] = orch.history("big")
            print(record.error)
            orch.stop()
            status = open("/proc/self/status").read()
            print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(REPO), str(REPO / "tests")])})
    assert done.returncode == 0, done.stderr
    succeeded, error, peak_mb = done.stdout.strip().splitlines()
    assert succeeded == "False"
    assert "over max_result_bytes (1048576)" in error
    assert int(peak_mb) < 150  # the 500 MB never reached it


def test_input_built_to_stall_is_refused_at_once():
    orch = WorkerOrchestrator(executor=InlineExecutor())
    began = time.monotonic()
    for options, words in (
            ({"interval_seconds": 2 ** 2000}, "got a 2001-bit number"),
            ({"cron": ",".join(["1"] * 60_000) + " * * * *"},
             "minute field has 60000 list items, more than the 60 values"),
            ({"timeout_seconds": float("inf")}, "must be a finite number"),
            ({"max_result_bytes": 0}, "max_result_bytes must be a whole number of bytes")):
        with pytest.raises(ConfigError, match=words) as raised:
            orch.register_worker("w", rw.noop, **options)
        assert len(str(raised.value)) < 400
    for name in (".", "..", "-", "-.-", "x" * 100_000):
        with pytest.raises(ConfigError) as raised:
            orch.register_worker(name, rw.noop)
        assert len(str(raised.value)) < 200
    assert time.monotonic() - began < 1


def test_a_path_as_a_worker_name_reaches_no_worker():
    from orchestrator.http import request

    orch = WorkerOrchestrator(executor=InlineExecutor(), http="127.0.0.1:0", http_token="t")
    orch.register_worker("w", rw.noop, execution_mode="triggered")
    orch.start()
    try:
        for path in ("/workers/../trigger", "/workers/%2E%2E/trigger", "/workers/-/trigger"):
            code, body = request(orch.http_url, "POST", path, "t")
            assert code in (400, 404), (path, code, body)
        assert orch.history("w") == []
    finally:
        orch.stop()


def test_a_run_costs_two_commits_due_with_start_and_finish(tmp_path):
    """One step is one transaction: a run due and started in one step is one commit, its end
    another (counted on the state file's connection)."""
    orch = WorkerOrchestrator(state_path=tmp_path / "state.db", executor=InlineExecutor())
    orch.register_worker("w", rw.noop, execution_mode="triggered")
    orch.start()
    commits = []
    try:
        orch.trigger_worker("w", wait=True, timeout=10)  # settles what start() wrote
        orch._dispatcher.store._db.set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
        assert orch.trigger_worker("w", wait=True, timeout=10)
        assert orch.trigger_worker("w", wait=True, timeout=10)
    finally:
        orch._dispatcher.store._db.set_trace_callback(None)
        orch.stop()
    assert len(commits) == 4  # two runs, two commits each
