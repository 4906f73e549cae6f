"""analysis.theory: each transport's latency over a path with added round trip, against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from analysis import theory


def test_push_transports_pay_one_transit() -> None:
    assert theory.push_latency_ms(50) == 25
    assert theory.push_latency_ms(0) == 0


def test_longpoll_back_to_back_events_pay_three_transits() -> None:
    # RTT 50 ms: one-way 25. Gap 0: the answer goes down (25), the new poll up (25), the event down (25).
    assert theory.longpoll_event_latency_ms(50, 0) == 75
    # Published 10 ms after the first: received 75 ms after the first, so 65 ms after its own publication.
    assert theory.longpoll_event_latency_ms(50, 10) == 65
    # A round trip or more apart: a poll is already waiting at the server.
    assert theory.longpoll_event_latency_ms(50, 50) == 25
    assert theory.longpoll_event_latency_ms(50, 400) == 25


def test_longpoll_under_a_steady_feed() -> None:
    # 10 events/s (100 ms apart) over a 50 ms round trip: every event finds a poll waiting.
    assert theory.longpoll_latency_ms(50, 100, 50) == 25
    assert theory.longpoll_latency_ms(50, 100, 99) == 25
    # Over a 200 ms round trip the server answers once per round trip: wait uniform in [0, 200) then 100 down.
    assert theory.longpoll_latency_ms(200, 100, 50) == 200
    assert theory.longpoll_latency_ms(200, 100, 100) == 300
    assert theory.longpoll_latency_ms(200, 100, 99) == pytest.approx(298)


def test_shortpoll_waits_half_an_interval_plus_half_a_round_trip() -> None:
    assert theory.shortpoll_latency_ms(50, 1000, 50) == 525
    assert theory.shortpoll_latency_ms(0, 500, 50) == 250
    assert theory.shortpoll_latency_ms(100, 500, 99) == pytest.approx(495 + 50)


def test_an_exchange_without_keepalive_pays_the_handshake() -> None:
    assert theory.http_exchange_ms(50, keepalive=True) == 50
    assert theory.http_exchange_ms(50, keepalive=False) == 100
    assert theory.http_exchange_ms(50, keepalive=False, handshake_round_trips=2) == 150  # TCP + TLS 1.3
    assert theory.websocket_echo_ms(50) == 50


def test_link_load_counts_payload_headers_and_ethernet() -> None:
    from analysis.network import link_load_mbit

    # 1,000,000 TCP bytes in 1,000 segments over 2 s: (1,000,000 + 1,000 × (52 + 14)) × 8 / 2 / 1e6.
    assert link_load_mbit(1_000_000, 1_000, 2.0) == pytest.approx(4.264)
    assert math.isnan(link_load_mbit(1, 1, 0.0))


def test_expected_latency_picks_the_formula_of_the_transport_kind() -> None:
    from analysis.network import expected_latency_ms

    # Push: RTT/2 whatever the percentile.
    assert expected_latency_ms(False, False, 100, 99, 1000, 200) == 50
    # Long polling at 5 events/s: a round trip of 100 ms keeps up; 400 ms does not (p50 = 2 × one-way).
    assert expected_latency_ms(False, True, 100, 50, 1000, 200) == 50
    assert expected_latency_ms(False, True, 400, 50, 1000, 200) == 400
    # Short polling: the path adds RTT/2; the wait for the next poll is in the loopback figure it is added to.
    assert expected_latency_ms(True, False, 100, 50, 1000, 200) == 50
