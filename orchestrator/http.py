"""The HTTP status server: status and history as JSON, Prometheus metrics, a dashboard, and
token-guarded control routes, as a WSGI application served by waitress.

::

    client --> waitress: one asyncore thread reads every connection; complete requests go to
                 a fixed pool of threads (THREADS) that call the application
                 |
                 +-- GET  /            dashboard.html (fetches /status and /runs itself)
                 +-- GET  /status      orchestrator.get_status() (a published snapshot)
                 +-- GET  /runs        orchestrator.history(worker, limit)
                 +-- GET  /metrics     metrics.OrchestratorCollector (one snapshot per scrape)
                 +-- POST /workers/NAME/trigger|enable|disable   (Authorization: Bearer)

Hostile clients cost little: a connection that has not finished sending its request within
``request_timeout`` seconds of its first byte is closed, however it trickles (a deadline for
the whole request, not per read); at most MAX_CONNECTIONS are open, and a new one closes the
idlest connection not being answered instead of waiting. Slow clients hold no thread, so
``/status`` answers while hundreds trickle. A server bound to a loopback address answers only
requests whose ``Host`` is a loopback name or address, so a web page cannot reach it by
pointing a DNS name at 127.0.0.1 (DNS rebinding). Handlers call only the orchestrator's
public, quick methods; they never wait on a run.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import grp
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
import time
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import waitress.channel
import waitress.server
import waitress.task
import waitress.wasyncore
from loguru import logger
from prometheus_client.exposition import choose_encoder

from .errors import ConfigError, OrchestratorError, UnknownWorkerError
from .metrics import RunTally, build_registry

#: Largest request body accepted; larger ones get 413.
MAX_BODY_BYTES = 64 * 1024
#: Longest request target (path and query); longer ones get 414.
MAX_TARGET_BYTES = 8 * 1024
#: Most connections open at once; a new one closes the idlest that is not being answered.
MAX_CONNECTIONS = 64
#: Seconds a client has to send a whole request, from its first byte (or to send a next
#: one on an idle connection).
REQUEST_TIMEOUT_SECONDS = 10.0
#: Threads that answer complete requests.
THREADS = 4
#: ``GET /runs`` limits.
DEFAULT_RUNS_LIMIT = 50
MAX_RUNS_LIMIT = 1000

_ACTIONS = ("trigger", "enable", "disable")
_OUTPUT_FIELDS = ("stdout_tail", "stderr_tail", "traceback")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


class StatusServer:
    """Serves one orchestrator over HTTP; bound on construction, serving after :meth:`start`.

    Either on TCP (``host`` and ``port``), or on a Unix socket (``unix_socket``): the control
    socket of the command line, where the socket file's permissions are the access control
    (owner only, or a group's too with ``socket_group``), so the control routes need no token
    there.

    :param orchestrator: a :class:`~orchestrator.WorkerOrchestrator` (only its public methods
        are used).
    :param host: address to listen on; ``"::1"`` and other IPv6 literals work too.
    :param port: TCP port; 0 picks a free one (see :attr:`url`).
    :param token: bearer token for the ``POST`` control routes on TCP; ``None`` turns them off.
    :param unix_socket: the path of a Unix socket to serve on instead of TCP.
    :param socket_group: a group that may use the Unix socket too (mode 0660 instead of 0600).
    :param request_timeout: seconds a client has for a whole request (default
        :data:`REQUEST_TIMEOUT_SECONDS`).
    :raises OSError: if the address cannot be bound (in use, not local, no permission).
    """

    def __init__(self, orchestrator, host: str | None = None, port: int | None = None,
                 token: str | None = None, *, unix_socket: str | None = None,
                 socket_group: str | None = None, request_timeout: float | None = None):
        self.orchestrator = orchestrator
        self._token = token.encode("utf-8") if token else None
        self.trusted = unix_socket is not None
        self._tally = RunTally()
        self.registry = build_registry(orchestrator, self._tally)
        timeout = request_timeout or REQUEST_TIMEOUT_SECONDS
        # waitress takes whole seconds: its loop wakes each second to look at deadlines
        settings = dict(dispatcher=_IdlePool(), connection_limit=1 << 30,  # see handle_accept
                        channel_timeout=max(1, math.ceil(timeout)), cleanup_interval=1,
                        asyncore_loop_timeout=1, max_request_body_size=MAX_BODY_BYTES,
                        max_request_header_size=MAX_TARGET_BYTES + 64 * 1024,
                        expose_tracebacks=False, ident="orchestrator",
                        clear_untrusted_proxy_headers=False, log_socket_errors=False)
        if unix_socket is not None:
            self._server = _UnixServer(self._application, timeout, MAX_CONNECTIONS,
                                       socket_group, unix_socket=unix_socket,
                                       unix_socket_perms="600", **settings)
            self.url = f"unix:{unix_socket}"
            self._loopback_only = False
        else:
            self._server = _TcpServer(self._application, timeout, MAX_CONNECTIONS, host=host,
                                      port=port, **settings)
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{self._server.effective_port}"
            self._loopback_only = _is_loopback(host)
        self._thread: threading.Thread | None = None
        self._stopped = False
        orchestrator.add_listener(self._tally.on_event)

    def start(self) -> None:
        """Serve on a background thread; a second call does nothing."""
        if self._thread is not None or self._stopped:
            return
        self._server.task_dispatcher.set_thread_count(THREADS)
        self._thread = threading.Thread(target=self._server.run, name="orchestrator-http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every connection and the socket; harmless twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._server.trigger.pull_trigger(self._server.close_everything)
            self._thread.join()
        else:
            self._server.close_everything()
            self._server.trigger.close()
        self._server.task_dispatcher.shutdown(timeout=5)
        self._server.remove_socket_file()
        try:
            self.orchestrator.remove_listener(self._tally.on_event)
        except ValueError:
            pass

    def check_host(self, header: str | None) -> str | None:
        """``None`` if a request with this ``Host`` header may be answered, else why not."""
        if not self._loopback_only or header is None:
            return None
        name = header.strip()
        if name.startswith("["):
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":")[0]
        if _is_loopback(name):
            return None
        return (f"Host {header.strip()[:100]!r} is not this server; it answers only on "
                f"loopback names, like {self.url}")

    def authorize(self, header: str | None) -> tuple[int, str] | None:
        """``None`` if ``header`` carries the token (or the request came through the control
        socket), else the status and message to send."""
        if self.trusted:
            return None
        if self._token is None:
            return 403, ("control routes are off: no http_token is configured; start the "
                         "orchestrator with http_token (or http_token_file) to use them")
        scheme, _, credentials = (header or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials or " " in credentials:
            return 401, "send the token as 'Authorization: Bearer TOKEN'"
        given = credentials.encode("latin-1", "replace")  # header bytes, as they came
        if not hmac.compare_digest(given, self._token):
            return 403, "wrong token"
        return None

    # -- the application --------------------------------------------------------------------

    def _application(self, environ, start_response):
        request = _Request(self, environ)
        try:
            status, body, content_type, headers = request.answer()
        except Exception:
            logger.exception("http: {} {} failed", request.method, request.target)
            status, body, content_type, headers = _error(500, "internal error; see the "
                                                              "orchestrator's log")
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                   *headers.items()]
        start_response(f"{status} {http.client.responses.get(status, 'Error')}", headers)
        return [] if request.method == "HEAD" else [body]


class _Request:
    """One request: routing and the handlers, as a WSGI application sees it."""

    def __init__(self, server: StatusServer, environ: dict):
        self.server = server
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query = environ.get("QUERY_STRING", "")
        self.target = environ.get("REQUEST_URI") or self.path

    def answer(self) -> tuple[int, bytes, str, dict]:
        if self.method not in _METHODS:
            return _error(501, f"{self.method[:20]} is not a method this server knows")
        if len(self.path) + len(self.query) > MAX_TARGET_BYTES:
            return _error(414, f"the request target is longer than {MAX_TARGET_BYTES} bytes")
        if self.environ.get("HTTP_TRANSFER_ENCODING"):
            return _error(411, "send a Content-Length, not Transfer-Encoding")
        problem = self.server.check_host(self.environ.get("HTTP_HOST"))
        if problem is not None:
            return _error(403, problem)
        route, allowed, args = _route(self.path)
        if route is None:
            return _error(404, f"no route {self.path}; try /, /status, /runs or /metrics")
        if self.method not in allowed and not (self.method == "HEAD" and "GET" in allowed):
            return _error(405, f"{self.method} is not allowed on {self.path}; use "
                               f"{' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
        try:
            return getattr(self, route)(*args)
        except UnknownWorkerError as error:
            return _error(404, str(error))
        except ConfigError as error:
            return _error(400, str(error))
        except OrchestratorError as error:
            return _error(409, str(error))

    # -- routes ---------------------------------------------------------------------------

    def _page(self):
        page, policy = _page()
        return 200, page, "text/html; charset=utf-8", {"Content-Security-Policy": policy}

    def _status(self):
        return _json(200, self.server.orchestrator.get_status())

    def _runs(self):
        query = self._parse_query({"worker", "limit", "output"})
        limit = _whole_number(query.get("limit"), "limit", DEFAULT_RUNS_LIMIT, 1,
                              MAX_RUNS_LIMIT)
        output = _flag(query.get("output"), "output", True)
        worker = query.get("worker") or None
        records = self.server.orchestrator.history(worker, limit)
        runs = []
        for record in records:
            data = record.as_dict()
            if not output:
                for field in _OUTPUT_FIELDS:
                    data.pop(field, None)
            runs.append(data)
        return _json(200, runs)

    def _output(self, run_id: str):
        query = self._parse_query({"stdout_from", "stderr_from"})
        return _json(200, self.server.orchestrator.output(
            run_id, _whole_number(query.get("stdout_from"), "stdout_from", 0, 0, 1 << 62),
            _whole_number(query.get("stderr_from"), "stderr_from", 0, 0, 1 << 62)))

    def _metrics(self):
        encoder, content_type = choose_encoder(self.environ.get("HTTP_ACCEPT", ""))
        return 200, encoder(self.server.registry), content_type, {}

    def _control(self, name: str, action: str):
        server = self.server
        refusal = server.authorize(self.environ.get("HTTP_AUTHORIZATION"))
        if refusal is not None:
            code, message = refusal
            return _error(code, message, {"WWW-Authenticate": "Bearer"} if code == 401
                          else None)
        orchestrator = server.orchestrator
        query = self._parse_query({"stop"} if action == "disable" else
                                  {"wait"} if action == "trigger" else set())
        if action == "trigger" and _flag(query.get("wait"), "wait", False):
            record = orchestrator.run_worker(name)  # this thread waits; the others serve
            body = {"worker": name, "action": action, "triggered": True, **{
                key: value for key, value in record.as_dict().items() if key in (
                    "run_id", "outcome", "error", "duration_seconds", "attempts",
                    "exit_code", "started_at", "ended_at")}}
        elif action == "trigger":
            triggered = orchestrator.trigger_worker(name)
            body = {"worker": name, "action": action, "triggered": triggered}
            if not triggered:
                body["message"] = "the worker is disabled; enable it first"
        elif action == "enable":
            orchestrator.enable_worker(name)
            body = {"worker": name, "action": action, "enabled": True}
        else:
            stop = _flag(query.get("stop"), "stop", False)
            orchestrator.disable_worker(name, stop=stop)
            body = {"worker": name, "action": action, "enabled": False, "stop": stop}
        logger.info("http: {} {} by {}", action, name, self.environ.get("REMOTE_ADDR"))
        return _json(200, body)

    def _parse_query(self, known: set[str]) -> dict[str, str]:
        try:
            pairs = parse_qs(self.query, keep_blank_values=True, strict_parsing=False,
                             max_num_fields=20)
        except ValueError as error:
            raise ConfigError(f"bad query string: {error}") from None
        unknown = sorted(set(pairs) - known)
        if unknown:
            hint = f"; use {', '.join(sorted(known))}" if known else "; this route takes none"
            raise ConfigError(f"unknown query parameter {unknown[0]!r}{hint}")
        for key, values in pairs.items():
            if len(values) > 1:
                raise ConfigError(f"query parameter {key!r} given {len(values)} times")
        return {key: values[0] for key, values in pairs.items()}


# -- waitress, with a deadline per request and room made at the connection cap --------------

class _Channel(waitress.channel.HTTPChannel):
    """A connection that remembers when its request in progress began."""

    request_began = 0.0

    def received(self, data):
        if data and self.request is None:
            self.request_began = time.monotonic()
        return super().received(data)


class _JsonErrorTask(waitress.task.ErrorTask):
    """waitress's own refusals (a malformed request, a body over the limit) as JSON, like
    every other error of this server."""

    def execute(self):
        error = self.request.error
        message = {413: f"request body is over the limit of {MAX_BODY_BYTES} bytes",
                   431: "request headers are too large"}.get(
            error.code, f"{error.reason}: {error.body}".strip(": "))
        body = _json_bytes({"error": message, "status": error.code})
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Task(waitress.task.WSGITask):
    """An answer of the application; after an error the connection is closed, as a client
    that erred may not be worth keeping."""

    def build_response_header(self):
        if self.status[:1] in ("4", "5"):
            self.set_close_on_finish()
        return super().build_response_header()


_Channel.error_task_class = _JsonErrorTask
_Channel.task_class = _Task


class _IdlePool(waitress.task.ThreadedTaskDispatcher):
    """waitress's thread pool, with no thread until the server starts serving."""


class _Server:
    """What both servers add to waitress's: the deadline, room at the cap, a clean end."""

    channel_class = _Channel

    def __init__(self, application, request_timeout: float, max_connections: int,
                 **settings):
        # waitress logs through logging; the orchestrator's log is loguru, and a failed
        # connection is a debug matter
        logging.getLogger("waitress").setLevel(logging.ERROR)
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        super().__init__(application, **settings)

    def remove_socket_file(self) -> None:
        pass

    def maintenance(self, now):
        """Close idle connections (waitress's own rule) and those whose request has not
        arrived whole within the deadline, however slowly it trickles."""
        super().maintenance(now)
        deadline = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            if channel.request is not None and not channel.requests \
                    and channel.request_began < deadline:
                logger.debug("http: closing {}: no whole request within {}s", channel.addr,
                             self.request_timeout)
                channel.will_close = True  # closed by the loop, as waitress does its own

    def handle_accept(self):
        """Take every new connection; over the cap, close the idlest one that is not being
        answered (never the new one), so a crowd of silent clients cannot lock others out."""
        known = set(self.active_channels)
        super().handle_accept()
        newest = set(self.active_channels) - known
        open_now = [channel for channel in self.active_channels.values() if not channel.will_close]
        if len(open_now) > self.max_connections:
            idle = [channel for fd, channel in self.active_channels.items()
                    if fd not in newest and not channel.requests and not channel.will_close]
            if idle:
                channel = min(idle, key=lambda channel: channel.last_activity)
                logger.debug("http: {} connections open; closing the idlest, {}",
                             len(open_now), channel.addr)
                channel.will_close = True

    stopping = False

    def run(self):
        """waitress's loop, one poll at a time, until :meth:`close_everything`."""
        try:
            while not self.stopping and self._map:
                self.asyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self._map,
                                   use_poll=self.adj.asyncore_use_poll, count=1)
        finally:
            for dispatcher in list(self._map.values()):
                try:
                    dispatcher.close()
                except OSError:
                    pass

    def close_everything(self) -> None:
        """Close every connection and the listener; the loop then ends (run in the loop's
        thread, through the trigger, or before it ever ran)."""
        self.stopping = True
        for channel in list(self.active_channels.values()):
            channel.handle_close()
        self.accepting = False
        waitress.wasyncore.dispatcher.close(self)


