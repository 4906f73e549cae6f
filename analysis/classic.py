"""The classic table: measured bytes per client per second, extrapolated to 1,000 / 10,000 / 100,000 clients,
beside the figures that made the case for WebSocket.

Reference (cited, not measured): Peter Lubbers and Frank Greco, "HTML5 Web Sockets: A Quantum Leap in
Scalability for the Web", SOA World Magazine / websocket.org, 2010. Their polling example counts 871 bytes of
HTTP request and response headers per poll, one poll per second per client, and nothing else (no payload, no
TCP/IP); their WebSocket example counts the 2-byte frame header of one message per second per client. Their
Mbps is bits / 2**20.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.fmt import fmt
from analysis.metrics import extrapolate_mbps, first, slice_cells, transports_in
from analysis.stacks import Stacks
from analysis.transports import Transports

CLIENT_COUNTS = (1_000, 10_000, 100_000)

REFERENCE_CITATION = 'P. Lubbers and F. Greco, "HTML5 Web Sockets: A Quantum Leap in Scalability for the Web", 2010'
REFERENCE_POLL_HEADER_BYTES = 871  # request + response headers of one poll (Lubbers & Greco 2010)
REFERENCE_POLLS_PER_S = 1.0  # one poll per second per client (ibid.)
REFERENCE_POLL_MBPS = (6.6, 66.0, 665.0)  # published, for 1,000 / 10,000 / 100,000 clients (ibid.)
REFERENCE_WS_FRAME_BYTES = 2  # WebSocket frame header per message (ibid.)
REFERENCE_WS_MESSAGES_PER_S = 1.0  # one message per second per client (ibid.)
REFERENCE_WS_MBPS = (0.015, 0.153, 1.526)  # published, for 1,000 / 10,000 / 100,000 clients (ibid.)

REFERENCE_MBPS: dict[str, tuple[float, float, float]] = {"poll": REFERENCE_POLL_MBPS, "ws": REFERENCE_WS_MBPS}


@dataclass(frozen=True)
class ClassicRow:
    """One transport and header profile: what each client cost per second, and that cost scaled up."""

    transport: str
    label: str  # the transport's label in prose ("short polling")
    header_profile: str
    cell_ids: str
    events_per_s: float
    poll_interval_s: float
    payload_bytes: float
    overhead_bytes_per_client_per_s: float
    wire_bytes_per_client_per_s: float
    overhead_mbps: tuple[float, ...]
    wire_mbps: tuple[float, ...]
    reference_mbps: tuple[float, ...] | None
    explanation: str
    stack: str = "h1"
    stack_label: str = "HTTP/1.1"
    # Per CLIENT_COUNTS: the overhead Mbps measured in a feed cell with that many clients (else NaN), its cell ids,
    # and what makes it doubtful ('' when nothing: not saturated, nothing lost).
    measured_overhead_mbps: tuple[float, ...] = (math.nan, math.nan, math.nan)
    measured_cell_ids: tuple[str, ...] = ("", "", "")
    measured_doubts: tuple[str, ...] = ("", "", "")


def classic_rows(
    cells: pd.DataFrame, base: Mapping[str, Any], tt: Transports, stacks: Stacks | None = None
) -> list[ClassicRow]:
    """One row per stack, transport and header profile, from the baseline feed cell of each (stack by stack:
    one block each, in the stacks' registry order)."""
    stacks = stacks or Stacks()
    chosen = slice_cells(cells, {**base, "scenario": "feed"}, free=("header_profile", "stack"))
    if "stack" not in chosen.columns:
        chosen = chosen.assign(stack="h1")
    by_clients = slice_cells(cells, {**base, "scenario": "feed"}, free=("header_profile", "stack", "clients"))
    if "stack" not in by_clients.columns:
        by_clients = by_clients.assign(stack="h1")
    rows = []
    for stack, transport, profile in (
        (s, t, p)
        for s in stacks.order(chosen["stack"].unique())
        for t in transports_in(chosen, tt)
        for p in ("minimal", "browser", "custom")
    ):
        match = chosen[
            (chosen["transport"] == transport) & (chosen["header_profile"] == profile) & (chosen["stack"] == stack)
        ]
        if match.empty:
            continue
        cell = first(match)
        same = by_clients[
            (by_clients["transport"] == transport)
            & (by_clients["header_profile"] == profile)
            & (by_clients["stack"] == stack)
        ]
        at_counts = [same[same["clients"] == n] for n in CLIENT_COUNTS]
        measured = [first(m) if not m.empty else None for m in at_counts]
        overhead = float(cell["overhead_bytes_per_client_per_s"])
        wire = float(cell["wire_bytes_per_client_per_s"])
        rows.append(
            ClassicRow(
                transport=transport,
                label=tt.label(transport),
                header_profile=profile,
                cell_ids=str(cell["cell_ids"]),
                events_per_s=float(cell["events_per_s"]),
                poll_interval_s=float(cell["poll_interval_s"]),
                payload_bytes=float(cell["payload_bytes"]),
                overhead_bytes_per_client_per_s=overhead,
                wire_bytes_per_client_per_s=wire,
                overhead_mbps=tuple(extrapolate_mbps(overhead, n) for n in CLIENT_COUNTS),
                wire_mbps=tuple(extrapolate_mbps(wire, n) for n in CLIENT_COUNTS),
                reference_mbps=REFERENCE_MBPS.get(transport),
                explanation=explain(cell, tt) + explain_stack(cell, stacks),
                stack=stack,
                stack_label=stacks.label(stack),
                measured_overhead_mbps=tuple(
                    measured_mbps(float(m["overhead_bytes_per_client_per_s"]), n) if m is not None else math.nan
                    for m, n in zip(measured, CLIENT_COUNTS, strict=True)
                ),
                measured_cell_ids=tuple(str(m["cell_ids"]) if m is not None else "" for m in measured),
                measured_doubts=tuple(doubts(m) if m is not None else "" for m in measured),
            )
        )
    return rows


def measured_mbps(bytes_per_client_per_s: float, clients: int) -> float:
    """The Mbps (bits / 2**20, as the reference counts) that a cell of ``clients`` clients measured: its bytes per
    client per second × its clients, the same arithmetic as ``extrapolate_mbps`` at the count that was measured."""
    return extrapolate_mbps(bytes_per_client_per_s, clients)


def doubts(cell: Mapping[str, Any]) -> str:
    """Why a measured cell's figure is doubtful: '' when its load generator kept up and nothing was lost."""
    out = []
    if cell["saturated"]:
        out.append("load generator saturated")
    if float(cell["messages_lost"]) > 0:
        out.append(f"{fmt(cell['messages_lost'])} messages lost")
    if cell["incomplete"]:
        out.append("incomplete")
    return ", ".join(out)


def explain(cell: Mapping[str, Any], tt: Transports) -> str:
    """Why this cell's measured figure differs from the reference, in numbers taken from the cell."""
    t = str(cell["transport"])
    name = tt.label(t)
    up = float(cell["up_overhead_bytes_per_client_per_s"])
    down = float(cell["down_overhead_bytes_per_client_per_s"])
    events_per_client_s = float(cell["events_per_client_per_s"])
    profile = (
        f"the {cell['header_profile']} header profile ({fmt(cell['request_header_bytes'])} bytes of request headers)"
    )
    common = (
        f"The table counts HTTP/frame overhead only, as the reference does; on top of it each client also "
        f"received {fmt(cell['payload_bytes_per_client_per_s'])} B/s of payload and cost "
        f"{fmt(cell['tcpip_bytes_per_client_per_s'])} B/s of TCP/IP headers (both directions), which the "
        f"right-hand column includes."
    )
    measured = extrapolate_mbps(float(cell["overhead_bytes_per_client_per_s"]), CLIENT_COUNTS[0])
    if t == "poll":
        per_poll = float(cell["overhead_bytes_per_poll"])
        polls_per_s = 1.0 / float(cell["poll_interval_s"])
        return (
            f"Measured {fmt(measured)} Mbps at {fmt(CLIENT_COUNTS[0])} clients against the reference's "
            f"{fmt(REFERENCE_POLL_MBPS[0])}, {fmt(measured / REFERENCE_POLL_MBPS[0])}×: "
            f"{fmt(polls_per_s / REFERENCE_POLLS_PER_S)}× from the poll rate (one poll every "
            f"{fmt(cell['poll_interval_s'])} s, {fmt(polls_per_s)} polls/s against 1) times "
            f"{fmt(per_poll / REFERENCE_POLL_HEADER_BYTES)}× from the bytes per poll (≈{fmt(per_poll)} bytes of "
            f"overhead per poll against {REFERENCE_POLL_HEADER_BYTES}). With {profile}, the request side cost "
            f"{fmt(up)} B/s per client (request line and headers) and the response side {fmt(down)} B/s (status "
            f"line, response headers, the JSON wrapper of each answer, and answers that carried no event). "
            f"Polls are counted as clients × window / interval. {common}"
        )
    if t == "ws":
        per_event = float(cell["overhead_bytes_per_event"])
        payload = float(cell["down_payload_per_event"])
        expected = ws_frame_header_bytes(payload) if not math.isnan(payload) else math.nan
        return (
            f"Measured {fmt(measured)} Mbps at {fmt(CLIENT_COUNTS[0])} clients against the reference's "
            f"{fmt(REFERENCE_WS_MBPS[0])}, {fmt(measured / REFERENCE_WS_MBPS[0])}×: "
            f"{fmt(events_per_client_s / REFERENCE_WS_MESSAGES_PER_S)}× from the message rate "
            f"({fmt(events_per_client_s)} events/s per client against 1) times "
            f"{fmt(per_event / REFERENCE_WS_FRAME_BYTES)}× from the bytes per message ({fmt(per_event)} bytes of "
            f"overhead per event, both directions, against {REFERENCE_WS_FRAME_BYTES}). Downstream it was "
            f"{fmt(cell['down_overhead_per_event'])} B per event; RFC 6455 needs {fmt(expected)} B for a frame of "
            f"this event's {fmt(payload)}-byte payload (2 B up to 125 bytes, 4 B up to 65,535, 10 B beyond), and "
            f"control frames or a handshake add to it when they fall in the window. Upstream cost {fmt(up)} B/s "
            f"per client (client frames are masked: 4 more bytes each). {common}"
        )
    once = (
        " Its request headers went out once, when the connection opened before the window, so the header profile "
        "does not show here."
        if up < 1
        else ""
    )
    return (
        f"{name[0].upper() + name[1:]} is not in the reference (it compares polling with WebSocket only). Here it "
        f"cost {fmt(up)} B/s upstream and {fmt(down)} B/s downstream of overhead per client, delivering "
        f"{fmt(events_per_client_s)} events/s per client with {profile}.{once} {common}"
    )


def explain_stack(cell: Mapping[str, Any], stacks: Stacks) -> str:
    """What the stack added to this cell's overhead per event: HTTP framing, TLS (records and handshakes)."""
    stack = str(cell.get("stack", "h1"))
    if not stacks.info(stack).tls:
        return ""
    text = (
        f" Over {stacks.label(stack)} the overhead per delivered event was {fmt(cell['http_bytes_per_event'])} B of "
        f"HTTP framing and {fmt(cell['tls_bytes_per_event'])} B of TLS (record headers and tags, plus handshakes and "
        "session tickets of connections opened in the window), both directions."
    )
    median = cell.get("h2_request_block_median_bytes")
    if stacks.info(stack).http2 and median is not None and not math.isnan(float(median)):
        first_block = cell.get("h2_request_block_first_bytes")
        text += (
            f" HPACK sent each request's headers in a {fmt(median)}-byte block (median) after the connection's "
            f"first request, which paid {fmt(first_block)} bytes."
        )
    return text


def article_header_sizes(article: Mapping[str, Any]) -> tuple[int, int]:
    """(characters, bytes on the wire) of the article's request and response: every character of the request
    line, the header lines and the status line, without line ends; and the same as HTTP/1.1 sends it, each line
    ended by CRLF and each message by a blank line (CRLF)."""
    request = [str(article["request_line"]), *(f"{n}: {v}" for n, v in article["request_headers"])]
    response = [str(article["status_line"]), *(f"{n}: {v}" for n, v in article["response_headers"])]
    chars = sum(len(line) for line in request + response)
    return chars, chars + 2 * (len(request) + len(response)) + 2 * 2


def reference_case(article: Mapping[str, Any], cells: pd.DataFrame, stacks: Stacks) -> str:
    """What the article's own headers cost: counted from its text, and measured per stack (classic2010 cells)."""
    chars, wire = article_header_sizes(article)
    lines = 2 + len(article["request_headers"]) + len(article["response_headers"])
    text = (
        f"The reference's 871 bytes are its {lines} header lines (request line, {len(article['request_headers'])} "
        f"request headers, status line, {len(article['response_headers'])} response headers) counted as characters "
        f"without line ends: {fmt(chars)}. On the wire HTTP/1.1 ends every line with CRLF and each message with a "
        f"blank line: the same headers are {fmt(wire)} bytes."
    )
    polls = cells[(cells["transport"] == "poll") & (cells["header_profile"] == "classic2010")]
    if "stack" in polls.columns and not polls.empty:
        measured = [
            f"{fmt(first(polls[polls['stack'] == s])['overhead_bytes_per_poll'])} over {stacks.label(s)}"
            for s in stacks.order(polls["stack"].unique())
        ]
        text += (
            " Measured with those request headers (header_profile = classic2010; our request line, status line and "
            "JSON answer instead of the article's) and its X-Powered-By and Server response headers, one poll cost "
            f"{', '.join(measured)} bytes of overhead (both directions, TLS included where there is TLS)."
        )
    return text


def polling_to_websocket(rows: list[ClassicRow]) -> list[tuple[str, str, float]]:
    """(stack label, header profile, short polling ÷ WebSocket overhead per client per second) for every stack and
    profile that has both."""
    out = []
    for r in rows:
        if r.transport != "poll":
            continue
        ws = next(
            (w for w in rows if w.transport == "ws" and w.stack == r.stack and w.header_profile == r.header_profile),
            None,
        )
        if ws is not None and ws.overhead_bytes_per_client_per_s > 0:
            out.append(
                (
                    r.stack_label,
                    r.header_profile,
                    r.overhead_bytes_per_client_per_s / ws.overhead_bytes_per_client_per_s,
                )
            )
    return out


def ws_frame_header_bytes(payload_bytes: float, masked: bool = False) -> int:
    """Header of one unfragmented WebSocket frame (RFC 6455 §5.2): 2 B, +2 or +8 for the extended length,
    +4 for the client's masking key."""
    extended = 0 if payload_bytes <= 125 else (2 if payload_bytes <= 65_535 else 8)
    return 2 + extended + (4 if masked else 0)
