"""Deliveries sent back because the idempotency store was down are not the handler's attempts.

The store fails the first deliveries (a real MemoryIdempotencyStore whose lookups raise StoreError, as a
store does when its database is unreachable); the handler then fails every time. The retry policy must give
the handler all its attempts, and the dead letter must count those, not the broker's deliveries.
"""

from __future__ import annotations

import asyncio

from tidings.app import App
from tidings.brokers.base import DL_ATTEMPTS
from tidings.events.event import Event
from tidings.reliability.idempotency import MemoryIdempotencyStore, StoreError
from tidings.reliability.retry import RetryPolicy


class Ping(Event, type="ping"):
    n: int


class DownAtFirst(MemoryIdempotencyStore):
    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    async def seen(self, group: str, event_id: str) -> bool:
        if self.outages:
            self.outages -= 1
            raise StoreError("idempotency store unreachable")
        return await super().seen(group, event_id)


async def test_store_outages_do_not_use_up_the_handlers_attempts() -> None:
    app = App("memory://", name="t", retry=RetryPolicy(4, base_delay=0.001, max_delay=0.002))
    calls: list[int] = []

    @app.subscriber("ping", idempotency=DownAtFirst(outages=6))
    async def handler(event: Ping) -> None:
        calls.append(event.n)
        raise ValueError("boom")

    async with app:
        await app.publish(Ping(n=1))
        for _ in range(500):
            if await app.broker.dead_letters():
                break
            await asyncio.sleep(0.01)
        dead = await app.broker.dead_letters()
    assert len(calls) == 4  # every attempt the policy allows, though the broker delivered it 10 times
    assert len(dead) == 1
    assert dead[0].details[DL_ATTEMPTS] == "4"
    assert "failed 4 times" in dead[0].reason
