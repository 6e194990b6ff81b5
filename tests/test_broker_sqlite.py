"""``sqlite://`` against the broker contract, plus what only it promises: leases that expire, fenced settles,
several broker instances on one file, retention, URL parameters."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tidings.brokers.sqlite as sqlite_module
from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DURABLE,
    ORDERING,
    PATTERNS,
    Broker,
    BrokerError,
    Delivery,
    Message,
    broker_from_url,
)
from tidings.brokers.sqlite import SqliteBroker
from tidings.errors import UsageError
from tidings.testing import BrokerContract
from tidings.testing.broker_contract import Recorder, message, message_id


class TestSqliteBrokerContract(BrokerContract):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'events.db'}"

    def create_broker(self) -> Broker:
        return SqliteBroker(self.url)


class FakeClock:
    """Wall-clock seconds that move only when a test says so (shared by the brokers of a test)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def query(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, args).fetchall()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` (for state outside the event loop, like rows written by another connection)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


def recorder(behaviour: Any = None) -> Recorder:
    return Recorder(behaviour, timeout=10.0) if behaviour else Recorder(timeout=10.0)


# -- URL and configuration --


def test_url_parameters_and_defaults(db: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{db}?visibility_timeout=2.5&retention_count=10&new_group_start=latest")
    assert broker.visibility_timeout == 2.5
    assert broker.path == str(db)
    assert broker.url == f"sqlite:///{db}?visibility_timeout=2.5&retention_count=10&new_group_start=latest"
    assert SqliteBroker("sqlite:///events.db").path == "events.db"  # relative to the working directory
    assert SqliteBroker(f"sqlite:///{db}?visibility_timeout=5", visibility_timeout=7).visibility_timeout == 7
    assert isinstance(broker_from_url(f"sqlite:///{db}"), SqliteBroker)
    assert {DURABLE, ORDERING, PATTERNS, DEAD_LETTER, DELAYED_REDELIVERY} <= SqliteBroker.capabilities


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///:memory:", "memory://"),
        ("sqlite://", "needs a file path"),
        ("sqlite://host/events.db", "no host"),
        ("sqlite:///e.db?visibility=3", "unknown sqlite broker parameter(s) visibility"),
        ("sqlite:///e.db?visibility_timeout=soon", "is not a number"),
        ("sqlite:///e.db?visibility_timeout=0", "must be > 0"),
        ("sqlite:///e.db?retention_count=-1", "must be >= 0"),
        ("sqlite:///e.db?new_group_start=middle", "choose one of earliest, latest"),
        ("sqlite:///e.db?synchronous=off", "choose one of normal, full"),
    ],
)
def test_bad_urls_say_what_to_do(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        SqliteBroker(url)


async def test_a_file_that_cannot_be_opened_fails_at_start(tmp_path: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{tmp_path / 'missing-dir' / 'events.db'}")
    with pytest.raises(BrokerError, match="unable to open") as caught:
        await broker.start()
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    with pytest.raises(BrokerError, match="not started"):
        await broker.publish(Message("c", b""))


async def test_a_newer_schema_is_refused(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}"):
        pass
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(BrokerError, match="schema version 99"):
        await SqliteBroker(f"sqlite:///{db}").start()


async def test_wal_mode_and_synchronous_full(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}?synchronous=full") as broker:
        received = recorder()
        await broker.subscribe("c", "g", received)
        await broker.publish(message("c", "m1"))
        await received.wait_ids({"m1"})
    assert query(db, "PRAGMA journal_mode") == [("wal",)]


async def test_bad_messages_are_refused_before_anything_is_written(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        with pytest.raises(UsageError, match="bytes"):
            await broker.publish(Message("c", "text"))  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="headers"):
            await broker.publish_many([message("c", "ok"), Message("c", b"", {"bad": "\ud800"})])
    assert query(db, "SELECT count(*) FROM tidings_log") == [(0,)]


# -- delivery --


async def test_publish_many_is_one_ordered_batch(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.publish_many([message("c", f"m{i}", key="k") for i in range(100)])
        await broker.publish_many([])
        received = recorder()
        await broker.subscribe("c", "g", received)
        await received.wait_for(lambda: len(received.deliveries) == 100, "100 messages")
    assert received.ids() == [f"m{i}" for i in range(100)]  # one key: publish order
    positions = [row[0] for row in query(db, "SELECT position FROM tidings_log ORDER BY position")]
    assert positions == list(range(positions[0], positions[0] + 100))


async def test_new_groups_start_at_the_earliest_message_or_at_the_end(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.publish(message("c", "before"))
        earliest = recorder()
        await broker.subscribe("c", "from-start", earliest)
        await earliest.wait_ids({"before"})
    async with SqliteBroker(f"sqlite:///{db}?new_group_start=latest") as broker:
        latest = recorder()
        await broker.subscribe("c", "from-end", latest)
        await broker.publish(message("c", "after"))
        await latest.wait_ids({"after"})
        assert latest.ids() == ["after"]


async def test_two_brokers_on_one_file_share_a_group_each_message_once(db: Path) -> None:
    handled: list[str] = []
    progress = recorder()

    async def handle(delivery: Delivery) -> None:
        handled.append(message_id(delivery))
        progress.changed()
        await delivery.ack()

    async with SqliteBroker(f"sqlite:///{db}") as first, SqliteBroker(f"sqlite:///{db}") as second:
        await first.subscribe("jobs", "workers", handle, prefetch=4)
        await second.subscribe("jobs", "workers", handle, prefetch=4)
        for start in range(0, 400, 50):
            await first.publish_many([message("jobs", f"m{i}") for i in range(start, start + 50)])
        await progress.wait_for(lambda: len(set(handled)) == 400, "400 messages handled")
        await second.publish(message("jobs", "last"))  # a barrier, published by the other broker
        await progress.wait_for(lambda: "last" in handled, "the last message")
    assert sorted(handled) == sorted({*handled})
    assert query(db, "SELECT count(*) FROM tidings_leases") == [(0,)]


async def test_an_unsettled_delivery_is_redelivered_after_the_visibility_timeout(db: Path) -> None:
    """A handler that hangs past the visibility timeout: the message goes to the other broker with attempt 2;
    the first handler's late ack is ignored (the lease is fenced by attempt), the second one's counts."""
    clock = FakeClock()
    url = f"sqlite:///{db}?visibility_timeout=30"
    hang, late_ack_done, second_may_ack = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        await asyncio.wait_for(hang.wait(), 10)
        await delivery.ack()  # too late: attempt 1's lease expired and went to the other broker
        late_ack_done.set()

    async def patient(delivery: Delivery) -> None:
        await asyncio.wait_for(second_may_ack.wait(), 10)
        await delivery.ack()

    async with SqliteBroker(url, clock=clock) as first, SqliteBroker(url, clock=clock) as second:
        slow, fast = recorder(stuck), recorder(patient)
        await first.subscribe("jobs", "workers", slow, prefetch=1)  # its one slot stays busy: m1 must go to second
        await first.publish(message("jobs", "m1"))
        await slow.wait_ids({"m1"})
        await second.subscribe("jobs", "workers", fast)
        clock.now += 29  # not yet
        assert query(db, "SELECT attempt FROM tidings_leases") == [(1,)]
        clock.now += 2  # past the visibility timeout
        await fast.wait_ids({"m1"})
        assert fast.deliveries[0].attempt == 2
        hang.set()
        await asyncio.wait_for(late_ack_done.wait(), 10)
        assert query(db, "SELECT attempt FROM tidings_leases") == [(2,)]  # the late ack changed nothing
        second_may_ack.set()
        await wait_until(lambda: query(db, "SELECT count(*) FROM tidings_leases") == [(0,)], "the ack")
        clock.now += 100
        fast.behaviour = _ack_behaviour
        await second.publish(message("jobs", "last"))  # a barrier; either member may take it
        await wait_until(lambda: "last" in slow.ids() + fast.ids(), "the last message")
    assert (slow.ids() + fast.ids()).count("m1") == 2  # once per broker, never again after the ack


async def _ack_behaviour(delivery: Delivery) -> None:
    await delivery.ack()


async def test_closing_gives_back_what_was_taken_but_not_handed_out(db: Path) -> None:
    """prefetch 4, a handler that holds the first message: the other three were taken under a lease; closing
    releases them at once (attempt unchanged) instead of leaving them to the visibility timeout."""
    release = asyncio.Event()

    async def hold(delivery: Delivery) -> None:
        await asyncio.wait_for(release.wait(), 10)
        await delivery.ack()

    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.publish_many([message("jobs", f"m{i}") for i in range(4)])
        held = recorder(hold)
        subscription = await broker.subscribe("jobs", "workers", held, prefetch=1)
        await held.wait_ids({"m0"})
        closing = asyncio.ensure_future(subscription.close())
        release.set()
        await closing
        successor = recorder()
        await broker.subscribe("jobs", "workers", successor)
        await successor.wait_ids({"m1", "m2", "m3"})
        assert [d.attempt for d in successor.deliveries] == [1, 1, 1]
        assert "m0" not in successor.ids()


async def test_a_pattern_subscription_skips_other_channels_traffic(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "_SCAN_WINDOW", 4)  # the cursor must move past windows with no match
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        received = recorder()
        await broker.subscribe("user.*", "g", received)
        await broker.publish_many([message("order.created", f"o{i}") for i in range(30)])
        await broker.publish(message("user.created", "u1"))
        await received.wait_ids({"u1"})
        await broker.publish_many([message("order.created", f"o{i}") for i in range(30, 40)])
        await broker.publish(message("user.deleted", "u2"))
        await received.wait_ids({"u2"})
    assert received.ids() == ["u1", "u2"]


async def test_a_busy_key_does_not_hold_back_other_keys(db: Path) -> None:
    release = asyncio.Event()
    order: list[str] = []
    progress = recorder()

    async def handle(delivery: Delivery) -> None:
        if message_id(delivery) == "hot-0":
            await asyncio.wait_for(release.wait(), 10)
        order.append(message_id(delivery))
        progress.changed()
        await delivery.ack()

    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.publish_many([message("c", f"hot-{i}", key="hot") for i in range(5)])
        await broker.publish_many([message("c", f"cold-{i}", key=f"cold-{i}") for i in range(3)])
        await broker.subscribe("c", "g", handle, prefetch=8)
        await progress.wait_for(lambda: len(order) == 3, "the other keys, while hot-0 is held")
        assert order == ["cold-0", "cold-1", "cold-2"]
        release.set()
        await progress.wait_for(lambda: len(order) == 8, "all eight")
    assert order[3:] == [f"hot-{i}" for i in range(5)]


async def test_the_waiting_room_of_busy_keys_is_bounded(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Later messages of a busy key wait in the lease table, at most _MAX_WAITING of them; past that, new
    messages stay in the log (the group's cursor stops) until there is room. Order holds throughout."""
    monkeypatch.setattr(sqlite_module, "_MAX_WAITING", 3)
    release = asyncio.Event()
    order: list[str] = []
    progress = recorder()

    async def handle(delivery: Delivery) -> None:
        if message_id(delivery) == "hot-0":
            await asyncio.wait_for(release.wait(), 10)
        order.append(message_id(delivery))
        progress.changed()
        await delivery.ack()

    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.publish_many([message("c", f"hot-{i}", key="hot") for i in range(10)])
        await broker.subscribe("c", "g", handle, prefetch=2)  # one free slot per claim: one message per scan
        await wait_until(lambda: _waiting(db) == 3, "three messages waiting for the busy key")
        cursor = query(db, "SELECT cursor FROM tidings_groups")[0][0]
        positions = [row[0] for row in query(db, "SELECT position FROM tidings_log ORDER BY position")]
        assert cursor == positions[3]  # hot-0 in flight, hot-1..3 waiting, hot-4.. still in the log only
        release.set()
        await progress.wait_for(lambda: len(order) == 10, "all ten")
    assert order == [f"hot-{i}" for i in range(10)]


def _waiting(db: Path) -> int:
    count: int = query(db, "SELECT count(*) FROM tidings_leases WHERE visible_at = 0")[0][0]
    return count


async def test_dead_letters_are_shared_by_every_broker_on_the_file(db: Path) -> None:
    async def give_up(delivery: Delivery) -> None:
        await delivery.dead_letter("schema violation: email")

    async with SqliteBroker(f"sqlite:///{db}") as first:
        received = recorder(give_up)
        await first.subscribe("user.created", "email", received)
        await first.publish(message("user.created", "m1", b"{}", headers={"ключ": "✓"}))
        await received.wait_ids({"m1"})
    async with SqliteBroker(f"sqlite:///{db}") as second:
        [dead] = await second.dead_letters()
    assert (dead.group, dead.reason, dead.attempts) == ("email", "schema violation: email", 1)
    assert dead.message == Message("user.created", b"{}", {"id": "m1", "ключ": "✓"}, None)


# -- retention --


async def test_retention_by_count_keeps_the_newest_of_each_channel(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}?retention_count=3") as broker:
        await broker.publish_many([message("a", f"a{i}") for i in range(5)])
        await broker.publish_many([message("b", f"b{i}") for i in range(2)])
        assert await broker.prune() == 2
        assert await broker.prune() == 0
        received = recorder()
        await broker.subscribe("#", "late-group", received)  # a new group starts at the earliest *retained*
        await received.wait_ids({"a2", "a3", "a4", "b0", "b1"})
        await broker.publish(message("a", "last"))
        await received.wait_ids({"last"})
    assert sorted(received.ids()) == ["a2", "a3", "a4", "b0", "b1", "last"]


async def test_retention_by_age(db: Path) -> None:
    clock = FakeClock()
    async with SqliteBroker(f"sqlite:///{db}?retention_seconds=10", clock=clock) as broker:
        await broker.publish_many([message("a", "old1"), message("b", "old2")])
        clock.now += 5
        await broker.publish(message("a", "young"))
        clock.now += 7  # old ones are 12 s old, the young one 7 s
        assert await broker.prune() == 2
    assert [row[0] for row in query(db, "SELECT headers FROM tidings_log")] == ['{"id":"young"}']


async def test_retention_deletes_what_a_group_has_not_taken_like_kafka(db: Path) -> None:
    """A lagging group loses what retention removed; a pruned message waiting for redelivery is not
    redelivered (its lease goes with it)."""

    async def nack_later(delivery: Delivery) -> None:
        await delivery.nack(delay=3600)

    async with SqliteBroker(f"sqlite:///{db}?retention_count=0") as broker:
        received = recorder(nack_later)
        await broker.subscribe("a", "g", received)
        await broker.publish(message("a", "m1"))
        await received.wait_ids({"m1"})
        await wait_until(lambda: query(db, "SELECT owner FROM tidings_leases") == [(None,)], "the nack")
        assert await broker.prune() == 1
        assert query(db, "SELECT count(*) FROM tidings_leases") == [(0,)]


async def test_pruning_runs_on_a_timer(db: Path) -> None:
    async with SqliteBroker(f"sqlite:///{db}?retention_count=2&prune_interval=0.02") as broker:
        await broker.publish_many([message("a", f"m{i}") for i in range(10)])
        await wait_until(lambda: query(db, "SELECT count(*) FROM tidings_log") == [(2,)], "the automatic prune")
