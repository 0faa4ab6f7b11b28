"""What runs on each node of a Ray cluster for a :class:`~orchestrator.execution.ray.RayExecutor`.

::

    orchestrator (driver)          Ray task (placed by Ray)         NodeLauncher actor (one per node)
    ---------------------          ------------------------         ---------------------------------
    attempt.remote(spec)  ------>  connect to the node's socket
                                   Begin(key, spec) ------------->  ProcessExecutor.submit_run(spec)
                                                                    (a warm launcher forks it into
                                                                    a cgroup of its own)
    future.set_started   <-- yield <-- Started -------------------  the process exists
    future.usage         <-- yield <-- Sample  -------------------  every sample interval
    future.set_result    <-- yield <-- Finished ------------------  the attempt ended
    kill: actor.kill(key) ----------------------------------------->  TERM, grace, KILL the tree

Ray places the task, with the run's ``num_cpus``, ``memory`` and custom resources, and holds
them while the task waits on its socket; the attempt itself runs under the node's own
process engine, with the same containment, limits and accounting as on one machine. The task
yields each message as it comes (a streaming generator), so the driver learns the start at
once without polling.

When the driver dies, Ray kills its actors; the launcher of each sees its actor gone and
kills every run it started. When a task goes away (cancelled, or its worker died), its
connection closes and the actor kills the run.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import tempfile
import threading
import time
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..runs import Outcome
from .base import AttemptResult, Usage

__all__ = ["Begin", "Finished", "NeedLauncher", "NodeLauncher", "Sample", "Started", "attempt",
           "socket_path"]

#: How long a task waits for its node's launcher to appear, after asking the driver for one.
LAUNCHER_WAIT_SECONDS = 120.0

_LENGTH = struct.Struct("!I")


class Begin(NamedTuple):
    """Task -> launcher: run this attempt (``spec`` is a pickled RunSpec)."""

    key: str
    spec: bytes


class Started(NamedTuple):
    """Launcher -> driver: the attempt's process exists."""

    pid: int | None
    pid_create_time: float | None
    cgroup: str | None
    started_epoch: float
    node: str
    host: str


class Sample(NamedTuple):
    """Launcher -> driver: a live sample of the attempt's processes."""

    usage: Usage


class Finished(NamedTuple):
    """Launcher -> driver: how the attempt ended."""

    result: AttemptResult


class NeedLauncher(NamedTuple):
    """Task -> driver: this node has no launcher of yours yet; make one."""

    node: str


def socket_path(token: str, node: str) -> str:
    """Where the launcher of the driver ``token`` listens on ``node`` (a node-local path)."""
    return os.path.join(tempfile.gettempdir(), f"orchestrator-ray-{token}-{node[:16]}.sock")


def _sweep_stale_sockets() -> None:
    """Remove the sockets of launchers that died without closing (their driver was killed
    with SIGKILL, their node lost power): this account's, bound over a minute ago, and
    answering no one."""
    folder = tempfile.gettempdir()
    for name in os.listdir(folder):
        if not (name.startswith("orchestrator-ray-") and name.endswith(".sock")):
            continue
        path = os.path.join(folder, name)
        try:
            facts = os.lstat(path)
            if facts.st_uid != os.getuid() or time.time() - facts.st_mtime < 60:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
        except ConnectionRefusedError:
            try:
                os.unlink(path)
            except OSError:
                pass
        except OSError:
            continue


# -- the task -----------------------------------------------------------------------------------

def attempt(token: str, key: str, spec: bytes):
    """The Ray task of one attempt: hand it to this node's launcher and yield what the
    launcher says until it ends. Holding the task's resources is its whole job."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    path = socket_path(token, node)
    connection = _connect(path)
    if connection is None:  # none yet, or a dead one's socket
        yield NeedLauncher(node)
        deadline = time.monotonic() + LAUNCHER_WAIT_SECONDS
        while connection is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no orchestrator launcher appeared on node {node[:12]} "
                                   f"within {LAUNCHER_WAIT_SECONDS:g}s")
            time.sleep(0.02)
            connection = _connect(path)
    try:
        _send(connection, Begin(key, spec))
        while True:
            message = _receive(connection)
            if message is None:
                raise RuntimeError(f"the orchestrator's launcher on node {node[:12]} went "
                                   f"away during the run")
            yield message
            if isinstance(message, Finished):
                return
    finally:
        connection.close()  # the launcher kills a run whose task is gone


def _connect(path: str) -> socket.socket | None:
    """A connection to the launcher listening at ``path``, or None if none listens there."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        connection.close()
        return None
    return connection


# -- the launcher actor -------------------------------------------------------------------------

