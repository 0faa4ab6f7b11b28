"""One cgroup per attempt: find where cgroups may be made, make them, limit, measure, kill.

::

    orchestrator process                         launcher process
    --------------------                         ----------------
    probe()        -> Support, or why not        (this file, loaded by path)
    Support.home(launcher pid)                   Group(plan, "run-N").create()
       -> CgroupPlan (a home per hierarchy)       fork a spare; it joins Group.procs()
    destroy(plan) when a launcher died           Group.limit(memory, pids, cpu)  (job time)
    scavenge(support) at start: homes of         Group.usage(), .oom_kills()
       launchers that are gone                    Group.signal(SIGTERM), .kill(), .remove()

A hierarchy is named by a key: ``"unified"`` for cgroup v2, else the v1 controllers of its
mount (``"memory"``, ``"cpu,cpuacct"``). Three layouts are supported:

- pure v2: membership, kill (``cgroup.kill``), memory, pids and cpu all in one hierarchy;
- hybrid: a v2 hierarchy without controllers (membership, kill, ``cpu.stat``) beside v1
  memory, pids and cpu hierarchies (limits and accounting);
- pure v1: membership and kill through the freezer (freeze, SIGKILL every member, thaw).

Each launcher has a home in every hierarchy used, ``<own cgroup>/orchestrator-<pid>-<start
ticks>``, named after the launcher so that homes of launchers that are gone can be told
apart and cleaned up by anyone (:func:`scavenge`). Attempts get ``<home>/run-<n>``.

Only the standard library is used: the launcher imports this file by path.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import time
from typing import NamedTuple

__all__ = ["Group", "Support", "destroy", "probe", "scavenge"]

CONTROLLERS = ("memory", "pids", "cpu")
"""Controllers an attempt's cgroup needs: its limits and its accounting."""

HOME_PREFIX = "orchestrator-"
_HOME = re.compile(r"orchestrator-(\d+)-(\d+)")
EXIT_WAIT_SECONDS = 5.0
"""How long killed members may take to exit before a cgroup is given up on."""
_FREEZE_WAIT_SECONDS = 2.0
CPU_PERIOD_US = 100_000
RECYCLE_RESIDUE_BYTES = 256 * 1024
"""A group is used again only if its attempt left at most this much memory charged (page
cache of files it read): the next attempt's peak would start there."""


class Support(NamedTuple):
    """What this machine lets the orchestrator do with cgroups (from :func:`probe`).

    ``own`` maps each hierarchy used to this process's cgroup there (where homes are
    made); ``roles`` maps ``kill``, ``memory``, ``pids``, ``cpu`` and ``cpu_usage`` to the
    hierarchy that serves each; ``adopt`` is set when this process must first move the
    processes of its v2 cgroup into a leaf, ``supervisor``, so that the cgroup may hand
    controllers down (v2's rule: no processes beside child cgroups with controllers).
    """

    own: dict
    roles: dict
    adopt: bool
    detail: str

    def home(self, pid: int) -> "Plan":
        """Make the home of launcher ``pid`` in every hierarchy; its plan for the launcher.

        :raises OSError: if a directory cannot be made (it is then not left half made).
        """
        if self.adopt:
            _adopt(self.own["unified"])
        name = f"{HOME_PREFIX}{pid}-{_start_ticks(pid)}"
        homes = {key: os.path.join(path, name) for key, path in self.own.items()}
        made = []
        try:
            for key, path in homes.items():
                os.mkdir(path)
                made.append(path)
                if key == "unified":
                    _enable_controllers(path, self.roles)
        except OSError:
            for path in reversed(made):
                _rmdir(path)
            raise
        kept = {key: (os.path.join(path, "supervisor") if self.adopt and key == "unified"
                      else path) for key, path in self.own.items()}
        return Plan(homes, dict(self.roles), kept)


class Plan(NamedTuple):
    """One launcher's home; sent to it as a ``wire.CgroupPlan`` (the same fields)."""

    homes: dict
    roles: dict
    kept: dict


# -- finding where cgroups may be made ------------------------------------------------------------

