"""Aggregates, the repository, snapshots and upcasting, on the in-memory store (the same code runs on every
backend: the repository only uses the store's port). The guide's ``rebuild_state`` is the first example."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.eventstore.aggregate import SNAPSHOT, Aggregate, AggregateNotFound, Repository, Upcasters, when
from tidings.eventstore.base import NewEvent, WrongExpectedVersion
from tidings.eventstore.memory import MemoryEventStore


class UserCreated(Event, type="user.created", version="1.1"):
    user_id: int
    email: str
    name: str
    phone: str | None = None  # new in 1.1: the guide's backward compatible change


class UserUpdated(Event, type="user.updated"):
    changes: dict[str, Any]


class UserDeleted(Event, type="user.deleted"):
    user_id: int


class User(Aggregate, prefix="user", snapshot_every=3):
    """The guide's ``rebuild_state``, as an aggregate."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "created"
        self.email = ""
        self.name = ""
        self.phone: str | None = None

    @when(UserCreated)
    def _created(self, event: UserCreated) -> None:
        self.email, self.name, self.phone = event.email, event.name, event.phone

    @when(UserUpdated)
    def _updated(self, event: UserUpdated) -> None:
        for field, value in event.changes.items():
            setattr(self, field, value)

    @when(UserDeleted)
    def _deleted(self, event: UserDeleted) -> None:
        self.status = "deleted"

    def rename(self, name: str) -> None:
        if self.status == "deleted":
            raise UsageError("a deleted user cannot be renamed")
        self.record(UserUpdated(changes={"name": name}))


def upcasters() -> Upcasters:
    up = Upcasters()

    @up.register("user.created", "1.0", "1.1")
    def add_phone(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "phone": None}

    return up


async def test_the_guides_rebuild_state() -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store, upcasters=upcasters())
        user = User("1")
        user.record(UserCreated(user_id=1, email="john@example.com", name="John Doe"))
        user.record(UserUpdated(changes={"name": "Jane Doe"}))
        await repository.save(user)

        state = await repository.load(User, "1")
    assert (state.id, state.status, state.email, state.name) == ("1", "created", "john@example.com", "Jane Doe")
    assert state.version == 2
    assert state.pending == []


async def test_saving_expects_the_loaded_version() -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store)
        user = User("7")
        user.record(UserCreated(user_id=7, email="a@example.com", name="A"))
        await repository.save(user)
        first, second = await repository.load(User, "7"), await repository.load(User, "7")
        first.rename("B")
        second.rename("C")
        await repository.save(first)
        with pytest.raises(WrongExpectedVersion) as caught:
            await repository.save(second)
        assert (caught.value.expected, caught.value.actual) == (1, 2)
        assert (await repository.load(User, "7")).name == "B"
        with pytest.raises(AggregateNotFound):
            await repository.load(User, "nobody")


async def test_several_aggregates_are_saved_together_or_not_at_all() -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store)
        a, b = User("a"), User("b")
        a.record(UserCreated(user_id=1, email="a@example.com", name="A"))
        b.record(UserCreated(user_id=2, email="b@example.com", name="B"))
        await repository.save(a, b)
        stale_b = await repository.load(User, "b")
        fresh_b = await repository.load(User, "b")
        fresh_b.rename("B2")
        await repository.save(fresh_b)
        a.rename("A2")
        stale_b.rename("B3")
        with pytest.raises(WrongExpectedVersion):
            await repository.save(a, stale_b)  # b changed meanwhile: a's rename is not saved either
        assert (await repository.load(User, "a")).name == "A"
        assert await store.stream_version("user-a") == 1


async def test_snapshots_every_n_events_and_loading_uses_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store)
        user = User("9")
        user.record(UserCreated(user_id=9, email="n@example.com", name="N0"))
        await repository.save(user)
        for i in range(1, 8):
            user.rename(f"N{i}")
            await repository.save(user)
        snapshots = await store.read_stream(f"{SNAPSHOT}-user-9")
        assert [orjson.loads(s.data)["version"] for s in snapshots] == [6]  # taken at 3 and 6; only the newest kept
        applied: list[str] = []
        original = User.apply

        def counting(self: User, event: Event) -> None:
            applied.append(type(event).__name__)
            original(self, event)

        monkeypatch.setattr(User, "apply", counting)
        loaded = await repository.load(User, "9")
        assert loaded.name == "N7"
        assert loaded.version == 8
        assert applied == ["UserUpdated", "UserUpdated"]  # events 7 and 8 only, after the snapshot at 6
        without = await Repository(store, snapshots=False).load(User, "9")
        assert (without.name, without.version) == ("N7", 8)


