"""Bad input, fuzzed: random option values through ``register_worker``, and random TOML
documents through ``orchestrator check`` and through the loader itself. Whatever comes in,
the only way out besides success is a :class:`ConfigError` (``check``: exit 1) with one line
that says what is wrong."""

from __future__ import annotations

import contextlib
import io
import math
import random
import sys
import tempfile
from datetime import date, datetime, time, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from orchestrator import ConfigError, WorkerOrchestrator
from orchestrator.cli import main
from orchestrator.config import OPTIONS
from orchestrator.execution.inline import InlineExecutor
from orchestrator.tomlfile import ORCHESTRATOR_KEYS, WORKER_KEYS, load

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def job():
    return "done"


def job_with_config(config):
    return config.name


NAMES = st.sampled_from(["fetch", "process", "cleanup"]) | st.text(max_size=12)
WORDS = st.sampled_from(["skip", "queue", "replace", "scheduled", "triggered",
                         "continuous", "low", "normal", "high", "critical", "UTC",
                         "Europe/Berlin", "Mars/Olympus", "* * * * *", "0 0 31 2 *",
                         "@reboot", "@hourly", "*/0 * * * *", "60 * * * *", "1-5",
                         "fetch", "process", "cleanup", "root", "nobody", "/", "/nonexistent",
                         "echo hi", "", " "])
NUMBERS = (st.integers(min_value=-2 ** 70, max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, -1, 0.0005, 0.001, 1e-300, 3.2e8, 2 ** 63, 1e308]))
SCALARS = st.none() | st.booleans() | NUMBERS | WORDS | st.text(max_size=20) | st.binary(
    max_size=4)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | WORDS, inner, max_size=3)
                      | st.tuples(inner, inner), max_leaves=8)
def chance(draw, odds: int) -> bool:
    """True once in ``odds + 1`` draws. Hypothesis leans its choices towards the simplest
    branch; a generator seeded by one draw does not, and a failure still replays."""
    return random.Random(draw(st.integers(0, 2 ** 64))).random() * (odds + 1) < 1


@st.composite
def mostly(draw, good, other, odds: int = 4):
    """``good`` ``odds`` times in ``odds + 1``, ``other`` otherwise."""
    return draw(other if chance(draw, odds) else good)


OPTION_KEYS = mostly(st.sampled_from(OPTIONS),
                     st.sampled_from(["interval", "retries", "function", "state", "run_id"]),
                     odds=12)
SECONDS = st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10 ** 6)
#: Values each option accepts, so that a draw gets past the first check and meets the others.
PLAUSIBLE = {
    "execution_mode": st.sampled_from(["scheduled", "triggered", "continuous"]),
    "interval_seconds": SECONDS, "timeout_seconds": st.none() | SECONDS,
    "kill_grace_seconds": SECONDS, "retry_delay_seconds": SECONDS,
    "misfire_grace_seconds": st.none() | SECONDS, "max_retries": st.integers(0, 1000),
    "max_consecutive_failures": st.none() | st.integers(1, 100),
    "priority": st.sampled_from(["low", "normal", "high", "critical", 0, 1, 2, 3]),
    "depends_on": st.lists(st.sampled_from(["fetch", "process", "cleanup"]), max_size=2),
    "blocks": st.lists(st.sampled_from(["fetch", "process", "cleanup"]), max_size=2),
    "cron": st.sampled_from(["* * * * *", "30 2 * * *", "0 0 29 2 *", "@hourly", "@daily",
                             "*/15 9-17 * * 1-5", "0 0 1,15 * 0", "5 4 * jan,jul sun",
                             "0 0 31 4 *"]),
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York",
                                 "Australia/Lord_Howe", "America/Santiago"]),
    "shell": st.booleans(), "kill_leftovers": st.booleans(), "run_at_start": st.booleans(),
    "env": st.dictionaries(st.sampled_from(["A", "PATH", "LANG"]), st.text(max_size=5),
                           max_size=2),
    "cwd": st.sampled_from(["/", "/tmp"]), "memory_limit_mb": st.none() | st.integers(1, 4096),
    "overlap": st.sampled_from(["skip", "queue", "replace"]),
    "on_failure": st.sampled_from([["true"], "echo failed", None]),
    "user": st.none() | st.sampled_from(["root", "nobody"]),
}
GOOD_NAMES = st.sampled_from(["fetch", "process", "cleanup"])


