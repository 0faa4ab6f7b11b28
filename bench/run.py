"""Every benchmark of the project beside its peers, in one run, as one table with ratios.

Rows (issue "Benchmarks against the tools users would otherwise pick"):

1. start lateness of scheduled runs (:mod:`bench.lateness`) vs APScheduler 3 and
   ``schedule``;
2. kill of a task that ignores SIGTERM and 3. throughput of no-op runs, from
   :mod:`bench.engine` (vs a bare fork loop, the stdlib pool and pebble);
4. idle CPU of 1,000 hourly workers vs APScheduler, and 6. CPU of sampling two running
   trees, each measured from outside its own process (:mod:`bench.probe`);
5. scale, from :mod:`bench.scale`;
7. lateness of a 0.5 s worker while 8 threads read the status of 10,000 workers
   (:mod:`bench.status_load`);
8. the Ray executor beside bare Ray tasks on one local Ray (:mod:`bench.cluster`; needs the
   ``ray`` extra).

Each figure is the median over the repetitions, with their spread (lowest-highest);
"x this project" divides a peer's figure by this project's. Absolute figures drift on a
shared machine; ratios of one run hold better. Run as ``python -m bench`` (``--quick``:
under 2 minutes, for a smoke check; ``--json FILE``: every figure and repetition);
``python -m bench ray`` (or ``engine``, ``lateness``, ...) runs only the rows named.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine, lateness, probe, scale, status_load  # noqa: E402

ROWS = ("engine", "lateness", "idle", "scale", "monitoring", "status", "ray")


class Figures:
    """Repetitions of named figures, and the lines of the table."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.lines: list[tuple[str, str, str, str, str, str]] = []
        self.targets: list[tuple[str, bool | None, str]] = []

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def line(self, row: str, backend: str, figure: str, key: str, unit: str,
             scale_by: float = 1.0, baseline: str | None = None, digits: int = 2) -> None:
        values = self.samples.get(key)
        if not values:
            self.lines.append((row, backend, figure, "n/a", "", ""))
            return
        middle = statistics.median(values) * scale_by
        spread = (f"{min(values) * scale_by:.{digits}f}-{max(values) * scale_by:.{digits}f}"
                  if len(values) > 1 else "")
        ratio = ""
        if baseline is not None and baseline != key:
            base = self.median(baseline)
            ratio = f"{statistics.median(values) / base:.2f}x" if base else "n/a"
        self.lines.append((row, backend, figure, f"{middle:.{digits}f} {unit}", spread, ratio))

    def note(self, row: str, backend: str, figure: str, text: str) -> None:
        self.lines.append((row, backend, figure, text, "", ""))

    def target(self, text: str, met: bool | None, detail: str) -> None:
        self.targets.append((text, met, detail))


# -- row 1 --------------------------------------------------------------------------------------

def measure_lateness(figures: Figures, repetitions: int, seconds: float) -> None:
    for repetition in range(repetitions):
        for index, (_name, measure) in enumerate(lateness.PEERS):
            runs, skipped = measure(seconds)
            figures.add(f"lateness.{index}.skipped", skipped)
            every = [late for _due, late in runs]
            steady = [late for due, late in runs if due >= seconds / 2]
            figures.add(f"lateness.{index}.runs", len(runs))
            for label, values in (("all", every), ("steady", steady)):
                if values:
                    figures.add(f"lateness.{index}.{label}.p50", engine.percentile(values, 0.5))
                    figures.add(f"lateness.{index}.{label}.p99",
                                engine.percentile(values, 0.99))
    for index, (name, _measure) in enumerate(lateness.PEERS):
        for label, title in (("all", "all runs"), ("steady", "due in 2nd half")):
            for quantile in ("p50", "p99"):
                figures.line("1 lateness", name, f"{title} {quantile}",
                             f"lateness.{index}.{label}.{quantile}", "ms", 1000,
                             baseline=f"lateness.0.{label}.{quantile}")
        figures.line("1 lateness", name, "runs started", f"lateness.{index}.runs", "",
                     digits=0)
        figures.line("1 lateness", name, "skipped (previous still running)",
                     f"lateness.{index}.skipped", "", digits=0)
    ours, theirs = (figures.median("lateness.0.steady.p99"),
                    figures.median("lateness.1.steady.p99"))
    ours_all, theirs_all = (figures.median("lateness.0.all.p99"),
                            figures.median("lateness.1.all.p99"))
    if None not in (ours, theirs, ours_all, theirs_all):
        figures.target("1 lateness p99 <= APScheduler's + 2 ms (all runs; due in 2nd half)",
                       ours_all <= theirs_all + 0.002 and ours <= theirs + 0.002,
                       f"all {ours_all * 1000:.1f} vs {theirs_all * 1000:.1f} ms; "
                       f"2nd half {ours * 1000:.1f} vs {theirs * 1000:.1f} ms")


