"""Bytes split layer by layer: payload, HTTP overhead, TLS overhead (records, handshake), TCP/IP (derived).

Nothing here touches a socket. The inputs are, per connection and direction, what the kernel counted
(TCP payload bytes, ``TCP_INFO``), what the client wrote and read above TLS (the plaintext HTTP streams),
where payload bytes sat in them, and the TCP bytes before the TLS handshake completed. Every split adds up
exactly: ``tcp = payload + http + tls_records + tls_handshake``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# TLS 1.3 record overhead with an AEAD cipher (RFC 8446 §5.2): a 5-byte header, the 1-byte inner content
# type and the 16-byte tag of AES-GCM or ChaCha20-Poly1305. The measurement never assumes it: the tests
# check the measured overhead of one record against it.
TLS13_RECORD_HEADER_BYTES = 5
TLS13_AEAD_TAG_BYTES = 16
TLS13_INNER_TYPE_BYTES = 1
TLS13_RECORD_OVERHEAD_BYTES = TLS13_RECORD_HEADER_BYTES + TLS13_INNER_TYPE_BYTES + TLS13_AEAD_TAG_BYTES


class H2Bytes(Protocol):
    """The HTTP/2 parts of a connection record (``loadgen.conn.ConnRecord``)."""

    bytes_down_h2_frame_headers: int
    bytes_up_h2_frame_headers: int
    bytes_down_hpack: int
    bytes_up_hpack: int
    bytes_down_h2_control: int
    bytes_up_h2_control: int
    h2_request_blocks: list[int]
    h2_response_blocks: list[int]
    h2_first_request_block: int | None


def median(values: list[int]) -> float | None:
    """The median (mean of the middle two for an even count); None when empty."""
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def h2_columns(records: list[H2Bytes]) -> dict[str, Any]:
    """The HTTP/2 summary columns: frame headers, HPACK and control bytes per direction (parts of
    ``bytes_*_http``), and the request header blocks: the largest (the first request on a connection pays the
    full block) and the median (later requests pay what HPACK could not index)."""
    requests = [b for r in records for b in r.h2_request_blocks]
    responses = [b for r in records for b in r.h2_response_blocks]
    return {
        "bytes_down_h2_frame_headers": sum(r.bytes_down_h2_frame_headers for r in records),
        "bytes_up_h2_frame_headers": sum(r.bytes_up_h2_frame_headers for r in records),
        "bytes_down_hpack": sum(r.bytes_down_hpack for r in records),
        "bytes_up_hpack": sum(r.bytes_up_hpack for r in records),
        "bytes_down_h2_control": sum(r.bytes_down_h2_control for r in records),
        "bytes_up_h2_control": sum(r.bytes_up_h2_control for r in records),
        "h2_request_blocks": len(requests),
        "h2_request_block_first_bytes": median([r.h2_first_request_block for r in records if r.h2_first_request_block]),
        "h2_request_block_max_bytes": max(requests, default=None),
        "h2_request_block_median_bytes": median(requests),
        "h2_response_block_median_bytes": median(responses),
    }


def block_distribution(sizes: Iterable[int]) -> dict[str, int]:
    """Header block sizes -> how many (run.json keeps the whole distribution per cell)."""
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return {str(k): counts[k] for k in sorted(counts)}


class ConnBytes(Protocol):
    """What a connection record carries (``loadgen.conn.ConnRecord``)."""

    bytes_down_tcp: int
    bytes_up_tcp: int
    bytes_down_plain: int
    bytes_up_plain: int
    bytes_down_payload: int
    bytes_up_payload: int
    bytes_down_tls_handshake: int
    bytes_up_tls_handshake: int


@dataclass(frozen=True)
class LayerSplit:
    """One direction's bytes by layer. ``tcp`` is measured; the layers are differences of measured counts."""

    tcp: int
    plain: int  # the HTTP stream (HTTP/1.1 or HTTP/2 framing and everything inside)
    payload: int
    tls_handshake: int

    @property
    def http(self) -> int:
        """HTTP overhead: header lines or HEADERS frames, frame headers, chunk/SSE/JSON/WebSocket framing."""
        return self.plain - self.payload

    @property
    def tls(self) -> int:
        """TLS overhead after the handshake: record headers, inner types, tags, tickets, alerts."""
        return self.tcp - self.plain - self.tls_handshake


def split_layers(tcp: int, plain: int, payload: int, tls_handshake: int = 0) -> LayerSplit:
    """The layers of ``tcp`` kernel bytes of which ``plain`` were the client's plaintext stream."""
    return LayerSplit(tcp, plain, payload, tls_handshake)


def layer_totals(records: Iterable[ConnBytes]) -> tuple[LayerSplit, LayerSplit]:
    """(down, up) totals over a cell's connection records."""
    d = [0, 0, 0, 0]
    u = [0, 0, 0, 0]
    for r in records:
        d[0] += r.bytes_down_tcp
        d[1] += r.bytes_down_plain
        d[2] += r.bytes_down_payload
        d[3] += r.bytes_down_tls_handshake
        u[0] += r.bytes_up_tcp
        u[1] += r.bytes_up_plain
        u[2] += r.bytes_up_payload
        u[3] += r.bytes_up_tls_handshake
    return split_layers(*d), split_layers(*u)


def layer_columns(records: Iterable[ConnBytes]) -> dict[str, Any]:
    """The summary.csv columns of the layer split (docs/results-format.md)."""
    down, up = layer_totals(records)
    return {
        "bytes_down_http": down.http,
        "bytes_up_http": up.http,
        "bytes_down_tls": down.tls,
        "bytes_up_tls": up.tls,
        "bytes_tls_handshake": down.tls_handshake + up.tls_handshake,
        "bytes_down_tls_handshake": down.tls_handshake,
        "bytes_up_tls_handshake": up.tls_handshake,
    }


def tls_record_overhead_bytes(records: int) -> int:
    """TLS 1.3 overhead of ``records`` application-data records with an AEAD cipher (22 bytes each)."""
    if records < 0:
        raise ValueError(f"records must be >= 0, got {records}")
    return records * TLS13_RECORD_OVERHEAD_BYTES
