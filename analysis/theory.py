"""What each transport's latency should be on a path with a given round-trip time: one named formula per transport.

Every formula gives the *added* latency of the path (ms) on top of what the transport takes on loopback; the
charts draw ``formula + the loopback figure measured in the same run`` beside the measured points, and the tests
derive their expectations from these functions. The one-way delay is half the round trip (``[network].rtt_ms``
is split evenly). Events are assumed to land at a uniformly random phase of whatever the client repeats.

References: RFC 6202 §2.2 (long polling: up to three network transits for back-to-back events), §2.1 (short
polling), RFC 6455 / the SSE spec (one transit per event on an open connection).
"""

from __future__ import annotations


def one_way_ms(rtt_ms: float) -> float:
    """The delay of one network transit: half the round trip."""
    return rtt_ms / 2


def push_latency_ms(rtt_ms: float) -> float:
    """WebSocket and SSE: the event travels once, server to client, on a connection already open: RTT/2."""
    return one_way_ms(rtt_ms)


def longpoll_event_latency_ms(rtt_ms: float, since_previous_ms: float) -> float:
    """Long polling, one event published ``since_previous_ms`` after the previous one (which answered the poll).

    The answer to the previous event travels down (one way), the client's next request travels up (one way):
    the server holds a poll again ``2 × one-way`` after it answered. An event published before that waits for
    it, then travels down. So the latency is ``one-way + max(0, 2 × one-way − gap)``: 3 × one-way for events
    back to back (RFC 6202 §2.2), one-way once events are at least a round trip apart.
    """
    ow = one_way_ms(rtt_ms)
    return ow + max(0.0, 2 * ow - since_previous_ms)


def longpoll_latency_ms(rtt_ms: float, event_interval_ms: float, pct: float) -> float:
    """Long polling under a steady feed (one event every ``event_interval_ms``), percentile ``pct`` (0–100).

    Events a round trip or more apart each find a poll waiting: one-way. Closer events always find the next
    poll still on its way, so the server answers exactly once per round trip and an event waits a uniform
    share of that round trip before its one-way transit: percentile ``pct`` is ``one-way + pct % × RTT``
    (p50 = 2 × one-way, p100 = 3 × one-way).
    """
    ow = one_way_ms(rtt_ms)
    if event_interval_ms >= rtt_ms:
        return ow
    return ow + pct / 100 * rtt_ms


def shortpoll_latency_ms(rtt_ms: float, poll_interval_ms: float, pct: float) -> float:
    """Short polling every ``poll_interval_ms``, percentile ``pct`` of the latency.

    Polls reach the server once per interval; an event waits a uniform share of the interval for the next one,
    then the answer travels down: ``pct % × interval + one-way`` (p50 = interval/2 + RTT/2). Without keep-alive
    each poll first pays a TCP handshake, which moves *when* polls reach the server but not how often, so the
    event latency is the same; the cost shows in each exchange (``http_exchange_ms``) and in bytes.
    """
    return pct / 100 * poll_interval_ms + one_way_ms(rtt_ms)


def http_exchange_ms(rtt_ms: float, keepalive: bool, handshake_round_trips: int = 1) -> float:
    """One HTTP request/response (a poll, a POST /echo) from send to answer: one round trip on a kept-alive
    connection; a fresh connection first pays its handshake (TCP: one round trip; TLS 1.3 adds one more)."""
    return rtt_ms * (1 + (0 if keepalive else handshake_round_trips))


def websocket_echo_ms(rtt_ms: float) -> float:
    """A WebSocket message and its echo on an open connection: one round trip."""
    return float(rtt_ms)
