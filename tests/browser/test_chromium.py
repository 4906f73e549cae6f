"""The page in real Chromium (Debian's /usr/bin/chromium driven by Playwright): handlers, gaps, resume, /stats.

Skipped, with the reason, when Playwright or Chromium is missing or will not start; never passed without it.
Run with ``make test-browser``. Screenshots go to ``results/browser/``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import SCREENSHOTS, launched
from conftest import ROOT, ServerProcess, get_stats, timeout

from tools import browser_profile

pytestmark = pytest.mark.browser

TRANSPORTS = ("ws", "sse", "longpoll", "poll")
FAST_FEED = ("--set", "feed.rate_hz=20", "--set", "feed.payload_bytes=20")
Snapshot = dict[str, Any]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    yield from launched()


class Page:
    """The pushbench page in a fresh browser context, and ways to read its counters."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)
        self.page.wait_for_function("window.pushbench && window.pushbench.snapshot().started")

    def snapshot(self) -> Snapshot:
        snap: Snapshot = self.page.evaluate("window.pushbench.snapshot()")
        return snap["transports"]

    def wait_until(self, what: str, check: Callable[[Snapshot], bool], seconds: float = 10) -> Snapshot:
        deadline = time.monotonic() + timeout(seconds)
        while True:
            snap = self.snapshot()
            if check(snap):
                return snap
            if time.monotonic() > deadline:
                brief = {t: {k: v for k, v in s.items() if k not in ("log", "handlerEvents")} for t, s in snap.items()}
                raise AssertionError(f"page never got {what} within {timeout(seconds):g} s: {json.dumps(brief)}")
            time.sleep(0.05)

    def screenshot(self, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        with capsys.disabled():
            print(f"\n  screenshot: {path.relative_to(ROOT)}")
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Page]]:
    pages: list[Page] = []

    def open_(url: str, **query: Any) -> Page:
        qs = "&".join(f"{k}={v}" for k, v in {"poll_ms": 200, "backoff_max_ms": 1000, **query}.items())
        page = Page(browser, f"{url}/?{qs}")
        pages.append(page)
        return page

    yield open_
    for page in pages:
        assert not page.errors, f"JavaScript errors on the page: {page.errors}"
        page.close()


def every(snap: Snapshot, check: Callable[[dict[str, Any]], bool]) -> bool:
    return all(check(snap[t]) for t in TRANSPORTS)


def handler_runs(snap: Snapshot, conn: int) -> list[dict[str, Any]]:
    return [e for e in snap["ws"]["handlerEvents"] if e["conn"] == conn]


def assert_contiguous(snap: Snapshot) -> None:
    """Every seq from the first received (since the last restart) to the cursor arrived once or was counted lost."""
    for t in TRANSPORTS:
        s = snap[t]
        assert (s["gaps"], s["missed"], s["duplicates"]) == (0, 0, 0), f"{t}: {s['log'][-20:]}"
        assert s["messagesSinceReset"] + s["lostSinceReset"] == s["cursor"] - s["firstSeq"] + 1, f"{t}: {s}"


def test_websocket_handlers_fire_open_messages_close_on_server_shutdown(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page]
) -> None:
    sp = server_process(*FAST_FEED)
    page = open_page(sp.url)
    page.wait_until("5 WebSocket messages", lambda s: s["ws"]["messages"] >= 5)
    assert sp.stop(signal.SIGTERM) == 0
    snap = page.wait_until("onclose", lambda s: any(e["type"] == "close" for e in handler_runs(s, 1)))
    runs = handler_runs(snap, 1)
    assert [e["type"] for e in runs] == ["open", "message", "close"], runs
    assert runs[1]["count"] >= 5
    # 1001 Going Away with the server's reason arrives every time. wasClean is not asserted: about one run in
    # three Chromium reports wasClean=false (the server process closes the TCP connection before the closing
    # handshake is complete on Chromium's side); that is the server's shutdown, not the page.
    assert (runs[2]["code"], runs[2]["reason"]) == (1001, "server shutdown"), runs[2]
    assert snap["ws"]["messages"] == runs[1]["count"]


def test_websocket_onerror_then_onclose_when_server_unreachable(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page]
) -> None:
    sp = server_process(*FAST_FEED)
    page = open_page(sp.url)
    page.wait_until("an open WebSocket", lambda s: s["ws"]["opens"] == 1)
    sp.stop(signal.SIGKILL)  # no close frame, and nothing listening afterwards
    snap = page.wait_until("two failed reconnects", lambda s: len(handler_runs(s, 3)) >= 2)
    for conn in (2, 3):
        runs = handler_runs(snap, conn)
        assert [e["type"] for e in runs] == ["error", "close"], runs
        assert (runs[1]["code"], runs[1]["wasClean"]) == (1006, False), runs
    assert snap["ws"]["state"].startswith("reconnecting") or snap["ws"]["state"] in ("connecting", "error")
    assert any("onerror" in line for line in snap["ws"]["log"])


