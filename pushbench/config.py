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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSPORTS = ("poll", "longpoll", "sse", "ws")
SCENARIOS = ("feed", "echo")
HEADER_PROFILES = ("minimal", "browser", "custom")

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, an optional extra check, and what it means."""

    kind: str  # "int", "float", "bool", "str", "str_list", "str_table"
    default: Any
    doc: str
    check: Check | None = None
    choices: tuple[str, ...] = ()


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


SCHEMA: dict[str, dict[str, Key]] = {
    "feed": {
        "rate_hz": Key("float", 10.0, "publisher ticks per second", _positive),
        "payload_bytes": Key("int", 100, "characters in each event's data field", _between(0, 16 * 1024 * 1024)),
        "burst": Key("int", 1, "events emitted per tick", _between(1, 100_000)),
        "history": Key("int", 1000, "events kept for resume (cursor, Last-Event-ID, after=)", _at_least(1)),
        "late_threshold_ms": Key("float", 5.0, "a tick firing later than this is counted in late_ticks", _positive),
        "payload_seed": Key("int", 1, "seed of the pseudo-random payload characters", _non_negative),
    },
    "server": {
        "host": Key("str", "127.0.0.1", "address to bind; 0.0.0.0 or :: exposes the server to the network"),
        "port": Key("int", 0, "TCP port; 0 picks any free port", _between(0, 65535)),
        "longpoll_timeout_s": Key(
            "float", 30.0, "a long poll with no new event is answered empty after this", _positive
        ),
        "keepalive": Key("bool", True, "false closes the connection after every HTTP response"),
        "ws_compress": Key("bool", False, "offer permessage-deflate on /ws"),
        "extra_headers": Key("str_table", {}, "response headers added to every HTTP response", _header_table),
        "sse_heartbeat_s": Key(
            "float", 15.0, "SSE comment line sent after this much silence (0 = never)", _non_negative
        ),
        "ws_heartbeat_s": Key("float", 20.0, "WebSocket ping interval to detect dead peers (0 = never)", _non_negative),
        "max_connections": Key("int", 50_000, "open connections beyond this get 503", _at_least(1)),
        "max_body_bytes": Key("int", 1024 * 1024, "largest HTTP request body (413 beyond)", _at_least(1)),
        "max_ws_message_bytes": Key("int", 1024 * 1024, "largest WebSocket message (close 1009 beyond)", _at_least(1)),
        "send_buffer_bytes": Key(
            "int", 4 * 1024 * 1024, "per-connection unsent bytes before a slow client is dropped", _at_least(1024)
        ),
        "allowed_origins": Key(
            "str_list", [], "Origins allowed on /ws and /sse besides the server's own ('*' = any)", _origin_list
        ),
        "cors_origins": Key(
            "str_list", [], "Origins given CORS headers on HTTP endpoints (empty = CORS off)", _origin_list
        ),
    },
    "load": {
        "transport": Key("str", "ws", "transport of every client in a cell", choices=TRANSPORTS),
        "clients": Key("int", 10, "concurrent clients in a cell", _between(1, 1_000_000)),
        "scenario": Key("str", "feed", "feed: server pushes events; echo: clients send and wait", choices=SCENARIOS),
        "duration_s": Key("float", 10.0, "measured window per cell", _positive),
        "warmup_s": Key("float", 2.0, "uncounted time after ramp-up, before the window", _non_negative),
        "ramp_up_s": Key("float", 1.0, "clients connect spread over this long", _non_negative),
        "workers": Key("int", 1, "client processes, each with its own event loop", _between(1, 256)),
        "send_interval_s": Key("float", 1.0, "echo scenario: each client sends one message this often", _positive),
        "poll_interval_s": Key("float", 1.0, "short polling: seconds between polls of one client", _positive),
        "header_profile": Key("str", "minimal", "request headers the clients send", choices=HEADER_PROFILES),
        "cookie_bytes": Key("int", 0, "browser profile: size of the Cookie header value", _between(0, 64 * 1024)),
        "custom_headers": Key("str_table", {}, "custom profile: request headers sent", _header_table),
        "seed": Key("int", 1, "seed for client phases and message contents", _non_negative),
        "repeat": Key("int", 1, "times each cell is run, to show spread", _between(1, 100)),
        "uvloop": Key("bool", True, "run client workers on uvloop when it is installed"),
        "browser_profile_file": Key(
            "str", "configs/browser_profile.json", "browser profile: recorded Chromium headers (make browser-profile)"
        ),
        "fault_drop_at_s": Key(
            "float",
            0.0,
            "fault injection: SIGUSR1 the server this far into the window, cutting every connection (0 = never)",
            _non_negative,
        ),
        "fault_kill_at_s": Key(
            "float", 0.0, "fault injection: SIGKILL the server this far into the window (0 = never)", _non_negative
        ),
    },
}

# Sections whose keys can be varied in [matrix] / [[sweep]], addressed by plain key name.
VARIABLE_SECTIONS = ("feed", "server", "load")
KEY_SECTION: dict[str, str] = {k: s for s in VARIABLE_SECTIONS for k in SCHEMA[s]}
assert len(KEY_SECTION) == sum(len(SCHEMA[s]) for s in VARIABLE_SECTIONS), "key names must be unique"


class ConfigError(Exception):
    """Every problem found in a config, each naming the file and the key."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


