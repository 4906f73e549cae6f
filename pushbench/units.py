"""Units and wire constants shared by the server and the load generator (``analysis/`` keeps its own)."""

from __future__ import annotations

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def ws_frame_header_bytes(payload_len: int, masked: bool) -> int:
    """RFC 6455 §5.2: 2 bytes, +2 for 126..65535 bytes or +8 beyond, +4 when masked (client to server)."""
    if payload_len < 0:
        raise ValueError(f"payload length must be >= 0, got {payload_len}")
    size = 2 if payload_len <= 125 else 4 if payload_len <= 0xFFFF else 10
    return size + (4 if masked else 0)
