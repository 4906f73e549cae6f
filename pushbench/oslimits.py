"""Operating-system limits a big cell runs into, raised where a process may raise them itself."""

from __future__ import annotations

import itertools
import resource


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns (soft, hard) afterwards.

    Each client connection holds two descriptors (asyncio's and the duplicate its kernel counters are read
    through) and each server connection one, so thousands of clients need more than the usual soft 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, hard
        soft = hard
    return soft, hard


NETSTAT = "/proc/net/netstat"


def listen_overflows(netstat: str) -> int | None:
    """``TcpExt: ListenOverflows`` from the text of /proc/net/netstat: connection attempts the kernel dropped because
    a listening socket's accept queue was full. None when the text has no such counter.

    The file holds pairs of lines, a header of names and a line of values, each starting with its group
    (``TcpExt:``). The counter is the network namespace's, summed over every listening socket in it.
    """
    lines = netstat.splitlines()
    for names, values in itertools.pairwise(lines):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            if "ListenOverflows" in table:
                return int(table["ListenOverflows"])
    return None


def read_listen_overflows() -> int | None:
    """This network namespace's ``ListenOverflows`` now (None where /proc/net/netstat cannot be read)."""
    try:
        with open(NETSTAT) as f:
            return listen_overflows(f.read())
    except OSError:
        return None


def listen_backlog(requested: int, somaxconn_path: str = "/proc/sys/net/core/somaxconn") -> int:
    """The accept queue a ``listen(requested)`` gets: the kernel caps it at ``net.core.somaxconn``."""
    try:
        with open(somaxconn_path) as f:
            return min(requested, int(f.read()))
    except (OSError, ValueError):
        return requested
