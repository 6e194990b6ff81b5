"""RabbitMQ killed and restarted while the outbox relay publishes 10,000 events: not one is lost.

The test runs a RabbitMQ node of its own (:mod:`tidings.testing.rabbitmq_node`: own node name, ports and data
folder, on loopback), so the machine's shared broker stays up. The scenario:

1. a consumer group (``billing`` on ``order.placed``) subscribes once and leaves: its durable quorum queue
   exists, and keeps every message published from then on; the node is then restarted cleanly, once (see
   below);
2. ``TIDINGS_RESTART_EVENTS`` events (default 10,000) are added to a SQLite outbox, in transactions of 1,000;
3. an :class:`~tidings.reliability.outbox.OutboxRelay` publishes them; after 20 % and again after 60 % were
   confirmed, the node is killed with SIGKILL (a crash: no clean shutdown, the relay's connection drops with
   confirms outstanding), stays down for a moment, and is started again on the same data folder and port;
   the relay must ride it out (backoff, reconnection) and mark every row sent;
4. only then a consumer drains the queue, and every event id of the outbox must be in it.

Consuming after the relay finished keeps the proof simple: what RabbitMQ confirmed before a kill must be in
the queue after it (persistent messages on a quorum queue are on disk when confirmed), and what it had not
confirmed is published again by the relay. Duplicates are allowed (at least once: a batch cut off half-way is
published again whole); losses are not.

Why the clean restart before the kills: RabbitMQ 3.10 (Ra 2.2) registers a new quorum queue's Raft member in
``names.dets``, which reaches the disk only a few seconds later (DETS auto-save) or at a clean shutdown. A node
killed before that forgets the registration, starts an empty member under a new id on restart, and the queue
comes back empty, or without a leader (every publish to it then waits for a confirm that never comes). That is
RabbitMQ losing a queue it had just created, not messages it had confirmed: a clean restart right after the
declaration rules it out and keeps this test about the relay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tidings.app import App, EventContext
from tidings.events.event import Event
from tidings.reliability.outbox import Outbox, OutboxRelay
from tidings.testing.rabbitmq_node import RabbitMQNode, rabbitmq_node, rabbitmq_scripts
from tidings.testing.services import unavailable

EVENTS = int(os.environ.get("TIDINGS_RESTART_EVENTS", "10000"))
#: the node is killed once this share of the events has been confirmed (one kill each)
KILL_AT = (0.2, 0.6)
#: seconds the node stays dead before it is started again
DOWN_FOR = 1.5
PER_TRANSACTION = 1000
#: rows per publish: small enough that each kill lands with rows still to send, even with few events
BATCH = max(1, min(500, EVENTS // 20))
EXCHANGE = "outbox-test"
GROUP = "billing"


class OrderPlaced(Event, type="order.placed", version="1.0"):
    order_id: int
    amount_cents: int


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitMQNode]:
    if rabbitmq_scripts() is None:
        unavailable("rabbitmq-server is not installed: this test starts a RabbitMQ node of its own")
    with rabbitmq_node(tmp_path / "rabbitmq") as node:
        yield node


async def until(
    condition: Callable[[], bool], what: str, timeout: float = 60.0, task: asyncio.Task[None] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if task is not None and task.done():
            task.result()  # a relay that died says why
            raise AssertionError(f"the relay stopped before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def sent_more_than(relay: OutboxRelay, rows: int) -> Callable[[], bool]:
    return lambda: relay.sent > rows


def consumer(url: str, received: list[str]) -> App:
    """The ``billing`` group: records the event id of every delivery (duplicates included)."""
    app = App(url, name="orders")

    @app.subscriber("order.placed", group=GROUP, prefetch=500)
    async def bill(event: OrderPlaced, ctx: EventContext) -> None:
        received.append(ctx.envelope.event_id)

    return app


def add_to_outbox(outbox: Outbox, db: Path, count: int) -> list[str]:
    ids: list[str] = []
    conn = sqlite3.connect(db)
    try:
        outbox.create_table(conn)
        for first in range(0, count, PER_TRANSACTION):
            with conn:  # one transaction
                for i in range(first, min(first + PER_TRANSACTION, count)):
                    event = OrderPlaced(order_id=i, amount_cents=100 + i % 900)
                    ids.append(outbox.add(conn, event, key=f"customer-{i % 16}").event_id)
    finally:
        conn.close()
    return ids


def unsent_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM tidings_outbox WHERE sent_at IS NULL").fetchone()
    finally:
        conn.close()
    return int(count)


async def leftover(url: str, queue: str) -> int:
    """1 if ``queue`` still holds a message (``basic.get``, not acknowledged: closing hands it back), else 0."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        found = await (await channel.get_queue(queue)).get(fail=False)
        return 0 if found is None else 1