@st.composite
def option_sets(draw) -> dict:
    """Options, each plausible or (sometimes) anything at all."""
    options = {}
    for key in draw(st.lists(OPTION_KEYS, unique=True, max_size=6)):
        wild = key not in PLAUSIBLE or chance(draw, 8)
        options[key] = draw(VALUES if wild else PLAUSIBLE[key])
    return options


def _is_one_line(error: BaseException) -> bool:
    text = str(error)
    return bool(text.strip()) and "\n" not in text and "Traceback" not in text


@FUZZ
@given(workers=st.lists(st.tuples(mostly(GOOD_NAMES, NAMES, odds=8),
                                  st.sampled_from(["fn", "fn", "fn-config", "command",
                                                   "both", "neither", "junk"]),
                                  st.sampled_from([["true"], "echo hi"]) | VALUES,
                                  option_sets()),
                        min_size=1, max_size=4),
       settings_=mostly(st.just({}), st.dictionaries(
           st.sampled_from(["max_concurrent", "timezone", "history_limit", "http",
                            "http_token"]), VALUES, max_size=2), odds=6))
@example(workers=[("w", "fn", None, {"interval_seconds": float("nan")})], settings_={})
@example(workers=[("w", "fn", None, {"depends_on": "w"})], settings_={})
@example(workers=[("a", "fn", None, {"depends_on": ["b"]}),
                  ("b", "fn", None, {"depends_on": ["a"]})], settings_={})
def test_register_worker_with_random_values_raises_only_config_error(workers, settings_):
    try:
        orch = WorkerOrchestrator(executor=InlineExecutor(), **settings_)
    except ConfigError as error:
        assert _is_one_line(error), repr(str(error))
        return
    for name, what, command, options in workers:
        runs = {"fn": dict(fn=job), "fn-config": dict(fn=job_with_config),
                "command": dict(command=command), "both": dict(fn=job, command=command),
                "neither": {}, "junk": dict(fn=command)}[what]
        try:
            config = orch.register_worker(name, **runs, **options)
        except ConfigError as error:
            assert _is_one_line(error), repr(str(error))
            event(f"refused: {getattr(error, 'field', None)}")
            continue
        event("registered")
        assert config.name == name
    try:  # the whole graph: cycles, unknown names, dependencies on continuous workers
        # One minute across Europe's spring jump (01:00 UTC): an interval may be 1 ms.
        plan = orch.plan(start=datetime(2026, 3, 29, 0, 59, 30, tzinfo=timezone.utc),
                         hours=1 / 60)
    except ConfigError as error:
        assert _is_one_line(error), repr(str(error))
    else:
        assert all(isinstance(when, datetime) for when, _ in plan)


# -- the TOML file ----------------------------------------------------------------------------

def _toml_string(text: str) -> str:
    escaped = "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7f
                      else c for c in text)
    return f'"{escaped}"'


