"""PostgresEventStore: the event store contract, run twice (appends through the one-statement fast path, and all
through the checked path that otherwise handles only retries, duplicates and races), then what only a shared
database has: many connections and many processes writing at once (a log with no gap a reader could skip, one
winner per version, a subscription following other processes), group commit, races on event ids, a subscription
whose listener is killed, errors without the password.

Every test class or test gets its own schema, dropped at the end. PostgreSQL is expected at 127.0.0.1:5432
(trust auth, database ``test``); unreachable, the tests are skipped, or fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from conftest import PG_DSN
from tidings.errors import UsageError
from tidings.eventstore.base import (
    ANY,
    NO_STREAM,
    AppendResult,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    NewEvent,
    RecordedEvent,
    StreamMetadata,
    WrongExpectedVersion,
)
from tidings.eventstore.postgres import PostgresEventStore
from tidings.testing.eventstore_contract import EventStoreContract, batch, new_event
from tidings.testing.services import free_port


@pytest.fixture
def schema(pg_schema: str) -> str:
    """This file's name for ``pg_schema`` (conftest): a fresh schema, dropped after the test."""
    return pg_schema


class CheckedPathStore(PostgresEventStore):
    """Every append through the checked path (two round trips, the checks in Python), which otherwise runs only
    for retries, duplicates and races: the contract is run against both paths."""

    async def _write_fast(self, *args: Any) -> None:
        return None


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _storage(self, pg_class_schema: str) -> None:
        self.schema = pg_class_schema

    def create_store(self) -> EventStore:
        return PostgresEventStore(PG_DSN, schema=self.schema)


class TestPostgresEventStoreCheckedPath(TestPostgresEventStore):
    def create_store(self) -> EventStore:
        return CheckedPathStore(PG_DSN, schema=self.schema)


@contextlib.asynccontextmanager
async def stores(
    schema: str, count: int, cls: type[PostgresEventStore] = PostgresEventStore, **options: Any
) -> AsyncIterator[list[PostgresEventStore]]:
    opened = [cls(PG_DSN, schema=schema, **options) for _ in range(count)]
    try:
        for store in opened:
            await store.start()
        yield opened
    finally:
        for store in opened:
            await store.close()


# -- the log has no gap a reader could skip past --


@pytest.mark.parametrize("store_class", [PostgresEventStore, CheckedPathStore], ids=["fast", "checked"])
async def test_gapless_log_under_concurrent_writers_from_many_connections(
    schema: str, store_class: type[PostgresEventStore]
) -> None:
    """Six stores (six connections, each group-committing four appenders' batches) append 1-5 events at a time
    to ten streams while a reader polls ``read_all`` from its last position as fast as it can and a subscription
    follows the log. Positions are contiguous, so the reader can check every page at once: it must start right
    after the last position seen. A position committed before a lower one (the sequence hazard) would show up as
    a page starting further on, which fails the test even if the hole fills later."""
    writers, appenders, appends_each = 6, 4, 100
    streams = [f"gap-{i}" for i in range(10)]
    async with stores(schema, 1, page_size=50) as (reader,), stores(schema, writers, cls=store_class) as writing:
        done = asyncio.Event()
        observed: list[RecordedEvent] = []
        pages = 0

        async def read() -> None:
            nonlocal pages
            last = 0
            while True:
                finished = done.is_set()  # read once more after the writers finish
                page = await reader.read_all(from_position=last, limit=300)
                if page:
                    pages += 1
                    got = [e.position for e in page]
                    assert got == list(range(last + 1, last + 1 + len(page))), (
                        f"the reader at position {last} was handed positions {got[:5]}...: a gap it would skip"
                    )
                    observed.extend(page)
                    last = page[-1].position
                elif finished:
                    return

        async def append(store: PostgresEventStore, seed: int) -> int:
            rng = random.Random(seed)
            written = 0
            for _ in range(appends_each):
                events = batch(rng.randint(1, 5), "Gap")
                await store.append(rng.choice(streams), events)
                written += len(events)
            return written

        received: list[RecordedEvent] = []

        async def follow() -> None:
            async for event in reader.subscribe():
                received.append(event)

        follower = asyncio.create_task(follow())
        reading = asyncio.create_task(read())
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(append(store, w * appenders + a) for w, store in enumerate(writing) for a in range(appenders))
        )
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.wait_for(reading, 30)
        total = sum(counts)
        deadline = time.monotonic() + 30
        while len(received) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        assert len(observed) == total
        assert [e.position for e in received] == list(range(1, total + 1))
        assert received == observed
        for stream in streams:
            mine = [e.version for e in observed if e.stream_id == stream]
            assert mine == list(range(1, len(mine) + 1))
        stats = await reader.stats()
        assert (stats.events, stats.last_position) == (total, total)
    appends = writers * appenders * appends_each
    print(
        f"\ngapless ({store_class.__name__}): {writers} connections x {appenders} appenders, {appends} appends, "
        f"{total} events in "
        f"{elapsed:.2f} s ({appends / elapsed:.0f} appends/s); the reader read {pages} pages, never a gap"
    )


