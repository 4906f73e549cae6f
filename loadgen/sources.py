"""How many loopback source addresses a cell's clients need so that ephemeral ports do not run out.

A connection from one source address to one server address and port takes one port of
``net.ipv4.ip_local_port_range`` (28,232 by default). Open connections hold one each; so, for ``TIME_WAIT_S``, does
a connection that was closed where TIME_WAIT may land on the client's side: the cells that open a new connection
per request (``server.keepalive = false``) are counted at their request rate. (pushbench's server closes first, so
TIME_WAIT mostly lands on its port and this errs on the safe side; a client that gives up on a connection aborts
it, which leaves no TIME_WAIT.) Beyond one address's ports the clients connect from 127.0.0.2, 127.0.0.3, ...
round-robin: the whole 127.0.0.0/8 is this host's, so only a loopback server is reachable that way.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TIME_WAIT_S = 60  # Linux's TCP_TIMEWAIT_LEN, fixed in the kernel
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_PORT_RANGE = (32768, 60999)  # Linux's default, used when the file cannot be read
FIRST_SPREAD_HOST = 2  # 127.0.0.2: the first source address when spreading (127.0.0.1 is everybody's default)
MAX_SOURCE_ADDRESSES = 254  # 127.0.0.2 .. 127.0.0.255


def ephemeral_ports(port_range: tuple[int, int]) -> int:
    """Ports in ``ip_local_port_range`` (both ends included)."""
    low, high = port_range
    return max(0, high - low + 1)


def read_port_range(path: Path = PORT_RANGE_FILE) -> tuple[int, int]:
    """This host's ``ip_local_port_range`` (Linux's default when unreadable)."""
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_PORT_RANGE
    return low, high


def new_connections_per_s(
    clients: int, keepalive: bool, polls: bool, holds_requests: bool, rate_hz: float, poll_interval_s: float
) -> float:
    """Connections the clients open per second in steady state: one per request without keep-alive (a short poll
    every ``poll_interval_s``, a long poll answered at most once per tick), none otherwise."""
    if keepalive:
        return 0.0
    if polls:
        return clients / poll_interval_s
    if holds_requests:
        return clients * rate_hz
    return 0.0


def ports_needed(clients: int, connections_per_s: float) -> int:
    """Ports one cell holds at once from the clients' side: open connections plus TIME_WAIT for ``TIME_WAIT_S``."""
    return clients + math.ceil(connections_per_s * TIME_WAIT_S)


def source_addresses_needed(ports: int, ports_per_address: int) -> int:
    """Source addresses so that no address needs more than its ephemeral ports (at least 1)."""
    if ports_per_address <= 0:
        return 1
    return max(1, math.ceil(ports / ports_per_address))


def source_addresses(server_host: str, count: int) -> tuple[str, ...]:
    """``count`` loopback addresses from 127.0.0.2 to connect from; () when one address is enough or the server is
    not on IPv4 loopback (only a loopback server is reachable from another loopback address)."""
    if count <= 1:
        return ()
    try:
        if not (ipaddress.ip_address(server_host).is_loopback and ipaddress.ip_address(server_host).version == 4):
            return ()
    except ValueError:
        return ()
    base = int(ipaddress.IPv4Address("127.0.0.0"))
    return tuple(
        str(ipaddress.IPv4Address(base + FIRST_SPREAD_HOST + i)) for i in range(min(count, MAX_SOURCE_ADDRESSES))
    )


@dataclass(frozen=True)
class SourcePlan:
    """What a cell needs and gets (run.json ``sources``): ports per source address, ports needed, addresses needed
    and the addresses the clients connect from (empty: the kernel's choice, one address)."""

    ports_per_address: int
    ports_needed: int
    addresses_needed: int
    addresses: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "addresses": list(self.addresses)}


def plan_sources(
    clients: int,
    connections_per_s: float,
    server_host: str,
    port_range: tuple[int, int],
) -> SourcePlan:
    """The source addresses of one cell (see the module docstring)."""
    per_address = ephemeral_ports(port_range)
    ports = ports_needed(clients, connections_per_s)
    needed = source_addresses_needed(ports, per_address)
    return SourcePlan(per_address, ports, needed, source_addresses(server_host, needed))
