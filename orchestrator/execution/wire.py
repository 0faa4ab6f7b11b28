"""The messages between the orchestrator, its launcher and a run's process, as types.

Both sides import this one module: the orchestrator as ``orchestrator.execution.wire``, the
launcher (which never imports the package) by path. Only the standard library is used.

::

    orchestrator  --Init, Run, Kill, KillAll, TailRequest, Ping-->                      launcher
    orchestrator  <--Ready, Started, StartFailed, Usage, TailReply, Finished, Pong, Log--  launcher
    launcher      --[Join] FunctionJob | CommandJob-->         run process
    launcher      <--Returned | Raised--                       run process (one frame)

On the socket and the pipes a message is a frame: an 8-byte big-endian length, then the
pickled message. A message type is found by its name on loading, so the two processes may
load this file under different module names.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import NamedTuple

TAIL_BYTES = 64 * 1024
"""How much of the end of stdout and of stderr an attempt keeps."""

RUN_TOKEN_VARIABLE = "ORCHESTRATOR_RUN_TOKEN"
"""Environment variable that marks every process of one attempt."""

IMPORTING_VARIABLE = "ORCHESTRATOR_LAUNCHER_IMPORTING"
"""Set in the launcher while it imports user modules: a run submitted then comes from a
script without a ``__main__`` guard."""

FRAME = struct.Struct(">Q")

MODULE_NAMES = ("orchestrator.execution.wire", "_orchestrator_wire")
"""This module's name in the orchestrator, and in the launcher (which loads it by path)."""


# -- orchestrator -> launcher --------------------------------------------------------------------

class CgroupPlan(NamedTuple):
    """Where the launcher makes one cgroup per attempt (see ``cgroups.py``)."""

    homes: dict          # hierarchy key -> the launcher's home directory there
    roles: dict          # kill, memory, pids, cpu, cpu_usage -> the hierarchy key serving it
    kept: dict           # hierarchy key -> cgroup that takes processes a run may keep


class Init(NamedTuple):
    preparation: dict            # multiprocessing.spawn preparation data
    sample_interval: float
    cgroups: CgroupPlan | None   # None: process groups only


class Limits(NamedTuple):
    """What the launcher needs to know of one attempt, besides the job it passes on."""

    program: str                  # the worker's name, or the command's argv[0], for messages
    timeout: float | None
    grace: float
    memory_limit_mb: float | None
    pids_limit: int | None
    cpu_limit: float | None       # cores
    kill_leftovers: bool
    cwd: str | None               # as configured
    workdir: str                  # where the run starts
    function: bool
    user: str | None
    sys_path: list | None         # function runs: where their modules are found
    warm: bool                    # unpickling the job runs no user code (see _launcher)
    max_result_bytes: int         # the largest pickled result accepted
    stall: float | None = None    # seconds without CPU or output that end the run (stalled)


class Run(NamedTuple):
    job_id: int
    limits: Limits
    token: str
    child_job: bytes              # an encoded FunctionJob or CommandJob, passed on unread
    modules: list                 # modules of the function and argument, to import ahead


class Kill(NamedTuple):
    job_id: int
    outcome: str
    error: str
    immediately: bool


class KillAll(NamedTuple):
    outcome: str
    error: str


class TailRequest(NamedTuple):
    """What a running attempt has written after these offsets (``logs -f``)."""

    job_id: int
    request: int
    stdout_from: int
    stderr_from: int


class Ping(NamedTuple):
    """Sent while the launcher has work; it answers with a Pong at once."""

    number: int


# -- launcher -> orchestrator --------------------------------------------------------------------

class Started(NamedTuple):
    job_id: int
    pid: int
    start_ticks: int | None       # /proc/PID/stat start time, clock ticks since boot
    started_epoch: float
    cgroup: str | None            # the attempt's cgroup (in the kill hierarchy), if any


class StartFailed(NamedTuple):
    job_id: int
    message: str


class Sample(NamedTuple):
    job_id: int
    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int
    processes: int
    sampled_at: float             # launcher's time.monotonic()


class Usage(NamedTuple):
    samples: list                 # of Sample


class Ending(NamedTuple):
    """How a reaped attempt ended, as the launcher saw it."""

    status: int | None            # wait status of the run's process
    cpu_seconds: float | None
    peak_rss_bytes: int | None
    started_epoch: float
    ended_epoch: float
    stdout: bytes
    stderr: bytes
    result: bytes                 # the run process's result frame (functions)
    kill_outcome: str | None      # set when the launcher ended it (timeout, kill, memory)
    kill_error: str | None
    oom_kills: int                # processes the kernel killed at the memory limit
    whole_tree: bool              # cpu and peak cover the whole tree (a cgroup)
    stdout_total: int             # bytes written in all (the tails keep the end)
    stderr_total: int


class Finished(NamedTuple):
    job_id: int
    ending: Ending


class Pong(NamedTuple):
    number: int


class TailReply(NamedTuple):
    request: int
    found: bool                   # False: the attempt is no longer running
    stdout: bytes                 # what came after the offset asked for (within the tail)
    stdout_total: int             # bytes written in all
    stderr: bytes
    stderr_total: int


class Ready(NamedTuple):
    """The launcher has prepared (imported the main script) and serves runs."""

    problem: str | None           # why the main script could not be loaded, if it could not


class Log(NamedTuple):
    """A line for the orchestrator's log (the launcher has none of its own)."""

    level: str
    text: str


# -- launcher -> run process, and back ---------------------------------------------------------

class Join(NamedTuple):
    """Sent ahead of a job: the run's process moves itself into these cgroups first (their
    ``cgroup.procs`` files), so no process of the run is ever outside them."""

    procs: list

class FunctionJob(NamedTuple):
    sys_path: list
    cwd: str | None
    environment: dict | None      # the whole environment, when it differs from the launcher's
    variables: dict               # the run's own variables (token, env, HOME of a user)
    call: bytes                   # pickled (function, pass_argument, argument)
    identity: tuple | None        # (name, uid, gid) to switch to
    max_result_bytes: int         # a bigger pickled result fails the run


class CommandJob(NamedTuple):
    argv: list
    cwd: str | None
    environment: dict | None
    variables: dict
    identity: tuple | None


class Returned(NamedTuple):
    type_name: str
    value: bytes                  # pickled, unpickled only in the orchestrator


class Raised(NamedTuple):
    error: str                    # one line
    traceback: str


MESSAGES = {kind.__name__: kind for kind in (
    CgroupPlan, Init, Limits, Run, Kill, KillAll, TailRequest, TailReply, Ping, Pong, Ready,
    Started, StartFailed,
    Sample, Usage, Ending, Finished, Log, Join, FunctionJob, CommandJob, Returned, Raised)}


def encode(message: tuple) -> bytes:
    """One frame holding ``message``."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(body)) + body


def decode(body) -> tuple:
    """The message of a frame's body (the bytes after its length).

    :raises pickle.UnpicklingError: for a body that holds anything but messages of this
        module and plain values.
    """
    return _Unpickler(io.BytesIO(body)).load()


class _Unpickler(pickle.Unpickler):
    """Finds this module's types by name, whatever module name the sender loaded it as."""

    def find_class(self, module: str, name: str):
        if name in MESSAGES and module in MODULE_NAMES:
            return MESSAGES[name]
        return super().find_class(module, name)
