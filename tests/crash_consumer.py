"""A consumer for the crash tests, run as its own process: ``python crash_consumer.py URL DB CHANNEL GROUP N``.

Its handler's effect is a row in the ``effects`` table of DB, written in the inbox transaction together with
the event's dedupe mark (``SqliteIdempotencyStore`` on the same file). It runs until DB holds N distinct
effects, then records how many duplicates it absorbed and exits 0. ``TIDINGS_CRASH_AT`` (see
``tidings.testing.crash``) makes it kill itself at a chosen point.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import Any

from tidings.app import App, EventContext
from tidings.brokers.base import broker_from_url
from tidings.reliability.idempotency import SqliteIdempotencyStore
from tidings.reliability.retry import RetryPolicy
from tidings.testing.crash import CrashingBroker, crash_point


async def main(url: str, db: str, channel: str, group: str, expected: int) -> None:
    store = SqliteIdempotencyStore(db)
    app = App(CrashingBroker(broker_from_url(url)), name="crash-consumer", shutdown_timeout=5)

    @app.subscriber(
        channel, group=group, idempotency=store, inbox=True, prefetch=8, retry=RetryPolicy(50, base_delay=0.01)
    )
    async def apply(event: dict[str, Any], context: EventContext) -> None:
        context.connection.execute(
            "INSERT INTO effects (event_id, pid) VALUES (?, ?)", (context.envelope.event_id, os.getpid())
        )
        crash_point("after-effect")

    reader = sqlite3.connect(db, timeout=10)
    async with app:
        while reader.execute("SELECT COUNT(DISTINCT event_id) FROM effects").fetchone()[0] < expected:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the last acks go out
    duplicates = sum(s.duplicates for s in app.subscribers)
    reader.execute("INSERT INTO runs (pid, duplicates) VALUES (?, ?)", (os.getpid(), duplicates))
    reader.commit()
    await store.close()


if __name__ == "__main__":
    url, db, channel, group, count = sys.argv[1:6]
    asyncio.run(main(url, db, channel, group, int(count)))
