"""Aggregates rebuilt from their events, a repository to load and save them, snapshots and upcasting.

The guide's ``rebuild_state`` as an aggregate::

    class User(Aggregate, prefix="user", snapshot_every=100):
        email: str = ""
        deleted: bool = False

        @when(UserCreated)
        def _created(self, event: UserCreated) -> None:
            self.email = event.email

        @when(UserDeleted)
        def _deleted(self, event: UserDeleted) -> None:
            self.deleted = True

        def delete(self) -> None:                       # a command: check, then record what happened
            if self.deleted:
                raise UsageError("already deleted")
            self.record(UserDeleted(user_id=self.id))

    user = await repository.load(User, "42")              # snapshot + newer events, or every event
    user.delete()
    await repository.save(user)                           # appended with expected_version = the loaded version

- **State** is the aggregate's public attributes; :meth:`Aggregate.record` applies an event at once (the same
  ``@when`` method that replays it later) and keeps it to be saved.
- **Saving** several aggregates in one :meth:`Repository.save` call is one transaction (``append_many``): all are
  appended or, if any was changed meanwhile, none (:class:`~tidings.eventstore.base.WrongExpectedVersion`).
- **Snapshots** every ``snapshot_every`` events (per aggregate type): the state as JSON in the stream
  ``$snapshot-<stream>`` of the same store, which keeps only the newest (``max_count=1``). Loading takes the
  newest snapshot and the events after it. A snapshot is a cache: written after the events' transaction,
  ignored when its schema version (``snapshot_version``) has no upcaster to the current one.
- **Upcasting**: an event stored as an older version of its type (the guide's ``user.created`` 1.0, before
  ``phone``) is upgraded when read, by the functions registered per (type, version) in :class:`Upcasters`,
  one step at a time; snapshots upcast the same way (their type is ``$snapshot:<prefix>``).
- Event types starting with ``$`` (snapshots) belong to the store's machinery: projections skip them.
- **Publishing** without a dual write: ``Repository(store, outbox=Outbox(app))`` puts each saved event's message
  (what ``app.publish`` sends, with the stored event id, keyed by the aggregate id, checked by the app's
  contract before anything is written) in the transactional outbox table of the store's own database, in the
  transaction of the append (SQLite and PostgreSQL stores); an
  :class:`~tidings.reliability.outbox.OutboxRelay` on that database publishes them. The other way, with no
  table, is :class:`~tidings.eventstore.publishing.LogRelay`, which follows the log itself.

Events are stored as the app would publish them: the model's JSON (``model_dump(mode="json")``) as data, its
``event_type`` and version, a UUID v7 id, and metadata naming the aggregate type.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import orjson

from tidings.errors import TidingsError, UsageError
from tidings.events.envelope import uuid7
from tidings.events.event import Event
from tidings.eventstore.base import (
    NO_STREAM,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
)
from tidings.eventstore.publishing import stored_message
from tidings.eventstore.shredding import Shredder, personal_fields

if TYPE_CHECKING:
    from tidings.reliability.outbox import Outbox

E = TypeVar("E", bound=Event)
A = TypeVar("A", bound="Aggregate")
Handler = Callable[[Any, Any], None]
SNAPSHOT = "$snapshot"


class AggregateNotFound(TidingsError):
    """No events for the aggregate asked for."""


def when(event_class: type[E]) -> Callable[[Callable[[A, E], None]], Callable[[A, E], None]]:
    """Mark a method of an :class:`Aggregate` as the way ``event_class`` changes its state."""

    def mark(method: Callable[[A, E], None]) -> Callable[[A, E], None]:
        method.__tidings_when__ = event_class  # type: ignore[attr-defined]
        return method

    return mark


class Aggregate:
    """Base of event-sourced aggregates: ``class User(Aggregate, prefix="user", snapshot_every=100)``."""

    #: streams of this type are ``<prefix>-<id>``
    __prefix__: ClassVar[str] = ""
    #: a snapshot every this many events (None: never)
    __snapshot_every__: ClassVar[int | None] = None
    #: the schema version of this type's snapshots (bump it when the state's shape changes)
    __snapshot_version__: ClassVar[str] = "1"
    #: event type -> (event class, the method that applies it); built from the ``@when`` methods
    __handlers__: ClassVar[dict[str, tuple[type[Event], Handler]]] = {}

    def __init_subclass__(
        cls,
        prefix: str | None = None,
        snapshot_every: int | None = None,
        snapshot_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.__prefix__ = prefix or cls.__prefix__ or cls.__name__.lower()
        if snapshot_every is not None:
            if snapshot_every < 1:
                raise UsageError(f"{cls.__name__}: snapshot_every must be at least 1")
            cls.__snapshot_every__ = snapshot_every
        if snapshot_version is not None:
            cls.__snapshot_version__ = str(snapshot_version)
        handlers = dict(cls.__handlers__)
        for _, method in inspect.getmembers(cls, inspect.isfunction):
            event_class = getattr(method, "__tidings_when__", None)
            if event_class is not None:
                handlers[event_class.event_type()] = (event_class, method)
        cls.__handlers__ = handlers

    def __init__(self, id: str) -> None:
        self.id = id
        #: the number of events this aggregate has, saved or not
        self.version = 0
        self._pending: list[Event] = []

    @classmethod
    def stream_id(cls, id: str) -> str:
        return f"{cls.__prefix__}-{id}"

    @classmethod
    def snapshot_type(cls) -> str:
        return f"{SNAPSHOT}:{cls.__prefix__}"

    def record(self, event: Event) -> None:
        """A command's outcome: apply ``event`` now and keep it to be saved."""
        self.apply(event)
        self._pending.append(event)

    def apply(self, event: Event) -> None:
        found = self.__handlers__.get(type(event).event_type())
        if found is None:
            raise UsageError(
                f"{type(self).__name__} has no @when({type(event).__name__}) method: it cannot apply that event"
            )
        found[1](self, event)
        self.version += 1

    @property
    def pending(self) -> list[Event]:
        """Events recorded and not yet saved."""
        return list(self._pending)

    def state(self) -> dict[str, Any]:
        """What a snapshot keeps: the public attributes (JSON-able), apart from ``id`` and ``version``."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("id", "version")}

    @classmethod
    def from_state(cls, id: str, version: int, state: dict[str, Any]) -> Self:
        aggregate = cls(id)
        vars(aggregate).update(state)
        aggregate.version = version
        return aggregate

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, version={self.version})"


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """Functions that upgrade stored events (and snapshots) of an old schema version to the next one.

    >>> upcasters = Upcasters()
    >>> @upcasters.register("user.created", "1.0", "2.0")
    ... def add_phone(data):
    ...     return {**data, "phone": None}
    >>> upcasters.upcast("user.created", "1.0", {"user_id": 1})
    ('2.0', {'user_id': 1, 'phone': None})
    """

    def __init__(self) -> None:
        self._steps: dict[tuple[str, str], tuple[str, Upcaster]] = {}

    def register(self, event_type: str, from_version: str, to_version: str) -> Callable[[Upcaster], Upcaster]:
        if (event_type, from_version) in self._steps:
            raise UsageError(f"an upcaster of {event_type} {from_version} is registered already")

        def add(fn: Upcaster) -> Upcaster:
            self._steps[event_type, from_version] = (to_version, fn)
            return fn

        return add

    def upcast(self, event_type: str, version: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``data`` upgraded step by step as far as the registered functions go: (its version, the data)."""
        seen = {version}
        while (step := self._steps.get((event_type, version))) is not None:
            version, fn = step[0], step[1]
            if version in seen:
                raise UsageError(f"the upcasters of {event_type} go round in a circle at version {version}")
            seen.add(version)
            data = fn(data)
        return version, data

    def read_as(self, model: type[E], recorded: RecordedEvent, data: dict[str, Any], *, fix: str = "") -> E:
        """``data`` (``recorded``'s body, parsed) upcast to ``model``'s version and validated as ``model``;
        ``fix``: where to register the missing upcaster, for the error."""
        version, body = self.upcast(recorded.event_type, recorded.schema_version, data)
        if version != model.event_version():
            raise UsageError(
                f"{recorded.event_type!r} {recorded.schema_version} (stream {recorded.stream_id!r}, version "
                f"{recorded.version}) cannot be read as {model.__name__} {model.event_version()}: register an "
                f"upcaster from {version}{fix}"
            )
        return model.model_validate(body)


