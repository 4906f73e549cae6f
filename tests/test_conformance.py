"""The Autobahn WebSocket cases (run by kosoku) against /ws?mode=echo: a fast subset here, all of them slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.conformance import FAST_CASES, FAST_EXCLUDE, is_failed, kosoku_command, run_suite, summarize

needs_kosoku = pytest.mark.skipif(
    kosoku_command() is None, reason="kosoku is not installed (pip install -e '.[dev]' or '.[conformance]')"
)


def report_failures(outdir: Path) -> str:
    summary = summarize(outdir / "index.json")
    return "\n".join(summary.lines())


@needs_kosoku
@pytest.mark.timeout(60)
def test_fast_subset_has_no_failed_case(tmp_path: Path) -> None:
    outdir = tmp_path / "conformance"
    summary = run_suite(outdir, FAST_CASES, FAST_EXCLUDE, parallelism=2, quiet=True)
    assert summary.cases > 200, summary.lines()
    assert not summary.failed, report_failures(outdir)
    assert (outdir / "index.html").exists()
    assert not outdir.with_name("conformance.partial").exists()


@needs_kosoku
@pytest.mark.timeout(60)
def test_invalid_close_codes_are_answered_with_1002(tmp_path: Path) -> None:
    """Case 7.9.5 (close code 1006 on the wire) fails on a plain aiohttp echo server; 7.9.* all want 1002."""
    outdir = tmp_path / "close-codes"
    summary = run_suite(outdir, ("7.9.*",), parallelism=2, quiet=True)
    assert not summary.failed, report_failures(outdir)
    index = json.loads((outdir / "index.json").read_text())
    codes = {case: entry["remoteCloseCode"] for cases in index.values() for case, entry in cases.items()}
    assert codes and set(codes.values()) == {1002}, codes


def test_summary_counts_by_behavior_and_flags_failures(tmp_path: Path) -> None:
    """The verdict rules, on a hand-written index.json in kosoku's (Autobahn's) format."""
    index = {
        "agent": {
            "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 3},
            "6.4.1": {"behavior": "NON-STRICT", "behaviorClose": "OK", "duration": 2000},
            "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL", "duration": 1},
            "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK", "duration": 0},
            "7.9.5": {"behavior": "FAILED", "behaviorClose": "WRONG CODE", "duration": 0},
            "5.1": {"behavior": "OK", "behaviorClose": "UNCLEAN", "duration": 0},
        }
    }
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    summary = summarize(path)
    assert summary.cases == 6
    assert summary.behaviors == {"OK": 2, "NON-STRICT": 1, "INFORMATIONAL": 1, "UNIMPLEMENTED": 1, "FAILED": 1}
    assert sorted(summary.failed) == ["5.1", "7.9.5"]
    assert summary.duration_ms == 2004
    assert not is_failed(index["agent"]["12.1.1"])  # UNIMPLEMENTED is reported, not a failure


@pytest.mark.conformance
@needs_kosoku
@pytest.mark.timeout(900)
def test_whole_suite_has_no_failed_case(tmp_path: Path) -> None:
    outdir = tmp_path / "conformance"
    summary = run_suite(outdir, parallelism=2, quiet=True)
    assert summary.cases >= 517, summary.lines()
    assert not summary.failed, report_failures(outdir)
