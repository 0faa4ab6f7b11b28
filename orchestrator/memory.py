"""How much memory the machine can still give, for admission by learned memory.

The kernel's own estimate, ``MemAvailable`` in ``/proc/meminfo`` (free memory plus what can
be reclaimed without swapping), or what the orchestrator's own cgroup still allows under its
limit, whichever is lower: an orchestrator in a container or a systemd unit with
``MemoryMax=`` must not count memory it may not use.
"""

from __future__ import annotations

import os

__all__ = ["available_bytes", "human"]

_UNLIMITED = 1 << 60  # a cgroup v1 "no limit" is near 2**63


def available_bytes(proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the machine (or this process's cgroup) can still give; None if unknown."""
    figures = [value for value in (_mem_available(proc), _cgroup_room(proc, cgroup_root))
               if value is not None]
    return min(figures) if figures else None


def human(size: float) -> str:
    """``1288490188`` -> ``"1.2 GiB"``; ``300 * 2**20`` -> ``"300 MiB"``."""
    if abs(size) >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.0f} MiB"


def _mem_available(proc: str) -> int | None:
    try:
        with open(os.path.join(proc, "meminfo")) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room(proc: str, root: str) -> int | None:
    """Limit minus usage of the memory cgroup this process is in (v2, else v1)."""
    try:
        with open(os.path.join(proc, "self", "cgroup")) as membership:
            lines = membership.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "" and os.path.exists(os.path.join(root, "cgroup.controllers")):
            room = _room(os.path.join(root, path), "memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            room = _room(os.path.join(root, "memory", path), "memory.limit_in_bytes",
                         "memory.usage_in_bytes")
        else:
            continue
        if room is not None:
            return room
    return None


def _room(folder: str, limit_file: str, usage_file: str) -> int | None:
    try:
        with open(os.path.join(folder, limit_file)) as limit_text:
            limit = limit_text.read().strip()
        if limit == "max" or int(limit) >= _UNLIMITED:
            return None
        with open(os.path.join(folder, usage_file)) as usage_text:
            return max(0, int(limit) - int(usage_text.read().strip()))
    except (OSError, ValueError):
        return None
