"""One schema for every pushbench config: parsing, defaults, validation, ``--set`` overrides.

A config is a TOML file with the sections below. ``load_config`` reads the file, applies
``--set section.key=VALUE`` overrides, fills defaults, and validates the whole thing at once,
raising ``ConfigError`` with every problem (file, key, what is wrong) so a user fixes them in one go.

``[matrix]`` and ``[[sweep]]`` tables list values to vary; their keys are the plain key names of
``[feed]``, ``[server]`` and ``[load]`` (``rate_hz``, ``transport``, ``clients`` ...), which are unique
across those sections. ``expand_cells`` turns them into one resolved config per cell.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from pushbench import stacks, transports

SCENARIOS = ("feed", "echo")
HEADER_PROFILES = ("minimal", "browser", "custom", "classic2010")
EXECUTORS = ("local", "dask")

Check = Callable[[Any], str | None]
# A fixed tuple, or a function giving the current names of a registry (transports registered later count).
Choices = tuple[str, ...] | Callable[[], tuple[str, ...]]


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, an optional extra check, and what it means."""

    kind: str  # "int", "float", "bool", "str", "str_list", "str_table"
    default: Any
    doc: str
    check: Check | None = None
    choices: Choices = ()

    def allowed(self) -> tuple[str, ...]:
        """The values a ``str`` key accepts (empty: any)."""
        return self.choices() if callable(self.choices) else self.choices


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def _at_least(n: int) -> Check:
    return lambda v: None if v >= n else f"must be >= {n}, got {v!r}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v!r}"


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_ORIGIN = re.compile(r"^https?://[^/\s?#@]+$", re.IGNORECASE)


def _origin_list(v: Sequence[str]) -> str | None:
    for origin in v:
        if origin != "*" and not _ORIGIN.match(origin.rstrip("/")):
            return f"{origin!r} is not an origin: write scheme://host[:port], e.g. 'http://localhost:8080', or '*'"
    return None


def _header_table(v: Mapping[str, str]) -> str | None:
    for name, value in v.items():
        if not _HEADER_NAME.match(name):
            return f"header name {name!r} is not a valid HTTP token"
        if "\r" in value or "\n" in value:
            return f"header {name!r} value must not contain CR or LF"
    return None


def _dask_address(v: str) -> str | None:
    if v and not re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", v):
        return f"{v!r} is not a scheduler address: write tcp://HOST:PORT, e.g. 'tcp://10.0.0.5:8786'"
    return None


def _target_url(v: str) -> str | None:
    if not v:
        return None
    if not re.fullmatch(r"https?://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):\d{1,5}/?", v):
        return f"{v!r} is not a server root: write http://HOST:PORT or https://HOST:PORT (the paths are docs/contract.md's)"
    return None


