"""Run attempts on a Ray cluster, each contained on its node as the process engine does.

The scheduler, admission and state stay in the orchestrator (the Ray driver); only attempts
go to the cluster. Each attempt is a Ray task that Ray places with the run's resources; on
its node it hands the attempt to a launcher actor, which runs it under the node's own
:class:`~orchestrator.execution.process.ProcessExecutor` (a fresh process from a warm
launcher, a cgroup of its own where the node allows one). See ``ray_node.py`` for the node
side and the messages.

One asyncio loop on a thread of its own follows every attempt's task: submitting, reading
what the task yields, and completing the futures. Nothing here blocks the caller of
:meth:`RayExecutor.submit_run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import os
import pickle
import secrets
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from loguru import logger

from ..errors import ConfigError, OrchestratorError
from ..runs import Outcome
from . import ray_node
from .base import AttemptResult, Output, RunExecutor, RunFuture, RunSpec

__all__ = ["RayExecutor", "RayUnavailableError"]

#: How long start() waits for the launcher actors of the nodes there are.
LAUNCHERS_READY_SECONDS = 120.0

#: How long a failed attempt waits for Ray to say whether its node died (Ray marks a
#: silent node dead after missing its health checks for several seconds).
NODE_LOST_SECONDS = 45.0

#: How long a launcher has to answer before it is taken for dead and replaced.
LAUNCHER_ANSWER_SECONDS = 10.0

#: How long start() tries to reach the cluster's address before giving up.
CONNECT_SECONDS = 10.0


#: For each node's launcher actor: Ray must not SIGKILL the actor's children when the actor
#: exits (its driver gone, say); its child, the node's process engine, sees the actor gone
#: and kills every run's whole tree (a cgroup's every process) before it exits.
LAUNCHER_ENVIRONMENT = {"RAY_kill_child_processes_on_worker_exit": "false"}


class RayUnavailableError(OrchestratorError):
    """The Ray cluster cannot be reached, or Ray is not installed."""


@dataclasses.dataclass(eq=False)
class _Attempt:
    key: str
    future: RunFuture
    spec: RunSpec
    task: Any = None                     # the streaming generator of its task, once submitted
    node: str | None = None              # where it runs, once started
    kill: tuple[Outcome, bool] | None = None  # asked for before the node was known
    result: AttemptResult | None = None


class RayExecutor(RunExecutor):
    """Runs each attempt as a Ray task, contained on its node by a cgroup of its own (or a
    process group where the node cannot make cgroups).

    :param address: the cluster's address (``"HOST:PORT"`` of its head, or ``"auto"``);
        ``None`` starts a local Ray for this process alone.
    :param containment: what each node's launcher uses: ``"auto"``, ``"cgroup"`` or
        ``"process-group"`` (as :class:`~orchestrator.execution.process.ProcessExecutor`).
    :param sample_interval: seconds between two live samples of a running attempt.
    :param ray_init_kwargs: passed to ``ray.init`` (``runtime_env={"working_dir": "."}`` to
        ship the workers' code to the nodes, for example).
    :raises RayUnavailableError: from :meth:`start`, naming the address, when the cluster
        cannot be reached.
    """

    containment = "unknown"

    def __init__(self, address: str | None = None, *, containment: str = "auto",
                 sample_interval: float = 1.0, **ray_init_kwargs: Any) -> None:
        from .process import CONTAINMENTS

        if containment not in CONTAINMENTS:
            raise ConfigError(f"orchestrator: containment must be one of "
                              f"{', '.join(map(repr, CONTAINMENTS))}, got {containment!r}",
                              field="containment")
        self.address = address
        self.containment_detail = (f"decided by each node of "
                                   f"{'a local Ray' if address is None else f'Ray at {address}'}"
                                   f" once connected ({containment})")
        self.node_containment = containment
        self.sample_interval = sample_interval
        self.ray_init_kwargs = ray_init_kwargs
        self._lock = threading.Lock()
        self._attempts: dict[RunFuture, _Attempt] = {}
        self._launchers: dict[str, Any] = {}      # node id -> its launcher actor
        self._nodes: dict[str, dict] = {}         # node id -> what its launcher described
        self._keys = itertools.count(1)
        self._token = secrets.token_hex(6)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started_ray = False
        self._shutdown = False
        self._task = None
        self._actor = None

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the cluster (or start a local Ray), start a launcher on every node,
        and say how they contain runs.

        :raises RayUnavailableError: naming the address, if the cluster cannot be reached.
        """
        if self._loop is not None:
            return
        ray = _import_ray()
        if not ray.is_initialized():
            self._connect(ray)
        self._task = ray.remote(ray_node.attempt)
        self._actor = ray.remote(ray_node.NodeLauncher)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="orchestrator-ray")
        self._thread.start()
        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
        described = [self._launcher(node).describe.remote() for node in nodes]
        try:
            found = ray.get(described, timeout=LAUNCHERS_READY_SECONDS)
        except Exception as error:
            raise RayUnavailableError(f"the orchestrator's launchers did not start on the "
                                      f"cluster's nodes: {_one_line(error)}") from None
        for node in found:
            self._nodes[node["node"]] = node
        self._describe_containment()
        logger.info("running attempts on a Ray cluster of {} node(s): {}", len(found),
                    self.containment_detail)

    @property
    def nodes(self) -> list[dict]:
        """The nodes with a launcher of this executor: for each, its ``node`` id, ``host``,
        the launcher actor's ``pid`` there, its ``containment`` and ``detail``."""
        with self._lock:
            return [dict(node) for node in self._nodes.values()]

    def submit_run(self, spec: RunSpec) -> RunFuture:
        """Place one attempt on the cluster and return its future at once; the future's
        ``placement`` says what it waits for until a node starts it."""
        future = RunFuture(spec, self._request_kill)
        future.set_running_or_notify_cancel()
        if self._shutdown or self._loop is None:
            raise RuntimeError("cannot submit a run to a RayExecutor before start() or after "
                               "shutdown()")
        future.placement = f"waiting for a node with {_resources_text(spec)}"
        attempt = _Attempt(f"{spec.run_id}.{spec.attempt}.{next(self._keys)}", future, spec)
        with self._lock:
            self._attempts[future] = attempt
        following = asyncio.run_coroutine_threadsafe(self._follow(attempt), self._loop)
        following.add_done_callback(lambda done: self._followed(attempt, done))
        return future

    def output(self, future: RunFuture, stdout_from: int = 0,
               stderr_from: int = 0) -> concurrent.futures.Future | None:
        """A future of what the running attempt wrote after those offsets (its result is
        None if the attempt has ended or has not started)."""
        with self._lock:
            attempt = self._attempts.get(future)
            launcher = self._launchers.get(attempt.node) if attempt and attempt.node else None
        if launcher is None:
            answer: concurrent.futures.Future = concurrent.futures.Future()
            answer.set_result(None)
            return answer
        return launcher.output.remote(attempt.key, stdout_from, stderr_from).future()

    def kill_all(self, outcome: Outcome = Outcome.CANCELLED) -> None:
        """Kill every attempt in progress; each completes with ``outcome``."""
        with self._lock:
            futures = list(self._attempts)
        for future in futures:
            future.kill(outcome)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no new attempts; optionally kill those in progress; with ``wait``, return
        once they have ended and every node's launcher has stopped."""
        self._shutdown = True
        if cancel_futures:
            self.kill_all(Outcome.CANCELLED)
        if not wait or self._loop is None:
            return
        with self._lock:
            futures = list(self._attempts)
        concurrent.futures.wait(futures)
        import ray

        with self._lock:
            launchers, self._launchers = list(self._launchers.values()), {}
        closing = [launcher.close.remote() for launcher in launchers]
        try:
            ray.get(closing, timeout=60)
        except Exception as error:  # a node lost meanwhile: its launcher went with it
            logger.warning("Ray: a node's launcher did not close: {}", _one_line(error))
        for launcher in launchers:
            ray.kill(launcher)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None
        if self._started_ray:
            ray.shutdown()

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self, ray) -> None:
        address = self.address
        if address is None:
            target = "local"
        else:
            target = address
            if address not in ("auto", "local"):
                _reachable(address)
        kwargs = {"include_dashboard": False, "log_to_driver": False, **self.ray_init_kwargs}
        try:
            ray.init(address=target, **kwargs)
        except (KeyboardInterrupt, RayUnavailableError):
            raise
        except BaseException as error:  # ray.init may even raise SystemExit
            where = "a local Ray" if address is None else f"the Ray cluster at {address}"
            hint = ""
            if address is not None and os.environ.get("RAY_AUTH_MODE") != "token":
                hint = ("; a cluster started by 'ray start' asks for its token: set "
                        "RAY_AUTH_MODE=token, with the head's ~/.ray/auth_token here (or "
                        "RAY_AUTH_TOKEN)")
            raise RayUnavailableError(f"cannot connect to {where}: {_one_line(error)}{hint}"
                                      ) from None
        self._started_ray = True

    def _launcher(self, node: str):
        """The launcher actor of ``node``, created on that node if it has none yet."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            launcher = self._launchers.get(node)
            if launcher is None:
                launcher = self._actor.options(
                    num_cpus=0, max_concurrency=1000,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                    runtime_env={"env_vars": LAUNCHER_ENVIRONMENT},
                ).remote(self._token, self.node_containment, self.sample_interval)
                self._launchers[node] = launcher
            return launcher

    def _add_node(self, node: str) -> None:
        """A node that joined after start(): give it a launcher, and note it once ready."""
        with self._lock:
            known = node in self._launchers
        launcher = self._launcher(node)
        if known:
            return

        async def described() -> None:
            try:
                found = await launcher.describe.remote()
            except Exception as error:
                logger.error("Ray: the launcher on node {} did not start: {}", node[:12],
                             _one_line(error))
                return
            with self._lock:
                self._nodes[node] = found
            self._describe_containment()
            logger.info("Ray: node {} ({}) joined: {}", found["host"], node[:12],
                        found["detail"])

        asyncio.ensure_future(described())

    def _describe_containment(self) -> None:
        kinds = {node["containment"] for node in self._nodes.values()}
        self.containment = kinds.pop() if len(kinds) == 1 else "mixed"
        hosts = ", ".join(f"{node['host']} ({node['node'][:8]}): {node['detail']}"
                          for node in self._nodes.values())
        where = "a local Ray" if self.address is None else f"Ray at {self.address}"
        self.containment_detail = f"{where}, on each node: {hosts}"

    # -- following an attempt (on the loop's thread) ----------------------------------------

    async def _follow(self, attempt: _Attempt) -> None:
        spec, future = attempt.spec, attempt.future
        try:
            payload = _pickle_spec(spec)
        except Exception as error:
            self._complete(attempt, _failed(f"cannot pickle the run for the cluster: "
                                            f"{type(error).__name__}: {error}"))
            return
        options: dict[str, Any] = {"num_cpus": spec.num_cpus, "name": spec.worker,
                                   "num_returns": "streaming", "max_retries": 0}
        if spec.memory_mb is not None:
            options["memory"] = int(spec.memory_mb * 1024 * 1024)
        if spec.resources:
            options["resources"] = dict(spec.resources)
        if attempt.kill is not None:  # killed before it was placed
            self._complete(attempt, _killed(attempt.kill[0], "before it was placed"))
            return
        attempt.task = self._task.options(**options).remote(self._token, attempt.key, payload)
        try:
            async for reference in attempt.task:
                message = await reference
                if isinstance(message, ray_node.NeedLauncher):
                    self._add_node(message.node)
                elif isinstance(message, ray_node.Started):
                    self._started(attempt, message)
                elif isinstance(message, ray_node.Sample):
                    future.usage = message.usage
                elif isinstance(message, ray_node.Finished):
                    attempt.result = message.result
        except Exception as error:
            self._complete(attempt, await self._lost(attempt, error))
            return
        self._complete(attempt, attempt.result or _crashed(
            attempt, "the attempt's task ended without a result"))

    def _followed(self, attempt: _Attempt, following: concurrent.futures.Future) -> None:
        """A fault here must not leave the attempt's future waiting forever."""
        error = following.exception()
        if error is not None and not attempt.future.done():
            logger.opt(exception=error).error("Ray: following run {} failed", attempt.key)
            self._complete(attempt, _crashed(attempt, f"the orchestrator lost track of the "
                                                      f"attempt: {_one_line(error)}"))

    def _started(self, attempt: _Attempt, message: ray_node.Started) -> None:
        with self._lock:
            attempt.node = message.node
            kill, attempt.kill = attempt.kill, None
            launcher = self._launchers.get(message.node)
        attempt.future.placement = None
        attempt.future.set_started(
            message.pid, message.pid_create_time, cgroup=message.cgroup, node=message.node,
            host=message.host, at=datetime.fromtimestamp(message.started_epoch, timezone.utc))
        if kill is not None and launcher is not None:  # asked for while it was being placed
            launcher.kill.remote(attempt.key, kill[0].value, kill[1])

    async def _lost(self, attempt: _Attempt, error: Exception) -> AttemptResult:
        """The result of an attempt whose task failed: cancelled by a kill, or lost with its
        node or worker."""
        import ray

        if attempt.kill is not None or isinstance(error, ray.exceptions.TaskCancelledError) \
                or isinstance(getattr(error, "cause", None), ray.exceptions.TaskCancelledError):
            outcome = attempt.kill[0] if attempt.kill else Outcome.CANCELLED
            return _killed(outcome, "while it was being placed")
        if attempt.node is not None:
            # The run's processes or its launcher went away: with their node, if Ray marks
            # that node dead within a while (it notices a silent node in seconds, not at once).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + NODE_LOST_SECONDS
            while await loop.run_in_executor(None, _node_alive, attempt.node):
                if loop.time() > deadline:
                    break
                await asyncio.sleep(0.5)
            else:
                with self._lock:
                    self._launchers.pop(attempt.node, None)
                    self._nodes.pop(attempt.node, None)
                self._describe_containment()
                host = attempt.future.host or attempt.node[:12]
                return _crashed(attempt, f"node lost: {host} ({attempt.node[:12]}) left the "
                                         f"cluster during the run")
            await self._check_launcher(attempt.node)
        return _crashed(attempt, f"the attempt's Ray task failed: {_one_line(error)}")

    async def _check_launcher(self, node: str) -> None:
        """Forget the launcher of ``node`` if it no longer answers (the next attempt there
        makes a new one); one that answers keeps serving its runs."""
        with self._lock:
            launcher = self._launchers.get(node)
        if launcher is None:
            return
        try:
            await asyncio.wait_for(launcher.describe.remote(), LAUNCHER_ANSWER_SECONDS)
        except Exception:
            with self._lock:
                if self._launchers.get(node) is launcher:
                    del self._launchers[node]

    def _complete(self, attempt: _Attempt, result: AttemptResult) -> None:
        with self._lock:
            self._attempts.pop(attempt.future, None)
        attempt.future.placement = None
        attempt.future.set_result(result)

    # -- kills (from any thread) -------------------------------------------------------------

    def _request_kill(self, future: RunFuture, outcome: Outcome, immediately: bool) -> None:
        with self._lock:
            attempt = self._attempts.get(future)
            if attempt is None:
                return
            launcher = self._launchers.get(attempt.node) if attempt.node else None
            if launcher is None:
                attempt.kill = (outcome, immediately)
        if launcher is not None:
            launcher.kill.remote(attempt.key, outcome.value, immediately)
            return
        # Still being placed: Ray drops it from its queue; and should Ray place it all the
        # same, the launcher of whichever node it lands on refuses to start it.
        with self._lock:
            launchers = list(self._launchers.values())
        for each in launchers:
            each.refuse.remote(attempt.key, outcome.value)
        if attempt.task is not None:
            import ray

            ray.cancel(attempt.task)


