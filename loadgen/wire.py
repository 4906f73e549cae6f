"""Kernel byte and segment counters of one TCP socket (Linux ``TCP_INFO``) and the TCP/IP header formula.

Offsets follow ``struct tcp_info`` in the kernel's ``include/uapi/linux/tcp.h``::

    0   __u8  tcpi_state            120 __u64 tcpi_bytes_acked     (4.1+)
    5   __u8  tcpi_options          128 __u64 tcpi_bytes_received  (4.1+)
                                    136 __u32 tcpi_segs_out        (4.2+)
                                    140 __u32 tcpi_segs_in         (4.2+)
                                    200 __u64 tcpi_bytes_sent      (4.19+)
                                    208 __u64 tcpi_bytes_retrans   (4.19+)

The kernel copies ``min(len, sizeof(struct tcp_info))`` bytes, so a field is trusted only when the returned
buffer reaches past its end; an older kernel gives ``WireCountersUnavailable`` instead of a silent zero.

Two kernel conventions matter for exact byte counts (checked on loopback, kernel 6.x):
``tcpi_bytes_acked`` counts the SYN as one byte once the handshake completes, and ``tcpi_bytes_received``
counts the peer's FIN as one byte. ``stream_offsets`` removes both so that the offsets are positions in the
application byte streams.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

TCP_INFO_BUFFER_BYTES = 512

# (offset, struct format) of every field read; a field is valid only if offset + size <= returned length.
_FIELDS: dict[str, tuple[int, str]] = {
    "state": (0, "B"),
    "options": (5, "B"),
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "segs_out": (136, "I"),
    "segs_in": (140, "I"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
}
REQUIRED_LENGTH = max(off + struct.calcsize("=" + fmt) for off, fmt in _FIELDS.values())

TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4

# Linux TCP states (include/net/tcp_states.h) in which the peer's FIN has been received.
TCP_ESTABLISHED = 1
TCP_TIME_WAIT = 6
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8
TCP_LAST_ACK = 9
TCP_CLOSING = 11
PEER_FIN_STATES = frozenset({TCP_TIME_WAIT, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING})

IPV4_HEADER_BYTES = 20
TCP_HEADER_BYTES = 20
TCP_TIMESTAMP_OPTION_BYTES = 12  # NOP, NOP, kind 8 length 10: what Linux puts on every segment when negotiated


class WireCountersUnavailable(RuntimeError):
    """The kernel returned a ``tcp_info`` too short for the counters pushbench needs."""


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The counters of one socket at one instant (cumulative since the connection started)."""

    state: int
    options: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int
    bytes_sent: int
    bytes_retrans: int = 0

    @property
    def data_bytes_sent(self) -> int:
        """Bytes of the sent stream that left at least once (retransmissions not counted; no SYN, no FIN)."""
        return self.bytes_sent - self.bytes_retrans

    @property
    def peer_fin_received(self) -> bool:
        return self.state in PEER_FIN_STATES

    @property
    def timestamps(self) -> bool:
        return bool(self.options & TCPI_OPT_TIMESTAMPS)

    def stream_offsets(self) -> tuple[int, int]:
        """(bytes of the received stream, bytes of the sent stream acknowledged), SYN and FIN removed."""
        down = self.bytes_received - (1 if self.peer_fin_received else 0)
        up = max(0, self.bytes_acked - 1)  # the SYN is acknowledged as one byte
        return down, up


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """Unpack the fields pushbench uses from a raw ``TCP_INFO`` buffer, refusing a buffer that is too short."""
    if len(raw) < REQUIRED_LENGTH:
        raise WireCountersUnavailable(
            f"TCP_INFO returned {len(raw)} bytes, need {REQUIRED_LENGTH} (tcpi_bytes_sent needs Linux 4.19+)"
        )
    values: dict[str, Any] = {name: struct.unpack_from("=" + fmt, raw, off)[0] for name, (off, fmt) in _FIELDS.items()}
    return TcpInfo(**values)


def read_tcp_info(sock: Any) -> TcpInfo:
    """Read ``TCP_INFO`` of a connected TCP socket (a ``socket.socket`` or an asyncio transport socket)."""
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BUFFER_BYTES))


def peer_fin_received(sock: Any) -> bool:
    """Whether the peer's FIN has arrived, from ``tcpi_state`` alone (one byte of ``TCP_INFO``, nothing parsed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in PEER_FIN_STATES


def tcpip_header_bytes(
    segments: int,
    *,
    ip_header_bytes: int = IPV4_HEADER_BYTES,
    tcp_header_bytes: int = TCP_HEADER_BYTES,
    tcp_option_bytes: int = TCP_TIMESTAMP_OPTION_BYTES,
) -> int:
    """Bytes of IP and TCP headers carried by ``segments`` segments (derived, not measured).

    Assumptions: IPv4 without IP options (20 B); a TCP header of 20 B plus ``tcp_option_bytes`` on every
    segment: 12 B when timestamps were negotiated (Linux default ``net.ipv4.tcp_timestamps = 1``; see
    ``TcpInfo.timestamps``), else 0. SYN and SYN-ACK carry up to 20 B of options (MSS, SACK-permitted,
    window scale, timestamps) and segments carrying SACK blocks carry more; both are counted at the common
    size, so the figure is a slight undercount when connections are opened or segments are lost. Link-layer
    framing (Ethernet 14 B + FCS, or none on loopback) is not included.
    """
    if segments < 0:
        raise ValueError(f"segments must be >= 0, got {segments}")
    return segments * (ip_header_bytes + tcp_header_bytes + tcp_option_bytes)