def setting(default: Any, doc: str, check: Check | None = None, choices: Choices = ()) -> Any:
    """One key of a section dataclass: its default, what it means, an optional extra check and its choices.

    The field's annotation gives the key's kind (int, float, bool, str, tuple[str, ...], dict[str, str]).
    """
    meta = {"doc": doc, "check": check, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


# --- the schema: one frozen dataclass per section; a new key is one more field in one of them -----------


@dataclass(frozen=True)
class FeedConfig:
    """``[feed]``: the one event source every transport serves."""

    rate_hz: float = setting(10.0, "publisher ticks per second", _positive)
    payload_bytes: int = setting(100, "characters in each event's data field", _between(0, 16 * 1024 * 1024))
    burst: int = setting(1, "events emitted per tick", _between(1, 100_000))
    history: int = setting(1000, "events kept for resume (cursor, Last-Event-ID, after=)", _at_least(1))
    late_threshold_ms: float = setting(5.0, "a tick firing later than this is counted in late_ticks", _positive)
    payload_seed: int = setting(1, "seed of the pseudo-random payload characters", _non_negative)


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where the server listens and the limits it enforces."""

    host: str = setting("127.0.0.1", "address to bind; 0.0.0.0 or :: exposes the server to the network")
    port: int = setting(0, "TCP port; 0 picks any free port", _between(0, 65535))
    longpoll_timeout_s: float = setting(30.0, "a long poll with no new event is answered empty after this", _positive)
    keepalive: bool = setting(True, "false closes the connection after every HTTP response")
    ws_compress: bool = setting(False, "offer permessage-deflate on /ws")
    cyclic_gc: bool = setting(False, "run CPython's cyclic garbage collector (off: its pauses land in the latencies)")
    extra_headers: dict[str, str] = setting({}, "response headers added to every HTTP response", _header_table)
    sse_heartbeat_s: float = setting(15.0, "SSE comment line sent after this much silence (0 = never)", _non_negative)
    ws_heartbeat_s: float = setting(20.0, "WebSocket ping interval to detect dead peers (0 = never)", _non_negative)
    max_connections: int = setting(50_000, "open connections beyond this get 503", _at_least(1))
    listen_backlog: int = setting(
        4096,
        "connections the kernel completes and queues before the server accepts them (capped by "
        "net.core.somaxconn); connection attempts beyond it are dropped and counted (listen_overflows in /stats)",
        _at_least(1),
    )
    request_header_timeout_s: float = setting(
        10.0,
        "a request head (request line and headers) not complete this long after the connection opened, or after "
        "the first byte of a later request on a kept-alive connection, gets 408 and the connection is closed",
        _positive,
    )
    idle_timeout_s: float = setting(
        75.0,
        "a connection that sends no byte of a request this long after it opened or after its previous response "
        "is closed",
        _positive,
    )
    h2_extended_connect: bool = setting(
        True,
        "stack h2-tls: the proxy advertises RFC 8441 (WebSocket over an HTTP/2 stream); false: WebSockets take their "
        "own HTTP/1.1 TLS connection, as in front of a proxy without RFC 8441 (nginx)",
    )
    max_body_bytes: int = setting(1024 * 1024, "largest HTTP request body (413 beyond)", _at_least(1))
    max_ws_message_bytes: int = setting(1024 * 1024, "largest WebSocket message (close 1009 beyond)", _at_least(1))
    send_buffer_bytes: int = setting(
        4 * 1024 * 1024, "per-connection unsent bytes before a slow client is dropped", _at_least(1024)
    )
    allowed_origins: tuple[str, ...] = setting(
        (), "Origins allowed on the Origin-checked endpoints besides the server's own ('*' = any)", _origin_list
    )
    cors_origins: tuple[str, ...] = setting(
        (), "Origins given CORS headers on HTTP endpoints (empty = CORS off)", _origin_list
    )


@dataclass(frozen=True)
class LoadConfig:
    """``[load]``: the clients of a cell and the timeline of its measurement."""

    transport: str = setting("ws", "transport of every client in a cell", choices=transports.choices)
    clients: int = setting(10, "concurrent clients in a cell", _between(1, 1_000_000))
    scenario: str = setting("feed", "feed: server pushes events; echo: clients send and wait", choices=SCENARIOS)
    duration_s: float = setting(10.0, "measured window per cell", _positive)
    warmup_s: float = setting(2.0, "uncounted time after ramp-up, before the window", _non_negative)
    ramp_up_s: float = setting(1.0, "clients connect spread over this long", _non_negative)
    workers: int = setting(1, "client processes, each with its own event loop", _between(1, 256))
    send_interval_s: float = setting(1.0, "echo scenario: each client sends one message this often", _positive)
    poll_interval_s: float = setting(1.0, "short polling: seconds between polls of one client", _positive)
    header_profile: str = setting("minimal", "request headers the clients send", choices=HEADER_PROFILES)
    stack: str = setting(
        stacks.DEFAULT_STACK,
        "h1: cleartext HTTP/1.1 to the server; h1-tls / h2-tls: TLS 1.3 (HTTP/2 by ALPN) through HAProxy",
        choices=stacks.choices,
    )
    tls_key_type: str = setting(
        "ecdsa-p256", "TLS stacks: key of the per-run certificate", choices=stacks.TLS_KEY_TYPES
    )
    tls_cert_file: str = setting(
        "", "TLS stacks: your own PEM (private key + certificate chain) instead of a per-run one"
    )
    tls_ca_file: str = setting("", "TLS stacks with tls_cert_file: the CA certificate the clients trust")
    cookie_bytes: int = setting(0, "browser profile: size of the Cookie header value", _between(0, 64 * 1024))
    custom_headers: dict[str, str] = setting({}, "custom profile: request headers sent", _header_table)
    seed: int = setting(1, "seed for client phases and message contents", _non_negative)
    repeat: int = setting(1, "times each cell is run, to show spread", _between(1, 100))
    uvloop: bool = setting(True, "run client workers on uvloop when it is installed")
    cyclic_gc: bool = setting(False, "client workers run CPython's cyclic garbage collector (off: no pauses)")
    browser_profile_file: str = setting(
        "configs/browser_profile.json", "browser profile: recorded Chromium headers (make browser-profile)"
    )
    fault_drop_at_s: float = setting(
        0.0,
        "fault injection: SIGUSR1 the server this far into the window, cutting every connection (0 = never)",
        _non_negative,
    )
    fault_kill_at_s: float = setting(
        0.0, "fault injection: SIGKILL the server this far into the window (0 = never)", _non_negative
    )
    executor: str = setting(
        "local", "where shards run: local processes, or a Dask cluster (docs/distributed.md)", choices=EXECUTORS
    )
    dask_scheduler: str = setting("", "executor = dask: the scheduler's address, tcp://HOST:PORT", _dask_address)
    dask_lead_s: float = setting(
        2.0, "executor = dask: seconds from submitting the shards to the first client connecting", _positive
    )


@dataclass(frozen=True)
class TargetConfig:
    """``[target]``: measure a server started elsewhere instead of starting one per cell."""

    url: str = setting(
        "", "the server's root, http://HOST:PORT or https://HOST:PORT (docs/contract.md); empty: start one", _target_url
    )
    ca_file: str = setting("", "https targets: the CA certificate(s) the clients trust (PEM); empty: the system's")


@dataclass(frozen=True)
class NetworkConfig:
    """``[network]``: the path between the clients and the server. All zero (the default): loopback, as before;
    anything else runs the cell across two network namespaces with these conditions (needs root; see README)."""

    rtt_ms: float = setting(0.0, "added round-trip time, split evenly between the two directions", _between(0, 10_000))
    bandwidth_mbit: float = setting(0.0, "link rate per direction in Mbit/s (0 = unlimited)", _between(0, 100_000))
    loss_pct: float = setting(0.0, "percent of packets dropped at random, in each direction", _between(0, 50))

    @property
    def emulated(self) -> bool:
        """False for the defaults: the cell runs on loopback."""
        return self.rtt_ms > 0 or self.bandwidth_mbit > 0 or self.loss_pct > 0

    @property
    def one_way_ms(self) -> float:
        return self.rtt_ms / 2

    @property
    def needs_delay(self) -> bool:
        """Delay or loss to apply (a bandwidth limit alone is a tbf qdisc)."""
        return self.rtt_ms > 0 or self.loss_pct > 0


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: how ``python -m analysis`` judges the run (read from run.json; the cells ignore it)."""

    capacity_p99_s: float = setting(
        1.0,
        "capacity: the largest client count whose p99 latency stays at or under this many seconds, with nothing "
        "lost and the load generator unsaturated (python -m analysis --capacity-p99 overrides it)",
        _positive,
    )


@dataclass(frozen=True)
class Sections:
    """The resolved sections of a config or a cell. A new section is its dataclass plus one field here;
    its keys can then be set in the file, with ``--set section.key=``, and varied in [matrix]/[[sweep]]."""

    feed: FeedConfig = field(default_factory=FeedConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def sections_dict(self) -> dict[str, dict[str, Any]]:
        """Every section as plain data (lists for tuples), as run.json and ``--set`` arguments carry it."""
        return {name: _plain(asdict(getattr(self, name))) for name in SECTION_TYPES}


_KINDS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "tuple[str, ...]": "str_list",
    "dict[str, str]": "str_table",
}


def _section_types() -> dict[str, type]:
    hints = get_type_hints(Sections)
    return {f.name: hints[f.name] for f in fields(Sections)}


def _section_schema(cls: type) -> dict[str, Key]:
    keys = {}
    for f in fields(cls):
        kind = _KINDS.get(str(f.type))
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported config type {f.type!r} (one of {', '.join(_KINDS)})")
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]
        keys[f.name] = Key(kind, default, f.metadata["doc"], f.metadata["check"], f.metadata["choices"])
    return keys


