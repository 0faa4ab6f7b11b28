"""What a new user meets first: a script without the main guard, the command line's
additions, two installations side by side, one duration, and plain error messages.

Everything here goes through what a user runs: ``python script.py``, ``python -m
orchestrator ...`` in a real subprocess, or the public API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import psutil
import pytest

import first_hour_workers as workers
from conftest import finish, wait_for
from orchestrator import ConfigError, WorkerOrchestrator, __version__
from orchestrator.http import request
from test_cli import assert_fails, assert_one_line_error, orchestrator, start_run, write

pytestmark = pytest.mark.timeout(180)

TESTS = Path(__file__).resolve().parent


# -- a script without  if __name__ == "__main__": ---------------------------------------------

HEAD = """
    import json, os, sys, time
    from loguru import logger
    from orchestrator import WorkerOrchestrator

    logger.enable("orchestrator")   # the library is silent until asked

    def job():
        return "ran"

"""
BODY = """
    orch = WorkerOrchestrator()
    orch.register_worker("job", job, interval_seconds=1, max_retries=0,
                         max_consecutive_failures=None)
    orch.start()                    # no guard: the launcher imports this file too
    deadline = time.monotonic() + 60
    while len([r for r in orch.history("job") if r.ended_at]) < 3:
        assert time.monotonic() < deadline, "three runs did not end within 60 s"
        time.sleep(0.05)
    runs = [r for r in orch.history("job") if r.ended_at][:3]
    print(json.dumps({
        "runs": [{"outcome": r.outcome.value, "error": r.error,
                  "seconds": (r.ended_at - r.due_at).total_seconds()} for r in runs]}))
    sys.stdout.flush()
    orch.stop()
"""
UNGUARDED = textwrap.dedent(HEAD) + textwrap.dedent(BODY)
GUARDED = (textwrap.dedent(HEAD) + 'if __name__ == "__main__":\n'
           + textwrap.indent(textwrap.dedent(BODY), "    "))


def test_an_unguarded_script_fails_each_run_at_once_and_names_the_guard(tmp_path):
    (tmp_path / "unguarded.py").write_text(UNGUARDED)
    result = subprocess.run([sys.executable, "unguarded.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # nothing nested started inside the launcher: one orchestrator logged its start
    assert result.stderr.count("orchestrator started with") == 1, result.stderr
    assert len(report["runs"]) == 3  # each later run fails the same way: no hang
    for run in report["runs"]:
        assert run["outcome"] == "failed"
        assert "\n" not in run["error"]
        assert 'if __name__ == "__main__":' in run["error"]
        assert run["seconds"] < 1.0, run  # from its due time to its end
    # a few lines per run, not a flood: the import is not retried in a loop
    assert len(result.stderr.splitlines()) < 30, result.stderr


def test_the_guarded_script_runs(tmp_path):
    (tmp_path / "guarded.py").write_text(GUARDED)
    result = subprocess.run([sys.executable, "guarded.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [run["outcome"] for run in runs] == ["succeeded"] * 3


# -- the API's smaller bugs -------------------------------------------------------------------

@pytest.fixture
def orch():
    orchestrator = WorkerOrchestrator()
    yield orchestrator
    orchestrator.stop()


def test_async_def_workers_run_in_their_process(orch):
    orch.register_worker("fetch", workers.fetch, execution_mode="triggered")
    orch.start()
    record = orch.run_worker("fetch", timeout=60)
    assert record.outcome.value == "succeeded", record.error
    assert record.result == "fetched"


def test_a_function_that_raised_has_no_exit_code(orch):
    orch.register_worker("boom", workers.boom, execution_mode="triggered", max_retries=0)
    orch.start()
    record = orch.run_worker("boom", timeout=60)
    assert record.outcome.value == "failed"
    assert record.error == "ValueError: no data today"
    assert record.exit_code is None and record.signal is None
    succeeded = orch.register_worker("nap", workers.nap, execution_mode="triggered")
    assert orch.run_worker(succeeded.name, timeout=60).exit_code is None


def test_one_duration_everywhere(orch):
    events = []
    orch.add_listener(lambda event: events.append(event) if event.kind == "succeeded" else None)
    orch.register_worker("nap", workers.nap, execution_mode="triggered")
    orch.start()
    assert orch.trigger_worker("nap", wait=True, timeout=60)
    [record] = orch.history("nap")
    stored = orch.history("nap")[0]
    status = orch.get_status()["worker_states"]["nap"]
    wait_for(lambda: events, timeout=10)
    durations = {record.duration_seconds, stored.duration_seconds, status["last_duration"],
                 events[0].duration_seconds}
    assert len(durations) == 1, durations
    # the user code's start to its end: the 0.3 s nap and little else (no fork, no import)
    assert 0.3 <= record.duration_seconds < 0.3 + 0.25, record.duration_seconds


def test_a_state_path_in_a_missing_directory_is_refused(tmp_path):
    missing = tmp_path / "no-such-dir" / "state.db"
    with pytest.raises(ConfigError) as caught:
        WorkerOrchestrator(state_path=str(missing))
    assert str(caught.value) == (f"orchestrator: state_path '{missing}' is in "
                                 f"{missing.parent}, which does not exist; create it, or "
                                 f"choose another state_path")
    assert not missing.parent.exists()
    write(tmp_path, """
        [orchestrator]
        state_path = "no-such-dir/state.db"
        [workers.w]
        command = "true"
    """)
    assert_one_line_error(orchestrator("run", "jobs.toml", cwd=tmp_path),
                          f"jobs.toml: [orchestrator] state_path '{missing}' is in {missing.parent}, which does not "
                          f"exist; create it, or choose another state_path")
    assert not missing.parent.exists()


def test_errors_have_one_prefix(tmp_path):
    """An error raised inside the orchestrator reaches the command line once prefixed."""
    with socket_taken() as port:
        write(tmp_path, f"""
            [orchestrator]
            http = "127.0.0.1:{port}"
            [workers.w]
            command = "true"
        """)
        result = orchestrator("run", "jobs.toml", cwd=tmp_path)
    assert_one_line_error(result, f"http cannot listen on 127.0.0.1:{port}: Address already "
                                  f"in use; choose another port, or leave http out (in a TOML "
                                  f"file: http = false)")


class socket_taken:
    """A listening TCP socket on a free port, for as long as the block lasts."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        return self.socket.getsockname()[1]

    def __exit__(self, *exc_info):
        self.socket.close()


