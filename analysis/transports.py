"""What the analysis knows of each transport, read from run.json ``transports`` (docs/results-format.md).

The load generator writes its registry into every run, so a transport added there is labelled, drawn and placed
in the verdicts without a change here. Runs written before that key existed get ``BUILTIN``, the four
transports as the registry described them then (``tests/test_transports.py`` checks the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TransportInfo:
    name: str
    label: str  # "short polling"
    short: str  # "poll"
    colour: str
    marker: str
    marker_size: float
    polls: bool  # the client asks on its own schedule
    pushes: bool  # the server sends each event as soon as it is published
    holds_requests: bool  # long polling
    streams: bool  # one connection per client for the whole session


BUILTIN: dict[str, TransportInfo] = {
    t.name: t
    for t in (
        TransportInfo("poll", "short polling", "poll", "#D55E00", "s", 9.0, True, False, False, False),
        TransportInfo("longpoll", "long polling", "long poll", "#E69F00", "D", 7.0, False, True, True, False),
        TransportInfo("sse", "SSE", "SSE", "#009E73", "^", 6.5, False, True, False, True),
        TransportInfo("ws", "WebSocket", "WS", "#0072B2", "o", 4.5, False, True, False, True),
    )
}
OTHER_COLOUR = "#777777"


def unknown(name: str) -> TransportInfo:
    """A transport the run does not describe: named as it is, grey, and in no verdict's list."""
    return TransportInfo(name, name, name, OTHER_COLOUR, "o", 5.0, False, False, False, False)


@dataclass(frozen=True)
class Transports:
    """The transports of one run, in registry order, with their labels, chart styles and kinds."""

    by_name: Mapping[str, TransportInfo] = field(default_factory=lambda: dict(BUILTIN))

    def info(self, name: str) -> TransportInfo:
        return self.by_name.get(name) or unknown(name)

    def label(self, name: str) -> str:
        return self.info(name).label

    def short(self, name: str) -> str:
        return self.info(name).short

    def colour(self, name: str) -> str:
        return self.info(name).colour

    def marker(self, name: str) -> tuple[str, float]:
        info = self.info(name)
        return info.marker, info.marker_size

    def order(self, present: Iterable[Any]) -> list[str]:
        """The transports present, in registry order (unknown ones last, sorted)."""
        names = {str(t) for t in present}
        return [t for t in self.by_name if t in names] + sorted(names - set(self.by_name))

    def polling(self) -> list[str]:
        return [t.name for t in self.by_name.values() if t.polls]

    def pushing(self) -> list[str]:
        return [t.name for t in self.by_name.values() if t.pushes]

    def streaming(self) -> list[str]:
        return [t.name for t in self.by_name.values() if t.streams]


def from_run_json(described: Any) -> Transports:
    """The table of a run.json ``transports`` value (None: a run written before it, the four built-ins).

    Raises ValueError naming the transport and key at fault.
    """
    if described is None:
        return Transports()
    if not isinstance(described, dict):
        raise ValueError("key 'transports' must be an object")
    table: dict[str, TransportInfo] = {}
    for name, record in described.items():
        if not isinstance(record, dict):
            raise ValueError(f"transports.{name} must be an object")
        values: dict[str, Any] = {}
        for f in fields(TransportInfo):
            value = record.get(f.name)
            kind = str(f.type)
            if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
                values[f.name] = float(value)
            elif (kind == "str" and isinstance(value, str)) or (kind == "bool" and isinstance(value, bool)):
                values[f.name] = value
            else:
                raise ValueError(f"transports.{name}.{f.name} is missing or not a {kind}")
        table[str(name)] = TransportInfo(**values)
    return Transports(table)
