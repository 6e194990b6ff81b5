"""Poison messages: 1% of the events fail every time. Each is dead-lettered with its reason after exactly N
attempts, and every other event is handled exactly once, on the embedded broker, RabbitMQ and Kafka.

20,000 events on the embedded broker and RabbitMQ, 5,000 on Kafka (``TIDINGS_POISON_EVENTS`` sets both to
one number, e.g. 20000 for the issue's full size everywhere).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tidings.app import App
from tidings.brokers.base import DL_ATTEMPTS, DL_ERROR_TYPE
from tidings.events.event import Event
from tidings.reliability.retry import RetryPolicy

ATTEMPTS = 3
SIZES = {"sqlite": 20_000, "rabbitmq": 20_000, "kafka": 5_000}


class OrderPlaced(Event, type="order.placed"):
    order_id: int


class PoisonError(Exception):
    pass


def url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    if kind == "rabbitmq":
        return f"{request.getfixturevalue('rabbitmq_vhost')}?exchange=poison-{uuid.uuid4().hex[:8]}"
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}?session_timeout_ms=6000&fetch_wait_ms=20"


@pytest.mark.parametrize("kind", ["sqlite", "rabbitmq", "kafka"])
async def test_one_percent_poison_is_dead_lettered_after_exactly_n_attempts(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    count = int(os.environ.get("TIDINGS_POISON_EVENTS", SIZES[kind]))
    url = url_for(kind, request, tmp_path)
    channel = f"orders.{uuid.uuid4().hex[:8]}"
    app = App(url, name="billing")
    tries: Counter[int] = Counter()
    done = asyncio.Event()
    poison = {i for i in range(count) if i % 100 == 37}
    needed = (count - len(poison)) + ATTEMPTS * len(poison)

    @app.subscriber(channel, group="billing", prefetch=64, retry=RetryPolicy(ATTEMPTS, base_delay=0.01, jitter=0))
    async def charge(event: OrderPlaced) -> None:
        tries[event.order_id] += 1
        if sum(tries.values()) >= needed:
            done.set()
        if event.order_id in poison:
            raise PoisonError(f"order {event.order_id} cannot be charged")

    start = time.perf_counter()
    async with app:
        publisher = App(url, name="shop")
        async with publisher:
            batch = [OrderPlaced(order_id=i) for i in range(count)]
            for first in range(0, count, 1_000):
                for event in batch[first : first + 1_000]:  # publish_many takes the event's own channel
                    await publisher.publish(event, channel=channel, key=str(event.order_id % 16))
        await asyncio.wait_for(done.wait(), 300)
        dead: list[object] = []
        for _ in range(300):  # the last dead letters are written just after their last failure
            dead = [d for d in await app.broker.dead_letters() if d.message.channel == channel]
            if len(dead) >= len(poison):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # nothing more comes: no fourth attempt
    seconds = time.perf_counter() - start

    handled_once = sum(1 for i in range(count) if i not in poison and tries[i] == 1)
    print(
        f"\npoison [{kind}]: {count} events, {len(poison)} poison; handled once {handled_once}, "
        f"dead-lettered {len(dead)}, attempts per poison message {sorted({tries[i] for i in poison})}, "
        f"{seconds:.1f} s"
    )
    assert handled_once == count - len(poison)
    assert all(tries[i] == ATTEMPTS for i in poison)  # exactly N, never N + 1
    assert sorted(d.details[DL_ATTEMPTS] for d in dead) == [str(ATTEMPTS)] * len(poison)  # type: ignore[attr-defined]
    assert {d.details[DL_ERROR_TYPE] for d in dead} == {f"{__name__}.PoisonError"}  # type: ignore[attr-defined]
    assert all("cannot be charged" in d.reason for d in dead)  # type: ignore[attr-defined]
