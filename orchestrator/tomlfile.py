"""An installation's TOML file: the ``[orchestrator]`` table and one ``[workers.NAME]`` table
per worker, with the Python option names as keys (the user guide's "The TOML file and
replacing cron").

::

    jobs.toml --tomllib--> dict --load()--> Installation (orchestrator kwargs, WorkerEntry
                                              per worker: function imported, paths resolved)
                                                   |
                                  Installation.build() --> WorkerOrchestrator with every
                                                           worker registered, names checked

Every problem is one :class:`~orchestrator.errors.ConfigError` line that starts with the
file's name and names the worker and the key, for example
``jobs.toml: worker 'fetch': interval_second is not a worker option (did you mean
'interval_seconds'?)``. The messages of :func:`~orchestrator.config.build_config` are reused,
prefixed with the file's name.

Relative paths in the file (``state_path``, ``http_token_file``, a worker's ``cwd``, the
module of ``function``) are read from the file's directory, not the current directory, so an
installation works the same from a shell and under systemd.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
import sys
import tomllib
import zoneinfo
from typing import Any, Callable

from .config import OPTIONS, WorkerConfig, check_name, suggest
from .core import WorkerOrchestrator
from .errors import ConfigError

__all__ = ["Installation", "WorkerEntry", "load"]

#: Keys of the ``[orchestrator]`` table.
ORCHESTRATOR_KEYS = ("max_concurrent", "state_path", "timezone", "history_limit", "http",
                     "http_token_file", "containment", "max_result_bytes", "control_socket",
                     "control_socket_group", "executor", "ray_address", "ray_runtime_env",
                     "admit_by_memory", "memory_reserve_mb")

#: Keys a worker table may have besides the register_worker options: what it runs, and two
#: options the file passes on as they are.
WORKER_EXTRA_KEYS = ("function", "command", "run_at_start", "user")
WORKER_KEYS = tuple(dict.fromkeys((*OPTIONS, *WORKER_EXTRA_KEYS)))

#: Options where ``false`` stands for Python's ``None`` (TOML has no null): no timeout,
#: never auto-disable, no memory limit, no catch-up window.
_FALSE_IS_NONE = ("timeout_seconds", "max_consecutive_failures", "memory_limit_mb",
                  "pids_limit", "cpu_limit", "misfire_grace_seconds")

_FUNCTION_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


@dataclasses.dataclass(frozen=True)
class WorkerEntry:
    """One ``[workers.NAME]`` table, ready for ``register_worker``.

    ``function_reference`` is the ``"module:attr"`` text of the file, kept for messages.
    """

    name: str
    function: Callable[..., Any] | None
    function_reference: str | None
    command: list[str] | str | None
    options: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Installation:
    """A loaded file: what :meth:`build` needs to make a :class:`WorkerOrchestrator`.

    :param path: the file, as it was given (used in messages).
    :param orchestrator_options: keyword arguments of ``WorkerOrchestrator``; ``http`` and
        ``http_token`` appear only when the file sets them.
    :param workers: in the order of the file.
    """

    path: str
    orchestrator_options: dict[str, Any]
    workers: tuple[WorkerEntry, ...]

    @property
    def label(self) -> str:
        return self.path

    def build(self, **overrides: Any) -> WorkerOrchestrator:
        """A new orchestrator, not started, with every worker registered.

        :param overrides: ``WorkerOrchestrator`` keyword arguments that replace the file's
            (an ``executor`` or ``clock`` for tests, for example).
        :raises ConfigError: for an invalid value, a dependency cycle, or a
            ``depends_on``/``blocks`` name that is no worker of the file.
        """
        options = {**self.orchestrator_options, **overrides}
        try:
            orchestrator = WorkerOrchestrator(**options)
        except ConfigError as error:
            raise self._error(_orchestrator_message(str(error)), field=error.field) from None
        except TypeError as error:  # an option this version of WorkerOrchestrator lacks
            key = _unexpected_keyword(error)
            if key is None:
                raise
            raise self._error(f"[orchestrator] {key} is not supported by this version of "
                              f"orchestrator; remove it", field=key) from None
        configs: list[WorkerConfig] = []
        for entry in self.workers:
            try:
                configs.append(orchestrator.register_worker(
                    entry.name, entry.function, command=entry.command, **entry.options))
            except ConfigError as error:
                message = str(error)
                if error.field == "fn" and entry.function_reference is not None:
                    message = message.replace(
                        f"worker {entry.name!r}: fn ",
                        f"worker {entry.name!r}: function {entry.function_reference!r} ", 1)
                raise self._error(message, worker=entry.name, field=error.field) from None
        names = [config.name for config in configs]
        for config in configs:
            for field in ("depends_on", "blocks"):
                for other in getattr(config, field):
                    if other not in names:
                        raise self._error(
                            f"worker {config.name!r}: {field} names {other!r}, which is not "
                            f"a worker in this file{suggest(other, names)}; add "
                            f"[workers.{_toml_key(other)}] or remove it from {field}",
                            worker=config.name, field=field)
        return orchestrator

    def _error(self, message: str, *, worker: str | None = None,
               field: str | None = None) -> ConfigError:
        return ConfigError(_one_line(f"{self.label}: {message}"), worker=worker, field=field)


def load(path: str | os.PathLike) -> Installation:
    """Read and check an installation's TOML file and import its worker functions.

    The file's directory is put on ``sys.path`` (first) when a worker names a function, so
    ``function = "jobs:fetch"`` finds ``jobs.py`` beside the file; worker processes inherit
    that path.

    :raises ConfigError: one line naming the file, the worker and the key, also when the
        file cannot be read or is not valid TOML.
    """
    path = os.fspath(path)
    label = path

    def fail(message: str, worker: str | None = None, field: str | None = None):
        raise ConfigError(_one_line(f"{label}: {message}"), worker=worker, field=field)

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        fail(f"cannot be read: {error.strerror or error}")
    except tomllib.TOMLDecodeError as error:
        fail(_toml_problem(str(error)))
    except UnicodeDecodeError as error:
        fail(f"invalid TOML: the file is not UTF-8 text ({error.reason} at byte "
             f"{error.start})")
    directory = os.path.dirname(os.path.abspath(path))

    for key in document:
        if key not in ("orchestrator", "workers"):
            fail(f"{_show_key(key)} is not a table of this file"
                 f"{suggest(key, ('orchestrator', 'workers'))}; it has [orchestrator] and "
                 f"[workers.NAME] tables", field=key)

    settings = document.get("orchestrator", {})
    if not isinstance(settings, dict):
        fail("orchestrator must be a table: [orchestrator]", field="orchestrator")
    orchestrator_options = _orchestrator_options(settings, directory, fail, path)

    tables = document.get("workers", {})
    if not isinstance(tables, dict):
        fail("workers must hold one table per worker, like [workers.fetch]", field="workers")
    if not tables:
        fail("no workers; add a table per worker, like [workers.fetch] with "
             "command = [\"...\"] or function = \"module:function\"", field="workers")
    workers = tuple(_worker_entry(name, table, directory, fail)
                    for name, table in tables.items())
    return Installation(path, orchestrator_options, workers)


# -- the [orchestrator] table -----------------------------------------------------------------

def _orchestrator_options(settings: dict, directory: str, fail,
                          source: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in ORCHESTRATOR_KEYS:
            fail(f"[orchestrator] {_show_key(key)} is not an orchestrator option"
                 f"{suggest(key, ORCHESTRATOR_KEYS)}", field=key)
        problem = _value_problem(value)
        if problem:
            fail(f"[orchestrator] {key} {problem}", field=key)
    for key in ("max_concurrent", "history_limit", "containment", "max_result_bytes",
                "admit_by_memory", "memory_reserve_mb"):
        if key in settings:
            options[key] = settings[key]
    if "timezone" in settings:
        options["timezone"] = _checked_timezone(settings["timezone"], "[orchestrator]", fail)
    if "state_path" in settings:
        value = settings["state_path"]
        if not isinstance(value, str) or not value:
            fail(f"[orchestrator] state_path must be the path of the SQLite state file, got "
                 f"{value!r}", field="state_path")
        options["state_path"] = os.path.join(directory, value)
    if "http" in settings:
        options["http"] = settings["http"]
    # The control socket: what `orchestrator status|trigger|logs FILE` talk to. Beside the
    # state file by default, else beside this file: every installation has its own.
    value = settings.get("control_socket")
    if value is False:
        options["control_socket"] = False
    elif value is not None:
        if not isinstance(value, str) or not value:
            fail(f"[orchestrator] control_socket must be a path, or false for none, got "
                 f"{value!r}", field="control_socket")
        options["control_socket"] = os.path.join(directory, value)
    elif "state_path" in options:
        options["control_socket"] = options["state_path"] + ".sock"
    else:
        options["control_socket"] = os.path.join(directory, os.path.basename(source) + ".sock")
    if "control_socket_group" in settings:
        options["control_socket_group"] = settings["control_socket_group"]
    if "http_token_file" in settings:
        value = settings["http_token_file"]
        if not isinstance(value, str) or not value:
            fail(f"[orchestrator] http_token_file must be the path of a file holding the "
                 f"token, got {value!r}", field="http_token_file")
        token_path = os.path.join(directory, value)
        try:
            with open(token_path, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            fail(f"[orchestrator] http_token_file {value!r} cannot be read: "
                 f"{error.strerror or error}", field="http_token_file")
        except UnicodeDecodeError:
            fail(f"[orchestrator] http_token_file {value!r} is not UTF-8 text",
                 field="http_token_file")
        if not token:
            fail(f"[orchestrator] http_token_file {value!r} is empty; write the token into "
                 f"it", field="http_token_file")
        if not token.isascii() or not token.isprintable() or " " in token:
            fail(f"[orchestrator] http_token_file {value!r} must hold printable ASCII without "
                 f"spaces (it is sent in an HTTP header)", field="http_token_file")
        options["http_token"] = token
    _executor_options(settings, options, directory, fail)
    return options


def _executor_options(settings: dict, options: dict, directory: str, fail) -> None:
    """``executor = "ray"`` (with ``ray_address`` and ``ray_runtime_env``): attempts run on a
    Ray cluster; ``"process"`` (the default): on this machine."""
    kind = settings.get("executor", "process")
    if kind not in ("process", "ray"):
        fail(f"[orchestrator] executor must be \"process\" or \"ray\", got {kind!r}"
             f"{suggest(str(kind), ('process', 'ray'))}", field="executor")
    if kind == "process":
        for key in ("ray_address", "ray_runtime_env"):
            if key in settings:
                fail(f"[orchestrator] {key} applies only with executor = \"ray\"; add that "
                     f"or remove {key}", field=key)
        return
    address = settings.get("ray_address")
    if address is not None and (not isinstance(address, str) or not address):
        fail(f"[orchestrator] ray_address must be the head's \"HOST:PORT\" or \"auto\", "
             f"got {address!r}", field="ray_address")
    runtime_env = settings.get("ray_runtime_env")
    if runtime_env is not None:
        if not isinstance(runtime_env, dict):
            fail(f"[orchestrator] ray_runtime_env must be a table, like {{ working_dir = "
                 f"\".\" }}, got {runtime_env!r}", field="ray_runtime_env")
        runtime_env = dict(runtime_env)
        if isinstance(runtime_env.get("working_dir"), str):  # relative to this file
            runtime_env["working_dir"] = os.path.join(directory, runtime_env["working_dir"])
    from .execution.ray import RayExecutor

    kwargs = {} if runtime_env is None else {"runtime_env": runtime_env}
    options["executor"] = RayExecutor(address, containment=options.pop("containment", "auto"),
                                      **kwargs)


# -- [workers.NAME] tables --------------------------------------------------------------------

def _worker_entry(name: Any, table: Any, directory: str, fail) -> WorkerEntry:
    who = f"worker {name!r}"
    try:
        check_name(name, worker=name)
    except ConfigError as error:
        fail(str(error), worker=name, field="name")
    if not isinstance(table, dict):
        fail(f"{who} must be a table, like [workers.{_toml_key(name)}] with its options "
             f"below it, got {table!r}", worker=name)
    for key, value in table.items():
        if key not in WORKER_KEYS:
            if key == "fn":
                problem = "is not a worker option; write function = \"module:function\""
            else:
                problem = f"is not a worker option{suggest(key, WORKER_KEYS)}"
            fail(f"{who}: {_show_key(key)} {problem}", worker=name, field=key)
        problem = _value_problem(value)
        if problem:
            fail(f"{who}: {key} {problem}", worker=name, field=key)

    has_function, has_command = "function" in table, "command" in table
    if has_function == has_command:
        fail(f"{who}: give exactly one of function = \"module:function\" or command = "
             f"[\"program\", \"arg\"]; got {'both' if has_function else 'neither'}",
             worker=name, field="function" if has_function else "command")

    options = {key: value for key, value in table.items()
               if key not in ("function", "command")}
    for key in _FALSE_IS_NONE:
        if options.get(key) is False:
            options[key] = None
    if "timezone" in options:
        options["timezone"] = _checked_timezone(options["timezone"], f"{who}:", fail,
                                                worker=name)
    cwd = options.get("cwd")
    if isinstance(cwd, str) and cwd:
        options["cwd"] = os.path.join(directory, cwd)

    function = reference = None
    if has_function:
        reference = table["function"]
        function = _import_function(reference, directory, who, lambda message: fail(
            message, worker=name, field="function"))
    return WorkerEntry(name=name, function=function, function_reference=reference,
                       command=table.get("command"), options=options)


def _import_function(reference: Any, directory: str, who: str, fail) -> Callable[..., Any]:
    if not isinstance(reference, str):
        fail(f"{who}: function must be \"module:function\" text, got {reference!r}")
    module_name, colon, attribute = reference.partition(":")
    if not colon or not _FUNCTION_REFERENCE.fullmatch(module_name) \
            or not _FUNCTION_REFERENCE.fullmatch(attribute):
        fail(f"{who}: function {reference!r} must look like \"module:function\" (for "
             f"example \"jobs:fetch\" for fetch() in jobs.py beside this file)")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        target = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # the user's module may raise anything
        fail(f"{who}: function {reference!r} cannot be imported: {_error_text(error)}")
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            hint = suggest(part, [n for n in dir(target) if not n.startswith("_")])
            fail(f"{who}: function {reference!r} cannot be imported: {module_name!r} has "
                 f"no attribute {part!r}{hint}")
    if not callable(target):
        fail(f"{who}: function {reference!r} is a {type(target).__name__}, not a function")
    return target


def _value_problem(value: Any) -> str | None:
    """What no option accepts anywhere in a value: NUL characters (no path, argument or name
    can hold one) and infinite or NaN numbers.
    """
    if isinstance(value, str) and "\0" in value:
        return f"must not contain a NUL character, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, list):
        return next(filter(None, map(_value_problem, value)), None)
    if isinstance(value, dict):
        return next(filter(None, map(_value_problem, [*value, *value.values()])), None)
    return None


def _checked_timezone(value: Any, who: str, fail, worker: str | None = None):
    """Refuse zone names zoneinfo cannot load, whatever it raises for them."""
    if isinstance(value, str) and value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            hint = suggest(value, zoneinfo.available_timezones())
            fail(f"{who} timezone {value!r} is not a known IANA time zone{hint}",
                 worker=worker, field="timezone")
    return value


# -- messages ---------------------------------------------------------------------------------

def _toml_problem(message: str) -> str:
    match = _TOML_POSITION.search(message)
    text = message[:match.start()] if match else message
    if match and match.group(1):
        return f"line {match.group(1)}: invalid TOML: {text} (column {match.group(2)})"
    if match:
        return f"invalid TOML at the end of the file: {text}"
    return f"invalid TOML: {text}"


def _orchestrator_message(message: str) -> str:
    prefix = "orchestrator: "
    return f"[orchestrator] {message[len(prefix):]}" if message.startswith(prefix) else message


def _unexpected_keyword(error: TypeError) -> str | None:
    match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    return match.group(1) if match else None


def _error_text(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _show_key(key: Any) -> str:
    return key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)


def _toml_key(name: Any) -> str:
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else '"' + text.replace(
        "\\", "\\\\").replace('"', '\\"') + '"'


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
