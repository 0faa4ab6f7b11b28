"""The ``orchestrator`` command, always through a real ``python -m orchestrator`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import finish, gone, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "jobs.toml"


def orchestrator(*arguments, cwd: Path, stdin: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, arguments)],
                          cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TZ": "UTC"})


def write(directory: Path, text: str, name: str = "jobs.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr == f"orchestrator: {expected}\n"


def assert_fails(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit 1 with one line on stderr that contains ``fragment``."""
    assert result.returncode == 1, result
    assert result.stderr.startswith("orchestrator: ") and result.stderr.count("\n") == 1, \
        result.stderr
    assert fragment in result.stderr, result.stderr


# -- check ------------------------------------------------------------------------------------

def test_check_the_example():
    result = orchestrator("check", EXAMPLE, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{EXAMPLE}: 5 workers, no problem found"
    assert lines[1].startswith("containment: cgroup (cgroup v2 (")  # this project's machines
    assert lines[2].split() == ["WORKER", "SCHEDULE", "MODE", "PRIORITY", "DEPENDS_ON", "BLOCKS"]
    assert lines[3].split() == ["backup", "cron", "30", "2", "*", "*", "*", "scheduled",
                                "normal", "-", "-"]
    assert "  process-data runs after fetch-data succeeded" in lines
    assert "  cleanup and process-data never run at the same time" in lines


def test_check_json():
    result = orchestrator("check", EXAMPLE, "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["containment"]["mode"] == "cgroup"
    assert [w["name"] for w in document["workers"]] == ["backup", "fetch-data", "process-data",
                                                        "cleanup", "disk-usage"]
    assert document["graph"] == {"depends_on": [["process-data", "fetch-data"]],
                                 "excludes": [["cleanup", "fetch-data"],
                                              ["cleanup", "process-data"]]}
    fetch = document["workers"][1]
    assert fetch["runs"] == "jobs:fetch_data" and fetch["priority"] == "high"


BAD = {
    "typo'd key": ("""
        [workers.fetch]
        command = "true"
        interval_second = 60
     """, "jobs.toml: worker 'fetch': interval_second is not a worker option (did you mean "
          "'interval_seconds'?)"),
    "cycle": ("""
        [workers.a]
        command = "true"
        depends_on = ["b"]
        [workers.b]
        command = "true"
        depends_on = ["a"]
     """, "jobs.toml: worker 'b': depends_on would create a dependency cycle: b -> a -> b; "
          "remove one of these dependencies"),
    "unknown dependency": ("""
        [workers.process]
        command = "true"
        depends_on = ["fetch"]
     """, "jobs.toml: worker 'process': depends_on names 'fetch', which is not a worker in "
          "this file; add [workers.fetch] or remove it from depends_on"),
    "bad cron": ("""
        [workers.nightly]
        command = "true"
        cron = "0 3 * * 8"
     """, "jobs.toml: worker 'nightly': cron '0 3 * * 8' is invalid: day-of-week field '8' "
          "is out of range 0-7"),
    "bad timezone": ("""
        [workers.nightly]
        command = "true"
        cron = "0 3 * * *"
        timezone = "Europe/Pariss"
     """, "jobs.toml: worker 'nightly': timezone 'Europe/Pariss' is not a known IANA time "
          "zone (did you mean 'Europe/Paris'?)"),
    "unimportable function": ("""
        [workers.x]
        function = "mypkg.jobs:fetch"
     """, "jobs.toml: worker 'x': function 'mypkg.jobs:fetch' cannot be imported: "
          "ModuleNotFoundError: No module named 'mypkg'"),
    "invalid TOML": ("""
        [workers.x]
        command = "true"
        cron = @daily
     """, "jobs.toml: line 4: invalid TOML: Invalid value (column 8)"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_line_and_exit_1(tmp_path, command, kind):
    text, expected = BAD[kind]
    write(tmp_path, text)
    assert_one_line_error(orchestrator(command, "jobs.toml", cwd=tmp_path), expected)


@pytest.mark.parametrize("command", ["check", "run", "plan"])
def test_missing_file(tmp_path, command):
    assert_one_line_error(orchestrator(command, "nope.toml", cwd=tmp_path),
                          "nope.toml: cannot be read: No such file or directory")


def test_a_directory_or_unreadable_crontab(tmp_path):
    assert_one_line_error(orchestrator("check", ".", cwd=tmp_path),
                          ".: cannot be read: Is a directory")
    assert_one_line_error(orchestrator("from-crontab", "nope", cwd=tmp_path),
                          "nope: cannot be read: No such file or directory")


@pytest.mark.parametrize("arguments", [
    [], ["bogus"], ["check"], ["check", "jobs.toml", "--nope"], ["plan", "jobs.toml", "--hours", "0"],
    ["plan", "jobs.toml", "--hours", "many"], ["plan", "jobs.toml", "--start", "yesterday"],
    ["status"], ["history", "jobs.toml", "x", "--limit", "0"], ["trigger", "jobs.toml"],
    ["disable", "jobs.toml", "x", "--now"], ["from-crontab"]])
def test_usage_errors_exit_2(tmp_path, arguments):
    write(tmp_path, "[workers.x]\ncommand = 'true'\n")
    result = orchestrator(*arguments, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: orchestrator") and "Traceback" not in result.stderr


def test_help_exits_0(tmp_path):
    result = orchestrator("--help", cwd=tmp_path)
    assert result.returncode == 0 and "from-crontab" in result.stdout


# -- plan -------------------------------------------------------------------------------------

PLAN_FILE = """
    [orchestrator]
    timezone = "Europe/Berlin"

    [workers.tick]
    command = "true"
    interval_seconds = 1800

    [workers.nightly]
    command = "true"
    cron = "30 2 * * *"
    timezone = "America/New_York"

    [workers.after-tick]
    command = "true"
    execution_mode = "triggered"
    depends_on = ["tick"]
"""


def test_plan_lines(tmp_path):
    write(tmp_path, PLAN_FILE)
    result = orchestrator("plan", "jobs.toml", "--start", "2026-12-01T07:00:00+00:00",
                          "--hours", "1.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-12-01T08:00:00+01:00 tick",
        "2026-12-01T02:30:00-05:00 nightly",
        "2026-12-01T08:30:00+01:00 tick",
        "2026-12-01T09:00:00+01:00 tick",
    ]
    for line in result.stdout.splitlines():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d [A-Za-z0-9_.-]+", line)


def test_plan_naive_start_is_the_orchestrator_zone_and_json(tmp_path):
    write(tmp_path, PLAN_FILE)
    result = orchestrator("plan", "jobs.toml", "--start", "2026-12-01T00:00", "--hours", "1",
                          "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"time": "2026-12-01T00:00:00+01:00", "worker": "tick"},
        {"time": "2026-12-01T00:30:00+01:00", "worker": "tick"}]


def test_plan_default_start_is_now(tmp_path):
    write(tmp_path, PLAN_FILE)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    result = orchestrator("plan", "jobs.toml", "--hours", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ticks = [datetime.fromisoformat(line.split()[0]) for line in result.stdout.splitlines()
             if line.split()[1] == "tick"]
    assert len(ticks) == 2  # an interval worker not yet started is anchored at the start
    assert before <= ticks[0] <= before + timedelta(seconds=30)
    assert ticks[1] - ticks[0] == timedelta(minutes=30)


# -- from-crontab -----------------------------------------------------------------------------

def test_from_crontab_file_and_stdin(tmp_path):
    (tmp_path / "crontab").write_text("MAILTO=me\n0 3 * * * /usr/local/bin/backup.sh\n")
    from_file = orchestrator("from-crontab", "crontab", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert tomllib.loads(from_file.stdout)["workers"]["backup"]["cron"] == "0 3 * * *"
    from_stdin = orchestrator("from-crontab", "-", cwd=tmp_path,
                              stdin="0 3 * * * root /usr/local/bin/backup.sh\n")
    assert tomllib.loads(from_stdin.stdout)["workers"]["root"]["command"] == \
        "root /usr/local/bin/backup.sh"  # without --system the user column is the command
    system = orchestrator("from-crontab", "-", "--system", cwd=tmp_path,
                          stdin="0 3 * * * root /usr/local/bin/backup.sh\n")
    assert tomllib.loads(system.stdout)["workers"]["backup"]["user"] == "root"
    (tmp_path / "converted.toml").write_text(from_file.stdout)
    assert orchestrator("check", "converted.toml", cwd=tmp_path).returncode == 0


# -- run --------------------------------------------------------------------------------------

def start_run(tmp_path: Path, toml: str) -> tuple[subprocess.Popen, Path]:
    write(tmp_path, toml)
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "jobs.toml"],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "TZ": "UTC"})
    return process, log


def read_pid(path: Path) -> int:
    return int(path.read_text()) if path.exists() and path.read_text().endswith("\n") else 0


def test_run_until_sigterm_exits_0(tmp_path):
    module = "clijobs_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path

        def quick():
            Path("started.tmp").write_text(f"{os.getpid()}\\n")
            os.rename("started.tmp", "started")
    """))
    process, log = start_run(tmp_path, f"""
        [workers.quick]
        function = "{module}:quick"
        interval_seconds = 3600
    """)
    worker_pid = wait_for(lambda: read_pid(tmp_path / "started"), timeout=30,
                          message="the worker's handshake file")
    wait_for(lambda: "succeeded quick" in log.read_text(), timeout=30)
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0
    stderr = log.read_text()
    assert "Traceback" not in stderr
    assert "orchestrator started with 1 workers" in stderr
    assert "SIGTERM received: stopping" in stderr and "orchestrator stopped" in stderr
    assert gone(worker_pid)


def test_second_sigterm_kills_the_running_job_and_what_it_started(tmp_path):
    process, log = start_run(tmp_path, """
        [workers.long]
        command = ["sh", "-c", "sleep 300 & echo $! > grandchild; echo $$ > s.tmp; mv s.tmp started; wait"]
        interval_seconds = 3600
        timeout_seconds = false
    """)
    job_pid = wait_for(lambda: read_pid(tmp_path / "started"), timeout=30,
                       message="the job's handshake file")
    grandchild_pid = read_pid(tmp_path / "grandchild")
    assert grandchild_pid
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received: stopping" in log.read_text(), timeout=30)
    assert not gone(job_pid)  # the first signal lets the run go on
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0
    stderr = log.read_text()
    assert "SIGTERM received again: killing running runs" in stderr
    assert "Traceback" not in stderr
    wait_for(lambda: gone(job_pid) and gone(grandchild_pid), timeout=20,
             message="the job and its background child are gone")


# -- status, history, trigger, enable, disable --------------------------------------------

STEERED = """
    [orchestrator]
    state_path = "state.db"

    [workers.steady]
    command = ["sh", "-c", "echo $$ > s.tmp; mv s.tmp steady-ran"]
    interval_seconds = 3600

    [workers.manual]
    command = ["sh", "-c", "echo manual"]
    execution_mode = "triggered"
"""


def test_status_and_history_from_the_state_file_when_nothing_runs(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    write(tmp_path, STEERED)
    assert_fails(orchestrator("status", "jobs.toml", cwd=tmp_path), "does not exist")
    process, log = start_run(tmp_path, STEERED)
    wait_for(lambda: "succeeded steady" in log.read_text(), timeout=60)
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0
    status = orchestrator("status", "jobs.toml", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    first = status.stdout.splitlines()[0]
    assert first == (f"not running (nothing answers on {tmp_path / 'state.db.sock'}, and the "
                     f"state file is not in use); from the state file {tmp_path / 'state.db'}")
    lines = status.stdout.splitlines()
    assert lines[1].split() == ["WORKER", "ENABLED", "LAST", "LAST", "RUN", "FAILURES", "NOTE"]
    assert lines[2].split()[:3] == ["steady", "yes", "succeeded"]
    assert lines[3].split()[:3] == ["manual", "-", "never"]
    history = orchestrator("history", "jobs.toml", "steady", "--json", cwd=tmp_path)
    [run] = json.loads(history.stdout)
    assert run["worker"] == "steady" and run["outcome"] == "succeeded"
    assert_fails(orchestrator("trigger", "jobs.toml", "manual", cwd=tmp_path),
                 "jobs.toml: not running (nothing answers on")


@pytest.mark.timeout(180)
def test_status_and_steering_through_the_running_instance(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    process, log = start_run(tmp_path, STEERED)
    try:
        wait_for(lambda: "orchestrator started with" in log.read_text(), timeout=60)
        status = orchestrator("status", "jobs.toml", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"running (pid {process.pid}), 2 workers, ")
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:]}
        assert "runs only when triggered" in rows["manual"]
        document = json.loads(orchestrator("status", "jobs.toml", "--json",
                                           cwd=tmp_path).stdout)
        assert document["state"] == "running"

        trigger = orchestrator("trigger", "jobs.toml", "manual", cwd=tmp_path)
        assert trigger.returncode == 0, trigger.stderr
        wait_for(lambda: "succeeded manual" in log.read_text(), timeout=60)
        history = json.loads(orchestrator("history", "jobs.toml", "manual", "--json",
                                          cwd=tmp_path).stdout)
        assert [run["cause"] for run in history] == ["manual"]

        assert orchestrator("disable", "jobs.toml", "steady", cwd=tmp_path).returncode == 0
        document = json.loads(orchestrator("status", "jobs.toml", "--json",
                                           cwd=tmp_path).stdout)
        assert document["worker_states"]["steady"]["enabled"] is False
        enable = orchestrator("enable", "jobs.toml", "steady", "--json", cwd=tmp_path)
        assert json.loads(enable.stdout)["enabled"] is True
        document = json.loads(orchestrator("status", "jobs.toml", "--json",
                                           cwd=tmp_path).stdout)
        assert document["worker_states"]["steady"]["enabled"] is True

        unknown = orchestrator("trigger", "jobs.toml", "nobody", cwd=tmp_path)
        assert_fails(unknown, "no worker named 'nobody'")
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0


OVER_HTTP = """
    [orchestrator]
    state_path = "state.db"
    control_socket = false
    http = "127.0.0.1:0"
    http_token_file = "token"

    [workers.manual]
    command = ["sh", "-c", "echo manual"]
    execution_mode = "triggered"
"""


def test_steering_over_http_needs_the_token(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    process, log = start_run(tmp_path, OVER_HTTP)
    try:
        wait_for(lambda: "orchestrator started with" in log.read_text(), timeout=60)
        assert not (tmp_path / "state.db.sock").exists()
        status = orchestrator("status", "jobs.toml", cwd=tmp_path)
        assert status.stdout.startswith(f"running (pid {process.pid}), 1 workers, "), status
        trigger = orchestrator("trigger", "jobs.toml", "manual", "--wait", cwd=tmp_path)
        assert trigger.returncode == 0, trigger.stderr
        assert re.fullmatch(r"manual: run \S+ succeeded in \S+\n", trigger.stdout)
        (tmp_path / "token").write_text("wrong\n")
        assert_fails(orchestrator("trigger", "jobs.toml", "manual", cwd=tmp_path),
                     "POST /workers/manual/trigger: wrong token: http_token_file must hold "
                     "the running instance's token (403)")
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0


def test_second_instance_on_one_state_file_is_refused(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    process, log = start_run(tmp_path, STEERED)
    try:
        wait_for(lambda: "orchestrator started with" in log.read_text(), timeout=60)
        second = orchestrator("run", "jobs.toml", cwd=tmp_path)
        assert_fails(second, f"state file {tmp_path / 'state.db'} is in use by another "
                             f"orchestrator (pid {process.pid}); stop it first")
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0


def test_state_file_from_a_newer_release_is_refused_untouched(tmp_path):
    import sqlite3

    (tmp_path / "token").write_text("s3cret\n")
    write(tmp_path, STEERED)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("PRAGMA user_version = 42")
    db.commit()
    db.close()
    before = (tmp_path / "state.db").read_bytes()
    for command in (["run", "jobs.toml"], ["status", "jobs.toml"]):
        assert_fails(orchestrator(*command, cwd=tmp_path),
                     "has schema version 42, newer than this release understands")
    assert (tmp_path / "state.db").read_bytes() == before


def test_a_state_file_that_is_not_sqlite_is_refused(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    write(tmp_path, STEERED)
    (tmp_path / "state.db").write_text("these are my notes, not a database\n")
    assert_fails(orchestrator("run", "jobs.toml", cwd=tmp_path),
                 "cannot be used: file is not a database")
    assert (tmp_path / "state.db").read_text() == "these are my notes, not a database\n"


CRASHY = """
    [orchestrator]
    state_path = "state.db"
    http = "127.0.0.1:0"

    [workers.long]
    command = ["sh", "-c", "echo $$ > l.tmp; mv l.tmp long-started; exec sleep 300"]
    interval_seconds = 3600
    timeout_seconds = false

    [workers.tick]
    command = ["sh", "-c", "echo tick"]
    interval_seconds = 3600
"""


@pytest.mark.timeout(180)
def test_sigkill_mid_run_then_restart_records_interrupted_and_loses_nothing(tmp_path):
    process, log = start_run(tmp_path, CRASHY)
    long_pid = wait_for(lambda: read_pid(tmp_path / "long-started"), timeout=60)
    wait_for(lambda: "succeeded tick" in log.read_text(), timeout=60)
    process.kill()
    process.wait(timeout=30)
    wait_for(lambda: gone(long_pid), timeout=30, message="the run died with the orchestrator")
    restart, log2 = start_run(tmp_path, CRASHY)
    try:
        wait_for(lambda: "orchestrator started with" in log2.read_text(), timeout=60)
        history = json.loads(orchestrator("history", "jobs.toml", "--json",
                                          cwd=tmp_path).stdout)
        by_worker = {}
        for entry in history:
            by_worker.setdefault(entry["worker"], []).append(entry)
        assert [r["outcome"] for r in by_worker["long"]] == ["interrupted"]
        assert by_worker["long"][0]["error"] == "the orchestrator stopped during attempt 1"
        assert [r["outcome"] for r in by_worker["tick"]] == ["succeeded"]  # nothing lost
        status = json.loads(orchestrator("status", "jobs.toml", "--json",
                                         cwd=tmp_path).stdout)
        assert status["worker_states"]["long"]["last_outcome"] == "interrupted"
        assert status["worker_states"]["long"]["state"] == "idle"  # no stampede
    finally:
        restart.send_signal(signal.SIGTERM)
        assert finish(restart) == 0


def test_a_read_only_state_file_is_refused_untouched(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    process, log = start_run(tmp_path, STEERED)
    wait_for(lambda: "succeeded steady" in log.read_text(), timeout=60)
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0
    state = tmp_path / "state.db"
    before = state.read_bytes()
    if os.geteuid() == 0:  # root writes through permission bits: make the file immutable
        if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode:
            pytest.skip("cannot make a file read-only for root on this file system")
        undo = ["chattr", "-i", str(state)]
    else:
        state.chmod(0o444)
        undo = ["chmod", "644", str(state)]
    try:
        assert_fails(orchestrator("run", "jobs.toml", cwd=tmp_path),
                     f"state file {state} cannot be used: attempt to write a readonly database")
        assert orchestrator("history", "jobs.toml", cwd=tmp_path).returncode == 0  # readable
    finally:
        subprocess.run(undo, check=True)
    assert state.read_bytes() == before
