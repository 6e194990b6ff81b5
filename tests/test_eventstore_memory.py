"""The memory event store against the event store contract, and what is particular to it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tidings.eventstore.base import EventStore, EventStoreError, NewEvent, StreamMetadata
from tidings.eventstore.memory import MemoryEventStore, MemoryStorage
from tidings.testing.eventstore_contract import EventStoreContract, batch


class TestMemoryEventStore(EventStoreContract):
    durable = False

    @pytest.fixture(autouse=True)
    def _storage(self) -> None:
        self.storage = MemoryEventStore.Storage()

    def create_store(self) -> EventStore:
        return MemoryEventStore(self.storage)


def test_each_store_has_its_own_storage_unless_given_one() -> None:
    async def main() -> None:
        async with MemoryEventStore() as one, MemoryEventStore() as two:
            await one.append("s", batch(1))
            assert await two.stream_version("s") == 0
        storage = MemoryStorage()
        async with MemoryEventStore(storage) as one, MemoryEventStore(storage) as two:
            await one.append("s", batch(1))
            assert await two.stream_version("s") == 1
            assert one.storage is two.storage is storage

    asyncio.run(main())


def test_caller_mistakes_are_value_errors() -> None:
    async def main() -> None:
        async with MemoryEventStore() as store:
            for expected in (-1, True, "latest"):
                with pytest.raises(ValueError, match="expected_version"):
                    await store.append("s", batch(1), expected_version=expected)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="negative"):
                await store.read_stream("s", limit=-1)
            with pytest.raises(ValueError, match="negative"):
                await store.read_all(limit=-1)
            with pytest.raises(ValueError, match="max_count"):
                await store.set_stream_metadata("s", StreamMetadata(max_count=-1))
            assert await store.stream_version("s") == 0

    asyncio.run(main())


def test_subscription_on_an_unstarted_store_raises() -> None:
    async def main() -> None:
        store = MemoryEventStore()
        with pytest.raises(EventStoreError, match="not started"):
            await anext(store.subscribe())

    asyncio.run(main())


def test_an_append_from_another_thread_wakes_a_subscriber() -> None:
    """Stores in two threads (two event loops) on one storage: the subscriber's loop is woken thread-safely."""
    storage = MemoryStorage()

    async def main() -> None:
        async with MemoryEventStore(storage) as store:
            subscription = store.subscribe()
            first = asyncio.ensure_future(anext(subscription))
            await asyncio.sleep(0)  # let it reach its wait, so that the append below must wake it

            def write() -> None:
                async def append() -> None:
                    async with MemoryEventStore(storage) as writer:
                        await writer.append("s", [NewEvent("7b0a6a2e-8d51-4e0c-9d1e-1b1b0c9a4f00", "T", b"x")])

                asyncio.run(append())

            thread = threading.Thread(target=write)
            thread.start()
            event = await asyncio.wait_for(first, 10)
            thread.join()
            assert (event.stream_id, event.data) == ("s", b"x")

    asyncio.run(main())
