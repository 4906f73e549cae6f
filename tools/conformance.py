"""``python -m tools.conformance``: the Autobahn WebSocket test cases against ``/ws?mode=echo``.

Starts ``python -m servers`` on a free loopback port in echo-friendly settings, drives it with ``kosoku``
(a runner of the Autobahn|Testsuite case files, the ``conformance`` extra), keeps the report (``index.json``,
``index.html`` and one file pair per case) under ``results/conformance-<UTC time>/``, prints counts by
behavior, and exits 1 when any case FAILED (2 when the suite could not run at all).

The server runs with the limits the suite needs: the 9.* cases send messages of up to 16 MiB (the default
``server.max_ws_message_bytes`` of 1 MiB would rightly close them with 1009), and permessage-deflate is on
so that the 12.* and 13.* compression cases test something instead of reporting UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What the Autobahn verdicts mean for us: these pass, UNIMPLEMENTED is reported but is no failure.
PASSING_BEHAVIORS = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
PASSING_CLOSE_BEHAVIORS = frozenset({"OK", "INFORMATIONAL"})
NOT_FAILED_BEHAVIORS = PASSING_BEHAVIORS | {"UNIMPLEMENTED"}
SERVER_SETTINGS = (
    "server.max_ws_message_bytes=20000000",  # the largest case message is 16 MiB (9.1.6, 9.2.6)
    "server.send_buffer_bytes=40000000",  # echoes of 16 MiB messages must never look like a slow client
    "server.ws_compress=true",  # 12.* / 13.*: permessage-deflate
    "server.ws_heartbeat_s=0",  # the cases count every frame; an unsolicited ping would be one too many
)
# A subset that runs in a few seconds (make test): framing, pings, reserved bits, opcodes, fragmentation,
# UTF-8, close handling, auto-fragmentation, and a little of the big-message and compression groups.
FAST_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "9.1.1", "9.2.1", "12.1.1", "13.1.1")
FAST_EXCLUDE = ("6.4.*",)  # fragmented UTF-8 with deliberate 1 s pauses: 8 s for 4 cases


@dataclass
class Summary:
    """The verdicts of one run, read back from kosoku's ``index.json``."""

    behaviors: Counter[str] = field(default_factory=Counter)
    close_behaviors: Counter[str] = field(default_factory=Counter)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # case id -> its index entry
    duration_ms: int = 0

    @property
    def cases(self) -> int:
        return sum(self.behaviors.values())

    def lines(self) -> list[str]:
        by = ", ".join(f"{k} {n}" for k, n in sorted(self.behaviors.items()))
        close = ", ".join(f"{k} {n}" for k, n in sorted(self.close_behaviors.items()))
        out = [
            f"{self.cases} cases, {len(self.failed)} FAILED",
            f"  behavior:       {by}",
            f"  behavior close: {close}",
            f"  case time:      {self.duration_ms / 1000:.1f} s",
        ]
        for case_id, entry in sorted(self.failed.items(), key=lambda kv: case_sort_key(kv[0])):
            out.append(
                f"  FAILED {case_id}: behavior={entry['behavior']} close={entry['behaviorClose']} "
                f"remote close code={entry.get('remoteCloseCode')}"
            )
        return out


def case_sort_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def is_failed(entry: dict[str, Any]) -> bool:
    """A case fails when either verdict is outside what Autobahn accepts (ERROR counts as a failure)."""
    return entry["behavior"] not in NOT_FAILED_BEHAVIORS or entry["behaviorClose"] not in PASSING_CLOSE_BEHAVIORS


def summarize(index_json: Path) -> Summary:
    """Counts by behavior and the failed cases of a kosoku/Autobahn ``index.json``."""
    index = json.loads(index_json.read_text())
    summary = Summary()
    for cases in index.values():  # one table per agent (the Server header)
        for case_id, entry in cases.items():
            summary.behaviors[entry["behavior"]] += 1
            summary.close_behaviors[entry["behaviorClose"]] += 1
            summary.duration_ms += int(entry.get("duration") or 0)
            if is_failed(entry):
                summary.failed[case_id] = entry
    return summary


def kosoku_command() -> list[str] | None:
    """How to run kosoku from this interpreter's environment, or None when it is not installed."""
    exe = Path(sys.executable).with_name("kosoku")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("kosoku")
    return [found] if found else None


def start_server(extra: list[str]) -> tuple[subprocess.Popen[str], int]:
    args = [sys.executable, "-m", "servers", "--set", "server.port=0"]
    for setting in (*SERVER_SETTINGS, *extra):
        args += ["--set", setting]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("serving http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the server did not start (first line {line!r})")
    return proc, int(line.rsplit(":", 1)[1])


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run_suite(
    outdir: Path,
    cases: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    parallelism: int = 1,
    server_settings: tuple[str, ...] = (),
    quiet: bool = False,
) -> Summary:
    """Start a server, run the selected cases (all when ``cases`` is empty), write the report to ``outdir``.

    The report is written to a sibling folder and renamed into place, so ``outdir`` is complete or absent.
    """
    command = kosoku_command()
    if command is None:
        raise FileNotFoundError("kosoku is not installed: pip install -e '.[conformance]'")
    partial = outdir.with_name(outdir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    proc, port = start_server(list(server_settings))
    try:
        args = [*command, "-m", "fuzzingclient", f"127.0.0.1:{port}/ws?mode=echo", "-o", str(partial)]
        args += ["-p", str(parallelism)]
        for case in cases:
            args += ["-i", case]
        for case in exclude:
            args += ["-x", case]
        # kosoku exits 1 when a case fails or is UNIMPLEMENTED; the verdicts are read from index.json.
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    finally:
        stop_server(proc)
    index = partial / "index.json"
    if not index.exists():
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"kosoku wrote no report (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    if not quiet and result.returncode not in (0, 1):
        print(result.stderr.strip()[-2000:], file=sys.stderr)
    partial.rename(outdir)
    return summarize(outdir / "index.json")


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.conformance", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", action="append", default=[], metavar="GLOB", help="case id or glob (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="case id or glob to skip")
    parser.add_argument("--fast", action="store_true", help="the few-second subset that make test runs")
    parser.add_argument("--parallelism", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder for the report folder")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="extra server setting (repeatable)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = tuple(args.cases) or (FAST_CASES if args.fast else ())
    exclude = tuple(args.exclude) or (FAST_EXCLUDE if args.fast else ())
    outdir = Path(args.results) / f"conformance-{utc_stamp()}"
    outdir.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {'the ' + ' '.join(cases) + ' cases' if cases else 'every case'} against /ws?mode=echo ...")
    started = time.monotonic()
    try:
        summary = run_suite(outdir, cases, exclude, args.parallelism, tuple(args.settings))
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    print(f"wall time {time.monotonic() - started:.0f} s; report: {outdir}/index.html")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