def _toml_value(value) -> str:
    """``value`` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(key)} = {_toml_value(item)}"
                               for key, item in value.items()) + "}"
    return _toml_string(str(value))


GOOD_FUNCTIONS = st.sampled_from(["fuzzjobs:job", "fuzzjobs:job_with_config"])
FUNCTIONS = st.sampled_from(["fuzzjobs:job", "fuzzjobs:job_with_config", "fuzzjobs:missing",
                             "fuzzjobs", "fuzzjobs:", ":job", "fuzzjobs:job:job",
                             "nosuchmodule_zz:job", "fuzzjobs.job", "fuzzjobs:CONSTANT",
                             "fuzzjobs:broken_import", "1fuzz:job", ""])
TOML_SCALARS = (st.booleans() | st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1)
                | st.floats() | WORDS | st.text(max_size=16)
                | st.datetimes(timezones=st.none() | st.just(timezone.utc)) | st.dates()
                | st.times())
TOML_VALUES = st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=2),
                           max_leaves=6)


PLAUSIBLE_ORCHESTRATOR = {
    "max_concurrent": st.integers(1, 64), "history_limit": st.integers(1, 10 ** 6),
    "timezone": PLAUSIBLE["timezone"], "state_path": st.sampled_from(["state.db", "x/y.db"]),
    "http": st.sampled_from([False, "127.0.0.1:8765", ":0", "localhost:99999", "[::1]:80"]),
    "http_token_file": st.just("token"),
}


@st.composite
def toml_documents(draw) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append("[orchestrator]")
        keys = mostly(st.sampled_from(ORCHESTRATOR_KEYS), st.text(min_size=1, max_size=8), 12)
        for key in draw(st.lists(keys, unique=True, max_size=3)):
            value = draw(mostly(PLAUSIBLE_ORCHESTRATOR.get(key, TOML_VALUES), TOML_VALUES))
            if key == "http_token_file" and isinstance(value, str):
                value = draw(st.sampled_from(["token", "missing-token", "", "."]))
            lines.append(f"{_toml_string(key)} = {_toml_value(value)}")
    names = mostly(GOOD_NAMES, st.text(max_size=10), odds=12)
    for name in draw(st.lists(names, unique=True, min_size=int(not chance(draw, 8)),
                              max_size=4)):
        lines.append(f"[workers.{_toml_string(name)}]")
        keys = mostly(st.sampled_from(WORKER_KEYS), st.text(min_size=1, max_size=8), 12)
        table = {}
        for key in draw(st.lists(keys, unique=True, max_size=6)):
            plausible = PLAUSIBLE.get(key)
            value = draw(TOML_VALUES if plausible is None or chance(draw, 8)
                         else plausible)
            table[key] = False if value is None else value  # TOML has no null
        if isinstance(table.get("function"), str):
            table["function"] = draw(FUNCTIONS)  # never import a module a draw spelled
        runs = random.Random(draw(st.integers(0, 2 ** 64))).random()
        if runs < 0.5:
            table["function"] = draw(mostly(GOOD_FUNCTIONS, FUNCTIONS))
        elif runs < 0.95:
            table["command"] = draw(mostly(st.sampled_from(["true", ["echo", "hi"]]),
                                           st.sampled_from([[], "", [""], "'unclosed"])))
        for key, value in table.items():
            lines.append(f"{_toml_string(key)} = {_toml_value(value)}")
    if chance(draw, 7):
        lines.append(draw(st.sampled_from(["[workers]", "workers = 1", "[[workers.x]]",
                                           "[orchestrator.x]", "x = ", "= 1", "[", "\x00"])))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def installation_directory(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "fuzzjobs.py").write_text(
        "CONSTANT = 1\n\ndef job():\n    return 1\n\n\ndef job_with_config(config):\n"
        "    return config.name\n\n\ndef broken_import():\n    import nosuchmodule_zz\n\n\n"
        "fetch_data = process_data = cleanup = job\n")
    (directory / "token").write_text("s3cret-token\n")
    return directory


def _check(directory: Path, text: str | bytes) -> tuple[int, str, str]:
    path = directory / "jobs.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", str(path)])
    return code, out.getvalue(), err.getvalue()


def _assert_checked(code: int, out: str, err: str) -> None:
    event("check: no problem found" if code == 0 else
          "check: " + err.split(":")[-1].split("(")[0].strip()[:40])
    if code == 0:
        assert out and all(line.startswith("orchestrator: warning: ")
                           for line in err.splitlines()), (out, err)
        return
    assert code == 1, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrator: ") and not out, err
    assert "Traceback" not in err


@FUZZ
@given(document=toml_documents())
def test_check_with_random_toml_documents_gives_one_line_or_success(installation_directory,
                                                                    document):
    _assert_checked(*_check(installation_directory, document))


@FUZZ
@given(document=st.text(max_size=200) | st.binary(max_size=200))
def test_check_with_random_text_gives_one_line(installation_directory, document):
    _assert_checked(*_check(installation_directory, document))


EXAMPLE = (ROOT / "examples" / "jobs.toml").read_bytes()


@FUZZ
@given(seed=st.integers(min_value=0, max_value=2 ** 32), cuts=st.integers(1, 8))
def test_check_with_a_mangled_example_file_gives_one_line_or_success(installation_directory,
                                                                     seed, cuts):
    """The example installation, with random bytes deleted, repeated or swapped in; the
    functions it names are swapped for harmless ones so no mangled name gets imported."""
    rng = random.Random(seed)
    text = bytearray(EXAMPLE.replace(b'"jobs:', b'"fuzzjobs:'))
    for _ in range(cuts):
        at = rng.randrange(len(text))
        action = rng.randrange(3)
        if action == 0:
            del text[at:at + rng.randrange(1, 12)]
        elif action == 1:
            text[at:at] = text[rng.randrange(len(text)):][:rng.randrange(1, 24)]
        else:
            text[at] = rng.choice(b'"=[]{},.#\n \\\'0aZ\x00\xff')
    document = bytes(text)
    if b'"jobs' in document or b"'jobs" in document:
        document = document.replace(b"jobs", b"fuzzjobs")
    _assert_checked(*_check(installation_directory, document))


# -- the loader itself: load() and build(), with the orchestrator's own validation --------------

_scalars = st.one_of(
    st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["high", "triggered", "0 3 * * *", "@daily",
                                           "Europe/Berlin", "America", "a", "b", "true",
                                           "skip", "sh -c 'x", "jobs:fetch", "os:getcwd",
                                           "nope_module_xyz:f", "os:sep", "root", ""]),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
_keys_mostly_valid = st.one_of(st.sampled_from(WORKER_KEYS), st.sampled_from(WORKER_KEYS),
                               st.sampled_from(WORKER_KEYS), st.text(min_size=1, max_size=10))
# Mostly a valid worker with one or two random options, so the values reach register_worker.
_worker_tables = st.builds(
    lambda base, extra: {**base, **extra},
    st.sampled_from([{"command": "true"}, {"command": ["echo", "x"]},
                     {"function": "os:getcwd"}, {}]),
    st.dictionaries(_keys_mostly_valid, _values, max_size=2))
_documents = st.fixed_dictionaries({}, optional={
    "orchestrator": st.dictionaries(
        st.one_of(st.sampled_from(ORCHESTRATOR_KEYS), st.text(min_size=1, max_size=8)),
        _values, max_size=2),
    "workers": st.dictionaries(st.one_of(st.sampled_from(["a", "b", "c"]), st.text(max_size=6)),
                               _worker_tables, min_size=1, max_size=3),
})


def _document_text(document: dict) -> str:
    lines = []
    for table, body in document.items():
        if table == "workers":
            for name, options in body.items():
                lines.append(f"[workers.{_toml_string(name)}]")
                lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in options.items()]
        else:
            lines.append(f"[{table}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _load_and_build(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load(path).build(executor=InlineExecutor())
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(f"{path}: "), message
        finally:
            if directory in sys.path:
                sys.path.remove(directory)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_fuzz_structured_documents_raise_only_config_errors(document):
    _load_and_build(_document_text(document))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["[workers.a]", "[orchestrator]", "command = \"true\"", "cron = '@daily'",
                     "depends_on = [\"a\"]", "[workers.b]", "blocks = [\"a\"]", "x = ",
                     "[[workers]]", "interval_seconds = 1e400", "timezone = \"UTC\""]),
    st.text(max_size=20)), max_size=8))
def test_fuzz_toml_ish_text_raises_only_config_errors(lines):
    _load_and_build("\n".join(lines) + "\n")
