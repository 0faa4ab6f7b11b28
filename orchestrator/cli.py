"""The ``orchestrator`` command (also ``python -m orchestrator``).

::

    orchestrator --version
    orchestrator run FILE [--log-level L] [--log-file F]   foreground until SIGINT/SIGTERM
    orchestrator check FILE [--json]             validate, print the workers and the graph
    orchestrator plan FILE [--start ISO] [--hours N] [--worker W] [--limit N] [--json]
    orchestrator from-crontab CRONTAB [--system] print the equivalent TOML
    orchestrator status FILE [--json]            what runs, what waits and why
    orchestrator history FILE [WORKER] [--limit N] [--json]
    orchestrator trigger FILE WORKER [--wait]    make a run due now (and wait for it)
    orchestrator enable|disable FILE WORKER      steer the running instance
    orchestrator logs FILE WORKER [--run ID] [-f]   a run's stdout and stderr

Every command talks to the instance of the FILE it is given, through that installation's
control socket (beside its state file, or beside FILE; its file permissions are the access
control), or says that it is not running. ``status``, ``history`` and ``logs`` then read the
state file instead; ``trigger``, ``enable`` and ``disable`` need the running instance.

Exit codes: 0 done, 1 a problem with the input (one line on stderr, no traceback), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Sequence

from loguru import logger

from . import __version__
from .config import WorkerConfig, WorkerExecutionMode
from .crontab_import import convert_crontab
from .errors import OrchestratorError
from .http import _answers, request
from .state import StateReader
from .tomlfile import load

PROGRAM = "orchestrator"
LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = _parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits 2 on usage errors, 0 for --help
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 2
    try:
        return arguments.handler(arguments)
    except (OrchestratorError, OSError) as error:
        if isinstance(error, BrokenPipeError):
            return _reader_went_away()
        print(f"{PROGRAM}: {_one_line(error)}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Run the workers of a TOML file, instead of cron.")
    parser.add_argument("--version", action="version",
                        version=f"{PROGRAM} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run in the foreground until SIGINT or SIGTERM")
    run.add_argument("file", metavar="FILE", help="the installation's TOML file")
    run.add_argument("--log-level", default="INFO", type=str.upper,
                     choices=["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR",
                              "CRITICAL"], metavar="LEVEL",
                     help="the least important log lines shown (default: INFO; DEBUG "
                          "shows due times too)")
    run.add_argument("--log-file", metavar="PATH",
                     help="also write the log to PATH (rotated at 10 MB, 5 files kept)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate FILE, print its workers and graph")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check)

    plan = commands.add_parser("plan", help="print every due time in a window")
    plan.add_argument("file", metavar="FILE")
    plan.add_argument("--start", type=_iso_time, metavar="ISO",
                      help="window start, ISO 8601 (default: now; no offset: the "
                           "orchestrator's zone)")
    plan.add_argument("--hours", type=_positive_hours, default=24.0, metavar="N",
                      help="window length in hours (default: 24)")
    plan.add_argument("--worker", metavar="NAME", help="only this worker's due times")
    plan.add_argument("--limit", type=_plan_limit, default=10_000, metavar="N",
                      help="at most N due times (default: 10,000)")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(handler=_plan)

    crontab = commands.add_parser("from-crontab",
                                  help="print the TOML equivalent of a crontab ('-': stdin)")
    crontab.add_argument("crontab", metavar="CRONTAB")
    crontab.add_argument("--system", action="store_true",
                         help="/etc/crontab and /etc/cron.d format (a user before the command)")
    crontab.set_defaults(handler=_from_crontab)

    status = commands.add_parser("status", help="what runs, what waits and why")
    status.add_argument("file", metavar="FILE")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)

    history = commands.add_parser("history", help="recent runs, newest first")
    history.add_argument("file", metavar="FILE")
    history.add_argument("worker", metavar="WORKER", nargs="?", help="only this worker")
    history.add_argument("--limit", type=_limit, default=20, metavar="N",
                         help="how many runs (default: 20)")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=_history)

    for action, text in (("trigger", "make a run of WORKER due now"),
                         ("enable", "enable WORKER (resets its failure count)"),
                         ("disable", "disable WORKER")):
        command = commands.add_parser(action, help=text)
        command.add_argument("file", metavar="FILE")
        command.add_argument("worker", metavar="WORKER")
        if action == "disable":
            command.add_argument("--stop", action="store_true",
                                 help="also kill its run in progress")
        if action == "trigger":
            command.add_argument("--wait", action="store_true",
                                 help="wait until the run ends; exit 0 only if it succeeded")
        command.add_argument("--json", action="store_true", help="print the answer as JSON")
        command.set_defaults(handler=_control, action=action)

    logs = commands.add_parser("logs", help="a run's stdout and stderr")
    logs.add_argument("file", metavar="FILE")
    logs.add_argument("worker", metavar="WORKER")
    logs.add_argument("--run", metavar="ID", help="this run (default: the newest)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="while the run goes on, print what it writes")
    logs.set_defaults(handler=_logs)
    return parser


# -- sub-commands -----------------------------------------------------------------------------

def _run(arguments) -> int:
    installation = load(arguments.file)
    orchestrator = installation.build()
    logger.remove()
    logger.add(sys.stderr, level=arguments.log_level, format=LOG_FORMAT, backtrace=False,
               diagnose=False)
    if arguments.log_file:
        try:
            logger.add(arguments.log_file, level=arguments.log_level, format=LOG_FORMAT,
                       rotation="10 MB", retention=5, backtrace=False, diagnose=False)
        except OSError as error:
            raise OrchestratorError(f"--log-file {arguments.log_file}: "
                                    f"{error.strerror or error}") from None
    logger.enable("orchestrator")
    orchestrator.run_forever()
    if orchestrator.failure is not None:  # it stopped on its own
        print(f"{PROGRAM}: stopped: {orchestrator.failure}", file=sys.stderr)
        return 1
    return 0


def _check(arguments) -> int:
    installation = load(arguments.file)
    orchestrator = installation.build()
    configs = [orchestrator.get_worker(entry.name) for entry in installation.workers]
    at_start = {entry.name for entry in installation.workers
                if entry.options.get("run_at_start") is True}
    rows = [_describe(config, config.name in at_start) for config in configs]
    depends = [(config.name, other) for config in configs for other in config.depends_on]
    excludes = sorted({tuple(sorted((config.name, other)))
                       for config in configs for other in config.blocks})
    status = orchestrator.get_status()
    containment = {"mode": status["containment"], "detail": status["containment_detail"]}
    if arguments.json:
        document = {"file": installation.path, "ok": True, "containment": containment,
                    "workers": rows,
                    "graph": {"depends_on": [list(edge) for edge in depends],
                              "excludes": [list(edge) for edge in excludes]}}
        print(json.dumps(document, indent=2))
        return 0
    for warning in _missing_programs(configs):
        print(f"{PROGRAM}: warning: {installation.path}: {warning}", file=sys.stderr)
    print(f"{installation.path}: {len(rows)} worker{'s' if len(rows) != 1 else ''}, no "
          f"problem found")
    print(f"containment: {containment['mode']} ({containment['detail']})")
    headers = ["WORKER", "SCHEDULE", "MODE", "PRIORITY", "DEPENDS_ON", "BLOCKS"]
    table = [[row["name"], row["schedule"], row["mode"], row["priority"],
              ", ".join(row["depends_on"]) or "-", ", ".join(row["blocks"]) or "-"]
             for row in rows]
    _print_table(headers, table)
    print()
    print("graph:")
    if not depends and not excludes:
        print("  no dependencies or exclusions")
    for worker, dependency in depends:
        print(f"  {worker} runs after {dependency} succeeded")
    for first, second in excludes:
        print(f"  {first} and {second} never run at the same time")
    return 0


def _plan(arguments) -> int:
    orchestrator = load(arguments.file).build()
    start = arguments.start or datetime.now(timezone.utc).replace(microsecond=0)
    try:
        due = orchestrator.plan(start, arguments.hours, limit=arguments.limit,
                                worker=arguments.worker)
    except OverflowError:
        raise OrchestratorError(f"{arguments.file}: plan: a schedule goes past the last "
                                f"date Python can represent; shorten --hours or the "
                                f"interval") from None
    if arguments.json:
        print(json.dumps([{"time": when.isoformat(), "worker": name} for when, name in due],
                         indent=2))
    else:
        for when, name in due:
            print(f"{when.isoformat()} {name}")
    if due.cut:
        print(f"{PROGRAM}: plan: cut at {arguments.limit} due times; more fall in the "
              f"window (use --limit, --hours or --worker)", file=sys.stderr)
    return 0


def _from_crontab(arguments) -> int:
    if arguments.crontab == "-":
        text, source = sys.stdin.read(), "standard input"
    else:
        try:
            with open(arguments.crontab, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError as error:
            raise OrchestratorError(f"{arguments.crontab}: cannot be read: "
                                    f"{error.strerror or error}") from None
        source = arguments.crontab
    conversion = convert_crontab(text, system=arguments.system, source=source)
    sys.stdout.write(conversion.toml)
    for problem in conversion.problems:
        print(f"{PROGRAM}: {problem}", file=sys.stderr)
    return 0


def _status(arguments) -> int:
    installation = load(arguments.file)
    instance = _find_instance(installation)
    if instance.url is not None:
        document = _ask(instance, "GET", "/status")
        if arguments.json:
            print(json.dumps(document, indent=2))
            return 0
        workers = document["worker_states"]
        print(f"running (pid {document.get('pid') or instance.pid or '?'}), "
              f"{document['workers']} workers, {document['running']} running, "
              f"{document['pending']} pending, max_concurrent {document['max_concurrent']}, "
              f"{document['containment']} containment")
        _print_table(["WORKER", "STATE", "LAST", "DURATION", "NEXT RUN", "REASON"], [
            [name, worker["state"], worker["last_outcome"] or "-",
             _seconds(worker["last_duration"]), _short_time(worker["next_run"]),
             worker["reason"]] for name, worker in workers.items()])
        return 0
    reader = _state_reader(installation, instance)
    try:
        saved = reader.workers()
    finally:
        reader.close()
    names = [entry.name for entry in installation.workers]
    rows = {name: saved.get(name) for name in names}
    if arguments.json:
        print(json.dumps({"state": "not running", "state_path": reader.path,
                          "workers": {name: _json_ready(values) for name, values in
                                      rows.items()}}, indent=2))
        return 0
    print(f"not running ({instance.why}); from the state file {reader.path}")
    _print_table(["WORKER", "ENABLED", "LAST", "LAST RUN", "FAILURES", "NOTE"], [
        [name, "-", "never ran", "-", "-", ""] if values is None else
        [name, "yes" if values["enabled"] else "no",
         values["last_outcome"].value if values["last_outcome"] else "-",
         _short_time(values["last_run"]), str(values["consecutive_failures"]),
         values["disabled_reason"] or values["last_error"] or ""]
        for name, values in rows.items()])
    return 0


def _history(arguments) -> int:
    installation = load(arguments.file)
    runs = _recent_runs(installation, _find_instance(installation), arguments.worker,
                        arguments.limit)
    if arguments.json:
        print(json.dumps(runs, indent=2))
        return 0
    nodes = any(run.get("node") for run in runs)  # ran on a cluster: say where
    _print_table(["RUN", "WORKER", "CAUSE", "DUE", "STARTED", "DURATION", "OUTCOME",
                  "ATTEMPTS", *(["HOST", "NODE"] if nodes else []), "WHY"], [
        [run["run_id"], run["worker"], run["cause"], _short_time(run["due_at"]),
         _short_time(run["started_at"]), _seconds(run["duration_seconds"]),
         run["outcome"] or run["state"], str(run["attempts"]),
         *([run.get("host") or "", (run.get("node") or "")[:8]] if nodes else []), _why(run)]
        for run in runs])
    return 0


def _recent_runs(installation, instance: "_Instance", worker: str | None,
                 limit: int) -> list[dict]:
    """Run records as JSON, newest first, from the running instance or the state file."""
    if instance.url is not None:
        query = f"/runs?limit={limit}"
        if worker:
            query += f"&worker={urllib.parse.quote(worker)}"
        return _ask(instance, "GET", query)
    reader = _state_reader(installation, instance)
    try:
        return [record.as_dict() for record in reader.recent(worker, limit)]
    finally:
        reader.close()


def _why(run: dict) -> str:
    """For a run that did not succeed, the line that says why: the last line of its stderr,
    else its error."""
    if run.get("outcome") in (None, "succeeded"):
        return ""
    lines = [line for line in (run.get("stderr_tail") or "").splitlines() if line.strip()]
    text = lines[-1].strip() if lines else run.get("error") or ""
    return text if len(text) <= 100 else text[:97] + "..."


def _control(arguments) -> int:
    installation = load(arguments.file)
    instance = _find_instance(installation)
    if instance.url is None:
        raise OrchestratorError(f"{installation.path}: not running ({instance.why}); "
                                f"{arguments.action} needs the running orchestrator")
    token = None
    if not instance.url.startswith("unix:"):  # plain HTTP: the control routes need the token
        token = installation.orchestrator_options.get("http_token")
        if token is None:
            raise OrchestratorError(f"{installation.path}: {arguments.action} over HTTP needs "
                                    f"the token: set http_token_file in [orchestrator]")
    path = f"/workers/{urllib.parse.quote(arguments.worker, safe='')}/{arguments.action}"
    waiting = getattr(arguments, "wait", False)
    if getattr(arguments, "stop", False):
        path += "?stop=1"
    if waiting:
        path += "?wait=1"
    answer = _ask(instance, "POST", path, token, timeout=None if waiting else 30)
    if arguments.json:
        print(json.dumps(answer, indent=2))
    elif waiting:
        outcome = answer.get("outcome")
        print(f"{arguments.worker}: run {answer.get('run_id')} {outcome} in "
              f"{_seconds(answer.get('duration_seconds'))}"
              + (f": {answer['error']}" if answer.get("error") else ""))
    elif arguments.action == "trigger":
        if answer.get("triggered") is False:
            raise OrchestratorError(f"{arguments.worker}: no run queued: "
                                    f"{answer.get('message') or 'the worker is disabled'}")
        print(f"{arguments.worker}: a run is queued (due now); 'orchestrator history' shows "
              f"how it ends")
    else:
        print(f"{arguments.worker}: {arguments.action}d")
    if waiting:
        return 0 if answer.get("outcome") == "succeeded" else 1
    return 1 if answer.get("triggered") is False else 0


def _logs(arguments) -> int:
    installation = load(arguments.file)
    instance = _find_instance(installation)
    run_id = arguments.run
    if run_id is None:
        runs = _recent_runs(installation, instance, arguments.worker, 1)
        if not runs:
            raise OrchestratorError(f"{installation.path}: worker {arguments.worker!r} has "
                                    f"no run yet")
        run_id = runs[0]["run_id"]
    if instance.url is None:  # not running: the record's tails
        reader = _state_reader(installation, instance)
        try:
            record = reader.find(run_id)
        finally:
            reader.close()
        if record is None or record.worker != arguments.worker:
            raise OrchestratorError(f"{installation.path}: no run {run_id!r} of "
                                    f"{arguments.worker!r} in the state file")
        sys.stdout.write(record.stdout_tail)
        sys.stderr.write(record.stderr_tail)
        return 0
    offsets = {"stdout_from": 0, "stderr_from": 0}
    while True:
        answer = _ask(instance, "GET", f"/runs/{urllib.parse.quote(run_id, safe='')}/output?"
                      + urllib.parse.urlencode(offsets))
        if answer["worker"] != arguments.worker:
            raise OrchestratorError(f"run {run_id!r} is a run of {answer['worker']!r}, not "
                                    f"of {arguments.worker!r}")
        sys.stdout.write(answer["stdout"])
        sys.stderr.write(answer["stderr"])
        sys.stdout.flush()
        sys.stderr.flush()
        offsets = {"stdout_from": answer["stdout_offset"],
                   "stderr_from": answer["stderr_offset"]}
        if not arguments.follow or not answer["running"]:
            return 0
        time.sleep(FOLLOW_SECONDS)


#: How often ``logs -f`` asks for what a running run wrote since.
FOLLOW_SECONDS = 0.5


# -- the running instance ------------------------------------------------------------------

@dataclasses.dataclass
class _Instance:
    url: str | None      # unix:PATH (the control socket) or http://host:port
    pid: int | None
    why: str = ""        # why none runs


def _find_instance(installation) -> _Instance:
    """The running orchestrator of this installation: it answers on the installation's
    control socket; without one, its state file names its HTTP address."""
    socket_path = installation.orchestrator_options.get("control_socket")
    if socket_path:
        if _answers(socket_path):
            return _Instance(f"unix:{socket_path}", None)
        why = f"nothing answers on {socket_path}"
    else:
        why = "control_socket is off"
    state_path = installation.orchestrator_options.get("state_path")
    if state_path is None or not os.path.exists(state_path):
        return _Instance(None, None, why)
    reader = StateReader(state_path)
    try:
        announced = reader.instance()
    finally:
        reader.close()
    if announced is None:
        return _Instance(None, None, f"{why}, and the state file is not in use")
    pid = int(announced["pid"]) if announced.get("pid", "").isdigit() else None
    if announced.get("url"):
        return _Instance(announced["url"], pid)
    return _Instance(None, pid, f"pid {pid} holds the state file but serves no control "
                                f"socket or HTTP")


def _state_reader(installation, instance: _Instance) -> StateReader:
    state_path = installation.orchestrator_options.get("state_path")
    if state_path is None:
        raise OrchestratorError(f"{installation.path}: not running ({instance.why}), and the "
                                f"file has no state_path to read instead")
    return StateReader(state_path)


def _ask(instance: _Instance, method: str, path: str, token: str | None = None, *,
         timeout: float | None = 30):
    """One request to the running instance; its JSON answer, or a one-line error."""
    try:
        code, answer = request(instance.url, method, path, token, timeout=timeout)
    except OSError as error:
        raise OrchestratorError(f"{instance.url} cannot be reached: "
                                f"{error.strerror or error}") from None
    if code >= 400:
        detail = answer.get("error") if isinstance(answer, dict) else answer
        if code == 403:
            detail = f"{detail}: http_token_file must hold the running instance's token"
        raise OrchestratorError(f"{method} {path.split('?')[0]}: {detail} ({code})")
    return answer


# -- helpers ----------------------------------------------------------------------------------

def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(line[column]) for line in [headers, *rows])
              for column in range(len(headers))]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _short_time(value) -> str:
    """A time for a table: local wall time, with the date unless it is today."""
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = when.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _json_ready(values):
    if values is None:
        return None
    return {key: (value.isoformat() if isinstance(value, datetime) else
                  value.value if hasattr(value, "value") else value)
            for key, value in values.items()}


# What /bin/sh runs itself, which no PATH lookup finds.
_SHELL_WORDS = frozenset(
    "alias bg break case cd command continue eval exec exit export false fg for getopts "
    "hash if jobs kill printf pwd read readonly return set shift test times trap true "
    "type ulimit umask unalias unset until wait while echo".split())


def _missing_programs(configs) -> list[str]:
    """Warnings for command workers whose program is not on PATH (``check`` does not fail
    for them: the machine that runs the file may have it)."""
    warnings = []
    for config in configs:
        command = config.command
        if command is None:
            continue
        if isinstance(command, str):  # a shell line: its first word, if it is a plain one
            words = command.split()
            program = words[0] if words and re.fullmatch(r"[\w./+-]+", words[0]) else None
            if program in _SHELL_WORDS:
                program = None
        else:
            program = command[0]
        if program is None:
            continue
        path = (config.env or {}).get("PATH", os.environ.get("PATH", os.defpath))
        where = config.cwd or os.getcwd()
        found = os.access(os.path.join(where, program), os.X_OK) if os.path.dirname(program) \
            else shutil.which(program, path=path) is not None
        if not found:
            warnings.append(f"worker {config.name!r}: program {program!r} is not found "
                            f"{'' if os.path.dirname(program) else 'on PATH '}here")
    return warnings


def _plan_limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to "
                                         f"10,000,000")
    return int(text)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 1000")
    return int(text)


def _describe(config: WorkerConfig, runs_at_start: bool) -> dict:
    mode = config.execution_mode
    if mode is WorkerExecutionMode.SCHEDULED:
        if config.cron is not None:
            schedule = f"cron {config.cron}"
            if config.timezone is not None:
                schedule += f" ({config.timezone})"
        elif config.calendar is not None:  # systemd's normalized form, as systemd prints it
            from .calendar_event import parse_calendar

            spec = parse_calendar(config.calendar)
            schedule = f"calendar {spec.normalized()}"
            if config.timezone is not None and spec.timezone is None:
                schedule += f" ({config.timezone})"
        else:
            schedule = f"every {config.interval_seconds:g}s"
        if config.jitter_seconds:
            schedule += f", up to {config.jitter_seconds:g}s later"
    elif mode is WorkerExecutionMode.TRIGGERED:
        schedule = ("after " + ", ".join(config.depends_on) if config.depends_on
                    else "on trigger")
    else:
        schedule = "continuously"
    if runs_at_start:
        schedule += ", at start"
    return {"name": config.name, "schedule": schedule, "mode": mode.value,
            "priority": config.priority.value, "depends_on": list(config.depends_on),
            "blocks": list(config.blocks), "runs": config.target,
            "cron": config.cron, "calendar": config.calendar,
            "interval_seconds": config.interval_seconds,
            "timezone": str(config.timezone) if config.timezone is not None else None,
            "timeout_seconds": config.timeout_seconds}


def _iso_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-01-31T08:00:00+01:00") from None


def _positive_hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        hours = float("nan")
    if not 0 < hours < 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours above 0")
    return hours


def _one_line(error: BaseException) -> str:
    text = str(error).removeprefix(f"{PROGRAM}: ")  # the line gets the prefix once
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _reader_went_away() -> int:
    """stdout was closed early (``| head``): not an error; keep Python from complaining."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0
