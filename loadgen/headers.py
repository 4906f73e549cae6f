"""Header profiles: exactly which request header lines every client request and WebSocket handshake carries.

- ``minimal``: what the pushbench client sends by itself, which is what HTTP/1.1 requires and nothing more:
  ``Host`` (plus ``Content-Type``/``Content-Length`` on a POST, and the RFC 6455 handshake headers).
- ``browser``: the headers real Chromium sent on a same-origin ``fetch()`` and WebSocket handshake, recorded
  into ``configs/browser_profile.json`` by ``make browser-profile``, plus a ``Cookie`` of ``load.cookie_bytes``.
- ``custom``: ``Host`` plus ``load.custom_headers``.
- ``classic2010``: the request headers of the polling example in Lubbers & Greco (2010), the case behind the
  classic "871 bytes per poll" (Firefox 3.5, its Cookie, Referer, Keep-Alive ...), exactly as printed, from
  ``configs/classic2010_headers.json`` (which also holds the article's response headers, for
  ``server.extra_headers``, and its request and status lines, recorded in run.json for the report).

Header size is the heart of the comparison, so ``header_block_bytes`` says exactly what a profile costs.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushbench.config import LoadConfig

ROOT = Path(__file__).resolve().parent.parent
BROWSER_PROFILE_PATH = ROOT / "configs" / "browser_profile.json"
CLASSIC2010_PATH = ROOT / "configs" / "classic2010_headers.json"
# Connection-specific fields a WebSocket handshake replaces with its own (Connection: Upgrade).
_WS_REPLACED = ("connection", "keep-alive")
# Set by the handshake itself; a browser profile's values for these are replaced (a fresh key per connection).
WS_LIBRARY_HEADERS = ("upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions")

Headers = list[tuple[str, str]]


class ProfileError(Exception):
    """The browser profile file is missing or malformed; the message names the file and what to do."""


@dataclass(frozen=True)
class HeaderProfile:
    """Request headers with ``{host}`` and ``{origin}`` placeholders, for fetches and WebSocket handshakes."""

    name: str
    fetch: Headers
    websocket: Headers
    source: str
    cookie_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def fetch_headers(self, host: str, scheme: str = "http") -> Headers:
        """The header lines of a GET request to ``host`` (``HOST:PORT``) on a ``scheme`` origin."""
        return self._with_cookie(_fill(self.fetch, host, scheme))

    def post_headers(self, host: str, content_type: str, content_length: int, scheme: str = "http") -> Headers:
        """A POST (the echo scenario): the fetch headers, ``Origin`` as browsers send it, and the body's headers."""
        headers = self.fetch_headers(host, scheme)
        if self.name == "browser" and not _has(headers, "origin"):
            headers.insert(1, ("Origin", f"{scheme}://{host}"))
        return [*headers, ("Content-Type", content_type), ("Content-Length", str(content_length))]

    def websocket_headers(self, host: str, key: str, offer_deflate: bool, scheme: str = "http") -> Headers:
        """The handshake header lines: the profile's, with the library's RFC 6455 headers set for this connection."""
        out: Headers = []
        for name, value in _fill(self.websocket, host, scheme):
            lower = name.lower()
            if lower == "sec-websocket-key":
                value = key
            elif lower == "sec-websocket-extensions" and not offer_deflate and self.name != "browser":
                continue
            out.append((name, value))
        required = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if offer_deflate:
            required.append(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"))
        out.extend((n, v) for n, v in required if not _has(out, n.lower()))
        return self._with_cookie(out)

    def _with_cookie(self, headers: Headers) -> Headers:
        if self.cookie_bytes > 0 and not _has(headers, "cookie"):
            headers.append(("Cookie", cookie_value(self.cookie_bytes)))
        return headers


def _has(headers: Sequence[tuple[str, str]], lower_name: str) -> bool:
    return any(n.lower() == lower_name for n, _ in headers)


def _fill(headers: Sequence[tuple[str, str]], host: str, scheme: str = "http") -> Headers:
    origin = f"{scheme}://{host}"
    return [(n, v.replace("{host}", host).replace("{origin}", origin)) for n, v in headers]


def cookie_value(size: int) -> str:
    """A ``Cookie`` header value of exactly ``size`` characters, shaped like a session cookie."""
    if size <= 0:
        return ""
    if size < 4:
        return "s" * size
    body = base64.b64encode(bytes(range(256)) * (size // 256 + 1)).decode()
    return ("sid=" + body)[:size]


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """The header lines as sent: ``Name: value\\r\\n`` each (no request line, no final blank line)."""
    return b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in headers)


# Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2); ``Host`` becomes ``:authority``.
H2_DROPPED_HEADERS = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


def h2_request_headers(
    method: str, scheme: str, path: str, headers: Sequence[tuple[str, str]], authority: str | None = None
) -> Headers:
    """An HTTP/1.1 profile's request as a browser sends it over HTTP/2: pseudo-headers first (``:method``,
    ``:scheme``, ``:authority``, ``:path``), then the other fields with lower-case names, without ``Host`` and the
    connection-specific fields. ``authority`` defaults to the profile's ``Host`` value."""
    host = authority or next((v for n, v in headers if n.lower() == "host"), "")
    pseudo = [(":method", method), (":scheme", scheme), (":authority", host), (":path", path)]
    return pseudo + [(n.lower(), v) for n, v in headers if n.lower() not in H2_DROPPED_HEADERS]


def header_block_bytes(headers: Sequence[tuple[str, str]]) -> int:
    """What the profile costs on every request: the bytes of its header lines."""
    return len(header_block(headers))


def ws_key(rng_bytes: bytes) -> str:
    """A ``Sec-WebSocket-Key``: 16 bytes base64 (24 characters, the same size for every connection)."""
    if len(rng_bytes) != 16:
        raise ValueError("a WebSocket key is 16 random bytes")
    return base64.b64encode(rng_bytes).decode()


def _header_list(value: Any, where: str, path: Path) -> Headers:
    if not isinstance(value, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in value
    ):
        raise ProfileError(f"{path}: {where}: must be a list of [name, value] string pairs")
    for name, val in value:
        if "\r" in val or "\n" in val or "\r" in name or "\n" in name or ":" in name:
            raise ProfileError(f"{path}: {where}: header {name!r} contains CR, LF or ':'")
    return [(n, v) for n, v in value]


def load_browser_profile(path: str | os.PathLike[str] = BROWSER_PROFILE_PATH) -> dict[str, Any]:
    """Read and check the recorded browser profile; ProfileError naming the file when missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(
            f"{path}: no such file; header_profile = 'browser' needs it: run `make browser-profile` "
            "to record the headers real Chromium sends"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read the browser profile: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: must hold a JSON object")
    for section in ("fetch", "websocket"):
        table = data.get(section)
        if not isinstance(table, dict) or "request_headers" not in table:
            raise ProfileError(f"{path}: {section}.request_headers: missing")
        _header_list(table["request_headers"], f"{section}.request_headers", path)
    return data


def load_classic2010(path: Path = CLASSIC2010_PATH) -> dict[str, Any]:
    """The article's headers (request line and headers, status line and response headers)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read the classic2010 headers: {exc}") from None
    missing = [k for k in ("request_line", "request_headers", "status_line", "response_headers") if k not in data]
    if missing:
        raise ProfileError(f"{path}: {missing[0]}: missing")
    return dict(data)


def resolve_profile_path(path: str | os.PathLike[str]) -> Path:
    """A relative path is taken from the current folder when it exists there, else from the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return ROOT / p


def make_profile(load: LoadConfig, browser_profile_path: str | os.PathLike[str] | None = None) -> HeaderProfile:
    """The header profile of one cell's ``[load]`` section."""
    name = load.header_profile
    host: Headers = [("Host", "{host}")]
    if name == "minimal":
        return HeaderProfile("minimal", host, list(host), source="pushbench client (Host only)")
    if name == "custom":
        custom = [(n, v) for n, v in load.custom_headers.items()]
        base = [] if _has(custom, "host") else list(host)
        return HeaderProfile("custom", base + custom, base + custom, source="load.custom_headers")
    if name == "classic2010":
        article = load_classic2010()
        fetch = _header_list(article["request_headers"], "request_headers", CLASSIC2010_PATH)
        ws = [h for h in fetch if h[0].lower() not in _WS_REPLACED]
        return HeaderProfile("classic2010", fetch, ws, source=str(CLASSIC2010_PATH), details={"article": article})
    if name == "browser":
        path = resolve_profile_path(browser_profile_path or load.browser_profile_file or BROWSER_PROFILE_PATH)
        data = load_browser_profile(path)
        fetch = _header_list(data["fetch"]["request_headers"], "fetch.request_headers", path)
        ws = _header_list(data["websocket"]["request_headers"], "websocket.request_headers", path)
        fetch = [h for h in fetch if h[0].lower() != "cookie"]
        ws = [h for h in ws if h[0].lower() != "cookie"]
        if not _has(fetch, "host"):
            fetch.insert(0, ("Host", "{host}"))
        if not _has(ws, "host"):
            ws.insert(0, ("Host", "{host}"))
        details: dict[str, Any] = {k: data[k] for k in ("browser", "recorded_at") if k in data}
        return HeaderProfile("browser", fetch, ws, source=str(path), cookie_bytes=load.cookie_bytes, details=details)
    raise ProfileError(f"load.header_profile: unknown profile {name!r}")
