"""Source addresses: how many a cell needs (hand-computed), and connections from two of them on a real server."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import psutil

from loadgen.client import ClientContext, ClientState
from loadgen.metrics import SeqTracker
from loadgen.sources import (
    TIME_WAIT_S,
    ephemeral_ports,
    new_connections_per_s,
    plan_sources,
    ports_needed,
    read_port_range,
    source_addresses,
    source_addresses_needed,
)
from tests.conftest import running_server, timeout
from tests.test_loadgen_results import fake_run


def test_ports_and_addresses_needed_by_hand() -> None:
    assert ephemeral_ports((32768, 60999)) == 28_232  # Linux's default range, both ends included
    assert TIME_WAIT_S == 60
    # Kept-alive connections hold one port each and leave no TIME_WAIT behind them.
    assert new_connections_per_s(10_000, True, True, False, 1.0, 1.0) == 0.0
    assert ports_needed(10_000, 0.0) == 10_000
    assert source_addresses_needed(10_000, 28_232) == 1
    assert source_addresses_needed(28_232, 28_232) == 1  # exactly full is still one
    assert source_addresses_needed(28_233, 28_232) == 2
    # Short polls without keep-alive: 1,000 clients × 1 poll/s = 1,000 connections/s, 60,000 in TIME_WAIT.
    assert new_connections_per_s(1_000, False, True, False, 1.0, 1.0) == 1_000.0
    assert ports_needed(1_000, 1_000.0) == 61_000
    assert source_addresses_needed(61_000, 28_232) == 3  # 61,000 / 28,232 = 2.16
    # Long polls without keep-alive: one new connection per tick at most (2 events/s); streams none.
    assert new_connections_per_s(500, False, False, True, 2.0, 1.0) == 1_000.0
    assert new_connections_per_s(500, False, False, False, 2.0, 1.0) == 0.0


def test_source_addresses_only_toward_ipv4_loopback() -> None:
    assert source_addresses("127.0.0.1", 1) == ()  # one is enough: the kernel's choice
    assert source_addresses("127.0.0.1", 3) == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert source_addresses("10.99.0.2", 3) == ()  # a namespace's address: not reachable from 127.0.0.x
    assert source_addresses("::1", 3) == ()
    assert source_addresses("localhost", 3) == ()
    assert len(source_addresses("127.0.0.1", 1000)) == 254  # 127.0.0.2 .. 127.0.0.255
    plan = plan_sources(40_000, 0.0, "127.0.0.1", (32768, 60999))
    assert (plan.ports_per_address, plan.ports_needed, plan.addresses_needed) == (28_232, 40_000, 2)
    assert plan.to_json()["addresses"] == ["127.0.0.2", "127.0.0.3"]
    low, high = read_port_range()
    assert 0 < low <= high < 65536


def test_clients_connect_from_two_source_addresses_to_a_real_server() -> None:
    plan = fake_run().plan
    assert plan is not None

    async def scenario() -> None:
        async with running_server() as srv:
            spread = replace(plan, host=srv.host, port=srv.port, source_addresses=("127.0.0.2", "127.0.0.3"))
            ctx = ClientContext(spread)
            conns = []
            for index in range(4):
                client = ClientState(index, random.Random(index), SeqTracker(1, 0))
                conn = await ctx.connect(client)
                response = await conn.request("GET", "/poll", [("Host", spread.hostport)])
                assert response.status == 200
                conns.append(conn)
            sources = [c.transport.get_extra_info("sockname")[0] for c in conns]
            assert sources == ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]  # round-robin by client index
            # What the kernel holds at the server's end: connections from both addresses.
            peers = sorted({c.raddr.ip for c in psutil.net_connections("tcp4") if c.laddr.port == srv.port and c.raddr})
            assert peers == ["127.0.0.2", "127.0.0.3"]
            assert srv.state.stats.connections_accepted == 4
            for conn in conns:
                conn.abort()

    asyncio.run(asyncio.wait_for(scenario(), timeout(10)))
