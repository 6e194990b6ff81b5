"""What every event store backend does alike: a malformed append fails its own call, never the group commit
it would have joined; and a type-filtered subscription steps over long runs of other types (PostgreSQL reads
the log a window of positions at a time).

PostgreSQL at 127.0.0.1:5432 (a schema of the test's own), SQLite in a temporary folder, and memory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import PG_DSN, drop_pg_schema
from tidings.eventstore.base import ANY, EventStore, InvalidArgument, NewEvent
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.postgres import PostgresEventStore
from tidings.eventstore.sqlite import SqliteEventStore
from tidings.testing.services import require


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        async with MemoryEventStore() as memory:
            yield memory
        return
    if request.param == "sqlite":
        async with SqliteEventStore(tmp_path / "events.db") as sqlite:
            yield sqlite
        return
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = f"tidings_test_{uuid.uuid4().hex[:12]}"
    try:
        async with PostgresEventStore(PG_DSN, schema=schema) as postgres:
            yield postgres
    finally:
        drop_pg_schema(schema)


def event(kind: str = "user.updated", data: object = b"{}") -> NewEvent:
    return NewEvent(uuid.uuid4().hex, kind, data)  # type: ignore[arg-type]


async def test_a_malformed_append_fails_alone_with_a_message_that_says_what_an_event_is(store: EventStore) -> None:
    results = await asyncio.gather(
        store.append("good-1", [event()]),
        store.append("bad", [event(data="not bytes")]),
        store.append("good-2", [event()]),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidArgument)
    assert isinstance(results[1], ValueError)
    assert "data is a str" in str(results[1])
    assert "bytes" in str(results[1])
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    assert await store.stream_version("good-1") == await store.stream_version("good-2") == 1
    for mistake in (lambda: store.append("", [event()]), lambda: store.read_all(limit=-1)):
        with pytest.raises(InvalidArgument):
            await mistake()
    with pytest.raises(InvalidArgument, match="list of event types"):
        await store.read_all(event_types="user.updated")


async def test_a_typed_subscription_steps_over_long_runs_of_other_types(store: EventStore) -> None:
    # more events of other types than one window holds, then the one the subscriber wants
    for start in range(0, 12_000, 1_000):
        await store.append_many([(f"noise-{start}", [event("user.viewed") for _ in range(1_000)], ANY)])
    await store.append("wanted", [event("user.created")])
    subscription = store.subscribe(event_types=["user.created"])
    try:
        first = await asyncio.wait_for(anext(subscription), 30)
        assert (first.stream_id, first.event_type) == ("wanted", "user.created")
        await store.append("wanted", [event("user.created")])  # live, after the catch-up
        second = await asyncio.wait_for(anext(subscription), 30)
        assert second.version == 2
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