def probe(proc: str = "/proc") -> Support | str:
    """Where this process may make cgroups for its attempts, or one sentence on why not.

    It tries: a ``mkdir`` and ``rmdir`` in each hierarchy it would use tell whether it may
    (root with a writable cgroupfs, a delegated subtree, ``Delegate=yes``).
    """
    try:
        mounts = _mounts(_read(f"{proc}/self/mountinfo"))
        own_paths = _own_paths(_read(f"{proc}/self/cgroup"))
    except OSError as error:
        return f"cannot read the cgroups of this process ({error.strerror})"
    dirs: dict[str, str] = {}
    for key, (mountpoint, root) in mounts.items():
        path = own_paths.get(key)
        if path is None:
            continue
        relative = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
        if relative.startswith(".."):
            continue  # our cgroup is outside what this mount shows
        dirs[key] = os.path.normpath(os.path.join(mountpoint, relative))
    if not dirs:
        return "no cgroup file system is mounted (looked in /proc/self/mountinfo)"

    roles: dict[str, str] = {}
    unified = dirs.get("unified")
    v2_controllers: set[str] = set()
    v2_problem = None
    if unified:
        v2_controllers = set(_read_quietly(f"{unified}/cgroup.controllers").split())
        v2_problem, files = _trial(unified)
        if v2_problem is None and ("cgroup.kill" in files or "cgroup.freeze" in files):
            roles["kill"] = "unified"
            roles["cpu_usage"] = "unified"  # cpu.stat: in every v2 cgroup, controller or not
    v1 = {key: key.split(",") for key in dirs if key != "unified"}
    for controller in CONTROLLERS:
        key = next((key for key, names in v1.items() if controller in names), None)
        if key is None and controller in v2_controllers:
            key = "unified"
        if key is not None:
            roles[controller] = key
    if "kill" not in roles:
        freezer = next((key for key, names in v1.items() if "freezer" in names), None)
        if freezer is None:
            return v2_problem or ("neither a cgroup v2 hierarchy with cgroup.kill nor a v1 "
                                  "freezer is mounted, so a cgroup could not be killed as a "
                                  "whole")
        roles["kill"] = freezer
    if "cpu_usage" not in roles:
        key = next((key for key, names in v1.items() if "cpuacct" in names), None)
        if key is not None:
            roles["cpu_usage"] = key
    missing = [name for name in (*CONTROLLERS, "cpu_usage") if name not in roles]
    if missing:
        names = ", ".join("cpuacct" if name == "cpu_usage" else name for name in missing)
        where = f" (cgroup v2 {_shown(unified)} offers: {' '.join(sorted(v2_controllers)) or 'none'})" \
            if unified else ""
        return (f"the {names} controller{'s are' if len(missing) > 1 else ' is'} not "
                f"available to this process{where}; with systemd, Delegate=yes hands them "
                f"to a service")
    used = {key: dirs[key] for key in set(roles.values())}
    adopt = False
    if roles.get("memory") == "unified" or roles.get("pids") == "unified" \
            or roles.get("cpu") == "unified":
        problem, adopt = _v2_delegation(dirs["unified"], mounts["unified"][0], roles)
        if problem:
            return problem
    for key, path in used.items():
        problem = v2_problem if key == "unified" else _trial(path)[0]
        if problem:
            return problem
    detail = _describe(roles, used)
    if "favordynmods" not in _options_of(_read_quietly(f"{proc}/self/mountinfo"), used):
        detail += ("; mounted without favordynmods, so moving a run's process into its cgroup "
                   "can hold up forks for milliseconds (the containment guide)")
    return Support(used, roles, adopt, detail)


def _options_of(mountinfo: str, used: dict) -> set[str]:
    """The super options of the mounts of the hierarchies used (favordynmods is global: set
    on any of them, it holds for all)."""
    options: set[str] = set()
    mountpoints = {os.path.normpath(path) for path in used.values()}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2") and any(
                path == _unescape(fields[4]) or path.startswith(_unescape(fields[4]) + "/")
                for path in mountpoints):
            options.update(tail[2].split(","))
    return options


def _describe(roles: dict, used: dict) -> str:
    """``cgroup v2 (/sys/fs/cgroup/unified) for membership and kill; v1 memory, pids, cpu``."""
    kill = roles["kill"]
    head = (f"cgroup v2 ({_shown(used[kill])}) for membership and kill" if kill == "unified"
            else f"cgroup v1 freezer ({_shown(used[kill])}) for membership and kill")
    v2 = [name for name in CONTROLLERS if roles[name] == "unified"]
    v1 = [name for name in CONTROLLERS if roles[name] != "unified"]
    parts = [head]
    if v2:
        parts.append(f"v2 {', '.join(v2)}")
    if v1:
        parts.append(f"v1 {', '.join(v1)}")
    return "; ".join(parts)


