"""The journal test workers keep: one line per event, ``<event> <worker> <CLOCK_MONOTONIC
seconds> <pid>``, written with one ``write`` on an O_APPEND file (atomic, so lines of
concurrent processes never mix). CLOCK_MONOTONIC is one clock for every process of the
machine, so a test can rebuild who ran when."""

from __future__ import annotations

import os
import time
from pathlib import Path


def append(directory: Path, event: str, name: str) -> None:
    line = f"{event} {name} {time.monotonic():.6f} {os.getpid()}\n"
    fd = os.open(Path(directory) / "journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
