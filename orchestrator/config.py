"""Worker options: their vocabulary, their defaults and their validation.

``build_config(name, fn, command, options)`` turns what a user passed to
``register_worker`` into a frozen :class:`WorkerConfig`, or raises :class:`ConfigError`
with one sentence naming the worker, the field and the fix. Nothing else in the package
checks user input; everything downstream may trust a ``WorkerConfig``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import math
import numbers
import os
import pickle
import pwd
import re
import shlex
import zoneinfo
from datetime import datetime, tzinfo
from typing import Any, Callable

from .errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
#: Longest worker name (it is a file name, a URL path segment and a metric label).
MAX_NAME_LENGTH = 200
#: Largest jitter: a day.
MAX_JITTER_SECONDS = 86_400
#: Shortest interval: APScheduler's interval trigger has microsecond resolution and turns 0
#: into 1 s, so anything near it would silently run at another rate.
MIN_INTERVAL_SECONDS = 0.001
#: Most retries of one run.
MAX_RETRIES = 1000
#: Longest duration any option accepts (ten years); beyond it datetimes overflow.
MAX_SECONDS = 10 * 365 * 24 * 3600
#: Most processes ``pids_limit`` may allow (the kernel's own ceiling, PID_MAX_LIMIT).
MAX_PIDS_LIMIT = 4 * 1024 * 1024
#: Most cores ``cpu_limit`` may name.
MAX_CPU_LIMIT = 4096
#: Most memory ``memory_limit_mb`` may name (a pebibyte, in MiB).
MAX_MEMORY_LIMIT_MB = 1024 ** 3
#: The largest pickled result a run may return unless told otherwise, and the most it may be
#: told (a result crosses a pipe and a socket, and history keeps it).
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
MAX_MAX_RESULT_BYTES = 1024 ** 3


class JobPriority(str, enum.Enum):
    """How urgent a worker is; among runs that may start, higher priority goes first."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]

    def __str__(self) -> str:
        return self.value


_PRIORITY_RANK = {JobPriority.LOW: 0, JobPriority.NORMAL: 1, JobPriority.HIGH: 2,
                  JobPriority.CRITICAL: 3}


class WorkerExecutionMode(str, enum.Enum):
    """When a worker's runs become due: on its schedule, when triggered, or back to back."""

    SCHEDULED = "scheduled"    # on an interval or a crontab line
    TRIGGERED = "triggered"    # on trigger_worker(), or after its dependencies succeed
    CONTINUOUS = "continuous"  # again as soon as the previous run ends

    def __str__(self) -> str:
        return self.value


class OverlapPolicy(str, enum.Enum):
    """What a due time does while the worker's previous run is still running."""

    SKIP = "skip"        # record the due time as skipped
    QUEUE = "queue"      # one run waits and starts right after
    REPLACE = "replace"  # kill the running one, then start the new one

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """A worker's options and, in snapshots, its runtime fields.

    Instances are read-only. A function worker that takes one positional parameter receives
    a snapshot of its own config when it runs.
    """

    name: str
    execution_mode: WorkerExecutionMode = WorkerExecutionMode.SCHEDULED
    interval_seconds: float | None = 300.0
    timeout_seconds: float | None = 60.0
    max_retries: int = 3
    priority: JobPriority = JobPriority.NORMAL
    max_consecutive_failures: int | None = 5
    depends_on: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()
    # added options
    function: Callable[..., Any] | None = None
    cron: str | None = None
    calendar: str | None = None             # a systemd.time(7) calendar event
    timezone: tzinfo | None = None
    command: tuple[str, ...] | str | None = None
    shell: bool = False
    env: dict[str, str] | None = None
    cwd: str | None = None
    memory_limit_mb: float | None = None
    pids_limit: int | None = None
    cpu_limit: float | None = None
    max_result_bytes: int | None = None  # None: the orchestrator's default
    kill_grace_seconds: float = 3.0
    retry_delay_seconds: float = 1.0
    misfire_grace_seconds: float | None = None
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    on_failure: tuple[str, ...] | str | None = None
    kill_leftovers: bool = True
    run_at_start: bool = False
    user: str | None = None
    num_cpus: float = 1.0                   # on a Ray cluster: what placement reserves
    memory_mb: float | None = None
    resources: dict[str, float] | None = None
    jitter_seconds: float | None = None     # each due time later by a planned [0, jitter)
    stall_seconds: float | None = None      # no CPU and no output for this long: stalled
    passes_config: bool = False  # fn is called as fn(config) rather than fn()
    # runtime fields, filled in snapshots
    is_enabled: bool = True
    is_running: bool = False
    consecutive_failures: int = 0
    last_run: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None

    @property
    def target(self) -> str:
        """A short description of what the worker executes, for logs and status."""
        if self.command is not None:
            return self.command if isinstance(self.command, str) else shlex.join(self.command)
        fn = self.function
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


