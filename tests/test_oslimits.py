"""Operating-system limits: RLIMIT_NOFILE raised by the process itself (a child process, so the test's own stays);
the accept queue's overflows counted by the kernel and named by the cell's ``stopped_by``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loadgen.summary import LimitEvidence, server_deltas, stopped_by
from pushbench.oslimits import listen_backlog, listen_overflows
from tests.conftest import ServerProcess, get_stats

# Two pairs from a real /proc/net/netstat, shortened (TcpExt has ~120 counters, IpExt follows).
NETSTAT = """TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeouts
TcpExt: 0 0 17 19 4
IpExt: InNoRoutes InTruncatedPkts ListenOverflows
IpExt: 0 0 99
"""


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    code = (
        "import resource; from pushbench.oslimits import raise_nofile_limit\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "assert raise_nofile_limit() == (hard, hard)\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_listen_overflows_is_read_from_the_tcpext_pair_of_lines() -> None:
    assert listen_overflows(NETSTAT) == 17  # not IpExt's column of the same name (made up, to tell them apart)
    assert listen_overflows(NETSTAT.replace("ListenOverflows ListenDrops", "ListenDrops ListenOverflows")) == 19
    assert listen_overflows("TcpExt: TCPTimeouts\nTcpExt: 4\n") is None
    assert listen_overflows("") is None


def test_listen_backlog_is_capped_by_somaxconn(tmp_path: Path) -> None:
    cap = tmp_path / "somaxconn"
    cap.write_text("4096\n")
    assert listen_backlog(100_000, str(cap)) == 4096
    assert listen_backlog(64, str(cap)) == 64
    assert listen_backlog(64, str(tmp_path / "absent")) == 64  # unknown cap: what was asked for


def test_a_full_accept_queue_is_counted_by_the_server_and_named_by_stopped_by(
    server_process: Callable[..., ServerProcess],
) -> None:
    """A real overflow: the server listens with a backlog of 1 (a queue of 2) and is stopped (SIGSTOP), so it
    accepts nothing while 8 clients connect; the kernel drops the SYNs that find the queue full and counts them in
    the namespace's ListenOverflows, which /stats reports against its value when the server started listening."""
    server = server_process("--set", "server.listen_backlog=1", "--set", "feed.rate_hz=1")
    server.proc.send_signal(signal.SIGSTOP)
    clients = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            clients.append(s)
        time.sleep(0.3)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    for s in clients:
        s.close()
    end = get_stats(server.url)
    deltas = server_deltas(None, end, ("deliveries", "ws"))
    assert end["listen_backlog"] == 1 and deltas.listen_backlog == 1
    assert deltas.listen_overflows is not None and deltas.listen_overflows >= 8 - 2, end
    line = stopped_by(LimitEvidence(listen_overflows=deltas.listen_overflows, listen_backlog=deltas.listen_backlog))
    assert line == (
        "listen queue of 1 (server.listen_backlog, net.core.somaxconn): "
        f"{deltas.listen_overflows:,} connection attempts dropped on a full accept queue (ListenOverflows, the "
        "server's network namespace)"
    )
