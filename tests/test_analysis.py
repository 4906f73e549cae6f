"""End to end: two real seconds-long runs of the load generator, then the analysis on them.

The runs are made once per session (in parallel) and shared. Figures are checked against summary.csv read
independently with the csv module, and against the published reference constants.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.charts import CHARTS
from analysis.fmt import fmt, parse
from tests.conftest import ROOT, timeout

# Two transports that differ most (poll and ws), two repeats each so --compare can judge noise.
TINY_CONFIG = """
[feed]
rate_hz = 20
payload_bytes = 100
[load]
duration_s = 1
warmup_s = 0.2
ramp_up_s = 0.1
clients = 4
poll_interval_s = 0.25
repeat = 2
[matrix]
transport = ["poll", "ws"]
"""


@dataclass
class Runs:
    a: Path
    b: Path


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Two real runs of the same tiny config, made concurrently (they take ~20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("analysis-runs")
    config = root / "tiny.toml"
    config.write_text(TINY_CONFIG)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "loadgen", "--config", str(config), "--out", str(root / name)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    folders = []
    for proc, name in zip(procs, ("a", "b"), strict=True):
        out, err = proc.communicate(timeout=timeout(120))
        assert proc.returncode == 0, f"loadgen run {name} failed:\n{out[-2000:]}\n{err[-2000:]}"
        folders.append((root / name / "latest").resolve())
    yield Runs(*folders)


def summary_rows(run: Path) -> list[dict[str, str]]:
    with (run / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


class Tables(HTMLParser):
    """Every <table id=...> of a page: rows of (data-col, text) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self._table: str | None = None
        self._col: str | None = None
        self._text = ""
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append({})
        elif tag == "td" and self._table:
            self._col, self._text = a.get("data-col"), ""
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._table and self._col is not None:
            self.tables[self._table][-1][self._col] = self._text
            self._col = None
        elif tag == "table" and self._table:
            self.tables[self._table] = [row for row in self.tables[self._table] if row]  # drop the header row
            self._table = None


def analyse(run: Path) -> tuple[Path, Tables]:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=timeout(60)
    )
    assert proc.returncode == 0, proc.stderr
    report = Path(proc.stdout.strip().splitlines()[-1])
    page = Tables()
    page.feed(report.read_text(encoding="utf-8"))
    return report, page


@pytest.fixture(scope="session")
def report_a(runs: Runs) -> tuple[Path, Tables]:
    return analyse(runs.a)


