"""Prometheus metrics for ``GET /metrics``, read from the orchestrator at each scrape.

::

    dispatcher thread --RunEvent--> RunTally (ended runs: counts, duration buckets)
                                        |
    scrape --> OrchestratorCollector.collect() --get_status()--> gauges, skipped, missed
                                        +--> RunTally.counts() --> runs_total, histogram

Everything but the run counts and durations comes from one ``get_status()`` snapshot. Those
two need a tally kept from run events: history is bounded per worker, so counting its
records would make a counter go down once old runs are dropped. The tally holds only
numbers, one entry per worker and outcome.

A failed attempt that a retry follows emits its outcome with ``final=False``; only a run's
final outcome is counted.
"""

from __future__ import annotations

import bisect
import threading
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from .events import RunEvent
from .runs import Outcome

#: Upper bounds (seconds) of the run duration histogram's buckets.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)

#: Outcomes counted in ``orchestrator_runs_total``; skipped and missed due times have
#: counters of their own.
RUN_OUTCOMES = tuple(outcome.value for outcome in Outcome
                     if outcome not in (Outcome.SKIPPED, Outcome.MISSED))


class _Durations:
    """One worker's duration histogram: a count per bucket, the sum and the count."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        bounds = [_float_text(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.buckets):
            running += count
            out.append((bound, running))
        return out


class RunTally:
    """Runs that ended since it was created, by worker and outcome, with their durations.

    :meth:`on_event` is an orchestrator listener; it is called on the dispatcher thread,
    one event at a time, in order. Readers on other threads use :meth:`counts`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Both guarded by _lock; written by the dispatcher thread through on_event().
        self._runs: dict[tuple[str, str], int] = {}
        self._durations: dict[str, _Durations] = {}

    def on_event(self, event: RunEvent) -> None:
        if event.kind not in RUN_OUTCOMES or not event.final:
            return
        with self._lock:
            key = (event.worker, event.kind)
            self._runs[key] = self._runs.get(key, 0) + 1
            if event.duration_seconds is not None:
                self._durations.setdefault(event.worker, _Durations()).observe(
                    max(event.duration_seconds, 0.0))

    def counts(self) -> tuple[dict[tuple[str, str], int], dict[str, _Durations]]:
        """Copies of the run counts by ``(worker, outcome)`` and the duration histograms."""
        with self._lock:
            durations = {}
            for worker, source in self._durations.items():
                copy = _Durations()
                copy.buckets, copy.total, copy.count = (list(source.buckets), source.total,
                                                        source.count)
                durations[worker] = copy
            return dict(self._runs), durations


class OrchestratorCollector:
    """A ``prometheus_client`` collector: one ``get_status()`` snapshot per scrape.

    :param orchestrator: anything with the public ``get_status()`` of
        :class:`~orchestrator.WorkerOrchestrator`.
    :param tally: the run tally fed by the orchestrator's run events.
    """

    def __init__(self, orchestrator, tally: RunTally):
        self._orchestrator = orchestrator
        self._tally = tally

    def collect(self):
        status = self._orchestrator.get_status()
        runs, durations = self._tally.counts()
        workers = status.get("worker_states", {})

        yield _gauge("orchestrator_max_concurrent", "Most runs in progress at once.",
                     status.get("max_concurrent"))
        info = GaugeMetricFamily("orchestrator_containment_info", "What keeps each run's "
                                 "processes together: cgroup, process-group or none.",
                                 labels=["mode"])
        info.add_metric([status.get("containment", "none")], 1)
        yield info

        total = CounterMetricFamily("orchestrator_runs", "Runs ended since the orchestrator "
                                    "started, by final outcome.", labels=["worker", "outcome"])
        for name in workers:
            for outcome in RUN_OUTCOMES:
                total.add_metric([name, outcome], runs.get((name, outcome), 0))
        yield total

        histogram = HistogramMetricFamily(
            "orchestrator_run_duration_seconds", "Duration of each ended run: from its user "
            "code's start to its end, retries included.", labels=["worker"])
        for name in workers:
            observed = durations.get(name, _Durations())
            histogram.add_metric([name], observed.cumulative(), observed.total)
        yield histogram

        for field, metric, help_text, convert in _WORKER_METRICS:
            family = GaugeMetricFamily(metric, help_text, labels=["worker"])
            for name, worker in workers.items():
                value = convert(worker.get(field))
                if value is not None:
                    family.add_metric([name], value)
            yield family

        where = GaugeMetricFamily("orchestrator_worker_node_info", "Where each running run "
                                  "is, on a cluster: its node id and host name.",
                                  labels=["worker", "node", "host"])
        for name, worker in workers.items():
            if worker.get("running") and worker.get("node"):
                where.add_metric([name, worker["node"], worker.get("host") or ""], 1)
        yield where

        for field, metric, help_text in _WORKER_COUNTERS:
            family = CounterMetricFamily(metric, help_text, labels=["worker"])
            for name, worker in workers.items():
                family.add_metric([name], worker.get(field) or 0)
            yield family


def build_registry(orchestrator, tally: RunTally) -> CollectorRegistry:
    """A private registry holding only this orchestrator's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestratorCollector(orchestrator, tally))
    return registry


def _gauge(name: str, help_text: str, value) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    if value is not None:
        family.add_metric([], value)
    return family


def _flag(value) -> float | None:
    return None if value is None else float(bool(value))


def _number(value) -> float | None:
    return None if value is None else float(value)


def _timestamp(value) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def _float_text(value: float) -> str:
    return repr(float(value))


# (status field, metric name, help, conversion); a missing value leaves the sample out.
_WORKER_METRICS = (
    ("running", "orchestrator_worker_running", "1 while a run of the worker is in progress.",
     _flag),
    ("pending", "orchestrator_worker_pending", "1 while a run of the worker waits to start.",
     _flag),
    ("enabled", "orchestrator_worker_enabled", "1 if the worker is enabled.", _flag),
    ("failures", "orchestrator_worker_consecutive_failures",
     "Failed runs in a row (reset by a success or enable).", _number),
    ("last_success", "orchestrator_worker_last_success_timestamp_seconds",
     "When the newest successful run ended (Unix time).", _timestamp),
    ("next_run", "orchestrator_worker_next_run_timestamp_seconds",
     "When the worker is next due (Unix time); absent while disabled.", _timestamp),
    ("last_duration", "orchestrator_last_run_duration_seconds",
     "Duration of the newest ended run (user code's start to end, retries included).",
     _number),
    ("cpu_seconds", "orchestrator_last_run_cpu_seconds",
     "CPU time (user and system) of the run in progress, else of the newest ended run.",
     _number),
    ("peak_rss_bytes", "orchestrator_last_run_peak_rss_bytes",
     "Peak resident memory of the run in progress, else of the newest ended run.",
     _number),
)

# (status field, counter name without _total, help)
_WORKER_COUNTERS = (
    ("skipped", "orchestrator_skipped_runs",
     "Due times skipped because the worker was still running (overlap=skip)."),
    ("missed", "orchestrator_missed_runs",
     "Due times missed while the orchestrator was down (beyond the misfire grace)."),
)
