"""Turn a crontab into the TOML of an installation (``orchestrator from-crontab``).

::

    crontab text --lines--> comment / blank      -> kept as a TOML comment
                            NAME=value           -> env of the lines after it (SHELL: the
                                                    shell; CRON_TZ, TZ: their timezone;
                                                    MAILTO: a note to use on_failure)
                            schedule [user] cmd  -> [workers.NAME] (@reboot: run at start)
                            anything else        -> a comment saying why it was left out
                 --tomllib--> checked to parse
                 ---return--> Conversion(toml: a header, [orchestrator], then the lines above;
                                         problems: a message per line left out or changed)

The ``[orchestrator]`` table keeps state and history in ``state.db`` beside the file, so a
restart loses nothing, and shows the control settings, the optional ones commented out.

Commands of a crontab are shell lines, so each becomes ``command = "..."`` with
``shell = true`` (or ``[SHELL, "-c", "..."]`` for a ``SHELL`` other than ``/bin/sh``). The
worker options that differ from cron's behaviour are written out: no timeout, no retry,
never disabled, and processes a command leaves in the background are left alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import tomllib
import zoneinfo
from typing import NamedTuple

from .config import NAME_PATTERN
from .cron import parse_crontab

__all__ = ["Conversion", "convert_crontab"]

DEFAULT_SHELL = "/bin/sh"

_ENVIRONMENT_LINE = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([^\s=]+))\s*=(.*)""")
_SKIPPED_PROGRAMS = {"cd", "test", "[", "true", "false", ":", "sleep", "exit", "export",
                     "umask", "set", "ulimit", "source", "."}
# Programs that run what their first argument names: the argument names the worker.
_RUNNERS = {"run-parts", "sh", "bash", "dash", "zsh", "python", "python3", "perl", "php",
            "ruby", "node", "nice", "ionice", "nohup", "sudo", "env", "exec", "time",
            "timeout", "flock", "chronic", "setsid", "su", "runuser", "xargs", "command",
            "cronic"}
_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "|&", "(", ")", "{", "}", "!"}
_REDIRECTION = re.compile(r"\d*(>>?|<<?|>&|<&|&>>?|<>|>\|)")
_SCRIPT_SUFFIX = re.compile(r"\.(sh|bash|py|pl|php|rb|js)$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CRON_ONLY_VARIABLES = {"MAILTO", "MAILFROM", "CONTENT_TYPE", "CONTENT_TRANSFER_ENCODING",
                        "RANDOM_DELAY", "CRON_CORRECT_MAIL_HEADER"}
_SHOWN_LENGTH = 80  # of a crontab line or command quoted in a message

# State beside the file (relative paths are read from the file's directory). The rest are
# commented out, so the reader sees how the instance is reached: the control socket as its
# default says, HTTP not at all unless set.
_ORCHESTRATOR_TABLE = [
    "[orchestrator]",
    "# State and run history, in a SQLite file beside this one: a restart loses nothing.",
    'state_path = "state.db"',
    "# The command line steers the running instance through this socket (the default).",
    '# control_socket = "state.db.sock"',
    "# Off unless set: status, metrics and a dashboard over HTTP.",
    '# http = "127.0.0.1:8765"',
    "# The token that trigger, enable and disable over HTTP need, in a file beside this one.",
    '# http_token_file = "token"',
]


class Conversion(NamedTuple):
    """What :func:`convert_crontab` made of a crontab.

    :param toml: the installation's TOML text, with a comment for every crontab line.
    :param problems: one line each, for the command line to print on stderr: every crontab
        line that was left out, or whose command changed because of ``%`` or ``@reboot``
        (``SOURCE line N: 'LINE': what was done``), then one if no line became a worker.
    """

    toml: str
    problems: list[str]


@dataclasses.dataclass
class _Context:
    """What the environment lines seen so far set for the lines after them."""

    env: dict[str, str] = dataclasses.field(default_factory=dict)
    shell: str = DEFAULT_SHELL
    timezone: str | None = None


