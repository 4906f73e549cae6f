"""The SSE client's receive path (``loadgen.sse.ChunkedSseSink``) against a scripted HTTP/1.1 server on 127.0.0.1:
chunks framed alike (read from their remembered shape), and every other framing the parser handles (a chunk
extension, a record split over chunks, two records in a chunk, a comment, CRLF line ends; and chunks of the
remembered size that are not one record: a CR, an extra line, no data line, a record while the parser is inside
another), written whole or cut at every few bytes. Every event is delivered once with
its data, the payload counted is exactly the data's bytes, and the kernel's byte count is what the server wrote.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
import uvloop

from loadgen import sse
from loadgen.client import ClientContext, ClientState, Plan
from loadgen.conn import ClientError, ErrorKind
from loadgen.headers import make_profile
from loadgen.metrics import SeqTracker
from pushbench.config import LoadConfig

NS_PER_S = 1_000_000_000
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event(seq: int, size: int = 40) -> bytes:
    return json.dumps({"seq": seq, "ts": time.time_ns(), "data": "x" * size}, separators=(",", ":")).encode()


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def record(seq: int, data: bytes) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (seq, data)


def script() -> tuple[bytes, list[tuple[int, bytes]]]:
    """The chunked body and the (seq, data) each event must deliver, in order."""
    body, want = b"", []

    def add(seq: int, framed: bytes, data: bytes) -> None:
        nonlocal body
        body += framed
        want.append((seq, data))

    for seq in (11, 12, 13):  # framed alike: the first is parsed in full, the next two read from its shape
        add(seq, chunk(record(seq, d := event(seq))), d)
    add(14, chunk(record(14, d := event(14)), b";ext=1"), d)  # a chunk extension: a new shape
    add(15, chunk(record(15, d := event(15))), d)  # back to the plain size line: parsed in full again
    whole = record(16, d := event(16))
    add(16, chunk(whole[:9]) + chunk(whole[9:]), d)  # one record split over two chunks: the parser
    add(17, chunk(record(17, d := event(17))), d)  # the shape again, the parser idle again
    add(18, chunk(record(18, d18 := event(18)) + record(19, d19 := event(19))), d18)  # two records in one chunk
    want.append((19, d19))
    body += chunk(b": keep-alive\n\n")  # a comment: nothing to deliver
    add(20, chunk(b"id: 20\r\ndata: %s\r\n\r\n" % (d := event(20))), d)  # CRLF line ends
    add(21, chunk(record(21, d := event(21))), d)
    # Chunks of the remembered size that are not two LF lines: a CR ends the id line (the parser strips it); a
    # CR ends the data line (stripped: the data is one byte shorter); a comment line between id and data.
    add(22, chunk(b"id: 2\r\ndata: %s\n\n" % (d := event(22))), d)
    add(23, chunk(b"id: 23\ndata: %s\r\n\n" % (d := event(23, 39))), d)
    add(24, chunk(b"id: \n:\ndata: %s\n\n" % (d := event(24))), d)
    add(25, chunk(record(25, d := event(25))), d)
    body += chunk(b"id: 26\nnote: %s\n\n" % event(26))  # the remembered size, no data line: nothing to deliver
    add(26, chunk(record(26, d := event(26))), d)
    body += chunk(b"id: 27\ndata: %s\n" % event(27))  # a data line the next record replaces: never delivered
    add(28, chunk(record(28, d := event(28))), d)  # the remembered framing, but the parser is inside a record
    body += chunk(b": keep-alive\n\n")
    add(29, chunk(record(29, d := event(29)) + b"\r\n"), d)  # a blank CRLF line after the record: another size
    add(30, chunk(record(30, d := event(30))), d)
    return body + b"0\r\n\r\n", want


def run_stream(
    body: bytes, cut: int, seqs: tuple[int, int] = (11, 30)
) -> tuple[ClientContext, ClientState, ClientError, int]:
    """Serve ``HEAD + body`` to one SSE client in pieces of ``cut`` bytes (0: one piece per chunk), each sent on
    its own; returns the client's context and state, the error that ended its stream and the bytes written."""

    async def main() -> tuple[ClientContext, ClientState, ClientError, int]:
        sent = 0
        handlers: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            await reader.readuntil(b"\r\n\r\n")
            pieces = [HEAD]
            if cut:
                pieces += [body[i : i + cut] for i in range(0, len(body), cut)]
            else:
                pos = 0
                while pos < len(body):  # one piece per chunk: size line, data, CRLF
                    nl = body.index(b"\r\n", pos)
                    end = nl + 2 + int(body[pos:nl].split(b";")[0], 16) + 2
                    pieces.append(body[pos:end])
                    pos = end
            for piece in pieces:
                writer.write(piece)
                sent += len(piece)
                await writer.drain()
                await asyncio.sleep(0.001)  # mostly one piece per read on the client's side
            await reader.read()  # until the client closes
            writer.close()
            await writer.wait_closed()

        listener = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        now = time.time_ns()
        plan = Plan(
            host="127.0.0.1", port=port, transport="sse", scenario="feed", clients=1, poll_interval_s=1.0,
            send_interval_s=1.0, longpoll_timeout_s=30.0, payload_bytes=100, seed=1, ws_compress=False,
            ramp_up_s=0.0, profile=make_profile(LoadConfig(header_profile="minimal")), anchor_ns=now,
            window_start_ns=now, window_end_ns=now + 10 * NS_PER_S, stop_ns=now + 10 * NS_PER_S,
            seq_first=seqs[0], seq_last=seqs[1],
        )  # fmt: skip
        ctx = ClientContext(plan)
        ctx.book.start()  # the connection opens inside the window: counted from its first byte
        client = ClientState(0, random.Random(1), SeqTracker(*seqs))
        conn = await ctx.connect(client)
        with pytest.raises(ClientError) as ended:
            await asyncio.wait_for(sse.stream(ctx, client, conn), 5.0)
        ctx.book.end()
        conn.abort()
        await asyncio.wait(handlers, timeout=1.0)
        listener.close()
        await listener.wait_closed()
        return ctx, client, ended.value, sent

    return uvloop.run(main())


