"""The ``orchestrator`` command (also ``python -m orchestrator``).

::

    orchestrator run FILE                        foreground until SIGINT/SIGTERM
    orchestrator check FILE [--json]             validate, print the workers and the graph
    orchestrator plan FILE [--start ISO] [--hours N] [--json]
    orchestrator from-crontab CRONTAB [--system] print the equivalent TOML
    orchestrator status FILE [--json]            what runs, what waits and why
    orchestrator history FILE [WORKER] [--limit N] [--json]
    orchestrator trigger|enable|disable FILE WORKER   steer the running instance

``status`` and ``history`` ask the running instance over HTTP, or, when none runs, read the
state file. ``trigger``, ``enable`` and ``disable`` need the running instance and its token.

Exit codes: 0 done, 1 a problem with the input (one line on stderr, no traceback), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Sequence

from loguru import logger

from .config import WorkerConfig, WorkerExecutionMode
from .crontab_import import convert_crontab
from .core import parse_http
from .errors import ConfigError, OrchestratorError
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run in the foreground until SIGINT or SIGTERM")
    run.add_argument("file", metavar="FILE", help="the installation's TOML file")
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
        command.add_argument("--json", action="store_true", help="print the answer as JSON")
        command.set_defaults(handler=_control, action=action)
    return parser


# -- sub-commands -----------------------------------------------------------------------------

def _run(arguments) -> int:
    installation = load(arguments.file)
    orchestrator = installation.build(http=_http_setting(installation))
    logger.remove()
    logger.add(sys.stderr, level="INFO", format=LOG_FORMAT, backtrace=False, diagnose=False)
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
        due = orchestrator.plan(start, arguments.hours)
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
    sys.stdout.write(convert_crontab(text, system=arguments.system, source=source))
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
        print(f"running (pid {instance.pid or '?'}) at {instance.url}: {len(workers)} workers, "
              f"{document['running']} running, {document['pending']} pending, "
              f"max_concurrent {document['max_concurrent']}")
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
    print(f"not running; from the state file {reader.path}")
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
    instance = _find_instance(installation)
    if instance.url is not None:
        query = f"/runs?limit={arguments.limit}"
        if arguments.worker:
            query += f"&worker={urllib.parse.quote(arguments.worker)}"
        runs = _ask(instance, "GET", query)
    else:
        reader = _state_reader(installation, instance)
        try:
            runs = [record.as_dict() for record in reader.recent(arguments.worker,
                                                                  arguments.limit)]
        finally:
            reader.close()
    if arguments.json:
        print(json.dumps(runs, indent=2))
        return 0
    _print_table(["RUN", "WORKER", "CAUSE", "DUE", "STARTED", "DURATION", "OUTCOME",
                  "ATTEMPTS", "ERROR"], [
        [run["run_id"], run["worker"], run["cause"], _short_time(run["due_at"]),
         _short_time(run["started_at"]), _seconds(run["duration_seconds"]),
         run["outcome"] or run["state"], str(run["attempts"]), run["error"] or ""]
        for run in runs])
    return 0


def _control(arguments) -> int:
    installation = load(arguments.file)
    instance = _find_instance(installation)
    if instance.url is None:
        raise OrchestratorError(f"{installation.path}: no running orchestrator found for this "
                                f"file ({instance.why}); {arguments.action} needs one")
    token = installation.orchestrator_options.get("http_token")
    if token is None:
        raise OrchestratorError(f"{installation.path}: {arguments.action} needs the token: set "
                                f"http_token_file in [orchestrator] (and restart the "
                                f"orchestrator)")
    path = f"/workers/{urllib.parse.quote(arguments.worker, safe='')}/{arguments.action}"
    if getattr(arguments, "stop", False):
        path += "?stop=1"
    answer = _ask(instance, "POST", path, token)
    if arguments.json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer.get("message") or f"{arguments.action}: {arguments.worker}: done")
    return 0


# -- the running instance ------------------------------------------------------------------

#: Where ``orchestrator run`` serves status when the file does not say (S10).
DEFAULT_HTTP = "127.0.0.1:8765"


@dataclasses.dataclass
class _Instance:
    url: str | None
    pid: int | None
    why: str = ""


def _http_setting(installation) -> str | None:
    """The file's ``http`` (``false``: off), or the command line's default."""
    value = installation.orchestrator_options.get("http", DEFAULT_HTTP)
    return None if value is False else value


def _find_instance(installation) -> _Instance:
    """The running orchestrator of this file: its lock file names it and its URL; without
    a state file, the configured address is tried."""
    state_path = installation.orchestrator_options.get("state_path")
    if state_path is not None:
        if not os.path.exists(state_path):
            return _Instance(None, None, f"the state file {state_path} does not exist yet")
        reader = StateReader(state_path)
        try:
            announced = reader.instance()
        finally:
            reader.close()
        if announced is None:
            return _Instance(None, None, f"the state file {state_path} is not in use")
        pid = int(announced["pid"]) if announced.get("pid", "").isdigit() else None
        url = announced.get("url")
        if url is None:
            return _Instance(None, pid, f"pid {pid} runs without http")
        return _Instance(url, pid)
    try:
        address = parse_http(_http_setting(installation))
    except ConfigError as error:
        raise ConfigError(f"{installation.path}: {error}", field="http") from None
    if address is None:
        return _Instance(None, None, "http is off and there is no state file")
    host, port = address
    url = f"http://{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        return _Instance(None, None, f"nothing answers at {url}: {error.strerror or error}")
    return _Instance(url, None)


def _state_reader(installation, instance: _Instance) -> StateReader:
    state_path = installation.orchestrator_options.get("state_path")
    if state_path is None:
        raise OrchestratorError(f"{installation.path}: no running orchestrator found "
                                f"({instance.why}), and the file has no state_path to read "
                                f"instead")
    return StateReader(state_path)


def _ask(instance: _Instance, method: str, path: str, token: str | None = None):
    """One request to the running instance; its JSON answer, or a one-line error."""
    request = urllib.request.Request(instance.url + path, method=method, data=b""
                                     if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read()).get("error") or error.reason
        except ValueError:
            detail = error.reason
        raise OrchestratorError(f"{instance.url}{path.split('?')[0]}: {error.code} "
                                f"{detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise OrchestratorError(f"{instance.url}: cannot be reached: {reason}") from None


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
        else:
            schedule = f"every {config.interval_seconds:g}s"
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
            "cron": config.cron, "interval_seconds": config.interval_seconds,
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
    text = str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _reader_went_away() -> int:
    """stdout was closed early (``| head``): not an error; keep Python from complaining."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0
