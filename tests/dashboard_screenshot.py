"""Make ``docs/dashboard.png``: a few real workers run for some minutes (one keeps failing
and gets disabled, one times out), then headless Chromium photographs the dashboard.

    python tests/dashboard_screenshot.py docs/dashboard.png --seconds 270
"""

from __future__ import annotations

import argparse
import time

import browser
import http_workers as hw
from orchestrator import WorkerOrchestrator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--seconds", type=float, default=270.0)
    args = parser.parse_args()
    if browser.missing():
        parser.exit(1, f"{browser.missing()}\n")

    orch = WorkerOrchestrator(max_concurrent=4, http="127.0.0.1:0")
    orch.register_worker("fetch-data", hw.busy, interval_seconds=20, priority="high")
    orch.register_worker("process-data", hw.busy, execution_mode="triggered",
                         depends_on=["fetch-data"])
    orch.register_worker("sync-crm", hw.sometimes_fails, interval_seconds=15, max_retries=1)
    orch.register_worker("cleanup", hw.ok, interval_seconds=30, blocks=["process-data"],
                         priority="low")
    orch.register_worker("send-report", hw.always_fails, interval_seconds=25, max_retries=1,
                         max_consecutive_failures=3)
    orch.register_worker("thumbnails", hw.never_ends, interval_seconds=60, timeout_seconds=8,
                         max_retries=0, kill_grace_seconds=1)
    orch.register_worker("backup", command="sleep 6", cron="*/2 * * * *")
    orch.start()
    try:
        time.sleep(args.seconds)
        with browser.chromium(width=1500, height=760) as driver:
            driver.get(orch.http_url + "/")
            deadline = time.monotonic() + 20
            while not driver.execute_script("return document.body.dataset.rendered"):
                if time.monotonic() > deadline:
                    raise SystemExit("the dashboard did not render")
                time.sleep(0.1)
            driver.execute_script(
                "const pick = document.getElementById('window'); pick.value = '300';"
                "pick.dispatchEvent(new Event('change'));")
            height = driver.execute_script("return document.body.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1500, "height": height, "deviceScaleFactor": 1, "mobile": False})
            driver.save_screenshot(args.output)
            errors = browser.console_errors(driver)
            if errors:
                raise SystemExit(f"console errors: {errors}")
    finally:
        orch.stop(timeout=10)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
