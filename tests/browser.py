"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium``, driven by Playwright.

``conftest.browser`` launches it once per test module; ``open_page`` opens a URL in a fresh
context at a given width and records what a user would never see go wrong: console
errors, uncaught exceptions and failed resource loads.

Without Chromium or Playwright the tests skip, saying which is missing, unless
``$LETTUCIFY_REQUIRE_BROWSER=1`` (``.ci/run`` sets it): then they fail.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

CHROMIUM = Path(os.environ.get("LETTUCIFY_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("LETTUCIFY_REQUIRE_BROWSER") == "1"
# Without the background-networking flags Chromium keeps calling Google's hosts, which
# this closed network refuses; as root it needs --no-sandbox.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PHONE: Tuple[int, int] = (375, 812)
DESKTOP: Tuple[int, int] = (1280, 900)
# Where the tests leave their screenshots (CI keeps the folder as its artifacts).
ARTIFACTS = Path(os.environ.get("LETTUCIFY_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "outputs" / "test-artifacts"))


def missing() -> Optional[str]:
    """Why no browser test can run here, or None."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}: install Debian's chromium (README set-up line 1)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class Problems:
    """What went wrong on a page, as the browser reported it."""

    console_errors: List[str] = field(default_factory=list)
    page_errors: List[str] = field(default_factory=list)
    failed_loads: List[str] = field(default_factory=list)

    def all(self) -> List[str]:
        return [*self.console_errors, *self.page_errors, *self.failed_loads]


def open_page(browser, url: str, size: Tuple[int, int] = DESKTOP):
    """``(page, problems)``: ``url`` in a new context ``size`` wide and high, loaded.

    Console errors that follow HTTP error statuses the page asked for on purpose
    (Chromium logs each 4xx/5xx fetch as one) are the caller's to expect.
    """
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    problems = Problems()
    page.on("console", lambda msg: msg.type == "error" and problems.console_errors.append(msg.text))
    page.on("pageerror", lambda err: problems.page_errors.append(str(err)))
    page.on("requestfailed", lambda request: problems.failed_loads.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda response: response.status >= 400 and response.request.resource_type != "fetch"
            and problems.failed_loads.append(f"{response.url}: HTTP {response.status}"))
    page.goto(url, wait_until="load")
    return page, problems


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
