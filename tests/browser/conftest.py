"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) against the admin panel.

One browser session per test module (``browser``); the admin runs in pytest-django's
live server over the test database. Tests skip, saying why, only where Chromium or its
driver is not installed. With ``GATEWAY_SCREENSHOT_DIR`` set, ``snap`` saves the page
(how the README's screenshots are made: ``GATEWAY_SCREENSHOT_DIR=docs/screenshots .venv/bin/pytest tests/browser``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = (1400, 1000)  # the width the cut-off tables were seen at

requires_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium or chromedriver not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the whole module, 1400 x 1000."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium or chromedriver not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def log_in(browser, live_server) -> Callable[[User], None]:  # type: ignore[no-untyped-def]  # fixtures
    """Log the browser in as ``user`` (a session made by the test client, no password typed)."""

    def log_in_as(user: User) -> None:
        client = Client()
        client.force_login(user)
        browser.get(live_server.url + "/admin/login/")
        browser.delete_all_cookies()
        browser.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value, "path": "/"})

    return log_in_as


def snap(browser: object, name: str) -> None:
    """Save a screenshot of the page as ``<GATEWAY_SCREENSHOT_DIR>/<name>.png`` when that is set."""
    directory = os.environ.get("GATEWAY_SCREENSHOT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(directory) / f"{name}.png"))  # type: ignore[attr-defined]  # WebDriver