@dataclasses.dataclass(frozen=True)
class _Line:
    """One crontab line, and where messages about it go."""

    source: str
    number: int
    text: str  # without the blanks around it
    problems: list[str]  # the conversion's, shared by all its lines

    def report(self, what: str) -> None:
        self.problems.append(_printable(f"{self.source} line {self.number}: "
                                        f"{_shown(self.text)}: {what}"))

    def left_out(self, reason: str, shown: str | None = None) -> list[str]:
        """The comment for a line that has no equivalent, reported with ``reason``."""
        self.report(f"left out: {reason}")
        return [f"# line {self.number}: cannot be expressed: "
                f"{_comment(self.text if shown is None else shown)}: {_comment(reason)}"]


def convert_crontab(text: str, *, system: bool = False,
                    source: str = "crontab") -> Conversion:
    """The TOML of an installation doing what the crontab ``text`` does, and what the reader
    must know about it.

    :param system: the /etc/crontab and /etc/cron.d format, with a user before the command.
    :param source: the crontab's name, for the header comment and the messages.
    :returns: the TOML, which :func:`orchestrator.tomlfile.load` reads when at least one line
        became a worker (every line that has no equivalent is a comment saying so), and the
        problems, in the order of the lines.
    """
    out = [f"# Converted from {_comment(source)} by orchestrator from-crontab.",
           "# Each worker keeps cron's behaviour: no timeout (timeout_seconds = false), no retry,",
           "# never disabled after failures, and background processes it leaves are not killed.",
           "# Unlike cron, a run that is still going when the next one is due is not started",
           "# twice: that due time is skipped (overlap = \"skip\").",
           "# Commands get the orchestrator's environment plus the env below, not cron's",
           "# minimal one.", "", *_ORCHESTRATOR_TABLE, ""]
    context = _Context()
    names: set[str] = set()
    problems: list[str] = []
    # Lines end at "\n" only, as for cron (str.splitlines also ends them at "\f", "\x1c",
    # "\u2028"...), so the line numbers of the messages are the editor's.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = _Line(source, number, raw.strip(), problems)
        if not line.text:
            if out[-1] != "":
                out.append("")
            continue
        if line.text.startswith("#"):
            out.append(_comment(line.text))
            continue
        environment = _ENVIRONMENT_LINE.fullmatch(raw)
        if environment and not line.text.startswith("@"):
            name = next(group for group in environment.groups()[:3] if group is not None)
            out.extend(_environment(name, _unquote(environment.group(4)), context, line))
            continue
        out.extend(_job(line, system, context, names))
    while out[-1] == "":
        out.pop()
    if not names:
        out += ["", "# No line of the crontab became a worker: add a [workers.NAME] table, "
                    "since a file", "# without workers does not load."]
        problems.append(_printable(
            f"{source}: nothing could be converted: no line became a worker, so the output "
            f"is only the [orchestrator] table; add a [workers.NAME] table, since "
            f"orchestrator check, plan and run refuse a file without workers"))
    result = "\n".join(out) + "\n"
    tomllib.loads(result)  # what is printed must parse; a failure here is a bug
    return Conversion(result, problems)


def _environment(name: str, value: str, context: _Context, line: _Line) -> list[str]:
    shown = f"{name}={value}"
    number = line.number
    if name == "SHELL":
        context.shell = value or DEFAULT_SHELL
        return [f"# line {number}: {_comment(shown)}: the shell of the commands below"]
    if name in ("CRON_TZ", "TZ"):
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            return line.left_out("not a known IANA time zone; the lines below keep the "
                                 "previous zone", shown)
        context.timezone = value
        if name == "TZ":
            context.env[name] = value
        return [f"# line {number}: {_comment(shown)}: the timezone of the lines below"]
    if name == "MAILTO" and not value:
        return [f"# line {number}: {_comment(shown)}: cron sends no mail, nor does the "
                f"orchestrator"]
    if name in _CRON_ONLY_VARIABLES:
        hint = (" to be told about failures, give a worker on_failure = \"mail -s 'job failed' "
                f"{value}\" (it gets ORCHESTRATOR_WORKER and ORCHESTRATOR_ERROR)"
                if name == "MAILTO" else "")
        return line.left_out(f"no equivalent;{hint}", shown)
    context.env[name] = value
    return [f"# line {number}: {_comment(shown)}: in the env of the workers below"]