@dataclass
class Config:
    """A validated config: the resolved sections plus the raw matrix/sweep tables."""

    source: str
    name: str
    feed: dict[str, Any]
    server: dict[str, Any]
    load: dict[str, Any]
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    sweeps: list[dict[str, list[Any]]] = field(default_factory=list)

    def section(self, name: str) -> dict[str, Any]:
        return {"feed": self.feed, "server": self.server, "load": self.load}[name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feed": copy.deepcopy(self.feed),
            "server": copy.deepcopy(self.server),
            "load": copy.deepcopy(self.load),
        }
        if self.matrix:
            out["matrix"] = copy.deepcopy(self.matrix)
        if self.sweeps:
            out["sweep"] = copy.deepcopy(self.sweeps)
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
        if key.choices and value not in key.choices:
            return f"must be one of {', '.join(key.choices)}; got {value!r}"
    elif key.kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
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
    return float(value) if key.kind == "float" else copy.deepcopy(value)


def _validate_section(name: str, table: Any, origin: Callable[[str], str], problems: list[str]) -> dict[str, Any]:
    schema = SCHEMA[name]
    out = {k: copy.deepcopy(key.default) for k, key in schema.items()}
    if not isinstance(table, dict):
        problems.append(f"{name}: must be a table, got {table!r}")
        return out
    for k, value in table.items():
        if k not in schema:
            problems.append(f"{name}.{k}: unknown key{origin(f'{name}.{k}')} (known: {', '.join(schema)})")
            continue
        problem = check_value(schema[k], value)
        if problem:
            problems.append(f"{name}.{k}: {problem}{origin(f'{name}.{k}')}")
        else:
            out[k] = _coerce(schema[k], value)
    return out


def _validate_varying(where: str, table: Any, problems: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table of lists, got {table!r}")
        return out
    for k, values in table.items():
        if k not in KEY_SECTION:
            problems.append(f"{where}.{k}: unknown key (can vary: {', '.join(KEY_SECTION)})")
            continue
        if not isinstance(values, list):
            values = [values]
        if not values:
            problems.append(f"{where}.{k}: must list at least one value")
            continue
        key = SCHEMA[KEY_SECTION[k]][k]
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
    problems.extend(_cross_checks(sections))
    if problems:
        raise ConfigError(source, problems)
    name = Path(source).stem if source.endswith(".toml") else source
    return Config(source, name, sections["feed"], sections["server"], sections["load"], matrix, sweeps)


def _cross_checks(sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
    problems = []
    load = sections["load"]
    if load["header_profile"] == "custom" and not load["custom_headers"]:
        problems.append("load.custom_headers: must list headers when load.header_profile = 'custom'")
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
class Cell:
    """One point of the matrix: a fully resolved feed/server/load config and what was varied."""

    index: int
    varied: dict[str, Any]
    feed: dict[str, Any]
    server: dict[str, Any]
    load: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"feed": self.feed, "server": self.server, "load": self.load}


def _product(table: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(table)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(table[k] for k in keys))]


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
        sections = {s: copy.deepcopy(config.section(s)) for s in VARIABLE_SECTIONS}
        for k, v in point.items():
            sections[KEY_SECTION[k]][k] = v
        fingerprint = repr(sorted((s, sorted(map(repr, t.items()))) for s, t in sections.items()))
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        cells.append(Cell(len(cells), point, sections["feed"], sections["server"], sections["load"]))
    return cells
