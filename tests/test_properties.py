"""Property tests: random graphs, priorities, outcomes and interleavings never break S12."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Harness
from invariants import check_events, check_history
from orchestrator.runs import Outcome

OUTCOMES = ["succeeded", "succeeded", "failed", "timed_out", "crashed", "memory_exceeded"]


@st.composite
def scenarios(draw):
    count = draw(st.integers(2, 7))
    names = [f"w{i}" for i in range(count)]
    workers = {}
    modes = [draw(st.sampled_from(["scheduled", "scheduled", "triggered", "continuous"]))
             for _ in names]
    for index, name in enumerate(names):
        others = [n for n in names if n != name]
        # a continuous worker can be nobody's dependency (refused at start)
        upstream = [n for n, mode in zip(names[:index], modes) if mode != "continuous"]
        options = {
            "depends_on": draw(st.lists(st.sampled_from(upstream), unique=True,
                                        max_size=2)) if upstream else [],
            "blocks": draw(st.lists(st.sampled_from(others), unique=True, max_size=2)),
            "priority": draw(st.sampled_from(["low", "normal", "high", "critical"])),
            "max_retries": draw(st.integers(0, 2)),
            "retry_delay_seconds": draw(st.sampled_from([0, 1, 3])),
            "max_consecutive_failures": draw(st.sampled_from([None, 1, 2, 3])),
            "overlap": draw(st.sampled_from(["skip", "queue", "replace"])),
        }
        mode = modes[index]
        options["execution_mode"] = mode
        if mode == "scheduled":
            options["interval_seconds"] = draw(st.sampled_from([5, 10, 30]))
        workers[name] = options
    actions = draw(st.lists(st.one_of(
        st.tuples(st.just("advance"), st.sampled_from([0, 1, 2.5, 5, 10, 30])),
        st.tuples(st.just("finish"), st.integers(0, 9), st.sampled_from(OUTCOMES)),
        st.tuples(st.just("finish"), st.integers(0, 9), st.sampled_from(OUTCOMES)),
        st.tuples(st.just("trigger"), st.sampled_from(names)),
        st.tuples(st.just("disable"), st.sampled_from(names), st.booleans()),
        st.tuples(st.just("enable"), st.sampled_from(names)),
    ), max_size=80))
    return workers, draw(st.integers(1, 3)), actions


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_scenarios_keep_every_promise(scenario):
    workers, max_concurrent, actions = scenario
    h = Harness(max_concurrent=max_concurrent)
    for name, options in workers.items():
        h.add(name, **options)
    h.start()
    d = h.dispatcher
    for action in actions:
        kind = action[0]
        if kind == "advance":
            h.advance(action[1])
        elif kind == "finish":
            running = h.running
            if running:
                h.finish(running[action[1] % len(running)], action[2])
        elif kind == "trigger":
            d.trigger(action[1])
            h.settle()
        elif kind == "disable":
            d.disable(action[1], action[2])
            h.settle()
        elif kind == "enable":
            d.enable(action[1])
            h.settle()
        assert len(h.running) <= max_concurrent
    d.begin_stop()
    for name in workers:  # nothing asked for while stopping may be left without a record
        d.trigger(name)
    for name in h.running:
        h.finish(name)
    d.kill_running(Outcome.CANCELLED)
    h.settle()
    assert h.running == []
    check_events(h.events, workers, max_concurrent)
    check_history(h.history(), h.events)
