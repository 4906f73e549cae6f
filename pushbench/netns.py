"""Linux network namespaces for pushbench: make them, wire them with veth pairs, run things in them, remove them.

Every namespace pushbench makes is named ``pbns-<pid>-<role>``, ``<pid>`` being the process that made it. A
namespace whose ``<pid>`` is no longer alive is *stale*: only those are removed by ``remove_stale()`` (other
pushbench processes may be running next to this one). Addresses live only inside the namespaces, on veth pairs
between them; nothing is added to the root namespace except the namespaces' names under ``/run/netns``.

The usual shape::

    with netns.Namespaces() as spaces:          # removes every namespace it made on exit (also on errors)
        srv, cli = spaces.add("srv"), spaces.add("cli")
        a, b = netns.subnet_30("10.213.11.0/24", 0)            # ("10.213.11.1/30", "10.213.11.2/30")
        netns.veth(srv, "pb0", a, cli, "pb0", b)
        proc = subprocess.Popen(netns.exec_args(srv, ["python", "-m", "servers", ...]))
        netns.enter(cli)                          # in a fresh child process, before it opens sockets
        sock = netns.socket_in(cli)               # a socket living in ``cli``, usable from this process

Python 3.11 has no ``os.setns``: ``enter``/``socket_in`` call setns(2) through ctypes. setns changes the calling
*thread* only; ``socket_in`` therefore does it in a short-lived thread, and a socket keeps the namespace it was
made in for its whole life.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

PREFIX = "pbns"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TOOLS = ("ip", "tc", "iptables")
_NAME = re.compile(rf"^{PREFIX}-(\d+)-([A-Za-z0-9_.]+)$")
_MAX_IFNAME = 15


class NetnsError(Exception):
    """A namespace operation failed; the message names the command and what it printed."""


def name(role: str, pid: int | None = None) -> str:
    """``pbns-<pid>-<role>`` for this process (or ``pid``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", role):
        raise ValueError(f"namespace role {role!r}: use letters, digits, '_' or '.'")
    return f"{PREFIX}-{os.getpid() if pid is None else pid}-{role}"


def owner_pid(ns: str) -> int | None:
    """The pid in a pushbench namespace name, or None for a name that is not pushbench's."""
    match = _NAME.match(ns)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(names: Sequence[str], alive: Callable[[int], bool] = pid_alive) -> list[str]:
    """The pushbench namespaces among ``names`` whose maker is no longer alive (others' names are ignored)."""
    out = []
    for ns in names:
        pid = owner_pid(ns)
        if pid is not None and not alive(pid):
            out.append(ns)
    return out


def subnet_30(pool: str, index: int) -> tuple[str, str]:
    """The two host addresses (with ``/30``) of the ``index``-th /30 of ``pool``: ("10.213.11.1/30", ".2/30")."""
    net = ipaddress.IPv4Network(pool)
    subnets = list(net.subnets(new_prefix=30))
    if not 0 <= index < len(subnets):
        raise ValueError(f"{pool} has {len(subnets)} /30 subnets; index {index} is out of range")
    a, b = list(subnets[index].hosts())
    return f"{a}/30", f"{b}/30"


def missing_requirements() -> list[str]:
    """What this machine lacks to make namespaces: root, and the ``ip``, ``tc`` and ``iptables`` commands."""
    problems = []
    if os.geteuid() != 0:
        problems.append("network namespaces need root (run as root or with sudo)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"network namespaces need {', '.join(missing)} (Debian: apt-get install iproute2 iptables)")
    return problems


def _cmd(argv: Sequence[str], check: bool = True, timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip().replace("\n", " | ")
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {said}")
    return done


def list_namespaces() -> list[str]:
    """Every named network namespace on the machine (``ip netns list``)."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(os.listdir(NETNS_DIR))
    return []


def exec_args(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``ns`` (``ip netns exec`` execs it: the process id stays the command's own)."""
    return ["ip", "netns", "exec", ns, *argv]


def run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command inside ``ns``; NetnsError naming the command when it fails."""
    return _cmd(exec_args(ns, argv), check=check)


def pids(ns: str) -> list[int]:
    """Processes living in ``ns``."""
    done = _cmd(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def create(ns: str) -> None:
    """A new namespace with its loopback up."""
    _cmd(["ip", "netns", "add", ns])
    try:
        _cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
    except NetnsError:
        delete(ns)
        raise


def delete(ns: str, grace_s: float = 1.0) -> None:
    """Kill whatever still runs inside ``ns`` (SIGTERM, then SIGKILL after ``grace_s``) and remove it."""
    if not (NETNS_DIR / ns).exists():
        return
    inside = pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while inside and time.monotonic() < deadline:
            inside = [pid for pid in inside if not exited(pid)]
            time.sleep(0.02)
        if not inside:
            break
    _cmd(["ip", "netns", "delete", ns], check=False)
    if (NETNS_DIR / ns).exists():
        raise NetnsError(f"ip netns delete {ns}: namespace still there")


def exited(pid: int) -> bool:
    """The process is gone, or a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_stale() -> list[str]:
    """Remove the pushbench namespaces whose maker has died (and what still runs in them); their names."""
    removed = []
    for ns in stale(list_namespaces()):
        with contextlib.suppress(NetnsError):
            delete(ns)
            removed.append(ns)
    return removed


def veth(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str, mtu: int = 1500) -> None:
    """A veth pair from ``ns_a`` (interface ``if_a``, address ``addr_a`` like ``10.213.11.1/30``) to ``ns_b``.

    Both ends are up. The pair is made inside ``ns_a`` so its names never meet the root namespace's.
    """
    for ifname in (if_a, if_b):
        if len(ifname) > _MAX_IFNAME:
            raise ValueError(f"interface name {ifname!r} is longer than {_MAX_IFNAME} characters")
    _cmd(["ip", "-n", ns_a, "link", "add", if_a, "mtu", str(mtu), "type", "veth", "peer", "name", if_b, "netns", ns_b])
    for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
        _cmd(["ip", "-n", ns, "addr", "add", addr, "dev", ifname])
        _cmd(["ip", "-n", ns, "link", "set", ifname, "up"])


def route(ns: str, to: str, via: str) -> None:
    """A route inside ``ns`` (``to`` = ``default`` or a prefix; ``via`` a gateway address without /len)."""
    _cmd(["ip", "-n", ns, "route", "add", to, "via", via])


def sysctl(ns: str, key: str, value: str) -> None:
    run(ns, "sysctl", "-q", "-w", f"{key}={value}")


_libc = ctypes.CDLL(None, use_errno=True)


def enter(ns: str) -> None:
    """Move the calling thread into ``ns`` for good (a fresh worker process does this before opening sockets)."""
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def socket_in(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that lives in ``ns`` (made in a short-lived thread that entered it); this process is unchanged."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            enter(ns)
            made.append(socket.socket(family, kind, proto))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=make, name=f"socket-in-{ns}")
    thread.start()
    thread.join()
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


class Namespaces:
    """The namespaces one process made: ``add(role)`` makes ``pbns-<pid>-<role>``; ``close()`` removes them all.

    A context manager; also removed at interpreter exit if ``close()`` was never reached (SIGKILL is the one
    case that leaves them: the next ``remove_stale()`` takes them).
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        atexit.register(self.close)

    def add(self, role: str) -> str:
        ns = name(role)
        create(ns)
        self.names.append(ns)
        return ns

    def close(self) -> None:
        errors = []
        while self.names:
            ns = self.names.pop()
            try:
                delete(ns)
            except NetnsError as exc:
                errors.append(str(exc))
        atexit.unregister(self.close)
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
