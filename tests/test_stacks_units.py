"""The stacks' pure parts, by hand: the HAProxy config, its timeouts, the layer split, HTTP/2 header lists."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadgen.headers import h2_request_headers
from loadgen.layers import TLS13_RECORD_OVERHEAD_BYTES, layer_columns, split_layers, tls_record_overhead_bytes
from loadgen.proxy import haproxy_config, proxy_maxconn, proxy_timeouts
from loadgen.results import proxy_columns
from loadgen.tls import CertificateError, CertStore, check_server_pem, make_certificates
from pushbench.config import ConfigError, LoadConfig, ServerConfig, build_config
from pushbench.stacks import STACKS

SERVER = ServerConfig(longpoll_timeout_s=30.0, sse_heartbeat_s=15.0, max_connections=100)


def test_stack_registry_names_and_flags() -> None:
    assert list(STACKS) == ["h1", "h1-tls", "h2-tls"]
    assert not STACKS["h1"].tls and STACKS["h1-tls"].tls and STACKS["h2-tls"].http2
    assert STACKS["h2-tls"].alpn == ("h2", "http/1.1") and STACKS["h1-tls"].alpn == ("http/1.1",)


def test_bad_stack_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"x.toml: load.stack: must be one of h1, h1-tls, h2-tls; got 'h3'"):
        build_config({"load": {"stack": "h3"}}, "x.toml")
    with pytest.raises(ConfigError, match="tls_cert_file and tls_ca_file together"):
        build_config({"load": {"tls_cert_file": "x.pem"}}, "x.toml")


def test_proxy_timeouts_outlast_held_requests() -> None:
    t = proxy_timeouts(SERVER)
    assert t.server_s == 35.0  # longpoll 30 s + 5 s: a held long poll is never cut by the proxy
    assert t.tunnel_s == 3600
    assert t.http_request_s == 10.0  # server.request_header_timeout_s: the app server's slowloris limit
    assert t.keep_alive_s == t.client_s == 75.0  # server.idle_timeout_s
    short = proxy_timeouts(replace(SERVER, request_header_timeout_s=3.0, idle_timeout_s=5.0))
    assert (short.http_request_s, short.keep_alive_s, short.client_s) == (3.0, 5.0, 35.0)  # held polls not cut
    assert proxy_timeouts(replace(SERVER, sse_heartbeat_s=40.0)).server_s == 80.0


def test_haproxy_config_for_each_stack() -> None:
    t = proxy_timeouts(SERVER)
    h2 = haproxy_config(
        stack=STACKS["h2-tls"], bind="fd@5", server_pem=Path("/t/s.pem"), backend_host="127.0.0.1",
        backend_port=8080, timeouts=t, max_connections=100,
    )  # fmt: skip
    assert "    bind fd@5 ssl crt /t/s.pem alpn h2,http/1.1\n" in h2
    assert "    server app 127.0.0.1:8080\n" in h2
    assert "    timeout http-request 10000ms\n" in h2 and "    timeout tunnel 3600000ms\n" in h2
    assert "ssl-min-ver TLSv1.3" in h2 and "    maxconn 100\n" in h2
    assert "h2-workaround-bogus-websocket-clients" not in h2  # RFC 8441 stays advertised
    h1 = haproxy_config(
        stack=STACKS["h1-tls"], bind="127.0.0.1:443", server_pem=Path("/t/s.pem"), backend_host="::1",
        backend_port=81, timeouts=t, max_connections=5,
    )  # fmt: skip
    assert "alpn http/1.1\n" in h1 and "server app [::1]:81\n" in h1
    assert "httpclose" not in h1
    closing = haproxy_config(
        stack=STACKS["h1-tls"], bind="fd@3", server_pem=Path("/t/s.pem"), backend_host="127.0.0.1",
        backend_port=81, timeouts=t, max_connections=5, keepalive=False,
    )  # fmt: skip
    assert "    option httpclose\n" in closing
    no_8441 = haproxy_config(
        stack=STACKS["h2-tls"], bind="fd@3", server_pem=Path("/t/s.pem"), backend_host="127.0.0.1",
        backend_port=81, timeouts=t, max_connections=5, extended_connect=False,
    )  # fmt: skip
    assert "\n    h2-workaround-bogus-websocket-clients\n" in no_8441


def test_proxy_maxconn_fits_the_descriptor_limit() -> None:
    assert proxy_maxconn(50_000, 20_000) == 9_968  # two descriptors per proxied connection, 64 spare
    assert proxy_maxconn(100, 20_000) == 100


def test_layer_split_by_hand() -> None:
    # 3 WebSocket events of 95-byte payload over TLS 1.3: 2-byte frame header and 22 bytes of record each.
    s = split_layers(tcp=3 * (95 + 2 + 22), plain=3 * (95 + 2), payload=3 * 95)
    assert (s.http, s.tls) == (6, 66)
    assert s.payload + s.http + s.tls + s.tls_handshake == s.tcp
    # A connection opened inside: 1800 handshake bytes are set apart from the records.
    s = split_layers(tcp=2000, plain=150, payload=100, tls_handshake=1800)
    assert (s.http, s.tls) == (50, 50)
    assert tls_record_overhead_bytes(3) == 66 == 3 * TLS13_RECORD_OVERHEAD_BYTES


def test_layer_columns_sum_records() -> None:
    class Rec:
        def __init__(self, tcp: int, plain: int, payload: int, hs: int) -> None:
            self.bytes_down_tcp, self.bytes_down_plain, self.bytes_down_payload = tcp, plain, payload
            self.bytes_down_tls_handshake = hs
            self.bytes_up_tcp = self.bytes_up_plain = self.bytes_up_payload = self.bytes_up_tls_handshake = 0

    cols = layer_columns([Rec(119, 97, 95, 0), Rec(1500, 100, 95, 1300)])
    assert cols["bytes_down_http"] == 2 + 5
    assert cols["bytes_down_tls"] == 22 + 100
    assert cols["bytes_tls_handshake"] == 1300 == cols["bytes_down_tls_handshake"]


def test_proxy_columns_add_the_proxy_to_the_server_total() -> None:
    cols = proxy_columns(0.5, 30_000_000, (1.0, 10_000_000), (1.25, 12_000_000))
    assert cols == {
        "proxy_cpu_s": 0.25,
        "proxy_rss_bytes": 12_000_000,
        "server_total_cpu_s": 0.75,
        "server_total_rss_bytes": 42_000_000,
    }
    assert proxy_columns(0.5, 30, None, None)["server_total_cpu_s"] == 0.5  # h1: no proxy
    assert proxy_columns(0.5, 30, (1.0, 1), None)["server_total_cpu_s"] is None  # proxy gone: unknown, not less


def test_h2_request_headers_as_a_browser_sends_them() -> None:
    h1 = [("Host", "127.0.0.1:8443"), ("Connection", "keep-alive"), ("User-Agent", "X"), ("Accept", "*/*")]
    assert h2_request_headers("GET", "https", "/poll?after=3", h1) == [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "127.0.0.1:8443"),
        (":path", "/poll?after=3"),
        ("user-agent", "X"),
        ("accept", "*/*"),
    ]


def test_certificates_per_key_type(tmp_path: Path) -> None:
    ec = make_certificates(tmp_path / "ec", "ecdsa-p256")
    rsa = make_certificates(tmp_path / "rsa", "rsa2048")
    check_server_pem(ec.server_pem)
    assert b"BEGIN EC PRIVATE KEY" in ec.server_pem.read_bytes() or b"BEGIN PRIVATE KEY" in ec.server_pem.read_bytes()
    assert rsa.server_pem.stat().st_size > ec.server_pem.stat().st_size  # RSA keys and certificates are larger
    assert ec.server_pem.stat().st_mode & 0o077 == 0  # the private key is readable by this user only
    with pytest.raises(CertificateError, match="key type"):
        make_certificates(tmp_path / "x", "dsa")


def test_unusable_certificate_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    store = CertStore()
    try:
        load = LoadConfig(tls_cert_file=str(bad), tls_ca_file=str(bad))
        with pytest.raises(CertificateError, match=rf"{bad}: not a usable certificate and private key"):
            store.for_load(load)
        made = store.for_load(LoadConfig())
        assert made is store.for_load(LoadConfig(stack="h2-tls"))  # one certificate per key type and run
        assert made is not store.for_load(LoadConfig(tls_key_type="rsa2048"))
    finally:
        store.close()
    assert not store.folder.exists()
