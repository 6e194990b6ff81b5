"""Both relays (the outbox's and the log's) back off on the consumers' retry schedule: capped, with equal
jitter, and still a number after any count of failures (a long outage must not crash the relay)."""

from __future__ import annotations

from pathlib import Path

from tidings.app import App
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.publishing import LogRelay
from tidings.reliability.outbox import OutboxRelay


def test_relay_delays_stay_between_half_the_cap_and_the_cap_after_any_number_of_failures(tmp_path: Path) -> None:
    outbox = OutboxRelay(tmp_path / "app.db", "memory://", backoff=(0.1, 10.0))
    log = LogRelay(MemoryEventStore(), App("memory://"), backoff=(0.1, 10.0))
    for failures in (1, 2, 10, 1_100, 100_000):
        for delay in (outbox._delay(failures), log._backoff.delay(failures, 0.999)):
            cap = min(10.0, 0.1 * 2 ** min(failures - 1, 64))
            assert cap / 2 <= delay <= cap
