"""A registry: name -> frozen record, each registered once; the shape of ``TRANSPORTS`` and ``STACKS``.

A new kind of variant (a transport, a stack, ...) is a frozen dataclass with ``name`` and ``describe()``, one
``Registry`` of them, and ``register(...)`` calls. The config schema takes ``choices`` for its key's values,
and the load generator writes ``describe()`` into run.json so that ``analysis/`` needs no import of this code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar


class Record(Protocol):
    @property
    def name(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


class Registry(dict[str, R]):
    """The records of one kind by name, in registration order."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind  # "transport", "stack": names the records in errors

    def register(self, record: R) -> R:
        """Add a record (its name must be new); returns it, so a module can keep it as a constant."""
        if record.name in self:
            raise ValueError(f"{self.kind} {record.name!r} is already registered")
        self[record.name] = record
        return record

    @contextmanager
    def registered(self, record: R) -> Iterator[R]:
        """A record registered for the duration of a block (tests, plugins tried out)."""
        self.register(record)
        try:
            yield record
        finally:
            del self[record.name]

    def choices(self) -> tuple[str, ...]:
        """The names a config key of this kind accepts, in registration order."""
        return tuple(self)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every record as run.json carries it."""
        return {name: record.describe() for name, record in self.items()}
