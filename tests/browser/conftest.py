"""Browser fixtures: Playwright driving Debian's chromium (``apt-get install chromium``).

No browser is downloaded (``playwright install`` is never run): the tests
launch ``/usr/bin/chromium``.  Outside CI a missing Playwright or chromium
skips them; in CI (``CI=true``) it fails them, so a broken setup cannot pass green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("IMAGEBRIDGE_CHROMIUM", "/usr/bin/chromium"))


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (required in CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium, shared by a module's tests.

    Module scope, not session: Playwright's sync API runs an event loop in
    this thread until it stops, and the anyio tests of the other folders
    need the thread free.
    """
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 (optional here)
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _missing(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()
