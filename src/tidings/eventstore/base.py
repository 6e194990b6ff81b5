"""The event store's port: what every backend (memory, SQLite, PostgreSQL) does, and the values it deals in.

Vocabulary (KurrentDB's, which users of event stores know):

- a *stream* holds the events of one aggregate (``user-42``), numbered from 1: an event's ``version`` is its
  place in its stream, and a stream's version is the number of its events (0: no stream);
- the *log* holds every event of every stream in commit order: an event's ``position`` is its place there,
  from 1. A reader of the log that has seen position P never later meets an event with a position at or
  below P that it has not seen (no gaps to skip past: positions are handed out in commit order);
- ``expected_version`` on append: :data:`ANY`, :data:`NO_STREAM`, :data:`STREAM_EXISTS`, or the exact
  version the stream must be at. A mismatch raises :class:`WrongExpectedVersion` with both versions.

Appends are idempotent by event id: appending events whose ids the stream already holds, in the same order
and with the same content (after a timeout, a crash after commit...), returns the original result and writes
nothing; the same id with other content raises :class:`DuplicateEventError`.

Bodies are bytes (JSON as the app encodes it): the store does not parse them, so it never loses a field it
does not know, and a crypto-shredded field (see :mod:`tidings.eventstore.shredding`) stays opaque to it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, TypeVar

from tidings.errors import TidingsError, UsageError
from tidings.lifecycle import Service

if TYPE_CHECKING:
    from tidings.reliability.outbox import OutboxRows

ANY: Literal["any"] = "any"
NO_STREAM: Literal["no_stream"] = "no_stream"
STREAM_EXISTS: Literal["stream_exists"] = "stream_exists"
ExpectedVersion = int | Literal["any", "no_stream", "stream_exists"]


class NewEvent(NamedTuple):
    """An event to append. ``event_id``: unique (a UUID; appending the same id again is idempotent)."""

    event_id: str
    event_type: str
    data: bytes
    metadata: bytes = b"{}"
    #: the event's schema version (the guide's ``version``), what upcasters key on
    schema_version: str = "1.0"


class RecordedEvent(NamedTuple):
    """An event as the store keeps it."""

    stream_id: str
    version: int
    position: int
    event_id: str
    event_type: str
    schema_version: str
    data: bytes
    metadata: bytes
    #: seconds since the epoch (UTC), when it was committed
    recorded_at: float


class AppendResult(NamedTuple):
    """Where an append put its events: the stream's versions and the log's positions of the first and last."""

    stream_id: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int


class StreamMetadata(NamedTuple):
    """Retention of one stream (KurrentDB's ``$maxAge``, ``$maxCount``, ``$tb``); None: keep."""

    max_age: float | None = None
    max_count: int | None = None
    truncate_before: int | None = None


class StoreStats(NamedTuple):
    streams: int
    events: int
    last_position: int
    #: bytes on disk (the database file, or the relation sizes); 0 for memory
    size: int


class EventStoreError(TidingsError):
    """The store could not do what was asked (database unreachable, locked, full...)."""


class WrongExpectedVersion(EventStoreError):
    """Optimistic concurrency: the stream was not at the version the writer expected."""

    def __init__(self, stream_id: str, expected: ExpectedVersion, actual: int) -> None:
        names = {ANY: "any version", NO_STREAM: "no stream", STREAM_EXISTS: "an existing stream"}
        shown = f"version {expected}" if isinstance(expected, int) else names[expected]
        now = "does not exist" if actual == 0 else f"is at version {actual}"
        super().__init__(
            f"stream {stream_id!r}: expected {shown}, but it {now}: another writer got there first; "
            "read the stream (load the aggregate) again and retry the command"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DuplicateEventError(EventStoreError):
    """An event id the stream already holds, appended again with other content (or elsewhere)."""


class StreamDeleted(EventStoreError):
    """The stream was deleted (hard): it cannot be read or appended to."""


class StoredEvent(Protocol):
    """What :func:`judge_retry` needs of an event already stored (a :class:`RecordedEvent`, a backend's row)."""

    @property
    def stream_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def event_type(self) -> str: ...
    @property
    def schema_version(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def metadata(self) -> bytes: ...


S = TypeVar("S", bound=StoredEvent)


class InvalidArgument(UsageError, ValueError):
    """A caller's mistake in an append or a read (a ValueError too, as the contract suite fixes it)."""


_FIELD_TYPES = tuple(zip(NewEvent._fields, (str, str, bytes, bytes, str), strict=True))


def check_append(stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion) -> None:
    """The caller's mistakes in one append, raised before it is queued: in a group commit a bad argument must
    fail its own call, not the batch it would have joined (every backend runs this same check)."""
    if not isinstance(stream_id, str) or not stream_id:
        raise InvalidArgument(f"stream_id must be a non-empty string, not {stream_id!r}")
    if not events:
        raise InvalidArgument(f"stream {stream_id!r}: nothing to append (an empty list of events)")
    if not ((type(expected) is int and expected >= 0) or expected in (ANY, NO_STREAM, STREAM_EXISTS)):
        raise InvalidArgument(
            f"stream {stream_id!r}: expected_version must be ANY, NO_STREAM, STREAM_EXISTS or a version >= 0, "
            f"not {expected!r}"
        )
    for event in events:  # the common case first, cheaply (about 0.1 µs an event: appends are a hot path)
        if type(event) is not NewEvent:
            break
        event_id, event_type, data, metadata, schema_version = event
        if not (
            type(event_id) is str
            and type(event_type) is str
            and type(data) is bytes
            and type(metadata) is bytes
            and type(schema_version) is str
        ):
            break
    else:
        return
    for index, event in enumerate(events):  # which one is wrong, and how
        if not isinstance(event, NewEvent):
            raise InvalidArgument(f"stream {stream_id!r}: event {index} is a {type(event).__name__}, not a NewEvent")
        for (name, kind), value in zip(_FIELD_TYPES, event, strict=True):
            if type(value) is not kind:
                raise InvalidArgument(
                    f"stream {stream_id!r}: event {index}: {name} is a {type(value).__name__}; an event is a "
                    "NewEvent of str ids and types and bytes bodies (data, metadata: orjson.dumps gives bytes)"
                )


def check_read(limit: int | None, event_types: Sequence[str] | None = None) -> None:
    """The caller's mistakes in a read."""
    if limit is not None and limit < 0:
        raise InvalidArgument(f"limit cannot be negative ({limit})")
    if isinstance(event_types, str):  # a str is a Sequence[str] too: its letters would be the types
        raise InvalidArgument(f"event_types is a list of event types, not a string: [{event_types!r}]?")


def expected_ok(expected: ExpectedVersion, version: int) -> bool:
    """Whether a stream at ``version`` (0: none; a soft-deleted stream keeps its version) is where ``expected``
    says it is."""
    if expected == ANY:
        return True
    if expected == NO_STREAM:
        return version == 0
    if expected == STREAM_EXISTS:
        return version > 0
    return version == expected


def judge_retry(stream_id: str, events: Sequence[NewEvent], stored: Sequence[S | None]) -> tuple[S, S]:
    """An append whose event ids are already stored (``stored[i]`` is the stored event of ``events[i]``, None if
    that id is new) is a retry when every id is stored, in this stream, at consecutive versions, in this order,
    with the same content: then the first and last stored events, from which the original result is made.
    Anything else is a :class:`DuplicateEventError` saying what differs. The rule of every backend."""
    if any(found is None for found in stored):
        raise DuplicateEventError(
            f"stream {stream_id!r}: some of these event ids are already stored, some are not (a partial overlap)"
        )
    rows = [found for found in stored if found is not None]
    for offset, (found, event) in enumerate(zip(rows, events, strict=True)):
        if found.stream_id != stream_id:
            raise DuplicateEventError(
                f"event {event.event_id!r} is already stored in stream {found.stream_id!r}, not {stream_id!r}"
            )
        if found.version != rows[0].version + offset:
            raise DuplicateEventError(f"stream {stream_id!r}: these event ids are stored, but not in this order")
        if (found.event_type, found.schema_version, found.data, found.metadata) != (
            event.event_type,
            event.schema_version,
            event.data,
            event.metadata,
        ):
            raise DuplicateEventError(
                f"stream {stream_id!r}: event {event.event_id!r} is already stored with other content"
            )
    return rows[0], rows[-1]


class EventStore(Service):
    """The port. Backends: :mod:`.memory`, :mod:`.sqlite`, :mod:`.postgres`."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and create the schema; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically (all or none), after checking ``expected_version``."""

    @abc.abstractmethod
    async def append_many(
        self,
        appends: Sequence[tuple[str, Sequence[NewEvent], ExpectedVersion]],
        *,
        outbox: OutboxRows | None = None,
    ) -> list[AppendResult]:
        """Several streams in one transaction: every append happens, or (one check failing) none does.

        ``outbox``: rows for the transactional outbox, written in the same transaction (SQLite and
        PostgreSQL; the table lives in the store's database): they commit exactly when the events do."""

    @abc.abstractmethod
    async def read_stream(
        self, stream_id: str, *, from_version: int | None = None, backwards: bool = False, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` (default: the first, or the last when ``backwards``)."""

    @abc.abstractmethod
    async def read_all(
        self,
        *,
        from_position: int = 0,
        backwards: bool = False,
        limit: int = 1000,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """The log after ``from_position`` (forwards; backwards: before it, 0 meaning the end), in position
        order, at most ``limit`` events, only ``event_types`` if given."""

    @abc.abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """The stream's version: its number of events ever appended (0: no stream)."""

    @abc.abstractmethod
    def subscribe(
        self, *, from_position: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """A catch-up subscription: the log after ``from_position``, then every event committed later, live."""

    @abc.abstractmethod
    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None: ...

    @abc.abstractmethod
    async def stream_metadata(self, stream_id: str) -> StreamMetadata: ...

    @abc.abstractmethod
    async def delete_stream(self, stream_id: str, *, hard: bool = False) -> None:
        """Soft: the stream reads as empty and may be written again (its version carries on). Hard: gone for
        good (:class:`StreamDeleted` on read or append); its events leave the log at the next scavenge."""

    @abc.abstractmethod
    async def scavenge(self) -> int:
        """Remove what retention and deletes have given up (and give the space back); how many events."""

    @abc.abstractmethod
    async def stats(self) -> StoreStats: ...

    async def append_latest(self, stream_id: str, event: NewEvent) -> None:
        """Append ``event`` to a stream that keeps only its newest event (a snapshot, a checkpoint): the
        stream gets ``max_count=1`` when it is created, and a scavenge drops the older ones."""
        written = await self.append(stream_id, [event], expected_version=ANY)
        if written.first_version == 1:
            await self.set_stream_metadata(stream_id, StreamMetadata(max_count=1))


__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "DuplicateEventError",
    "EventStore",
    "EventStoreError",
    "ExpectedVersion",
    "InvalidArgument",
    "NewEvent",
    "RecordedEvent",
    "StoreStats",
    "StreamDeleted",
    "StreamMetadata",
    "WrongExpectedVersion",
    "check_append",
    "check_read",
    "expected_ok",
    "judge_retry",
]