def _v2_delegation(path: str, mountpoint: str, roles: dict) -> tuple[str | None, bool]:
    """Whether the v2 cgroup ``path`` can hand the controllers down to child cgroups:
    ``(problem, adopt)``, adopt meaning its processes must first move into a leaf."""
    wanted = {name for name in CONTROLLERS if roles.get(name) == "unified"}
    enabled = set(_read_quietly(f"{path}/cgroup.subtree_control").split())
    if wanted <= enabled or os.path.normpath(path) == os.path.normpath(mountpoint):
        return None, False  # already handed down, or the root (which may hold processes)
    ours = _own_tree_pids()
    members = {int(pid) for pid in _read_quietly(f"{path}/cgroup.procs").split()}
    strangers = members - ours
    if strangers:
        return (f"cgroup v2 {_shown(path)} also holds processes that are not this "
                f"orchestrator's (pid {min(strangers)}), so it cannot hand controllers to "
                f"its runs; run the orchestrator in a cgroup of its own (systemd: "
                f"Delegate=yes, or systemd-run --scope -p Delegate=yes ...)"), False
    if not os.access(f"{path}/cgroup.subtree_control", os.W_OK):
        return (f"cgroup v2 {_shown(path)} is not delegated to this process (cannot write "
                f"its cgroup.subtree_control); with systemd, set Delegate=yes"), False
    return None, True


def _trial(path: str) -> tuple[str | None, set[str]]:
    """Make and remove a cgroup in ``path``: ``(why it failed, or None; its file names)``."""
    trial = os.path.join(path, f"{HOME_PREFIX}probe-{os.getpid()}")
    try:
        os.mkdir(trial)
    except FileExistsError:
        pass
    except OSError as error:
        fix = ("give the container a writable cgroup file system" if error.errno == errno.EROFS
               else "run as root, under systemd with Delegate=yes, or in a cgroup delegated "
                    "to this user")
        return f"cannot create cgroups in {_shown(path)} ({error.strerror}); {fix}", set()
    try:
        return None, set(os.listdir(trial))
    finally:
        _rmdir(trial)


def _mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Hierarchy key -> (mount point, root of the mount), from /proc/self/mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        kind, options = tail[0], tail[2]
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if kind == "cgroup2":
            found.setdefault("unified", (mountpoint, root))
        elif kind == "cgroup":
            names = [option for option in options.split(",")
                     if option not in ("rw", "ro") and "=" not in option]
            if names and "ro" not in options.split(","):
                found.setdefault(",".join(sorted(names)), (mountpoint, root))
    return found


def _own_paths(text: str) -> dict[str, str]:
    """Hierarchy key -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            paths["unified"] = path
        elif controllers and "=" not in controllers:
            paths[",".join(sorted(controllers.split(",")))] = path
    return paths


def _own_tree_pids() -> set[int]:
    """This process and its descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(name))
    found, stack = set(), [os.getpid()]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def _adopt(path: str) -> None:
    """Move every process of the v2 cgroup ``path`` into ``path/supervisor``, so that
    ``path`` may hand controllers down."""
    leaf = os.path.join(path, "supervisor")
    os.makedirs(leaf, exist_ok=True)
    for _ in range(10):  # a process forked meanwhile lands beside the ones moved
        members = _read_quietly(f"{path}/cgroup.procs").split()
        if not members:
            return
        for pid in members:
            try:
                _write(f"{leaf}/cgroup.procs", pid)
            except ProcessLookupError:
                pass


def _enable_controllers(home: str, roles: dict) -> None:
    """Hand the v2 controllers used down from the home's parent, and from the home."""
    wanted = [name for name in CONTROLLERS if roles.get(name) == "unified"]
    if not wanted:
        return
    line = " ".join(f"+{name}" for name in wanted)
    parent = os.path.dirname(home)
    if not set(wanted) <= set(_read_quietly(f"{parent}/cgroup.subtree_control").split()):
        _write(f"{parent}/cgroup.subtree_control", line)
    _write(f"{home}/cgroup.subtree_control", line)


# -- one attempt's cgroup -----------------------------------------------------------------------

