"""The /stats part of the endpoint contract (docs/contract.md) that the load generator relies on.

Shared by the load generator (``loadgen.runner``: a /stats that fails it is not read, and the server-side columns
stay empty) and the conformance check (``python -m servers.check``), so both judge a server by the same rule.
"""

from __future__ import annotations

from typing import Any

from pushbench.transports import TRANSPORTS, echo_keys

# The /stats counters the load generator reads (loadgen.summary.server_deltas).
STATS_NUMBERS = (
    "events_published", "late_ticks", "connections_accepted", "connections_peak", "cpu_user_s", "cpu_system_s",
    "rss_bytes",
)  # fmt: skip


def stats_tables() -> dict[str, tuple[str, ...]]:
    """The /stats tables of counts: deliveries per transport and echoes per echo path, from the registry."""
    return {"deliveries": tuple(TRANSPORTS), "echoes": echo_keys()}


def stats_problems(stats: Any) -> list[str]:
    """Missing or mistyped /stats counters the load generator reads."""
    if not isinstance(stats, dict):
        return ["/stats must be a JSON object"]
    problems = []
    for key in STATS_NUMBERS:
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key} missing or not a number")
    unit = stats.get("cpu_unit_s")  # optional: without it, the CPU counters are taken to count clock ticks
    if "cpu_unit_s" in stats and (isinstance(unit, bool) or not isinstance(unit, int | float) or not unit > 0):
        problems.append("cpu_unit_s, when present, must be a number of seconds > 0")
    for key, subkeys in stats_tables().items():
        table = stats.get(key)
        if not isinstance(table, dict) or not all(isinstance(table.get(k), int) for k in subkeys):
            problems.append(f"{key} must map {', '.join(subkeys)} to counts")
    return problems
