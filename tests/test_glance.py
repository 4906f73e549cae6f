"""The first screen's figures (analysis.glance), checked against arithmetic done by hand."""

from __future__ import annotations

import math

import pytest

from analysis.glance import LAYERS, layer_bytes, layers_per_event

# One cleartext repeat as summary.csv has it before the stack columns existed: 10 events delivered,
# 1,000 B of payload down, 300 B of overhead down + 100 B up, 520 B of TCP/IP headers (10 segments).
CLEARTEXT = {
    "messages_received": 10,
    "bytes_down_tcp": 1300,
    "bytes_up_tcp": 100,
    "bytes_down_payload": 1000,
    "bytes_up_payload": 0,
    "bytes_down_overhead": 300,
    "bytes_up_overhead": 100,
    "bytes_tcpip_headers": 520,
}
# The same over TLS, with the stack columns (extra columns are read as text): of 1,600 B down, 1,000 payload,
# 300 HTTP, 110 TLS records, 190 handshake; of 420 B up, 100 HTTP, 20 records, 300 handshake (both: 490).
TLS = {
    **CLEARTEXT,
    "bytes_down_tcp": 1600,
    "bytes_up_tcp": 420,
    "bytes_down_overhead": 600,
    "bytes_up_overhead": 420,
    "bytes_down_http": "300",
    "bytes_up_http": "100",
    "bytes_down_tls": "110",
    "bytes_up_tls": "20",
    "bytes_tls_handshake": "490",
    "bytes_tcpip_headers": 780,
}


def test_cleartext_layers_fall_back_to_the_overhead_columns_and_have_no_tls() -> None:
    assert layer_bytes(CLEARTEXT) == {"payload": 1000, "http": 400, "tcpip": 520}
    wire = CLEARTEXT["bytes_down_tcp"] + CLEARTEXT["bytes_up_tcp"] + CLEARTEXT["bytes_tcpip_headers"]
    assert sum(layer_bytes(CLEARTEXT).values()) == wire


def test_a_tls_run_gets_a_tls_layer_and_the_layers_still_sum_to_the_wire() -> None:
    layers = layer_bytes(TLS)
    assert layers == {"payload": 1000, "http": 400, "tls": 110 + 20 + 490, "tcpip": 780}
    assert list(layers) == [layer.key for layer in LAYERS]  # bottom to top
    assert sum(layers.values()) == 1600 + 420 + 780


def test_empty_stack_columns_read_as_absent() -> None:
    row = {**CLEARTEXT, "bytes_down_http": "", "bytes_up_http": "", "bytes_down_tls": "", "bytes_up_tls": ""}
    assert layer_bytes(row) == {"payload": 1000, "http": 400, "tcpip": 520}


def test_per_event_is_the_mean_of_each_repeats_ratio() -> None:
    # Repeat 2 delivered 20 events for twice the payload and the same overhead: per event 100 / 20 / 26 B.
    second = {**CLEARTEXT, "messages_received": 20, "bytes_down_payload": 2000}
    got = layers_per_event([CLEARTEXT, second])
    assert got == pytest.approx({"payload": 100.0, "http": (40 + 20) / 2, "tcpip": (52 + 26) / 2})


def test_a_repeat_that_delivered_nothing_is_left_out_of_the_mean() -> None:
    nothing = {**CLEARTEXT, "messages_received": 0}
    got = layers_per_event([CLEARTEXT, nothing])
    assert got == pytest.approx({"payload": 100.0, "http": 40.0, "tcpip": 52.0})
    assert all(math.isnan(v) for v in layers_per_event([nothing]).values())
