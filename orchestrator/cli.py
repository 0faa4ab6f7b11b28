"""The ``orchestrator`` command (also ``python -m orchestrator``).

::

    orchestrator run FILE                        foreground until SIGINT/SIGTERM
    orchestrator check FILE [--json]             validate, print the workers and the graph
    orchestrator plan FILE [--start ISO] [--hours N] [--json]
    orchestrator from-crontab CRONTAB [--system] print the equivalent TOML

Exit codes: 0 done, 1 a problem with the input (one line on stderr, no traceback), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Sequence

from loguru import logger

from .config import WorkerConfig, WorkerExecutionMode
from .crontab_import import convert_crontab
from .errors import OrchestratorError
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
    return parser


# -- sub-commands -----------------------------------------------------------------------------

def _run(arguments) -> int:
    orchestrator = load(arguments.file).build()
    logger.remove()
    logger.add(sys.stderr, level="INFO", format=LOG_FORMAT, backtrace=False, diagnose=False)
    logger.enable("orchestrator")
    orchestrator.run_forever()
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
    if arguments.json:
        document = {"file": installation.path, "ok": True, "workers": rows,
                    "graph": {"depends_on": [list(edge) for edge in depends],
                              "excludes": [list(edge) for edge in excludes]}}
        print(json.dumps(document, indent=2))
        return 0
    print(f"{installation.path}: {len(rows)} worker{'s' if len(rows) != 1 else ''}, no "
          f"problem found")
    headers = ["WORKER", "SCHEDULE", "MODE", "PRIORITY", "DEPENDS_ON", "BLOCKS"]
    table = [[row["name"], row["schedule"], row["mode"], row["priority"],
              ", ".join(row["depends_on"]) or "-", ", ".join(row["blocks"]) or "-"]
             for row in rows]
    widths = [max(len(line[column]) for line in [headers, *table])
              for column in range(len(headers))]
    for line in [headers, *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
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


# -- helpers ----------------------------------------------------------------------------------

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
