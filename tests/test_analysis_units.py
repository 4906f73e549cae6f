"""The analysis's pure functions, checked against arithmetic done by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.classic import (
    CLIENT_COUNTS,
    REFERENCE_POLL_HEADER_BYTES,
    REFERENCE_POLL_MBPS,
    REFERENCE_WS_FRAME_BYTES,
    REFERENCE_WS_MBPS,
    ws_frame_header_bytes,
)
from analysis.compare import judge
from analysis.fmt import fmt, parse
from analysis.metrics import (
    baseline,
    bits_per_second,
    cpu_ms_per_thousand_events,
    extrapolate_mbps,
    loglog_slope,
    memory_per_client_bytes,
    per_client_per_minute,
    per_event_split,
    polls_estimate,
    relative_spread,
    slice_cells,
    split_tcpip_headers,
)
from analysis.results import SUMMARY_COLUMNS, ResultsError, read_summary

# --- the classic table -----------------------------------------------------------------------------------


def test_extrapolation_reproduces_the_published_polling_figures() -> None:
    # 871 B × 1,000 clients × 8 bits = 6,968,000 bits = 6.645 × 2^20: the paper prints 6.6, 66 and 665.
    assert extrapolate_mbps(871, 1000) == pytest.approx(6_968_000 / 1_048_576)
    got = [extrapolate_mbps(REFERENCE_POLL_HEADER_BYTES, n) for n in CLIENT_COUNTS]
    assert [round(got[0], 1), round(got[1]), round(got[2])] == [6.6, 66, 665]
    assert REFERENCE_POLL_MBPS == (6.6, 66.0, 665.0)


def test_extrapolation_reproduces_the_published_websocket_figures() -> None:
    # 2 B × 1,000 clients × 8 = 16,000 bits = 0.01526 × 2^20.
    got = [extrapolate_mbps(REFERENCE_WS_FRAME_BYTES, n) for n in CLIENT_COUNTS]
    assert [round(g, 3) for g in got] == list(REFERENCE_WS_MBPS) == [0.015, 0.153, 1.526]


def test_extrapolation_is_linear_in_clients_and_bytes() -> None:
    assert extrapolate_mbps(100, 2000) == pytest.approx(2 * extrapolate_mbps(100, 1000))
    assert extrapolate_mbps(0, 100_000) == 0
    assert extrapolate_mbps(131_072, 1) == pytest.approx(1.0)  # 2^17 bytes = 2^20 bits


@pytest.mark.parametrize(
    ("payload", "masked", "expected"),
    [(0, False, 2), (100, False, 2), (125, False, 2), (126, False, 4), (145, False, 4), (65_535, False, 4),
     (65_536, False, 10), (100, True, 6), (200, True, 8)],
)  # fmt: skip
def test_websocket_frame_header_follows_rfc6455(payload: int, masked: bool, expected: int) -> None:
    assert ws_frame_header_bytes(payload, masked) == expected


# --- per-event and per-client figures ------------------------------------------------------------------


def test_tcpip_headers_are_shared_by_segments() -> None:
    assert split_tcpip_headers(520, 6, 4) == (312, 208)
    assert split_tcpip_headers(0, 0, 0) == (0.0, 0.0)


def ws_row(**changes: float) -> dict[str, float]:
    """10 WebSocket events of 100 B down, 2-byte frames, 20 segments of 52 B of TCP/IP headers (10 each way)."""
    row = {
        "messages_received": 10,
        "bytes_down_payload": 1000,
        "bytes_down_overhead": 20,
        "bytes_up_payload": 0,
        "bytes_up_overhead": 0,
        "bytes_tcpip_headers": 20 * 52,
        "tcp_segments_down": 10,
        "tcp_segments_up": 10,
    }
    row.update(changes)
    return row


def test_per_event_split_of_a_websocket_feed() -> None:
    split = per_event_split(ws_row())
    assert (split.down_payload, split.down_overhead, split.down_tcpip) == (100, 2, 52)
    assert (split.up_payload, split.up_overhead, split.up_tcpip) == (0, 0, 52)
    assert split.down == 154 and split.up == 52 and split.total == 206


def test_per_event_split_of_a_poll_answer_carrying_two_events() -> None:
    # One poll answered 2 events of 100 B with 200 B of response overhead and a 60-B request; 2 segments each way.
    row = ws_row(messages_received=2, bytes_down_payload=200, bytes_down_overhead=200, bytes_up_overhead=60,
                 bytes_tcpip_headers=4 * 52, tcp_segments_down=2, tcp_segments_up=2)  # fmt: skip
    split = per_event_split(row)
    assert (split.down_payload, split.down_overhead, split.down_tcpip) == (100, 100, 52)
    assert (split.up_payload, split.up_overhead, split.up_tcpip) == (0, 30, 52)


def test_nothing_delivered_gives_nan_not_a_crash() -> None:
    split = per_event_split(ws_row(messages_received=0))
    assert math.isnan(split.down_payload) and math.isnan(split.total)


def test_rates_per_client_and_per_event() -> None:
    assert bits_per_second(1000, 2) == 4000
    assert per_client_per_minute(120, 10, 30) == 24  # 120 connections, 10 clients, half a minute
    assert cpu_ms_per_thousand_events(0.5, 10_000) == 50  # 500 ms over 10 thousand events
    assert polls_estimate(10, 3, 0.5) == 60
    assert math.isnan(cpu_ms_per_thousand_events(0.5, 0))


def test_memory_per_client_is_the_slope_when_clients_vary() -> None:
    base = 40_000_000
    assert memory_per_client_bytes([10, 100, 1000], [base + 2000 * n for n in (10, 100, 1000)]) == (
        pytest.approx(2000),
        True,
    )
    assert memory_per_client_bytes([100], [base]) == (pytest.approx(400_000), False)
    assert math.isnan(memory_per_client_bytes([], [])[0])


def test_loglog_slope_is_the_growth_exponent() -> None:
    assert loglog_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert loglog_slope([1, 10, 100], [1, 100, 10_000]) == pytest.approx(2.0)
    assert math.isnan(loglog_slope([10], [5]))


def test_relative_spread_of_repeats() -> None:
    assert relative_spread([9, 11]) == pytest.approx(0.2)
    assert relative_spread([5]) == 0
    assert math.isnan(relative_spread([0, 0]))


# --- noise in --compare --------------------------------------------------------------------------------


def test_judge_uses_the_spread_of_the_repeats() -> None:
    # A: 10 ± (9..11), B: 10.5 (10..11): |0.5| <= 2 → within noise.
    assert judge(10, 9, 11, 2, 10.5, 10, 11, 2) == "within noise"
    # B: 15 (14.9..15.1): |5| > 2 → differs.
    assert judge(10, 9, 11, 2, 15, 14.9, 15.1, 2) == "differs"
    assert judge(10, 10, 10, 1, 10.1, 10.1, 10.1, 1) == "no repeats to judge noise"
    # Only B repeated: B's own spread decides.
    assert judge(10, 10, 10, 1, 10.3, 10, 10.6, 2) == "within noise"


# --- baseline and slicing ------------------------------------------------------------------------------


def cells_frame() -> pd.DataFrame:
    rows = []
    for t in ("poll", "ws"):
        for clients in (1, 100, 1000):
            rows.append({"transport": t, "clients": clients, "rate_hz": 10.0})
        rows.append({"transport": t, "clients": 100, "rate_hz": 50.0})
    df = pd.DataFrame(rows)
    for col, value in (("scenario", "feed"), ("payload_bytes", 100.0), ("burst", 1.0), ("header_profile", "minimal"),
                       ("poll_interval_s", 1.0), ("keepalive", True), ("ws_compress", False), ("varied_extra", "")):  # fmt: skip
        df[col] = value
    return df


def test_baseline_prefers_the_configured_value_then_the_most_common() -> None:
    cells = cells_frame()
    assert baseline(cells)["clients"] == 100  # most common
    assert baseline(cells, {"load": {"clients": 1000}})["clients"] == 1000  # set outside the sweeps
    assert baseline(cells, {"load": {"clients": 7}})["clients"] == 100  # configured but never measured
    assert baseline(cells, None, {"rate_hz": 50.0})["rate_hz"] == 50.0  # --baseline wins


def test_slice_varies_one_factor_around_the_baseline() -> None:
    cells = cells_frame()
    base = baseline(cells)
    by_clients = slice_cells(cells, base, free=("clients",))
    assert sorted(by_clients[by_clients["transport"] == "ws"]["clients"]) == [1, 100, 1000]
    by_rate = slice_cells(cells, base, free=("rate_hz",))
    assert sorted(by_rate["rate_hz"].unique()) == [10.0, 50.0] and set(by_rate["clients"]) == {100}


# --- formatting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(12345.6, "12,346"), (871, "871"), (6.645, "6.645"), (0.01526, "0.01526"), (1.2e-5, "0.000012"),
     (100.0, "100"), (float("nan"), "–"), (None, "–"), (True, "yes"), (False, "no"), ("ws", "ws")],
)  # fmt: skip
def test_fmt(value: object, text: str) -> None:
    assert fmt(value) == text


@pytest.mark.parametrize("value", [0.000123456, 0.5, 3.14159, 42.4242, 999.4, 1234.5, 9_876_543.21])
def test_fmt_rounds_by_less_than_half_a_per_mille(value: float) -> None:
    assert parse(fmt(value)) == pytest.approx(value, rel=5e-4)


# --- reading summary.csv -------------------------------------------------------------------------------


def write_summary(path: Path, **changes: str) -> Path:
    values = {c: "1" for c in SUMMARY_COLUMNS}
    values.update(cell_id="c000-r1", status="ok", transport="ws", scenario="feed", header_profile="minimal",
                  keepalive="true", ws_compress="false", saturated="false")  # fmt: skip
    values.update(changes)
    columns = [c for c in SUMMARY_COLUMNS if values.get(c) is not None]
    path.write_text(",".join(columns) + "\n" + ",".join(values[c] for c in columns) + "\n")
    return path


def test_read_summary_types_the_columns(tmp_path: Path) -> None:
    df = read_summary(write_summary(tmp_path / "summary.csv", latency_p99_ms=""))
    assert df.loc[0, "keepalive"] is True or bool(df.loc[0, "keepalive"]) is True
    assert df.loc[0, "clients"] == 1.0
    assert math.isnan(df.loc[0, "latency_p99_ms"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "culprit"),
    [
        ({"bytes_down_tcp": "lots"}, "column 'bytes_down_tcp', row 2 (cell 'c000-r1'): 'lots' is not a number"),
        ({"saturated": "maybe"}, "column 'saturated', row 2 (cell 'c000-r1'): 'maybe' is not true or false"),
        ({"clients": ""}, "column 'clients', row 2 (cell 'c000-r1'): is empty"),
        ({"status": "done"}, "column 'status', row 2 (cell 'c000-r1'): 'done' is not one of ok, incomplete, failed"),
        ({"duration_s": "0"}, "column 'duration_s', row 2 (cell 'c000-r1'): 0.0 must be > 0"),
        ({"tcp_segments_up": None}, "column 'tcp_segments_up' is missing"),
    ],
)
def test_read_summary_names_the_culprit(tmp_path: Path, changes: dict[str, str], culprit: str) -> None:
    with pytest.raises(ResultsError) as err:
        read_summary(write_summary(tmp_path / "summary.csv", **changes))
    assert culprit in str(err.value)
    assert "\n" not in str(err.value)


def test_run_length_from_run_json_times() -> None:
    from analysis.report import run_length

    assert run_length({"started_at": "2026-11-26T16:55:11Z", "ended_at": "2026-11-26T17:03:09Z"}) == " (7 min 58 s)"
    assert run_length({"started_at": "2026-11-26T16:55:11Z"}) == ""


def test_gc_description_names_the_collector_as_the_cells_ran() -> None:
    from analysis.report import gc_description

    off = {"server": {"cyclic_gc": False}, "load": {"cyclic_gc": False}}
    on = {"server": {"cyclic_gc": True}, "load": {"cyclic_gc": False}}
    assert gc_description({"cells": [off, off]}) == (
        "CPython's cyclic collector: server off, client workers off (server.cyclic_gc, load.cyclic_gc)"
    )
    assert gc_description({"cells": [off, on]}) == (
        "CPython's cyclic collector: server off, client workers off; server on, client workers off "
        "(server.cyclic_gc, load.cyclic_gc)"
    )
    assert gc_description({"cells": [{"server": {}, "load": {}}]}).startswith(
        "CPython's cyclic collector: server not recorded, client workers not recorded"
    )
