"""The transport registry: every consumer sees a transport registered once (issue 9).

The toy transport reuses the SSE modules under another name and path, so the server answers it for real.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import aiohttp
import pytest
from conftest import ROOT, run, running_server, timeout
from matplotlib.colors import to_hex
from test_loadgen_results import fake_run

from analysis import classic
from analysis import transports as analysis_transports
from analysis.charts import server_cost
from analysis.model import analyse
from analysis.results import load_run
from analysis.verdicts import one_connection, server_push
from loadgen import sse as sse_client
from loadgen.headers import make_profile
from loadgen.results import RunFolder, request_header_bytes, summarize, write_run
from loadgen.worker import client_main
from pushbench import transports, units
from pushbench.config import ConfigError, default_config, expand_cells
from pushbench.transports import SSE, TRANSPORTS, registered

TOY = replace(SSE, name="toy", label="toy stream", short="toy", path="/toy", colour="#CC79A7", marker="P")


def test_the_four_transports_in_order_with_their_kinds() -> None:
    assert list(TRANSPORTS) == ["poll", "longpoll", "sse", "ws"]
    assert [t.name for t in TRANSPORTS.values() if t.polls] == ["poll"]
    assert [t.name for t in TRANSPORTS.values() if t.pushes] == ["longpoll", "sse", "ws"]
    assert [t.name for t in TRANSPORTS.values() if t.holds_requests] == ["longpoll"]
    assert [t.name for t in TRANSPORTS.values() if t.streams] == ["sse", "ws"]
    assert [t.name for t in TRANSPORTS.values() if t.origin_checked] == ["sse", "ws"]
    assert transports.echo_keys() == ("http", "ws")
    json.dumps(transports.describe())  # run.json carries it


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        transports.register(SSE)
    with registered(TOY):
        assert "toy" in TRANSPORTS
    assert "toy" not in TRANSPORTS


def test_config_accepts_a_registered_transport_only_while_registered() -> None:
    with registered(TOY):
        assert default_config(["load.transport=toy"]).load.transport == "toy"
        cells = expand_cells(default_config(['matrix.transport=["toy", "ws"]']))
        assert [c.load.transport for c in cells] == ["toy", "ws"]
    with pytest.raises(ConfigError, match="must be one of poll, longpoll, sse, ws; got 'toy'"):
        default_config(["load.transport=toy"])


def test_server_routes_origin_check_and_stats_follow_the_registry() -> None:
    async def main() -> None:
        with registered(TOY):
            async with running_server("feed.rate_hz=50") as srv, aiohttp.ClientSession() as session:
                async with session.get(f"{srv.url}/toy", headers={"Origin": "http://evil.example"}) as resp:
                    assert resp.status == 403  # origin_checked applies to the new route
                async with session.get(f"{srv.url}/toy?after=0") as resp:
                    assert resp.status == 200 and resp.content_type == "text/event-stream"
                    lines = []
                    while len([x for x in lines if x.startswith(b"data:")]) < 3:
                        lines.append(await asyncio.wait_for(resp.content.readline(), timeout(5)))
                async with session.get(f"{srv.url}/stats") as resp:
                    stats = await resp.json()
                assert stats["deliveries"]["toy"] >= 3 and stats["requests"]["toy"] == 1  # the 403 never reached it
                assert stats["rejected"]["foreign_origin"] == 1
                assert stats["deliveries"]["sse"] == 0

    run(main())


def test_worker_dispatch_summary_and_run_json_follow_the_registry(tmp_path: Path) -> None:
    with registered(TOY):
        assert client_main("toy", "feed") is sse_client.run_feed
        base = fake_run()
        cell = replace(base.cell, load=replace(base.cell.load, transport="toy"))
        stats_end = {**(base.stats_end or {}), "deliveries": {"toy": 58}}
        stats_start = {**(base.stats_start or {}), "deliveries": {"toy": 20}}
        toy_run = replace(base, cell=cell, stats_start=stats_start, stats_end=stats_end)
        profile = make_profile(cell.load)
        summary = summarize(toy_run, profile)
        assert summary.row["transport"] == "toy" and summary.row["server_deliveries"] == 38
        assert summary.row["request_header_bytes"] == request_header_bytes(profile, "sse", "feed", "127.0.0.1:40000")
        final = write_run(
            RunFolder(tmp_path, "toy"), config_source="x.toml", overrides=[], config={}, profiles={},
            summaries=[summary], started=0.0, ended=1.0,
        )  # fmt: skip
        described = json.loads((final / "run.json").read_text())["transports"]
        assert described["toy"]["label"] == "toy stream" and described["toy"]["pushes"] is True
        assert list(described) == ["poll", "longpoll", "sse", "ws", "toy"]
    # The analysis knows the toy from run.json alone (the registry no longer has it).
    a = analyse(load_run(final))
    assert a.transports.label("toy") == "toy stream" and a.transports.marker("toy") == ("P", 6.5)
    assert "toy" in a.transports.pushing() and "toy" in a.transports.streaming()
    assert "toy" not in a.transports.polling()
    assert "toy stream opened" in one_connection(a).text  # a verdict's list of streaming transports
    assert "toy stream" in server_push(a).text
    figure = server_cost(a)
    assert to_hex(figure.axes[0].patches[0].get_facecolor()) == "#cc79a7"  # its chart colour
    assert figure.axes[0].get_xticklabels()[0].get_text() == "toy stream"


def test_analysis_keeps_a_checked_copy_of_the_four_for_older_runs() -> None:
    for name, info in analysis_transports.BUILTIN.items():
        described = TRANSPORTS[name].describe()
        assert asdict(info) == {k: described[k] for k in asdict(info)}
    assert list(analysis_transports.BUILTIN) == list(TRANSPORTS)
    assert analysis_transports.from_run_json(None).by_name == analysis_transports.BUILTIN
    assert analysis_transports.from_run_json(transports.describe()).by_name == analysis_transports.BUILTIN
    with pytest.raises(ValueError, match=r"transports\.ws\.colour is missing or not a str"):
        analysis_transports.from_run_json({"ws": {**transports.describe()["ws"], "colour": 3}})


def test_analysis_imports_nothing_of_the_code_that_made_the_run() -> None:
    code = (
        "import sys, analysis.__main__, analysis.charts, analysis.report, analysis.compare, analysis.transports; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pushbench', 'loadgen', 'servers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("payload", [0, 125, 126, 65_535, 65_536])
def test_analysis_frame_header_copy_agrees_with_the_wire(payload: int) -> None:
    for masked in (False, True):
        assert classic.ws_frame_header_bytes(payload, masked) == units.ws_frame_header_bytes(payload, masked)
