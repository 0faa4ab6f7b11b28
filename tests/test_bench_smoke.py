"""Smoke check of the benchmarks: ``python -m bench --quick`` runs every row and prints the
table. It asserts nothing about speed; it needs the ``bench`` extra (pebble, schedule)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("pebble")
pytest.importorskip("schedule")


def test_quick_benchmark_prints_the_table(tmp_path):
    figures = tmp_path / "bench.json"
    try:
        finished = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json",
                                   str(figures)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=600)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"python -m bench --quick did not finish within 600 s; it printed:\n"
                    f"{expired.stdout}\n{expired.stderr}")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "python -m bench --quick" in finished.stdout
    header = [line for line in finished.stdout.splitlines() if line.startswith("row ")]
    assert header and "x this project" in header[0], finished.stdout
    rows = {line["row"] for line in json.loads(figures.read_text())["table"]}
    assert {"1 lateness", "2 kill", "3 throughput", "4 idle", "5 scale",
            "6 monitoring"} <= rows