def _job(line: _Line, system: bool, context: _Context, names: set[str]) -> list[str]:
    text = line.text
    note = [f"# line {line.number}: {_comment(text)}"]
    fields = text.split(None, 1 if text.startswith("@") else 5)
    schedule_fields = 1 if text.startswith("@") else 5
    if system:
        if len(fields) > schedule_fields:
            user_and_rest = fields[schedule_fields].split(None, 1)
            fields = fields[:schedule_fields] + user_and_rest
        needed = schedule_fields + 2
    else:
        needed = schedule_fields + 1
    if len(fields) < needed:
        what = "a schedule, a user and a command" if system else "a schedule and a command"
        return line.left_out(f"expected {what}")
    schedule = " ".join(fields[:schedule_fields])
    user = fields[schedule_fields] if system else None

    reboot = schedule.lower() == "@reboot"
    if not reboot:
        try:
            parse_crontab(schedule)
        except ValueError as error:
            return line.left_out(str(error))
    command, stdin = _split_percent(fields[-1])
    if not command.strip():
        return line.left_out("the command is empty")
    name = _unique(_name_for(command, user), names)
    if stdin is not None:
        note.append("# the text after % goes to the command's standard input, as cron does")
        given = f"{_shown(stdin)} as its" if stdin else "an empty"
        line.report(f"an unescaped % ends the command, as under cron: the worker runs "
                    f"{_shown(command)} with {given} standard input; write \\% where a "
                    f"literal % is meant")
        command = _with_stdin(command, stdin)
    if reboot:
        note.append("# runs each time the orchestrator starts, where cron runs it at boot")
        line.report("became a worker with run_at_start = true: it runs each time the "
                    "orchestrator starts, not once per boot")

    lines = [*note, f"[workers.{_key(name)}]"]
    if reboot:
        lines += ['execution_mode = "triggered"', "run_at_start = true"]
    else:
        lines.append(f"cron = {_string(schedule)}")
        if context.timezone:
            lines.append(f"timezone = {_string(context.timezone)}")
    if context.shell == DEFAULT_SHELL:
        lines += [f"command = {_string(command)}", "shell = true"]
    else:
        lines.append(f"command = [{_string(context.shell)}, \"-c\", {_string(command)}]")
    if user is not None:
        lines.append(f"user = {_string(user)}")
    if context.env:
        pairs = ", ".join(f"{_key(key)} = {_string(value)}" for key, value in context.env.items())
        lines.append(f"env = {{ {pairs} }}")
    lines += ["timeout_seconds = false", "max_retries = 0", "max_consecutive_failures = false",
              "kill_leftovers = false", ""]
    return lines


def _split_percent(command: str) -> tuple[str, str | None]:
    """The command and its standard input (None: no ``%``), as cron(8) splits them.

    In the command a backslash escapes the character after it: ``\\%`` is a literal ``%``
    (the backslash dropped), any other pair is kept as it is (so ``\\\\%`` still ends the
    command). The first unescaped ``%`` ends the command; in the rest, ``\\%`` is ``%`` and
    every other ``%`` a newline.
    """
    parts: list[str] = []
    index = 0
    while index < len(command):
        char = command[index]
        if char == "\\" and index + 1 < len(command):
            following = command[index + 1]
            parts.append(following if following == "%" else char + following)
            index += 2
            continue
        if char == "%":
            break
        parts.append(char)
        index += 1
    else:
        return "".join(parts), None
    stdin: list[str] = []
    rest = command[index + 1:]
    index = 0
    while index < len(rest):
        if rest.startswith("\\%", index):
            stdin.append("%")
            index += 2
            continue
        stdin.append("\n" if rest[index] == "%" else rest[index])
        index += 1
    return "".join(parts), "".join(stdin)


