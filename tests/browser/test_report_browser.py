"""The report in real Chromium: the answer is on the first screen, nothing is wider than the window, and it prints
on A4 from the SVGs (issue 15). Measured in the page with getBoundingClientRect, not from a screenshot."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import SCREENSHOTS, launched
from conftest import ROOT, timeout

from tests.test_analysis import TINY_CONFIG

pytestmark = pytest.mark.browser

FIRST_SCREEN = {"width": 1300, "height": 900}
# A4 minus the report's 12 mm print margins, in CSS pixels (96 per inch): what one printed line can hold.
A4_CONTENT_PX = round((210 - 2 * 12) / 25.4 * 96)
# test_analysis's seconds-long config, with all four transports and one repeat.
FOUR_TRANSPORTS = ("--set", 'matrix.transport=["poll", "longpoll", "sse", "ws"]', "--set", "load.repeat=1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real seconds-long run of every transport, analysed."""
    root = tmp_path_factory.mktemp("report-run")
    (root / "run.toml").write_text(TINY_CONFIG)
    for command in (
        ["loadgen", "--config", str(root / "run.toml"), *FOUR_TRANSPORTS, "--out", str(root / "results")],
        ["analysis", str(root / "results" / "latest")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=timeout(120)
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return (root / "results" / "latest" / "report.html").resolve()


BOXES = """() => {
  const box = (sel) => {
    const e = document.querySelector(sel);
    if (!e) return null;
    const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, shown: getComputedStyle(e).display !== "none"};
  };
  return {
    chart: box("#chart-headline img.screen-only"), table: box("#glance table"), badges: box("#glance .badges"),
    rows: document.querySelectorAll("#glance table tbody tr").length,
    badgeLinks: [...document.querySelectorAll("#glance .badges a")].map((a) => a.getAttribute("href")),
    scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth, innerHeight: innerHeight,
  };
}"""


def test_the_answer_is_on_the_first_screen_and_nothing_is_wider_than_the_window(
    browser: Any, report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = browser.new_context(viewport=FIRST_SCREEN)
    page = context.new_page()
    page.goto(report.as_uri())
    page.wait_for_function("[...document.images].every((i) => i.complete)")
    m = page.evaluate(BOXES)
    assert m["chart"]["shown"] and m["table"]["shown"], m
    # Measured in the page: the headline chart and the table end above the fold, and no horizontal scroll.
    assert m["chart"]["top"] >= 0 and m["chart"]["bottom"] <= m["innerHeight"], m
    assert m["table"]["bottom"] <= m["innerHeight"], m
    assert m["badges"]["bottom"] <= m["innerHeight"], m
    assert m["scrollWidth"] <= m["innerWidth"], m
    assert m["rows"] == 4
    # Every badge links to its verdict's reasoning further down.
    assert len(m["badgeLinks"]) == 3
    for href in m["badgeLinks"]:
        assert page.evaluate(f"document.getElementById({href[1:]!r}).getBoundingClientRect().top") > m["innerHeight"]
    # The chart really is an image that decoded (not a broken icon).
    assert page.evaluate("document.querySelector('#chart-headline img.screen-only').naturalWidth") > 500
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "report-first-screen.png"))
    with capsys.disabled():
        print(f"\n  first screen: chart ends at {m['chart']['bottom']:.0f} px, table at {m['table']['bottom']:.0f} px "
              f"of {m['innerHeight']}; screenshot {(SCREENSHOTS / 'report-first-screen.png').relative_to(ROOT)}")  # fmt: skip
    context.close()


def test_it_prints_on_a4_from_the_svgs_with_explanations_unfolded(
    browser: Any, report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = browser.new_context(viewport={"width": A4_CONTENT_PX, "height": 1000})
    page = context.new_page()
    page.goto(report.as_uri())
    page.emulate_media(media="print")
    charts = page.evaluate(
        """[...document.querySelectorAll("figure")].map((f) => [...f.querySelectorAll("img")]
             .filter((i) => getComputedStyle(i).display !== "none")
             .map((i) => ({svg: i.src.startsWith("data:image/svg+xml"), w: i.naturalWidth,
                           right: i.getBoundingClientRect().right})))"""
    )
    assert charts and all(len(shown) == 1 for shown in charts), charts
    assert all(shown[0]["svg"] and shown[0]["w"] > 0 for shown in charts), charts
    assert all(shown[0]["right"] <= A4_CONTENT_PX for shown in charts), charts
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= A4_CONTENT_PX, width  # nothing is cut off at the page's right edge
    # Folded explanations are printed unfolded (the beforeprint handler), and folded again afterwards.
    closed = "document.querySelectorAll('details:not([open])').length"
    folded = page.evaluate(closed)
    assert folded >= 1  # the classic table's reasoning, at least
    assert page.evaluate(f"dispatchEvent(new Event('beforeprint')), {closed}") == 0
    assert page.evaluate(f"dispatchEvent(new Event('afterprint')), {closed}") == folded
    pdf = page.pdf(format="A4")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "report.pdf").write_bytes(pdf)
    pages = pdf.count(b"/Type /Page\n") or pdf.count(b"/Type /Page")
    with capsys.disabled():
        print(f"\n  report.pdf: {len(pdf)} bytes, ~{pages} A4 pages; {len(charts)} charts printed from SVG")
    context.close()
