"""``admit_by_memory``: a run starts only if its worker's learned peak (the largest tree peak
of its last 5 successful runs) fits in the memory the machine can still give, less the
reserve; it waits otherwise, saying so, others pass it, and it starts when nothing else
runs."""

from __future__ import annotations

import functools

import pytest

import stall_workers as workers
from conftest import wait_for
from orchestrator import WorkerOrchestrator
from orchestrator.errors import ConfigError
from orchestrator.memory import available_bytes, human

pytestmark = pytest.mark.timeout(180)

MB = 1024 * 1024


def test_a_run_that_does_not_fit_waits_for_the_other_and_others_pass_it(tmp_path):
    # A reserve beyond any machine's memory: no learned peak fits while anything runs.
    reserve_mb = 1024 ** 3
    state = tmp_path / "state.db"
    orch = WorkerOrchestrator(state_path=state, admit_by_memory=True,
                              memory_reserve_mb=reserve_mb)
    orch.register_worker("big", workers.allocate_300_mb, execution_mode="triggered",
                         max_retries=0)
    orch.register_worker("hold", functools.partial(workers.wait_for_go, str(tmp_path)),
                         execution_mode="triggered")
    orch.register_worker("small", workers.compute, execution_mode="triggered")
    try:
        orch.start()
        assert orch.trigger_worker("big", wait=True, timeout=60)  # no history: admitted
        learned = orch.get_status()["worker_states"]["big"]["learned_peak_bytes"]
        assert learned >= 300 * MB

        orch.trigger_worker("hold")
        wait_for(lambda: orch.get_status()["worker_states"]["hold"]["pid"], timeout=60,
                 message="hold running")
        orch.trigger_worker("big")
        reason = wait_for(
            lambda: (text := orch.get_status()["worker_states"]["big"]["reason"])
            .startswith("waiting for memory: its runs peak at ") and text,
            timeout=60, message="big waiting for memory")
        assert reason.endswith(", 0 MiB available") and " MiB" in reason
        assert orch.trigger_worker("small", wait=True, timeout=60)  # passes the waiting one
        assert len(orch.history("big")) == 2 and orch.history("big")[0].started_at is None

        (tmp_path / "go").touch()  # the other ends: nothing else runs, so big starts
        wait_for(lambda: orch.history("big")[0].outcome is not None, timeout=60,
                 message="big ran")
        assert orch.history("big")[0].outcome.value == "succeeded"
        assert orch.history("big")[0].started_at >= orch.history("hold")[0].ended_at
    finally:
        orch.stop()

    again = WorkerOrchestrator(state_path=state, admit_by_memory=True)
    again.register_worker("big", workers.allocate_300_mb, execution_mode="triggered")
    try:
        again.start()  # what it learned is read back from the state file
        assert again.get_status()["worker_states"]["big"]["learned_peak_bytes"] >= 300 * MB
    finally:
        again.stop()


def test_available_memory_is_the_kernels_estimate_at_most():
    with open("/proc/meminfo") as meminfo:
        kernel = next(int(line.split()[1]) * 1024 for line in meminfo
                      if line.startswith("MemAvailable:"))
    assert 0 < available_bytes() <= kernel + 256 * MB  # it moves between the two reads
    assert (human(300 * MB), human(1288490188)) == ("300 MiB", "1.2 GiB")


@pytest.mark.parametrize("options, message", [
    ({"admit_by_memory": "yes"}, "admit_by_memory must be true or false"),
    ({"memory_reserve_mb": -1}, "memory_reserve_mb must be a number of megabytes"),
    ({"memory_reserve_mb": True}, "memory_reserve_mb must be a number of megabytes"),
])
def test_bad_memory_options_are_one_line(options, message):
    with pytest.raises(ConfigError) as caught:
        WorkerOrchestrator(**options)
    assert str(caught.value).startswith(f"orchestrator: {message}")
