"""The transactional outbox on real databases (SQLite, PostgreSQL) and real brokers (memory, sqlite, RabbitMQ):
published if and only if the transaction commits, in order per key, through broker outages, relay crashes
and several relays at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import PG_DSN
from tidings.app import App, ContractError, EventContext
from tidings.brokers.base import Broker, BrokerError, Delivery, Message, broker_from_url
from tidings.brokers.memory import MemoryBroker
from tidings.errors import UsageError
from tidings.events.envelope import Envelope
from tidings.events.event import Event
from tidings.reliability.outbox import DEFAULT_TABLE, Outbox, OutboxError, OutboxRelay
from tidings.testing.services import require
from tidings.testing.wrap import BrokerWrapper

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "user-service.asyncapi.yaml"
RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


def user(i: int, name: str = "U") -> UserCreated:
    return UserCreated(user_id=i, email=f"u{i}@example.com", name=name)


def make_app(broker: Broker | str = "memory://") -> App:
    return App(broker, name="user-service", asyncapi=SEED)


async def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def body(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(message.body)
    return data


class Receiver:
    """A consumer group on a broker that records every delivery (event id, user id, key) and acks it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, str | None]] = []

    async def handle(self, delivery: Delivery) -> None:
        data = body(delivery.message)
        self.got.append((data["event_id"], data["user_id"], delivery.message.key))
        await delivery.ack()

    def counts(self) -> Counter[str]:
        return Counter(event_id for event_id, _, _ in self.got)


def add_all(outbox: Outbox, db: Path, events: Iterable[tuple[UserCreated, str | None]], per_tx: int = 250) -> list[str]:
    """Add ``events`` through sqlite3 in transactions of ``per_tx``; their event ids, in order."""
    ids: list[str] = []
    conn = sqlite3.connect(db)
    try:
        outbox.create_table(conn)
        pending = list(events)
        for start in range(0, len(pending), per_tx):
            with conn:
                ids += [outbox.add(conn, event, key=key).event_id for event, key in pending[start : start + per_tx]]
    finally:
        conn.close()
    return ids


async def drain(*relays: OutboxRelay, timeout: float = 20.0) -> None:
    """Run ``relays`` until the outbox is empty, then stop them."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        deadline = time.monotonic() + timeout
        while await relays[0].pending():
            assert time.monotonic() < deadline, "the outbox was not drained in time"
            for task in tasks:
                if task.done():
                    task.result()  # a relay that died says why
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A fresh table name on the test PostgreSQL database; the table (and its _users table) dropped afterwards."""
    require("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    table = f"outbox_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")


# -- 1, 2: published if and only if the transaction commits, whatever the connection ----------------------------


def write_sqlite3(outbox: Outbox, url: str, users: str) -> Envelope:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        outbox.create_table(conn)
        conn.execute(f"CREATE TABLE {users} (id INTEGER PRIMARY KEY)")
        conn.commit()
        with conn:  # commits
            conn.execute(f"INSERT INTO {users} VALUES (1)")
            kept = outbox.add(conn, user(1), key="1")
        conn.execute(f"INSERT INTO {users} VALUES (2)")
        outbox.add(conn, user(2), key="2")
        conn.rollback()
    finally:
        conn.close()
    return kept


def write_psycopg(outbox: Outbox, url: str, users: str) -> Envelope:
    import psycopg

    with psycopg.connect(url) as conn:
        outbox.create_table(conn)
        conn.execute(f"CREATE TABLE {users} (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.execute(f"INSERT INTO {users} VALUES (1)")
        kept = outbox.add(conn, user(1), key="1")
        conn.commit()
        conn.execute(f"INSERT INTO {users} VALUES (2)")
        outbox.add(conn, user(2), key="2")
        conn.rollback()
    return kept


async def write_psycopg_async(outbox: Outbox, url: str, users: str) -> Envelope:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        await outbox.create_table_async(conn)
        await conn.execute(f"CREATE TABLE {users} (id INTEGER PRIMARY KEY)")
        await conn.commit()
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {users} VALUES (1)")
            kept = await outbox.add_async(conn, user(1), key="1")
        await conn.execute(f"INSERT INTO {users} VALUES (2)")
        await outbox.add_async(conn, user(2), key="2")
        await conn.rollback()
    return kept


def write_sqlalchemy_session(outbox: Outbox, url: str, users: str) -> Envelope:
    import sqlalchemy
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(url)
    try:
        with Session(engine) as session:
            outbox.create_table(session)
            session.execute(sqlalchemy.text(f"CREATE TABLE {users} (id INTEGER PRIMARY KEY)"))
            session.commit()
            with session.begin():  # commits
                session.execute(sqlalchemy.text(f"INSERT INTO {users} VALUES (1)"))
                kept = outbox.add(session, user(1), key="1")
            session.execute(sqlalchemy.text(f"INSERT INTO {users} VALUES (2)"))
            outbox.add(session, user(2), key="2")
            session.rollback()
    finally:
        engine.dispose()
    return kept


def write_sqlalchemy_connection(outbox: Outbox, url: str, users: str) -> Envelope:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            outbox.create_table(conn)
            conn.execute(sqlalchemy.text(f"CREATE TABLE {users} (id INTEGER PRIMARY KEY)"))
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"INSERT INTO {users} VALUES (1)"))
            kept = outbox.add(conn, user(1), key="1")
            conn.commit()
            conn.execute(sqlalchemy.text(f"INSERT INTO {users} VALUES (2)"))
            outbox.add(conn, user(2), key="2")
            conn.rollback()
    finally:
        engine.dispose()
    return kept


