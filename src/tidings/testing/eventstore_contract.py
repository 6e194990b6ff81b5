"""The event store contract: one test suite that every :class:`~tidings.eventstore.base.EventStore` backend must pass.

Subclass :class:`EventStoreContract` in a test module (its name must start with ``Test`` for pytest to collect
it) and give it the one hook, :meth:`EventStoreContract.create_store`, which returns a new, *unstarted* store::

    from tidings.testing.eventstore_contract import EventStoreContract
    from tidings.eventstore.sqlite import SqliteEventStore

    class TestSqliteEventStore(EventStoreContract):
        @pytest.fixture(autouse=True)
        def _database(self, tmp_path):
            self.path = tmp_path / "events.db"

        def create_store(self):
            return SqliteEventStore(self.path)

The hook is a plain function (not a coroutine): creating a store does no I/O, :meth:`EventStore.start` does, and
the suite starts and closes every store itself. Each call must return a store on the same backing storage as the
previous calls of the same test: the concurrency scenarios open two or three stores at once (two connections
racing), the reopen scenario closes one and opens another. Pytest makes a new instance of the class per test, so
a fixture that sets attributes on ``self`` is the way to give each test its own storage. ``durable = False`` on
the subclass says the storage does not outlive the process (memory): ``stats().size`` is then not required
to be positive (the other scenarios all run, the reopening one too: a memory store reopened on the same storage
object has everything).

What is checked (the semantics the port's docstrings leave open are fixed here, and listed in the docstring of
each scenario that fixes them):

- appending and reading back: every field of :class:`RecordedEvent` round-trips, versions from 1, positions
  consecutive, ``recorded_at`` in seconds since the epoch; an empty batch is a :class:`ValueError`;
- ``expected_version``: ``ANY``, ``NO_STREAM``, ``STREAM_EXISTS`` and exact versions (``0`` = no stream), each
  failing with :class:`WrongExpectedVersion` carrying what was expected and the actual version, writing nothing;
- idempotency by event id: a retry returns the original :class:`AppendResult` (whatever ``expected_version`` it
  carries) and writes nothing; other content, another stream, a partial overlap, another order, or an id twice
  in one batch raise :class:`DuplicateEventError` and write nothing;
- ``append_many``: results in the order given, positions in that order, all or nothing (a failing check leaves
  no stream changed and no position used), one stream twice applies in order;
- ``read_stream`` forwards and backwards from a version (inclusive) with a limit; ``read_all`` forwards after a
  position and backwards before it (``0``: the end), newest first, paged with ``limit``, filtered by
  ``event_types`` (the limit counts matching events; an empty list matches nothing);
- the log: positions strictly increasing, consecutive (no holes, not even after failed appends), in commit
  order, never reused after a scavenge; ``stats().last_position`` is the highest position ever handed out;
- concurrency over two connections: two appends with the same expected version race, exactly one wins and the
  other gets ``actual == expected + 1``; ``NO_STREAM`` races likewise; ``ANY`` appends never fail and get
  distinct versions; a subscriber sees concurrent writers' events with no gap and no duplicate;
- catch-up subscriptions: history after ``from_position`` then live events (appended through this store or
  another one), in order, exactly once, filtered by ``event_types``; breaking out of the loop, cancelling the
  task, and closing the store (which ends a live subscription) all end cleanly;
- 1,000 events in one append; 1 MiB, empty and non-UTF-8 bodies and metadata byte for byte; Unicode stream ids,
  ids with SQL wildcards and quotes, case-sensitive ids;
- stream metadata: round trip, defaults, set before the stream exists; ``max_count``, ``truncate_before`` and
  ``max_age`` hide events from ``read_stream`` at once but not from ``read_all`` and ``subscribe`` until
  :meth:`EventStore.scavenge` removes them (KurrentDB's behaviour); ``stream_version`` never changes;
- deletes: soft (reads empty, version carries on, writable again, metadata untouched), hard
  (:class:`StreamDeleted` on every per-stream operation, also for a stream that never existed); both leave the
  log at the next scavenge, which returns how many events it removed (0 the second time);
- ``stats()`` counts, start and close idempotent, :class:`EventStoreError` before start and after close, and
  everything still there through a store reopened on the same storage.

The scenarios are plain (synchronous) test methods that each run their own event loop with
:func:`asyncio.run`, so the suite needs pytest but no asyncio plugin. Waiting for a subscription is on an event
with a timeout (:attr:`EventStoreContract.timeout`), never a sleep; only ``max_age`` polls (time has to pass).
Stream names and event types are unique per test, so a database shared between tests does not mix their
events; the scenarios do assume that nothing else writes to the storage while one runs (they check that this
test's positions are consecutive, and the exact counts of a scavenge, which first clears what other tests
left to scavenge).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias

import pytest

from tidings.eventstore.base import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamDeleted,
    StreamMetadata,
    WrongExpectedVersion,
)


def new_event(
    event_type: str = "Happened",
    data: bytes = b"{}",
    *,
    metadata: bytes = b"{}",
    schema_version: str = "1.0",
    event_id: str | None = None,
) -> NewEvent:
    """A :class:`NewEvent` with a fresh UUID (the suite only ever uses canonical UUID strings as ids)."""
    return NewEvent(event_id or str(uuid.uuid4()), event_type, data, metadata, schema_version)


def batch(count: int, event_type: str = "Happened", start: int = 0) -> list[NewEvent]:
    """``count`` events whose bodies number them (``{"n": start}``, ...)."""
    return [new_event(event_type, b'{"n": %d}' % n) for n in range(start, start + count)]


def ids(events: Iterable[RecordedEvent | NewEvent]) -> list[str]:
    return [event.event_id for event in events]


def versions(events: Iterable[RecordedEvent]) -> list[int]:
    return [event.version for event in events]


def positions(events: Iterable[RecordedEvent]) -> list[int]:
    return [event.position for event in events]


def assert_consecutive(numbers: Sequence[int], what: str = "positions") -> None:
    """``numbers`` are strictly increasing by one (no hole, no repeat)."""
    if numbers:
        assert list(numbers) == list(range(numbers[0], numbers[0] + len(numbers))), f"{what} are not consecutive"


class Collector:
    """Runs a subscription in a task and records what it yields; a scenario waits on it with a timeout."""

    def __init__(self, subscription: AsyncIterator[RecordedEvent], *, timeout: float) -> None:
        self.timeout = timeout
        self.events: list[RecordedEvent] = []
        self.finished = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._run(subscription))

    async def _run(self, subscription: AsyncIterator[RecordedEvent]) -> None:
        try:
            async for event in subscription:
                self.events.append(event)
                self._changed.set()
        except Exception as exc:  # reported by the waits, which fail the scenario with it
            self.error = exc
        finally:
            self.finished = True
            self._changed.set()

    def ids(self) -> list[str]:
        return ids(self.events)

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Return once ``condition()`` holds; fail the test, saying ``what`` was awaited, after the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._changed.clear()  # cleared before the check: a change after it wakes the wait below
            if condition():
                return
            if self.error is not None:
                raise AssertionError(f"the subscription failed while waiting for {what}") from self.error
            if self.finished:
                raise AssertionError(f"the subscription ended while waiting for {what}; got {len(self.events)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.events)} events")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_ids(self, expected: Iterable[str], what: str = "") -> None:
        wanted = set(expected)
        await self.wait_for(lambda: wanted <= set(self.ids()), what or f"{len(wanted)} events")

    async def wait_finished(self) -> None:
        await self.wait_for(lambda: self.finished, "the subscription to end")

    async def stop(self) -> None:
        """Cancel the task (which closes the subscription's generator) and wait for it."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


Scenario: TypeAlias = Callable[[Any, EventStore], Awaitable[None]]


def scenario(fn: Scenario) -> Callable[[Any], None]:
    """Turn ``async def test_x(self, store)`` into a plain test method that runs it on a started store.

    (Only the name and docstring are copied: a ``__wrapped__`` would make pytest look for a ``store`` fixture.)
    """

    def test(self: EventStoreContract) -> None:
        self.run(fn)

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    return test


class EventStoreContract:
    """Subclass it and implement :meth:`create_store` (see the module documentation)."""

    #: seconds any one wait of a scenario may take before the test fails
    timeout: float = 20.0
    #: False for a store whose storage does not outlive the process (memory): its ``stats().size`` may be 0
    durable: bool = True

    def create_store(self) -> EventStore:
        """A new, unstarted store on this test's backing storage."""
        raise NotImplementedError("an EventStoreContract subclass implements create_store()")

    # -- helpers --

    def run(self, fn: Scenario, *, start: bool = True) -> None:
        """Run ``fn`` in a new event loop on a new store (started and closed around it unless ``start=False``).

        What the loop reports to its exception handler fails the test too: a background task of the store that
        died with an error nobody retrieved, or a subscription abandoned in the middle of its loop that raises
        when the loop closes it at the end (after the store was closed).
        """
        reported: list[str] = []

        def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            reported.append(f"{context.get('message')}: {context.get('exception')!r}")

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(report)
            store = self.create_store()
            if not start:
                await asyncio.wait_for(fn(self, store), self.timeout * 3)
                return
            await asyncio.wait_for(store.start(), self.timeout)
            try:
                await asyncio.wait_for(fn(self, store), self.timeout * 3)
            except BaseException:
                with contextlib.suppress(Exception):  # the scenario's own failure is the one to report
                    await asyncio.wait_for(store.close(), self.timeout)
                raise
            await asyncio.wait_for(store.close(), self.timeout)

        asyncio.run(main())
        assert not reported, f"the event loop reported errors: {reported}"

    def unique(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"

    @contextlib.asynccontextmanager
    async def other_store(self) -> AsyncIterator[EventStore]:
        """Another started store on the same storage (another connection), closed at the end."""
        store = self.create_store()
        await asyncio.wait_for(store.start(), self.timeout)
        try:
            yield store
        finally:
            await asyncio.wait_for(store.close(), self.timeout)

    def collect(
        self, store: EventStore, *, from_position: int = 0, event_types: Sequence[str] | None = None
    ) -> Collector:
        return Collector(store.subscribe(from_position=from_position, event_types=event_types), timeout=self.timeout)

    async def head(self, store: EventStore) -> int:
        """The position of the last event in the log (0: empty): what a scenario's own events come after."""
        last = await store.read_all(backwards=True, limit=1)
        return last[0].position if last else 0

    async def log(self, store: EventStore, after: int, streams: Iterable[str] | None = None) -> list[RecordedEvent]:
        """The whole log after ``after``, paged forwards, keeping only ``streams`` if given."""
        wanted = None if streams is None else set(streams)
        found: list[RecordedEvent] = []
        while True:
            page = await store.read_all(from_position=after, limit=500)
            if not page:
                return found
            found += [event for event in page if wanted is None or event.stream_id in wanted]
            after = page[-1].position

    async def flush_scavenge(self, store: EventStore) -> None:
        """Scavenge what earlier tests left, so that the next scavenge counts only this test's events."""
        await store.scavenge()

    # -- appending and reading back --

    @scenario
    async def test_append_and_read_back(self, store: EventStore) -> None:
        stream = self.unique("user")
        sent = [
            new_event("UserRegistered", b'{"id": 1}', metadata=b'{"correlation_id": "c1"}', schema_version="2.1"),
            new_event("UserRenamed", b'{"name": "Ann"}'),
        ]
        before = time.time()
        result = await store.append(stream, sent)
        after = time.time()
        assert result.stream_id == stream
        assert (result.first_version, result.last_version) == (1, 2)
        assert result.last_position == result.first_position + 1
        assert result.first_position >= 1
        read = await store.read_stream(stream)
        assert [(e.stream_id, e.version, e.position) for e in read] == [
            (stream, 1, result.first_position),
            (stream, 2, result.last_position),
        ]
        for got, want in zip(read, sent, strict=True):
            assert (got.event_id, got.event_type, got.schema_version, got.data, got.metadata) == (
                want.event_id,
                want.event_type,
                want.schema_version,
                want.data,
                want.metadata,
            )
            assert isinstance(got.data, bytes)
            assert isinstance(got.metadata, bytes)
            # seconds since the epoch (not ms); a little slack for a database server's own clock
            assert before - 60 <= got.recorded_at <= after + 60
        assert await store.stream_version(stream) == 2
        assert await store.read_all(from_position=result.first_position - 1, limit=2) == read

    @scenario
    async def test_versions_and_positions_continue(self, store: EventStore) -> None:
        stream = self.unique("order")
        first = await store.append(stream, batch(3))
        second = await store.append(stream, batch(2, start=3))
        assert (second.first_version, second.last_version) == (4, 5)
        assert second.first_position == first.last_position + 1
        assert versions(await store.read_stream(stream)) == [1, 2, 3, 4, 5]
        assert await store.stream_version(stream) == 5

    @scenario
    async def test_unknown_stream(self, store: EventStore) -> None:
        """A stream never written reads as empty (not an error), is at version 0, has default metadata."""
        stream = self.unique("nobody")
        assert await store.read_stream(stream) == []
        assert await store.read_stream(stream, backwards=True) == []
        assert await store.stream_version(stream) == 0
        assert await store.stream_metadata(stream) == StreamMetadata()

    @scenario
    async def test_empty_append_is_a_value_error(self, store: EventStore) -> None:
        """An empty batch is a caller's mistake (:class:`ValueError`), in ``append`` and in any entry of
        ``append_many``; ``append_many([])`` is ``[]``."""
        stream = self.unique("empty")
        with pytest.raises(ValueError, match=r"."):
            await store.append(stream, [])
        with pytest.raises(ValueError, match=r"."):
            await store.append_many([(stream, batch(1), ANY), (self.unique("other"), [], ANY)])
        assert await store.append_many([]) == []
        assert await store.stream_version(stream) == 0

    # -- expected_version --

    @scenario
    async def test_expected_version_no_stream(self, store: EventStore) -> None:
        stream = self.unique("account")
        await store.append(stream, batch(2), expected_version=NO_STREAM)
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append(stream, batch(1), expected_version=NO_STREAM)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (stream, NO_STREAM, 2)
        assert await store.stream_version(stream) == 2

    @scenario
    async def test_expected_version_stream_exists(self, store: EventStore) -> None:
        stream = self.unique("account")
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append(stream, batch(1), expected_version=STREAM_EXISTS)
        assert (caught.value.expected, caught.value.actual) == (STREAM_EXISTS, 0)
        assert await store.stream_version(stream) == 0
        await store.append(stream, batch(1))
        result = await store.append(stream, batch(1), expected_version=STREAM_EXISTS)
        assert result.first_version == 2

    @scenario
    async def test_expected_version_exact(self, store: EventStore) -> None:
        """An exact version is the number of events the stream must hold; ``0`` means no stream."""
        stream = self.unique("account")
        assert (await store.append(stream, batch(2), expected_version=0)).last_version == 2
        assert (await store.append(stream, batch(1), expected_version=2)).last_version == 3
        for wrong in (0, 2, 4, 10):
            with pytest.raises(WrongExpectedVersion) as caught:
                await store.append(stream, batch(1), expected_version=wrong)
            assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (stream, wrong, 3)
        assert await store.stream_version(stream) == 3
        assert versions(await store.read_stream(stream)) == [1, 2, 3]

    @scenario
    async def test_expected_version_any(self, store: EventStore) -> None:
        stream = self.unique("account")
        await store.append(stream, batch(1), expected_version=ANY)
        await store.append(stream, batch(1), expected_version=ANY)
        assert await store.stream_version(stream) == 2

    @scenario
    async def test_wrong_expected_version_writes_nothing(self, store: EventStore) -> None:
        """A failed check uses no position either: the next append's first position follows the last one."""
        stream = self.unique("account")
        first = await store.append(stream, batch(1))
        with pytest.raises(WrongExpectedVersion):
            await store.append(stream, batch(3), expected_version=5)
        after = await store.append(stream, batch(1))
        assert after.first_position == first.last_position + 1
        assert after.first_version == 2
        assert len(await self.log(store, first.first_position - 1, [stream])) == 2

    # -- idempotency --

    @scenario
    async def test_retry_returns_the_original_result_and_writes_nothing(self, store: EventStore) -> None:
        """A retry is recognised before ``expected_version`` is checked: the retry of an append made with
        ``NO_STREAM`` or an exact version returns the original result although the stream has moved on."""
        stream = self.unique("payment")
        events = batch(3)
        original = await store.append(stream, events, expected_version=NO_STREAM)
        later = await store.append(stream, batch(1))
        assert await store.append(stream, events, expected_version=NO_STREAM) == original
        assert await store.append(stream, events, expected_version=0) == original
        assert await store.append(stream, events) == original
        assert await store.append_many([(stream, events, NO_STREAM)]) == [original]
        # a retry of part of an earlier append (in order): the result covers those events
        part = await store.append(stream, events[1:])
        assert part == AppendResult(stream, 2, 3, original.first_position + 1, original.last_position)
        assert await store.stream_version(stream) == 4
        assert len(await self.log(store, original.first_position - 1, [stream])) == 4
        assert (await store.append(stream, batch(1))).first_position == later.last_position + 1

    @scenario
    async def test_same_id_with_other_content_is_a_duplicate(self, store: EventStore) -> None:
        stream = self.unique("payment")
        event = new_event("Paid", b'{"amount": 1}', metadata=b'{"a": 1}', schema_version="1.0")
        await store.append(stream, [event])
        for changed in (
            event._replace(data=b'{"amount": 2}'),
            event._replace(event_type="Refunded"),
            event._replace(metadata=b'{"a": 2}'),
            event._replace(schema_version="2.0"),
        ):
            with pytest.raises(DuplicateEventError):
                await store.append(stream, [changed])
        assert await store.stream_version(stream) == 1

    @scenario
    async def test_same_id_in_another_stream_is_a_duplicate(self, store: EventStore) -> None:
        """Event ids are unique in the whole store, not per stream."""
        stream, other = self.unique("payment"), self.unique("payment")
        event = new_event("Paid")
        await store.append(stream, [event])
        with pytest.raises(DuplicateEventError):
            await store.append(other, [event])
        with pytest.raises(DuplicateEventError):
            await store.append_many([(self.unique("third"), batch(1), ANY), (other, [event], ANY)])
        assert await store.stream_version(other) == 0

    @scenario
    async def test_partial_overlap_is_a_duplicate(self, store: EventStore) -> None:
        """Some ids already in the stream, some new: :class:`DuplicateEventError`, and the new ones are not
        written either. So are the same ids in another order, and one id twice in a batch."""
        stream = self.unique("payment")
        events = batch(3)
        await store.append(stream, events)
        for bad in (
            [*events[1:], new_event()],  # overlap at the end, then a new one
            [new_event(), events[0]],  # a new one, then one already there
            [events[1], events[0]],  # all there, another order
            [events[0], events[2]],  # all there, not consecutive
        ):
            with pytest.raises(DuplicateEventError):
                await store.append(stream, bad)
        twice = new_event()
        with pytest.raises(DuplicateEventError):
            await store.append(self.unique("fresh"), [twice, twice])
        assert await store.stream_version(stream) == 3
        assert ids(await store.read_stream(stream)) == ids(events)

    # -- append_many --

    @scenario
    async def test_append_many(self, store: EventStore) -> None:
        """Results come in the order of the entries, and so do the positions of their events."""
        a, b, c = self.unique("a"), self.unique("b"), self.unique("c")
        await store.append(b, batch(2))
        results = await store.append_many([(a, batch(2), NO_STREAM), (b, batch(3), 2), (c, batch(1), ANY)])
        assert [(r.stream_id, r.first_version, r.last_version) for r in results] == [(a, 1, 2), (b, 3, 5), (c, 1, 1)]
        assert results[1].first_position == results[0].last_position + 1
        assert results[2].first_position == results[1].last_position + 1
        log = await self.log(store, results[0].first_position - 1, [a, b, c])
        assert [(e.stream_id, e.version) for e in log] == [(a, 1), (a, 2), (b, 3), (b, 4), (b, 5), (c, 1)]

    @scenario
    async def test_append_many_is_all_or_nothing(self, store: EventStore) -> None:
        a, b, gone = self.unique("a"), self.unique("b"), self.unique("gone")
        first = await store.append(a, batch(1))
        await store.delete_stream(gone, hard=True)
        existing = new_event()
        await store.append(b, [existing])
        failing: list[tuple[type[Exception], list[tuple[str, Sequence[NewEvent], ExpectedVersion]]]] = [
            (WrongExpectedVersion, [(a, batch(2), 1), (b, batch(1), 5)]),
            (WrongExpectedVersion, [(a, batch(2), ANY), (self.unique("new"), batch(1), STREAM_EXISTS)]),
            (DuplicateEventError, [(a, batch(2), ANY), (self.unique("new"), [existing], ANY)]),
            (StreamDeleted, [(a, batch(2), ANY), (gone, batch(1), ANY)]),
        ]
        for error, appends in failing:
            with pytest.raises(error):
                await store.append_many(appends)
            assert await store.stream_version(a) == 1
            assert await store.stream_version(b) == 1
        after = await store.append(a, batch(1))
        assert after.first_position == first.last_position + 2  # b's event, then this one: nothing in between
        assert len(await self.log(store, first.first_position - 1, [a, b])) == 3

    @scenario
    async def test_append_many_same_stream_twice_applies_in_order(self, store: EventStore) -> None:
        """Entries are applied in order, as if appended one after the other in one transaction: the second
        entry's ``expected_version`` sees the first entry's events."""
        stream = self.unique("twice")
        results = await store.append_many([(stream, batch(2), NO_STREAM), (stream, batch(1), 2)])
        assert [(r.first_version, r.last_version) for r in results] == [(1, 2), (3, 3)]
        with pytest.raises(WrongExpectedVersion):
            await store.append_many([(stream, batch(1), 3), (stream, batch(1), 3)])
        assert await store.stream_version(stream) == 3

    # -- reading --

    @scenario
    async def test_read_stream_directions_and_limits(self, store: EventStore) -> None:
        """``from_version`` is inclusive; backwards returns newest first; ``limit=0`` returns nothing."""
        stream = self.unique("ledger")
        await store.append(stream, batch(10))
        assert versions(await store.read_stream(stream, from_version=4)) == [4, 5, 6, 7, 8, 9, 10]
        assert versions(await store.read_stream(stream, from_version=4, limit=3)) == [4, 5, 6]
        assert versions(await store.read_stream(stream, limit=2)) == [1, 2]
        assert versions(await store.read_stream(stream, backwards=True)) == list(range(10, 0, -1))
        assert versions(await store.read_stream(stream, backwards=True, limit=3)) == [10, 9, 8]
        assert versions(await store.read_stream(stream, from_version=4, backwards=True)) == [4, 3, 2, 1]
        assert versions(await store.read_stream(stream, from_version=4, backwards=True, limit=2)) == [4, 3]
        assert await store.read_stream(stream, from_version=11) == []
        assert versions(await store.read_stream(stream, from_version=50, backwards=True, limit=1)) == [10]
        assert await store.read_stream(stream, limit=0) == []

    @scenario
    async def test_read_all_directions_and_paging(self, store: EventStore) -> None:
        """Forwards: positions after ``from_position``, oldest first. Backwards: positions before it (``0``: from
        the end), newest first. Paging either way with ``limit`` gives the whole log once."""
        a, b = self.unique("a"), self.unique("b")
        start = await self.head(store)
        await store.append(a, batch(3))
        await store.append(b, batch(4))
        last = (await store.append(a, batch(3, start=3))).last_position
        mine = await self.log(store, start, [a, b])
        assert len(mine) == 10
        assert_consecutive(positions(mine))
        first = mine[0].position
        assert await store.read_all(from_position=first - 1, limit=10) == mine
        assert positions(await store.read_all(from_position=first + 2, limit=3)) == [first + 3, first + 4, first + 5]
        newest = await store.read_all(backwards=True, limit=4)
        assert newest == mine[::-1][:4]
        assert positions(await store.read_all(from_position=first + 5, backwards=True, limit=3)) == [
            first + 4,
            first + 3,
            first + 2,
        ]
        assert await store.read_all(from_position=last, limit=10) == []
        assert await store.read_all(from_position=first - 1, limit=0) == []
        # paging backwards from the end down to this test's first event
        paged: list[RecordedEvent] = []
        cursor = 0
        while not paged or paged[-1].position > first:
            page = await store.read_all(from_position=cursor, backwards=True, limit=3)
            assert page, "ran out of events paging backwards"
            paged += page
            cursor = page[-1].position
        assert [e for e in paged if e.position >= first] == mine[::-1]

    @scenario
    async def test_read_all_event_types(self, store: EventStore) -> None:
        """The filter applies before the limit: ``limit`` counts matching events; ``[]`` matches nothing."""
        stream, other = self.unique("s"), self.unique("o")
        created, deleted, noise = self.unique("Created"), self.unique("Deleted"), self.unique("Noise")
        start = await self.head(store)
        await store.append(stream, [new_event(created), new_event(noise), new_event(noise), new_event(deleted)])
        await store.append(other, [new_event(noise), new_event(created), new_event(noise)])
        all_of = [created, deleted]
        got = await store.read_all(from_position=start, event_types=all_of)
        assert [(e.stream_id, e.event_type) for e in got] == [(stream, created), (stream, deleted), (other, created)]
        first_two = await store.read_all(from_position=start, event_types=all_of, limit=2)
        assert first_two == got[:2]
        assert await store.read_all(from_position=first_two[-1].position, event_types=all_of) == got[2:]
        assert await store.read_all(backwards=True, event_types=all_of, limit=2) == got[::-1][:2]
        assert await store.read_all(from_position=start, event_types=[self.unique("Nothing")]) == []
        assert await store.read_all(from_position=start, event_types=[]) == []

    @scenario
    async def test_log_positions_are_gapless_and_in_commit_order(self, store: EventStore) -> None:
        """Interleaved appends to several streams, failed appends among them: the test's events have strictly
        increasing, consecutive positions, and each stream's versions grow with its positions."""
        streams = [self.unique(f"s{i}") for i in range(4)]
        start = await self.head(store)
        results: list[AppendResult] = []
        for round_ in range(5):
            for i, stream in enumerate(streams):
                results.append(await store.append(stream, batch(1 + (round_ + i) % 3)))
                with contextlib.suppress(WrongExpectedVersion):  # a failed append must leave no hole
                    await store.append(stream, batch(2), expected_version=NO_STREAM)
            results += await store.append_many([(s, batch(1), ANY) for s in streams[::-1]])
        mine = await self.log(store, start, streams)
        assert_consecutive(positions(mine))
        assert positions(mine) == [p for r in results for p in range(r.first_position, r.last_position + 1)]
        for stream in streams:
            theirs = [e for e in mine if e.stream_id == stream]
            assert versions(theirs) == list(range(1, len(theirs) + 1))
            assert theirs == await store.read_stream(stream)

    @scenario
    async def test_large_batch(self, store: EventStore) -> None:
        stream = self.unique("bulk")
        events = batch(1000)
        result = await store.append(stream, events)
        assert (result.first_version, result.last_version) == (1, 1000)
        assert result.last_position - result.first_position == 999
        read = await store.read_stream(stream)
        assert ids(read) == ids(events)
        assert versions(read) == list(range(1, 1001))
        assert_consecutive(positions(read))
        assert await store.read_all(from_position=result.first_position - 1) == read
        assert await store.stream_version(stream) == 1000

    @scenario
    async def test_bodies_are_kept_byte_for_byte(self, store: EventStore) -> None:
        stream = self.unique("blobs")
        sent = [
            new_event("Large", bytes(range(256)) * 4096),  # 1 MiB, every byte value
            new_event("Empty", b"", metadata=b""),
            new_event("Binary", b"\x00\xff\x00\x80\r\n", metadata=b"\xc3\x28 not utf-8 \x00"),
            new_event("Json", '{"b": 1,  "a": "тело ✓ 🎉", "z": null}\n'.encode(), metadata=b'{ "k" : [1,2] }'),
            new_event("Событие✓", b"[]", schema_version="2.0-β"),
        ]
        await store.append(stream, sent)
        read = await store.read_stream(stream)
        assert [(e.event_type, e.data, e.metadata, e.schema_version) for e in read] == [
            (e.event_type, e.data, e.metadata, e.schema_version) for e in sent
        ]
        assert all(type(e.data) is bytes and type(e.metadata) is bytes for e in read)
        assert await store.read_all(from_position=read[0].position - 1, limit=len(sent)) == read

    @scenario
    async def test_stream_ids(self, store: EventStore) -> None:
        """Unicode, quotes, SQL wildcards and spaces are plain characters; ids are case-sensitive."""
        tag = uuid.uuid4().hex[:10]
        names = [
            f"пользователь-🎉-{tag}",
            f"user'; drop table events; --{tag}",
            f"a%b_{tag}",
            f"a_b%{tag}",
            f"User-{tag}",
            f"user-{tag}",
            f"with space/slash\\{tag}",
        ]
        for count, name in enumerate(names, 1):
            await store.append(name, batch(count))
        for count, name in enumerate(names, 1):
            read = await store.read_stream(name)
            assert [e.stream_id for e in read] == [name] * count
            assert await store.stream_version(name) == count
        assert await store.read_stream(f"a__{tag}") == []
        assert await store.stream_version(f"a%%{tag}") == 0

    # -- concurrency (two connections) --

    @scenario
    async def test_concurrent_appends_with_the_same_expected_version(self, store: EventStore) -> None:
        """Exactly one of two racing appends wins; the other sees the winner's event: ``actual == expected + 1``."""
        async with self.other_store() as other:
            for round_ in range(10):
                stream = self.unique("race")
                await store.append(stream, batch(1))
                outcomes = await asyncio.gather(
                    store.append(stream, batch(1, "FromA"), expected_version=1),
                    other.append(stream, batch(1, "FromB"), expected_version=1),
                    return_exceptions=True,
                )
                won = [o for o in outcomes if isinstance(o, AppendResult)]
                lost = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
                assert (len(won), len(lost)) == (1, 1), f"round {round_}: {outcomes!r}"
                assert (won[0].first_version, won[0].last_version) == (2, 2)
                assert (lost[0].expected, lost[0].actual) == (1, 2)
                assert versions(await other.read_stream(stream)) == [1, 2]

    @scenario
    async def test_concurrent_stream_creation(self, store: EventStore) -> None:
        async with self.other_store() as other:
            for round_ in range(10):
                stream = self.unique("race")
                outcomes = await asyncio.gather(
                    store.append(stream, batch(2), expected_version=NO_STREAM),
                    other.append(stream, batch(3), expected_version=NO_STREAM),
                    return_exceptions=True,
                )
                won = [o for o in outcomes if isinstance(o, AppendResult)]
                lost = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
                assert (len(won), len(lost)) == (1, 1), f"round {round_}: {outcomes!r}"
                assert (lost[0].expected, lost[0].actual) == (NO_STREAM, won[0].last_version)
                assert await store.stream_version(stream) == won[0].last_version

    @scenario
    async def test_concurrent_appends_with_any_all_succeed(self, store: EventStore) -> None:
        """``ANY`` never fails under contention: every append gets its own versions, all 1..n."""
        stream = self.unique("busy")
        start = await self.head(store)
        async with self.other_store() as other:

            async def writer(target: EventStore, count: int) -> list[AppendResult]:
                return [await target.append(stream, batch(2)) for _ in range(count)]

            mine, theirs = await asyncio.gather(writer(store, 15), writer(other, 15))
        spans = sorted((r.first_version, r.last_version) for r in mine + theirs)
        assert spans == [(v, v + 1) for v in range(1, 61, 2)]
        read = await store.read_stream(stream)
        assert versions(read) == list(range(1, 61))
        log = await self.log(store, start, [stream])
        assert log == read
        assert_consecutive(positions(log))

    @scenario
    async def test_subscriber_sees_concurrent_writers_without_gaps(self, store: EventStore) -> None:
        """Two writers on two connections append to several streams at once while a third connection follows
        the log: it gets every event once, in position order, positions consecutive, versions in order."""
        streams = [self.unique(f"w{i}") for i in range(4)]
        start = await self.head(store)
        received = self.collect(store, from_position=start)
        try:
            async with self.other_store() as one, self.other_store() as two:

                async def writer(target: EventStore, offset: int) -> list[str]:
                    written: list[str] = []
                    for i in range(20):
                        events = batch(1 + i % 3)
                        await target.append(streams[(i + offset) % len(streams)], events)
                        written += ids(events)
                    return written

                first, second = await asyncio.gather(writer(one, 0), writer(two, 1))
            expected = set(first + second)
            await received.wait_for(
                lambda: expected <= {e.event_id for e in received.events}, f"all {len(expected)} events"
            )
        finally:
            await received.stop()
        mine = [e for e in received.events if e.stream_id in streams]
        assert len(mine) == len(expected), "an event was delivered twice"
        assert_consecutive(positions(mine))
        for stream in streams:
            assert versions(e for e in mine if e.stream_id == stream) == list(
                range(1, await store.stream_version(stream) + 1)
            )
        assert mine == await self.log(store, start, streams)

    # -- subscriptions --

    @scenario
    async def test_subscription_catches_up_then_goes_live(self, store: EventStore) -> None:
        """History after ``from_position`` (not at it), then live events, in order, once each; live events
        appended in a burst while the subscriber is still catching up are not lost or repeated."""
        stream = self.unique("feed")
        old = await store.append(stream, batch(3))
        history = await store.append(stream, batch(300, start=3))
        received = self.collect(store, from_position=old.last_position)
        try:
            live: list[str] = []
            for i in range(10):  # appended while the subscriber catches up, no waiting in between
                events = batch(20, start=303 + 20 * i)
                await store.append(stream, events)
                live += ids(events)
            await received.wait_for(lambda: len(received.events) >= 500, "300 historical and 200 live events")
            barrier = await store.append(stream, batch(1, "Barrier"))
            await received.wait_for(lambda: received.events[-1].position == barrier.last_position, "the barrier")
        finally:
            await received.stop()
        got = [e for e in received.events if e.stream_id == stream]
        assert got[0].position == history.first_position
        assert versions(got) == list(range(4, 505))
        assert_consecutive(positions(got))
        assert ids(got[300:500]) == live

    @scenario
    async def test_subscription_sees_events_appended_through_another_store(self, store: EventStore) -> None:
        stream = self.unique("feed")
        start = await self.head(store)
        received = self.collect(store, from_position=start)
        try:
            async with self.other_store() as other:
                for i in range(3):
                    events = batch(2, start=2 * i)
                    await other.append(stream, events)
                    await received.wait_ids(ids(events), f"live batch {i} from the other store")
        finally:
            await received.stop()
        assert versions(e for e in received.events if e.stream_id == stream) == [1, 2, 3, 4, 5, 6]

    @scenario
    async def test_subscription_event_types(self, store: EventStore) -> None:
        stream = self.unique("feed")
        wanted, noise = self.unique("Wanted"), self.unique("Noise")
        start = await self.head(store)
        await store.append(stream, [new_event(noise), new_event(wanted), new_event(noise)])
        received = self.collect(store, from_position=start, event_types=[wanted])
        try:
            await store.append(stream, [new_event(noise), new_event(wanted)])
            await store.append(self.unique("other"), [new_event(noise)])
            last = await store.append(stream, [new_event(wanted)])
            await received.wait_for(
                lambda: bool(received.events) and received.events[-1].position == last.last_position, "3 events"
            )
        finally:
            await received.stop()
        assert [(e.event_type, e.version) for e in received.events] == [(wanted, 2), (wanted, 5), (wanted, 6)]

    @scenario
    async def test_subscription_from_the_end_of_the_log(self, store: EventStore) -> None:
        """Subscribing from the last position gives nothing until something is appended."""
        stream = self.unique("feed")
        await store.append(stream, batch(2))
        received = self.collect(store, from_position=await self.head(store))
        try:
            events = batch(1, start=2)
            await store.append(stream, events)
            await received.wait_ids(ids(events))
        finally:
            await received.stop()
        assert received.ids() == ids(events)

    @scenario
    async def test_breaking_out_of_a_subscription(self, store: EventStore) -> None:
        """The caller ends a subscription by leaving the loop (then closing the generator, or not: the store
        still closes cleanly) or by cancelling the task that runs it; the store goes on working."""
        stream = self.unique("feed")
        start = await self.head(store)
        await store.append(stream, batch(5))
        subscription = store.subscribe(from_position=start)
        seen: list[RecordedEvent] = []
        async for event in subscription:
            seen.append(event)
            if len(seen) == 2:
                break
        closing = getattr(subscription, "aclose", None)
        if closing is not None:
            await closing()
        assert versions(seen) == [1, 2]
        # left in the middle, without aclose(): closing the store (and the event loop) must still be clean
        # (kept referenced, so that it is the event loop's shutdown that closes it, after the store's close)
        self.abandoned = store.subscribe(from_position=start)
        assert (await asyncio.wait_for(anext(self.abandoned), self.timeout)).version == 1
        # cancelled while waiting for live events
        received = self.collect(store, from_position=start)
        await received.wait_for(lambda: len(received.events) == 5, "the history")
        await received.stop()
        assert (await store.append(stream, batch(1))).last_version == 6

    def test_closing_the_store_ends_live_subscriptions(self) -> None:
        """A subscription waiting for live events ends (the ``async for`` loop finishes, no error) when its
        store is closed."""

        async def check(self: EventStoreContract, store: EventStore) -> None:
            await store.start()
            stream = self.unique("feed")
            await store.append(stream, batch(1))
            received = self.collect(store, from_position=await self.head(store) - 1)
            try:
                await received.wait_for(lambda: len(received.events) == 1, "the history")
                await asyncio.wait_for(store.close(), self.timeout)
                await received.wait_finished()
                assert received.error is None, f"the subscription failed: {received.error!r}"
            finally:
                await received.stop()

        self.run(check, start=False)

    # -- retention (stream metadata) --

    @scenario
    async def test_stream_metadata_round_trip(self, store: EventStore) -> None:
        """Metadata can be set before the stream exists (it does not create it) and is replaced as a whole."""
        stream = self.unique("meta")
        assert await store.stream_metadata(stream) == StreamMetadata()
        await store.set_stream_metadata(stream, StreamMetadata(max_age=0.5, max_count=7, truncate_before=3))
        assert await store.stream_metadata(stream) == StreamMetadata(0.5, 7, 3)
        assert await store.stream_version(stream) == 0
        await store.append(stream, batch(1), expected_version=NO_STREAM)
        await store.set_stream_metadata(stream, StreamMetadata(max_count=2))
        assert await store.stream_metadata(stream) == StreamMetadata(None, 2, None)
        await store.set_stream_metadata(stream, StreamMetadata())
        assert await store.stream_metadata(stream) == StreamMetadata()

    @scenario
    async def test_max_count(self, store: EventStore) -> None:
        """Only the last ``max_count`` events are read, at once (also when set before the stream exists); the
        log keeps the others until a scavenge; the version does not change."""
        stream, early = self.unique("capped"), self.unique("capped-early")
        await store.set_stream_metadata(early, StreamMetadata(max_count=2))
        await store.append(early, batch(5))
        assert versions(await store.read_stream(early)) == [4, 5]
        first = await store.append(stream, batch(5))
        await store.set_stream_metadata(stream, StreamMetadata(max_count=3))
        assert versions(await store.read_stream(stream)) == [3, 4, 5]
        assert versions(await store.read_stream(stream, backwards=True)) == [5, 4, 3]
        assert versions(await store.read_stream(stream, from_version=1, limit=2)) == [3, 4]
        assert versions(await store.read_stream(stream, from_version=2, backwards=True)) == []
        await store.append(stream, batch(1))
        assert versions(await store.read_stream(stream)) == [4, 5, 6]
        assert await store.stream_version(stream) == 6
        assert versions(await self.log(store, first.first_position - 1, [stream])) == [1, 2, 3, 4, 5, 6]
        await store.set_stream_metadata(stream, StreamMetadata())  # not scavenged yet: back in view
        assert versions(await store.read_stream(stream)) == [1, 2, 3, 4, 5, 6]

    @scenario
    async def test_truncate_before(self, store: EventStore) -> None:
        stream = self.unique("truncated")
        await store.append(stream, batch(5))
        await store.set_stream_metadata(stream, StreamMetadata(truncate_before=3))
        assert versions(await store.read_stream(stream)) == [3, 4, 5]
        assert versions(await store.read_stream(stream, backwards=True, limit=10)) == [5, 4, 3]
        await store.set_stream_metadata(stream, StreamMetadata(truncate_before=3, max_count=2))  # both apply
        assert versions(await store.read_stream(stream)) == [4, 5]
        await store.set_stream_metadata(stream, StreamMetadata(truncate_before=10))
        assert await store.read_stream(stream) == []
        assert await store.stream_version(stream) == 5
        assert (await store.append(stream, batch(1), expected_version=5)).last_version == 6

    @scenario
    async def test_max_age(self, store: EventStore) -> None:
        """Events older than ``max_age`` seconds (by ``recorded_at``) are not read; younger ones are."""
        stream = self.unique("aging")
        first = await store.append(stream, batch(3))
        await store.set_stream_metadata(stream, StreamMetadata(max_age=3600))
        assert versions(await store.read_stream(stream)) == [1, 2, 3]
        await store.set_stream_metadata(stream, StreamMetadata(max_age=0.05))
        deadline = time.monotonic() + self.timeout
        while await store.read_stream(stream):  # the one poll of the suite: time has to pass
            assert time.monotonic() < deadline, "events older than max_age are still read"
            await asyncio.sleep(0.02)
        assert len(await self.log(store, first.first_position - 1, [stream])) == 3
        await self.flush_scavenge(store)  # removes them (and what other tests left)
        assert await self.log(store, first.first_position - 1, [stream]) == []
        assert await store.stream_version(stream) == 3

    @scenario
    async def test_scavenge_removes_what_retention_gave_up(self, store: EventStore) -> None:
        """Retention hides events from stream reads at once; from the log (``read_all``, ``subscribe``) only
        when a scavenge removes them. Positions are never handed out again."""
        await self.flush_scavenge(store)
        capped, truncated, kept = self.unique("capped"), self.unique("truncated"), self.unique("kept")
        start = await self.head(store)
        await store.append(capped, batch(6))
        await store.append(truncated, batch(4))
        last = await store.append(kept, batch(2))
        await store.set_stream_metadata(capped, StreamMetadata(max_count=2))
        await store.set_stream_metadata(truncated, StreamMetadata(truncate_before=4, max_count=3))
        assert len(await self.log(store, start, [capped, truncated, kept])) == 12
        received = self.collect(store, from_position=start)
        try:
            await received.wait_for(lambda: len(received.events) >= 12, "the unscavenged log")
        finally:
            await received.stop()
        assert await store.scavenge() == 4 + 3
        assert await store.scavenge() == 0
        log = await self.log(store, start, [capped, truncated, kept])
        assert [(e.stream_id, e.version) for e in log] == [
            (capped, 5),
            (capped, 6),
            (truncated, 4),
            (kept, 1),
            (kept, 2),
        ]
        assert versions(await store.read_stream(capped)) == [5, 6]
        await store.set_stream_metadata(capped, StreamMetadata())  # scavenged: gone for good
        assert versions(await store.read_stream(capped)) == [5, 6]
        assert await store.stream_version(capped) == 6
        assert (await store.append(capped, batch(1))).first_version == 7
        # the scavenged positions are not reused, and neither is the last one when it was scavenged
        tail = self.unique("tail")
        dropped = await store.append(tail, batch(2))
        await store.delete_stream(tail, hard=True)
        assert await store.scavenge() == 2
        assert (await store.stats()).last_position >= dropped.last_position
        assert (await store.append(kept, batch(1))).first_position == dropped.last_position + 1
        assert dropped.first_position == last.last_position + 2  # capped's 7th event in between

    # -- deletes --

    @scenario
    async def test_soft_delete(self, store: EventStore) -> None:
        """The stream reads as empty, keeps its version (so ``NO_STREAM`` fails and ``STREAM_EXISTS`` passes) and
        its metadata, and can be written again, its versions carrying on; only the new events are read, even if
        the metadata is set again. Its old events stay in the log until a scavenge."""
        await self.flush_scavenge(store)
        stream = self.unique("soft")
        first = await store.append(stream, batch(3))
        await store.set_stream_metadata(stream, StreamMetadata(max_count=10))
        await store.delete_stream(stream)
        assert await store.read_stream(stream) == []
        assert await store.read_stream(stream, backwards=True) == []
        assert await store.stream_version(stream) == 3
        assert await store.stream_metadata(stream) == StreamMetadata(max_count=10)
        assert len(await self.log(store, first.first_position - 1, [stream])) == 3
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append(stream, batch(1), expected_version=NO_STREAM)
        assert caught.value.actual == 3
        again = await store.append(stream, batch(2), expected_version=3)
        assert (again.first_version, again.last_version) == (4, 5)
        assert versions(await store.read_stream(stream)) == [4, 5]
        await store.set_stream_metadata(stream, StreamMetadata())
        assert versions(await store.read_stream(stream)) == [4, 5]
        assert (await store.append(stream, batch(1), expected_version=STREAM_EXISTS)).last_version == 6
        assert await store.scavenge() == 3
        assert versions(await self.log(store, first.first_position - 1, [stream])) == [4, 5, 6]
        assert versions(await store.read_stream(stream)) == [4, 5, 6]

    @scenario
    async def test_soft_delete_of_an_unknown_stream_changes_nothing(self, store: EventStore) -> None:
        stream = self.unique("never")
        await store.delete_stream(stream)
        assert await store.stream_version(stream) == 0
        assert (await store.append(stream, batch(1), expected_version=NO_STREAM)).last_version == 1
        assert versions(await store.read_stream(stream)) == [1]

    @scenario
    async def test_hard_delete(self, store: EventStore) -> None:
        """Every per-stream operation raises :class:`StreamDeleted` (whatever ``expected_version``), except a
        second hard delete, which changes nothing; the events stay in the log until a scavenge; the tombstone
        outlives it."""
        await self.flush_scavenge(store)
        stream = self.unique("hard")
        first = await store.append(stream, batch(3))
        await store.delete_stream(stream, hard=True)
        for expected in (ANY, NO_STREAM, STREAM_EXISTS, 3):
            with pytest.raises(StreamDeleted):
                await store.append(stream, batch(1), expected_version=expected)
        await self.assert_tombstone(store, stream)
        assert len(await self.log(store, first.first_position - 1, [stream])) == 3
        assert await store.scavenge() == 3
        assert await self.log(store, first.first_position - 1, [stream]) == []
        await self.assert_tombstone(store, stream)

    async def assert_tombstone(self, store: EventStore, stream: str) -> None:
        with pytest.raises(StreamDeleted):
            await store.append(stream, batch(1))
        with pytest.raises(StreamDeleted):
            await store.read_stream(stream)
        with pytest.raises(StreamDeleted):
            await store.read_stream(stream, backwards=True)
        with pytest.raises(StreamDeleted):
            await store.stream_version(stream)
        with pytest.raises(StreamDeleted):
            await store.stream_metadata(stream)
        with pytest.raises(StreamDeleted):
            await store.set_stream_metadata(stream, StreamMetadata(max_count=1))
        with pytest.raises(StreamDeleted):
            await store.delete_stream(stream)
        await store.delete_stream(stream, hard=True)

    @scenario
    async def test_hard_delete_of_an_unknown_stream_tombstones_it(self, store: EventStore) -> None:
        stream = self.unique("never")
        await store.delete_stream(stream, hard=True)
        await self.assert_tombstone(store, stream)

    @scenario
    async def test_hard_delete_after_soft_delete(self, store: EventStore) -> None:
        await self.flush_scavenge(store)
        stream = self.unique("both")
        await store.append(stream, batch(2))
        await store.delete_stream(stream)
        await store.append(stream, batch(1))
        await store.set_stream_metadata(stream, StreamMetadata(max_count=1))
        await store.delete_stream(stream, hard=True)
        await self.assert_tombstone(store, stream)
        assert await store.scavenge() == 3  # each event counted once, whatever gave it up

    # -- stats, lifecycle --

    @scenario
    async def test_stats(self, store: EventStore) -> None:
        """``streams``: streams holding a version (soft-deleted ones too), not hard-deleted ones; ``events``: events
        stored (until a scavenge removes them); ``last_position``: the highest position handed out."""
        await self.flush_scavenge(store)
        before = await store.stats()
        a, b = self.unique("a"), self.unique("b")
        await store.append(a, batch(3))
        last = await store.append(b, batch(2))
        now = await store.stats()
        assert (now.streams - before.streams, now.events - before.events) == (2, 5)
        assert now.last_position == last.last_position
        assert now.size >= 0
        if self.durable:
            assert now.size > 0
        await store.delete_stream(a, hard=True)
        await store.delete_stream(b)
        await store.set_stream_metadata(self.unique("only-metadata"), StreamMetadata(max_count=1))
        now = await store.stats()
        assert (now.streams - before.streams, now.events - before.events) == (1, 5)
        assert await store.scavenge() == 5
        now = await store.stats()
        assert (now.streams - before.streams, now.events - before.events) == (1, 0)
        assert now.last_position == last.last_position

    def test_operations_outside_start_and_close_raise(self) -> None:
        async def check(self: EventStoreContract, store: EventStore) -> None:
            stream = self.unique("closed")
            with pytest.raises(EventStoreError):
                await store.append(stream, batch(1))
            await store.start()
            await store.append(stream, batch(1))
            await store.close()
            with pytest.raises(EventStoreError):
                await store.append(stream, batch(1))
            with pytest.raises(EventStoreError):
                await store.read_stream(stream)

        self.run(check, start=False)

    def test_start_and_close_are_idempotent(self) -> None:
        async def check(self: EventStoreContract, store: EventStore) -> None:
            await store.start()
            await store.start()
            stream = self.unique("twice")
            await store.append(stream, batch(1))
            assert await store.stream_version(stream) == 1
            await store.close()
            await store.close()
            async with self.create_store() as again:  # __aenter__ starts, __aexit__ closes
                assert await again.stream_version(stream) == 1

        self.run(check, start=False)

    def test_everything_is_there_after_reopening(self) -> None:
        """A store closed, and another opened on the same storage (in another event loop): streams, versions,
        metadata, deletes and the log are as they were, and versions and positions carry on."""
        stream, soft, hard = self.unique("kept"), self.unique("soft"), self.unique("hard")
        written: dict[str, Any] = {}

        async def before(self: EventStoreContract, store: EventStore) -> None:
            written["events"] = batch(3)
            written["result"] = await store.append(stream, written["events"])
            await store.set_stream_metadata(stream, StreamMetadata(max_age=86400.0, max_count=5, truncate_before=2))
            await store.append(soft, batch(2))
            await store.delete_stream(soft)
            await store.append(hard, batch(1))
            written["last"] = await store.append(hard, batch(1))
            await store.delete_stream(hard, hard=True)

        async def after(self: EventStoreContract, store: EventStore) -> None:
            result: AppendResult = written["result"]
            assert ids(await store.read_stream(stream)) == ids(written["events"][1:])
            assert await store.stream_version(stream) == 3
            assert await store.stream_metadata(stream) == StreamMetadata(86400.0, 5, 2)
            assert await store.append(stream, written["events"]) == result  # the retry is still recognised
            assert await store.read_stream(soft) == []
            assert await store.stream_version(soft) == 2
            with pytest.raises(StreamDeleted):
                await store.read_stream(hard)
            log = await self.log(store, result.first_position - 1, [stream, soft, hard])
            assert len(log) == 7
            assert_consecutive(positions(log))
            again = await store.append(stream, batch(1))
            assert again.first_version == 4
            assert again.first_position == written["last"].last_position + 1
            assert (await store.stats()).last_position == again.last_position

        self.run(before)
        self.run(after)


__all__ = ["Collector", "EventStoreContract", "batch", "new_event", "scenario"]