# -- rows 2 and 3 -------------------------------------------------------------------------------

KILL_NAMES = {"os.fork + waitpid (floor)": "floor",
              "orchestrator ProcessExecutor (cgroup)": "orchestrator",
              "orchestrator ProcessExecutor (process-group)": "orchestrator-pg",
              "stdlib ProcessPoolExecutor (warm)": "stdlib",
              "pebble ProcessPool (warm; kill: fixed 3 s grace)": "pebble",
              "pebble ProcessPool (max_tasks=1, fresh)": "pebble-fresh",
              "os.fork + pickled call and result (Python run floor)": "python-floor"}


def measure_engine(figures: Figures, repetitions: int, quick: bool) -> list[str]:
    names = []
    for _ in range(repetitions):
        for name, _start, kill0, kill5, throughput in engine.measure(quick):
            key = KILL_NAMES.get(name, name)
            if name not in names:
                names.append(name)
            for label, values in (("kill0", kill0), ("kill5", kill5)):
                if values:
                    figures.add(f"{label}.{key}.p50", engine.percentile(values, 0.5))
                    figures.add(f"{label}.{key}.p99", engine.percentile(values, 0.99))
            figures.add(f"throughput.{key}", throughput)
    return names


def report_engine(figures: Figures, names: list[str]) -> None:
    # This project's engine: with cgroups, or with process groups where it can make none.
    ours = "orchestrator" if "throughput.orchestrator" in figures.samples else "orchestrator-pg"
    for name in names:
        key = KILL_NAMES.get(name, name)
        for label, title in (("kill0", "grace 0"), ("kill5", "grace 0.5 s")):
            if f"{label}.{key}.p50" not in figures.samples:
                continue
            for quantile in ("p50", "p99"):
                figures.line("2 kill", name, f"{title} {quantile} past grace",
                             f"{label}.{key}.{quantile}", "ms", 1000,
                             baseline=f"{label}.{ours}.{quantile}")
    figures.note("2 kill", "APScheduler 3, stdlib ProcessPoolExecutor", "", "no kill of a task")
    for name in names:
        key = KILL_NAMES.get(name, name)
        figures.line("3 throughput", name, "no-op runs, 2 in flight", f"throughput.{key}",
                     "/s", baseline=f"throughput.{ours}", digits=0)
    kill = max(figures.median(f"kill0.{ours}.p99"), figures.median(f"kill5.{ours}.p99"))
    figures.target("2 kill <= grace + 20 ms at p99", kill <= 0.020, f"+{kill * 1000:.1f} ms")
    rate = figures.median(f"throughput.{ours}")
    if ours == "orchestrator":
        groups = figures.median("throughput.orchestrator-pg")
        figures.target("3 throughput with cgroups >= 85% of process groups only",
                       rate >= 0.85 * groups, f"{rate / groups:.0%}")
    share = rate / figures.median("throughput.floor")
    python_floor = figures.median("throughput.python-floor")
    figures.target("3 throughput >= 75% of the fork floor", share >= 0.75,
                   f"{share:.0%} (and {rate / python_floor:.0%} of a bare Python run in a "
                   f"fresh process)" if python_floor else f"{share:.0%}")


# -- rows 4 and 6 -------------------------------------------------------------------------------

