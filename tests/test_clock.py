"""The clock-offset estimator (loadgen.clock) on hand-computed exchanges, and the server's /time field."""

from __future__ import annotations

import time

import aiohttp
import pytest
from conftest import run, running_server

from loadgen.clock import ClockOffset, Exchange, clock_warning, correction_uncertainty_ns, estimate_offset


def test_the_exchange_with_the_smallest_round_trip_wins() -> None:
    exchanges = [
        Exchange(sent_ns=1_000, server_ns=5_600, received_ns=1_400),  # rtt 400: offset 5600 - 1200 = 4400
        Exchange(sent_ns=2_000, server_ns=6_300, received_ns=2_100),  # rtt 100: offset 6300 - 2050 = 4250
        Exchange(sent_ns=3_000, server_ns=7_000, received_ns=3_700),  # rtt 700
    ]
    est = estimate_offset(exchanges)
    assert est == ClockOffset(offset_ns=4_250, uncertainty_ns=50, rtt_ns=100, exchanges=3, at_ns=2_050)


def test_a_server_clock_behind_gives_a_negative_offset() -> None:
    est = estimate_offset([Exchange(1_000_000, 400_000, 1_000_200)])
    # midpoint 1_000_100; 400_000 - 1_000_100 = -600_100; half of 200 = 100
    assert (est.offset_ns, est.uncertainty_ns, est.rtt_ns) == (-600_100, 100, 200)


def test_an_odd_round_trip_rounds_the_uncertainty_up() -> None:
    est = estimate_offset([Exchange(0, 10, 3)])
    # midpoint floor(1.5) = 1, offset 9; uncertainty ceil(1.5) = 2: never smaller than the true half round trip
    assert (est.offset_ns, est.uncertainty_ns, est.at_ns) == (9, 2, 1)


def test_equal_round_trips_keep_the_earliest_exchange() -> None:
    est = estimate_offset([Exchange(0, 500, 100), Exchange(1_000, 1_900, 1_100)])
    assert est.offset_ns == 450  # the first: 500 - 50, not 1900 - 1050 = 850


def test_no_exchange_or_a_clock_running_backwards_is_an_error() -> None:
    with pytest.raises(ValueError, match="no clock exchange"):
        estimate_offset([])
    with pytest.raises(ValueError, match="ran backwards"):
        estimate_offset([Exchange(1_000, 5_000, 900)])


def test_correction_uncertainty_covers_the_drift_seen_after_the_window() -> None:
    before = ClockOffset(offset_ns=4_250, uncertainty_ns=50, rtt_ns=100, exchanges=8, at_ns=0)
    drifted = ClockOffset(offset_ns=4_400, uncertainty_ns=30, rtt_ns=60, exchanges=8, at_ns=10)
    steady = ClockOffset(offset_ns=4_260, uncertainty_ns=20, rtt_ns=40, exchanges=8, at_ns=10)
    assert correction_uncertainty_ns(before, None) == 50
    assert correction_uncertainty_ns(before, drifted) == 180  # 30 + |4400 - 4250|
    assert correction_uncertainty_ns(before, steady) == 50  # max(50, 20 + 10)


def test_clock_warning_above_ten_percent_of_p50_only() -> None:
    assert clock_warning(100_000, 1.0) is None  # 0.1 ms is exactly 10 % of 1 ms: not above
    warning = clock_warning(150_000, 1.0)
    assert warning is not None and "0.150 ms" in warning and "10%" in warning
    assert clock_warning(None, 1.0) is None
    assert clock_warning(150_000, None) is None
    assert clock_warning(150_000, float("nan")) is None


def test_server_time_field_is_the_servers_wall_clock() -> None:
    async def body() -> None:
        async with running_server() as srv, aiohttp.ClientSession() as session:
            before = time.time_ns()
            async with session.get(f"{srv.url}/time") as response:
                assert response.status == 200
                data = await response.json()
            after = time.time_ns()
            assert before <= data["server_time_ns"] <= after  # same machine, same clock
            assert isinstance(data["server_time_ns"], int)

    run(body())
