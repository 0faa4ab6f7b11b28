"""The one-minute soak (``python -m bench.soak --minutes 1``): fifty random workers with
dependencies, exclusions, failures, timeouts and crashes, every promise of S12 checked over
the whole history, and nothing left running after ``stop()``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_one_minute_soak_keeps_every_promise(tmp_path):
    finished = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "1",
                               "--seed", "20261128"], cwd=ROOT, capture_output=True,
                              text=True, timeout=280, env={**os.environ, "TMPDIR": str(tmp_path)})
    report = finished.stdout + finished.stderr
    assert finished.returncode == 0, report
    assert "invariant violations: 0" in report
    assert "after stop: 0 child processes" in report
    runs = int(report.split("runs: ")[1].split()[0])
    assert runs > 100, report  # it did run: about 1,500 runs a minute on two cores

