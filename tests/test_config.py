"""Config: defaults, overrides, cells, and clear errors for bad input (issue 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pushbench.config import ConfigError, LoadConfig, build_config, default_config, expand_cells, load_config, parse_set

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    assert str(info.value).startswith(str(tmp_path / "x.toml") + ": ")
    return info.value.problems


def test_shipped_configs_are_valid() -> None:
    for path in sorted((ROOT / "configs").glob("*.toml")):
        config = load_config(path)
        assert expand_cells(config), path


def test_defaults_and_overrides() -> None:
    config = build_config({"feed": {"rate_hz": 5}}, "t.toml", ["feed.rate_hz=20", "load.scenario=echo"])
    assert config.feed.rate_hz == 20.0 and isinstance(config.feed.rate_hz, float)
    assert config.load.scenario == "echo"
    assert config.server.host == "127.0.0.1" and config.server.longpoll_timeout_s == 30.0
    assert config.server.keepalive is True and config.server.ws_compress is False


def test_parse_set_takes_toml_values() -> None:
    assert parse_set('matrix.transport=["ws","sse"]') == (["matrix", "transport"], ["ws", "sse"])
    assert parse_set("server.keepalive=false") == (["server", "keepalive"], False)
    assert parse_set("load.header_profile=browser") == (["load", "header_profile"], "browser")
    assert parse_set('server.extra_headers={"Server" = "nginx"}')[1] == {"Server": "nginx"}


def test_matrix_is_a_cross_product_and_sweeps_a_union() -> None:
    config = build_config({"matrix": {"transport": ["ws", "sse"], "clients": [1, 10, 100]}}, "t.toml")
    cells = expand_cells(config)
    assert len(cells) == 6
    assert {(c.load.transport, c.load.clients) for c in cells} == {(t, n) for t in ("ws", "sse") for n in (1, 10, 100)}
    sweep = build_config(
        {"load": {"clients": 10}, "sweep": [{"transport": ["ws", "poll"]}, {"transport": ["ws"], "clients": [10, 20]}]},
        "t.toml",
    )
    cells = expand_cells(sweep)
    # ws/10 appears in both sweeps and is run once
    assert [(c.load.transport, c.load.clients) for c in cells] == [("ws", 10), ("poll", 10), ("ws", 20)]
    # Cells asked for with --set matrix.* replace the file's sweeps: one cell of configs/scale.toml, say.
    one = build_config(
        {"load": {"clients": 10}, "sweep": [{"transport": ["ws", "poll"]}]},
        "t.toml",
        ['matrix.transport=["sse"]', "matrix.clients=[10000]"],
    )
    assert [(c.load.transport, c.load.clients) for c in expand_cells(one)] == [("sse", 10000)]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[feed]
rate_hz = -3
payload_bytes = "big"
colour = "red"
[server]
port = 70000
keepalive = "yes"
[load]
transport = "carrier-pigeon"
clients = 0
[matrix]
rate_hz = [10, 0]
nonsense = [1]
[extra]
a = 1
""",
    )
    expected = [
        "feed.rate_hz: must be > 0, got -3.0",
        "feed.payload_bytes: must be an integer, got 'big' (str)",
        "feed.colour: unknown key",
        "server.port: must be between 0 and 65535, got 70000",
        "server.keepalive: must be true or false, got 'yes' (str)",
        "load.transport: must be one of poll, longpoll, sse, ws; got 'carrier-pigeon'",
        "load.clients: must be between 1 and 1000000, got 0",
        "matrix.rate_hz[1]: must be > 0, got 0.0",
        "matrix.nonsense: unknown key",
        "extra: unknown section",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in found), (fragment, found)
    assert len(found) == len(expected)


@pytest.mark.parametrize(
    ("text", "overrides", "fragment"),
    [
        ("[feed\nrate_hz = 1", (), "invalid TOML"),
        ("feed = 3", (), "feed: must be a table"),
        ("", ("feed.rate_hz=abc",), "feed.rate_hz: must be a number, got 'abc' (str) (from --set)"),
        ("", ("rate_hz=3",), "expected section.key=VALUE with exactly one dot"),
        ("", ("feed.rate_hz",), "expected section.key=VALUE"),
        ("", ("nosuch.key=1",), "unknown section 'nosuch'"),
        ("", ('feed.rate_hz=[1, "a"',), "VALUE is not a TOML value"),
        ("[load]\nheader_profile = 'custom'", (), "load.custom_headers: must list headers"),
        ("[server.extra_headers]\n'Bad Header' = 'x'", (), "not a valid HTTP token"),
        ("[server]\nallowed_origins = 'x'", (), "must be a list of strings"),
        ("[matrix]\ntransport = []", (), "must list at least one value"),
        ("[feed]\nburst = 1.5", (), "feed.burst: must be an integer, got 1.5 (float)"),
        ("[[sweep]]\nclients = [1]\n[matrix]\nclients = [2]", (), "use one or the other"),
    ],
)
def test_bad_input_names_the_key(tmp_path: Path, text: str, overrides: tuple[str, ...], fragment: str) -> None:
    found = problems(tmp_path, text, *overrides)
    assert any(fragment in p for p in found), found


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_server_command_exits_2_on_config_errors_and_starts_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, "[feed]\nrate_hz = -3\n[server]\nport = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "servers", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # never printed "serving ..."
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: feed.rate_hz: must be > 0, got -3.0",
        f"{bad}: server.port: must be between 0 and 65535, got -1",
    ]


