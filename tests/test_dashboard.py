"""The dashboard page in headless Chromium against a real orchestrator: control buttons and
their token, a run's output a click away, times in each worker's zone, a timeline window that
fits the runs there are.

Most tests use the inline executor (runs on the dispatcher thread); the one about a run's
output runs real worker processes, whose output is captured.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import browser
import http_workers as hw
from conftest import wait_for
from orchestrator import WorkerOrchestrator
from orchestrator.clock import ManualClock
from orchestrator.execution.inline import InlineExecutor

TOKEN = "s3cret-token"
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.skipif(browser.missing() is not None and not IN_CI,
                                reason=str(browser.missing()))

#: What :func:`noisy_failure` writes to its two streams: markup, to be shown as text.
NOISY_STDOUT = "<b>fetched 3 rows</b>"
NOISY_STDERR = "<img src=x onerror=\"window.pwned = 3\">warning: db.internal is slow"


def noisy_failure():
    """A worker (run in a worker process) that writes to both streams, then fails."""
    print(NOISY_STDOUT, flush=True)
    print(NOISY_STDERR, file=sys.stderr, flush=True)
    raise RuntimeError(hw.HTML_ERROR)


@pytest.fixture
def make():
    """Orchestrators serving HTTP on a free port; stopped after the test."""
    made = []

    def factory(*, inline: bool = True, token: str | None = TOKEN, **kwargs):
        kwargs.setdefault("executor", InlineExecutor() if inline else None)
        orch = WorkerOrchestrator(http="127.0.0.1:0", http_token=token, **kwargs)
        made.append(orch)
        return orch

    yield factory
    for orch in made:
        orch.stop(timeout=5)


# -- helpers ------------------------------------------------------------------------------------

def script(driver, code: str, *args):
    return driver.execute_script(code, *args)


def rendered(driver) -> int:
    return int(script(driver, "return document.body.dataset.rendered || 0"))


def open_page(driver, orch) -> None:
    driver.get(orch.http_url + "/")
    wait_for(lambda: rendered(driver), timeout=20, message="the page's first render")


def text(driver, selector: str) -> str | None:
    """The textContent of the first element matching selector, or None if there is none."""
    return script(driver, "const node = document.querySelector(arguments[0]);"
                          "return node === null ? null : node.textContent;", selector)


def visible(driver, selector: str) -> bool:
    return bool(script(driver, "const node = document.querySelector(arguments[0]);"
                               "return node !== null && node.offsetParent !== null;", selector))


def click(driver, selector: str) -> None:
    """Click the element as a user would; the page redraws every few seconds, so an element
    found a moment ago may have been replaced: find it again then."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked():
        try:
            driver.find_element("css selector", selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(clicked, timeout=10, message=f"a click on {selector}")


def give_token(driver, token: str) -> None:
    wait_for(lambda: visible(driver, "#token-form"), timeout=5, message="the token form")
    driver.find_element("css selector", "#token").send_keys(token)
    click(driver, "#token-form button[type=submit]")


def button(worker: str, action: str) -> str:
    return f'#workers tr[data-worker="{worker}"] button[data-action="{action}"]'


def posts(requests: list[dict]) -> list[dict]:
    return [request for request in requests if request["method"] == "POST"]


def header(request: dict, name: str) -> str | None:
    found = [value for key, value in request["headers"].items() if key.lower() == name]
    return found[0] if found else None


# -- control: trigger, enable, disable ----------------------------------------------------------

def test_trigger_asks_for_the_token_once_and_sends_it_in_the_authorization_header(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    with browser.chromium() as driver:
        open_page(driver, orch)
        assert not visible(driver, "#token-form")
        click(driver, button("ok", "trigger"))
        give_token(driver, TOKEN)

        wait_for(lambda: orch.history("ok"), timeout=10, message="a run of ok")
        wait_for(lambda: script(driver, "return document.querySelectorAll("
                                        "'#timeline .lane-row[data-worker=\"ok\"] .bar')"
                                        ".length") == 1,
                 timeout=10, message="the run's bar")
        assert text(driver, "#notice") == "triggered ok"
        assert not visible(driver, "#token-form")
        sent = posts(browser.requests_sent(driver))
        assert [request["url"] for request in sent] == [orch.http_url + "/workers/ok/trigger"]
        assert header(sent[0], "authorization") == f"Bearer {TOKEN}"
        assert header(sent[0], "cookie") is None
        assert driver.get_cookies() == []
        assert script(driver, "return sessionStorage.getItem('orchestrator-token')") == TOKEN
        assert script(driver, "return localStorage.length") == 0

        # asked once per tab: the second click sends at once
        click(driver, button("ok", "trigger"))
        wait_for(lambda: len(orch.history("ok")) == 2, timeout=10, message="a second run")
        assert not visible(driver, "#token-form")
        wait_for(lambda: script(driver, "return document.querySelectorAll("
                                        "'#timeline .lane-row[data-worker=\"ok\"] .bar')"
                                        ".length") == 2,
                 timeout=10, message="the second run's bar")
        sent = posts(browser.requests_sent(driver))
        assert len(sent) == 1 and header(sent[0], "authorization") == f"Bearer {TOKEN}"
        assert browser.console_errors(driver) == []


def test_disable_then_enable_changes_the_worker_in_the_page_and_the_orchestrator(make):
    orch = make()
    orch.register_worker("ok", hw.ok, interval_seconds=3600)
    orch.start()
    row = '#workers tr[data-worker="ok"]'
    with browser.chromium() as driver:
        open_page(driver, orch)
        assert text(driver, row + " td:nth-child(2)") == "idle"
        assert visible(driver, button("ok", "disable"))
        assert not visible(driver, button("ok", "enable"))

        click(driver, button("ok", "disable"))
        give_token(driver, TOKEN)
        wait_for(lambda: text(driver, row + " td:nth-child(2)") == "disabled", timeout=10,
                 message="the row saying disabled")
        assert orch.get_status()["worker_states"]["ok"]["enabled"] is False
        assert visible(driver, button("ok", "enable"))
        assert not visible(driver, button("ok", "disable"))
        assert script(driver, "return document.querySelector(arguments[0]).disabled",
                      button("ok", "trigger"))
        assert text(driver, "#notice") == "disabled ok"

        # a success redraws at once: just after a timed refresh, the next is 5 s away
        drawn = rendered(driver)
        wait_for(lambda: rendered(driver) > drawn, timeout=10, message="a timed refresh")
        click(driver, button("ok", "enable"))
        wait_for(lambda: text(driver, row + " td:nth-child(2)") == "idle", timeout=3,
                 message="the row saying idle before the next timed refresh")
        assert orch.get_status()["worker_states"]["ok"]["enabled"] is True
        assert visible(driver, button("ok", "disable"))
        assert not script(driver, "return document.querySelector(arguments[0]).disabled",
                          button("ok", "trigger"))
        assert not visible(driver, "#token-form")  # the token was kept
        assert driver.get_cookies() == []
        assert browser.console_errors(driver) == []


def test_a_wrong_token_shows_the_error_is_forgotten_and_steers_nothing(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    with browser.chromium() as driver:
        open_page(driver, orch)
        browser.requests_sent(driver)
        click(driver, button("ok", "trigger"))
        assert posts(browser.requests_sent(driver)) == []  # nothing without a token
        give_token(driver, "wrong-token")
        wait_for(lambda: "wrong token" in (text(driver, "#notice") or ""), timeout=10,
                 message="the server's error in the page")
        assert script(driver, "return document.getElementById('notice')"
                              ".classList.contains('error')")
        assert text(driver, "#notice").startswith("trigger ok refused: wrong token")
        sent = posts(browser.requests_sent(driver))
        assert len(sent) == 1 and header(sent[0], "authorization") == "Bearer wrong-token"
        assert script(driver, "return sessionStorage.getItem('orchestrator-token')") is None
        assert orch.history("ok") == []

        # the next action asks again, and the right token then works
        click(driver, button("ok", "trigger"))
        assert posts(browser.requests_sent(driver)) == []
        give_token(driver, TOKEN)
        wait_for(lambda: orch.history("ok"), timeout=10, message="a run of ok")
        # the only error the browser logged is the refusal itself
        assert [(entry["source"], entry["message"].split(" - ")[0])
                for entry in browser.console_errors(driver)] == [
            ("network", orch.http_url + "/workers/ok/trigger")]


# -- a run's output ------------------------------------------------------------------------------

def test_a_click_shows_a_failed_runs_error_traceback_and_output_as_text(make):
    orch = make(inline=False)
    orch.register_worker("noisy", noisy_failure, execution_mode="triggered", max_retries=0)
    orch.register_worker("fine", hw.ok, execution_mode="triggered")
    orch.start()
    assert not orch.trigger_worker("noisy", wait=True, timeout=60)
    assert orch.trigger_worker("fine", wait=True, timeout=60)
    assert not orch.trigger_worker("noisy", wait=True, timeout=60)
    newer, older = [run.run_id for run in orch.history("noisy")]
    with browser.chromium() as driver:
        open_page(driver, orch)
        assert not visible(driver, "#details")
        click(driver, '#workers tr[data-worker="noisy"] td.name')
        wait_for(lambda: text(driver, '#details pre[data-field="stderr_tail"]'), timeout=10,
                 message="the run's standard error")
        assert script(driver, "return document.querySelector('#details .facts').dataset.run") \
            == newer
        assert text(driver, '#details pre[data-field="error"]') == \
            f"RuntimeError: {hw.HTML_ERROR}"
        assert text(driver, '#details pre[data-field="stderr_tail"]').strip() == NOISY_STDERR
        assert text(driver, '#details pre[data-field="stdout_tail"]').strip() == NOISY_STDOUT
        traceback = text(driver, '#details pre[data-field="traceback"]')
        assert "Traceback" in traceback and "in noisy_failure" in traceback
        # none of it became markup
        assert driver.find_elements("css selector", "#details img, #details script, "
                                                    "#details pre *") == []
        assert script(driver, "return window.pwned") is None

        # a row of the worker's runs shows that run
        click(driver, f'#details tr[data-run="{older}"]')
        wait_for(lambda: script(driver, "return document.querySelector('#details .facts')"
                                        ".dataset.run") == older,
                 timeout=5, message="the older run's details")
        assert text(driver, '#details pre[data-field="stderr_tail"]').strip() == NOISY_STDERR

        # a bar in the timeline shows its run
        fine = orch.history("fine")[0].run_id
        click(driver, f'#timeline .bar[data-run="{fine}"]')
        wait_for(lambda: script(driver, "const facts = document.querySelector('#details "
                                        ".facts'); return facts && facts.dataset.run")
                 == fine, timeout=10, message="the bar's run in the details")
        assert text(driver, "#details-title") == "Runs of fine"
        assert text(driver, '#details [data-field="error"]') == "none"
        # the open panel follows new runs, and stays on the run chosen
        assert orch.trigger_worker("fine", wait=True, timeout=60)
        wait_for(lambda: len(driver.find_elements("css selector", "#details tr[data-run]"))
                 == 2, timeout=15, message="the new run in the panel")
        assert script(driver, "return document.querySelector('#details .facts').dataset.run") \
            == fine
        assert script(driver, "return window.pwned") is None
        assert browser.console_errors(driver) == []


# -- times ---------------------------------------------------------------------------------------

def next_daily(zone: ZoneInfo, hour: int, minute: int, after: datetime) -> datetime:
    """The first hour:minute of zone's clock after ``after``."""
    local = after.astimezone(zone)
    due = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due if due > local else (due + timedelta(days=1))


def test_times_are_shown_in_each_workers_zone(make):
    tokyo, newfoundland = ZoneInfo("Asia/Tokyo"), ZoneInfo("America/St_Johns")
    orch = make()
    orch.register_worker("tokyo", hw.ok, cron="30 4 * * *", timezone="Asia/Tokyo")
    orch.register_worker("newfoundland", hw.ok, cron="15 23 * * *",
                         timezone="America/St_Johns")
    before = datetime.now(timezone.utc)
    orch.start()
    assert orch.trigger_worker("tokyo", wait=True, timeout=10)
    run = orch.history("tokyo")[0]
    with browser.chromium() as driver:
        # a browser in a third zone: the page must not use the browser's own
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride",
                               {"timezoneId": "America/Los_Angeles"})
        open_page(driver, orch)
        assert script(driver, "return Intl.DateTimeFormat().resolvedOptions().timeZone") \
            == "America/Los_Angeles"
        shown = {name: text(driver, f'#workers tr[data-worker="{name}"] td.when')
                 for name in ("tokyo", "newfoundland")}
        assert shown == {
            "tokyo": next_daily(tokyo, 4, 30, before).strftime("%Y-%m-%d %H:%M:%S"),
            "newfoundland": next_daily(newfoundland, 23, 15, before).strftime(
                "%Y-%m-%d %H:%M:%S")}

        click(driver, '#workers tr[data-worker="tokyo"] td.name')
        wait_for(lambda: text(driver, '#details [data-fact="started"] b'), timeout=10,
                 message="the run's start in the details")
        assert text(driver, '#details [data-fact="started"] b') == \
            run.started_at.astimezone(tokyo).strftime("%Y-%m-%d %H:%M:%S")
        assert text(driver, "#details-zone") == "times in Asia/Tokyo"
        bar_title = script(driver, "return document.querySelector('#timeline .bar').title")
        assert f", started {run.started_at.astimezone(tokyo):%Y-%m-%d %H:%M:%S} (Asia/Tokyo)" \
            in bar_title
        # the axis belongs to no one worker: the workers differ, so it is in UTC and says so
        assert text(driver, "#timeline .axis-row .zone") == "UTC"
        assert browser.console_errors(driver) == []


# -- the timeline's window -----------------------------------------------------------------------

def window(driver) -> tuple[datetime, datetime]:
    start, end = script(driver, "const line = document.getElementById('timeline');"
                                "return [line.dataset.start, line.dataset.end];")
    return (datetime.fromtimestamp(int(float(start)) / 1000, timezone.utc),
            datetime.fromtimestamp(int(float(end)) / 1000, timezone.utc))


def choose_window(driver, seconds: int) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "window")).select_by_value(str(seconds))