SECTION_TYPES: dict[str, type] = _section_types()
SCHEMA: dict[str, dict[str, Key]] = {name: _section_schema(cls) for name, cls in SECTION_TYPES.items()}

# Every section's keys can be varied in [matrix] / [[sweep]]: by plain name when no other section has a key of
# that name (``rate_hz``, ``transport``), else as ``section.key`` (always accepted).
VARIABLE_SECTIONS = tuple(SCHEMA)
_OWNERS: dict[str, list[str]] = {}
for _section, _keys in SCHEMA.items():
    for _k in _keys:
        _OWNERS.setdefault(_k, []).append(_section)
KEY_SECTION: dict[str, str] = {k: owners[0] for k, owners in _OWNERS.items() if len(owners) == 1}
RUN_WIDE_KEYS = {  # set once per run, never varied
    ("load", "executor"),
    ("load", "dask_scheduler"),
    ("report", "capacity_p99_s"),
}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ConfigError(Exception):
    """Every problem found in a config, each naming the file and the key."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


@dataclass(frozen=True)
class Config(Sections):
    """A validated config: the resolved sections plus the matrix/sweep tables (key -> values)."""

    source: str = "(defaults)"
    name: str = "(defaults)"
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    sweeps: list[dict[str, list[Any]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.sections_dict()
        if self.matrix:
            out["matrix"] = _plain(self.matrix)
        if self.sweeps:
            out["sweep"] = _plain(self.sweeps)
        return out


def parse_set(item: str) -> tuple[list[str], Any]:
    """Parse one ``section.key=VALUE`` override; VALUE is a TOML value, or a bare word taken as a string."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected section.key=VALUE")
    path, raw = item.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--set {item!r}: expected section.key=VALUE with exactly one dot in the name")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][\w.:/-]*", raw):
            value = raw  # a bare word such as `echo` or `browser`
        else:
            raise ValueError(f'--set {item!r}: VALUE is not a TOML value (quote strings: key="text")') from None
    return parts, value