class NodeLauncher:
    """One per node and driver: a process engine (warm launcher, cgroups) serving the
    attempts that Ray placed on this node, over a Unix socket only this account may use."""

    def __init__(self, token: str, containment: str, sample_interval: float) -> None:
        import ray

        from .process import ProcessExecutor

        self.node = ray.get_runtime_context().get_node_id()
        self.host = socket.gethostname()
        self.sample_interval = sample_interval
        self.executor = ProcessExecutor(containment=containment,
                                        sample_interval=sample_interval, main_script=False)
        self.executor.start()
        self._lock = threading.Lock()
        self._runs: dict[str, Any] = {}  # key -> RunFuture
        self._refused: dict[str, str] = {}  # key -> outcome: killed before it came here
        self._closed = False
        self.path = socket_path(token, self.node)
        _sweep_stale_sockets()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)  # the socket is the owner's alone from its first instant
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True,
                         name="orchestrator-node-accept").start()

    def describe(self) -> dict:
        """Where this launcher is and how it contains runs."""
        return {"node": self.node, "host": self.host, "pid": os.getpid(),
                "containment": self.executor.containment,
                "detail": self.executor.containment_detail}

    def kill(self, key: str, outcome: str, immediately: bool) -> bool:
        """Kill the attempt ``key`` (TERM, grace, KILL); False if it is not running here."""
        with self._lock:
            future = self._runs.get(key)
        if future is None:
            return False
        future.kill(Outcome(outcome), immediately)
        return True

    def refuse(self, key: str, outcome: str) -> None:
        """The attempt ``key`` was killed before the driver knew where it runs: kill it if
        it runs here, and never start it should its task still come here."""
        with self._lock:
            future = self._runs.get(key)
            if future is None:
                if len(self._refused) >= 10_000:
                    self._refused.clear()
                self._refused[key] = outcome
        if future is not None:
            future.kill(Outcome(outcome))

    def output(self, key: str, stdout_from: int, stderr_from: int):
        """What the attempt ``key`` wrote after those offsets, or None if it is not running."""
        with self._lock:
            future = self._runs.get(key)
        if future is None:
            return None
        answer = self.executor.output(future, stdout_from, stderr_from)
        return None if answer is None else answer.result(10)

    def close(self) -> None:
        """Kill every attempt, wait until their processes are gone, stop serving."""
        self._closed = True
        try:
            self._listener.close()
            os.unlink(self.path)
        except OSError:
            pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- serving ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True,
                             name="orchestrator-node-run").start()

    def _serve(self, connection: socket.socket) -> None:
        """One attempt, from its Begin to its Finished; killed if its task goes away."""
        with connection:
            begin = _receive(connection)
            if not isinstance(begin, Begin):
                return
            send_lock = threading.Lock()

            def send(message) -> None:
                with send_lock:
                    try:
                        _send(connection, message)
                    except OSError:
                        pass  # the task is gone; the loop below kills the run

            with self._lock:
                refused = self._refused.pop(begin.key, None)
            if refused is not None:
                now = datetime.now(timezone.utc)
                send(Finished(AttemptResult(Outcome(refused), now, now,
                                            error=f"killed ({refused}) before it started")))
                return
            try:
                spec = pickle.loads(begin.spec)
            except BaseException as error:
                now = datetime.now(timezone.utc)
                send(Finished(AttemptResult(
                    Outcome.FAILED, now, now,
                    error=f"cannot load the run on node {self.node[:12]}: "
                          f"{type(error).__name__}: {error}")))
                return
            future = self.executor.submit_run(spec)
            with self._lock:
                self._runs[begin.key] = future
            future.add_start_callback(lambda started: send(Started(
                started.pid, started.pid_create_time, started.cgroup,
                (started.started_at or datetime.now(timezone.utc)).timestamp(), self.node,
                self.host)))
            future.add_done_callback(lambda done: send(_finished(done.result())))
            sent = None
            while not future.done():
                readable, _, _ = select.select([connection], [], [], self.sample_interval)
                if readable and not connection.recv(1):  # the task is gone
                    future.kill(Outcome.CANCELLED)
                    break
                usage = future.usage
                if usage is not None and usage is not sent and not future.done():
                    send(Sample(usage))
                    sent = usage
            future.result()
            with self._lock:
                self._runs.pop(begin.key, None)


def _finished(result: AttemptResult) -> Finished:
    """The Finished message, with a result the driver can unpickle or an error saying why
    not."""
    try:
        pickle.dumps(result.result)
    except Exception as error:
        return Finished(AttemptResult(
            Outcome.FAILED, result.started_at, result.ended_at, pid=result.pid,
            error=f"the result cannot be sent to the orchestrator: {type(error).__name__}: "
                  f"{error}", cpu_seconds=result.cpu_seconds,
            peak_rss_bytes=result.peak_rss_bytes, stdout_tail=result.stdout_tail,
            stderr_tail=result.stderr_tail, stdout_bytes=result.stdout_bytes,
            stderr_bytes=result.stderr_bytes))
    return Finished(result)


# -- framing ------------------------------------------------------------------------------------

def _send(connection: socket.socket, message) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    connection.sendall(_LENGTH.pack(len(data)) + data)


def _receive(connection: socket.socket):
    """The next message, or None at the end of the stream."""
    header = _exactly(connection, _LENGTH.size)
    if header is None:
        return None
    body = _exactly(connection, _LENGTH.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _exactly(connection: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        try:
            chunk = connection.recv(min(size, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