def test_every_transport_receives_every_event_without_gap(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page], capsys: pytest.CaptureFixture[str]
) -> None:
    sp = server_process(*FAST_FEED)
    page = open_page(sp.url)
    page.page.fill("#poll-interval", "300")
    page.page.dispatch_event("#poll-interval", "change")
    assert page.page.evaluate("window.pushbench.snapshot().pollIntervalMs") == 300
    snap = page.wait_until("40 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 40))
    assert_contiguous(snap)
    for t in TRANSPORTS:
        s = snap[t]
        assert s["lost"] == s["resets"] == 0
        assert s["p50_ms"] is not None and 0 <= s["p50_ms"] <= s["p99_ms"] < timeout(2000), (t, s)
        assert s["bytes"] > 0
    for t in ("ws", "sse", "longpoll"):  # pushed within milliseconds; short polling waits for the next poll
        assert snap[t]["p50_ms"] < timeout(100), (t, snap[t]["p50_ms"])
    assert snap["ws"]["requests"] == snap["sse"]["requests"] == 1
    assert page.page.evaluate("[125, 126, 65535, 65536].map(window.pushbench.wsFrameHeaderBytes)") == [2, 4, 4, 10]
    page.screenshot("every-transport", capsys)


PAINTED = """(charts) => charts.map(([id, hex]) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 40) n++;
  }
  return n;
})"""


def test_live_charts_draw_every_event_and_keep_up_at_20_events_per_second(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page], capsys: pytest.CaptureFixture[str]
) -> None:
    sp = server_process(*FAST_FEED)  # 20 events/s
    page = open_page(sp.url)
    page.wait_until("10 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 10))
    backlog: list[dict[str, int]] = []
    started = time.monotonic()
    while time.monotonic() - started < timeout(5):  # ~100 events on each transport
        snap = page.snapshot()
        backlog.append({t: snap[t]["chart"]["backlog"] for t in TRANSPORTS})
        time.sleep(0.1)
    full = page.page.evaluate("window.pushbench.snapshot()")
    snap = full["transports"]
    half = len(backlog) // 2
    for t in TRANSPORTS:
        chart = snap[t]["chart"]
        # Every event received is drawn or waiting for the next frame; the wait never grows.
        assert chart["drawnEvents"] + chart["backlog"] == snap[t]["messages"], (t, chart, snap[t]["messages"])
        assert chart["maxBacklog"] <= 10, (t, chart)  # half a second of events at most, ever
        first, second = [b[t] for b in backlog[:half]], [b[t] for b in backlog[half:]]
        assert max(second) <= max(first) + 2, (t, backlog)
        assert chart["stripPoints"] >= 80 and chart["bytesPoints"] >= 10, (t, chart)
    assert full["frames"] > 100  # animation frames ran all along
    # The canvases show the data: pixels of each transport's own colour on both of its charts.
    charts = [(f"{t}-{kind}-chart", snap[t]["chart"]["colour"]) for t in TRANSPORTS for kind in ("latency", "bytes")]
    painted = dict(zip((c[0] for c in charts), page.page.evaluate(PAINTED, charts), strict=True))
    assert all(n >= 10 for n in painted.values()), painted
    assert page.page.locator("figure.live figcaption").count() == 2 * len(TRANSPORTS)
    page.screenshot("live-charts", capsys)


def test_ts_beyond_2_pow_53_gives_exact_milliseconds(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page]
) -> None:
    page = open_page(server_process(*FAST_FEED).url)
    ms = page.page.evaluate(
        """[window.pushbench.parseFeedJson('{"seq":1,"ts":1795710654037123456,"data":""}').ts,
            window.pushbench.nsDigitsToMs("1795710654037999999")]"""
    )
    assert ms[0] == pytest.approx(1795710654037.123456, abs=1e-6)
    assert ms[1] == pytest.approx(1795710654037.999999, abs=1e-6)