# -- the command line -------------------------------------------------------------------------

def test_version(tmp_path):
    result = orchestrator("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"orchestrator {__version__}\n"


STEERED = """
    [orchestrator]
    state_path = "state.db"

    [workers.manual]
    command = ["sh", "-c", "echo made it; echo 'note: all fine' >&2"]
    execution_mode = "triggered"

    [workers.broken]
    command = ["sh", "-c", "echo starting; echo 'cannot open /srv/in: disk full' >&2; exit 3"]
    execution_mode = "triggered"
    max_retries = 0

    [workers.hourly]
    command = "true"
    cron = "0 * * * *"
    timezone = "UTC"

    [workers.gated]
    command = ["sh", "-c", "echo line one; while [ ! -e go ]; do sleep 0.05; done; echo line two; echo err two >&2"]
    execution_mode = "triggered"
    timeout_seconds = 120
"""


def start_logging(tmp_path: Path, level: str) -> subprocess.Popen:
    """``orchestrator run jobs.toml`` on STEERED, logging at ``level`` to a file; returns
    once its control socket answers."""
    write(tmp_path, STEERED)
    with open(tmp_path / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "jobs.toml", "--log-level", level,
             "--log-file", "orchestrator.log"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr,
            env={**os.environ, "TZ": "UTC"})
    wait_for(lambda: orchestrator("status", "jobs.toml", cwd=tmp_path).stdout
             .startswith("running"), timeout=60, message="the orchestrator answers")
    return process


@pytest.fixture
def running(tmp_path):
    process = start_logging(tmp_path, "DEBUG")
    yield process
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0


def test_run_logs_to_the_log_file_at_the_level_asked(tmp_path, running):
    orchestrator("trigger", "jobs.toml", "manual", "--wait", cwd=tmp_path)
    log = (tmp_path / "orchestrator.log").read_text()
    assert "orchestrator started with 4 workers" in log
    assert re.search(r" DEBUG +due manual run=", log), log
    wait_for(lambda: (tmp_path / "stderr.log").read_text() == log, timeout=10,
             message="stderr has the same lines as the file")


def test_run_log_level_warning_leaves_out_info(tmp_path):
    process = start_logging(tmp_path, "WARNING")
    try:
        orchestrator("trigger", "jobs.toml", "manual", "--wait", cwd=tmp_path)
        orchestrator("trigger", "jobs.toml", "broken", "--wait", cwd=tmp_path)
        log = tmp_path / "orchestrator.log"
        wait_for(lambda: "failed broken" in log.read_text(), timeout=30)
        assert all(" WARNING " in line for line in log.read_text().splitlines()), \
            log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0


def test_trigger_wait_exit_code_and_outcome(tmp_path, running):
    good = orchestrator("trigger", "jobs.toml", "manual", "--wait", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert re.fullmatch(r"manual: run \S+ succeeded in \d+(\.\d+)?s\n", good.stdout), good
    bad = orchestrator("trigger", "jobs.toml", "broken", "--wait", cwd=tmp_path)
    assert bad.returncode == 1
    assert re.fullmatch(r"broken: run \S+ failed in \S+s: exit code 3\n", bad.stdout), bad
    queued = orchestrator("trigger", "jobs.toml", "manual", cwd=tmp_path)
    assert queued.returncode == 0
    assert queued.stdout == ("manual: a run is queued (due now); 'orchestrator history' shows "
                             "how it ends\n")
    assert orchestrator("disable", "jobs.toml", "manual", cwd=tmp_path).returncode == 0
    refused = orchestrator("trigger", "jobs.toml", "manual", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == ("orchestrator: manual: no run queued: the worker is disabled; "
                              "enable it first\n")


def test_history_shows_why_a_run_failed(tmp_path, running):
    orchestrator("trigger", "jobs.toml", "broken", "--wait", cwd=tmp_path)
    history = orchestrator("history", "jobs.toml", "broken", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    header, row = history.stdout.splitlines()[:2]
    assert header.split()[-1] == "WHY"
    assert row.endswith("cannot open /srv/in: disk full"), row


def test_logs_of_the_last_run_and_of_one_run(tmp_path, running):
    orchestrator("trigger", "jobs.toml", "manual", "--wait", cwd=tmp_path)
    logs = orchestrator("logs", "jobs.toml", "manual", cwd=tmp_path)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "made it\n", "note: all fine\n")
    [run] = json.loads(orchestrator("history", "jobs.toml", "manual", "--json",
                                    cwd=tmp_path).stdout)
    by_id = orchestrator("logs", "jobs.toml", "manual", "--run", run["run_id"], cwd=tmp_path)
    assert by_id.stdout == "made it\n"
    assert_fails(orchestrator("logs", "jobs.toml", "broken", "--run", run["run_id"],
                              cwd=tmp_path), "is a run of 'manual', not of 'broken'")


def test_logs_follow_a_running_run_live(tmp_path, running):
    assert orchestrator("trigger", "jobs.toml", "gated", cwd=tmp_path).returncode == 0
    wait_for(lambda: json.loads(orchestrator("status", "jobs.toml", "--json", cwd=tmp_path)
                                .stdout)["worker_states"]["gated"]["running"], timeout=60)
    follow = subprocess.Popen([sys.executable, "-m", "orchestrator", "logs", "jobs.toml",
                               "gated", "-f"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout.readline() == "line one\n"  # while the run still waits
        assert follow.poll() is None
        (tmp_path / "go").touch()
        assert follow.stdout.readline() == "line two\n"
        assert follow.wait(timeout=60) == 0  # it ends with the run
        assert follow.stderr.read() == "err two\n"
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        follow.stdout.close()
        follow.stderr.close()


def test_plan_for_one_worker_and_a_limit(tmp_path):
    write(tmp_path, STEERED)
    result = orchestrator("plan", "jobs.toml", "--worker", "hourly", "--limit", "3",
                          "--start", "2026-03-01T00:30:00+00:00", "--hours", "24",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line.split()[-1] for line in result.stdout.splitlines()] == ["hourly"] * 3
    assert result.stdout.splitlines()[0] == "2026-03-01T01:00:00+00:00 hourly"
    assert result.stderr == ("orchestrator: plan: cut at 3 due times; more fall in the window "
                             "(use --limit, --hours or --worker)\n")
    assert_fails(orchestrator("plan", "jobs.toml", "--worker", "hourli", cwd=tmp_path),
                 "did you mean 'hourly'")


def test_check_warns_about_programs_not_on_path(tmp_path):
    write(tmp_path, """
        [workers.a]
        command = ["no-such-program-here", "--flag"]
        [workers.b]
        command = "cd /tmp && exec ls"
        shell = true
    """)
    result = orchestrator("check", "jobs.toml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ("orchestrator: warning: jobs.toml: worker 'a': "
                             "program 'no-such-program-here' is not found on PATH here\n")


# -- two installations on one machine ---------------------------------------------------------

def test_two_installations_with_defaults_each_talk_to_their_own(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    plain = """
        [workers.{name}]
        command = ["sh", "-c", "echo {name}"]
        execution_mode = "triggered"
    """
    write(a, plain.format(name="alpha"))
    write(b, plain.format(name="beta"))
    first, first_log = start_run(a, plain.format(name="alpha"))
    second, second_log = start_run(b, plain.format(name="beta"))
    try:
        for log in (first_log, second_log):
            wait_for(lambda: "orchestrator started with" in log.read_text(), timeout=60)
        for directory, process, name in ((a, first, "alpha"), (b, second, "beta")):
            status = orchestrator("status", "jobs.toml", "--json", cwd=directory)
            document = json.loads(status.stdout)
            assert document["pid"] == process.pid
            assert list(document["worker_states"]) == [name]
            trigger = orchestrator("trigger", "jobs.toml", name, "--wait", cwd=directory)
            assert trigger.returncode == 0, trigger.stderr
        second.send_signal(signal.SIGTERM)
        assert finish(second) == 0
        assert_fails(orchestrator("trigger", "jobs.toml", "beta", cwd=b),
                     f"not running (nothing answers on {b / 'jobs.toml.sock'}")
        assert orchestrator("status", "jobs.toml", cwd=a).stdout.startswith(
            f"running (pid {first.pid})")
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                assert finish(process) == 0


def test_the_control_socket_is_the_owners_alone(tmp_path, running):
    socket_path = tmp_path / "state.db.sock"
    assert socket_path.is_socket()
    assert socket_path.stat().st_mode & 0o777 == 0o600
    code, document = request(f"unix:{socket_path}", "GET", "/status")
    assert code == 200 and document["pid"] == running.pid


def test_live_output_over_http(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    toml = STEERED.replace('state_path = "state.db"',
                           'state_path = "state.db"\nhttp = "127.0.0.1:0"\n'
                           'http_token_file = "token"')
    process, log = start_run(tmp_path, toml)
    try:
        wait_for(lambda: "orchestrator started with" in log.read_text(), timeout=60)
        url = re.search(r"serving status and control on (http://\S+)", log.read_text())[1]
        assert orchestrator("trigger", "jobs.toml", "gated", cwd=tmp_path).returncode == 0

        def first_line():
            code, status = request(url, "GET", "/status")
            run = status["worker_states"]["gated"]
            if not run["running"]:
                return None
            code, answer = request(url, "GET", f"/runs/{run['run_id']}/output")
            return answer if answer["stdout"] else None

        answer = wait_for(first_line, timeout=60)
        assert (answer["running"], answer["stdout"]) == (True, "line one\n")
        (tmp_path / "go").touch()
        path = (f"/runs/{answer['run_id']}/output?stdout_from={answer['stdout_offset']}"
                f"&stderr_from={answer['stderr_offset']}")
        answer = wait_for(lambda: (lambda a: a if not a["running"] else None)(
            request(url, "GET", path)[1]), timeout=60)
        assert (answer["stdout"], answer["stderr"]) == ("line two\n", "err two\n")
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0


def test_status_reasons_speak_the_users_language(tmp_path, running):
    assert orchestrator("disable", "jobs.toml", "hourly", cwd=tmp_path).returncode == 0
    status = orchestrator("status", "jobs.toml", cwd=tmp_path).stdout
    rows = {line.split()[0]: line for line in status.splitlines()[2:]}
    assert "runs only when triggered" in rows["manual"]
    assert re.search(r"disabled by request at \d\d:\d\d", rows["hourly"]), rows["hourly"]
    assert "()" not in status
