"""S3: bad input is refused early with one sentence naming the worker, the field and the fix."""

from __future__ import annotations

import functools
import threading

import pytest

from orchestrator import (ConfigError, DependencyCycleError, JobPriority, UnknownWorkerError,
                          WorkerExecutionMode, WorkerOrchestrator)
from orchestrator.execution.inline import InlineExecutor


def job():
    return 1


def job_with_config(config):
    return config.name


def job_with_two(a, b):
    return a + b


class Holder:
    def __init__(self):
        self.lock = threading.Lock()  # cannot be pickled

    def method(self):
        return 1


@pytest.fixture
def orch():
    o = WorkerOrchestrator(executor=InlineExecutor())
    yield o
    o.stop()


def refused(orch, *args, match: str, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as info:
        orch.register_worker(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_duplicate_name(orch):
    orch.register_worker("a", job)
    error = refused(orch, "a", job, match="'a': name is already registered")
    assert error.worker == "a" and error.field == "name"


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "ümlaut", None, 3])
def test_bad_names(orch, name):
    refused(orch, name, job, match="name")


@pytest.mark.parametrize("field,value,match", [
    ("interval_seconds", 0, "interval_seconds must be greater than 0"),
    ("interval_seconds", -5, "interval_seconds must be greater than 0"),
    ("interval_seconds", "60", "interval_seconds must be a number of seconds"),
    ("timeout_seconds", 0, "timeout_seconds must be greater than 0"),
    ("max_retries", -1, "max_retries must be 0 or more"),
    ("max_retries", 1.5, "max_retries must be a whole number"),
    ("priority", "urgent", "priority must be one of low, normal, high, critical"),
    ("priority", "hihg", "did you mean 'high'"),
    ("execution_mode", "sometimes", "execution_mode must be one of"),
    ("overlap", "wait", "overlap must be one of skip, queue, replace"),
    ("cron", "61 * * * *", "cron '61 \\* \\* \\* \\*' is invalid: minute"),
    ("timezone", "Europe/Berlinn", "did you mean 'Europe/Berlin'"),
    ("timezone", "America", "is not a known IANA time zone"),
    ("timezone", "x" * 5000, "is not a known IANA time zone"),
    ("interval_seconds", float("inf"), "must be a finite number"),
    ("interval_seconds", 1e15, "must be a finite number of seconds up to"),
    ("timeout_seconds", float("nan"), "must be a finite number"),
    ("user", "a\0b", "is not a user of this machine"),
    ("depends_on", "fetch", "depends_on must be a list of worker names"),
    ("blocks", ["ok", "bad name"], "blocks 'bad name' contains"),
    ("kill_grace_seconds", -1, "kill_grace_seconds must be 0 or more"),
    ("memory_limit_mb", 0, "memory_limit_mb must be a number of megabytes above 0 and at most"),
    ("memory_limit_mb", "1G", "memory_limit_mb must be a number of megabytes above 0"),
    ("pids_limit", 0, "pids_limit must be a whole number of processes from 1 to 4194304, "
                      "got 0"),
    ("pids_limit", float("nan"), "pids_limit must be a whole number of processes"),
    ("pids_limit", True, "pids_limit must be a whole number of processes"),
    ("pids_limit", "10", "pids_limit must be a whole number of processes"),
    ("cpu_limit", -1, "cpu_limit must be a number of cores above 0 and at most 4096, got -1"),
    ("cpu_limit", float("nan"), "cpu_limit must be a number of cores above 0"),
    ("cpu_limit", False, "cpu_limit must be a number of cores above 0"),
    ("cpu_limit", "half", "cpu_limit must be a number of cores above 0"),
    ("max_consecutive_failures", 0, "max_consecutive_failures must be at least 1"),
    ("cwd", "/nonexistent/dir", "is not an existing directory"),
    ("env", {"A": 1}, "env must be a dict of strings to strings"),
])
def test_bad_option_values(orch, field, value, match):
    error = refused(orch, "w", job, match=match, **{field: value})
    assert error.worker == "w" and error.field == field
    assert str(error).startswith("worker 'w': ")


