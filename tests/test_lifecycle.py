"""Lifecycle, listeners and logging through the public API (inline executor, real threads)."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from loguru import logger

from orchestrator import ConfigError, NotRunningError, OrchestratorError, WorkerOrchestrator
from orchestrator.clock import SystemClock
from orchestrator.execution.inline import InlineExecutor

from conftest import wait_for


def ok():
    return "ok"


def boom():
    raise KeyError("missing")


def make(**kwargs) -> WorkerOrchestrator:
    return WorkerOrchestrator(executor=InlineExecutor(), **kwargs)


def test_start_twice_is_harmless_and_a_stopped_orchestrator_does_not_restart():
    orch = make()
    orch.register_worker("w", ok, execution_mode="triggered")
    orch.start()
    orch.start()
    assert orch.get_status()["state"] == "running"
    orch.stop()
    assert orch.get_status()["state"] == "stopped"
    with pytest.raises(OrchestratorError, match="create a new WorkerOrchestrator"):
        orch.start()


def test_trigger_and_wait_needs_a_running_orchestrator():
    orch = make()
    orch.register_worker("w", ok, execution_mode="triggered")
    with pytest.raises(NotRunningError, match="call start\\(\\) first"):
        orch.trigger_worker("w", wait=True)
    assert orch.trigger_worker("w") is True  # queued; runs once started
    with orch:
        assert orch.trigger_worker("w", wait=True, timeout=30) is True
    assert [r.cause.value for r in orch.history("w")] == ["manual", "manual"]


def test_trigger_of_a_disabled_worker_returns_false():
    with make() as orch:
        orch.register_worker("w", ok, execution_mode="triggered")
        orch.disable_worker("w")
        assert orch.trigger_worker("w") is False
        assert orch.get_worker("w").is_enabled is False


def test_listeners_get_every_event_and_a_failing_one_is_contained():
    orch = make()
    seen, statuses = [], []

    def bad_listener(event):
        raise RuntimeError("listener bug")

    def status_reader(event):  # calling back into the orchestrator must not deadlock
        if event.kind == "succeeded":
            statuses.append(orch.get_status()["worker_states"]["w"]["last_outcome"])

    orch.add_listener(bad_listener)
    orch.add_listener(seen.append)
    orch.add_listener(status_reader)
    orch.register_worker("w", ok, execution_mode="triggered")
    orch.register_worker("f", boom, execution_mode="triggered", max_retries=1,
                         retry_delay_seconds=0)
    with orch:
        assert orch.trigger_worker("w", wait=True, timeout=30)
        assert not orch.trigger_worker("f", wait=True, timeout=30)
    kinds = [(e.kind, e.worker) for e in seen if e.kind != "due"]
    assert kinds == [("started", "w"), ("succeeded", "w"), ("started", "f"), ("failed", "f"),
                     ("retried", "f"), ("started", "f"), ("failed", "f")]
    assert statuses == ["succeeded"]
    first, last = [e for e in seen if e.kind == "failed"]
    assert (first.attempt, first.final) == (1, False)  # a retry follows
    assert (last.attempt, last.final) == (2, True)
    assert "KeyError: 'missing'" in last.message


def test_logging_is_quiet_until_enabled():
    lines = []
    sink = logger.add(lines.append, level="DEBUG", format="{name} {message}")
    try:
        with make() as orch:
            orch.register_worker("w", ok, execution_mode="triggered")
            orch.trigger_worker("w", wait=True, timeout=30)
        assert not [line for line in lines if line.startswith("orchestrator")]
        logger.enable("orchestrator")
        with make() as orch:
            orch.register_worker("w", ok, execution_mode="triggered")
            orch.trigger_worker("w", wait=True, timeout=30)
    finally:
        logger.disable("orchestrator")
        logger.remove(sink)
    messages = [line.split(" ", 1)[1].strip() for line in lines]
    assert any(m.startswith("started w run=") and "attempt=1" in m for m in messages)
    assert any(m.startswith("succeeded w run=") and "duration=" in m for m in messages)
    assert "orchestrator stopped" in messages


DECORATED = make()


@DECORATED.worker(execution_mode="triggered")
def tidy_up():
    return 1


def test_decorator_registers_module_level_functions_under_their_name():
    assert DECORATED.get_status()["worker_names"] == ["tidy-up"]
    assert DECORATED.get_worker("tidy-up").function is tidy_up
    assert tidy_up() == 1


def test_decorator_refuses_nested_functions():
    orch = make()
    with pytest.raises(ConfigError, match="worker 'inner': fn is a nested function"):
        @orch.worker(execution_mode="triggered")
        def inner():
            return 1


def test_stop_before_start_leaves_it_usable():
    orch = make()
    orch.register_worker("w", ok, execution_mode="triggered")
    orch.stop()
    orch.start()
    assert orch.trigger_worker("w", wait=True, timeout=30)
    orch.stop()


def test_listeners_cannot_deadlock_the_dispatcher():
    orch = make()
    errors = []

    def impatient(event):
        if event.kind == "succeeded":
            for call in (lambda: orch.trigger_worker("w", wait=True),
                         lambda: orch.stop()):
                try:
                    call()
                except OrchestratorError as error:
                    errors.append(str(error))

    orch.add_listener(impatient)
    orch.register_worker("w", ok, execution_mode="triggered")
    with orch:
        assert orch.trigger_worker("w", wait=True, timeout=30)
    assert len(errors) == 2
    assert "use wait=False there" in errors[0]
    assert "call it from another thread" in errors[1]


def test_nothing_becomes_due_once_stopped():
    orch = make()
    orch.register_worker("w", ok, execution_mode="triggered")
    orch.start()
    orch.stop()
    assert orch.trigger_worker("w") is False
    assert orch.get_status()["pending_workers"] == [] and orch.history("w") == []


class SteppedClock(SystemClock):
    """The system clock, an hour ahead from ``step_at`` (epoch seconds) on: a step of the
    wall clock as the orchestrator sees it, without moving the machine's clock."""

    step_at = float("inf")

    def now(self):
        real = super().now()
        return real + timedelta(hours=1) if real.timestamp() >= self.step_at else real


@pytest.mark.skipif(os.geteuid() != 0, reason="telling the kernel the clock was set needs root")
def test_a_step_of_the_wall_clock_wakes_the_dispatcher_at_once():
    """An hourly worker: the dispatcher sleeps until its due time, with no wake-up on the way.
    When the wall clock is set past that time, the run starts at once, not an hour later."""
    clock = SteppedClock()
    orch = make(clock=clock)
    orch.register_worker("hourly", ok, interval_seconds=3600)
    succeeded = []
    second_run = threading.Event()

    def listen(event):  # no polling of the orchestrator: each call would wake it
        if event.kind == "succeeded":
            succeeded.append(event)
            if len(succeeded) == 2:
                second_run.set()

    orch.add_listener(listen)
    orch.start()
    try:
        wait_for(lambda: succeeded, timeout=20)  # the run at start
        clock.step_at = time.time() + 1.0  # the dispatcher is asleep by then
        wait_for(lambda: time.time() >= clock.step_at + 0.1, timeout=20)
        now = time.clock_gettime(time.CLOCK_REALTIME)
        try:  # tell the kernel the clock was set (a step of a few microseconds back)
            time.clock_settime(time.CLOCK_REALTIME, now)
        except PermissionError:
            pytest.skip("this machine does not let root set the clock (no CAP_SYS_TIME)")
        assert second_run.wait(timeout=20), "the run due before the step had not started"
        assert [r.outcome.value for r in orch.history("hourly")] == ["succeeded"] * 2
    finally:
        orch.stop()
