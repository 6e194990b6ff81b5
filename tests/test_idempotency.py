"""Idempotency stores: one contract run against memory, SQLite, Redis and PostgreSQL, then the inbox transaction
(effects and mark commit together, concurrent consumers, a SIGKILL mid-transaction) and the errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import PG_DSN
from tidings.errors import UsageError
from tidings.reliability.idempotency import (
    IdempotencyStore,
    InboxTransaction,
    MemoryIdempotencyStore,
    PostgresIdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
    StoreError,
)
from tidings.testing.services import free_port, require

REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT = object()


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """One kind of store with its own data (a file, a key prefix, a table) for the length of one test; every
    store it makes shares that data, like the consumers of one deployment."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.clock = FakeClock()
        self.path = tmp_path / "dedupe.db"
        tag = uuid.uuid4().hex[:12]
        self.prefix = f"tidings-test:{tag}:"
        self.table = f"tidings_test_{tag}"
        self.effects_table = f"{self.table}_fx"
        self.stores: list[IdempotencyStore] = []

    def create(self, ttl: Any = DEFAULT, **kwargs: Any) -> IdempotencyStore:
        if ttl is not DEFAULT:
            kwargs["ttl"] = ttl
        store: IdempotencyStore
        if self.kind == "memory":
            store = MemoryIdempotencyStore(clock=self.clock, **kwargs)
        elif self.kind == "sqlite":
            store = SqliteIdempotencyStore(self.path, clock=self.clock, **kwargs)
        elif self.kind == "redis":
            store = RedisIdempotencyStore(REDIS_URL, prefix=self.prefix, **kwargs)
        else:
            store = PostgresIdempotencyStore(PG_DSN, table=self.table, clock=self.clock, **kwargs)
        self.stores.append(store)
        return store

    async def new(self, ttl: Any = DEFAULT, **kwargs: Any) -> IdempotencyStore:
        store = self.create(ttl, **kwargs)
        await store.start()
        return store

    # -- the handler's own table, in the store's database (inbox tests) --

    async def create_effects(self) -> None:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                conn.execute("CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT)")
                conn.commit()
        else:
            await self._pg(f'CREATE TABLE "{self.effects_table}" (event_id TEXT NOT NULL, note TEXT)')

    async def write_effect(self, tx: InboxTransaction[Any], note: str = "") -> None:
        if self.kind == "sqlite":
            tx.connection.execute("INSERT INTO effects VALUES (?, ?)", (tx.event_id, note))
        else:
            await tx.connection.execute(f'INSERT INTO "{self.effects_table}" VALUES (%s, %s)', (tx.event_id, note))

    async def effects(self, event_id: str) -> list[str]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                rows = conn.execute("SELECT note FROM effects WHERE event_id = ?", (event_id,)).fetchall()
        else:
            rows = await self._pg(f'SELECT note FROM "{self.effects_table}" WHERE event_id = %s', (event_id,))
        return [note for (note,) in rows]

    async def _pg(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchall() if cursor.description else []

    async def cleanup(self) -> None:
        for store in self.stores:
            await store.close()
        if self.kind == "redis":
            import redis.asyncio

            client = redis.asyncio.from_url(REDIS_URL)
            try:
                keys = [key async for key in client.scan_iter(match=f"{self.prefix}*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
        elif self.kind == "postgres":
            await self._pg(f'DROP TABLE IF EXISTS "{self.table}", "{self.effects_table}"')


@contextlib.asynccontextmanager
async def backend_of(kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    if kind == "redis":
        require("Redis", "127.0.0.1", 6379)
    elif kind == "postgres":
        require("PostgreSQL", "127.0.0.1", 5432)
    backend = Backend(kind, tmp_path)
    try:
        yield backend
    finally:
        await backend.cleanup()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every store."""
    async with backend_of(request.param, tmp_path) as b:
        yield b


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The stores whose expiry follows an injected clock (Redis expires keys itself: see test_redis_ttl)."""
    async with backend_of(request.param, tmp_path) as b:
        yield b


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with backend_of(request.param, tmp_path) as b:
        yield b


@pytest.fixture(params=["sqlite", "postgres"])
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The stores with an inbox transaction."""
    async with backend_of(request.param, tmp_path) as b:
        await b.create_effects()
        yield b


# -- the contract --


async def test_unseen_then_seen_after_mark(backend: Backend) -> None:
    store = await backend.new()
    assert not await store.seen("billing", "evt-1")
    await store.mark("billing", "evt-1")
    assert await store.seen("billing", "evt-1")
    assert not await store.seen("billing", "evt-2")


async def test_marking_twice_is_fine(backend: Backend) -> None:
    store = await backend.new()
    await store.mark("billing", "evt-1")
    await store.mark("billing", "evt-1")
    assert await store.seen("billing", "evt-1")


async def test_groups_are_independent(backend: Backend) -> None:
    store = await backend.new()
    await store.mark("billing", "evt-1")
    assert not await store.seen("shipping", "evt-1")
    # a separator inside a name must not make two (group, event id) pairs collide
    await store.mark("a:b", "c")
    assert not await store.seen("a", "b:c")
    await store.mark("x%3Ay", "z")
    assert not await store.seen("x:y", "z")


async def test_any_text_is_an_event_id(backend: Backend) -> None:
    store = await backend.new()
    ids = ["", "ünïcödé-✓", "with space", "quote'\"", "x" * 500]
    for event_id in ids:
        await store.mark("g", event_id)
    assert [await store.seen("g", event_id) for event_id in ids] == [True] * len(ids)


async def test_many_concurrent_marks(backend: Backend) -> None:
    store = await backend.new()
    await asyncio.gather(*(store.mark("g", f"evt-{i}") for i in range(50)))
    seen = await asyncio.gather(*(store.seen("g", f"evt-{i}") for i in range(60)))
    assert seen == [True] * 50 + [False] * 10


async def test_start_and_close_are_idempotent_and_calls_before_start_start(backend: Backend) -> None:
    store = backend.create()
    await store.mark("g", "evt-1")  # not started yet: starts itself
    await store.start()
    await store.start()
    await store.close()
    await store.close()
    async with store as same:
        assert same is store
        assert await store.seen("g", "evt-1")
    async with store:  # started again after a close
        await store.mark("g", "evt-2")
        assert await store.seen("g", "evt-2")


async def test_marks_survive_a_new_store(durable: Backend) -> None:
    first = await durable.new()
    await first.mark("g", "evt-1")
    await first.close()
    second = await durable.new()
    assert await second.seen("g", "evt-1")
    assert not await second.seen("g", "evt-2")


async def test_ttl_expiry(clocked: Backend) -> None:
    store = await clocked.new(ttl=10)
    await store.mark("g", "evt-1")
    clocked.clock.now += 9.9
    assert await store.seen("g", "evt-1")
    clocked.clock.now += 0.1
    assert not await store.seen("g", "evt-1")
    # an expired mark is replaced by a new one, with a new expiry
    await store.mark("g", "evt-1")
    assert await store.seen("g", "evt-1")
    clocked.clock.now += 9.9
    assert await store.seen("g", "evt-1")


async def test_a_live_mark_keeps_its_first_expiry(clocked: Backend) -> None:
    store = await clocked.new(ttl=10)
    await store.mark("g", "evt-1")
    clocked.clock.now += 5
    await store.mark("g", "evt-1")  # like SET NX: does not extend the mark
    clocked.clock.now += 5
    assert not await store.seen("g", "evt-1")


async def test_no_ttl_never_expires(clocked: Backend) -> None:
    store = await clocked.new(ttl=None)
    assert store.ttl is None
    await store.mark("g", "evt-1")
    clocked.clock.now += 10 * 365 * 86400
    assert await store.seen("g", "evt-1")
    assert await store.purge_expired() == 0
    assert await store.seen("g", "evt-1")


async def test_purge_expired_counts(clocked: Backend) -> None:
    store = await clocked.new(ttl=10)
    await store.mark("g", "a")
    await store.mark("h", "b")
    clocked.clock.now += 5
    await store.mark("g", "c")
    assert await store.purge_expired() == 0
    clocked.clock.now += 5
    assert await store.purge_expired() == 2
    assert await store.purge_expired() == 0
    assert await store.seen("g", "c")
    assert not await store.seen("g", "a")
    clocked.clock.now += 5
    assert await store.purge_expired() == 1


# -- what only one store does --


async def test_redis_ttl(tmp_path: Path) -> None:
    async with backend_of("redis", tmp_path) as b:
        store = await b.new(ttl=0.3)
        await store.mark("g", "evt-1")
        assert await store.seen("g", "evt-1")
        assert await store.purge_expired() == 0  # Redis expires keys itself
        await asyncio.sleep(0.5)
        assert not await store.seen("g", "evt-1")


async def test_redis_key_layout(tmp_path: Path) -> None:
    async with backend_of("redis", tmp_path) as b:
        store = await b.new(ttl=100)
        assert isinstance(store, RedisIdempotencyStore)
        await store.mark("orders:eu", "evt-1")
        import redis.asyncio

        client = redis.asyncio.from_url(REDIS_URL)
        try:
            key = f"{b.prefix}orders%3Aeu:evt-1"
            assert store.key("orders:eu", "evt-1") == key
            assert 99_000 < await client.pttl(key) <= 100_000
        finally:
            await client.aclose()


async def test_memory_is_bounded_oldest_first() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(max_entries=3, clock=clock)
    for event_id in ["e1", "e2", "e3"]:
        await store.mark("g", event_id)
    await store.mark("g", "e1")  # a live mark is not refreshed, so e1 stays the oldest
    await store.mark("g", "e4")
    assert len(store) == 3
    assert [await store.seen("g", e) for e in ["e1", "e2", "e3", "e4"]] == [False, True, True, True]
    assert store.ttl is None


async def test_memory_purge_stops_at_the_first_live_mark() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(ttl=10, clock=clock)
    for i in range(5):
        await store.mark("g", f"e{i}")
        clock.now += 1
    clock.now += 6  # e0 (t=0) and e1 (t=1) are 11 and 10 s old
    assert await store.purge_expired() == 2
    assert len(store) == 3


async def test_postgres_schema_qualified_table_with_an_odd_name() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"Odd-Name {uuid.uuid4().hex[:8]}"
    store = PostgresIdempotencyStore(PG_DSN, table=f"public.{table}")
    try:
        async with store:
            await store.mark("g", "evt-1")
            assert await store.seen("g", "evt-1")
    finally:
        import psycopg

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(f'DROP TABLE IF EXISTS public."{table}"'.encode())


async def test_postgres_stores_starting_together_create_the_table_once(tmp_path: Path) -> None:
    async with backend_of("postgres", tmp_path) as b:
        stores = [b.create() for _ in range(4)]
        await asyncio.gather(*(store.start() for store in stores))
        await stores[0].mark("g", "evt-1")
        assert await stores[3].seen("g", "evt-1")


async def test_postgres_replaces_a_connection_the_server_dropped(tmp_path: Path) -> None:
    async with backend_of("postgres", tmp_path) as b:
        store = await b.new(pool_size=1)
        assert isinstance(store, PostgresIdempotencyStore)
        await store.mark("g", "evt-1")
        (pooled,) = store._pool._idle  # the one pooled connection, looked at from outside
        await b._pg("SELECT pg_terminate_backend(%s)", (pooled.info.backend_pid,))
        with pytest.raises(StoreError, match="PostgreSQL idempotency store"):
            await store.seen("g", "evt-1")
        assert await store.seen("g", "evt-1")  # a new connection


# -- the inbox --


async def test_inbox_commits_the_effect_and_the_mark_together(sql: Backend) -> None:
    store = await sql.new()
    async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
        assert not tx.duplicate
        await sql.write_effect(tx, "charged")
        # not visible outside the transaction before it commits
        assert not await sql.effects("evt-1")
    assert await sql.effects("evt-1") == ["charged"]
    assert await store.seen("billing", "evt-1")
    assert not await store.seen("shipping", "evt-1")


async def test_inbox_exception_rolls_back_effect_and_mark(sql: Backend) -> None:
    store = await sql.new()

    async def failing_handler() -> None:
        async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
            await sql.write_effect(tx, "charged")
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        await failing_handler()
    assert await sql.effects("evt-1") == []
    assert not await store.seen("billing", "evt-1")
    # the redelivery processes it
    async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
        assert not tx.duplicate
        await sql.write_effect(tx, "retried")
    assert await sql.effects("evt-1") == ["retried"]


async def test_inbox_detects_the_duplicate(sql: Backend) -> None:
    store = await sql.new()
    async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
        await sql.write_effect(tx, "first")
    async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
        assert tx.duplicate
        with pytest.raises(UsageError, match="already processed"):
            _ = tx.connection
    await store.mark("billing", "evt-2")  # a plain mark counts too
    async with store.transaction("billing", "evt-2") as tx:  # type: ignore[attr-defined]
        assert tx.duplicate
    assert await sql.effects("evt-1") == ["first"]


async def test_inbox_takes_over_an_expired_mark(sql: Backend) -> None:
    store = await sql.new(ttl=10)
    await store.mark("billing", "evt-1")
    sql.clock.now += 10
    async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
        assert not tx.duplicate
        await sql.write_effect(tx, "again")
    assert await store.seen("billing", "evt-1")
    sql.clock.now += 9.9
    assert await store.seen("billing", "evt-1")  # the mark's time is the new one


async def _two_consumers(sql: Backend, *, first_fails: bool) -> tuple[bool, bool | None]:
    """Two stores (two consumers) take the same event; the second starts while the first holds its
    transaction open. Returns (whether the second was still waiting after 0.3 s, whether it saw a duplicate)."""
    first, second = await sql.new(), await sql.new()
    entered, release = asyncio.Event(), asyncio.Event()

    async def consume_first() -> None:
        async with first.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
            assert not tx.duplicate
            await sql.write_effect(tx, "first")
            entered.set()
            await release.wait()
            if first_fails:
                raise RuntimeError("first consumer failed")

    async def consume_second() -> bool:
        async with second.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
            if not tx.duplicate:
                await sql.write_effect(tx, "second")
            duplicate: bool = tx.duplicate
            return duplicate

    task1 = asyncio.create_task(consume_first())
    await entered.wait()
    task2 = asyncio.create_task(consume_second())
    await asyncio.sleep(0.3)
    waiting = not task2.done()
    release.set()
    results = await asyncio.gather(task1, task2, return_exceptions=True)
    if first_fails:
        assert isinstance(results[0], RuntimeError)
    else:
        assert results[0] is None
    duplicate = results[1]
    assert isinstance(duplicate, bool), duplicate
    return waiting, duplicate


async def test_inbox_concurrent_consumers_apply_once(sql: Backend) -> None:
    waiting, duplicate = await _two_consumers(sql, first_fails=False)
    assert waiting  # the second consumer waited for the first to finish
    assert duplicate
    assert await sql.effects("evt-1") == ["first"]


async def test_inbox_waiting_consumer_takes_over_when_the_first_fails(sql: Backend) -> None:
    waiting, duplicate = await _two_consumers(sql, first_fails=True)
    assert waiting
    assert not duplicate
    assert await sql.effects("evt-1") == ["second"]


async def test_inbox_handler_errors_propagate_unchanged(sql: Backend) -> None:
    store = await sql.new()
    if sql.kind == "sqlite":
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            async with store.transaction("g", "evt-1") as tx:  # type: ignore[attr-defined]
                tx.connection.execute("INSERT INTO missing VALUES (1)")
    else:
        import psycopg

        with pytest.raises(psycopg.errors.UndefinedTable):
            async with store.transaction("g", "evt-1") as tx:  # type: ignore[attr-defined]
                await tx.connection.execute("INSERT INTO missing VALUES (1)")
    assert not await store.seen("g", "evt-1")
    # the store still works (the connection went back clean, or was replaced)
    async with store.transaction("g", "evt-1") as tx:  # type: ignore[attr-defined]
        await sql.write_effect(tx)
    assert await store.seen("g", "evt-1")


async def test_sqlite_inbox_refuses_a_handler_that_commits_itself(tmp_path: Path) -> None:
    async with backend_of("sqlite", tmp_path) as b:
        await b.create_effects()
        store = await b.new()

        async def committing_handler() -> None:
            async with store.transaction("g", "evt-1") as tx:  # type: ignore[attr-defined]
                await b.write_effect(tx)
                tx.connection.execute("COMMIT")

        with pytest.raises(UsageError, match="ended the inbox transaction itself"):
            await committing_handler()
        assert not await store.seen("g", "evt-1")


def test_sqlite_inbox_across_threads_applies_each_event_once(tmp_path: Path) -> None:
    """Four consumers, each in its own thread with its own event loop and store, all take the same 15 events."""
    path = tmp_path / "dedupe.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT)")
        conn.commit()
    errors: list[BaseException] = []

    async def consume(worker: int) -> None:
        async with SqliteIdempotencyStore(path) as store:
            for i in range(15):
                async with store.transaction("g", f"evt-{i}") as tx:
                    if not tx.duplicate:
                        tx.connection.execute("INSERT INTO effects VALUES (?, ?)", (f"evt-{i}", str(worker)))

    def run(worker: int) -> None:
        try:
            asyncio.run(consume(worker))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with contextlib.closing(sqlite3.connect(path)) as conn:
        counts = conn.execute("SELECT event_id, count(*) FROM effects GROUP BY event_id").fetchall()
        marks = conn.execute("SELECT count(*) FROM tidings_processed").fetchone()[0]
    assert sorted(counts) == sorted((f"evt-{i}", 1) for i in range(15))
    assert marks == 15


_CRASHING_HANDLER = {
    "sqlite": """
        store = SqliteIdempotencyStore(sys.argv[1])
        async with store.transaction("billing", "evt-1") as tx:
            tx.connection.execute("INSERT INTO effects VALUES ('evt-1', 'crashed')")
            os.kill(os.getpid(), signal.SIGKILL)
    """,
    "postgres": """
        store = PostgresIdempotencyStore(sys.argv[2], table=sys.argv[3])
        async with store.transaction("billing", "evt-1") as tx:
            await tx.connection.execute(f'INSERT INTO "{sys.argv[4]}" VALUES (%s, %s)'.encode(), ("evt-1", "crashed"))
            os.kill(os.getpid(), signal.SIGKILL)
    """,
}


async def test_inbox_crash_before_commit_applies_exactly_once(sql: Backend) -> None:
    """A handler SIGKILLed after writing its effect, before the commit: neither effect nor mark remains, and the
    redelivery applies the event once."""
    code = (
        "import asyncio, os, signal, sys\n"
        "from tidings.reliability.idempotency import PostgresIdempotencyStore, SqliteIdempotencyStore\n"
        "async def main():\n"
        + textwrap.indent(textwrap.dedent(_CRASHING_HANDLER[sql.kind]).strip(), "    ")
        + "\nasyncio.run(main())\n"
    )
    await sql.new()  # creates the table, as a deployed consumer would have
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(sql.path), PG_DSN, sql.table, sql.effects_table, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()

    async def handler() -> bool:
        store = await sql.new()
        async with store.transaction("billing", "evt-1") as tx:  # type: ignore[attr-defined]
            if not tx.duplicate:
                await sql.write_effect(tx, "redelivered")
            duplicate: bool = tx.duplicate
            return duplicate

    assert await sql.effects("evt-1") == []
    assert not await handler()
    assert await handler()  # a second redelivery is a duplicate
    assert await sql.effects("evt-1") == ["redelivered"]
    assert await sql.stores[-1].seen("billing", "evt-1")


# -- errors --


def _assert_one_line(error: BaseException, *must_contain: str) -> str:
    message = str(error)
    assert "\n" not in message
    for text in must_contain:
        assert text in message, message
    return message


async def test_redis_unreachable_is_a_store_error() -> None:
    port = free_port()
    store = RedisIdempotencyStore(f"redis://:s3cret@127.0.0.1:{port}/0", timeout=2)
    with pytest.raises(StoreError) as caught:
        await store.start()
    message = _assert_one_line(caught.value, "Redis idempotency store", f"127.0.0.1:{port}", "check that Redis")
    assert "s3cret" not in message
    with pytest.raises(StoreError):
        await store.seen("g", "evt-1")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:hunter2@127.0.0.1:{port}/test",
        "host=127.0.0.1 port={port} user=postgres password=hunter2 dbname=test",
        "host=127.0.0.1 port={port} password='hunter2' dbname=test",
    ],
)
async def test_postgres_unreachable_is_a_store_error_without_the_password(dsn: str) -> None:
    port = free_port()
    store = PostgresIdempotencyStore(dsn.format(port=port), connect_timeout=2)
    with pytest.raises(StoreError) as caught:
        await store.start()
    masked = ":***@" if dsn.startswith("postgresql://") else "password=***"
    message = _assert_one_line(caught.value, "PostgreSQL idempotency store", str(port), masked)
    assert "hunter2" not in message
    assert "hunter2" not in str(caught.value.__cause__)


async def test_sqlite_unusable_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        await SqliteIdempotencyStore(tmp_path / "missing-dir" / "dedupe.db").start()
    _assert_one_line(caught.value, "SQLite idempotency store", "missing-dir", "unable to open")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as caught:
        await SqliteIdempotencyStore(garbage).start()
    _assert_one_line(caught.value, "garbage.db", "not a database")


async def test_sqlite_lock_held_too_long_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "dedupe.db"
    store = SqliteIdempotencyStore(path, busy_timeout=0.1)
    await store.start()
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError) as caught:
                await store.mark("g", "evt-1")
            _assert_one_line(caught.value, "locked", "busy_timeout (0.1 s)")
            with pytest.raises(StoreError, match="locked"):
                async with store.transaction("g", "evt-1"):
                    pytest.fail("must not get the transaction")
            other.execute("ROLLBACK")
        await store.mark("g", "evt-1")  # and it recovers
        assert await store.seen("g", "evt-1")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("create", "blocked", "extra"),
    [
        (RedisIdempotencyStore, "redis", "tidings[redis]"),
        (PostgresIdempotencyStore, "psycopg", "tidings[postgres]"),
    ],
)
def test_a_missing_driver_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, create: Callable[[], object], blocked: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m == blocked or m.startswith(f"{blocked}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(UsageError, match=re.escape(f"pip install '{extra}'")):
        create()


def test_the_module_imports_without_the_drivers() -> None:
    code = (
        "import sys\n"
        "import tidings.reliability.idempotency\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'psycopg'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize(
    "create",
    [
        lambda: MemoryIdempotencyStore(ttl=0),
        lambda: MemoryIdempotencyStore(ttl=-1),
        lambda: MemoryIdempotencyStore(max_entries=0),
        lambda: SqliteIdempotencyStore(":memory:"),
        lambda: PostgresIdempotencyStore(table="a.b.c"),
        lambda: PostgresIdempotencyStore(table=""),
        lambda: PostgresIdempotencyStore(pool_size=0),
        lambda: RedisIdempotencyStore(ttl=0),
    ],
)
def test_bad_arguments_are_usage_errors(create: Callable[[], object]) -> None:
    with pytest.raises(UsageError):
        create()