async def test_positions_wait_for_the_transaction_that_holds_the_log(schema: str) -> None:
    """The counter row is the lock: while another transaction holds it, an append cannot number its events (and
    so cannot commit ahead of it); it goes on as soon as that transaction ends."""
    async with stores(schema, 1) as (store,):
        first = await store.append("held", batch(1))
        async with await psycopg.AsyncConnection.connect(PG_DSN) as conn:
            await conn.execute(f'SELECT last_position FROM "{schema}".log FOR UPDATE'.encode())
            waiting = asyncio.create_task(store.append("held", batch(1)))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            assert await store.read_all(from_position=first.last_position) == []
            await conn.rollback()
        result = await asyncio.wait_for(waiting, 10)
        assert result.first_position == first.last_position + 1


# -- many processes on one stream --


def _contender(schema: str, stream: str, rounds: int, barrier: Any, results: Any) -> None:
    """A process of the forced-contention test: each round, read the stream's version, wait for the others to
    have read it too, and append with it."""

    async def contend() -> list[tuple[int, int, bool, int]]:
        # (round, the version expected, won, the version written or, for a loser, the stream's actual one; -1 if
        # the error carried another expected version than the one given)
        outcomes: list[tuple[int, int, bool, int]] = []
        async with PostgresEventStore(PG_DSN, schema=schema, pool_size=2) as store:
            for round_ in range(rounds):
                barrier.wait(60)  # blocks the loop: nothing else runs in it
                version = await store.stream_version(stream)
                barrier.wait(60)  # everyone has read the same version: all four race for it
                try:
                    result = await store.append(stream, [new_event("Contended")], expected_version=version)
                except WrongExpectedVersion as exc:
                    outcomes.append((round_, version, False, exc.actual if exc.expected == version else -1))
                else:
                    assert result.first_version == version + 1
                    outcomes.append((round_, version, True, result.first_version))
        return outcomes

    try:
        results.put(("ok", asyncio.run(contend())))
    except BaseException as exc:
        barrier.abort()  # the others fail fast (BrokenBarrierError) instead of waiting out the timeout
        results.put(("error", repr(exc)))


def test_forced_contention_between_four_processes(schema: str) -> None:
    """Four processes, synchronised by a barrier, each round read the same stream's version and (once all have
    read it) append with it: each round exactly one wins, so every version is won once and the won versions are
    gapless; the three others get :class:`WrongExpectedVersion` with the winner's version as the actual one."""
    processes, rounds = 4, 200
    stream = "contended"

    async def create() -> None:
        async with stores(schema, 1):
            pass

    asyncio.run(create())  # the schema, before the processes race to make it
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_contender, args=(schema, stream, rounds, barrier, results)) for _ in range(processes)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes: list[tuple[int, int, bool, int]] = []
    try:
        for _ in workers:
            try:
                status, value = results.get(timeout=120)
            except queue.Empty:
                pytest.fail("a contender process did not report within 120 s")
            assert status == "ok", f"a contender process failed: {value}"
            outcomes += value
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    elapsed = time.perf_counter() - started
    wins = Counter(version for _, version, won, _ in outcomes if won)
    losses = [(version, actual) for _, version, won, actual in outcomes if not won]
    assert len(outcomes) == processes * rounds
    assert set(wins.values()) == {1}, "a version was won twice"
    assert sorted(wins) == list(range(len(wins))), "the won versions have a gap"
    assert all(actual == version + 1 for version, actual in losses)

    async def final() -> tuple[int, list[int]]:
        async with stores(schema, 1) as (store,):
            return await store.stream_version(stream), [e.version for e in await store.read_stream(stream)]

    version, read = asyncio.run(final())
    assert version == len(wins)
    assert read == list(range(1, version + 1))
    per_round = Counter(round_ for round_, _, won, _ in outcomes if won)
    assert per_round == Counter(range(rounds)), "a round without exactly one winner"
    print(
        f"\ncontention: {processes} processes x {rounds} rounds in {elapsed:.1f} s: {len(wins)} versions, each won "
        f"once, gapless; {len(losses)} WrongExpectedVersion (actual = expected + 1); "
        f"{processes * rounds / elapsed:.0f} attempts/s"
    )


