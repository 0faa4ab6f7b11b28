"""Headless Chromium through selenium and the Debian ``chromium-driver`` for the dashboard
tests; :func:`chromium` ends every process it started."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import tempfile
import time

import psutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "Chromium is not installed (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 900):
    """A selenium driver for headless Chromium that records console messages and the
    requests it sends; quit on exit, with its profile directory removed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="orchestrator-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--no-first-run",
                     "--disable-component-update", "--disable-sync",
                     "--disable-crash-reporter", "--disable-breakpad",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=service)
        yield driver
    finally:
        # Chromium's helpers may leave our process tree when their parent exits: note them
        # all first, then make sure each one is gone.
        spawned = []
        if service.process is not None:
            try:
                root = psutil.Process(service.process.pid)
                spawned = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        if driver is not None:
            driver.quit()
        # Not all are our children, so there is nothing to block on: look until they are gone.
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in spawned) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in spawned:
            if _alive(process):
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(profile, ignore_errors=True)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def console_errors(driver) -> list[dict]:
    """Console entries of level SEVERE (errors, CSP violations, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def requests_sent(driver) -> list[dict]:
    """The requests the page sent since the last call, oldest first, as the DevTools
    protocol's ``Request`` objects (``method``, ``url``, ``headers`` as the page set them)."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            sent.append(message["params"]["request"])
    return sent
