"""pushbench.netns: names and staleness by hand, then real namespaces, a veth pair and TCP across it (root only)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pushbench import netns

needs_root = pytest.mark.skipif(bool(netns.missing_requirements()), reason="; ".join(netns.missing_requirements()))


def test_names_carry_the_pid_and_role() -> None:
    assert netns.name("srv", pid=1234) == "pbns-1234-srv"
    assert netns.owner_pid("pbns-1234-srv") == 1234
    assert netns.owner_pid("pbns-x-srv") is None
    assert netns.owner_pid("docker-1234-srv") is None
    with pytest.raises(ValueError):
        netns.name("a b")


def test_only_namespaces_of_dead_pushbench_processes_are_stale() -> None:
    names = ["pbns-10-srv", "pbns-10-cli", "pbns-20-srv", "other-10-x", "pbns-30"]
    assert netns.stale(names, alive=lambda pid: pid == 20) == ["pbns-10-srv", "pbns-10-cli"]
    assert netns.stale(names, alive=lambda pid: True) == []


def test_subnet_30_gives_the_two_hosts_of_each_slash_30() -> None:
    assert netns.subnet_30("10.213.11.0/24", 0) == ("10.213.11.1/30", "10.213.11.2/30")
    assert netns.subnet_30("10.213.11.0/24", 1) == ("10.213.11.5/30", "10.213.11.6/30")
    assert netns.subnet_30("10.213.11.0/24", 63) == ("10.213.11.253/30", "10.213.11.254/30")
    with pytest.raises(ValueError):
        netns.subnet_30("10.213.11.0/24", 64)


@needs_root
def test_a_veth_pair_carries_tcp_between_two_namespaces_and_close_removes_them() -> None:
    with netns.Namespaces() as spaces:
        a, b = spaces.add("ta"), spaces.add("tb")
        assert {a, b} <= set(netns.list_namespaces())
        addr_a, addr_b = netns.subnet_30("10.213.11.0/24", 63)
        netns.veth(a, "pbt0", addr_a, b, "pbt1", addr_b)
        server = netns.socket_in(a)
        client = netns.socket_in(b)
        with server, client:
            server.bind((addr_a.split("/")[0], 0))
            server.listen()
            client.settimeout(5)
            client.connect(server.getsockname())
            peer, (peer_host, _) = server.accept()
            with peer:
                assert peer_host == addr_b.split("/")[0]
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
        # The test process itself stayed in the root namespace, which holds neither address.
        root_addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        assert addr_a.split("/")[0] not in root_addresses
    assert not {a, b} & set(netns.list_namespaces())


@needs_root
def test_remove_stale_takes_a_dead_makers_namespaces_and_kills_what_runs_inside() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ns = netns.name("stale", pid=dead.pid)
    live = netns.name("alive")  # ours: must survive the cleanup
    netns.create(ns)
    netns.create(live)
    sleeper = subprocess.Popen(netns.exec_args(ns, ["sleep", "60"]))
    try:
        assert sleeper.pid in _wait_for_pids(ns)
        removed = netns.remove_stale()
        assert ns in removed
        assert live not in removed
        assert ns not in netns.list_namespaces()
        assert sleeper.wait(5) != 0
    finally:
        sleeper.kill()
        sleeper.wait()
        netns.delete(ns)
        netns.delete(live)
    assert live not in netns.list_namespaces()


def _wait_for_pids(ns: str) -> list[int]:
    for _ in range(100):
        found = netns.pids(ns)
        if found:
            return found
        os.sched_yield()
    return netns.pids(ns)