def _type_problem(key: Key, value: Any) -> str | None:
    def name(v: Any) -> str:
        return type(v).__name__

    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r} ({name(value)})"
    elif key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r} ({name(value)})"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
    elif key.kind == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r} ({name(value)})"
    elif key.kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {value!r} ({name(value)})"
        allowed = key.allowed()
        if allowed and value not in allowed:
            return f"must be one of {', '.join(allowed)}; got {value!r}"
    elif key.kind == "str_list":
        if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
            return f"must be a list of strings, got {value!r}"
    elif key.kind == "str_table" and (
        not isinstance(value, dict) or not all(isinstance(x, str) for x in value.values())
    ):
        return f"must be a table of strings, got {value!r}"
    return None


def check_value(key: Key, value: Any) -> str | None:
    """The problem with one value for ``key``, or None when it is valid."""
    problem = _type_problem(key, value)
    if problem is None and key.check is not None:
        problem = key.check(float(value) if key.kind == "float" else value)
    return problem


def _coerce(key: Key, value: Any) -> Any:
    if key.kind == "float":
        return float(value)
    if key.kind == "str_list":
        return tuple(value)
    return copy.deepcopy(value)


def _validate_section(name: str, table: Any, origin: Callable[[str], str], problems: list[str]) -> Any:
    """The section's dataclass from its table (defaults where a key is absent or invalid)."""
    schema = SCHEMA[name]
    values: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.append(f"{name}: must be a table, got {table!r}")
        return SECTION_TYPES[name]()
    for k, value in table.items():
        if k not in schema:
            problems.append(f"{name}.{k}: unknown key{origin(f'{name}.{k}')} (known: {', '.join(schema)})")
            continue
        problem = check_value(schema[k], value)
        if problem:
            problems.append(f"{name}.{k}: {problem}{origin(f'{name}.{k}')}")
        else:
            values[k] = _coerce(schema[k], value)
    return SECTION_TYPES[name](**values)


def varying_key(name: str) -> tuple[str, str] | None:
    """(section, key) of a [matrix]/[[sweep]] key: a plain key name unique across sections, or ``section.key``."""
    if "." in name:
        section, _, key = name.partition(".")
        return (section, key) if key in SCHEMA.get(section, {}) else None
    return (KEY_SECTION[name], name) if name in KEY_SECTION else None