#: Options a user may pass to ``register_worker`` (besides ``name``, ``fn`` and ``command``).
OPTIONS = ("execution_mode", "interval_seconds", "timeout_seconds", "max_retries", "priority",
           "max_consecutive_failures", "depends_on", "blocks", "cron", "calendar", "timezone",
           "shell",
           "env", "cwd", "memory_limit_mb", "pids_limit", "cpu_limit", "max_result_bytes",
           "kill_grace_seconds", "retry_delay_seconds",
           "misfire_grace_seconds", "overlap", "on_failure", "kill_leftovers", "run_at_start",
           "user", "num_cpus", "memory_mb", "resources", "jitter_seconds", "stall_seconds")

_RUNTIME_FIELDS = ("is_enabled", "is_running", "consecutive_failures", "last_run",
                   "last_success", "last_error")


def suggest(word: str, choices) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_name(name: Any, *, worker: str | None = None, field: str = "name") -> str:
    """Return ``name`` if it is a valid worker name, else raise ConfigError."""
    who = f"worker {worker!r}: " if worker is not None else ""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{who}{field} must be a non-empty string of letters, digits, "
                          f"'_', '.' or '-', got {name!r}", worker=worker, field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{who}{field} is {len(name)} characters long; use at most "
                          f"{MAX_NAME_LENGTH}", worker=worker, field=field)
    if not NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not NAME_PATTERN.fullmatch(c)})
        raise ConfigError(f"{who}{field} {name!r} contains {''.join(bad)!r}; use only letters, "
                          f"digits, '_', '.' and '-'", worker=worker, field=field)
    if not set(name) - {".", "-"}:
        raise ConfigError(f"{who}{field} {name!r} is only dots and dashes, which reads as a "
                          f"path or an option; give it a letter, digit or '_'",
                          worker=worker, field=field)
    return name


def parse_timezone(value: Any, owner: str = "orchestrator") -> tzinfo:
    """A tzinfo from an IANA name (or a tzinfo); ConfigError naming ``owner`` otherwise."""
    return _Checker(None, owner).timezone(value)