def measure_idle(figures: Figures, repetitions: int, seconds: float, settle: float) -> None:
    for _ in range(repetitions):
        ours, theirs = probe.measure_cpu([["idle-orchestrator"], ["idle-apscheduler"]],
                                         seconds, settle)
        figures.add("idle.orchestrator", ours / seconds * 60)
        figures.add("idle.apscheduler", theirs / seconds * 60)
    for key, name in (("idle.orchestrator", "orchestrator, 1,000 hourly workers"),
                      ("idle.apscheduler", "APScheduler 3, 1,000 hourly jobs")):
        figures.line("4 idle", name, "CPU per minute (tree)", key, "ms", 1000,
                     baseline="idle.orchestrator", digits=3)
    ours, theirs = figures.median("idle.orchestrator"), figures.median("idle.apscheduler")
    figures.target("4 idle <= APScheduler's and < 0.1% of a core",
                   ours <= theirs and ours / 60 < 0.001,
                   f"{ours / 60:.4%} of a core vs APScheduler {theirs / 60:.4%}")


def measure_monitoring(figures: Figures, repetitions: int, seconds: float,
                       settle: float) -> None:
    for _ in range(repetitions):
        sampled, rare = probe.measure_cpu([["monitor", "0.5"], ["monitor", "3600"]], seconds,
                                          settle)
        figures.add("monitor.0.5", sampled / seconds)
        figures.add("monitor.rare", rare / seconds)
        figures.add("monitor.overhead", (sampled - rare) / seconds)
    for key, name in (("monitor.0.5", "orchestrator, sample every 0.5 s"),
                      ("monitor.rare", "orchestrator, sample every hour"),
                      ("monitor.overhead", "difference: the sampling")):
        figures.line("6 monitoring", name, "CPU, 2 running trees", key, "% core", 100)
    overhead = figures.median("monitor.overhead")
    figures.target("6 sampling 2 trees every 0.5 s < 1% of a core", overhead < 0.01,
                   f"{overhead:.2%} of a core")


# -- row 5 --------------------------------------------------------------------------------------

def measure_scale(figures: Figures, repetitions: int, workers: int) -> None:
    # A fresh interpreter per repetition, so that its RSS is the orchestrator's alone.
    context = multiprocessing.get_context("spawn")
    for _ in range(repetitions):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            result = pool.submit(scale.measure, workers, workers * 2).result()
        figures.add("scale.register_validate",
                    result["register_seconds"] + result["validate_seconds"])
        figures.add("scale.decision", result["step_seconds"] / result["decisions"])
        figures.add("scale.rss", result["rss_after"] / 2**20)
    name = f"orchestrator, {workers:,} workers, {workers * 2:,} edges"
    figures.line("5 scale", name, "register + validate", "scale.register_validate", "s")
    figures.line("5 scale", name, "one admission decision", "scale.decision", "us", 1e6, digits=1)
    figures.line("5 scale", name, "RSS", "scale.rss", "MB", digits=0)
    seconds, decision, rss = (figures.median("scale.register_validate"),
                              figures.median("scale.decision"), figures.median("scale.rss"))
    figures.target(f"5 scale ({workers:,} workers): < 2 s, < 100 us, < 300 MB",
                   seconds < 2 and decision < 100e-6 and rss < 300,
                   f"{seconds:.2f} s, {decision * 1e6:.1f} us, {rss:.0f} MB")


# -- row 7 --------------------------------------------------------------------------------------

def measure_status_load(figures: Figures, repetitions: int, workers: int,
                        seconds: float) -> None:
    context = multiprocessing.get_context("spawn")
    for _ in range(repetitions):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            result = pool.submit(status_load.measure, workers, 8, seconds).result()
        late = result["lateness"]
        figures.add("status.reads", result["reads"] / result["seconds"])
        if not late:  # the machine was too busy for even one run in the window
            continue
        figures.add("status.p50", engine.percentile(late, 0.5))
        figures.add("status.p99", engine.percentile(late, 0.99))
    name = f"orchestrator, {workers:,} workers, 8 status readers"
    figures.line("7 status load", name, "lateness p50 of a 0.5 s worker", "status.p50", "ms",
                 1000)
    figures.line("7 status load", name, "lateness p99 of a 0.5 s worker", "status.p99", "ms",
                 1000)
    figures.line("7 status load", name, "status documents read", "status.reads", "/s",
                 digits=0)
    p99 = figures.median("status.p99")
    title = f"7 lateness p99 <= 20 ms while 8 threads read status ({workers:,} workers)"
    if p99 is None:
        figures.target(title, False, "no run of the 0.5 s worker started in the window")
    else:
        figures.target(title, p99 <= 0.020, f"{p99 * 1000:.1f} ms")