def _writer_process(schema: str, stream: str, count: int, results: Any) -> None:
    """Appends ``count`` events to ``stream`` in appends of 1 to 4 (another process than the subscriber's)."""

    async def write() -> None:
        async with PostgresEventStore(PG_DSN, schema=schema, pool_size=1) as store:
            written = 0
            while written < count:
                size = min(1 + written % 4, count - written)
                await store.append(stream, batch(size, "FromAnotherProcess", start=written))
                written += size

    try:
        asyncio.run(write())
        results.put(("ok", stream))
    except BaseException as exc:
        results.put(("error", repr(exc)))


async def test_a_subscription_follows_writers_in_other_processes(schema: str) -> None:
    """Two processes append while a live subscription in this one follows the log (their NOTIFYs wake it): it
    receives every event once, in order, positions consecutive."""
    async with stores(schema, 1) as (store,):
        received: list[RecordedEvent] = []

        async def follow() -> None:
            async for event in store.subscribe():
                received.append(event)

        task = asyncio.create_task(follow())
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        workers = [context.Process(target=_writer_process, args=(schema, f"proc-{i}", 300, results)) for i in range(2)]
        try:
            for worker in workers:
                worker.start()
            for _ in workers:
                status, value = await asyncio.to_thread(results.get, True, 120)
                assert status == "ok", f"a writer process failed: {value}"
            deadline = time.monotonic() + 20
            while len(received) < 600:
                assert time.monotonic() < deadline, f"the subscription got {len(received)} of 600 events"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for worker in workers:
                await asyncio.to_thread(worker.join, 30)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
        assert [e.position for e in received] == list(range(1, 601))
        for stream in ("proc-0", "proc-1"):
            assert [e.version for e in received if e.stream_id == stream] == list(range(1, 301))


# -- group commit, races on event ids --


@pytest.mark.parametrize("with_duplicate", [False, True], ids=["fast", "checked"])
async def test_concurrent_appends_of_one_process_share_transactions_but_not_outcomes(
    schema: str, with_duplicate: bool
) -> None:
    """Appends made together go in a few batches (transactions), and each keeps its own outcome: a wrong version
    (or a duplicate, which sends its whole batch down the checked path) fails that append alone, and a unit of
    ``append_many`` fails whole."""
    async with stores(schema, 1) as (store,):
        taken = new_event()
        await store.append("taken", [taken])
        batches = 0
        write = store._write

        async def counting(batch: Any) -> None:
            nonlocal batches
            batches += 1
            await write(batch)

        fast_path: list[bool] = []  # per batch: whether the function decided (False: the checked path did)
        write_fast = store._write_fast

        async def recording(*args: Any) -> Any:
            outcomes = await write_fast(*args)
            fast_path.append(outcomes is not None)
            return outcomes

        store._write = counting  # type: ignore[method-assign]
        store._write_fast = recording  # type: ignore[method-assign,assignment]
        outcomes = await asyncio.gather(
            *(store.append(f"group-{i}", batch(2)) for i in range(30)),
            store.append("taken", batch(1), expected_version=5),
            store.append_many([("unit-a", batch(1), ANY), ("taken", batch(1), NO_STREAM)]),
            store.append("elsewhere", [taken] if with_duplicate else batch(1)),
            store.append("group-0", batch(1)),
            return_exceptions=True,
        )
        assert 1 <= batches < 5
        assert fast_path[0] is not with_duplicate  # the first batch holds them all
        assert isinstance(outcomes[30], WrongExpectedVersion)
        assert isinstance(outcomes[31], WrongExpectedVersion)
        assert isinstance(outcomes[32], DuplicateEventError if with_duplicate else AppendResult)
        results = [o for o in outcomes if isinstance(o, AppendResult)]
        assert len(results) == 32 - with_duplicate
        spans = sorted((r.first_position, r.last_position) for r in results)
        assert [p for first, last in spans for p in range(first, last + 1)] == list(range(2, 64 - with_duplicate))
        assert await store.stream_version("group-0") == 3
        assert await store.stream_version("unit-a") == 0
        assert await store.stream_version("taken") == 1


async def test_same_event_id_racing_into_two_streams(schema: str) -> None:
    """Two connections append one event id to two streams at once: the checks both pass, the unique index stops
    the second insert, and the retried batch reports a :class:`DuplicateEventError`."""
    async with stores(schema, 2) as (one, two):
        for round_ in range(20):
            event = new_event()
            outcomes = await asyncio.gather(
                one.append(f"left-{round_}", [event]), two.append(f"right-{round_}", [event]), return_exceptions=True
            )
            assert sorted(type(o).__name__ for o in outcomes) == ["AppendResult", "DuplicateEventError"], outcomes
        assert (await one.stats()).events == 20