class Group:
    """The cgroup of one attempt: a directory of the same name in the hierarchies used.

    The hierarchies for membership, kill, memory and CPU accounting are joined when a spare
    process is made; those for ``pids_limit`` and ``cpu_limit`` (separate v1 hierarchies on a
    hybrid machine) only by an attempt that sets one, at :meth:`limit`, before its job is
    handed over. A group whose attempt set no limit and left next to no memory charged is
    used again for the next spare (:meth:`recycle`); making and removing directories is most
    of what a cgroup costs per run.

    :param plan: the launcher's home (``wire.CgroupPlan`` or :class:`Plan`).
    """

    def __init__(self, plan, name: str):
        self.roles = plan.roles
        self.kept = plan.kept
        self.paths = {key: os.path.join(home, name) for key, home in plan.homes.items()}
        self.path = self.paths[self.roles["kill"]]  # the one shown to people
        self.core = {self.roles[role] for role in ("kill", "memory", "cpu_usage")}
        self.made: set[str] = set()
        self.limited = False
        self._cpu_start = 0.0
        self._oom_start: int | None = None  # read when a memory limit is set
        self._ending: tuple | None = None   # what finish() read: cpu total, memory now

    def create(self) -> None:
        """:raises OSError: if a directory cannot be made (none is then left)."""
        try:
            for key in self.core:
                self._make(key)
        except OSError:
            self.remove_quietly()
            raise
        self._reset_baselines()

    def _make(self, key: str) -> None:
        path = self.paths[key]
        try:
            os.mkdir(path)
        except FileExistsError:  # left by a run whose processes would not die
            _empty(path)
        self.made.add(key)

    def procs(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes itself into to join the group (the
        launcher's spares do, right after they are forked: a migration may wait on a lock of
        the kernel's for milliseconds, and the launcher must not)."""
        return [f"{self.paths[key]}/cgroup.procs" for key in sorted(self.made)]

    def add(self, pid: int) -> None:
        """Move ``pid`` (a process that has run no user code yet) into the group.

        :raises OSError: if the kernel refuses.
        """
        text = str(pid)
        for path in self.procs():
            _write(path, text)

    def limit(self, memory_bytes: int | None, pids: int | None,
              cpu_cores: float | None) -> list[str]:
        """Set the attempt's limits, before its job is handed to its process; returns the
        ``cgroup.procs`` files of hierarchies made for them, which that process must join
        before it runs anything (see :meth:`procs`).

        :raises OSError: if a limit cannot be set.
        """
        extra: list[str] = []
        if memory_bytes is None and pids is None and cpu_cores is None:
            return extra
        self.limited = True
        if memory_bytes is not None:
            self._oom_start = self._oom_count()
            path = self.paths[self.roles["memory"]]
            if self.roles["memory"] == "unified":
                _write(f"{path}/memory.max", str(memory_bytes))
                _write_if_exists(f"{path}/memory.swap.max", "0")
                _write_if_exists(f"{path}/memory.oom.group", "1")
            else:
                _write(f"{path}/memory.limit_in_bytes", str(memory_bytes))
                _write_if_exists(f"{path}/memory.memsw.limit_in_bytes", str(memory_bytes))
        if pids is not None:
            _write(f"{self._made_for(self.roles['pids'], extra)}/pids.max", str(pids))
        if cpu_cores is not None:
            path = self._made_for(self.roles["cpu"], extra)
            quota = max(1000, round(cpu_cores * CPU_PERIOD_US))
            if self.roles["cpu"] == "unified":
                _write(f"{path}/cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(f"{path}/cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(f"{path}/cpu.cfs_quota_us", str(quota))
        return extra

    def _made_for(self, key: str, extra: list[str]) -> str:
        """The directory in hierarchy ``key``; made now (and noted in ``extra``, for the
        attempt's process to join) if the group had none there."""
        if key not in self.made:
            self._make(key)
            extra.append(f"{self.paths[key]}/cgroup.procs")
        return self.paths[key]

    # -- reading ------------------------------------------------------------------------------

    def members(self) -> list[int]:
        """Pids in the cgroup now (in the kill hierarchy)."""
        return [int(pid) for pid in _read_quietly(f"{self.path}/cgroup.procs").split()]

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of every process of this attempt, alive or not."""
        return max(0.0, self._cpu_total() - self._cpu_start)

    def _cpu_total(self) -> float:
        key = self.roles["cpu_usage"]
        path = self.paths[key]
        if key == "unified":
            match = re.search(r"^usage_usec (\d+)", _read_quietly(f"{path}/cpu.stat"),
                              re.MULTILINE)
            return int(match.group(1)) / 1e6 if match else 0.0
        text = _read_quietly(f"{path}/cpuacct.usage").strip()
        return int(text) / 1e9 if text.isdigit() else 0.0

    def memory(self) -> tuple[int, int | None]:
        """``(bytes charged now, peak since the attempt began)``; the peak is None where the
        kernel keeps none (v2 before 5.19)."""
        key = self.roles["memory"]
        path = self.paths[key]
        if key == "unified":
            now, peak = "memory.current", "memory.peak"
        else:
            now, peak = "memory.usage_in_bytes", "memory.max_usage_in_bytes"
        current = _read_quietly(f"{path}/{now}").strip()
        highest = _read_quietly(f"{path}/{peak}").strip()
        return (int(current) if current.isdigit() else 0,
                int(highest) if highest.isdigit() else None)

    def processes(self) -> int:
        if self.roles["pids"] in self.made:
            text = _read_quietly(f"{self.paths[self.roles['pids']]}/pids.current").strip()
            if text.isdigit():
                return int(text)
        return len(self.members())

    def oom_kills(self) -> int:
        """Processes the kernel killed at the attempt's memory limit (0 without one)."""
        if self._oom_start is None:
            return 0
        return max(0, self._oom_count() - self._oom_start)

    def _oom_count(self) -> int:
        key = self.roles["memory"]
        name = "memory.events" if key == "unified" else "memory.oom_control"
        match = re.search(r"^oom_kill (\d+)", _read_quietly(f"{self.paths[key]}/{name}"),
                          re.MULTILINE)
        return int(match.group(1)) if match else 0

    def _reset_baselines(self, cpu_total: float | None = None) -> None:
        self._cpu_start = self._cpu_total() if cpu_total is None else cpu_total
        self._oom_start = None
        self._ending = None

    def finish(self) -> tuple[float, int | None, int]:
        """The figures of an attempt whose processes are all gone: ``(cpu seconds, peak
        memory or None, processes killed at the memory limit)``, each file read once."""
        cpu_total = self._cpu_total()
        current, peak = self.memory()
        self._ending = (cpu_total, current)
        return max(0.0, cpu_total - self._cpu_start), peak, self.oom_kills()

    # -- ending -------------------------------------------------------------------------------

    def signal(self, number: int) -> dict[int, int]:
        """Send ``number`` to every member; see :func:`signal_members`."""
        return signal_members(self.path, number)

    def kill(self) -> None:
        """SIGKILL every member, including any forked meanwhile.

        :raises OSError: if the cgroup cannot be written (the caller then signals the
            members one by one).
        """
        kill_cgroup(self.path, self.roles["kill"] == "unified")

    def release(self) -> None:
        """Move what is left in the cgroup to the launcher's own cgroups (a run that may keep
        processes, ``kill_leftovers=False``): they are no longer the attempt's."""
        for key in self.made:
            for _ in range(10):
                members = _read_quietly(f"{self.paths[key]}/cgroup.procs").split()
                if not members:
                    break
                for pid in members:
                    try:
                        _write(f"{self.kept[key]}/cgroup.procs", pid)
                    except ProcessLookupError:
                        pass

    def recycle(self) -> bool:
        """Make the group, empty since :meth:`finish`, ready for another attempt; False if it
        should be removed instead (it had limits, or more than a trace of memory is still
        charged to it, or its memory peak cannot be reset)."""
        if self.limited or self.made != self.core or self.roles["memory"] == "unified":
            return False
        if self._ending is None:  # a spare that never ran a job
            self._ending = (None, self.memory()[0])
        cpu_total, residue = self._ending
        if residue > RECYCLE_RESIDUE_BYTES:
            return False
        try:  # the peak, from now on
            _write(f"{self.paths[self.roles['memory']]}/memory.max_usage_in_bytes", "0")
        except OSError:
            return False
        self._reset_baselines(cpu_total)
        return True

    def remove(self) -> None:
        """Remove the directories; :raises OSError: if one cannot be removed (not empty)."""
        problem = None
        for key in list(self.made):
            try:
                os.rmdir(self.paths[key])
            except FileNotFoundError:
                pass
            except OSError as error:
                problem = problem or error
                continue
            self.made.discard(key)
        if problem is not None:
            raise problem

    def remove_quietly(self) -> None:
        try:
            self.remove()
        except OSError:
            pass


def signal_members(path: str, number: int) -> dict[int, int]:
    """Signal every process of the cgroup directory ``path``; returns pid -> pidfd of those
    signalled (the caller closes them; each becomes readable when its process has exited).

    Each pid is pinned with a pidfd and signalled only if the cgroup still lists it after
    that, so a pid reused by another process in between is never signalled.
    """
    pidfds = {}
    for pid in _read_quietly(f"{path}/cgroup.procs").split():
        try:
            pidfds[int(pid)] = os.pidfd_open(int(pid))
        except OSError:
            pass
    still = set(_read_quietly(f"{path}/cgroup.procs").split())
    signalled = {}
    for pid, pidfd in pidfds.items():
        if str(pid) in still:
            try:
                signal.pidfd_send_signal(pidfd, number)
            except ProcessLookupError:
                pass
            signalled[pid] = pidfd
        else:
            os.close(pidfd)
    return signalled


def kill_cgroup(path: str, v2: bool) -> None:
    """SIGKILL every process of a cgroup: v2 ``cgroup.kill`` (or freeze, kill, thaw on a
    kernel without it), v1 through its freezer directory ``path``.

    :raises OSError: if the cgroup cannot be written.
    """
    if v2 and os.path.exists(f"{path}/cgroup.kill"):
        _write(f"{path}/cgroup.kill", "1")
        return
    name, frozen, thawed = ("cgroup.freeze", "1", "0") if v2 else \
        ("freezer.state", "FROZEN", "THAWED")
    _write(f"{path}/{name}", frozen)
    try:
        deadline = time.monotonic() + _FREEZE_WAIT_SECONDS
        while not _is_frozen(path, v2) and time.monotonic() < deadline:
            time.sleep(0.001)
        for pidfd in signal_members(path, signal.SIGKILL).values():
            os.close(pidfd)
    finally:
        _write(f"{path}/{name}", thawed)


def _is_frozen(path: str, v2: bool) -> bool:
    if v2:
        return "frozen 1" in _read_quietly(f"{path}/cgroup.events")
    return _read_quietly(f"{path}/freezer.state").strip() == "FROZEN"


def _empty(path: str) -> None:
    """Kill what a cgroup directory holds and wait for it to go."""
    for pidfd in signal_members(path, signal.SIGKILL).values():
        _wait_exit(pidfd)


def _wait_exit(pidfd: int, timeout: float = EXIT_WAIT_SECONDS) -> bool:
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


# -- cleaning up after launchers ---------------------------------------------------------------

def destroy(plan) -> int:
    """Kill every process under a launcher's home and remove it (the launcher is gone).

    :returns: how many processes were killed.
    """
    kill_key = plan.roles["kill"]
    killed = 0
    groups = _children(plan.homes[kill_key])
    for name in groups:
        path = os.path.join(plan.homes[kill_key], name)
        try:
            kill_cgroup(path, kill_key == "unified")
        except OSError:
            pass  # the members are signalled one by one below
        pidfds = signal_members(path, signal.SIGKILL)  # what is left, and to wait for
        killed += len(pidfds)
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        for pidfd in pidfds.values():
            _wait_exit(pidfd, max(0.0, deadline - time.monotonic()))
    for key, home in plan.homes.items():
        for name in _children(home):
            path = os.path.join(home, name)
            if key != kill_key:  # a process that joined only some hierarchies
                for pidfd in signal_members(path, signal.SIGKILL).values():
                    killed += 1
                    _wait_exit(pidfd)
            _rmdir(path)
        _rmdir(home)
    return killed


def scavenge(support: Support) -> list[str]:
    """Destroy the homes, beside this process's, of launchers that are gone (an orchestrator
    that died with its launcher leaves them); returns their names."""
    names = set()
    for path in support.own.values():
        for name in _children(path):
            match = _HOME.fullmatch(name)
            if match and not _alive(int(match.group(1)), int(match.group(2))):
                names.add(name)
    for name in sorted(names):
        homes = {key: os.path.join(path, name) for key, path in support.own.items()
                 if os.path.isdir(os.path.join(path, name))}
        if support.roles["kill"] in homes:
            destroy(Plan(homes, support.roles, dict(support.own)))
        else:
            for home in homes.values():
                for child in _children(home):
                    _empty(os.path.join(home, child))
                    _rmdir(os.path.join(home, child))
                _rmdir(home)
    return sorted(names)


# -- files ------------------------------------------------------------------------------------

def _children(path: str) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(path) if entry.is_dir()]
    except OSError:
        return []


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read()


def _read_quietly(path: str) -> str:
    """The file's text, or "" when it cannot be read (gone, or not on this kernel)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_if_exists(path: str, text: str) -> None:
    try:
        _write(path, text)
    except FileNotFoundError:
        pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def _alive(pid: int, start_ticks: int) -> bool:
    """Whether the process ``pid`` started at ``start_ticks`` still runs (a zombie does not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z" and int(fields[19]) == start_ticks


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def _shown(path: str | None) -> str:
    return path or "?"