# -- row 8 --------------------------------------------------------------------------------------

def measure_ray(figures: Figures, repetitions: int, quick: bool) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        figures.note("8 ray", "orchestrator RayExecutor", "", "n/a: pip install -e '.[ray]'")
        return
    from bench import cluster

    context = multiprocessing.get_context("spawn")  # Ray's threads stay out of this process
    for _ in range(repetitions):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            result = pool.submit(cluster.measure, 30 if quick else 100, 200 if quick else 600,
                                 10 if quick else 30).result()
        for key in ("bare.round_trip", "bare.forked", "bare.start", "ours.start",
                    "ours.round_trip", "ours.kill0", "ours.kill0.5", "bare.cancel"):
            figures.add(f"ray.{key}.p50", engine.percentile(result[key], 0.5))
            figures.add(f"ray.{key}.p99", engine.percentile(result[key], 0.99))
        for key in ("bare.throughput", "ours.throughput", "ours.kill0.left",
                    "ours.kill0.5.left", "bare.cancel.left", "kills"):
            figures.add(f"ray.{key}", result[key])
    ours, bare = "orchestrator RayExecutor", "bare Ray task"
    for quantile in ("p50", "p99"):
        figures.line("8 ray", bare, f"round trip {quantile}", f"ray.bare.round_trip.{quantile}",
                     "ms", 1000, baseline=f"ray.ours.start.{quantile}")
        figures.line("8 ray", bare + " that forks", f"round trip {quantile}",
                     f"ray.bare.forked.{quantile}", "ms", 1000,
                     baseline=f"ray.ours.start.{quantile}")
        figures.line("8 ray", bare, f"submit -> user code {quantile}",
                     f"ray.bare.start.{quantile}", "ms", 1000,
                     baseline=f"ray.ours.start.{quantile}")
        figures.line("8 ray", ours, f"submit -> user code {quantile}",
                     f"ray.ours.start.{quantile}", "ms", 1000)
        figures.line("8 ray", ours, f"round trip {quantile}", f"ray.ours.round_trip.{quantile}",
                     "ms", 1000, baseline=f"ray.ours.start.{quantile}")
    figures.line("8 ray", bare, f"no-op runs, {cluster.IN_FLIGHT} in flight",
                 "ray.bare.throughput", "/s", baseline="ray.ours.throughput", digits=0)
    figures.line("8 ray", ours, f"no-op runs, {cluster.IN_FLIGHT} in flight",
                 "ray.ours.throughput", "/s", digits=0)
    for grace in ("0", "0.5"):
        for quantile in ("p50", "p99"):
            figures.line("8 ray", ours, f"kill, grace {grace} s: {quantile} past grace",
                         f"ray.ours.kill{grace}.{quantile}", "ms", 1000)
        figures.line("8 ray", ours, f"kill, grace {grace} s: processes left",
                     f"ray.ours.kill{grace}.left", "", digits=0)
    for quantile in ("p50", "p99"):
        figures.line("8 ray", bare, f"ray.cancel(force=True) {quantile}",
                     f"ray.bare.cancel.{quantile}", "ms", 1000)
    figures.line("8 ray", bare, "ray.cancel(force=True): daemons left after 1 s",
                 "ray.bare.cancel.left", "", digits=0)

    over = figures.median("ray.ours.start.p50") - figures.median("ray.bare.round_trip.p50")
    figures.target("8 ray start p50 <= bare task round trip + 5 ms", over <= 0.005,
                   f"+{over * 1000:.1f} ms")
    share = figures.median("ray.ours.throughput") / figures.median("ray.bare.throughput")
    figures.target("8 ray no-op throughput >= 50% of bare tasks", share >= 0.5, f"{share:.0%}")
    kill = max(figures.median("ray.ours.kill0.p99"), figures.median("ray.ours.kill0.5.p99"))
    left = figures.median("ray.ours.kill0.left") + figures.median("ray.ours.kill0.5.left")
    figures.target("8 ray kill <= grace + 50 ms at p99, no process left",
                   kill <= 0.050 and left == 0,
                   f"+{kill * 1000:.1f} ms, {left:.0f} left (bare cancel: "
                   f"{figures.median('ray.bare.cancel.left'):.0f} of "
                   f"{figures.median('ray.kills'):.0f} daemons left)")