async def test_same_append_retried_concurrently_is_written_once(schema: str) -> None:
    async with stores(schema, 2) as (one, two):
        for round_ in range(20):
            events = batch(3)
            first, second = await asyncio.gather(
                one.append(f"retry-{round_}", events, expected_version=0),
                two.append(f"retry-{round_}", events, expected_version=0),
            )
            assert first == second
            assert await one.stream_version(f"retry-{round_}") == 3


# -- subscriptions --


async def test_subscription_survives_its_listener_being_killed(schema: str) -> None:
    """The server drops the subscription's LISTEN connection: it listens again (or polls) and loses nothing."""
    async with stores(schema, 2, poll_interval=0.2) as (store, writer):
        received: list[RecordedEvent] = []

        async def follow() -> None:
            async for event in store.subscribe():
                received.append(event)

        async def wait_for(count: int) -> None:
            deadline = time.monotonic() + 10
            while len(received) < count:
                assert time.monotonic() < deadline, f"got {len(received)} of {count} events"
                await asyncio.sleep(0.01)

        task = asyncio.create_task(follow())
        try:
            await writer.append("feed", batch(2))
            await wait_for(2)
            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as admin:
                cursor = await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
                    (f'LISTEN "{schema}.appended"',),
                )
                assert [row[0] for row in await cursor.fetchall()] == [True]
            for i in range(3):
                await writer.append("feed", batch(1))
                await wait_for(3 + i)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [e.version for e in received] == [1, 2, 3, 4, 5]


# -- errors, options --


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:hunter2@127.0.0.1:{port}/test",
        "host=127.0.0.1 port={port} user=postgres password=hunter2 dbname=test",
    ],
)
async def test_unreachable_is_an_event_store_error_without_the_password(dsn: str) -> None:
    store = PostgresEventStore(dsn.format(port=free_port()), schema="nowhere", connect_timeout=1)
    with pytest.raises(EventStoreError) as caught:
        await store.start()
    message = str(caught.value)
    assert "hunter2" not in message
    assert "\n" not in message
    assert "***" in message
    assert "hunter2" not in repr(store)
    with pytest.raises(EventStoreError):
        await store.append("s", batch(1))


def test_options_are_checked() -> None:
    for bad in ("", "has-dash", 'quote"', "a.b", "x" * 60):
        with pytest.raises(UsageError):
            PostgresEventStore(PG_DSN, schema=bad)
    with pytest.raises(UsageError):
        PostgresEventStore(PG_DSN, pool_size=0)
    with pytest.raises(UsageError):
        PostgresEventStore(PG_DSN, poll_interval=0)


async def test_bad_arguments_are_usage_errors(schema: str) -> None:
    async with stores(schema, 1) as (store,):
        with pytest.raises(UsageError):
            await store.append("", batch(1))
        with pytest.raises(UsageError):
            await store.append("s", batch(1), expected_version=-1)
        with pytest.raises(UsageError):
            await store.append("s", batch(1), expected_version=True)
        with pytest.raises(UsageError):
            await store.append("s", [("id", "T", b"")])  # type: ignore[list-item]
        assert await store.stream_version("s") == 0
        assert (await store.append("s", batch(1), expected_version=ANY)).first_version == 1


async def test_stats_size_is_the_relations_size(schema: str) -> None:
    async with stores(schema, 1) as (store,):
        await store.append("sized", [NewEvent(str(uuid.uuid4()), "Big", bytes(200_000))])
        assert (await store.stats()).size > 8192


@pytest.mark.parametrize("store_class", [PostgresEventStore, CheckedPathStore], ids=["fast", "checked"])
async def test_an_injected_clock_stamps_events_and_ages_them(
    schema: str, store_class: type[PostgresEventStore]
) -> None:
    """``clock``: ``recorded_at`` and ``max_age`` follow it (by default they follow the server's clock)."""
    now = [1_000_000.0]
    async with stores(schema, 1, cls=store_class, clock=lambda: now[0]) as (store,):
        fast = await store.append("aged", batch(2))
        now[0] += 5
        checked = await store.append_many([("aged", batch(1), 2), ("aged", [fast_event := new_event()], 3)])
        assert [e.recorded_at for e in await store.read_stream("aged")] == [1_000_000.0] * 2 + [1_000_005.0] * 2
        await store.set_stream_metadata("aged", StreamMetadata(max_age=10))
        now[0] += 7  # the first two are 12 s old, the others 7 s
        assert [e.version for e in await store.read_stream("aged")] == [3, 4]
        assert await store.append("aged", [fast_event]) == checked[1]  # a retry, through the checked path
        assert await store.scavenge() == 2
        assert [e.version for e in await store.read_all()] == [3, 4]
        assert fast.first_position == 1