def ticks(driver) -> tuple[list[str], bool]:
    """The axis labels, and whether any two of them overlap (read at one instant: the page
    redraws every few seconds)."""
    return script(driver, """
        const ticks = [...document.querySelectorAll('#timeline .tick')];
        const boxes = ticks.map((tick) => tick.getBoundingClientRect());
        return [ticks.map((tick) => tick.textContent),
                boxes.some((box, i) => i > 0 && box.left < boxes[i - 1].right)];""")


def readable(labels: list[str], clock: str) -> bool:
    """At least three round times (with the date where a day begins), then "now"."""
    return len(labels) >= 4 and labels[-1] == "now" and all(
        re.fullmatch(rf"(\d{{4}}-\d\d-\d\d )?{clock}", label) for label in labels[:-1])


def test_the_timeline_spans_the_runs_there_are(make):
    # the orchestrator's clock stands 20 minutes back: its runs are that old to the browser
    began = datetime.now(timezone.utc) - timedelta(minutes=20)
    clock = ManualClock(began)
    orch = make(clock=clock, executor=InlineExecutor(now=clock.now))
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    assert orch.trigger_worker("ok", wait=True, timeout=10)
    clock.advance(600)
    assert orch.trigger_worker("ok", wait=True, timeout=10)
    (first, first_id), (second, _) = sorted((run.started_at, run.run_id)
                                            for run in orch.history("ok"))
    with browser.chromium() as driver:
        open_page(driver, orch)
        assert script(driver, "return document.getElementById('window').value") == "3600"
        start, end = window(driver)
        now = datetime.now(timezone.utc)
        # from just before the first run to now: not the whole hour the menu allows
        assert first - timedelta(minutes=1) < start <= first
        assert now - timedelta(minutes=1) < end <= now
        assert len(driver.find_elements("css selector", "#timeline .bar")) == 2
        left = script(driver, """
            const bar = document.querySelector('#timeline .bar[data-run="' + arguments[0] + '"]');
            const lane = bar.parentElement.getBoundingClientRect();
            return (bar.getBoundingClientRect().left - lane.left) / lane.width;""", first_id)
        assert 0 < left < 0.05  # the oldest run at the left edge, not a third of the way in
        labels, overlap = ticks(driver)
        assert readable(labels, r"\d\d:\d\d") and not overlap, labels

        # at most 15 minutes: the window begins with the second run
        choose_window(driver, 900)
        start, end = window(driver)
        assert second - timedelta(minutes=1) < start <= second
        assert len(driver.find_elements("css selector", "#timeline .bar")) == 1
        # at most 5 minutes: no run to show, so the shortest window
        choose_window(driver, 300)
        start, end = window(driver)
        assert end - start == timedelta(minutes=1)
        assert driver.find_elements("css selector", "#timeline .bar") == []
        labels, overlap = ticks(driver)
        assert readable(labels, r"\d\d:\d\d:\d\d") and not overlap, labels
        assert browser.console_errors(driver) == []


def test_a_first_run_gets_a_window_of_a_minute_with_readable_ticks(make):
    orch = make()
    orch.register_worker("ok", hw.ok, execution_mode="triggered")
    orch.start()
    assert orch.trigger_worker("ok", wait=True, timeout=10)
    with browser.chromium() as driver:
        open_page(driver, orch)
        start, end = window(driver)
        assert end - start == timedelta(minutes=1)
        labels, overlap = ticks(driver)
        assert readable(labels, r"\d\d:\d\d:\d\d") and not overlap, labels
        width = script(driver, "return document.querySelector('#timeline .bar')"
                               ".getBoundingClientRect().width")
        assert width >= 2
        assert browser.console_errors(driver) == []