def _flatten_varying(table: dict[str, Any]) -> dict[str, Any]:
    """``network.rtt_ms = [...]`` in TOML is a nested table: name it ``network.rtt_ms``."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        if k in SCHEMA and isinstance(v, dict):
            out.update({f"{k}.{sub}": values for sub, values in v.items()})
        else:
            out[k] = v
    return out


def _validate_varying(where: str, table: Any, problems: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table of lists, got {table!r}")
        return out
    for k, values in _flatten_varying(table).items():
        target = varying_key(k)
        if target is None:
            hint = f"; write section.key, one of {', '.join(_OWNERS[k])}" if k in _OWNERS else ""
            problems.append(f"{where}.{k}: unknown key{hint} (can vary: {', '.join(KEY_SECTION)}, or section.key)")
            continue
        if not isinstance(values, list):
            values = [values]
        if not values:
            problems.append(f"{where}.{k}: must list at least one value")
            continue
        key = SCHEMA[target[0]][target[1]]
        good = []
        for i, v in enumerate(values):
            problem = check_value(key, v)
            if problem:
                problems.append(f"{where}.{k}[{i}]: {problem}")
            else:
                good.append(_coerce(key, v))
        out[k] = good
    return out


def build_config(data: dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Config:
    """Validate parsed TOML ``data`` with ``--set`` ``overrides``; raise ConfigError listing every problem."""
    problems: list[str] = []
    data = copy.deepcopy(data)
    from_cli: set[str] = set()
    for item in overrides:
        try:
            (section, key), value = parse_set(item)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if section not in (*SCHEMA, "matrix"):
            problems.append(f"--set {item!r}: unknown section {section!r} (known: {', '.join((*SCHEMA, 'matrix'))})")
            continue
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            problems.append(f"--set {item!r}: {section} is not a table in the file")
            continue
        data[section][key] = value
        from_cli.add(f"{section}.{key}")
    if any(d.startswith("matrix.") for d in from_cli):
        # Cells asked for on the command line replace the file's [[sweep]] tables (one cell of a sweep config).
        data.pop("sweep", None)

    def origin(dotted: str) -> str:
        return " (from --set)" if dotted in from_cli else ""

    allowed = {*SCHEMA, "matrix", "sweep"}
    for section in data:
        if section not in allowed:
            problems.append(f"{section}: unknown section (known: {', '.join(sorted(allowed))})")
    sections = {name: _validate_section(name, data.get(name, {}), origin, problems) for name in SCHEMA}
    matrix = _validate_varying("matrix", data["matrix"], problems) if "matrix" in data else {}
    sweeps: list[dict[str, list[Any]]] = []
    raw_sweeps = data.get("sweep", [])
    if not isinstance(raw_sweeps, list):
        problems.append("sweep: must be an array of tables ([[sweep]])")
    else:
        for i, table in enumerate(raw_sweeps):
            sweeps.append(_validate_varying(f"sweep[{i}]", table, problems))
    if matrix and sweeps:
        problems.append("matrix and sweep: use one or the other ([[sweep]] tables each hold their own lists)")
    resolved = Sections(**sections)
    problems.extend(_cross_checks(resolved))
    for varied in (matrix, *sweeps):
        for name in varied:
            if varying_key(name) in RUN_WIDE_KEYS:
                why = (
                    "the report judges the whole run"
                    if name.endswith("capacity_p99_s")
                    else "one executor serves the whole run"
                )
                problems.append(f"{name}: cannot vary between cells ({why})")
    if problems:
        raise ConfigError(source, problems)
    name = Path(source).stem if source.endswith(".toml") else source
    config = Config(**sections, source=source, name=name, matrix=matrix, sweeps=sweeps)
    # A combination only some cells have (a varied key meeting another): named with the cells' varied values.
    in_cells: dict[str, list[Cell]] = {}
    for cell in expand_cells(config):
        for problem in _cross_checks(cell) if cell.varied else ():
            in_cells.setdefault(problem, []).append(cell)
    if in_cells:
        raise ConfigError(source, [f"{p} ({_cells_text(cells)})" for p, cells in in_cells.items()])
    return config


def _cells_text(cells: Sequence[Cell]) -> str:
    """'the cell stack = 'h2-tls', server.keepalive = false' (and how many more have the problem)."""
    first = ", ".join(f"{k} = {_shown(v)}" for k, v in cells[0].varied.items())
    return f"the cell {first}" + (f", and {len(cells) - 1} more" if len(cells) > 1 else "")


def _shown(value: Any) -> str:
    """A value as a config line writes it (true/false in TOML's spelling)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _cross_checks(sections: Sections) -> list[str]:
    problems = []
    load = sections.load
    if load.header_profile == "custom" and not load.custom_headers:
        problems.append("load.custom_headers: must list headers when load.header_profile = 'custom'")
    if bool(load.tls_cert_file) != bool(load.tls_ca_file):
        problems.append("load.tls_cert_file: give tls_cert_file and tls_ca_file together (or neither: per-run ones)")
    if load.executor == "dask" and not load.dask_scheduler:
        problems.append("load.dask_scheduler: must be set (tcp://HOST:PORT) when load.executor = 'dask'")
    if sections.target.url:
        for key in ("fault_drop_at_s", "fault_kill_at_s"):
            if getattr(load, key) > 0:
                problems.append(f"load.{key}: signals a server the load generator started; with target.url it has none")
    elif load.executor == "dask" and sections.server.host in ("0.0.0.0", "::", ""):
        problems.append(
            "server.host: with load.executor = 'dask' the shards connect to server.host, so it must be an address "
            f"they can reach, not the wildcard {sections.server.host!r}"
        )
    stack = stacks.STACKS.get(load.stack)
    if stack is not None and stack.http2 and not sections.server.keepalive:
        problems.append(
            f"server.keepalive: false cannot be measured over load.stack {load.stack!r}: its TLS proxy closes HTTP/1 "
            "connections after each response (option httpclose) but keeps HTTP/2 ones open; compare keep-alive "
            "over h1 or h1-tls"
        )
    tls = stack.tls if stack is not None else False
    url = sections.target.url
    if url and tls != url.startswith("https://"):
        problems.append(
            f"load.stack: {load.stack!r} with target.url {url!r}: an https target needs a TLS stack "
            f"({', '.join(n for n, s in stacks.STACKS.items() if s.tls)}), an http one a cleartext stack"
        )
    if sections.network.emulated and (url or load.executor == "dask"):
        problems.append(
            "network: an emulated path joins two namespaces on this machine around a server the run starts and its "
            "local shards; with target.url or load.executor = 'dask' shape the real path instead (docs/distributed.md)"
        )
    if not url and tls and load.executor == "dask":
        problems.append(
            f"load.stack: {load.stack!r} puts a TLS proxy on the runner's loopback, which Dask workers on other hosts "
            "cannot reach: put the proxy before the server and give its https:// address as target.url"
        )
    return problems


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, override and validate one config file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["no such file"]) from None
    except IsADirectoryError:
        raise ConfigError(source, ["is a directory, not a TOML file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"invalid TOML: {exc}"]) from None
    return build_config(data, source, overrides)


def default_config(overrides: Iterable[str] = ()) -> Config:
    """The schema defaults, with overrides: what a server started without a file uses."""
    return build_config({}, "(defaults)", overrides)


@dataclass(frozen=True)
class Cell(Sections):
    """One point of the matrix: fully resolved sections and what was varied (key as written -> value)."""

    index: int = 0
    varied: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.sections_dict()


def _product(table: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(table)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(table[k] for k in keys))]


def apply_point(base: Sections, point: Mapping[str, Any]) -> dict[str, Any]:
    """The sections of ``base`` with the [matrix]/[[sweep]] values of one ``point`` set."""
    changes: dict[str, dict[str, Any]] = {}
    for k, v in point.items():
        target = varying_key(k)
        assert target is not None, f"{k} was validated"
        changes.setdefault(target[0], {})[target[1]] = v
    return {name: replace(base.section(name), **changes.get(name, {})) for name in SECTION_TYPES}


def expand_cells(config: Config) -> list[Cell]:
    """The cells of a config: the matrix cross product, or the union of the sweeps' products, deduplicated."""
    if config.sweeps:
        points = [p for sweep in config.sweeps for p in _product(sweep)]
    elif config.matrix:
        points = _product(config.matrix)
    else:
        points = [{}]
    cells: list[Cell] = []
    seen: set[str] = set()
    for point in points:
        sections = apply_point(config, point)
        fingerprint = repr(Sections(**sections).sections_dict())
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        cells.append(Cell(**sections, index=len(cells), varied=dict(point)))
    return cells
