"""The SQLite event store against the event store contract (once per durability setting), and what is particular
to it: processes racing on one stream, group commit, another process's lock waited for off the event loop,
one-line errors, the file shrinking after a scavenge, the WAL kept in check."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tidings.errors import UsageError
from tidings.eventstore.base import (
    NO_STREAM,
    AppendResult,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    NewEvent,
    RecordedEvent,
    StreamDeleted,
    WrongExpectedVersion,
)
from tidings.eventstore.sqlite import SqliteEventStore
from tidings.testing.eventstore_contract import EventStoreContract, batch, new_event

T = TypeVar("T")


class TestSqliteEventStore(EventStoreContract):
    synchronous = "normal"

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    def create_store(self) -> EventStore:
        return SqliteEventStore(self.path, synchronous=self.synchronous)  # type: ignore[arg-type]


class TestSqliteEventStoreSynchronousFull(TestSqliteEventStore):
    """``synchronous="full"``: every write goes through the writer thread (an fsync must not block the loop)."""

    synchronous = "full"


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def opened(path: Path, **options: Any) -> AsyncIterator[SqliteEventStore]:
    async with SqliteEventStore(path, **options) as store:
        yield store


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# -- many processes on one stream --


def _contender(path: str, stream: str, rounds: int, barrier: Any, results: Any) -> None:
    """A process of the forced-contention test: each round, read the stream's version, then (once every process
    has read it) append with it."""

    async def contend() -> list[tuple[int, int, bool, int]]:
        outcomes: list[tuple[int, int, bool, int]] = []
        async with SqliteEventStore(path, busy_timeout=60) as store:
            for round_ in range(rounds):
                barrier.wait(60)  # blocks the loop: nothing else runs in it
                version = await store.stream_version(stream)
                barrier.wait(60)  # every process has read the same version: now they race
                try:
                    result = await store.append(stream, [new_event("Contended")], expected_version=version)
                except WrongExpectedVersion as exc:
                    outcomes.append((round_, exc.expected, False, exc.actual))  # type: ignore[arg-type]
                else:
                    outcomes.append((round_, version, True, result.first_version))
        return outcomes

    try:
        results.put(("ok", os.getpid(), asyncio.run(contend())))
    except BaseException as exc:
        barrier.abort()  # the others fail fast (BrokenBarrierError) instead of waiting out the timeout
        results.put(("error", os.getpid(), repr(exc)))


def test_forced_contention_between_four_processes(tmp_path: Path) -> None:
    """Four processes, released together by a barrier each round, append to one stream with the version they all
    read: each round exactly one wins (the next version), the three others get :class:`WrongExpectedVersion`
    with the winner's version; the versions are gapless 1..rounds, and a subscriber in this process sees every
    event once, in order, positions consecutive."""
    processes, rounds, stream = 4, 200, "contended"
    path = tmp_path / "contended.db"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_contender, args=(str(path), stream, rounds, barrier, results)) for _ in range(processes)
    ]

    async def main() -> tuple[list[tuple[int, list[tuple[int, int, bool, int]]]], float, list[RecordedEvent]]:
        async with opened(path) as store:  # the schema exists before the processes race
            received: list[RecordedEvent] = []

            async def follow() -> None:
                async for event in store.subscribe():
                    received.append(event)

            follower = asyncio.create_task(follow())
            started = time.perf_counter()
            for worker in workers:
                worker.start()

            def collect() -> list[tuple[int, list[tuple[int, int, bool, int]]]]:
                reports = []
                for _ in workers:
                    try:
                        status, pid, value = results.get(timeout=180)
                    except queue.Empty:
                        pytest.fail("a contender process did not report within 180 s")
                    assert status == "ok", f"contender {pid} failed: {value}"
                    reports.append((pid, value))
                return reports

            reports = await asyncio.to_thread(collect)
            elapsed = time.perf_counter() - started
            deadline = time.monotonic() + 30  # the follower polls for other processes' commits
            while len(received) < rounds and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            assert await store.stream_version(stream) == rounds
            assert [e.version for e in await store.read_stream(stream)] == list(range(1, rounds + 1))
        return reports, elapsed, received

    try:
        reports, elapsed, received = run(main(), timeout=300)
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    outcomes = [outcome for _, theirs in reports for outcome in theirs]
    assert len(outcomes) == processes * rounds
    for round_ in range(rounds):
        this = [outcome for outcome in outcomes if outcome[0] == round_]
        won = [version for _, _, ok, version in this if ok]
        lost = [(expected, actual) for _, expected, ok, actual in this if not ok]
        assert won == [round_ + 1], f"round {round_}: won {won}"
        assert lost == [(round_, round_ + 1)] * (processes - 1), f"round {round_}: lost {lost}"
    assert [e.version for e in received] == list(range(1, rounds + 1))
    assert [e.position for e in received] == list(range(received[0].position, received[0].position + rounds))
    wins = [sum(1 for _, _, ok, _ in theirs if ok) for _, theirs in reports]
    conflicts = sum(1 for *_, ok, _ in outcomes if not ok)
    print(
        f"\ncontention: {processes} processes x {rounds} rounds, appends won per process {wins}, "
        f"{conflicts} WrongExpectedVersion, versions 1..{rounds} gapless, {elapsed:.2f} s "
        f"({processes * rounds / elapsed:.0f} attempts/s)"
    )


# -- group commit --


def test_concurrent_appends_share_transactions_but_not_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends made together go in far fewer transactions than appends, and each keeps its own outcome: a wrong
    version, a duplicate, a tombstone or a failing ``append_many`` fails that append alone; a retry gets its
    original result; the others' events are written, positions consecutive."""

    async def main() -> None:
        async with opened(tmp_path / "group.db") as store:
            taken = new_event()
            first = await store.append("taken", [taken])
            retried = batch(3)
            original = await store.append("retried", retried)
            await store.delete_stream("gone", hard=True)
            transactions = 0
            transaction = store._transaction

            def counting(conn: sqlite3.Connection, ops: list[Any]) -> Any:
                nonlocal transactions
                transactions += 1
                return transaction(conn, ops)

            monkeypatch.setattr(store, "_transaction", counting)
            good = [store.append(f"group-{i}", batch(1 + i % 3)) for i in range(40)]
            outcomes = await asyncio.gather(
                *good[:20],
                store.append("taken", batch(1), expected_version=5),
                store.append("elsewhere", [taken]),
                store.append("retried", retried, expected_version=NO_STREAM),
                store.append("gone", batch(1)),
                store.append_many([("group-many", batch(2), NO_STREAM), ("taken", batch(1), NO_STREAM)]),
                store.append("twice", [taken._replace(event_id=str(uuid.uuid4()))] * 2),
                *good[20:],
                return_exceptions=True,
            )
            assert transactions <= 5, f"{transactions} transactions for {len(outcomes)} appends"
            results = [o for o in outcomes if isinstance(o, AppendResult)]
            oks, failures = outcomes[:20] + outcomes[26:], outcomes[20:26]
            assert all(isinstance(o, AppendResult) for o in oks), oks
            assert isinstance(failures[0], WrongExpectedVersion)
            assert (failures[0].expected, failures[0].actual) == (5, 1)
            assert isinstance(failures[1], DuplicateEventError)
            assert failures[2] == original
            assert isinstance(failures[3], StreamDeleted)
            assert isinstance(failures[4], WrongExpectedVersion)
            assert isinstance(failures[5], DuplicateEventError)
            written = sorted(p for r in results if r != original for p in range(r.first_position, r.last_position + 1))
            assert written == list(range(first.last_position + 4, first.last_position + 4 + len(written)))
            for i in range(40):
                assert [e.version for e in await store.read_stream(f"group-{i}")] == list(range(1, 2 + i % 3))
            for stream in ("group-many", "elsewhere", "twice"):
                assert await store.stream_version(stream) == 0
            assert await store.stream_version("taken") == 1

    run(main())