def build_config(name: Any, fn: Any = None, command: Any = None,
                 options: dict[str, Any] | None = None, *,
                 decorating: bool = False) -> WorkerConfig:
    """Validate one worker's registration and return its :class:`WorkerConfig`.

    ``decorating``: ``fn`` is being decorated, so its module does not hold it yet and
    the pickle round trip cannot be tried; the other checks still apply.

    :raises ConfigError: naming the worker, the field and the fix.
    """
    check_name(name)
    check = _Checker(name)
    options = dict(options or {})
    for key in options:
        if key not in OPTIONS:
            if key in _RUNTIME_FIELDS:
                check.fail(key, "is a runtime field, not an option; the orchestrator sets it")
            if key in ("function", "fn"):
                check.fail(key, "is passed as the second positional argument: "
                                "register_worker(name, fn, ...)")
            check.fail(key, f"is not a worker option{suggest(key, OPTIONS)}")

    if (fn is None) == (command is None):
        check.fail("fn", "and command: give exactly one of them, a function or "
                         "command=[...]; got " + ("both" if fn is not None else "neither"))
    values: dict[str, Any] = {"name": name}
    if fn is not None:
        values["function"] = check.function(fn, decorating)
        values["passes_config"] = _positional_parameters(fn)[0] >= 1
    else:
        values["command"] = check.command(command, bool(options.get("shell", False)))

    mode = check.enum("execution_mode", options.get("execution_mode", "scheduled"),
                      WorkerExecutionMode)
    values["execution_mode"] = mode
    values["priority"] = check.enum("priority", options.get("priority", "normal"), JobPriority)
    values["overlap"] = check.enum("overlap", options.get("overlap", "skip"), OverlapPolicy)

    kinds = [key for key in ("interval_seconds", "cron", "calendar")
             if options.get(key) is not None]
    if mode is WorkerExecutionMode.SCHEDULED:
        if len(kinds) > 1:
            check.fail(kinds[-1], f"and {kinds[0]} exclude each other; keep one of them")
        if kinds == ["cron"]:
            values["cron"] = check.cron(options["cron"])
            values["interval_seconds"] = None
        elif kinds == ["calendar"]:
            values["calendar"] = check.calendar(options["calendar"])
            values["interval_seconds"] = None
        else:
            values["interval_seconds"] = check.positive("interval_seconds",
                                                        options.get("interval_seconds", 300.0))
            if values["interval_seconds"] < MIN_INTERVAL_SECONDS:
                check.fail("interval_seconds", f"must be at least {MIN_INTERVAL_SECONDS} "
                                               f"(a millisecond), got "
                                               f"{options['interval_seconds']!r}")
        if options.get("jitter_seconds") is not None:
            jitter = values["jitter_seconds"] = check.positive("jitter_seconds",
                                                               options["jitter_seconds"])
            if jitter > MAX_JITTER_SECONDS:
                check.fail("jitter_seconds", f"must be at most {MAX_JITTER_SECONDS} (a day), "
                                             f"got {_short(jitter)}")
            if values["interval_seconds"] is not None and jitter >= values["interval_seconds"]:
                check.fail("jitter_seconds", f"must be less than interval_seconds "
                                             f"({values['interval_seconds']:g}), so that runs "
                                             f"keep their order; got {_short(jitter)}")
    else:
        for key in ("interval_seconds", "cron", "calendar", "jitter_seconds"):
            if options.get(key) is not None:
                check.fail(key, f"has no effect for a {mode.value} worker; remove it or use "
                                f"execution_mode='scheduled'")
        values["interval_seconds"] = None
    if "timezone" in options and options["timezone"] is not None:
        values["timezone"] = check.timezone(options["timezone"])

    timeout = options.get("timeout_seconds", 60.0)
    values["timeout_seconds"] = None if timeout is None else check.positive("timeout_seconds",
                                                                             timeout)
    values["max_retries"] = check.count("max_retries", options.get("max_retries", 3))
    if values["max_retries"] > MAX_RETRIES:
        check.fail("max_retries", f"must be at most {MAX_RETRIES}, got "
                                  f"{_short(values['max_retries'])}")
    mcf = options.get("max_consecutive_failures", 5)
    if mcf is not None:
        mcf = check.count("max_consecutive_failures", mcf)
        if mcf < 1:
            check.fail("max_consecutive_failures", "must be at least 1 (or None to never "
                                                   "disable the worker)")
    values["max_consecutive_failures"] = mcf
    values["depends_on"] = check.names("depends_on", options.get("depends_on", ()))
    values["blocks"] = check.names("blocks", options.get("blocks", ()))

    values["shell"] = check.boolean("shell", options.get("shell", False))
    if values["shell"] and command is None:
        check.fail("shell", "applies only to command workers; remove shell=True")
    values["kill_leftovers"] = check.boolean("kill_leftovers",
                                             options.get("kill_leftovers", True))
    if options.get("env") is not None:
        values["env"] = check.env(options["env"])
    if options.get("cwd") is not None:
        values["cwd"] = check.cwd(options["cwd"])
    if options.get("memory_limit_mb") is not None:
        values["memory_limit_mb"] = check.limit("memory_limit_mb", options["memory_limit_mb"],
                                                "megabytes", MAX_MEMORY_LIMIT_MB)
    if options.get("pids_limit") is not None:
        values["pids_limit"] = check.whole_limit("pids_limit", options["pids_limit"],
                                                 "processes", MAX_PIDS_LIMIT)
    if options.get("cpu_limit") is not None:
        values["cpu_limit"] = check.limit("cpu_limit", options["cpu_limit"], "cores",
                                          MAX_CPU_LIMIT)
    if options.get("max_result_bytes") is not None:
        values["max_result_bytes"] = check.whole_limit(
            "max_result_bytes", options["max_result_bytes"], "bytes", MAX_MAX_RESULT_BYTES)
    values["kill_grace_seconds"] = check.non_negative("kill_grace_seconds",
                                                      options.get("kill_grace_seconds", 3.0))
    values["retry_delay_seconds"] = check.non_negative("retry_delay_seconds",
                                                       options.get("retry_delay_seconds", 1.0))
    if options.get("misfire_grace_seconds") is not None:
        values["misfire_grace_seconds"] = check.non_negative(
            "misfire_grace_seconds", options["misfire_grace_seconds"])
    if options.get("stall_seconds") is not None:
        values["stall_seconds"] = check.positive("stall_seconds", options["stall_seconds"])
    values["run_at_start"] = check.boolean("run_at_start", options.get("run_at_start", False))
    if options.get("user") is not None:
        values["user"] = check.user(options["user"])
    values["num_cpus"] = check.amount("num_cpus", options.get("num_cpus", 1.0), "CPUs",
                                      MAX_CPU_LIMIT)
    if options.get("memory_mb") is not None:
        values["memory_mb"] = check.limit("memory_mb", options["memory_mb"], "megabytes",
                                          MAX_MEMORY_LIMIT_MB)
    if options.get("resources") is not None:
        values["resources"] = check.resources(options["resources"])
    if options.get("on_failure") is not None:
        on_failure = options["on_failure"]  # a string is a shell line, a list an argv
        values["on_failure"] = check.command(on_failure, shell=isinstance(on_failure, str),
                                             field="on_failure")
    return WorkerConfig(**values)