def queue_depths(node: RabbitMQNode) -> dict[str, int]:
    """Messages per queue of the node, as ``rabbitmqctl list_queues`` sees them (ready + unacknowledged)."""
    depths: dict[str, int] = {}
    for line in node.ctl("list_queues", "name", "messages", "--no-table-headers").splitlines():
        name, _, messages = line.strip().rpartition("\t")
        if name:
            depths[name] = int(messages)
    return depths


async def test_the_outbox_relay_loses_nothing_when_rabbitmq_is_killed_and_restarted(
    tmp_path: Path, node: RabbitMQNode, caplog: pytest.LogCaptureFixture
) -> None:
    began = time.monotonic()
    caplog.set_level(logging.INFO, logger="tidings.outbox")
    url = f"{node.url}?exchange={EXCHANGE}"
    received: list[str] = []

    # 1. the group's durable queue exists before the first publish (and keeps what arrives while it is away)
    group = consumer(url, received)
    await group.start()
    queue = group.broker.queue_name("order.placed", GROUP)  # type: ignore[attr-defined]
    await group.stop()
    await asyncio.to_thread(node.restart)  # the queue's registration on disk (module docstring)

    # 2. the outbox, filled by the application's transactions
    db = tmp_path / "orders.db"
    ids = add_to_outbox(Outbox(App(url, name="orders")), db, EVENTS)
    assert len(set(ids)) == EVENTS

    # 3. the relay publishes; the node is killed under it, twice
    outages: list[tuple[float, float]] = []  # (node down, relay publishing again after the kill), seconds
    async with OutboxRelay(db, url, batch=BATCH, poll_interval=0.05) as relay:
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:
            for share in KILL_AT:
                target = int(EVENTS * share)
                await until(sent_more_than(relay, target - 1), f"{target} rows sent", task=task)
                killed_at = time.monotonic()
                node.kill()
                await asyncio.sleep(DOWN_FOR)
                await asyncio.to_thread(node.start)  # (the event loop, hence the relay's retries, keep running)
                up_at = time.monotonic()
                sent_when_up = relay.sent
                await until(
                    sent_more_than(relay, min(sent_when_up, EVENTS - 1)),
                    "the relay to publish again after the restart",
                    task=task,
                )
                outages.append((up_at - killed_at, time.monotonic() - killed_at))
            await until(lambda: relay.sent >= EVENTS, f"all {EVENTS} rows sent", timeout=90, task=task)
        finally:
            stop.set()
            try:  # (a publish that is never confirmed would keep run() from seeing stop: do not hang on it)
                await asyncio.wait_for(asyncio.shield(task), 15)
            except TimeoutError:
                task.cancel()
                raise AssertionError(
                    f"the relay did not stop within 15 s of stop.set(), {relay.sent} rows sent"
                ) from None
        assert await relay.pending() == 0
    assert unsent_rows(db) == 0
    relayed_at = time.monotonic()

    warnings = [r.getMessage() for r in caplog.records if r.name == "tidings.outbox" and r.levelno >= logging.WARNING]
    # classic queues: rabbitmqctl counts them exactly (a quorum queue's count is a metric, stale after a restart)
    others = {name: n for name, n in queue_depths(node).items() if name != queue}

    # 4. drain the group's queue: every event at least once, then until nothing more comes (the duplicates)
    group = consumer(url, received)
    async with group:
        deadline = time.monotonic() + 60
        while len(set(received)) < EVENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        seen = -1
        while seen != len(received):  # quiet for 1 s: the queue is drained (prefetch 500, one node)
            seen = len(received)
            await asyncio.sleep(1.0)
    left = await leftover(node.url, queue)
    counts = Counter(received)
    lost = set(ids) - counts.keys()
    unknown = counts.keys() - set(ids)
    duplicates = len(received) - len(counts)
    downs = ", ".join(f"{down:.1f} s (relay publishing again {back:.1f} s after the kill)" for down, back in outages)
    print(
        f"\noutbox over RabbitMQ kill -9 x{len(outages)}: sent {EVENTS}, received {len(counts)} distinct "
        f"({len(received)} deliveries, {duplicates} duplicates), lost {len(lost)}; "
        f"relay failures {len(warnings)}; node down {downs}; "
        f"relay done {relayed_at - began:.1f} s, total {time.monotonic() - began:.1f} s; left in queue {left}"
    )
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not unknown
    assert not left
    assert others  # the unrouted and dead-letter queues...
    assert not any(others.values()), others  # ...are empty: nothing unrouted, nothing dead-lettered
    assert len(outages) == len(KILL_AT)
    assert warnings, "the kills went unnoticed by the relay: were they too late?"
    assert all("\n" not in w for w in warnings)
