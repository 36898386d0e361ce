"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver (`apt-get install chromium
chromium-driver`): no browser or driver is downloaded. Tests that need it skip without it (fail where CI is set)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str | None:
    """What the browser needs and this machine lacks (None: nothing)."""
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        return f"no {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no selenium (requirements-dev.txt)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless chromium with a profile of its own (removed after), the window `width` by `height` pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="oom-killer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root, as in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, path: Path, height: int | None = None) -> None:
    """The page (from its top: `height` pixels of it, or all of it) as a PNG."""
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, 600)  # the page's own height, not the last one's window
    chrome = driver.get_window_size()["height"] - int(driver.execute_script("return window.innerHeight"))
    whole = int(driver.execute_script("return document.body.scrollHeight")) + 32
    driver.set_window_size(width, (height or whole) + chrome)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
