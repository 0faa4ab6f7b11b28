"""Admission rules (S5) and a run's life (S6), driven through a manual clock.

No processes here: attempts are held by a deferred inline executor and finished by the test,
so each scenario is exact and instant.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from harness import START, Harness


# -- S4: interval timing -----------------------------------------------------------------------

def test_interval_worker_is_due_at_start_then_every_interval_fixed_rate():
    h = Harness()
    h.add("tick", interval_seconds=60)
    h.start()
    assert h.running == ["tick"]
    h.advance(10)
    h.finish("tick")
    # start to start: the next run is due 60 s after the first was due, not after it ended
    assert h.status("tick")["next_run"] == (START + timedelta(seconds=60)).isoformat()
    h.advance(49.9)
    assert h.running == []
    h.advance(0.1)
    assert h.running == ["tick"]
    records = h.history("tick")
    assert [r.due_at for r in records] == [START + timedelta(seconds=60), START]


def test_dispatcher_sleeps_exactly_until_the_next_due_time():
    h = Harness()
    h.add("a", interval_seconds=30)
    h.add("b", interval_seconds=45)
    h.start()
    h.finish("a")
    h.finish("b")
    assert h.settle() == pytest.approx(30)
    h.advance(30)
    h.finish("a")
    assert h.settle() == pytest.approx(15)


def test_due_times_passed_while_behind_coalesce_into_one_run():
    h = Harness()
    h.add("tick", interval_seconds=10)
    h.start()
    h.finish("tick")
    h.advance(95)  # nine due times passed at once (a stalled machine)
    assert h.running == ["tick"]
    h.finish("tick")
    assert len(h.history("tick")) == 2
    assert h.status("tick")["next_run"] == (START + timedelta(seconds=100)).isoformat()


# -- S5.1: overlap --------------------------------------------------------------------------

def test_overlap_skip_records_skipped_due_times():
    h = Harness()
    h.add("slow", interval_seconds=10)  # overlap="skip" is the default
    h.start()
    h.advance(10)
    h.advance(10)
    assert h.running == ["slow"]
    outcomes = [r.outcome.value if r.outcome else None for r in h.history("slow")]
    assert outcomes == ["skipped", "skipped", None]
    skipped = h.history("slow")[0]
    assert skipped.started_at is None and skipped.due_at == START + timedelta(seconds=20)
    assert "still running" in skipped.error
    h.finish("slow")
    assert h.running == []


def test_overlap_queue_keeps_one_run_waiting_and_coalesces_further_due_times():
    h = Harness()
    h.add("slow", interval_seconds=10, overlap="queue")
    h.start()
    h.advance(10)
    h.advance(10)
    assert h.status("slow")["pending"] is True
    assert h.status("slow")["state"] == "running"
    first = h.attempt("slow").run_id
    h.finish("slow")
    assert h.running == ["slow"] and h.attempt("slow").run_id != first
    h.finish("slow")
    assert [r.outcome.value for r in h.history("slow")] == ["succeeded", "succeeded"]


def test_overlap_replace_cancels_the_running_run_and_starts_the_new_one():
    h = Harness()
    h.add("stuck", interval_seconds=10, overlap="replace")
    h.start()
    first = h.attempt("stuck").run_id
    h.advance(10)
    second = h.attempt("stuck").run_id
    assert second != first
    records = {r.run_id: r for r in h.history("stuck")}
    assert records[first].outcome.value == "cancelled"
    assert records[second].started_at == START + timedelta(seconds=10)


def test_due_time_while_pending_is_coalesced():
    h = Harness(max_concurrent=1)
    h.add("hog", interval_seconds=1000)
    h.add("tick", interval_seconds=10, priority="low")
    h.start()
    assert h.running == ["hog"]
    h.advance(10)
    h.advance(10)
    assert h.status("tick")["pending"]
    h.finish("hog")
    h.finish("tick")
    assert len(h.history("tick")) == 1


# -- S5.2: dependencies ---------------------------------------------------------------------

def test_dependent_waits_for_pending_and_running_dependency_then_starts():
    h = Harness()
    h.add("fetch", interval_seconds=60)
    h.add("process", interval_seconds=60, depends_on=["fetch"])
    h.start()
    assert h.running == ["fetch"]
    assert h.reason("process") == "waiting for dependency fetch: it is running"
    h.finish("fetch")
    assert h.running == ["process"]


def test_dependent_waits_while_dependency_never_ran_failed_or_is_disabled():
    h = Harness()
    h.add("fetch", execution_mode="triggered", max_retries=0)
    h.add("process", interval_seconds=60, depends_on=["fetch"])
    h.start()
    assert h.running == []
    assert h.reason("process") == "waiting for dependency fetch: it has not run yet"
    h.trigger("fetch")
    h.finish("fetch", "failed", "OSError: no network")
    assert h.running == []
    assert h.reason("process") == "waiting for dependency fetch: its last run failed"
    h.disable("fetch")
    assert h.reason("process") == "waiting for dependency fetch: it is disabled"
    h.enable("fetch")
    h.trigger("fetch")
    assert h.reason("process") == "waiting for dependency fetch: it is running"
    h.finish("fetch", "timed_out")
    assert h.reason("process") == "waiting for dependency fetch: its last run timed out"
    h.trigger("fetch")
    h.finish("fetch")
    assert h.running == ["process"]


def test_dependent_waits_while_dependency_has_a_pending_run():
    h = Harness(max_concurrent=1)
    h.add("hog", interval_seconds=1000, priority="critical")
    h.add("fetch", interval_seconds=1000)
    h.add("process", interval_seconds=1000, depends_on=["fetch"], priority="high")
    h.start()
    assert h.running == ["hog"]
    assert h.reason("process") == "waiting for dependency fetch: it has a pending run"
    assert h.reason("fetch") == "no free slot (1/1 running)"


# -- S5.3: mutual exclusion -----------------------------------------------------------------

@pytest.mark.parametrize("declared_by", ["cleanup", "process"])
def test_exclusion_is_symmetric_whoever_declares_it(declared_by):
    h = Harness()
    other = "process" if declared_by == "cleanup" else "cleanup"
    h.add(declared_by, interval_seconds=100, blocks=[other])
    h.add(other, interval_seconds=100)
    h.start()
    assert len(h.running) == 1
    waiting = "process" if h.running == ["cleanup"] else "cleanup"
    assert h.reason(waiting) == f"blocked by {h.running[0]} (running)"
    h.finish(h.running[0])
    assert h.running == [waiting]


def test_exclusion_is_not_an_ordering():
    h = Harness()
    h.add("a", interval_seconds=100, blocks=["b"])
    h.add("b", interval_seconds=100, blocks=["a"])  # both directions: no cycle error
    h.start()
    assert len(h.running) == 1


# -- S5.4 and ordering: slots, priority, no head-of-line blocking -----------------------------

def test_cap_and_priority_order_then_due_time():
    h = Harness(max_concurrent=1)
    h.add("low", interval_seconds=100, priority="low")
    h.add("normal", interval_seconds=100)
    h.add("critical", interval_seconds=100, priority="critical")
    h.add("high", interval_seconds=100, priority="high")
    h.start()
    order = []
    for _ in range(4):
        assert len(h.running) == 1
        order.append(h.running[0])
        h.finish(h.running[0])
    assert order == ["critical", "high", "normal", "low"]


def test_blocked_high_priority_run_does_not_hold_back_a_lower_one():
    h = Harness(max_concurrent=2)
    h.add("fetch", interval_seconds=100)
    h.add("report", interval_seconds=100, priority="critical", depends_on=["fetch"])
    h.add("cleanup", interval_seconds=100, priority="low")
    h.start()
    assert h.running == ["cleanup", "fetch"]
    assert h.reason("report") == "waiting for dependency fetch: it is running"


def test_falsy_values_are_values():
    h = Harness(max_concurrent=1)
    h.add("hog", interval_seconds=100, priority="high")
    h.add("zero", interval_seconds=100, max_retries=0, priority="low")
    h.start()
    h.finish("hog")
    h.finish("zero", "failed")
    assert h.running == []
    assert h.history("zero")[0].attempts == 1


# -- S6: retries, auto-disable, enable, disable -----------------------------------------------

def test_retries_with_exponential_backoff_keep_one_record():
    h = Harness()
    h.add("flaky", interval_seconds=3600, max_retries=3, retry_delay_seconds=2)
    h.start()
    h.finish("flaky", "failed", "ValueError: 1")
    assert h.running == []
    assert h.reason("flaky").startswith("retry 2 of 4 at 12:00:02")
    h.advance(2)
    h.finish("flaky", "crashed", "killed by SIGSEGV")
    h.advance(3.9)
    assert h.running == []
    h.advance(0.1)  # 2 * 2**1 = 4 s after the second attempt
    h.finish("flaky")
    [record] = h.history("flaky")
    assert record.attempts == 3 and record.outcome.value == "succeeded"
    assert h.kinds("flaky").count("retried") == 2


def test_auto_disable_after_consecutive_failures_and_enable_resets():
    h = Harness()
    h.add("bad", interval_seconds=10, max_retries=0, max_consecutive_failures=3)
    h.start()
    for i in range(3):
        h.finish("bad", "failed", "ZeroDivisionError: division by zero")
        h.advance(10)
    state = h.status("bad")
    assert state["enabled"] is False and state["failures"] == 3
    assert h.reason("bad") == ("disabled after 3 consecutive failures: "
                               "ZeroDivisionError: division by zero")
    assert h.running == []
    h.advance(100)
    assert h.running == []
    h.enable("bad")
    assert h.status("bad")["failures"] == 0
    h.advance(10)
    assert h.running == ["bad"]


def test_success_resets_consecutive_failures():
    h = Harness()
    h.add("w", interval_seconds=10, max_retries=0, max_consecutive_failures=2)
    h.start()
    h.finish("w", "failed")
    h.advance(10)
    h.finish("w")
    h.advance(10)
    h.finish("w", "failed")
    assert h.status("w")["enabled"] is True
    assert h.status("w")["failures"] == 1


def test_disable_drops_pending_run_and_lets_running_one_finish():
    h = Harness(max_concurrent=1)
    h.add("a", interval_seconds=100, priority="high")
    h.add("b", interval_seconds=100)
    h.start()
    h.disable("b")
    h.disable("a")
    assert h.running == ["a"]
    h.finish("a")
    assert h.running == []
    assert h.history("b")[0].outcome.value == "cancelled"
    assert h.history("a")[0].outcome.value == "succeeded"
    assert h.reason("a") == "disabled by request at 12:00"


def test_disable_with_stop_cancels_running_run():
    h = Harness()
    h.add("a", interval_seconds=100)
    h.start()
    h.disable("a", True)
    h.settle()
    assert h.running == []
    assert h.history("a")[0].outcome.value == "cancelled"


def test_failed_run_of_disabled_worker_is_not_retried():
    h = Harness()
    h.add("a", interval_seconds=100, max_retries=3)
    h.start()
    h.disable("a")
    h.finish("a", "failed")
    h.advance(60)
    assert h.running == []
    assert h.history("a")[0].attempts == 1


# -- TRIGGERED and CONTINUOUS ------------------------------------------------------------------

def test_triggered_pipeline_runs_after_all_upstreams_succeed():
    h = Harness()
    h.add("extract-a", interval_seconds=100)
    h.add("extract-b", interval_seconds=100)
    h.add("load", execution_mode="triggered", depends_on=["extract-a", "extract-b"])
    h.start()
    assert h.reason("load") == "runs after extract-a and extract-b succeed (or when triggered)"
    h.finish("extract-a")
    assert h.running == ["extract-b"]
    h.finish("extract-b")
    assert h.running == ["load"]
    h.finish("load")
    assert h.history("load")[0].cause.value == "upstream"
    h.advance(100)
    h.finish("extract-a", "failed")
    h.finish("extract-b")
    assert h.running != ["load"]


def test_trigger_returns_final_record_and_disabled_is_refused():
    h = Harness()
    h.add("job", execution_mode="triggered")
    h.start()
    waiter = h.trigger("job")
    assert not waiter.done()
    h.finish("job")
    assert waiter.result(0).outcome.value == "succeeded"
    h.disable("job")
    assert h.dispatcher.call(h.dispatcher.trigger, "job") is None


def test_trigger_while_running_queues_one_run_behind():
    h = Harness()
    h.add("job", execution_mode="triggered")
    h.start()
    h.trigger("job")
    h.trigger("job")
    h.trigger("job")
    h.finish("job")
    assert h.running == ["job"]
    h.finish("job")
    assert h.running == []
    assert len(h.history("job")) == 2


def test_continuous_runs_again_at_once_and_backs_off_after_failures():
    h = Harness()
    h.add("loop", execution_mode="continuous", max_retries=0, retry_delay_seconds=1,
          max_consecutive_failures=None)
    h.start()
    h.finish("loop")
    assert h.running == ["loop"]
    h.finish("loop", "failed")
    assert h.running == []
    assert "backing off after 1 consecutive failures" in h.reason("loop")
    h.advance(1)
    h.finish("loop", "failed")
    h.advance(1.9)
    assert h.running == []
    h.advance(0.1)
    assert h.running == ["loop"]
    for _ in range(12):
        h.finish("loop", "failed")
        h.advance(300)
    assert h.running == ["loop"]  # the back-off is capped at 5 minutes


# -- S5: late, not missed ---------------------------------------------------------------------

def test_waiting_run_keeps_due_and_start_times():
    h = Harness(max_concurrent=1)
    h.add("hog", interval_seconds=1000, priority="high")
    h.add("patient", interval_seconds=1000)
    h.start()
    h.advance(500)
    h.finish("hog")
    record = h.history("patient")[0]
    assert record.due_at == START
    assert record.started_at == START + timedelta(seconds=500)


def test_status_shape_and_reasons():
    h = Harness(max_concurrent=1)
    h.add("hog", interval_seconds=60, priority="high")
    h.add("waiting", interval_seconds=60)
    h.start()
    document = h.status()
    assert set(document) >= {"state", "workers", "running", "worker_states"}
    assert document["running"] == 1 and document["running_workers"] == ["hog"]
    assert document["workers"] == 2 and document["worker_names"] == ["hog", "waiting"]
    assert h.reason("hog").startswith("running since 12:00:00 (attempt 1 of 4)")
    assert h.reason("waiting") == "no free slot (1/1 running)"
    h.finish("hog")
    h.finish("waiting")
    assert h.reason("hog") == "next run at 12:01:00"
    for key in ("pending", "next_run", "last_success", "last_duration", "last_outcome",
                "peak_rss_bytes", "cpu_seconds", "reason"):
        assert key in h.status("hog")


def test_run_at_start_gives_one_run_when_the_orchestrator_starts():
    h = Harness()
    h.add("boot", execution_mode="triggered", run_at_start=True)
    h.add("plain", execution_mode="triggered")
    h.start()
    assert h.running == ["boot"]
    h.finish("boot")
    h.advance(3600)
    assert h.running == []
    assert [r.cause.value for r in h.history("boot")] == ["startup"]


def test_a_very_long_failure_streak_keeps_backing_off():
    h = Harness()
    h.add("loop", execution_mode="continuous", max_retries=0, retry_delay_seconds=1,
          max_consecutive_failures=None)
    h.start()
    for _ in range(1100):  # past 2**1024: the back-off must not overflow
        h.finish("loop", "failed")
        h.advance(300)
    assert h.running == ["loop"]
    assert h.status("loop")["failures"] == 1100
