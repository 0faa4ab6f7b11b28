"""Worker functions for the HTTP and dashboard tests; they run in worker processes (or
inline, with the inline executor)."""

from __future__ import annotations

import random
import time

#: An error text that would run script if a page inserted it as HTML.
HTML_ERROR = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def ok():
    return "ok"


def html_error():
    raise RuntimeError(HTML_ERROR)


def always_fails():
    raise ValueError("the upstream API answered 503")


def busy():
    """Works for one to four seconds (used for the dashboard screenshot)."""
    end = time.monotonic() + random.uniform(1.0, 4.0)
    data = bytearray(random.randint(8, 64) * 1024 * 1024)
    while time.monotonic() < end:
        data[random.randrange(len(data))] = 1
    return len(data)


def sometimes_fails():
    """Fails about one run in four after a second's work."""
    time.sleep(1.0)
    if random.random() < 0.25:
        raise ConnectionError("could not reach db.internal:5432")
    return "ok"


def never_ends():
    time.sleep(3600)