async def test_old_event_versions_are_upcast_when_read() -> None:
    async with MemoryEventStore() as store:
        # written by the code of last year: user.created 1.0, without phone
        old = orjson.dumps({"user_id": 3, "email": "old@example.com", "name": "Old"})
        written = NewEvent("0192f000-0000-7000-8000-000000000003", "user.created", old, b"{}", "1.0")
        await store.append("user-3", [written])
        user = await Repository(store, upcasters=upcasters()).load(User, "3")
        assert (user.email, user.phone) == ("old@example.com", None)
        with pytest.raises(UsageError, match=r"register an upcaster from 1\.0"):
            await Repository(store).load(User, "3")


async def test_a_snapshot_of_an_old_shape_is_upcast_or_ignored() -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store)
        user = User("4")
        user.record(UserCreated(user_id=4, email="s@example.com", name="S"))
        user.rename("S1")
        user.rename("S2")
        await repository.save(user)  # a snapshot at 3, version "1"

        class UserV2(User, prefix="user", snapshot_every=3, snapshot_version="2"):
            pass

        # no upcaster for snapshot 1 -> 2: the snapshot is ignored and every event replayed
        assert (await repository.load(UserV2, "4")).name == "S2"
        up = Upcasters()

        @up.register(UserV2.snapshot_type(), "1", "2")
        def rename_state(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "state": {**data["state"], "name": data["state"]["name"] + " (from the snapshot)"}}

        assert (await Repository(store, upcasters=up).load(UserV2, "4")).name == "S2 (from the snapshot)"


def test_an_event_without_a_when_method_is_refused() -> None:
    class Other(Event, type="other.happened"):
        pass

    with pytest.raises(UsageError, match="no @when"):
        User("1").record(Other())


async def test_erasing_a_users_key_makes_their_personal_fields_unreadable_in_events_and_snapshots() -> None:
    from typing import Annotated

    from tidings.eventstore.shredding import MemoryKeyStore, Personal, Shredder

    class Registered(Event, type="customer.registered"):
        customer_id: str
        email: Annotated[str | None, Personal]
        country: str

    class Moved(Event, type="customer.moved"):
        address: Annotated[str | None, Personal]
        country: str

    class Customer(Aggregate, prefix="customer", snapshot_every=2):
        __personal__ = frozenset({"email", "address"})

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.email: str | None = None
            self.address: str | None = None
            self.country = ""

        @when(Registered)
        def _registered(self, event: Registered) -> None:
            self.email, self.country = event.email, event.country

        @when(Moved)
        def _moved(self, event: Moved) -> None:
            self.address, self.country = event.address, event.country

    async with MemoryEventStore() as store:
        shredder = Shredder(MemoryKeyStore())
        repository = Repository(store, shredder=shredder)
        for who in ("ann", "bob"):
            customer = Customer(who)
            customer.record(Registered(customer_id=who, email=f"{who}@example.com", country="FR"))
            customer.record(Moved(address=f"1 rue {who}", country="BE"))  # the second event: a snapshot too
            customer.record(Moved(address=f"2 rue {who}", country="NL"))
            await repository.save(customer)
        stored = b"".join(e.data for e in await store.read_all())
        assert b"ann@example.com" not in stored  # encrypted at rest, events and snapshot alike
        assert b"rue ann" not in stored

        assert await shredder.erase("ann")
        ann = await repository.load(Customer, "ann")
        bob = await repository.load(Customer, "bob")
        from_events = await Repository(store, shredder=shredder, snapshots=False).load(Customer, "ann")
    assert (ann.email, ann.address, ann.country) == (None, None, "NL")  # the rest of the history is readable
    assert (from_events.email, from_events.address, from_events.country) == (None, None, "NL")
    assert (bob.email, bob.address) == ("bob@example.com", "2 rue bob")