def _with_stdin(command: str, stdin: str) -> str:
    """A shell script that gives ``command`` the standard input ``stdin`` (as a here-document
    for the whole script, so every command of the line reads it, as under cron).
    """
    if not stdin:
        return f"exec </dev/null\n{command}"  # cron writes nothing then, not even a newline
    if not stdin.endswith("\n"):
        stdin += "\n"  # cron ends the input with a newline
    marker = "ORCHESTRATOR_STDIN"
    while marker in stdin.splitlines():
        marker += "_"
    return f"exec <<'{marker}'\n{stdin}{marker}\n{command}"


def _name_for(command: str, user: str | None) -> str:
    """A readable worker name from what the command runs."""
    word = _meaningful_word(command)
    word = _SCRIPT_SUFFIX.sub("", os.path.basename(word.rstrip("/"))) if word else ""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", word).strip("-.")[:40].strip("-.")
    return name or (f"{user}-job" if user else "job")


def _meaningful_word(command: str) -> str:
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = command.split()
    simple_commands: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in _OPERATORS or set(token) <= set("&|;()"):
            simple_commands.append([])
        elif _REDIRECTION.fullmatch(token):
            skip_next = True
        elif not simple_commands[-1] and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            continue  # an assignment before the program
        else:
            simple_commands[-1].append(token)
    for words in simple_commands:
        if words and os.path.basename(words[0]) not in _SKIPPED_PROGRAMS:
            return _what_runs(words)
    return ""


def _what_runs(words: list[str]) -> str:
    """The program, or for a runner (``env python3 -u job.py``) what it runs."""
    program = os.path.basename(words[0])
    if program not in _RUNNERS:
        return words[0]
    arguments = [word for word in words[1:]
                 if not word.startswith("-") and "=" not in word and not word.isdigit()]
    for index, word in enumerate(arguments):
        if os.path.basename(word) in _RUNNERS:
            return _what_runs(arguments[index:])
        if "/" in word or "." in word:  # a path: what runs, not an option's value
            return word
    return arguments[0] if arguments else program


def _unique(name: str, names: set[str]) -> str:
    candidate, number = name, 2
    while candidate in names:
        candidate = f"{name}-{number}"
        number += 1
    assert NAME_PATTERN.fullmatch(candidate)
    names.add(candidate)
    return candidate


def _unquote(value: str) -> str:
    """crontab(5): the value may be quoted (matching quotes) to keep outer blanks."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _string(value: str) -> str:
    """A TOML basic string."""
    escaped = []
    for char in value:
        if char == "\\":
            escaped.append("\\\\")
        elif char == '"':
            escaped.append('\\"')
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _comment(text: str) -> str:
    """``text`` made safe for one comment line (TOML refuses control characters there)."""
    return "".join(char if char == "\t" or (ord(char) >= 0x20 and ord(char) != 0x7F)
                   else " " for char in text)


def _printable(text: str) -> str:
    """``text`` made one plain line for a terminal: tabs and other control characters, and
    separators other than the space, become spaces."""
    return "".join(char if char.isprintable() else " " for char in text)


def _shown(text: str) -> str:
    """``text`` quoted for a message: newlines as ``\\n``, long text shortened."""
    text = _printable(text.replace("\n", "\\n"))
    if len(text) > _SHOWN_LENGTH:
        text = text[:_SHOWN_LENGTH - 3] + "..."
    return f"'{text}'"