def test_page_counters_match_server_stats(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page]
) -> None:
    """Per transport, at a moment when nothing is in flight, the page and the server agree exactly on:

    - events: the server's ``deliveries`` (events handed to the socket) == the page's ``messages`` (events its
      handlers received);
    - requests: the server's ``requests`` (HTTP requests for poll/longpoll, streams opened for SSE and WebSocket)
      == the page's ``requests`` (fetches made, EventSource and WebSocket objects created).

    Both sides only count up, so a sample where the page read the same numbers before and after /stats answered,
    and /stats agrees with them, is an exact match. Events arrive every 200 ms: most samples are quiet.
    """
    sp = server_process("--set", "feed.rate_hz=5", "--set", "feed.payload_bytes=20")
    page = open_page(sp.url, poll_ms=300)
    page.wait_until("5 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 5))
    last: tuple[Any, ...] = ()
    for _ in range(100):
        before = page.snapshot()
        stats = get_stats(sp.url)
        after = page.snapshot()
        page_counts = {t: (after[t]["messages"], after[t]["requests"]) for t in TRANSPORTS}
        server_counts = {t: (stats["deliveries"][t], stats["requests"].get(t, 0)) for t in TRANSPORTS}
        quiet = page_counts == {t: (before[t]["messages"], before[t]["requests"]) for t in TRANSPORTS}
        if quiet and page_counts == server_counts:
            break
        last = (page_counts, server_counts)
        time.sleep(0.037)
    else:
        raise AssertionError(f"page (messages, requests) never matched /stats (deliveries, requests): {last}")
    assert all(page_counts[t][0] >= 5 for t in TRANSPORTS)
    assert stats["connections_open"] >= 3  # WebSocket, EventSource and the held long poll at least


def test_resume_without_gap_after_every_connection_drops(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page]
) -> None:
    sp = server_process(*FAST_FEED)
    page = open_page(sp.url)
    before = page.wait_until("10 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 10))
    sp.proc.send_signal(signal.SIGUSR1)  # the server cuts every connection and keeps running
    snap = page.wait_until(
        "30 more events on every transport",
        lambda s: (
            every(s, lambda t: t["cursor"] >= before["ws"]["cursor"] + 30)
            and s["ws"]["opens"] >= 2
            and s["sse"]["opens"] >= 2
        ),
    )
    assert_contiguous(snap)
    for t in TRANSPORTS:
        assert snap[t]["lost"] == snap[t]["resets"] == 0, t
    assert snap["ws"]["lastClose"]["code"] == 1006
    assert snap["ws"]["requests"] >= 2 and snap["sse"]["requests"] >= 2


def test_server_restart_is_detected_and_the_new_feed_is_followed_from_seq_1(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page], capsys: pytest.CaptureFixture[str]
) -> None:
    first = server_process(*FAST_FEED)
    page = open_page(first.url)
    page.wait_until("20 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 20))
    assert first.stop(signal.SIGTERM) == 0
    page.wait_until("every transport to notice", lambda s: every(s, lambda t: t["errors"] >= 1 or t["closes"] >= 1))
    second = server_process(*FAST_FEED, "--set", f"server.port={first.port}")
    snap = page.wait_until(
        "every transport to reset and follow the new server",
        lambda s: every(s, lambda t: t["resets"] == 1 and t["firstSeq"] == 1 and t["cursor"] >= 10),
        seconds=20,
    )
    assert_contiguous(snap)  # since the reset: every seq of the new server from 1 on
    assert all(any("RESET" in line for line in snap[t]["log"]) for t in TRANSPORTS)
    assert get_stats(second.url)["latest_seq"] >= snap["ws"]["cursor"]
    page.screenshot("after-restart", capsys)


def test_events_that_left_history_are_counted_lost(
    server_process: Callable[..., ServerProcess], open_page: Callable[..., Page], capsys: pytest.CaptureFixture[str]
) -> None:
    sp = server_process("--set", "feed.rate_hz=50", "--set", "feed.payload_bytes=20", "--set", "feed.history=20")
    page = open_page(sp.url, poll_ms=100)
    page.wait_until("10 events on every transport", lambda s: every(s, lambda t: t["messages"] >= 10))
    page.page.evaluate("window.pushbench.pause()")
    paused = page.snapshot()
    furthest = max(paused[t]["cursor"] for t in TRANSPORTS)
    deadline = time.monotonic() + timeout(10)
    while get_stats(sp.url)["oldest_seq"] <= furthest + 30:
        assert time.monotonic() < deadline, "the feed did not move on"
        time.sleep(0.1)
    page.page.evaluate("window.pushbench.resume()")
    latest = get_stats(sp.url)["latest_seq"]
    snap = page.wait_until("every transport past the loss", lambda s: every(s, lambda t: t["cursor"] >= latest + 10))
    assert_contiguous(snap)  # received + counted lost == every seq from the first to the last
    for t in TRANSPORTS:
        assert snap[t]["lost"] >= 30, (t, snap[t]["lost"])
        assert snap[t]["resets"] == 0
        assert any("LOST" in line for line in snap[t]["log"]), t
    page.screenshot("lost-events", capsys)


def test_browser_profile_is_recorded_from_real_chromium(tmp_path: Path, browser: Any) -> None:
    """``make browser-profile`` end to end (headless here, to stay quick): the file has what the loadgen reads."""
    out = tmp_path / "browser_profile.json"
    # A process of its own: Playwright's sync API keeps an event loop running in this thread.
    done = subprocess.run(
        [sys.executable, "-m", "tools.browser_profile", "--out", str(out), "--headless", "--timeout", "30"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout(60),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    profile = json.loads(out.read_text())
    assert profile["browser"] == browser_profile.chromium_version()
    assert profile["browser"].split()[1].split(".")[0] == browser.version.split(".")[0]
    fetch, ws = profile["fetch"], profile["websocket"]
    assert fetch["request_headers"][0] == ["Host", "{host}"]
    assert ["Referer", "{origin}/"] in fetch["request_headers"]
    assert any(n == "User-Agent" and "HeadlessChrome/" in v for n, v in fetch["request_headers"])
    assert ["Sec-WebSocket-Version", "13"] in ws["request_headers"]
    assert 300 < fetch["request_header_bytes"] < 2000 and 300 < ws["request_header_bytes"] < 2000
    assert all(100 < n < 1000 for n in profile["response_header_bytes"].values())
