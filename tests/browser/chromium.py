"""Debian's Chromium driven by Playwright, for the browser suites: skipped with the reason when either is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT

from tools.browser_profile import CHROMIUM, CHROMIUM_FLAGS

SCREENSHOTS = ROOT / "results" / "browser"


def launched() -> Iterator[Any]:
    """One headless Chromium (Playwright gives each launch a fresh user-data-dir); the body of a fixture."""
    # Imported here, not at module level, so `make test` (which deselects the browser marker) reports no skip.
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is not installed: pip install -e '.[browser]' (make test-browser does)",
    )
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (make test-browser does)")
    pw = sync_api.sync_playwright().start()
    try:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS))
    except Exception as exc:
        pw.stop()
        pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0]}")
    yield instance
    instance.close()
    pw.stop()