# -- helpers --------------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("RayExecutor needs Ray: pip install 'orchestrator[ray]'"
                                  ) from None
    return ray


def _reachable(address: str) -> None:
    """Refuse at once an address nothing answers on (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise RayUnavailableError(f"ray_address {address!r}: Ray Client addresses (ray://) "
                                  f"are not supported; give the head's HOST:PORT (6379 by "
                                  f"default)")
    if not host or not port.isdigit():
        raise RayUnavailableError(f"ray_address {address!r} is not HOST:PORT (the head "
                                  f"node's GCS address, port 6379 by default) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise RayUnavailableError(f"cannot reach the Ray cluster at {address}: "
                                  f"{error.strerror or error}; is 'ray start --head' running "
                                  f"there?") from None


def _node_alive(node: str) -> bool:
    import ray

    try:
        return any(entry["NodeID"] == node and entry.get("Alive") for entry in ray.nodes())
    except Exception:
        return False


def _pickle_spec(spec: RunSpec) -> bytes:
    """The spec for the node, functions of ``__main__`` by value (cloudpickle), others by
    reference (the node imports their module)."""
    import cloudpickle

    return cloudpickle.dumps(spec, pickle.HIGHEST_PROTOCOL)


def _resources_text(spec: RunSpec) -> str:
    parts = [f"{spec.num_cpus:g} CPU{'s' if spec.num_cpus != 1 else ''} free"]
    if spec.memory_mb is not None:
        parts.append(f"{spec.memory_mb:g} MB of memory")
    for name, amount in (spec.resources or {}).items():
        parts.append(f"{amount:g} {name}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _failed(error: str) -> AttemptResult:
    now = _now()
    return AttemptResult(Outcome.FAILED, now, now, error=error)


def _killed(outcome: Outcome, when: str) -> AttemptResult:
    now = _now()
    return AttemptResult(outcome, now, now, error=f"killed ({outcome.value}) {when}")


def _crashed(attempt: _Attempt, error: str) -> AttemptResult:
    now = _now()
    future = attempt.future
    return AttemptResult(Outcome.CRASHED, future.started_at or now, now, pid=future.pid,
                         error=error)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[-1] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."
