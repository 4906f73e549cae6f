"""The analysis of stacks, by hand: the article's header count, old runs read as h1, ratios per stack."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.classic import ClassicRow, article_header_sizes, polling_to_websocket, reference_case
from analysis.stacks import Stacks, from_run_json, with_stack_columns
from loadgen.headers import CLASSIC2010_PATH, header_block_bytes, make_profile
from pushbench import stacks as registry
from pushbench.config import LoadConfig


def test_the_871_bytes_are_characters_without_line_ends() -> None:
    article = json.loads(Path(CLASSIC2010_PATH).read_text())
    # Request line 40 + 10 header lines 652 = 692; status line 15 + 5 header lines 164 = 179: 871 characters.
    # On the wire: 17 lines × CRLF (34) and two blank lines (4): 909 bytes.
    assert article_header_sizes(article) == (871, 909)
    text = reference_case(article, pd.DataFrame({"transport": [], "header_profile": []}), Stacks())
    assert "871" in text and "909" in text and "17 header lines" in text


def test_classic2010_profile_sends_the_articles_request_headers() -> None:
    profile = make_profile(LoadConfig(header_profile="classic2010"))
    headers = profile.fetch_headers("127.0.0.1:1")
    assert headers[0] == ("Host", "localhost:8080") and len(headers) == 10
    assert header_block_bytes(headers) == 652 + 2 * 10  # the article's header lines, each ended by CRLF
    ws = dict(profile.websocket_headers("127.0.0.1:1", "k" * 24, offer_deflate=False))
    assert ws["Connection"] == "Upgrade" and "Keep-Alive" not in ws  # a handshake, not a kept-alive poll


def test_runs_without_stack_columns_read_as_cleartext_h1() -> None:
    old = pd.DataFrame({"bytes_down_overhead": [50.0], "bytes_up_overhead": [30.0]})
    out = with_stack_columns(old)
    assert out["stack"].tolist() == ["h1"]
    assert (out["bytes_down_http"].tolist(), out["bytes_up_http"].tolist()) == ([50.0], [30.0])
    assert out["bytes_down_tls"].tolist() == [0.0] and out["bytes_tls_handshake"].tolist() == [0.0]
    new = pd.DataFrame(
        {"stack": ["h2-tls"], "bytes_down_overhead": [80.0], "bytes_up_overhead": [30.0], "bytes_down_http": ["58"],
         "bytes_up_http": ["8"], "bytes_down_tls": ["22"], "bytes_up_tls": ["22"], "proxy_cpu_s": [""]}
    )  # fmt: skip
    out = with_stack_columns(new)
    assert out["bytes_down_http"].tolist() == [58.0] and out["bytes_down_tls"].tolist() == [22.0]
    assert out["proxy_cpu_s"].isna().all()


def test_stack_table_matches_the_registry() -> None:
    described = from_run_json(registry.describe())
    assert Stacks().by_name == described.by_name  # the built-in copy (older runs) agrees with the registry
    assert described.order(["h2-tls", "h1", "x"]) == ["h1", "h2-tls", "x"]


def test_polling_to_websocket_ratio_per_stack() -> None:
    def row(transport: str, stack: str, overhead: float) -> ClassicRow:
        return ClassicRow(
            transport, transport, "browser", "c", 1.0, 1.0, 100.0, overhead, 0.0, (), (), None, "", stack, stack
        )

    rows = [row("poll", "h1", 900.0), row("ws", "h1", 4.0), row("poll", "h2-tls", 120.0), row("ws", "h2-tls", 35.0)]
    assert polling_to_websocket(rows) == [("h1", "browser", 225.0), ("h2-tls", "browser", 120.0 / 35.0)]
