"""Real headless Chromium for the HTML report tests (Debian: chromium, chromium-driver).

Without Chromium, chromedriver or selenium the browser tests skip with the reason and the
command that installs them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL = (
    "apt-get update && apt-get install -y chromium chromium-driver, "
    "and pip install selenium (the dev extra)"
)
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
# Replaces alert/confirm/prompt before any page script runs: a hostile string that
# managed to execute would leave a trace here.
XSS_PROBE = """
window.__xss = [];
['alert', 'confirm', 'prompt'].forEach(function (name) {
  window[name] = function (x) { window.__xss.push(name + ':' + String(x)); };
});
"""


def _binary() -> str | None:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    # CI installs Chromium (.ci/run sets EVALGATE_REQUIRE_BROWSER=1): there a missing
    # browser is a failure, never a skip that reads as a pass.
    if os.environ.get("EVALGATE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (EVALGATE_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable(f"selenium is not installed: {INSTALL}")
    binary, driver_path = _binary(), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable(f"headless Chromium or chromedriver not found: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": XSS_PROBE})
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """One report opened in the browser, with the helpers the tests share."""

    def __init__(self, driver: Any, path: Path) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        driver.get_log("browser")  # drop messages of earlier pages
        driver.get(path.resolve().as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.body.dataset.ready === '1'")
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str) -> Any:
        found = self.css(selector)
        assert found, f"no element matches {selector!r}"
        return found[0]

    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def xss_trace(self) -> list[str]:
        return list(self.js("return window.__xss || []"))

    def screenshot(self, target: Path) -> None:
        """The whole page, not only the viewport."""
        height = int(self.js("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(1400, min(height + 40, 9000))
        self.js("window.scrollTo(0, 0)")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(target))
        self.driver.set_window_size(1400, 1000)


@pytest.fixture
def open_page(browser: Any):
    def opener(path: Path) -> Page:
        return Page(browser, path)

    return opener