@pytest.mark.parametrize("cut", [0, 7, 64])
def test_every_framing_delivers_each_event_once_with_exact_bytes(cut: int) -> None:
    body, want = script()
    ctx, client, ended, sent = run_stream(body, cut)
    assert ended.kind is ErrorKind.DISCONNECT and "SSE stream ended" in str(ended)
    tracker = client.tracker
    assert [seq for seq in range(11, 31) if tracker._seen[seq - 11]] == [seq for seq, _ in want]
    assert (tracker.received, tracker.duplicated) == (len(want), 0)
    assert client.cursor == want[-1][0]
    (record_,) = ctx.book.records
    assert record_.bytes_down_payload == sum(len(data) for _, data in want)
    assert record_.bytes_down_tcp == sent  # the kernel's count: everything the server wrote, nothing more
    assert ctx.latency.count == len(want)


def test_a_chunk_of_the_remembered_size_that_is_not_one_record_is_parsed() -> None:
    """Framed like the chunk before it, but where its id goes stand two more lines: the parser delivers the empty
    data line the blank one ends, which is not an event (read from the shape, the record after it would pass)."""
    framed = chunk(b"id: \ndata\n\ndata: %s\n\n" % event(123457))
    assert len(framed) == len(chunk(record(123457, event(123457))))
    body = chunk(record(123456, event(123456))) + framed + b"0\r\n\r\n"
    _, client, ended, _ = run_stream(body, 0, (123456, 123457))
    assert ended.kind is ErrorKind.PROTOCOL and "not an event: b''" in str(ended)
    assert client.tracker.received == 1 and client.cursor == 123456
