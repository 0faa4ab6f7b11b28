"""The HTTP status server with real clients: http.client, raw sockets, promtool and headless
Chromium.

Most tests use the inline executor (runs on the dispatcher thread, no processes), so they are
fast; the ones about a slow client, listeners and the dashboard run real worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

import browser
import http_workers as hw
import orchestrator.http
from conftest import wait_for
from orchestrator import ConfigError, WorkerOrchestrator
from orchestrator.execution.inline import InlineExecutor
from orchestrator.http import MAX_BODY_BYTES, StatusServer, request

TOKEN = "s3cret-token"


@pytest.fixture
def make():
    """Orchestrators serving HTTP on a free port; stopped after the test."""
    made = []

    def factory(*, inline: bool = True, token: str | None = TOKEN, **kwargs):
        orch = WorkerOrchestrator(http="127.0.0.1:0", http_token=token,
                                  executor=InlineExecutor() if inline else None, **kwargs)
        made.append(orch)
        return orch

    yield factory
    for orch in made:
        orch.stop(timeout=5)


@pytest.fixture
def served(make):
    """A started inline orchestrator with a triggered worker ``ok`` that ran once."""
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.register_worker("failing", hw.always_fails, execution_mode="triggered",
                         max_retries=0)
    orch.start()
    assert orch.trigger_worker("ok", wait=True, timeout=10)
    return orch


def get(orch, path, token=None):
    return request(orch.http_url, "GET", path, token)


def post(orch, path, token=TOKEN):
    return request(orch.http_url, "POST", path, token)


def raw(orch, data: bytes, timeout: float = 5.0) -> tuple[int, dict]:
    """Send ``data`` on a fresh connection; the status and JSON body of the answer."""
    host, port = orch.http_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def stalled_connection(orch) -> socket.socket:
    """A client that sent half a request and then nothing."""
    host, port = orch.http_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\n")
    return sock


# -- reading routes --------------------------------------------------------------------------

def test_status_is_the_get_status_document(served):
    code, body = get(served, "/status")
    assert code == 200
    expected = served.get_status()
    assert body.keys() == expected.keys()
    assert body["worker_names"] == ["ok", "failing"] and body["workers"] == 2
    assert body["worker_states"]["ok"]["last_outcome"] == "succeeded"
    assert body["worker_states"]["ok"].keys() == expected["worker_states"]["ok"].keys()


def test_a_request_for_another_host_name_is_refused(served):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 must not read
    the status; loopback names and addresses are answered."""
    code, body = raw(served, b"GET /status HTTP/1.1\r\nHost: evil.example:8765\r\n\r\n")
    assert code == 403 and "'evil.example:8765' is not this server" in body["error"]
    code, _ = raw(served, b"POST /workers/ok/trigger HTTP/1.1\r\nHost: evil.example\r\n"
                          b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                          b"Content-Length: 0\r\n\r\n")
    assert code == 403
    port = served.http_url.rsplit(":", 1)[1].encode()
    for host in (b"127.0.0.1:" + port, b"localhost:" + port, b"LOCALHOST", b"[::1]:" + port,
                 b"127.0.0.2"):
        code, body = raw(served, b"GET /status HTTP/1.1\r\nHost: " + host +
                         b"\r\nConnection: close\r\n\r\n")
        assert code == 200, (host, body)


def test_runs_gives_history_newest_first(served):
    assert served.trigger_worker("ok", wait=True, timeout=10)
    served.trigger_worker("failing", wait=True, timeout=10)
    code, runs = get(served, "/runs?worker=ok")
    assert code == 200
    assert [r["run_id"] for r in runs] == [r.run_id for r in served.history("ok", limit=50)]
    assert len(runs) == 2 and runs[0]["outcome"] == "succeeded"
    assert runs[0]["started_at"] >= runs[1]["started_at"]
    assert {"stdout_tail", "duration_seconds", "peak_rss_bytes"} <= runs[0].keys()

    code, runs = get(served, "/runs?limit=1&output=0")
    assert code == 200 and len(runs) == 1 and runs[0]["worker"] == "failing"
    assert "stdout_tail" not in runs[0] and "traceback" not in runs[0]
    code, runs = get(served, "/runs?limit=1000")
    assert code == 200 and {r["worker"] for r in runs} == {"ok", "failing"}