def test_an_append_cancelled_before_its_turn_is_not_written(tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(tmp_path / "cancel.db") as store:
            one = asyncio.create_task(store.append("one", batch(1)))
            two = asyncio.create_task(store.append("two", batch(1)))  # the same turn: it waits for a group commit
            await asyncio.sleep(0)
            two.cancel()
            await one
            with pytest.raises(asyncio.CancelledError):
                await two
            await store.append("three", batch(1))
            assert await store.stream_version("two") == 0
            assert (await store.stats()).events == 2

    run(main())


def test_a_task_appending_in_a_tight_loop_lets_others_run(tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(tmp_path / "tight.db") as store:
            turns = 0

            async def ticker() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await asyncio.sleep(0)

            ticking = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = turns
            for _ in range(300):
                await store.append("tight", batch(1))
            ticking.cancel()
            assert turns - before >= 300 // 64, "the appending task never let the loop run"
            assert await store.stream_version("tight") == 300

    run(main())


# -- another process's lock --


def test_a_write_waits_for_another_processs_lock_off_the_event_loop(tmp_path: Path) -> None:
    """Another connection holds the write lock: the append waits for it on the writer thread (the loop keeps
    turning, reads go on, seeing only what is committed), then commits once the lock is released."""
    path = tmp_path / "locked.db"

    async def main() -> None:
        async with opened(path) as store:
            first = await store.append("s", batch(1))
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("INSERT INTO tidings_streams (stream_id, hard_deleted) VALUES ('uncommitted', 1)")
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            ticking = asyncio.create_task(ticker())
            started = time.monotonic()
            waiting = asyncio.create_task(store.append("s", batch(1)))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            assert [e.version for e in await store.read_stream("s")] == [1]  # a reader never waits for the lock
            assert await store.stream_version("uncommitted") == 0  # its tombstone is not committed yet
            holder.execute("COMMIT")
            holder.close()
            result = await asyncio.wait_for(waiting, 10)
            ticking.cancel()
            assert result.first_position == first.last_position + 1
            assert time.monotonic() - started >= 0.5
            assert max(gaps) < 0.25, f"the event loop was held for {max(gaps):.3f} s"

    run(main())


def test_busy_timeout_gives_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"

    async def main() -> None:
        async with opened(path, busy_timeout=0.2) as store:
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(EventStoreError) as caught:
                    await store.append("s", batch(1))
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            message = one_line(caught.value)
            assert str(path) in message
            assert "busy_timeout (0.2 s)" in message
            assert await store.stream_version("s") == 0
            assert (await store.append("s", batch(1))).last_version == 1  # and the store goes on working

    run(main())


# -- errors --


@pytest.mark.parametrize("kind", ["directory", "not a database", "missing folder"])
def test_a_bad_path_is_a_one_line_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "a-folder"
        path.mkdir()
    elif kind == "not a database":
        path = tmp_path / "notes.txt"
        path.write_bytes(b"these are not the bytes of a SQLite database, " * 100)
    else:
        path = tmp_path / "no" / "such" / "folder" / "events.db"

    async def main() -> None:
        store = SqliteEventStore(path)
        with pytest.raises(EventStoreError) as caught:
            await store.start()
        message = one_line(caught.value)
        assert message.startswith(f"SQLite event store {path}: ")
        assert "; " in message  # what went wrong; what to do
        with pytest.raises(EventStoreError, match="not started"):
            await store.append("s", batch(1))

    run(main())


def test_memory_databases_and_bad_options_are_usage_errors() -> None:
    for path in (":memory:", "file::memory:?cache=shared"):
        with pytest.raises(UsageError, match="needs a file"):
            SqliteEventStore(path)
    with pytest.raises(UsageError, match="synchronous"):
        SqliteEventStore("x.db", synchronous="off")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="poll_interval"):
        SqliteEventStore("x.db", poll_interval=0)


def test_caller_mistakes_are_value_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(tmp_path / "mistakes.db") as store:
            for expected in (-1, True, "latest"):
                with pytest.raises(ValueError, match="expected_version"):
                    await store.append("s", batch(1), expected_version=expected)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="negative"):
                await store.read_stream("s", limit=-1)
            with pytest.raises(ValueError, match="a list of event types"):
                await store.read_all(event_types="Created")
            with pytest.raises(UsageError, match="bytes bodies"):
                await store.append("s", [NewEvent(str(uuid.uuid4()), "T", {"not": "bytes"})])  # type: ignore[arg-type]
            assert await store.stream_version("s") == 0

    run(main())