class _Checker:
    """Field checks for one worker; each raises ConfigError naming worker and field."""

    def __init__(self, worker: str | None, label: str | None = None):
        self.worker = worker
        self.label = label or f"worker {worker!r}"

    def fail(self, field: str, problem: str):
        raise ConfigError(f"{self.label}: {field} {problem}", worker=self.worker, field=field)

    def number(self, field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(field, f"must be a number of seconds, got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:  # a whole number too big for a float
            number = math.inf
        if not math.isfinite(number) or abs(number) > MAX_SECONDS:
            self.fail(field, f"must be a finite number of seconds up to {MAX_SECONDS} (ten "
                             f"years), got {_short(value)}")
        return number

    def positive(self, field: str, value: Any) -> float:
        number = self.number(field, value)
        if not number > 0:
            self.fail(field, f"must be greater than 0, got {value!r}")
        return number

    def non_negative(self, field: str, value: Any) -> float:
        number = self.number(field, value)
        if not number >= 0:
            self.fail(field, f"must be 0 or more, got {value!r}")
        return number

    def limit(self, field: str, value: Any, unit: str, highest: float) -> float:
        """A positive, finite amount of ``unit`` up to ``highest``."""
        try:
            good = not isinstance(value, bool) and isinstance(value, numbers.Real) \
                and math.isfinite(value) and 0 < value <= highest
        except OverflowError:
            good = False
        if not good:
            self.fail(field, f"must be a number of {unit} above 0 and at most {highest}, "
                             f"got {_short(value)}")
        return float(value)

    def amount(self, field: str, value: Any, unit: str, highest: float) -> float:
        """A finite amount of ``unit`` from 0 to ``highest``."""
        try:
            good = not isinstance(value, bool) and isinstance(value, numbers.Real) \
                and math.isfinite(value) and 0 <= value <= highest
        except OverflowError:
            good = False
        if not good:
            self.fail(field, f"must be a number of {unit} from 0 to {highest:g}, got "
                             f"{_short(value)}")
        return float(value)

    def resources(self, value: Any) -> dict[str, float]:
        """Custom Ray resources: names to amounts."""
        if not isinstance(value, dict) or not value:
            self.fail("resources", f"must be a table of resource names to amounts, like "
                                   f"{{\"gpu_box\": 1}}, got {_short(value)}")
        amounts = {}
        for name, amount in value.items():
            if not isinstance(name, str) or not name or len(name) > 200:
                self.fail("resources", f"has a bad resource name {_short(name)}: give a "
                                       f"non-empty string")
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                instead = {"CPU": "num_cpus", "memory": "memory_mb"}.get(name)
                self.fail("resources", f"names {name!r}, which is not a custom resource"
                                       + (f"; use {instead}" if instead else ""))
            amounts[name] = self.amount(f"resources[{name!r}]", amount, "units", 1e9)
        return amounts

    def whole_limit(self, field: str, value: Any, unit: str, highest: int) -> int:
        """A whole number of ``unit`` from 1 to ``highest``."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or not 1 <= value <= highest:
            self.fail(field, f"must be a whole number of {unit} from 1 to {highest}, "
                             f"got {_short(value)}")
        return int(value)

    def count(self, field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            self.fail(field, f"must be a whole number, got {_short(value)}")
        if value < 0:
            self.fail(field, f"must be 0 or more, got {_short(value)}")
        return int(value)

    def boolean(self, field: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(field, f"must be True or False, got {value!r}")
        return value

    def enum(self, field: str, value: Any, kind: type[enum.Enum]):
        if isinstance(value, kind):
            return value
        if isinstance(value, str):
            try:
                return kind(value.lower())
            except ValueError:
                pass
        choices = [member.value for member in kind]
        hint = suggest(str(value).lower(), choices) if isinstance(value, str) else ""
        self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}{hint}")

    def names(self, field: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            self.fail(field, f"must be a list of worker names, like {field}=['other'], "
                             f"got {value!r}")
        names = []
        for item in value:
            check_name(item, worker=self.worker, field=field)
            if item == self.worker:
                verb = "depend on" if field == "depends_on" else "block"
                self.fail(field, f"names the worker itself; a worker cannot {verb} itself")
            if item not in names:
                names.append(item)
        return tuple(names)

    def function(self, fn: Any, decorating: bool = False):
        if not callable(fn):
            self.fail("fn", f"must be a callable, got {type(fn).__name__} {fn!r}")
        qualname = getattr(fn, "__qualname__", "")
        if "<lambda>" in qualname or "<locals>" in qualname:
            kind = "a lambda" if "<lambda>" in qualname else "a nested function"
            self.fail("fn", f"is {kind} ({qualname}); runs execute in a separate process, so "
                            f"the function must be defined at module level to be importable")
        try:
            if not decorating:
                pickle.dumps(fn)
        except Exception as error:  # pickle raises many types; the message is what matters
            self.fail("fn", f"cannot be sent to a worker process ({type(error).__name__}: "
                            f"{error}); use a module-level function")
        required = _positional_parameters(fn)[1]
        if required > 1:
            self.fail("fn", f"takes {required} required positional parameters; it is called "
                            f"as fn() or fn(config), so give it at most one")
        return fn

    def command(self, value: Any, shell: bool, field: str = "command"):
        parts = [value] if isinstance(value, str) else value if isinstance(
            value, (list, tuple)) else []
        if any(isinstance(part, str) and "\0" in part for part in parts):
            self.fail(field, "contains a NUL character, which no program argument can hold")
        if isinstance(value, str):
            if not value.strip():
                self.fail(field, "is empty; give the program and its arguments")
            if shell:
                return value
            try:
                argv = shlex.split(value)
            except ValueError as error:
                self.fail(field, f"cannot be split like a shell line ({error}); check its "
                                 f"quotes, or pass a list")
            return self._program(tuple(argv), field)
        if isinstance(value, (list, tuple)):
            if not value or not all(isinstance(part, (str, os.PathLike)) for part in value):
                self.fail(field, f"must be a non-empty list of strings, got {value!r}")
            argv = self._program(tuple(os.fspath(part) for part in value), field)
            return shlex.join(argv) if shell else argv
        self.fail(field, f"must be a list of strings or a string, got {value!r}")

    def _program(self, argv: tuple, field: str) -> tuple:
        if not argv or not argv[0].strip():
            self.fail(field, f"names no program (its first item is empty), got "
                             f"{_short(list(argv))}; give the program's name or path first")
        return argv

    def cron(self, value: Any) -> str:
        from .cron import parse_crontab

        if not isinstance(value, str):
            self.fail("cron", f"must be a crontab line like '0 3 * * *', got {value!r}")
        if value.strip().lower() == "@reboot":
            self.fail("cron", "'@reboot' is not a time schedule; for one run when the "
                              "orchestrator starts use execution_mode='triggered' with "
                              "run_at_start=True")
        try:
            parse_crontab(value)
        except ValueError as error:
            self.fail("cron", f"{_short(value)} is invalid: {_cut(str(error))}")
        return value.strip()

    def calendar(self, value: Any) -> str:
        from .calendar_event import parse_calendar

        if not isinstance(value, str):
            self.fail("calendar", f"must be a systemd calendar event like "
                                  f"'Mon..Fri *-*-* 02:00:00', got {value!r}")
        try:
            parse_calendar(value)
        except ValueError as error:
            detail = str(error)
            if detail.startswith("calendar ") and ": " in detail:  # it names the value too
                detail = detail.split(": ", 1)[1]
            self.fail("calendar", f"{_short(value)} is invalid: {_cut(detail)}")
        return value.strip()

    def timezone(self, value: Any) -> tzinfo:
        if isinstance(value, tzinfo):
            return value
        if not isinstance(value, str) or not value:
            self.fail("timezone", f"must be an IANA zone name like 'Europe/Berlin', "
                                  f"got {value!r}")
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America"
            hint = suggest(value, zoneinfo.available_timezones())
            self.fail("timezone", f"{value!r} is not a known IANA time zone{hint}")

    def env(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.fail("env", f"must be a dict of strings to strings, got {value!r}")
        for key, text in value.items():
            if not key or "=" in key or "\0" in key or "\0" in text:
                self.fail("env", f"has an invalid entry {key!r}: names must be non-empty "
                                 f"without '=' or NUL, values without NUL")
        return dict(value)

    def user(self, value: Any) -> str | None:
        """The account to run as; ``None`` when it is the current one (nothing to switch)."""
        if not isinstance(value, str) or not value:
            self.fail("user", f"must be a user name, got {value!r}")
        try:
            entry = pwd.getpwnam(value)
        except (KeyError, ValueError):  # ValueError: an embedded NUL
            self.fail("user", f"{value!r} is not a user of this machine")
        if entry.pw_uid == os.geteuid():
            return None
        if os.geteuid() != 0:
            current = pwd.getpwuid(os.geteuid()).pw_name
            self.fail("user", f"{value!r} differs from the current user {current!r}; only an "
                              f"orchestrator running as root can run workers as another user")
        return value

    def cwd(self, value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)):
            self.fail("cwd", f"must be a directory path, got {value!r}")
        path = os.fspath(value)
        if not os.path.isdir(path):
            self.fail("cwd", f"{path!r} is not an existing directory")
        return path


def _cut(text: str, most: int = 300) -> str:
    return text if len(text) <= most else text[:most - 3] + "..."


def _short(value: Any) -> str:
    """``repr(value)``, cut short: a message stays one readable line whatever was given."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else \
        f"a {value.bit_length()}-bit number"
    return text if len(text) <= 80 else text[:77] + "..."


def _positional_parameters(fn: Callable) -> tuple[int, int]:
    """``(named positional parameters, required ones)`` of ``fn``; (0, 0) if unknown."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0, 0
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional), sum(1 for p in positional if p.default is p.empty)
