"""The event store's log as the outbox: what a repository saves reaches the broker, once per commit, with
the stored event id, checked against the contract, resuming from its checkpoint after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from _users import User, UserCreated, collect_users, new_user
from conftest import SEED
from tidings.app import App, ContractError
from tidings.events.event import Event
from tidings.eventstore.aggregate import Aggregate, Repository, when
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.publishing import LogRelay


class SnapshottedUser(User, snapshot_every=2):
    """A user with a snapshot every two events (``$snapshot:user``, which the relay does not publish)."""


async def test_saved_events_are_published_with_their_stored_ids_once_per_checkpoint(tmp_path: Path) -> None:
    store = MemoryEventStore()
    app = App(f"sqlite:///{tmp_path / 'broker.db'}", name="user-service", asyncapi=SEED)
    got, done = collect_users(app, 6)

    async with store, app:
        repository = Repository(store)
        for i in range(5):
            user = new_user(i, SnapshottedUser)
            if i == 0:  # two events in one stream: a snapshot ($snapshot) is written too, and not published
                user.record(UserCreated(user_id=i, email=f"u{i}@example.com", name="U"))
            await repository.save(user)
        relay = LogRelay(store, app, name="user-service")
        while await relay.relay_once():
            pass
        await asyncio.wait_for(done.wait(), 10)
        stored = [e for e in await store.read_all() if e.event_type == "user.created"]
        assert relay.sent == len(stored) == 6
        assert await relay.checkpoint() >= stored[-1].position
        # a new relay object (a restart) starts from the checkpoint: nothing is published twice
        again = LogRelay(store, app, name="user-service")
        assert await again.relay_once() == 0
    assert sorted(i for _, i in got) == [0, 0, 1, 2, 3, 4]
    assert sorted(event_id for event_id, _ in got) == sorted(e.event_id for e in stored)  # the stored ids
    user_0 = [event_id for event_id, user_id in got if user_id == 0]
    assert user_0 == [e.event_id for e in stored if e.stream_id == "user-0"]  # in order per aggregate (the key)


async def test_a_stored_event_the_contract_refuses_stops_the_relay() -> None:
    class Bad(Event, type="user.created"):
        user_id: str  # the document says integer

    class Odd(Aggregate, prefix="odd"):
        @when(Bad)
        def _bad(self, event: Bad) -> None:
            pass

    store = MemoryEventStore()
    app = App("memory://", name="user-service", asyncapi=SEED)
    async with store, app:
        odd = Odd("1")
        odd.record(Bad(user_id="one"))
        await Repository(store).save(odd)
        with pytest.raises(ContractError):
            await LogRelay(store, app).run()