# -- the table ----------------------------------------------------------------------------------

def print_table(figures: Figures, command: str, elapsed: float) -> None:
    header = ("row", "backend", "figure", "median", "spread", "x this project")
    widths = [max(len(header[i]), *(len(line[i]) for line in figures.lines))
              for i in range(len(header))]
    print(f"{command}   ({os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{elapsed:.0f} s)")
    print("  ".join(title.ljust(width) for title, width in zip(header, widths)).rstrip())
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    previous = None
    for line in figures.lines:
        row = line[0] if line[0] != previous else ""
        previous = line[0]
        cells = (row,) + line[1:]
        print("  ".join(cell.rjust(width) if index >= 3 else cell.ljust(width)
                        for index, (cell, width) in enumerate(zip(cells, widths))).rstrip())
    print()
    for text, met, detail in figures.targets:
        verdict = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"target {text}: {detail} -> {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter repetitions (under 2 minutes); a smoke check")
    parser.add_argument("--json", metavar="FILE", help="write every figure and repetition")
    parser.add_argument("rows", nargs="*", metavar="ROW",
                        help=f"only these rows: {', '.join(ROWS)} (default: all)")
    options = parser.parse_args(argv)
    unknown = [row for row in options.rows if row not in ROWS]
    if unknown:
        parser.error(f"no row {unknown[0]!r}; the rows are {', '.join(ROWS)}")
    rows = set(options.rows or ROWS)
    from loguru import logger

    logger.remove()  # a run per event on the terminal would be measured too
    quick = options.quick
    begun = time.monotonic()
    figures = Figures()
    # The engine's floor forks this process: measure it before any thread exists.
    if "engine" in rows:
        engine_names = measure_engine(figures, 1 if quick else 2, quick)
    if "lateness" in rows:
        measure_lateness(figures, 1 if quick else 3, 8.0 if quick else 30.0)
    if "engine" in rows:
        report_engine(figures, engine_names)
    # start() returns before the set-up work is over (about 3 s of it for 1,000 workers):
    # the idle window opens well after it
    if "idle" in rows:
        measure_idle(figures, 1 if quick else 2, 10.0 if quick else 60.0,
                     5.0 if quick else 10.0)
    if "scale" in rows:
        measure_scale(figures, 1 if quick else 3, 2_000 if quick else 10_000)
    if "monitoring" in rows:
        measure_monitoring(figures, 1 if quick else 3, 5.0 if quick else 20.0,
                           1.0 if quick else 2.0)
    if "status" in rows:
        measure_status_load(figures, 1 if quick else 3, 2_000 if quick else 10_000,
                            6.0 if quick else 20.0)
    if "ray" in rows:
        measure_ray(figures, 1 if quick else 2, quick)
    command = " ".join(["python -m bench", *(["--quick"] if quick else []),
                        *sorted(options.rows or [])])
    print_table(figures, command, time.monotonic() - begun)
    if options.json:
        with open(options.json, "w") as file:
            json.dump({"command": command, "cpus": os.cpu_count(),
                       "python": sys.version.split()[0], "samples": figures.samples,
                       "medians": {key: figures.median(key) for key in figures.samples},
                       "table": [dict(zip(("row", "backend", "figure", "median", "spread",
                                           "ratio"), line)) for line in figures.lines],
                       "targets": [{"target": text, "met": met, "figures": detail}
                                   for text, met, detail in figures.targets]},
                      file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