class Repository:
    """Loads aggregates from an :class:`~tidings.eventstore.base.EventStore` and saves what they recorded.

    With an ``outbox`` (:class:`~tidings.reliability.outbox.Outbox`), the saved events' messages go into the
    outbox table of the store's database in the same transaction (see the module docs).

    With a ``shredder`` (:class:`~tidings.eventstore.shredding.Shredder`), the personal fields of events and
    snapshots (``Annotated[str | None, Personal]``; an aggregate's ``__personal__``) are stored encrypted with
    the key of the aggregate's id; once that key is erased they read as None, everywhere in its history.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        upcasters: Upcasters | None = None,
        snapshots: bool = True,
        shredder: Shredder | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.store = store
        self.upcasters = upcasters or Upcasters()
        self.snapshots = snapshots
        self.shredder = shredder
        self.outbox = outbox

    async def load(self, cls: type[A], id: str) -> A:
        found = await self.get(cls, id)
        if found is None:
            raise AggregateNotFound(f"no {cls.__name__} {id!r} (stream {cls.stream_id(id)!r} has no events)")
        return found

    async def get(self, cls: type[A], id: str) -> A | None:
        """The aggregate as its events (after its newest usable snapshot) make it; None if it has none."""
        stream = cls.stream_id(id)
        aggregate: A | None = None
        if self.snapshots and cls.__snapshot_every__ is not None:
            aggregate = await self._from_snapshot(cls, id, stream)
        start = aggregate.version + 1 if aggregate is not None else 1
        events = await self.store.read_stream(stream, from_version=start)
        if aggregate is None:
            if not events:
                return None
            aggregate = cls(id)
        datas = [orjson.loads(recorded.data) for recorded in events]
        if self.shredder is not None:
            datas = await self.shredder.decrypt_many(datas)
        for recorded, data in zip(events, datas, strict=True):
            aggregate.apply(self.decode(cls, recorded, data))
        return aggregate

    async def save(self, *aggregates: Aggregate) -> None:
        """Append what each aggregate recorded, all in one transaction, each expecting its loaded version."""
        appends: list[tuple[str, Sequence[NewEvent], ExpectedVersion]] = []
        chosen = [a for a in aggregates if a._pending]
        for aggregate in chosen:
            loaded = aggregate.version - len(aggregate._pending)
            expected: ExpectedVersion = loaded if loaded else NO_STREAM
            events = [await self.encode(aggregate, event) for event in aggregate._pending]
            appends.append((aggregate.stream_id(aggregate.id), events, expected))
        if not appends:
            return
        if self.outbox is not None:
            # enveloped and checked by the contract now: a refused event leaves the store untouched
            app, now = self.outbox.app, time.time()
            messages = [
                stored_message(app, e.event_id, e.event_type, e.schema_version, e.data, e.metadata, now)
                for _, events, _ in appends
                for e in events
            ]
            await self.store.append_many(appends, outbox=self.outbox.rows(messages))
        elif len(appends) == 1:
            await self.store.append(appends[0][0], appends[0][1], expected_version=appends[0][2])
        else:
            await self.store.append_many(appends)
        for aggregate in chosen:
            before = aggregate.version - len(aggregate._pending)
            aggregate._pending.clear()
            every = type(aggregate).__snapshot_every__
            if self.snapshots and every is not None and aggregate.version // every > before // every:
                await self.snapshot(aggregate)

    async def snapshot(self, aggregate: Aggregate) -> None:
        """Write the aggregate's state now as its newest snapshot."""
        cls = type(aggregate)
        snapshot_stream = f"{SNAPSHOT}-{cls.stream_id(aggregate.id)}"
        state = aggregate.state()
        if self.shredder is not None:
            state = await self.shredder.encrypt(aggregate.id, state, personal_fields(cls))
        body = {"version": aggregate.version, "state": state}
        event = NewEvent(uuid7(), cls.snapshot_type(), orjson.dumps(body), b"{}", cls.__snapshot_version__)
        await self.store.append_latest(snapshot_stream, event)  # only the newest snapshot is worth keeping

    async def _from_snapshot(self, cls: type[A], id: str, stream: str) -> A | None:
        newest = await self.store.read_stream(f"{SNAPSHOT}-{stream}", backwards=True, limit=1)
        if not newest:
            return None
        recorded = newest[0]
        version, body = self.upcasters.upcast(recorded.event_type, recorded.schema_version, orjson.loads(recorded.data))
        if version != cls.__snapshot_version__:
            return None  # a snapshot of a shape this code no longer knows: replay every event instead
        state = body["state"]
        if self.shredder is not None:
            state = await self.shredder.decrypt(state)
        return cls.from_state(id, int(body["version"]), state)

    async def encode(self, aggregate: Aggregate, event: Event) -> NewEvent:
        metadata = orjson.dumps({"aggregate": type(aggregate).__name__, "aggregate_id": aggregate.id})
        if self.shredder is not None:
            data = await self.shredder.encrypt_model(aggregate.id, event)  # the aggregate's id is the subject
        else:
            data = event.model_dump(mode="json")
        return NewEvent(uuid7(), event.event_type(), orjson.dumps(data), metadata, event.event_version())

    def decode(self, cls: type[Aggregate], recorded: RecordedEvent, data: dict[str, Any] | None = None) -> Event:
        """The typed event ``recorded`` holds (``data``: its body, already parsed and decrypted)."""
        found = cls.__handlers__.get(recorded.event_type)
        if found is None:
            raise UsageError(
                f"{cls.__name__} cannot apply {recorded.event_type!r} (stream {recorded.stream_id!r}, version "
                f"{recorded.version}): add a @when method for it"
            )
        body = orjson.loads(recorded.data) if data is None else data
        return self.upcasters.read_as(found[0], recorded, body)


__all__ = [
    "SNAPSHOT",
    "Aggregate",
    "AggregateNotFound",
    "Repository",
    "Upcasters",
    "when",
]