def test_any_section_key_can_vary_as_section_dot_key() -> None:
    nested = build_config({"matrix": {"transport": ["ws"], "server": {"keepalive": [True, False]}}}, "t.toml")
    dotted = build_config({"matrix": {"transport": ["ws"], "server.keepalive": [True, False]}}, "t.toml")
    for config in (nested, dotted):
        cells = expand_cells(config)
        assert [c.server.keepalive for c in cells] == [True, False]
        assert cells[1].varied == {"transport": "ws", "server.keepalive": False}
    with pytest.raises(ConfigError, match=r"matrix\.server\.colour: unknown key"):
        build_config({"matrix": {"server.colour": [1]}}, "t.toml")


def test_sections_are_frozen_and_typed() -> None:
    config = default_config()
    assert isinstance(config.load, LoadConfig) and config.load.clients == 10
    with pytest.raises(AttributeError):
        config.load.clients = 3  # type: ignore[misc]
    assert config.to_dict()["server"]["allowed_origins"] == []  # plain data for run.json and --set


def test_executor_and_target_keys_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[load]\nexecutor = "dask"\nfault_kill_at_s = 1.0\n[target]\nurl = "http://10.0.0.9:8080"\n'
        '[matrix]\nexecutor = ["local", "dask"]\n',
    )
    assert any("load.dask_scheduler: must be set (tcp://HOST:PORT) when load.executor = 'dask'" in p for p in found)
    assert any("load.fault_kill_at_s: signals a server the load generator started" in p for p in found)
    assert any("matrix.executor" in p or "executor: cannot vary between cells" in p for p in found)
    bad_urls = problems(tmp_path, '[target]\nurl = "http://h:1/poll"\n[load]\ndask_scheduler = "10.0.0.5:8786"\n')
    assert any("is not a server root: write http://HOST:PORT" in p for p in bad_urls)
    assert any("is not a scheduler address: write tcp://HOST:PORT" in p for p in bad_urls)
    assert any(
        "an https target needs a TLS stack" in p for p in problems(tmp_path, '[target]\nurl = "https://h:443"\n')
    )
    shaped = problems(tmp_path, '[network]\nrtt_ms = 50\n[target]\nurl = "http://10.0.0.9:8080"\n')
    assert any("network: an emulated path joins two namespaces" in p for p in shaped)
    wildcard = problems(
        tmp_path, '[server]\nhost = "0.0.0.0"\n[load]\nexecutor = "dask"\ndask_scheduler = "tcp://h:1"\n'
    )
    assert any("server.host: with load.executor = 'dask'" in p for p in wildcard)
    ok = build_config({"target": {"url": "http://[::1]:8080"}, "load": {"executor": "local"}}, "x.toml")
    assert ok.target.url == "http://[::1]:8080" and expand_cells(ok)[0].target.url == "http://[::1]:8080"


def test_a_combination_only_some_cells_have_is_checked_in_each_cell(tmp_path: Path) -> None:
    """Keep-alive off cannot be measured over HTTP/2 (the proxy keeps h2 connections): refused in the base config,
    and in the cells of a matrix that meet it, named by their varied values; sweeps that avoid it pass."""
    why = "server.keepalive: false cannot be measured over load.stack 'h2-tls'"
    (base,) = problems(tmp_path, '[load]\nstack = "h2-tls"\n[server]\nkeepalive = false\n')
    assert base.startswith(why) and "(the cell" not in base
    (matrix,) = problems(
        tmp_path, '[matrix]\ntransport = ["poll", "ws"]\nstack = ["h1", "h2-tls"]\nkeepalive = [true, false]\n'
    )
    assert matrix.startswith(why)
    assert matrix.endswith("(the cell transport = 'poll', stack = 'h2-tls', keepalive = false, and 1 more)")
    (tls,) = problems(tmp_path, '[target]\nurl = "http://10.0.0.9:8080"\n[matrix]\nstack = ["h1", "h1-tls"]\n')
    assert "an https target needs a TLS stack" in tls and tls.endswith("(the cell stack = 'h1-tls')")
    sweeps = '[[sweep]]\nstack = ["h2-tls"]\n\n[[sweep]]\nstack = ["h1", "h1-tls"]\nkeepalive = [true, false]\n'
    assert len(expand_cells(load_config(write(tmp_path, sweeps)))) == 5