# -- space --


def _size(path: Path) -> int:
    return sum(os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{path}{suffix}"))


@pytest.mark.parametrize("created_by", ["the store", "someone else"])
def test_scavenge_gives_the_space_back(tmp_path: Path, created_by: str) -> None:
    """Deleted events' pages go back to the file system: incrementally in a file the store created, by VACUUM in
    one created without auto_vacuum; the WAL is truncated too."""
    path = tmp_path / "space.db"
    if created_by == "someone else":
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE app_table (x)")

    async def main() -> None:
        async with opened(path) as store:
            body = os.urandom(8000)
            for _ in range(50):
                await store.append("big", [new_event("Big", body) for _i in range(10)])
            await store.append("small", batch(1))
            await store.delete_stream("big", hard=True)
            before = await store.stats()
            assert before.size == _size(path) > 4_000_000
            assert await store.scavenge() == 500
            after = await store.stats()
            assert after.size == _size(path) < 400_000, f"{before.size} -> {after.size} bytes"
            assert (after.events, after.streams) == (1, 1)
            assert [e.version for e in await store.read_stream("small")] == [1]

    run(main())


def test_checkpoints_keep_the_wal_in_check(tmp_path: Path) -> None:
    """The loop's connections never checkpoint (a checkpoint fsyncs): the writer thread does, often enough that
    the WAL does not grow with the log."""
    path = tmp_path / "wal.db"

    async def main() -> None:
        async with opened(path) as store:
            largest = 0
            for i in range(800):  # about 170 MB of WAL frames (random event ids: a page of the id index each)
                await store.append(f"s-{i % 10}", batch(50))
                largest = max(largest, os.path.getsize(f"{path}-wal"))
            assert os.path.getsize(path) > 4_000_000, "nothing was checkpointed into the database file"
            assert largest < 48_000_000, f"the WAL grew to {largest} bytes"

    run(main())


# -- another store object, another process --


def _append_elsewhere(path: str, stream: str, count: int) -> None:
    async def append() -> None:
        async with SqliteEventStore(path) as store:
            for i in range(count):
                await store.append(stream, batch(1, start=i))

    asyncio.run(append())


def test_a_subscription_sees_another_processs_appends(tmp_path: Path) -> None:
    """Commits of another process wake no one here: the subscription finds them at its next poll."""
    path = tmp_path / "feed.db"

    async def main() -> None:
        async with opened(path, poll_interval=0.05) as store:
            received: list[RecordedEvent] = []

            async def follow() -> None:
                async for event in store.subscribe():
                    received.append(event)

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.1)
            context = multiprocessing.get_context("spawn")
            process = context.Process(target=_append_elsewhere, args=(str(path), "elsewhere", 20))
            process.start()
            await asyncio.to_thread(process.join, 60)
            assert process.exitcode == 0
            deadline = time.monotonic() + 10
            while len(received) < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            assert [e.version for e in received] == list(range(1, 21))

    run(main())


def test_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "shared.db"
        async with opened(path) as one, opened(path) as two:
            await one.append("s", batch(2))
            assert await two.stream_version("s") == 2
            with pytest.raises(WrongExpectedVersion):
                await two.append("s", batch(1), expected_version=NO_STREAM)

    run(main())
