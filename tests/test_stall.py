"""``stall_seconds``: a run whose whole tree uses no CPU and writes no output for that long is
killed like a timeout and recorded ``stalled``; CPU time or output is progress."""

from __future__ import annotations

import pytest

import stall_workers as workers
from orchestrator import WorkerOrchestrator
from orchestrator.config import build_config
from orchestrator.errors import ConfigError
from orchestrator.execution.process import ProcessExecutor

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["cgroup", "process-group"])
def orch(request):
    orchestrator = WorkerOrchestrator(executor=ProcessExecutor(containment=request.param))
    yield orchestrator
    orchestrator.stop()


def test_a_silent_idle_run_ends_stalled_long_before_its_timeout(orch):
    events = []
    orch.add_listener(events.append)
    orch.register_worker("hung", workers.wait_silently, execution_mode="triggered",
                         stall_seconds=2, timeout_seconds=60, max_retries=0)
    orch.start()
    assert orch.trigger_worker("hung", wait=True, timeout=60) is False
    [record] = orch.history("hung")
    assert record.outcome.value == "stalled"
    assert record.error == "stalled: no CPU or output for 2 s"
    assert 2 <= record.duration_seconds < 5
    assert [event.kind for event in events if event.worker == "hung"][-1] == "stalled"
    state = orch.get_status()["worker_states"]["hung"]
    assert state["last_outcome"] == "stalled" and state["failures"] == 1


def test_a_run_that_computes_or_writes_is_not_stalled(orch):
    orch.register_worker("busy", workers.compute, execution_mode="triggered",
                         stall_seconds=2, max_retries=0)
    orch.register_worker("chatty", command="for i in 1 2 3 4 5; do echo $i; sleep 1; done",
                         shell=True, execution_mode="triggered", stall_seconds=2,
                         max_retries=0)
    orch.start()
    assert orch.trigger_worker("busy", wait=True, timeout=60)
    assert orch.trigger_worker("chatty", wait=True, timeout=60)
    assert orch.history("chatty")[0].stdout_tail == "1\n2\n3\n4\n5\n"


@pytest.mark.parametrize("value, message", [
    (0, "must be greater than 0"), (-3, "must be greater than 0"),
    (True, "must be a number of seconds"), ("60", "must be a number of seconds"),
    (float("inf"), "stall_seconds"),
])
def test_bad_stall_seconds_is_one_line(value, message):
    with pytest.raises(ConfigError) as caught:
        build_config("hung", workers.wait_silently, None, {"stall_seconds": value})
    text = str(caught.value)
    assert text.startswith("worker 'hung': stall_seconds ") and message in text
    assert "\n" not in text