def test_unknown_option_suggests_the_closest(orch):
    error = refused(orch, "w", job, interval_second=5,
                    match="interval_second is not a worker option \\(did you mean "
                          "'interval_seconds'\\?\\)")
    assert error.field == "interval_second"


def test_fn_and_command_exactly_one(orch):
    error = refused(orch, "w", match="give exactly one of them, a function or .* got neither")
    assert str(error) == ("worker 'w': fn and command: give exactly one of them, a function or "
                          "command=[...]; got neither")
    refused(orch, "w", job, command=["true"], match="got both")


def test_cron_and_interval_exclude_each_other(orch):
    refused(orch, "w", job, cron="* * * * *", interval_seconds=5,
            match="cron and interval_seconds exclude each other")


def test_schedule_options_on_unscheduled_workers(orch):
    refused(orch, "w", job, execution_mode="triggered", interval_seconds=5,
            match="interval_seconds has no effect for a triggered worker")


def test_self_dependency_and_self_block(orch):
    refused(orch, "w", job, depends_on=["w"], match="depends_on names the worker itself")
    refused(orch, "w", job, blocks=["w"], match="blocks names the worker itself")


def test_cycle_is_named_and_leaves_graph_unchanged(orch):
    orch.register_worker("a", job, depends_on=["b"])
    orch.register_worker("b", job, depends_on=["c"])
    with pytest.raises(DependencyCycleError) as info:
        orch.register_worker("c", job, depends_on=["a"])
    assert "c -> a -> b -> c" in str(info.value)
    assert info.value.cycle == ["c", "a", "b", "c"]
    orch.register_worker("c", job)  # the refused registration left no trace
    orch.start()
    assert set(orch.get_status()["worker_names"]) == {"a", "b", "c"}


def test_unknown_names_are_refused_at_start():
    orch = WorkerOrchestrator(executor=InlineExecutor())
    orch.register_worker("a", job, depends_on=["later"])
    orch.register_worker("later", job)  # registered after being referred to: fine
    orch.register_worker("b", job, blocks=["ghost"])
    with pytest.raises(UnknownWorkerError, match="worker 'b': blocks names 'ghost', which is "
                                                 "not registered"):
        orch.start()
    orch.stop()


def test_registering_while_running_is_validated_the_same_way(orch):
    orch.register_worker("a", job, execution_mode="triggered")
    orch.start()
    config = orch.register_worker("b", job, execution_mode="triggered", depends_on=["a"])
    assert config.depends_on == ("a",)
    refused(orch, "b", job, match="name is already registered")
    refused(orch, "c", job, interval_second=3, match="did you mean 'interval_seconds'")
    # While running, a new worker may only refer to registered ones, so it cannot close a
    # cycle; an unknown name is refused at once and leaves the running graph unchanged.
    with pytest.raises(UnknownWorkerError, match="register 'nobody' first"):
        orch.register_worker("d", job, depends_on=["nobody"])
    orch.register_worker("nobody", job, execution_mode="triggered")
    assert orch.get_status()["worker_names"] == ["a", "b", "nobody"]
    assert orch.get_status()["worker_states"]["b"]["reason"].startswith("runs after a succeeds")


@pytest.mark.parametrize("fn,match", [
    (lambda: 1, "is a lambda"),
    (functools.partial(lambda: 1), "cannot be sent to a worker process"),
    (Holder().method, "cannot be sent to a worker process"),
    (job_with_two, "takes 2 required positional parameters"),
    ("job", "must be a callable"),
])
def test_functions_that_cannot_run_in_another_process(orch, fn, match):
    refused(orch, "w", fn, match=match)


def test_nested_function_refused(orch):
    def inner():
        return 1
    refused(orch, "w", inner, match="is a nested function")


def test_enum_values_as_strings_and_falsy_values(orch):
    config = orch.register_worker("w", job, priority="low", execution_mode="TRIGGERED",
                                  max_retries=0)
    assert config.priority is JobPriority.LOW
    assert config.execution_mode is WorkerExecutionMode.TRIGGERED
    assert config.max_retries == 0
    config = orch.register_worker("v", job_with_config, priority=JobPriority.LOW)
    assert config.priority is JobPriority.LOW and config.passes_config


