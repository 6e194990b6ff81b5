"""Idempotent subscribers in the App: redeliveries skipped by event id, and the inbox transaction in which a
handler's writes commit together with the dedupe mark."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tidings.app import App, EventContext
from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.reliability.idempotency import MemoryIdempotencyStore, SqliteIdempotencyStore
from tidings.reliability.retry import RetryPolicy
from tidings.testing.harness import TestApp

SEED = Path(__file__).resolve().parent.parent / "examples" / "user-service.asyncapi.yaml"


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


async def test_a_redelivered_event_is_handled_once_per_group() -> None:
    app = App("memory://", name="user-service", asyncapi=SEED)
    store = MemoryIdempotencyStore()
    emails: list[int] = []
    logs: list[int] = []

    @app.subscriber("user.created", group="email-service", idempotency=store)
    async def send_welcome(event: UserCreated) -> None:
        emails.append(event.user_id)

    @app.subscriber("user.created", group="log-service", idempotency=store)
    async def log(event: UserCreated) -> None:
        logs.append(event.user_id)

    async with TestApp(app) as t:
        message, _ = app._prepare(UserCreated(user_id=1, email="a@example.com", name="A"), None, None, None, None, None)
        for _ in range(3):  # the broker delivers the same message three times (at least once)
            await app.broker.publish(message)
        await t.settle()
    assert emails == [1]
    assert logs == [1]  # groups are deduplicated apart
    assert [s.duplicates for s in app.subscribers] == [2, 2]


async def test_the_inbox_commits_the_effect_with_the_mark_and_rolls_back_a_failure(tmp_path: Path) -> None:
    db = tmp_path / "billing.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE charges (event_id TEXT, user_id INTEGER)")
    store = SqliteIdempotencyStore(db)
    app = App("memory://", name="billing", asyncapi=SEED)
    calls: list[int] = []

    @app.subscriber(
        "user.created", group="billing", idempotency=store, inbox=True, retry=RetryPolicy(3, base_delay=0.01)
    )
    async def charge(event: UserCreated, context: EventContext) -> None:
        calls.append(event.user_id)
        context.connection.execute("INSERT INTO charges VALUES (?, ?)", (context.envelope.event_id, event.user_id))
        if len(calls) == 1:
            raise ConnectionError("payment gateway timed out")  # after the write: it must roll back

    async with TestApp(app) as t:
        message, envelope = app._prepare(
            UserCreated(user_id=7, email="a@example.com", name="A"), None, None, None, None, None
        )
        await app.broker.publish(message)
        await t.settle()
        await app.broker.publish(message)  # delivered again later: already charged
        await t.settle()
    await store.close()
    with sqlite3.connect(db) as check:
        rows = check.execute("SELECT event_id, user_id FROM charges").fetchall()
    assert calls == [7, 7]  # failed once, then succeeded; the third delivery was a duplicate
    assert rows == [(envelope.event_id, 7)]
    assert app.subscribers[0].duplicates == 1


async def test_an_unavailable_store_fails_closed_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "dedupe.db"
    store = SqliteIdempotencyStore(db, busy_timeout=0.05)
    app = App("memory://", name="billing", asyncapi=SEED)
    handled: list[int] = []

    @app.subscriber("user.created", group="billing", idempotency=store)
    async def charge(event: UserCreated) -> None:
        handled.append(event.user_id)

    async with app:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: marks cannot be written
        sent = await app.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await asyncio.sleep(0.5)
        assert await app.broker.dead_letters() == []  # not given up on, and not acknowledged either
        blocker.execute("ROLLBACK")
        blocker.close()
        await asyncio.wait_for(app.broker.join(), 10)  # type: ignore[attr-defined]
        assert await store.seen("billing", sent.event_id)  # marked, then acknowledged
    await store.close()
    # without the inbox, the handler ran while its mark could not be written, and again after: the window
    # the inbox closes (see the test above)
    assert handled[0] == 1


def test_inbox_needs_a_transactional_store() -> None:
    app = App("memory://")
    with pytest.raises(UsageError, match="inbox=True needs"):
        app.subscriber("user.created", idempotency=MemoryIdempotencyStore(), inbox=True)(lambda event: None)
