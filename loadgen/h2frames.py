"""HTTP/2 frames as bytes on the wire (RFC 9113 §4.1), for counting: which bytes are frame headers, which are
HPACK header blocks, which are DATA. Nothing here touches a socket; ``h2`` does the protocol, this only looks.

Every frame is a 9-byte header (length 24 bits, type, flags, stream id 31 bits) and ``length`` bytes of
payload. HEADERS and CONTINUATION payloads carry the HPACK block (less the pad length, padding and priority
fields when flagged); DATA payloads carry the body (less padding); SETTINGS, WINDOW_UPDATE, PING, RST_STREAM,
GOAWAY and PRIORITY payloads are connection control, counted as HTTP overhead like the frame headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

FRAME_HEADER_BYTES = 9
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the client's connection preface (RFC 9113 §3.4), 24 bytes


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    flags: int
    stream_id: int
    offset: int  # stream offset of the frame's first header byte
    payload: bytes

    @property
    def length(self) -> int:
        return len(self.payload)

    def content(self) -> tuple[int, int]:
        """(stream offset, length) of the HPACK block (HEADERS, CONTINUATION) or body bytes (DATA) it carries,
        without the pad length byte, padding and priority fields; (end, 0) for other frames."""
        start = self.offset + FRAME_HEADER_BYTES
        if self.type not in (FrameType.DATA, FrameType.HEADERS, FrameType.CONTINUATION):
            return start + self.length, 0
        skip, pad = 0, 0
        if self.type != FrameType.CONTINUATION and self.flags & FLAG_PADDED and self.payload:
            skip, pad = 1, self.payload[0]
        if self.type == FrameType.HEADERS and self.flags & FLAG_PRIORITY:
            skip += 5
        return start + skip, max(0, self.length - skip - pad)


class FrameSplitter:
    """Cuts a byte stream into frames, wherever the reads happened to split it. ``preface`` skips the client's
    24-byte connection preface first (the sent stream starts with it)."""

    def __init__(self, preface: bool = False) -> None:
        self._buffer = b""
        self._buffer_offset = 0
        self._preface_left = len(PREFACE) if preface else 0

    def feed(self, offset: int, data: bytes) -> list[Frame]:
        """The frames completed by ``data``, which starts at stream ``offset`` right after the previous feed."""
        if not self._buffer:
            self._buffer_offset = offset
        buf = self._buffer + data
        pos = 0
        if self._preface_left:
            take = min(self._preface_left, len(buf))
            self._preface_left -= take
            pos = take
        frames = []
        while len(buf) - pos >= FRAME_HEADER_BYTES:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            end = pos + FRAME_HEADER_BYTES + length
            if end > len(buf):
                break
            stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            frames.append(
                Frame(
                    buf[pos + 3],
                    buf[pos + 4],
                    stream_id,
                    self._buffer_offset + pos,
                    buf[pos + FRAME_HEADER_BYTES : end],
                )
            )
            pos = end
        self._buffer = buf[pos:]
        self._buffer_offset += pos
        return frames


@dataclass
class H2Tally:
    """HTTP/2 bytes of one direction of one connection inside the measured window, by kind.

    ``window`` gives the stream range being counted when a frame is added (the connection's window edges, as
    plaintext offsets; ``hi`` infinite while the window is open); frames outside it are not counted.
    """

    frame_headers: int = 0  # 9 bytes per frame, every type
    hpack: int = 0  # HPACK header block bytes as sent (HEADERS + CONTINUATION content)
    control: int = 0  # payloads of SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY, PRIORITY, and padding
    frames: int = 0
    header_blocks: list[int] = field(default_factory=list)  # size of each complete header block (per request)
    first_block: int | None = None  # the connection's first header block, inside the window or not
    _block: int = 0
    _first: int = 0

    def add(self, frame: Frame, lo: int | None, hi: float = math.inf) -> None:
        _, content_len = frame.content()
        if self.first_block is None and frame.type in (FrameType.HEADERS, FrameType.CONTINUATION):
            self._first += content_len
            if frame.flags & FLAG_END_HEADERS:
                self.first_block = self._first
        if lo is None or not lo <= frame.offset < hi:
            return
        self.frames += 1
        self.frame_headers += FRAME_HEADER_BYTES
        if frame.type in (FrameType.HEADERS, FrameType.CONTINUATION):
            self.hpack += content_len
            self._block += content_len
            if frame.flags & FLAG_END_HEADERS:
                self.header_blocks.append(self._block)
                self._block = 0
        self.control += frame.length - content_len  # whole payload of control frames; padding of others


def body_spans(segments: list[tuple[int, int]], start: int, length: int) -> list[tuple[int, int]]:
    """Where bytes ``[start, start + length)`` of a body lie in the stream, given the body's DATA ``segments``
    as (stream offset, length) in order: one span per segment the range touches."""
    spans = []
    pos = 0  # body offset of the current segment
    end = start + length
    for offset, seg_len in segments:
        lo, hi = max(start, pos), min(end, pos + seg_len)
        if lo < hi:
            spans.append((offset + lo - pos, hi - lo))
        pos += seg_len
        if pos >= end:
            break
    return spans