def test_defaults_as_in_the_original_design(orch):
    config = orch.register_worker("w", job)
    assert (config.interval_seconds, config.timeout_seconds, config.max_retries,
            config.priority, config.max_consecutive_failures) == (300, 60, 3,
                                                                  JobPriority.NORMAL, 5)
    assert WorkerOrchestrator(executor=InlineExecutor())._dispatcher.max_concurrent == 5


def test_command_forms(orch):
    assert orch.register_worker("a", command="tar czf '/tmp/a b.tgz' /srv").command == (
        "tar", "czf", "/tmp/a b.tgz", "/srv")
    assert orch.register_worker("b", command="echo $HOME | wc", shell=True).command == \
        "echo $HOME | wc"
    refused(orch, "c", command="echo 'unbalanced", match="cannot be split like a shell line")
    refused(orch, "d", command=[], match="must be a non-empty list of strings")
    refused(orch, "e", job, shell=True, match="shell applies only to command workers")


def test_orchestrator_options():
    with pytest.raises(ConfigError, match="max_concurrent must be a whole number of at least 1"):
        WorkerOrchestrator(max_concurrent=0)
    with pytest.raises(ConfigError, match="timezone 'Mars/Base' is not a known IANA time zone"):
        WorkerOrchestrator(timezone="Mars/Base")


def test_unknown_worker_in_calls(orch):
    orch.register_worker("fetch-data", job)
    with pytest.raises(UnknownWorkerError, match="no worker named 'fetch-dta' \\(did you mean "
                                                 "'fetch-data'\\?\\)"):
        orch.trigger_worker("fetch-dta")
    with pytest.raises(UnknownWorkerError):
        orch.enable_worker("nope")


def test_user_option(orch):
    import getpass
    import os

    assert orch.register_worker("mine", job, user=getpass.getuser()).user is None
    refused(orch, "ghost", job, user="no-such-user-here", match="is not a user of this machine")
    if os.geteuid() == 0:
        assert orch.register_worker("other", job, user="nobody").user == "nobody"
    else:
        refused(orch, "other", job, user="root", match="differs from the current user")


def test_reboot_nickname_points_at_run_at_start(orch):
    refused(orch, "w", job, cron="@reboot", match="use execution_mode='triggered' with "
                                                  "run_at_start=True")


def test_a_dependency_on_a_continuous_worker_is_refused_at_start():
    orch = WorkerOrchestrator(executor=InlineExecutor())
    orch.register_worker("consume", job, execution_mode="triggered", depends_on=["feed"])
    orch.register_worker("feed", job, execution_mode="continuous")
    with pytest.raises(ConfigError, match="worker 'consume': depends_on names 'feed', a "
                                          "continuous worker"):
        orch.start()
    orch.stop()


@pytest.mark.parametrize("field,value,match", [
    ("env", {"A=B": "x"}, "env has an invalid entry 'A=B'"),
    ("env", {"A": "x\0y"}, "env has an invalid entry 'A'"),
    ("interval_seconds", 1e-9, "must be at least 0.001"),
    ("max_retries", 10**6, "max_retries must be at most 1000"),
])
def test_more_bad_values(orch, field, value, match):
    refused(orch, "w", job, match=match, **{field: value})


def test_nul_in_a_command_is_refused(orch):
    refused(orch, "w", command=["echo", "a\0b"], match="contains a NUL character")


@pytest.mark.parametrize("name", [123, None, ["a"]])
def test_calls_with_a_name_that_is_not_a_string(orch, name):
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        orch.trigger_worker(name)


def test_containment_must_be_one_of_the_three():
    with pytest.raises(ConfigError, match="containment must be one of 'auto', 'cgroup', "
                                          "'process-group', got 'jail'"):
        WorkerOrchestrator(containment="jail")
    with pytest.raises(ConfigError, match="containment applies to the default process "
                                          "executor"):
        WorkerOrchestrator(executor=InlineExecutor(), containment="cgroup")
