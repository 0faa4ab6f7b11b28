"""The TOML file of an installation (S11): what it builds, and one line for every mistake.

Random files are in ``test_fuzz_config.py``."""

from __future__ import annotations

import getpass
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator import ConfigError, JobPriority, WorkerExecutionMode
from orchestrator.execution.inline import InlineExecutor
from orchestrator.tomlfile import load


def write(directory: Path, text: str, name: str = "jobs.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def module_name(tmp_path: Path) -> str:
    """A module name no other test uses: imported modules stay in sys.modules."""
    return "jobs_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)


@pytest.fixture
def jobs_module(tmp_path):
    name = module_name(tmp_path)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        def fetch():
            return 1

        def process(config):
            return config.name

        NOT_CALLABLE = 3
    """))
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_builds_every_worker_with_its_options(tmp_path, jobs_module):
    (tmp_path / "work").mkdir()
    (tmp_path / "token").write_text("  s3cret\n")
    path = write(tmp_path, f"""
        [orchestrator]
        max_concurrent = 2
        timezone = "Europe/Berlin"
        history_limit = 50
        http = "127.0.0.1:0"
        http_token_file = "token"

        [workers.fetch]
        function = "{jobs_module}:fetch"
        interval_seconds = 60
        priority = "high"
        timeout_seconds = false
        max_consecutive_failures = false

        [workers.process]
        function = "{jobs_module}:process"
        execution_mode = "triggered"
        depends_on = ["fetch"]
        run_at_start = true

        [workers.backup]
        command = ["tar", "czf", "b.tgz", "."]
        cron = "0 3 * * *"
        cwd = "work"
        blocks = ["process"]
        env = {{ A = "1" }}
        user = "{getpass.getuser()}"
    """)
    installation = load(path)
    assert installation.orchestrator_options == {
        "max_concurrent": 2, "history_limit": 50, "timezone": "Europe/Berlin",
        "http": "127.0.0.1:0", "http_token": "s3cret",
        "control_socket": str(tmp_path / "jobs.toml.sock")}  # beside the file: no state_path
    orch = installation.build(executor=InlineExecutor())
    fetch, process, backup = (orch.get_worker(n) for n in ("fetch", "process", "backup"))
    assert fetch.function() == 1 and fetch.priority is JobPriority.HIGH
    assert fetch.interval_seconds == 60 and fetch.timeout_seconds is None
    assert fetch.max_consecutive_failures is None
    assert process.passes_config and process.execution_mode is WorkerExecutionMode.TRIGGERED
    assert process.depends_on == ("fetch",) and process.run_at_start
    assert backup.command == ("tar", "czf", "b.tgz", ".") and backup.cron == "0 3 * * *"
    assert backup.cwd == str(tmp_path / "work") and backup.env == {"A": "1"}
    assert orch.get_status()["worker_names"] == ["fetch", "process", "backup"]
    plan = orch.plan(datetime(2026, 12, 1, tzinfo=timezone.utc), hours=3)
    assert ("backup" in [name for _, name in plan]) and plan[0][1] == "fetch"


def test_http_keys_are_passed_only_when_present(tmp_path):
    path = write(tmp_path, """
        [workers.a]
        command = "true"
    """)
    socket = str(tmp_path / "jobs.toml.sock")
    assert load(path).orchestrator_options == {"control_socket": socket}
    path = write(tmp_path, """
        [orchestrator]
        http = false
        [workers.a]
        command = "true"
    """)
    assert load(path).orchestrator_options == {"http": False, "control_socket": socket}
    load(path).build()


def test_the_control_socket_is_beside_the_state_file_or_off(tmp_path):
    path = write(tmp_path, """
        [orchestrator]
        state_path = "var/state.db"
        [workers.a]
        command = "true"
    """)
    assert load(path).orchestrator_options["control_socket"] == str(tmp_path / "var" /
                                                                    "state.db.sock")
    for value, expected in (('"ctl.sock"', str(tmp_path / "ctl.sock")), ("false", False)):
        path = write(tmp_path, f"""
            [orchestrator]
            control_socket = {value}
            [workers.a]
            command = "true"
        """)
        assert load(path).orchestrator_options["control_socket"] == expected
    path = write(tmp_path, """
        [orchestrator]
        control_socket = 3
        [workers.a]
        command = "true"
    """)
    with pytest.raises(ConfigError, match=r"control_socket must be a path, or false for none, "
                                          r"got 3"):
        load(path)


def test_relative_paths_are_read_from_the_file_directory(tmp_path):
    path = write(tmp_path, """
        [orchestrator]
        state_path = "state.db"
        [workers.a]
        command = "true"
    """)
    assert load(path).orchestrator_options["state_path"] == str(tmp_path / "state.db")


BAD_FILES = [
    ("typo'd key", """
        [workers.fetch]
        command = "true"
        interval_second = 5
     """, "worker 'fetch': interval_second is not a worker option (did you mean "
          "'interval_seconds'?)"),
    ("cycle", """
        [workers.a]
        command = "true"
        depends_on = ["c"]
        [workers.b]
        command = "true"
        depends_on = ["a"]
        [workers.c]
        command = "true"
        depends_on = ["b"]
     """, "worker 'c': depends_on would create a dependency cycle: c -> b -> a -> c; remove "
          "one of these dependencies"),
    ("unknown dependency", """
        [workers.fetch-data]
        command = "true"
        [workers.process]
        command = "true"
        depends_on = ["fetch-dat"]
     """, "worker 'process': depends_on names 'fetch-dat', which is not a worker in this "
          "file (did you mean 'fetch-data'?); add [workers.fetch-dat] or remove it from "
          "depends_on"),
    ("unknown exclusion", """
        [workers.cleanup]
        command = "true"
        blocks = ["nowhere"]
     """, "worker 'cleanup': blocks names 'nowhere', which is not a worker in this file; "
          "add [workers.nowhere] or remove it from blocks"),
    ("bad cron", """
        [workers.nightly]
        command = "true"
        cron = "0 25 * * *"
     """, "worker 'nightly': cron '0 25 * * *' is invalid: hour field '25' is out of range "
          "0-23"),
    ("bad timezone", """
        [workers.nightly]
        command = "true"
        cron = "0 2 * * *"
        timezone = "Europe/Berln"
     """, "worker 'nightly': timezone 'Europe/Berln' is not a known IANA time zone (did you "
          "mean 'Europe/Berlin'?)"),
    ("a zone directory", """
        [workers.nightly]
        command = "true"
        timezone = "America"
     """, "worker 'nightly': timezone 'America' is not a known IANA time zone (did you mean "
          "'America/Nuuk'?)"),
    ("unimportable function", """
        [workers.x]
        function = "mypkg.jobs:fetch"
     """, "worker 'x': function 'mypkg.jobs:fetch' cannot be imported: ModuleNotFoundError: "
          "No module named 'mypkg'"),
    ("malformed function", """
        [workers.x]
        function = "fetch"
     """, "worker 'x': function 'fetch' must look like \"module:function\" (for example "
          "\"jobs:fetch\" for fetch() in jobs.py beside this file)"),
    ("invalid TOML", """
        [workers.x]
        command = "true"
        timeout_seconds =
     """, "line 4: invalid TOML: Invalid value (column 18)"),
    ("orchestrator typo", """
        [orchestrator]
        max_concurent = 3
        [workers.x]
        command = "true"
     """, "[orchestrator] max_concurent is not an orchestrator option (did you mean "
          "'max_concurrent'?)"),
    ("orchestrator value", """
        [orchestrator]
        max_concurrent = 0
        [workers.x]
        command = "true"
     """, "[orchestrator] max_concurrent must be a whole number of at least 1, got 0"),
    ("orchestrator timezone", """
        [orchestrator]
        timezone = "Mars/Olympus"
        [workers.x]
        command = "true"
     """, "[orchestrator] timezone 'Mars/Olympus' is not a known IANA time zone"),
    ("bad http", """
        [orchestrator]
        http = "localhost"
        [workers.x]
        command = "true"
     """, "[orchestrator] http must be 'host:port' like '127.0.0.1:8765' (port 0 for any "
          "free port), got 'localhost'"),
    ("missing token file", """
        [orchestrator]
        http_token_file = "no-token"
        [workers.x]
        command = "true"
     """, "[orchestrator] http_token_file 'no-token' cannot be read: No such file or "
          "directory"),
    ("both function and command", """
        [workers.x]
        command = "true"
        function = "a:b"
     """, "worker 'x': give exactly one of function = \"module:function\" or command = "
          "[\"program\", \"arg\"]; got both"),
    ("neither", """
        [workers.x]
        cron = "@daily"
     """, "worker 'x': give exactly one of function = \"module:function\" or command = "
          "[\"program\", \"arg\"]; got neither"),
    ("fn key", """
        [workers.x]
        fn = "a:b"
     """, "worker 'x': fn is not a worker option; write function = \"module:function\""),
    ("bad name", """
        [workers."a b"]
        command = "true"
     """, "worker 'a b': name 'a b' contains ' '; use only letters, digits, '_', '.' and '-'"),
    ("worker not a table", """
        [workers]
        x = 3
     """, "worker 'x' must be a table, like [workers.x] with its options below it, got 3"),
    ("no workers", """
        [orchestrator]
        max_concurrent = 3
     """, "no workers; add a table per worker, like [workers.fetch] with command = [\"...\"] "
          "or function = \"module:function\""),
    ("unknown table", """
        [worker.x]
        command = "true"
     """, "worker is not a table of this file (did you mean 'workers'?); it has "
          "[orchestrator] and [workers.NAME] tables"),
    ("wrong value type", """
        [workers.x]
        command = "true"
        priority = "hihg"
     """, "worker 'x': priority must be one of low, normal, high, critical, got 'hihg' (did "
          "you mean 'high'?)"),
    ("infinite number", """
        [workers.x]
        command = "true"
        interval_seconds = inf
     """, "worker 'x': interval_seconds must be a finite number, got inf"),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_every_mistake_is_one_line_naming_file_worker_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path).build()
    assert str(info.value) == f"{path}: {expected}"


def test_function_errors_name_the_function(tmp_path, jobs_module):
    cases = {f"{jobs_module}:fetc": f"'{jobs_module}' has no attribute 'fetc' (did you mean "
                                    f"'fetch'?)",
             f"{jobs_module}:NOT_CALLABLE": "is a int, not a function"}
    for reference, expected in cases.items():
        path = write(tmp_path, f"""
            [workers.x]
            function = "{reference}"
        """)
        with pytest.raises(ConfigError, match="^") as info:
            load(path)
        assert str(info.value).startswith(f"{path}: worker 'x': function '{reference}' ")
        assert str(info.value).endswith(expected)


def test_an_import_that_raises_is_one_line(tmp_path):
    name = module_name(tmp_path) + "_broken"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('needs\\nthe network')\n")
    path = write(tmp_path, f"""
        [workers.x]
        function = "{name}:f"
    """)
    try:
        with pytest.raises(ConfigError) as info:
            load(path)
    finally:
        sys.path.remove(str(tmp_path))
    assert str(info.value) == (f"{path}: worker 'x': function '{name}:f' cannot be imported: "
                               f"RuntimeError: needs\\nthe network")


def test_a_missing_or_binary_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: cannot be read: No such file"):
        load(tmp_path / "nope.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"a = \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"binary.toml: invalid TOML: the file is not UTF-8"):
        load(binary)


def test_a_lambda_refused_by_register_worker_is_named_by_its_reference(tmp_path):
    name = module_name(tmp_path) + "_lambda"
    (tmp_path / f"{name}.py").write_text("job = lambda: 1\n")
    path = write(tmp_path, f"""
        [workers.x]
        function = "{name}:job"
    """)
    try:
        with pytest.raises(ConfigError) as info:
            load(path).build()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    assert str(info.value).startswith(f"{path}: worker 'x': function '{name}:job' is a lambda")
