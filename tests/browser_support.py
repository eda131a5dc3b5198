"""A real browser for the usage page's tests: Debian's `chromium` and `chromedriver`,
driven by selenium, headless, with a profile of its own and the console recorded.

The paths are given to selenium (Selenium Manager is never asked to download a
driver). A test that cannot find them is skipped with the reason; `.ci/run` installs
both, so CI runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30


def need_chromium() -> None:
    """Skip the test (saying why) when the browser or its driver is not installed."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed (apt-get install chromium chromium-driver)")


@contextmanager
def chrome() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, its console kept for `console()`."""
    need_chromium()
    profile = tempfile.mkdtemp(prefix="rcv-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,3200",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """The console entries since the last call (warnings and errors only)."""
    return [e for e in driver.get_log("browser") if e["level"] in ("WARNING", "SEVERE")]


def unexpected(entries: list[dict[str, Any]], *allowed: tuple[str, int]) -> list[str]:
    """The console entries that are not a failed fetch of an allowed path with its
    allowed status (the browser logs every 4xx answer to a fetch as an error)."""
    left = []
    for entry in entries:
        message = str(entry["message"])
        fine = any(
            f"{path} - Failed to load resource: the server responded with a status of {status}"
            in message
            for path, status in allowed
        )
        if not fine:
            left.append(message)
    return left


def wait_for(driver: WebDriver, css: str, what: str = "") -> WebElement:
    """The first visible element matching `css`, once there is one."""

    def found(d: WebDriver) -> WebElement | bool:
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return False

    element: WebElement = WebDriverWait(driver, WAIT_S).until(found, what or css)
    return element


def keep_screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    """Save a screenshot under the test's directory, and copy it to
    `$RECOVEA_TEST_ARTIFACTS` when that is set (CI keeps that folder)."""
    path = directory / name
    assert driver.save_screenshot(str(path)), "no screenshot"
    artifacts = os.environ.get("RECOVEA_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path
