"""The HTTP status server: status and history as JSON, Prometheus metrics, a dashboard, and
token-guarded control routes.

::

    client --> ThreadingHTTPServer (one thread per connection, "orchestrator-http")
                 |
                 +-- GET  /            dashboard.html (fetches /status and /runs itself)
                 +-- GET  /status      orchestrator.get_status()
                 +-- GET  /runs        orchestrator.history(worker, limit)
                 +-- GET  /metrics     metrics.OrchestratorCollector (one snapshot per scrape)
                 +-- POST /workers/NAME/trigger|enable|disable   (Authorization: Bearer)

Handlers call only the orchestrator's public, quick methods; they never wait on a run. A
connection that sends nothing for ``request_timeout`` seconds is closed, and :meth:`stop`
closes the ones still open, so no thread outlives the server. A server bound to a loopback
address answers only requests whose ``Host`` is a loopback name or address, so a web page
cannot reach it by pointing a DNS name at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

from loguru import logger
from prometheus_client.exposition import choose_encoder

from .errors import ConfigError, OrchestratorError, UnknownWorkerError
from .metrics import RunTally, build_registry

#: Largest request body accepted; larger ones get 413.
MAX_BODY_BYTES = 64 * 1024
#: Most connections served at once; more are answered 503 and closed.
MAX_CONNECTIONS = 64
#: Seconds a connection may stay silent before the server closes it.
REQUEST_TIMEOUT_SECONDS = 10.0
#: ``GET /runs`` limits.
DEFAULT_RUNS_LIMIT = 50
MAX_RUNS_LIMIT = 1000

_ACTIONS = ("trigger", "enable", "disable")
_OUTPUT_FIELDS = ("stdout_tail", "stderr_tail", "traceback")


class StatusServer:
    """Serves one orchestrator over HTTP; bound on construction, serving after :meth:`start`.

    :param orchestrator: a :class:`~orchestrator.WorkerOrchestrator` (only its public methods
        are used).
    :param host: address to listen on; ``"::1"`` and other IPv6 literals work too.
    :param port: TCP port; 0 picks a free one (see :attr:`url`).
    :param token: bearer token for the ``POST`` control routes; ``None`` turns them off.
    :param request_timeout: seconds a connection may stay silent before it is closed
        (default :data:`REQUEST_TIMEOUT_SECONDS`).
    :raises OSError: if the address cannot be bound (in use, not local, no permission).
    """

    def __init__(self, orchestrator, host: str, port: int, token: str | None = None, *,
                 request_timeout: float | None = None):
        self.orchestrator = orchestrator
        self._token = token.encode("utf-8") if token else None
        self._tally = RunTally()
        self.registry = build_registry(orchestrator, self._tally)
        self._httpd = _Server((host, port), self,
                              request_timeout or REQUEST_TIMEOUT_SECONDS)
        self._thread: threading.Thread | None = None
        self._stopped = False
        orchestrator.add_listener(self._tally.on_event)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._httpd.server_address[1]}"
        self._loopback_only = _is_loopback(host)

    def start(self) -> None:
        """Serve on a background thread; a second call does nothing."""
        if self._thread is not None or self._stopped:
            return
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="orchestrator-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close open connections and the socket; harmless twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.close_connections()
        self._httpd.server_close()  # joins the connection threads
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
        """``None`` if ``header`` carries the token, else the status and message to send."""
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins the connection threads
    request_queue_size = 32

    def __init__(self, address: tuple[str, int], status_server: StatusServer,
                 request_timeout: float):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.status_server = status_server
        self.request_timeout = request_timeout
        self._open: set[socket.socket] = set()   # guarded by _open_lock
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can hang; the
        # name is not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            crowded = len(self._open) >= MAX_CONNECTIONS
            if not crowded:
                self._open.add(request)
        if crowded:
            body = _json_bytes({"error": "too many connections; try again"})
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: "
                             b"application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake the threads of connections still open (a stalled client) so they end."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        logger.opt(exception=True).debug("http: connection from {} failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "orchestrator"
    sys_version = ""
    error_content_type = "application/json"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        super().setup()

    # -- methods --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    # -- routing --------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        try:
            if not self._read_body():
                return
            problem = self.server.status_server.check_host(self.headers.get("Host"))
            if problem is not None:
                self._send_error(403, problem)
                return
            parts = urlsplit(self.path)
            path = parts.path
            self._query = parts.query
            route, allowed, args = _route(path)
            if route is None:
                self._send_error(404, f"no route {path}; try /, /status, /runs or /metrics")
                return
            if method not in allowed and not (method == "HEAD" and "GET" in allowed):
                self._send_error(405, f"{method} is not allowed on {path}; use "
                                      f"{' or '.join(allowed)}",
                                 headers={"Allow": ", ".join(allowed)})
                return
            getattr(self, route)(*args)
        except UnknownWorkerError as error:
            self._send_error(404, str(error))
        except ConfigError as error:
            self._send_error(400, str(error))
        except OrchestratorError as error:
            self._send_error(409, str(error))
        except OSError:
            raise  # the client went away; nothing to answer
        except Exception:
            logger.exception("http: {} {} failed", method, self.path)
            self._send_error(500, "internal error; see the orchestrator's log")

    def _read_body(self) -> bool:
        """Read and discard the request body; False (answered) if it is not acceptable."""
        if self.headers.get("Transfer-Encoding"):
            self._send_error(411, "send a Content-Length, not Transfer-Encoding")
            return False
        length = self.headers.get("Content-Length")
        if length is None:
            return True
        if not re.fullmatch(r"\s*[0-9]{1,18}\s*", length):
            self._send_error(400, f"bad Content-Length {length!r}")
            return False
        size = int(length)
        if size > MAX_BODY_BYTES:
            self._send_error(413, f"request body of {size} bytes is over the limit of "
                                  f"{MAX_BODY_BYTES} bytes")
            return False
        while size > 0:
            chunk = self.rfile.read(min(size, 16384))
            if not chunk:
                break
            size -= len(chunk)
        return True

    # -- routes ---------------------------------------------------------------------------

    def _page(self) -> None:
        page, policy = _page()
        self._send(200, page, "text/html; charset=utf-8", {"Content-Security-Policy": policy})

    def _status(self) -> None:
        self._send_json(200, self.server.status_server.orchestrator.get_status())

    def _runs(self) -> None:
        query = self._parse_query({"worker", "limit", "output"})
        limit = _whole_number(query.get("limit"), "limit", DEFAULT_RUNS_LIMIT, 1,
                              MAX_RUNS_LIMIT)
        output = _flag(query.get("output"), "output", True)
        worker = query.get("worker") or None
        records = self.server.status_server.orchestrator.history(worker, limit)
        runs = []
        for record in records:
            data = record.as_dict()
            if not output:
                for field in _OUTPUT_FIELDS:
                    data.pop(field, None)
            runs.append(data)
        self._send_json(200, runs)

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, encoder(self.server.status_server.registry), content_type)

    def _control(self, name: str, action: str) -> None:
        server = self.server.status_server
        refusal = server.authorize(self.headers.get("Authorization"))
        if refusal is not None:
            code, message = refusal
            self._send_error(code, message, headers={"WWW-Authenticate": "Bearer"}
                             if code == 401 else None)
            return
        orchestrator = server.orchestrator
        query = self._parse_query({"stop"} if action == "disable" else set())
        if action == "trigger":
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
        logger.info("http: {} {} by {}", action, name, self.client_address[0])
        self._send_json(200, body)

    # -- helpers --------------------------------------------------------------------------

    def _parse_query(self, known: set[str]) -> dict[str, str]:
        try:
            pairs = parse_qs(self._query, keep_blank_values=True, strict_parsing=False,
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

    def _send_json(self, code: int, data) -> None:
        self._send(code, _json_bytes(data), "application/json")

    def _send_error(self, code: int, message: str, headers: dict | None = None) -> None:
        self.close_connection = True
        self._send(code, _json_bytes({"error": message, "status": code}), "application/json",
                   headers)

    def _send(self, code: int, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors found by the base class (bad request line, header too large, unknown
        method) as a JSON body like every other error."""
        short, _ = self.responses.get(code, ("error", ""))
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a garbled request line: answer in 1.0
            self.request_version = "HTTP/1.0"
        body = _json_bytes({"error": message or short, "status": code})
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logger.debug("http: {} {}", self.address_string(), format % args)


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
    return None, (), ()


def _whole_number(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", text) or not low <= int(text) <= high:
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
            timeout: float = 10.0) -> tuple[int, object]:
    """One request to a status server; returns the status code and the decoded JSON body
    (the text for a non-JSON body such as ``/metrics`` or ``/``).

    :param url: the server's ``http://host:port``.
    :param token: sent as ``Authorization: Bearer TOKEN``.
    :raises OSError: if the server cannot be reached.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"url must look like 'http://127.0.0.1:8765', got {url!r}")
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
