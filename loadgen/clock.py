"""How far a load host's clock is from the server's: NTP-style estimates from request/response exchanges.

Latency compares an event's intended time (the server's clock, its ``ts``) with its receive time (the load
host's clock). On one machine both are the same clock; across hosts they differ by an offset that this
module estimates. Nothing here touches a socket or a clock: ``exchange_ns`` samples come from
``loadgen.shard`` and from the tests, with hand-computed values.

One exchange: the client reads its clock (``sent_ns``), asks the server for its time (``server_ns``, read
somewhere between request and response), and reads its clock again (``received_ns``). The server's clock
minus the client's lies in ``[server_ns - received_ns, server_ns - sent_ns]``: the estimate is the middle,
``server_ns - (sent_ns + received_ns) / 2``, and the uncertainty half the round trip. Of several exchanges
the one with the smallest round trip is kept (the least queueing delay, as NTP's clock filter does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CLOCK_WARNING_FRACTION = 0.10  # the report warns when the uncertainty exceeds this fraction of the p50


@dataclass(frozen=True)
class Exchange:
    """One request/response: client clock before and after, server clock in between (ns since the epoch)."""

    sent_ns: int
    server_ns: int
    received_ns: int

    @property
    def rtt_ns(self) -> int:
        return self.received_ns - self.sent_ns


@dataclass(frozen=True)
class ClockOffset:
    """Server clock minus client clock, and how far it can be off (half the round trip of its exchange)."""

    offset_ns: int
    uncertainty_ns: int
    rtt_ns: int
    exchanges: int  # how many exchanges the estimate was chosen from
    at_ns: int  # client clock at the middle of the chosen exchange

    def to_json(self) -> dict[str, int]:
        return {
            "offset_ns": self.offset_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "rtt_ns": self.rtt_ns,
            "exchanges": self.exchanges,
            "at_ns": self.at_ns,
        }


def estimate_offset(exchanges: Sequence[Exchange]) -> ClockOffset:
    """The offset from the exchange with the smallest round trip; the earliest one on a tie.

    Raises ValueError with no exchange or with one whose client clock ran backwards (received before sent).
    """
    if not exchanges:
        raise ValueError("no clock exchange to estimate an offset from")
    for ex in exchanges:
        if ex.rtt_ns < 0:
            raise ValueError(f"client clock ran backwards in an exchange: sent {ex.sent_ns}, received {ex.received_ns}")
    best = min(exchanges, key=lambda ex: ex.rtt_ns)  # min keeps the first of equal round trips
    # Floor division keeps every figure an exact integer; the lost half nanosecond is far below the uncertainty.
    midpoint = (best.sent_ns + best.received_ns) // 2
    return ClockOffset(
        offset_ns=best.server_ns - midpoint,
        uncertainty_ns=(best.rtt_ns + 1) // 2,  # rounded up: never claims more precision than the exchange gave
        rtt_ns=best.rtt_ns,
        exchanges=len(exchanges),
        at_ns=midpoint,
    )


def correction_uncertainty_ns(applied: ClockOffset, after: ClockOffset | None) -> int:
    """How far the offset applied to a window's latencies can be from the truth, anywhere in the window.

    ``applied`` is estimated before the window and used for every latency in it; ``after`` is estimated after
    the window. At the start the error is at most ``applied.uncertainty_ns``; at the end the truth lies within
    ``after.uncertainty_ns`` of ``after.offset_ns``, so the applied offset is off by at most that plus the
    distance between the two estimates (the clocks drifted, or one estimate was poor). A drift is linear
    over a window of seconds, so the larger of the two bounds holds throughout.
    """
    if after is None:
        return applied.uncertainty_ns
    return max(applied.uncertainty_ns, after.uncertainty_ns + abs(after.offset_ns - applied.offset_ns))


def clock_warning(uncertainty_ns: int | None, p50_ms: float | None) -> str | None:
    """The report's warning when the clock uncertainty exceeds 10 % of a cell's median latency, else None."""
    if uncertainty_ns is None or p50_ms is None or p50_ms != p50_ms or p50_ms <= 0:
        return None
    uncertainty_ms = uncertainty_ns / 1e6
    if uncertainty_ms <= CLOCK_WARNING_FRACTION * p50_ms:
        return None
    return (
        f"clock offset uncertainty {uncertainty_ms:.3f} ms exceeds {CLOCK_WARNING_FRACTION:.0%} of the latency "
        f"p50 ({p50_ms:.3f} ms): the latencies are no more exact than that (synchronize the hosts' clocks, "
        "or measure from a load host nearer the server)"
    )
