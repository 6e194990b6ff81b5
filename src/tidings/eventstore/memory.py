"""The in-process event store: the port's semantics (see :mod:`tidings.eventstore.base`) in plain Python objects.

For tests and demos. Nothing survives the process. The data live in a :class:`MemoryStorage`; a store object
is one "connection" to it, so several stores made on one storage see the same streams, race on the same
versions and wake each other's subscribers, as two connections to one database would::

    storage = MemoryEventStore.Storage()
    async with MemoryEventStore(storage) as writer, MemoryEventStore(storage) as reader:
        await writer.append("user-1", [NewEvent(str(uuid4()), "UserRegistered", b"{}")])
        async for event in reader.subscribe():
            ...

Semantics where the port leaves a choice (the contract suite, :mod:`tidings.testing.eventstore_contract`,
checks them on every backend):

- positions are consecutive: a failed append uses none, a scavenge never gives one back;
- retention (``max_age``, ``max_count``, ``truncate_before``) hides events from ``read_stream`` at once; they
  stay in the log (``read_all``, ``subscribe``) until :meth:`MemoryEventStore.scavenge` removes them;
- a soft delete hides the stream's events up to its current version (independently of its metadata: setting
  the metadata again does not bring them back), keeps the version, and leaves the stream writable;
- a hard delete is a tombstone: every per-stream operation raises :class:`StreamDeleted`, except another hard
  delete; a stream that never existed can be tombstoned too;
- a retry (every id already in the stream, consecutive, in order, same content) is recognised before
  ``expected_version`` is checked, and returns the original result.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from tidings.errors import UsageError
from tidings.eventstore.base import (
    ANY,
    AppendResult,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StoreStats,
    StreamDeleted,
    StreamMetadata,
    WrongExpectedVersion,
    check_append,
    check_read,
    expected_ok,
    judge_retry,
)

if TYPE_CHECKING:
    from tidings.reliability.outbox import OutboxRows

#: how many events a subscription takes from the log at a time while it catches up
_PAGE = 500


class _Stream:
    __slots__ = ("deleted_through", "events", "metadata", "tombstoned", "version")

    def __init__(self) -> None:
        self.version = 0
        #: the events still stored, in version order (a scavenge removes some, never reorders)
        self.events: list[RecordedEvent] = []
        self.metadata = StreamMetadata()
        #: soft delete: versions up to this one are not read (kept apart from the metadata, which the user sets)
        self.deleted_through = 0
        self.tombstoned = False

    def first_visible(self) -> int:
        """The lowest version that ``read_stream`` may return (``max_age`` aside, which depends on the time)."""
        first = self.deleted_through + 1
        if self.metadata.truncate_before is not None:
            first = max(first, self.metadata.truncate_before)
        if self.metadata.max_count is not None:
            first = max(first, self.version - self.metadata.max_count + 1)
        return first

    def visible(self, event: RecordedEvent, first: int, now: float) -> bool:
        if event.version < first:
            return False
        max_age = self.metadata.max_age
        return max_age is None or now - event.recorded_at < max_age


class MemoryStorage:
    """What the stores made on it share: the streams, the log, the id index, and the subscribers to wake.

    A :class:`threading.Lock` guards it (stores in different threads or event loops may share one storage);
    no ``await`` ever happens while it is held, so within one event loop it is never contended.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.streams: dict[str, _Stream] = {}
        #: every stored event in position order
        self.log: list[RecordedEvent] = []
        #: event id -> the stored event (ids are unique in the whole store until a scavenge removes the event)
        self.by_id: dict[str, RecordedEvent] = {}
        #: the highest position ever handed out: a scavenge that removes the last events does not lower it
        self.last_position = 0
        #: subscribers waiting for the next append: (their event loop, the event to set)
        self.waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        """Wake every waiting subscriber, in whichever event loop (and thread) it waits."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with self.lock:
            waiters = list(self.waiters)
        for loop, event in waiters:
            if loop is running:
                event.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def scan(
        self, after: int, limit: int, types: frozenset[str] | None, *, backwards: bool = False
    ) -> tuple[list[RecordedEvent], int]:
        """Up to ``limit`` events of the log after ``after`` (backwards: before it, 0 meaning the end) whose type is
        in ``types``, and the position up to which the log was scanned (what a subscription continues after)."""
        log = self.log
        found: list[RecordedEvent] = []
        if backwards:
            index = len(log) if after <= 0 else bisect.bisect_left(log, after, key=_position)
            scanned = after
            while index > 0 and len(found) < limit:
                index -= 1
                event = log[index]
                scanned = event.position
                if types is None or event.event_type in types:
                    found.append(event)
            return found, scanned
        index = bisect.bisect_right(log, after, key=_position)
        scanned = after
        while index < len(log) and len(found) < limit:
            event = log[index]
            index += 1
            scanned = event.position
            if types is None or event.event_type in types:
                found.append(event)
        return found, scanned


def _position(event: RecordedEvent) -> int:
    return event.position


def _version(event: RecordedEvent) -> int:
    return event.version


def _check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    if not expected_ok(expected, actual):
        raise WrongExpectedVersion(stream_id, expected, actual)


class _Staged:
    """An ``append_many`` under way: what its entries have written so far, not yet visible to anyone.

    Entries are planned one after the other against the storage plus this, then committed together, so that
    one failing check leaves the storage as it was (all or nothing) and the second entry on a stream sees the
    first one's events.
    """

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.versions: dict[str, int] = {}
        self.by_id: dict[str, RecordedEvent] = {}
        self.events: list[RecordedEvent] = []
        self.position = storage.last_position

    def version(self, stream_id: str) -> int:
        if stream_id in self.versions:
            return self.versions[stream_id]
        stream = self.storage.streams.get(stream_id)
        return 0 if stream is None else stream.version

    def recorded(self, event_id: str) -> RecordedEvent | None:
        return self.by_id.get(event_id) or self.storage.by_id.get(event_id)

    def append(self, stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion, now: float) -> AppendResult:
        stream = self.storage.streams.get(stream_id)
        if stream is not None and stream.tombstoned:
            raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it cannot be appended to")
        event_ids = [event.event_id for event in events]
        if len(set(event_ids)) != len(event_ids):
            raise DuplicateEventError(f"stream {stream_id!r}: the same event id twice in one append")
        known = [self.recorded(event_id) for event_id in event_ids]
        if any(recorded is not None for recorded in known):
            return self._retry(stream_id, events, known)
        current = self.version(stream_id)
        _check_expected(stream_id, expected, current)
        first_position = self.position + 1
        for offset, event in enumerate(events):
            recorded = RecordedEvent(
                stream_id,
                current + 1 + offset,
                first_position + offset,
                event.event_id,
                event.event_type,
                event.schema_version,
                event.data,
                event.metadata,
                now,
            )
            self.events.append(recorded)
            self.by_id[event.event_id] = recorded
        self.position += len(events)
        self.versions[stream_id] = current + len(events)
        return AppendResult(stream_id, current + 1, current + len(events), first_position, self.position)

    def _retry(self, stream_id: str, events: Sequence[NewEvent], known: list[RecordedEvent | None]) -> AppendResult:
        """Ids already stored: the original result if this is a retry of (part of) an earlier append."""
        first, last = judge_retry(stream_id, events, known)
        return AppendResult(stream_id, first.version, last.version, first.position, last.position)

    def commit(self) -> None:
        storage = self.storage
        for recorded in self.events:
            stream = storage.streams.get(recorded.stream_id)
            if stream is None:
                stream = storage.streams[recorded.stream_id] = _Stream()
            stream.events.append(recorded)
            stream.version = recorded.version
            storage.by_id[recorded.event_id] = recorded
        storage.log += self.events
        storage.last_position = self.position


class MemoryEventStore(EventStore):
    """An event store in this process's memory; ``storage``: share one between stores (default: its own)."""

    #: the shared data, for ``MemoryEventStore(MemoryEventStore.Storage())``
    Storage: ClassVar[type[MemoryStorage]] = MemoryStorage

    def __init__(self, storage: MemoryStorage | None = None) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self._started = False
        self._closed = False
        #: this store's waiting subscribers, woken by close() so that they end
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    async def start(self) -> None:
        self._started = True
        self._closed = False

    async def close(self) -> None:
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        with self.storage.lock:
            waiters = list(self._waiters)
        for loop, event in waiters:  # the subscriptions see the store closed when they wake, and end
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(event.set)

    def _check_open(self) -> None:
        if self._closed:
            raise EventStoreError("the memory event store is closed")
        if not self._started:
            raise EventStoreError("the memory event store is not started (call start(), or use `async with`)")

    # -- writing --

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        [result] = await self.append_many([(stream_id, events, expected_version)])
        return result

    async def append_many(
        self,
        appends: Sequence[tuple[str, Sequence[NewEvent], ExpectedVersion]],
        *,
        outbox: OutboxRows | None = None,
    ) -> list[AppendResult]:
        self._check_open()
        if outbox is not None:
            raise UsageError(
                "the memory event store has no database transaction to share with an outbox: use the SQLite or "
                "PostgreSQL store, or publish with a LogRelay"
            )
        for stream_id, events, expected in appends:
            check_append(stream_id, events, expected)
        if not appends:
            return []
        storage = self.storage
        with storage.lock:
            staged = _Staged(storage)
            now = time.time()
            results = [staged.append(stream_id, events, expected, now) for stream_id, events, expected in appends]
            staged.commit()
            wrote = bool(staged.events)
        if wrote:
            storage.notify()
        return results

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        self._check_open()
        for name, value in zip(metadata._fields, metadata, strict=True):
            if value is not None and value < 0:
                raise ValueError(f"stream {stream_id!r}: {name} cannot be negative ({value!r})")
        with self.storage.lock:
            stream = self._stream(stream_id)
            if stream is None:  # metadata before the first event: kept, and applied when events arrive
                stream = self.storage.streams[stream_id] = _Stream()
            stream.metadata = StreamMetadata(*metadata)

    async def delete_stream(self, stream_id: str, *, hard: bool = False) -> None:
        self._check_open()
        with self.storage.lock:
            stream = self.storage.streams.get(stream_id)
            if stream is not None and stream.tombstoned:
                if hard:
                    return  # deleted for good already: the retry of a hard delete is not an error
                raise StreamDeleted(f"stream {stream_id!r} was deleted (hard)")
            if hard:
                if stream is None:  # a tombstone for a stream that never existed: its name is taken for good
                    stream = self.storage.streams[stream_id] = _Stream()
                stream.tombstoned = True
            elif stream is not None:
                stream.deleted_through = stream.version

    async def scavenge(self) -> int:
        self._check_open()
        now = time.time()
        storage = self.storage
        with storage.lock:
            removed: set[int] = set()
            for stream in storage.streams.values():
                if not stream.events:
                    continue
                if stream.tombstoned:
                    gone = stream.events
                    stream.events = []
                else:
                    first = stream.first_visible()
                    kept = [event for event in stream.events if stream.visible(event, first, now)]
                    if len(kept) == len(stream.events):
                        continue
                    keep = {event.position for event in kept}
                    gone = [event for event in stream.events if event.position not in keep]
                    stream.events = kept
                for event in gone:
                    removed.add(event.position)
                    del storage.by_id[event.event_id]
            if removed:
                storage.log = [event for event in storage.log if event.position not in removed]
        return len(removed)

    # -- reading --

    def _stream(self, stream_id: str) -> _Stream | None:
        """The stream (None if never written nor given metadata); :class:`StreamDeleted` if tombstoned."""
        stream = self.storage.streams.get(stream_id)
        if stream is not None and stream.tombstoned:
            raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it cannot be read")
        return stream

    async def read_stream(
        self, stream_id: str, *, from_version: int | None = None, backwards: bool = False, limit: int | None = None
    ) -> list[RecordedEvent]:
        self._check_open()
        check_read(limit)
        now = time.time()
        with self.storage.lock:
            stream = self._stream(stream_id)
            if stream is None:
                return []
            first = stream.first_visible()
            events = stream.events
            if backwards:
                last = stream.version if from_version is None else from_version
                candidates = reversed(events[: bisect.bisect_right(events, last, key=_version)])
            else:
                start = max(first, 1 if from_version is None else from_version)
                candidates = iter(events[bisect.bisect_left(events, start, key=_version) :])
            found: list[RecordedEvent] = []
            for event in candidates:
                if limit is not None and len(found) >= limit:
                    break
                if event.version < first:
                    break  # reading backwards: everything further is older still
                if stream.visible(event, first, now):
                    found.append(event)
            return found

    async def read_all(
        self,
        *,
        from_position: int = 0,
        backwards: bool = False,
        limit: int = 1000,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        self._check_open()
        check_read(limit, event_types)
        types = None if event_types is None else frozenset(event_types)
        with self.storage.lock:
            found, _ = self.storage.scan(from_position, limit, types, backwards=backwards)
        return found

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
        with self.storage.lock:
            stream = self._stream(stream_id)
            return 0 if stream is None else stream.version

    async def stream_metadata(self, stream_id: str) -> StreamMetadata:
        self._check_open()
        with self.storage.lock:
            stream = self._stream(stream_id)
            return StreamMetadata() if stream is None else stream.metadata

    async def stats(self) -> StoreStats:
        self._check_open()
        storage = self.storage
        with storage.lock:
            streams = sum(1 for stream in storage.streams.values() if stream.version > 0 and not stream.tombstoned)
            return StoreStats(streams, len(storage.log), storage.last_position, 0)

    def subscribe(
        self, *, from_position: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        check_read(None, event_types)
        types = None if event_types is None else frozenset(event_types)
        return self._subscription(from_position, types)

    async def _subscription(self, after: int, types: frozenset[str] | None) -> AsyncIterator[RecordedEvent]:
        """Pages of the log while there are any, then a wait for the next append; ends when the store closes."""
        self._check_open()
        storage = self.storage
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with storage.lock:
            storage.waiters.add(waiter)
            self._waiters.add(waiter)
        try:
            while not self._closed:
                # cleared before reading: an append after the read sets it again, so the wait below cannot miss it
                waiter[1].clear()
                with storage.lock:
                    page, scanned = storage.scan(after, _PAGE, types)
                if scanned == after:
                    await waiter[1].wait()
                    continue
                after = scanned  # past the events of other types too: they are not scanned again
                for event in page:
                    yield event
                    if self._closed:
                        return
        finally:
            with storage.lock:
                storage.waiters.discard(waiter)
                self._waiters.discard(waiter)


__all__ = ["MemoryEventStore", "MemoryStorage"]
