"""A worker module that raises at import in any process but the one that registered it.

The test imports it first (so registration can pickle ``work`` by reference), then creates
``break-import`` in ``FAULT_DIR``: every later import of the module, as a worker process or
the launcher does it, raises.
"""

from __future__ import annotations

import os
from pathlib import Path

_FAULT_DIR = os.environ.get("FAULT_DIR")
if _FAULT_DIR and (Path(_FAULT_DIR) / "break-import").exists():
    raise RuntimeError("fault_broken_import cannot be imported (break-import is set)")


def work():
    return "imported fine"