Writer = Callable[[Outbox, str, str], Envelope | Awaitable[Envelope]]
#: name -> (database, how the committed and the rolled-back event are written)
WRITERS: dict[str, tuple[str, Writer]] = {
    "sqlite3": ("sqlite", write_sqlite3),
    "sqlalchemy-session-sqlite": ("sqlite", write_sqlalchemy_session),
    "sqlalchemy-connection-sqlite": ("sqlite", write_sqlalchemy_connection),
    "psycopg": ("postgresql", write_psycopg),
    "psycopg-async": ("postgresql", write_psycopg_async),
    "sqlalchemy-session-postgresql": ("postgresql", write_sqlalchemy_session),
}


@pytest.mark.parametrize("writer", list(WRITERS))
async def test_an_event_is_published_if_and_only_if_its_transaction_commits(
    writer: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database, write = WRITERS[writer]
    if database == "postgresql":
        table: str = request.getfixturevalue("pg_table")
        url = PG_DSN.replace("postgresql://", "postgresql+psycopg://") if "sqlalchemy" in writer else PG_DSN
        source = url  # the relay takes SQLAlchemy's URL spelling too
    else:
        table = DEFAULT_TABLE
        url = source = f"sqlite:///{tmp_path / 'app.db'}"
    written = write(Outbox(make_app(), table=table), url, f"{table}_users")
    kept = await written if isinstance(written, Awaitable) else written

    app = make_app()
    got: list[tuple[int, str]] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append((event.user_id, ctx.envelope.event_id))

    async with app, OutboxRelay(source, app.broker, table=table) as relay:
        assert await relay.pending() == 1
        assert await relay.relay_once() == 1
        assert await relay.relay_once() == 0
        assert await relay.pending() == 0
        await until(lambda: bool(got), what="the committed event")
        await asyncio.sleep(0.05)  # and nothing else comes
        assert await relay.delete_sent(older_than=3600) == 0
        assert await relay.delete_sent(older_than=0) == 1
    assert got == [(1, kept.event_id)]


# -- 3: the contract is checked before anything is stored ----------------------------------------------------------


async def test_an_event_that_breaks_the_contract_raises_and_stores_nothing(tmp_path: Path) -> None:
    outbox = Outbox(make_app())
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        outbox.create_table(conn)
        with pytest.raises(ContractError) as caught:
            outbox.add(conn, UserCreated(user_id=1, email="not-an-email", name="A"))
        assert not conn.in_transaction  # not a statement was run
        assert conn.execute(f"SELECT count(*) FROM {DEFAULT_TABLE}").fetchone() == (0,)
    finally:
        conn.close()
    assert caught.value.field == "email"


async def test_a_connection_that_would_commit_the_event_on_its_own_is_refused(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    outbox = Outbox(make_app())
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    try:
        outbox.create_table(conn)
        with pytest.raises(UsageError, match="autocommit mode with no transaction open"):
            outbox.add(conn, user(1))
        conn.execute("BEGIN")
        outbox.add(conn, user(2))  # inside an explicit transaction: fine
        conn.execute("ROLLBACK")
        assert conn.execute(f"SELECT count(*) FROM {DEFAULT_TABLE}").fetchone() == (0,)
    finally:
        conn.close()

    import psycopg

    table = request.getfixturevalue("pg_table")
    outbox = Outbox(make_app(), table=table)
    with psycopg.connect(PG_DSN, autocommit=True) as pg:
        outbox.create_table(pg)
        with pytest.raises(UsageError, match="autocommit mode"):
            outbox.add(pg, user(1))
        with pg.transaction():
            outbox.add(pg, user(2))
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


# -- 4: order per key ---------------------------------------------------------------------------------------------


async def test_a_thousand_events_over_ten_keys_are_consumed_in_order_per_key(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    broker = broker_from_url(f"sqlite:///{tmp_path / 'events.db'}")
    receiver = Receiver()
    async with broker, OutboxRelay(db, broker, batch=64, poll_interval=0.01) as relay:  # the relay makes the table
        await broker.subscribe("user.created", "audit", receiver.handle, prefetch=32)
        # keys interleaved, in transactions that cut across them
        add_all(Outbox(make_app()), db, [(user(i), f"key-{i % 10}") for i in range(1000)], per_tx=90)
        await drain(relay)
        await until(lambda: len(receiver.got) >= 1000, what="1,000 deliveries")
    per_key: dict[str | None, list[int]] = defaultdict(list)
    for _, user_id, key in receiver.got:
        per_key[key].append(user_id)
    assert len(receiver.got) == 1000
    assert set(per_key) == {f"key-{k}" for k in range(10)}
    for key, user_ids in per_key.items():
        assert user_ids == list(range(int(str(key).removeprefix("key-")), 1000, 10)), key


# -- 5: a broker outage ----------------------------------------------------------------------------------------------


class FlakyBroker(BrokerWrapper):
    """A real broker behind a wrapper whose publish_many fails as ``plan`` says, one entry per call: ``"down"``
    (raises before anything is sent), ``"half"`` (sends the first half, then raises), ``"ok"``; then works."""

    def __init__(self, inner: Broker, plan: list[str]) -> None:
        super().__init__(inner)
        self.plan = plan
        self.calls = 0

    @property
    def url(self) -> str:
        return "amqp://relay:s3cret@rabbit.internal:5672/"  # a password that must not reach the log

    async def publish_many(self, messages: Iterable[Message]) -> None:
        messages = list(messages)
        step = self.plan[self.calls] if self.calls < len(self.plan) else "ok"
        self.calls += 1
        if step == "half":
            await self.inner.publish_many(messages[: len(messages) // 2])
        if step != "ok":
            raise BrokerError(f"connection to amqp://relay:s3cret@rabbit.internal:5672/ lost ({step})\nsecond line")
        await self.inner.publish_many(messages)


async def test_a_broker_outage_is_retried_with_backoff_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "app.db"
    ids = add_all(Outbox(make_app()), db, [(user(i), f"key-{i % 3}") for i in range(300)])
    memory = MemoryBroker()
    memory.record = True
    broker = FlakyBroker(memory, ["ok", "down", "half", "down", "ok", "half"])
    caplog.set_level(logging.INFO, logger="tidings.outbox")
    started = time.monotonic()
    async with OutboxRelay(db, broker, batch=50, poll_interval=0.01, backoff=(0.02, 0.08)) as relay:
        await drain(relay)
        assert relay.failures == 0
        assert relay.sent == 300
    elapsed = time.monotonic() - started

    published = [body(m)["event_id"] for m in memory.published]
    counts = Counter(published)
    assert set(counts) == set(ids)  # none lost
    assert sum(counts.values()) - len(ids) == 25 + 25  # the two half-sent batches, sent again whole
    first_seen = list(dict.fromkeys(published))
    assert first_seen == ids  # the outbox order, hence every key's order
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert [w.split("; retry ")[1].split(" ")[0] for w in warnings] == ["1", "2", "3", "1"]
    assert "publishing rows 51..100 of SQLite" in warnings[0]
    for warning in warnings:
        assert "\n" not in warning
        assert "s3cret" not in warning
        assert "amqp://relay:***@rabbit.internal:5672/" in warning
    assert elapsed >= 0.01 + 0.02 + 0.04 + 0.01  # it did wait (the smallest draws of each backoff)


# -- 6: a relay that crashes ------------------------------------------------------------------------------------------

CRASHING_RELAY = """
import asyncio, os, signal, sys

from tidings.brokers.base import broker_from_url
from tidings.reliability.outbox import OutboxRelay


async def main(db: str, events: str, kill_after: int) -> None:
    broker = broker_from_url(f"sqlite:///{events}")
    publish_many = broker.publish_many
    calls = 0

    async def publish_then_die(messages):
        nonlocal calls
        await publish_many(messages)
        calls += 1
        if calls == kill_after:  # the broker confirmed, the rows are not marked yet: the worst moment to die
            os.kill(os.getpid(), signal.SIGKILL)

    broker.publish_many = publish_then_die
    async with broker, OutboxRelay(db, broker, batch=100, poll_interval=0.01, lease_seconds=0.5) as relay:
        await relay.run()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_relay_killed_mid_run_is_restarted_and_every_event_arrives(tmp_path: Path) -> None:
    db, events = tmp_path / "app.db", tmp_path / "events.db"
    ids = add_all(Outbox(make_app()), db, [(user(i), f"key-{i % 7}") for i in range(1000)])
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CRASHING_RELAY, str(db), str(events), "3"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    broker = broker_from_url(f"sqlite:///{events}")
    receiver = Receiver()
    async with broker, OutboxRelay(db, broker, batch=100, poll_interval=0.01) as relay:
        assert await relay.pending() == 800  # two batches marked, the third published but not marked
        await drain(relay)  # waits out the dead relay's lease first
        await broker.subscribe("user.created", "audit", receiver.handle, prefetch=64)
        await until(lambda: len(receiver.got) >= 1100, what="every delivery")
        await asyncio.sleep(0.1)
    counts = receiver.counts()
    duplicates = sum(counts.values()) - len(counts)
    lost = len(set(ids) - set(counts))
    print(f"outbox crash: sent={len(ids)} delivered distinct={len(counts)} duplicates={duplicates} lost={lost}")
    assert lost == 0
    assert set(counts) == set(ids)
    assert duplicates == 100  # exactly the batch in flight when the relay died
    assert {event_id for event_id, count in counts.items() if count > 1} == set(ids[200:300])


# -- 7: two relays at once ---------------------------------------------------------------------------------------------


async def two_relays_publish_each_row_once(source: str, table: str, ids: list[str], broker: MemoryBroker) -> None:
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first = OutboxRelay(source, broker, table=table, batch=50, poll_interval=0.01, name="first")
    second = OutboxRelay(source, broker, table=table, batch=50, poll_interval=0.01, name="second")
    both_held = False

    async def run(relay: OutboxRelay, stop: asyncio.Event) -> None:
        nonlocal both_held
        async with relay:
            task = asyncio.create_task(relay.run(stop))
            while not task.done():
                both_held = both_held or (first.holds_lease and second.holds_lease)
                await asyncio.sleep(0.001)
            task.result()

    async with broker:
        tasks = [asyncio.create_task(run(first, stop_first)), asyncio.create_task(run(second, stop_second))]
        await until(lambda: len(broker.published) >= len(ids) // 3, what="a third of the rows")
        # the publishing one stops (gracefully: its batch finished and marked, its lease released)
        (stop_first if first.holds_lease else stop_second).set()
        await until(lambda: len(broker.published) >= len(ids), what="every row")
        stop_first.set()
        stop_second.set()
        await asyncio.gather(*tasks)
    counts = Counter(body(m)["event_id"] for m in broker.published)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}  # no row published twice
    assert first.sent > 0
    assert second.sent > 0  # the lease moved from one to the other
    assert first.sent + second.sent == len(ids)
    assert not both_held


async def test_two_relays_on_one_sqlite_outbox_never_publish_a_row_twice(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    ids = add_all(Outbox(make_app()), db, [(user(i), f"key-{i % 5}") for i in range(2000)])
    broker = MemoryBroker()
    broker.record = True
    await two_relays_publish_each_row_once(f"sqlite:///{db}", DEFAULT_TABLE, ids, broker)


async def test_two_relays_on_one_postgres_outbox_never_publish_a_row_twice(pg_table: str) -> None:
    import psycopg

    outbox = Outbox(make_app(), table=pg_table)
    with psycopg.connect(PG_DSN) as conn:
        outbox.create_table(conn)
        ids = [outbox.add(conn, user(i), key=f"key-{i % 5}").event_id for i in range(1000)]
    broker = MemoryBroker()
    broker.record = True
    await two_relays_publish_each_row_once(PG_DSN, pg_table, ids, broker)


# -- RabbitMQ --------------------------------------------------------------------------------------------------------


@pytest.fixture
async def rabbit_exchange() -> AsyncIterator[str]:
    """A fresh exchange name; it and what the broker declared beside it deleted afterwards."""
    require("RabbitMQ", "127.0.0.1", 5672)
    import aio_pika

    exchange = f"outbox-test-{uuid.uuid4().hex[:8]}"
    yield exchange
    connection = await aio_pika.connect(RABBIT)
    async with connection:
        for kind, name in [
            ("queue", f"{exchange}.email-service.user.created"),
            ("queue", f"{exchange}.unrouted"),
            ("queue", f"{exchange}.dead-letters"),
            ("exchange", f"{exchange}.dead-letters"),
            ("exchange", exchange),
        ]:
            channel = await connection.channel()  # a failed delete closes its channel: one each
            try:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except aio_pika.exceptions.AMQPError:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()


async def test_the_relay_publishes_to_rabbitmq_with_confirms(tmp_path: Path, rabbit_exchange: str) -> None:
    db = tmp_path / "app.db"
    ids = add_all(Outbox(make_app()), db, [(user(i), f"key-{i % 4}") for i in range(200)])
    app = make_app(f"{RABBIT}?exchange={rabbit_exchange}")
    got: list[str] = []

    @app.subscriber("user.created", group="email-service", prefetch=1)
    async def send_welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append(ctx.envelope.event_id)

    async with app, OutboxRelay(db, app.broker, batch=64, poll_interval=0.01) as relay:
        queue = app.broker.queue_name("user.created", "email-service")  # type: ignore[attr-defined]
        assert queue == f"{rabbit_exchange}.email-service.user.created"  # the one the fixture deletes
        await drain(relay)
        await until(lambda: len(got) >= 200, what="200 deliveries from RabbitMQ")
    assert got == ids  # one queue, one consumer at a time: RabbitMQ keeps the publish order


# -- 8: database errors ---------------------------------------------------------------------------------------------


async def test_an_unreadable_outbox_database_is_one_clear_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(OutboxError) as caught:
        async with OutboxRelay(garbage, "memory://"):
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert f"SQLite {garbage}" in message
    assert "file is not a database" in message

    with pytest.raises(OutboxError, match=r"unable to open database file; check the path"):
        await OutboxRelay(f"sqlite:///{tmp_path / 'missing.db'}", "memory://").start()

    conn = sqlite3.connect(tmp_path / "empty.db")
    try:
        with pytest.raises(OutboxError, match=r"no such table: tidings_outbox; create the table with Outbox"):
            Outbox(make_app()).add(conn, user(1))
    finally:
        conn.close()


async def test_a_locked_database_fails_the_start_and_is_waited_out_while_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "app.db"
    ids = add_all(Outbox(make_app()), db, [(user(1), "1")])
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(OutboxError) as caught:
            await OutboxRelay(db, "memory://", timeout=0.05).start()
        assert "\n" not in str(caught.value)
        assert "database is locked; another connection holds" in str(caught.value)
        holder.execute("COMMIT")

        broker = MemoryBroker()
        broker.record = True
        async with OutboxRelay(db, broker, timeout=0.05, poll_interval=0.01, backoff=(0.01, 0.02)) as relay:
            holder.execute("BEGIN EXCLUSIVE")
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            await until(lambda: relay.failures >= 2, what="the relay to meet the lock")
            holder.execute("COMMIT")  # the outage ends
            await until(lambda: len(broker.published) == 1, what="the publish after the lock")
            stop.set()
            await task
    finally:
        holder.close()
    assert [body(m)["event_id"] for m in broker.published] == ids
    warnings = [r.getMessage() for r in caplog.records if r.name == "tidings.outbox" and r.levelno == logging.WARNING]
    assert warnings
    assert all("database is locked" in w and "\n" not in w for w in warnings)


async def test_an_unreachable_postgres_is_one_line_without_the_password() -> None:
    relay = OutboxRelay("postgresql://app:s3cret@127.0.0.1:1/app", "memory://", timeout=2)
    with pytest.raises(OutboxError) as caught:
        await relay.start()
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert message.startswith("outbox on PostgreSQL postgresql://app:***@127.0.0.1:1/app: opening the outbox")
    assert "check that the database is up" in message


@pytest.mark.parametrize(
    ("source", "table", "expected"),
    [
        ("mysql://db/app", DEFAULT_TABLE, "use sqlite:///path/to/app.db or postgresql://"),
        ("sqlite://host/app.db", DEFAULT_TABLE, "no host and no parameters"),
        ("sqlite:///app.db", "outbox; DROP TABLE users", "use letters, digits and _"),
    ],
)
def test_a_source_or_table_the_relay_cannot_use_is_a_usage_error(source: str, table: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        OutboxRelay(source, "memory://", table=table)