class _TcpServer(_Server, waitress.server.TcpWSGIServer):
    pass


class _UnixServer(_Server, waitress.server.UnixWSGIServer):
    """The control socket. A socket file nobody answers on is a dead instance's and is
    replaced; one that answers is refused. A path too long for a socket address is bound
    through its directory's descriptor."""

    def __init__(self, application, request_timeout: float, max_connections: int,
                 group: str | None, **settings):
        self.group = group
        super().__init__(application, request_timeout, max_connections, **settings)

    def bind_server_socket(self):
        path = self.adj.unix_socket
        if _answers(path):
            raise OSError(errno.EADDRINUSE, f"another orchestrator answers on {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with _short_address(path) as address:
            self.bind(address)
        if self.group is not None:
            os.chown(path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(path, 0o660)
        else:
            os.chmod(path, 0o600)
        self.socket_file = path

    def remove_socket_file(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.socket_file)


@contextlib.contextmanager
def _short_address(path: str):
    """An address for ``path`` that fits a socket address (108 bytes): the path itself, or
    the name seen through an open descriptor of its directory."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)


def _answers(path: str) -> bool:
    """Whether something answers on the Unix socket ``path``."""
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, \
            _short_address(path) as address:
        probe.settimeout(2)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def _error(code: int, message: str, headers: dict | None = None):
    body = _json_bytes({"error": message, "status": code})
    return code, body, "application/json", dict(headers or {})


def _json(code: int, data):
    return code, _json_bytes(data), "application/json", {}


def _is_loopback(host: str) -> bool:
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _route(path: str) -> tuple[str | None, tuple[str, ...], tuple]:
    """The handler method name, the allowed methods and the arguments for ``path``."""
    fixed = {"/": "_page", "/status": "_status", "/runs": "_runs", "/metrics": "_metrics"}
    if path in fixed:
        return fixed[path], ("GET",), ()
    match = re.fullmatch(r"/workers/([^/]+)/([a-z]+)", path)
    if match and match.group(2) in _ACTIONS:
        return "_control", ("POST",), (unquote(match.group(1)), match.group(2))
    match = re.fullmatch(r"/runs/([^/]+)/output", path)
    if match:
        return "_output", ("GET",), (unquote(match.group(1)),)
    return None, (), ()


def _whole_number(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _flag(text: str | None, name: str, default: bool) -> bool:
    if text is None:
        return default
    value = text.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {text!r}")


def _json_bytes(data) -> bytes:
    return json.dumps(data, default=str, allow_nan=False).encode()


@functools.cache
def _page() -> tuple[bytes, str]:
    """The dashboard and its Content-Security-Policy, which allows exactly the page's own
    inline script and style (by hash), fetches to this server and nothing else: even an
    injected tag could not run."""
    page = resources.files(__package__).joinpath("dashboard.html").read_text("utf-8")
    hashes = {}
    for tag in ("script", "style"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        hashes[tag] = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            + "'" for block in blocks)
    policy = (f"default-src 'none'; script-src {hashes['script']}; "
              f"style-src {hashes['style']}; connect-src 'self'; img-src data:; "
              f"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page.encode(), policy


def request(url: str, method: str, path: str, token: str | None = None, *,
            timeout: float | None = 10.0) -> tuple[int, object]:
    """One request to a status server; returns the status code and the decoded JSON body
    (the text for a non-JSON body such as ``/metrics`` or ``/``).

    :param url: the server's ``http://host:port``, or ``unix:PATH`` for a control socket.
    :param token: sent as ``Authorization: Bearer TOKEN``.
    :param timeout: seconds to wait for the answer; None: as long as it takes.
    :raises OSError: if the server cannot be reached.
    """
    if url.startswith("unix:"):
        connection: http.client.HTTPConnection = _UnixConnection(url[5:], timeout)
    else:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like 'http://127.0.0.1:8765' or "
                             f"'unix:/path/state.db.sock', got {url!r}")
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                timeout=timeout)
    headers = {"Authorization": b"Bearer " + token.encode("utf-8")} if token else {}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        kind = response.getheader("Content-Type", "")
    finally:
        connection.close()
    text = body.decode("utf-8", "replace")
    if kind.startswith("application/json"):
        return response.status, json.loads(text) if text else None
    return response.status, text


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the control socket)."""

    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.path_of_socket = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        with _short_address(self.path_of_socket) as address:
            self.sock.connect(address)