@pytest.mark.timeout(timeout(240))
def test_every_chart_and_a_self_contained_report(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    report, page = report_a
    assert report == runs.a / "report.html"
    for name in CHARTS:
        for ext in ("png", "svg"):
            chart = runs.a / "charts" / f"{name}.{ext}"
            assert chart.stat().st_size > 5_000, chart
    # Each chart twice: PNG on screen, SVG in print.
    assert sum(src.startswith("data:image/png;base64,") for src in page.images) == len(CHARTS)
    assert sum(src.startswith("data:image/svg+xml;base64,") for src in page.images) == len(CHARTS)
    assert len(page.images) == 2 * len(CHARTS)
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//|charts/)""", text), "the report must not load anything"
    for section in ("What was run", "Verdicts", "The classic table", "Every cell", "Warnings"):
        assert section in text
    assert not list(runs.a.glob(".*")), "no temporary files left behind"


@pytest.mark.timeout(timeout(240))
def test_every_cell_in_the_report_equals_summary_csv(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    _, page = report_a
    expected = summary_rows(runs.a)
    shown = page.tables["cells"]
    assert len(shown) == len(expected) == 4
    for want, got in zip(expected, shown, strict=True):
        for col, raw in want.items():
            if col not in got:
                continue  # columns beyond the contract's are not shown
            text = got[col]
            if raw in ("true", "false"):
                assert text == ("yes" if raw == "true" else "no"), col
            elif re.fullmatch(r"-?[\d.]+(e-?\d+)?", raw):
                assert text == fmt(float(raw)), (col, raw, text)
                assert parse(text) == pytest.approx(float(raw), rel=5e-4, abs=1e-9), (col, raw, text)
            else:
                assert text == (raw or "–"), col


@pytest.mark.timeout(timeout(240))
def test_classic_table_is_the_measured_overhead_extrapolated(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    _, page = report_a
    rows = summary_rows(runs.a)
    classic = page.tables["classic"]
    assert [r["transport"] for r in classic] == ["short polling", "WebSocket"]
    for shown in classic:
        ids = shown["cell_ids"].split(", ")
        mine = [r for r in rows if r["cell_id"] in ids]
        assert len(mine) == 2  # both repeats
        per_client_s = [
            (float(r["bytes_down_overhead"]) + float(r["bytes_up_overhead"]))
            / (float(r["clients"]) * float(r["duration_s"]))
            for r in mine
        ]
        overhead = sum(per_client_s) / len(per_client_s)
        assert shown["overhead_bytes_per_client_per_s"] == fmt(overhead)
        for n in (1_000, 10_000, 100_000):
            assert shown[f"overhead_mbps_{n}"] == fmt(overhead * n * 8 / 2**20)
        reference = {"short polling": ("6.6", "66", "665"), "WebSocket": ("0.015", "0.153", "1.526")}
        assert tuple(shown[f"reference_mbps_{n}"] for n in (1_000, 10_000, 100_000)) == reference[shown["transport"]]


@pytest.mark.timeout(timeout(240))
def test_headline_figures_are_means_of_the_repeats_in_summary_csv(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    _, page = report_a
    rows = summary_rows(runs.a)
    shown = page.tables["headlines"]
    assert len(shown) == 2
    for cell in shown:
        mine = [r for r in rows if r["cell_id"] in cell["cell_ids"].split(", ")]
        wire = [
            (float(r["bytes_down_tcp"]) + float(r["bytes_up_tcp"]) + float(r["bytes_tcpip_headers"]))
            / float(r["messages_received"])
            for r in mine
        ]
        p99 = [float(r["latency_p99_ms"]) for r in mine]
        assert cell["wire_bytes_per_event"] == fmt(sum(wire) / len(wire))
        assert cell["latency_p99_ms"] == fmt(sum(p99) / len(p99))
        assert cell["latency_p99_ms__spread"] == fmt(100 * (max(p99) - min(p99)) / (sum(p99) / len(p99)))


@pytest.mark.timeout(timeout(240))
def test_the_first_screen_table_is_the_baseline_cells_of_summary_csv(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    report, page = report_a
    rows = summary_rows(runs.a)
    glance = {r["transport"]: r for r in page.tables["glance"]}
    assert list(glance) == ["short polling", "WebSocket"]

    def mean(transport: str, of: Callable[[dict[str, str]], float]) -> float:
        values = [of(r) for r in rows if r["transport"] == transport]
        assert len(values) == 2  # both repeats
        return sum(values) / len(values)

    def wire(r: dict[str, str]) -> float:
        tcp = float(r["bytes_down_tcp"]) + float(r["bytes_up_tcp"]) + float(r["bytes_tcpip_headers"])
        return tcp / float(r["messages_received"])

    ws_bytes = mean("ws", wire)
    for transport, label in (("poll", "short polling"), ("ws", "WebSocket")):
        shown = glance[label]
        assert shown["bytes_per_event"] == fmt(mean(transport, wire))
        assert shown["ratio_to_ws"] == fmt(mean(transport, wire) / ws_bytes)
        assert shown["latency_p50_ms"] == fmt(mean(transport, lambda r: float(r["latency_p50_ms"])))
        assert shown["latency_p99_ms"] == fmt(mean(transport, lambda r: float(r["latency_p99_ms"])))
        assert shown["connections_per_client"] == fmt(
            mean(transport, lambda r: float(r["connections_peak"]) / float(r["clients"]))
        )
        cpu = mean(transport, lambda r: float(r["server_cpu_s"]) * 1000 / (float(r["messages_received"]) / 1000))
        if cpu > 0:
            assert shown["server_cpu_ms_per_1k_events"] == fmt(cpu)
        else:  # every repeat's CPU read 0 ticks: under 2 ticks (user + system) per window, per 1,000 events
            under = mean(transport, lambda r: cpu_resolution(r) * 1000 / (float(r["messages_received"]) / 1000))
            assert shown["server_cpu_ms_per_1k_events"] == f"< {fmt(under)}"
    assert glance["WebSocket"]["ratio_to_ws"] == "1"
    # The three verdicts as badges, each linking to its reasoning.
    text = report.read_text(encoding="utf-8")
    badges = re.findall(r'<a class="badge [a-z-]+" href="#(verdict-[a-z-]+)">', text)
    assert badges == ["verdict-one-connection", "verdict-server-push", "verdict-lighter-headers"]
    assert all(f'id="{b}"' in text for b in badges)
    assert text.index('id="glance"') < text.index("id='verdicts'") < text.index("id='run'")


def cpu_resolution(row: dict[str, str]) -> float:
    """Seconds of CPU a window can use while the server's counters read 0: one step each of user and system (the
    server's CPU unit: 1 µs for pushbench's server)."""
    return 2 * float(row["server_cpu_unit_s"])


@pytest.mark.timeout(timeout(240))
def test_the_capacity_table_follows_summary_csv(runs: Runs, report_a: tuple[Path, Tables]) -> None:
    _, page = report_a
    rows = summary_rows(runs.a)
    capacity = {r["transport"]: r for r in page.tables["capacity"]}
    sizes = {r["transport"]: r for r in page.tables["capacity-sizes"]}
    assert list(capacity) == list(sizes) == ["short polling", "WebSocket"]
    for transport, label in (("poll", "short polling"), ("ws", "WebSocket")):
        mine = [r for r in rows if r["transport"] == transport]
        assert len(mine) == 2  # both repeats, one client count
        worst_p99 = max(float(r["latency_p99_ms"]) for r in mine)
        passed = worst_p99 <= 1000 and all(r["messages_lost"] == "0" and r["saturated"] == "false" for r in mine)
        shown = capacity[label]
        assert shown["sizes"] == "4"
        assert shown["capacity"] == ("4" if passed else "under 4")
        assert shown["stopped"].startswith("not reached up to 4 clients" if passed else "at 4 clients: ")
        # Pooled over the two repeats: total CPU and total deliveries; a bound when the total read 0 ticks.
        cpu = sum(float(r["server_cpu_s"]) for r in mine)
        deliveries = sum(float(r["server_deliveries"]) for r in mine)
        bounded = cpu == 0
        if bounded:
            cpu = sum(cpu_resolution(r) for r in mine)
        assert sizes[label]["p99_ms"] == fmt(worst_p99)
        assert sizes[label]["cpu_us_per_delivery"] == ("< " if bounded else "") + fmt(cpu * 1e6 / deliveries)
        assert sizes[label]["deliveries_per_cpu_s"] == ("> " if bounded else "") + fmt(deliveries / cpu)
        assert sizes[label]["fanout_target"] == ""  # 4 clients: the target is for 10,000


def test_a_threshold_below_every_p99_stops_every_transport_at_its_first_size(runs: Runs) -> None:
    from analysis.capacity import capacities
    from analysis.model import analyse
    from analysis.results import load_run

    rows = summary_rows(runs.a)
    caps = capacities(analyse(load_run(runs.a), capacity_p99_s=0.000_001))  # 1 µs: no real p99 is under it
    assert [c.transport for c in caps] == ["poll", "ws"]
    poll, ws = caps
    worst = max(float(r["latency_p99_ms"]) for r in rows if r["transport"] == "ws")
    assert ws.capacity is None and ws.capacity_text() == "under 4"
    assert ws.stopped_text().startswith(f"at 4 clients: p99 {fmt(worst)} ms > 0.001 ms")
    # Short polling is judged against the threshold plus its poll interval (a polled event waits up to one).
    interval_s = float(next(r["poll_interval_s"] for r in rows if r["transport"] == "poll"))
    assert poll.sizes[0].threshold_ms == pytest.approx((0.000_001 + interval_s) * 1000)


HEADLINE = re.compile(
    r"^  (?P<figure>.+?) \[(?P<unit>.+?)\]: A (?P<a>\S+)  B (?P<b>\S+)  ratio (?P<ratio>\S+)  (?P<judge>.+)$"
)


@pytest.mark.timeout(timeout(240))
def test_compare_prints_the_ratio_of_the_two_runs(runs: Runs) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "--compare", str(runs.a), str(runs.b)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout(60),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cells: dict[str, dict[str, dict[str, str]]] = {}
    current = ""
    for line in proc.stdout.splitlines():
        m = HEADLINE.match(line)
        if m:
            cells[current][m["figure"]] = m.groupdict()
        elif line and not line.startswith((" ", "A =", "B =", "ratio =", "note:")) and "matching cells" not in line:
            current = line
            cells[current] = {}
    assert sorted(c.split(",")[0] for c in cells) == ["poll", "ws"]
    a_rows, b_rows = summary_rows(runs.a), summary_rows(runs.b)

    def mean(rows: list[dict[str, str]], transport: str, figure: str) -> tuple[float, float, float]:
        values = []
        for r in rows:
            if r["transport"] != transport:
                continue
            if figure == "median latency":
                values.append(float(r["latency_p50_ms"]))
            else:  # bytes on the wire per delivered event: TCP payload both ways + TCP/IP headers
                wire = float(r["bytes_down_tcp"]) + float(r["bytes_up_tcp"]) + float(r["bytes_tcpip_headers"])
                values.append(wire / float(r["messages_received"]))
        return sum(values) / len(values), min(values), max(values)

    for cell, figures in cells.items():
        transport = cell.split(",")[0]
        for figure in ("median latency", "bytes on the wire per delivered event"):
            shown = figures[figure]
            a, a_lo, a_hi = mean(a_rows, transport, figure)
            b, b_lo, b_hi = mean(b_rows, transport, figure)
            assert shown["a"] == fmt(a) and shown["b"] == fmt(b)
            assert shown["ratio"] == fmt(b / a)
            within = abs(b - a) <= max(a_hi - a_lo, b_hi - b_lo)
            assert shown["judge"] == ("within noise" if within else "differs"), (cell, figure, a, b)


def test_failed_and_troubled_cells_are_reported_not_hidden(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = broken_copy(runs.a, tmp_path)
    rows = summary_rows(run)
    failed, troubled = rows[0], rows[2]  # poll repeat 1 fails; ws repeat 1 loses messages and times out
    failed["status"] = "failed"
    for col in ("duration_s", "messages_received", "latency_p50_ms", "server_cpu_s", "connections_peak"):
        failed[col] = ""
    troubled.update(status="incomplete", messages_lost="7", errors="3", errors_timeout="3")
    with (run / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main([str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert f"{failed['cell_id']} (poll, feed" in page and "status failed: left out of charts." in page
    assert "7 messages lost and 0 duplicated" in page and "3 errors (3 timeout)" in page
    # The classic table's poll row now rests on the one repeat that was measured.
    classic = Tables()
    classic.feed(page)
    assert classic.tables["classic"][0]["cell_ids"] == rows[1]["cell_id"]


# --- missing or malformed results ----------------------------------------------------------------------


def broken_copy(run: Path, tmp_path: Path) -> Path:
    """A copy of a real run with a report already in it (which a failed analysis must leave alone)."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("charts"))
    (copy / "report.html").write_text("previous report")
    return copy


def corrupt_csv(run: Path, column: str, value: str) -> None:
    path = run / "summary.csv"
    rows = summary_rows(run)
    rows[1][column] = value
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def drop_column(run: Path, column: str) -> None:
    rows = summary_rows(run)
    with (run / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != column], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


BREAKAGES = {
    "no summary.csv": (lambda r: (r / "summary.csv").unlink(), r"summary\.csv: missing"),
    "no run.json": (lambda r: (r / "run.json").unlink(), r"run\.json: missing"),
    "no histograms": (lambda r: (r / "histograms.parquet").unlink(), r"histograms\.parquet: missing"),
    "text in a byte count": (
        lambda r: corrupt_csv(r, "bytes_up_tcp", "12kB"),
        r"summary\.csv: column 'bytes_up_tcp', row 3 \(cell 'c000-r2'\): '12kB' is not a number",
    ),
    "a column gone": (lambda r: drop_column(r, "tcp_segments_down"), r"column 'tcp_segments_down' is missing"),
    "a newer format": (
        lambda r: (r / "run.json").write_text((r / "run.json").read_text().replace('"format_version": 1', '"format_version": 2')),
        r"run\.json: key 'format_version' is 2",
    ),
    "damaged parquet": (
        lambda r: (r / "histograms.parquet").write_bytes(b"PAR1 not really"),
        r"histograms\.parquet: not a readable Parquet file",
    ),
}  # fmt: skip


@pytest.mark.timeout(timeout(240))
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_results_exit_2_naming_the_culprit_and_write_nothing(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str
) -> None:
    run = broken_copy(runs.a, tmp_path)
    damage, message = BREAKAGES[breakage]
    damage(run)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert (run / "report.html").read_text() == "previous report"
    assert not (run / "charts").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_a_missing_folder_exits_2_from_the_command_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout(60),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such results folder"
    assert proc.stdout == ""


def test_compare_with_a_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_numbers_round_trip_through_the_report_format() -> None:
    assert not math.isnan(parse(fmt(1234.5)))