@pytest.mark.parametrize("query, code, words", [
    ("limit=0", 400, "limit must be a whole number from 1 to 1000"),
    ("limit=1001", 400, "from 1 to 1000"),
    ("limit=-3", 400, "from 1 to 1000"),
    ("limit=ten", 400, "'ten'"),
    ("limit=1&limit=2", 400, "given 2 times"),
    ("output=perhaps", 400, "output must be 1 or 0"),
    ("colour=red", 400, "unknown query parameter 'colour'"),
    ("worker=nobody", 404, "no worker named 'nobody'"),
    ("worker=%3Cb%3E", 400, "<b>"),
])
def test_runs_refuses_bad_values_with_a_json_error(served, query, code, words):
    status, body = get(served, f"/runs?{query}")
    assert (status, body["status"]) == (code, code)
    assert words in body["error"]


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(served):
    code, body = get(served, "/nowhere")
    assert code == 404 and "try /, /status" in body["error"]
    code, body = request(served.http_url, "DELETE", "/status")
    assert code == 405 and "use GET" in body["error"]
    code, body = request(served.http_url, "PUT", "/workers/ok/trigger", TOKEN)
    assert code == 405 and "use POST" in body["error"]
    code, body = post(served, "/workers/ok/explode")
    assert code == 404
    code, body = raw(served, b"POST /workers/ok/trigger HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                     + str(MAX_BODY_BYTES + 1).encode() + b"\r\n\r\n")
    assert code == 413 and "over the limit" in body["error"]
    # a chunked body is read like any other, within the same limit
    code, body = raw(served, b"POST /status HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert code == 405
    big = hex(MAX_BODY_BYTES + 1)[2:].encode()
    code, body = raw(served, b"POST /workers/ok/trigger HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + big + b"\r\n"
                     + b"x" * (MAX_BODY_BYTES + 1) + b"\r\n0\r\n\r\n")
    assert code == 413 and "over the limit" in body["error"]
    code, body = raw(served, b"BREW /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert code == 501 and body["status"] == 501
    code, body = raw(served, b"nonsense\r\n\r\n")
    assert code == 400 and body["error"]
    code, body = raw(served, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert code == 414
    code, _ = get(served, "/status")
    assert code == 200


def test_head_is_get_without_a_body(served):
    host, port = served.http_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"HEAD /status HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Content-Length: " in head and body == b""


def test_page_is_self_contained_and_locked_down(served):
    code, page = get(served, "/")
    assert code == 200
    assert "<table id=\"workers\">" in page and "id=\"timeline\"" in page
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered  # no CDN, nothing remote
    assert "innerhtml" not in lowered and "insertadjacenthtml" not in lowered
    with socket.create_connection(served.http_url.removeprefix("http://").rsplit(":", 1),
                                  timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        head = sock.recv(65536).split(b"\r\n\r\n")[0].decode()
    assert "Content-Security-Policy: default-src 'none'; script-src 'sha256-" in head
    assert "text/html; charset=utf-8" in head


# -- control routes and the token ---------------------------------------------------------------

def test_control_routes_are_off_without_a_token(make):
    orch = make(token=None)
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    for action in ("trigger", "enable", "disable"):
        code, body = post(orch, f"/workers/ok/{action}", token=TOKEN)
        assert code == 403 and "no http_token is configured" in body["error"]
    assert orch.get_status()["worker_states"]["ok"]["enabled"]
    assert orch.history("ok") == []


@pytest.mark.parametrize("authorization, code", [
    (None, 401),
    ("", 401),
    ("Bearer", 401),
    ("Bearer ", 401),
    (f"Basic {TOKEN}", 401),
    (f"Bearer {TOKEN} extra", 401),
    (TOKEN, 401),
    ("Bearer wrong-token", 403),
    (f"Bearer {TOKEN}x", 403),
    (f"bearer {TOKEN}", 200),
    (f"Bearer {TOKEN}", 200),
])
def test_token_rules(served, authorization, code):
    header = b"" if authorization is None else f"Authorization: {authorization}\r\n".encode()
    status, body = raw(served, b"POST /workers/ok/disable HTTP/1.0\r\n" + header + b"\r\n")
    assert status == code, body
    enabled = served.get_status()["worker_states"]["ok"]["enabled"]
    if code == 200:
        assert body == {"worker": "ok", "action": "disable", "enabled": False, "stop": False}
        assert not enabled
    else:
        assert body["status"] == code and enabled


def test_a_token_must_be_printable_ascii():
    # RFC 6750 bearer tokens are ASCII; anything else could not travel in a header intact
    for token in ("schlüssel-ключ", "two words", "tab\there"):
        with pytest.raises(ConfigError, match="http_token must be a non-empty string of "
                                              "printable ASCII"):
            WorkerOrchestrator(http="127.0.0.1:0", http_token=token)


def test_unknown_worker_is_404_only_for_a_rightful_caller(served):
    code, body = post(served, "/workers/nobody/trigger")
    assert code == 404 and "no worker named 'nobody'" in body["error"]
    code, body = post(served, "/workers/nobody/trigger", token="wrong")
    assert code == 403


def test_trigger_enable_disable_steer_the_orchestrator(served):
    code, body = post(served, "/workers/failing/trigger")
    assert (code, body) == (200, {"worker": "failing", "action": "trigger", "triggered": True})
    wait_for(lambda: served.history("failing"), timeout=10)

    code, body = post(served, "/workers/ok/disable?stop=1")
    assert (code, body["enabled"], body["stop"]) == (200, False, True)
    assert not served.get_status()["worker_states"]["ok"]["enabled"]
    code, body = post(served, "/workers/ok/trigger")
    assert code == 200 and body["triggered"] is False and "enable it first" in body["message"]

    code, body = post(served, "/workers/ok/enable")
    assert (code, body) == (200, {"worker": "ok", "action": "enable", "enabled": True})
    assert served.get_status()["worker_states"]["ok"]["enabled"]

    code, body = post(served, "/workers/ok/disable?stop=maybe")
    assert code == 400 and "stop must be 1 or 0" in body["error"]
    code, body = post(served, "/workers/ok/trigger?now=1")
    assert (code, body["error"]) == (400, "unknown query parameter 'now'; use wait")
    code, body = post(served, "/workers/ok/enable?now=1")
    assert (code, body["error"]) == (400, "unknown query parameter 'now'; this route takes none")


# -- metrics ------------------------------------------------------------------------------------

def scrape(orch) -> dict[str, dict]:
    """``{family name: {"type": ..., "samples": [(name, labels, value), ...]}}``."""
    code, text = get(orch, "/metrics")
    assert code == 200
    return {family.name: {"type": family.type,
                          "samples": [(s.name, s.labels, s.value) for s in family.samples]}
            for family in text_string_to_metric_families(text)}


def sample(families, family, name=None, **labels):
    values = [value for sample_name, sample_labels, value in families[family]["samples"]
              if sample_name == (name or family) and sample_labels == labels]
    assert len(values) == 1, (family, labels, families[family]["samples"])
    return values[0]


def test_metrics_count_runs_not_attempts(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.register_worker("failing", hw.always_fails, execution_mode="triggered",
                         max_retries=2, retry_delay_seconds=0.01)
    orch.register_worker("idle", hw.ok, interval_seconds=3600)
    orch.start()
    for _ in range(3):
        assert orch.trigger_worker("ok", wait=True, timeout=10)
    assert not orch.trigger_worker("failing", wait=True, timeout=10)
    orch.disable_worker("idle")
    families = scrape(orch)
    status = orch.get_status()["worker_states"]

    assert families["orchestrator_runs"]["type"] == "counter"
    assert sample(families, "orchestrator_runs", "orchestrator_runs_total",
                  worker="ok", outcome="succeeded") == 3
    # one run of three attempts is one failed run
    assert sample(families, "orchestrator_runs", "orchestrator_runs_total",
                  worker="failing", outcome="failed") == 1
    assert sample(families, "orchestrator_runs", "orchestrator_runs_total",
                  worker="idle", outcome="succeeded") == 1  # its first run, at start
    assert families["orchestrator_run_duration_seconds"]["type"] == "histogram"
    assert sample(families, "orchestrator_run_duration_seconds",
                  "orchestrator_run_duration_seconds_count", worker="ok") == 3
    assert sample(families, "orchestrator_run_duration_seconds",
                  "orchestrator_run_duration_seconds_bucket", worker="ok", le="+Inf") == 3
    assert sample(families, "orchestrator_worker_enabled", worker="idle") == 0
    assert sample(families, "orchestrator_worker_enabled", worker="ok") == 1
    assert sample(families, "orchestrator_worker_consecutive_failures", worker="failing") == 1
    assert sample(families, "orchestrator_worker_running", worker="ok") == 0
    assert sample(families, "orchestrator_worker_pending", worker="ok") == 0
    assert sample(families, "orchestrator_worker_last_success_timestamp_seconds",
                  worker="ok") == pytest.approx(
        datetime.fromisoformat(status["ok"]["last_success"]).timestamp())
    assert sample(families, "orchestrator_last_run_duration_seconds", worker="ok") == \
        pytest.approx(status["ok"]["last_duration"])
    assert sample(families, "orchestrator_skipped_runs", "orchestrator_skipped_runs_total",
                  worker="ok") == status["ok"]["skipped"]
    assert sample(families, "orchestrator_missed_runs", "orchestrator_missed_runs_total",
                  worker="ok") == status["ok"]["missed"]
    assert sample(families, "orchestrator_max_concurrent") == 5
    assert sample(families, "orchestrator_containment_info", mode="none") == 1  # inline
    for name, family in families.items():
        if name not in ("orchestrator_max_concurrent", "orchestrator_containment_info"):
            assert all("worker" in labels for _, labels, _ in family["samples"]), name

    # a second scrape does not count anything twice
    again = scrape(orch)
    assert again["orchestrator_runs"] == families["orchestrator_runs"]


def test_metrics_of_real_runs_have_cpu_and_memory(make):
    orch = make(inline=False)
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    assert orch.trigger_worker("ok", wait=True, timeout=60)
    families = scrape(orch)
    assert sample(families, "orchestrator_last_run_peak_rss_bytes", worker="ok") > 0
    assert sample(families, "orchestrator_last_run_cpu_seconds", worker="ok") >= 0
    assert sample(families, "orchestrator_containment_info", mode="cgroup") == 1


# Outside CI a machine without the Debian packages skips these; CI installs them (.ci/run),
# so there a missing program fails the test instead of hiding it.
IN_CI = bool(os.environ.get("CI"))


@pytest.mark.skipif(shutil.which("promtool") is None and not IN_CI,
                    reason="promtool is not installed (apt-get install prometheus)")
def test_metrics_pass_promtool(served):
    served.trigger_worker("failing", wait=True, timeout=10)
    code, text = get(served, "/metrics")
    result = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# -- the server's life ----------------------------------------------------------------------------

def test_a_taken_port_fails_start_cleanly():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            StatusServer(object(), "127.0.0.1", port)
        orch = WorkerOrchestrator(http=f"127.0.0.1:{port}", executor=InlineExecutor())
        with pytest.raises(ConfigError, match=f"http cannot listen on 127.0.0.1:{port}"):
            orch.start()
        orch.stop()


def test_a_stalled_client_is_dropped_after_the_request_timeout(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    server = StatusServer(orch, "127.0.0.1", 0, None, request_timeout=0.3)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\n")
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server, not by our timeout
            assert time.monotonic() - started < 5
        assert request(server.url, "GET", "/status")[0] == 200
    finally:
        server.stop()


def test_stop_is_quick_despite_stalled_clients(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    clients = [stalled_connection(orch) for _ in range(3)]
    assert get(orch, "/status")[0] == 200  # they hold no thread
    started = time.monotonic()
    orch.stop()
    assert time.monotonic() - started < 5  # not the 10 s request timeout
    for sock in clients:
        assert sock.recv(1) == b""  # closed by the server
        sock.close()
    # the autouse leak check asserts that no thread is left


def test_at_the_connection_cap_the_idlest_connection_makes_room(make, monkeypatch):
    monkeypatch.setattr(orchestrator.http, "MAX_CONNECTIONS", 2)
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    clients = [stalled_connection(orch) for _ in range(2)]
    try:
        code, _ = raw(orch, b"GET /status HTTP/1.0\r\n\r\n")
        assert code == 200
        closed = 0
        for sock in clients:  # the first one, idle longest, was closed to make room
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
        assert closed >= 1
    finally:
        for sock in clients:
            sock.close()


def test_status_answers_while_two_hundred_clients_trickle(make, monkeypatch):
    """Slowloris: 200 clients send a header line every 0.5 s and never finish. /status still
    answers every time, and each slow client is closed at the whole-request deadline."""
    monkeypatch.setattr(orchestrator.http, "REQUEST_TIMEOUT_SECONDS", 3.0)
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    host, port = orch.http_url.removeprefix("http://").rsplit(":", 1)
    clients = []
    for _ in range(200):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\n")
        clients.append(sock)
    stop = threading.Event()
    dropped = []

    def trickle():
        while not stop.is_set():
            for sock in list(clients):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    clients.remove(sock)
                    dropped.append(sock)
            stop.wait(0.5)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        answered = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            begun = time.monotonic()
            code, _ = get(orch, "/status")
            answered.append((code, time.monotonic() - begun))
        assert all(code == 200 for code, _ in answered), answered
        assert max(seconds for _, seconds in answered) < 2.5, answered
        wait_for(lambda: len(dropped) == 200, timeout=20,
                 message="every slow client closed by the server")
    finally:
        stop.set()
        trickler.join()
        for sock in clients + dropped:
            sock.close()


def test_a_slow_client_does_not_delay_a_triggered_run(make, monkeypatch):
    # stalled clients are not dropped during the test: the run cannot be waiting for that
    monkeypatch.setattr(orchestrator.http, "REQUEST_TIMEOUT_SECONDS", 600.0)
    orch = make(inline=False)
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    ended = threading.Event()
    orch.add_listener(lambda event: event.worker == "ok" and event.kind == "succeeded"
                      and ended.set())
    orch.start()
    clients = [stalled_connection(orch) for _ in range(5)]
    try:
        code, body = post(orch, "/workers/ok/trigger")
        assert code == 200 and body["triggered"]
        assert ended.wait(60), "the triggered run did not end"
        for sock in clients:  # still connected: the run did not wait for them
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in clients:
            sock.close()


def test_a_listener_receives_the_events_of_a_real_run(make):
    orch = make(inline=False)
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    events = []
    orch.add_listener(events.append)
    orch.add_listener(lambda event: 1 / 0)  # a broken listener changes nothing
    orch.start()
    assert orch.trigger_worker("ok", wait=True, timeout=60)
    [record] = orch.history("ok")
    wait_for(lambda: any(e.kind == "succeeded" for e in events), timeout=10)
    mine = [e for e in events if e.run_id == record.run_id]
    assert [e.kind for e in mine] == ["due", "started", "succeeded"]
    assert mine[-1].worker == "ok" and mine[-1].duration_seconds > 0
    assert mine[-1].attempt == 1


def test_request_helper(served):
    code, text = get(served, "/metrics")
    assert code == 200 and isinstance(text, str) and "orchestrator_runs_total" in text
    with pytest.raises(ValueError, match="must look like"):
        request("ftp://example.org", "GET", "/")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(OSError):
        request(f"http://127.0.0.1:{port}", "GET", "/status", timeout=2)


# -- the dashboard in Chromium --------------------------------------------------------------------

@pytest.mark.skipif(browser.missing() is not None and not IN_CI,
                    reason=str(browser.missing()))
def test_dashboard_renders_workers_and_timeline_and_escapes_errors(make):
    orch = make(inline=False)
    orch.register_worker("fetch-data", hw.ok, interval_seconds=1.5)
    orch.register_worker("html-error", hw.html_error, execution_mode="triggered",
                         max_retries=0, max_consecutive_failures=1)
    orch.register_worker("report", hw.ok, execution_mode="triggered",
                         depends_on=["fetch-data"])
    orch.start()
    assert not orch.trigger_worker("html-error", wait=True, timeout=60)
    wait_for(lambda: orch.history("report"), timeout=30, message="a report run")

    with browser.chromium() as driver:
        driver.get(orch.http_url + "/")
        wait_for(lambda: driver.execute_script("return document.body.dataset.rendered"),
                 timeout=20, message="the page's first render")
        rows = driver.find_elements("css selector", "#workers tbody tr")
        assert [r.get_attribute("data-worker") for r in rows] == ["fetch-data", "html-error",
                                                                  "report"]
        cells = {r.get_attribute("data-worker"): r.find_elements("css selector", "td")
                 for r in rows}
        assert cells["html-error"][1].text == "disabled"
        assert cells["html-error"][4].text == "failed"
        # the error text is shown as text, and none of it became markup
        error_text = driver.execute_script(
            "return document.querySelector('tr[data-worker=\"html-error\"] td.error')"
            ".textContent")
        assert error_text == f"RuntimeError: {hw.HTML_ERROR}"
        assert hw.HTML_ERROR in cells["html-error"][2].get_attribute("textContent")
        assert driver.find_elements("css selector", "main img, main script") == []
        assert driver.execute_script("return window.pwned") is None

        lanes = driver.find_elements("css selector", "#timeline .lane-row")
        assert [lane.get_attribute("data-worker") for lane in lanes] == [
            "fetch-data", "html-error", "report"]
        bars = driver.find_elements("css selector", "#timeline .bar")
        outcomes = {(b.get_attribute("data-outcome")) for b in bars}
        assert {"succeeded", "failed"} <= outcomes
        assert all(b.size["width"] >= 2 for b in bars)
        # it refreshes itself
        first = int(driver.execute_script("return document.body.dataset.rendered"))
        wait_for(lambda: int(driver.execute_script("return document.body.dataset.rendered"))
                 > first, timeout=15, message="a refresh")
        assert browser.console_errors(driver) == []
