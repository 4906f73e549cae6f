"""The protocol stacks a cell runs over: one record each, the one place a stack is described.

A stack is how the HTTP exchanges of every transport travel: ``h1`` straight to the aiohttp server in
cleartext (the classic 2010 case), ``h1-tls`` and ``h2-tls`` through a TLS-terminating reverse proxy (HAProxy)
in front of the same server, as production deployments run. Everything that differs by stack derives from
``STACKS`` (the shape of ``pushbench.transports``): the config's ``load.stack`` choices, whether the runner starts
the proxy, what the client offers by ALPN, the scheme of the origin, and what the analysis needs (label, chart
hatch), which the load generator writes into ``run.json`` (``analysis/`` never imports this package).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pushbench.registry import Registry


@dataclass(frozen=True)
class Stack:
    """One stack: how it is named, negotiated, served and drawn."""

    name: str  # the value of load.stack
    label: str  # in prose, legends and table blocks: "HTTP/2 + TLS 1.3"
    tls: bool  # TLS 1.3 to a terminating proxy in front of the app server
    http2: bool  # HTTP/2 negotiated by ALPN, one connection per client carrying all its requests
    alpn: tuple[str, ...]  # what the client offers and the proxy accepts (RFC 7301 protocol ids)
    scheme: str  # the origin's URL scheme (``https`` also changes the ``Origin`` a browser sends)
    hatch: str  # matplotlib hatch telling the stacks apart in bar charts
    client_module: str = ""  # the clients of every transport on this stack (run_feed, run_echo); "" = the transport's

    @property
    def proxied(self) -> bool:
        """A reverse proxy sits between clients and the app server (its CPU and memory are reported apart)."""
        return self.tls

    def describe(self) -> dict[str, Any]:
        """What results readers need of this stack (written into run.json)."""
        return {**asdict(self), "alpn": list(self.alpn), "proxied": self.proxied}


STACKS: Registry[Stack] = Registry("stack")
register = STACKS.register
choices = STACKS.choices
describe = STACKS.describe


H1 = register(Stack("h1", "HTTP/1.1", tls=False, http2=False, alpn=(), scheme="http", hatch=""))
H1_TLS = register(
    Stack("h1-tls", "HTTP/1.1 + TLS 1.3", tls=True, http2=False, alpn=("http/1.1",), scheme="https", hatch="//")
)
H2_TLS = register(
    Stack(
        "h2-tls",
        "HTTP/2 + TLS 1.3",
        tls=True,
        http2=True,
        alpn=("h2", "http/1.1"),
        scheme="https",
        hatch="xx",
        client_module="loadgen.h2client",
    )
)
DEFAULT_STACK = H1.name

# Certificate key types (``load.tls_key_type``): what the per-run server certificate is signed with.
TLS_KEY_TYPES = ("ecdsa-p256", "rsa2048")
