"""A repository with an outbox: the saved events' messages go into the outbox table of the store's own
database in the append's transaction, so they are published exactly when the events are committed.

SQLite (a file) and PostgreSQL (127.0.0.1:5432, a schema of the test's own) each: the rows carry the stored
event ids, an OutboxRelay delivers them through a real broker, a lost race (WrongExpectedVersion) or a
contract violation adds no row, and a failing outbox insert takes the events down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import orjson
import psycopg
import pytest

from _users import User, UserCreated, collect_users, new_user
from conftest import PG_DSN, SEED
from tidings.app import App, ContractError
from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.eventstore.aggregate import Repository
from tidings.eventstore.base import EventStore, EventStoreError, WrongExpectedVersion
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.postgres import PostgresEventStore
from tidings.eventstore.sqlite import SqliteEventStore
from tidings.reliability.outbox import Outbox, OutboxRelay


class Backend:
    """One database for the store and its outbox: how to open the store, read the table, point a relay."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self.table = "tidings_outbox" if kind == "sqlite" else f"{where}.tidings_outbox"

    def store(self) -> EventStore:
        if self.kind == "sqlite":
            return SqliteEventStore(self.where)
        return PostgresEventStore(PG_DSN, schema=self.where)

    @property
    def source(self) -> str:
        return f"sqlite:///{self.where}" if self.kind == "sqlite" else PG_DSN

    def rows(self) -> list[tuple[str, str | None, bytes]]:
        sql = f"SELECT channel, key, body FROM {self.table} ORDER BY id"
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where)) as conn:
                try:
                    return [(c, k, bytes(b)) for c, k, b in conn.execute(sql)]
                except sqlite3.OperationalError:  # no table yet: no row
                    return []
        with psycopg.connect(PG_DSN, autocommit=True) as pg:
            exists = pg.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
            if exists is None or exists[0] is None:
                return []
            return [(c, k, bytes(b)) for c, k, b in pg.execute(sql.encode()).fetchall()]

    def make_bad_table(self, name: str) -> str:
        """A table of that name with none of the outbox's columns: every insert into it fails."""
        table = name if self.kind == "sqlite" else f"{self.where}.{name}"
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where)) as conn:
                conn.execute(f"CREATE TABLE {table} (x INTEGER)")
                conn.commit()
        else:
            with psycopg.connect(PG_DSN, autocommit=True) as pg:
                pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.where}"'.encode())
                pg.execute(f"CREATE TABLE {table} (x INTEGER)".encode())
        return table


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "store.db"))
    return Backend("postgres", request.getfixturevalue("pg_schema"))


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(f"sqlite:///{tmp_path / 'broker.db'}", name="user-service", asyncapi=SEED)


async def test_saved_events_reach_the_broker_through_the_outbox_with_their_stored_ids(
    backend: Backend, app: App
) -> None:
    got, done = collect_users(app, 12)

    async with backend.store() as store, app:
        repository = Repository(store, outbox=Outbox(app, table=backend.table))
        # one aggregate per save, then several in one save, then many saves at once (PostgreSQL's group commit
        # must keep each save's rows in its own transaction)
        for i in range(3):
            await repository.save(new_user(i))
        await repository.save(new_user(3), new_user(4), new_user(5))
        await asyncio.gather(*(repository.save(new_user(i)) for i in range(6, 12)))
        rows = backend.rows()
        assert [channel for channel, _, _ in rows] == ["user.created"] * 12
        assert sorted(key for _, key, _ in rows) == sorted(str(i) for i in range(12))  # keyed by aggregate id
        stored = {e.event_id for e in await store.read_all() if e.event_type == "user.created"}
        assert {orjson.loads(body)["event_id"] for _, _, body in rows} == stored
        async with OutboxRelay(backend.source, app.broker, table=backend.table) as relay:
            assert await relay.relay_once() == 12
            assert await relay.relay_once() == 0
        await asyncio.wait_for(done.wait(), 10)
    assert sorted(i for _, i in got) == list(range(12))
    assert {event_id for event_id, _ in got} == stored


async def test_a_lost_race_or_a_refused_event_adds_no_outbox_row(backend: Backend, app: App) -> None:
    class Bad(Event, type="user.created"):
        user_id: str  # the document says integer

    async with backend.store() as store:
        repository = Repository(store, outbox=Outbox(app, table=backend.table))
        await repository.save(new_user(1))
        first = await repository.load(User, "1")
        second = await repository.load(User, "1")
        first.record(UserCreated(user_id=1, email="a@example.com", name="A"))
        second.record(UserCreated(user_id=1, email="b@example.com", name="B"))
        await repository.save(first)
        with pytest.raises(WrongExpectedVersion):
            await repository.save(second)
        assert len(backend.rows()) == 2  # the winner's event and the creation; not the loser's

        bad = User("2")
        bad._pending.append(Bad(user_id="two"))  # type: ignore[arg-type]  # recorded without applying
        bad.version += 1
        with pytest.raises(ContractError):
            await repository.save(bad)
        assert len(backend.rows()) == 2
        assert await store.stream_version("user-2") == 0  # refused before anything was written


async def test_an_outbox_insert_that_fails_takes_the_events_down_with_it(backend: Backend, app: App) -> None:
    table = backend.make_bad_table("not_an_outbox")
    async with backend.store() as store:
        repository = Repository(store, outbox=Outbox(app, table=table))
        with pytest.raises(EventStoreError, match="not_an_outbox") as raised:
            await repository.save(new_user(7))
        assert "\n" not in str(raised.value)
        assert await store.stream_version("user-7") == 0  # one transaction: no event without its row
        # the store is still usable afterwards, with a good outbox
        good = Repository(store, outbox=Outbox(app, table=backend.table))
        await good.save(new_user(8))
        assert await store.stream_version("user-8") == 1
        assert len(backend.rows()) == 1


async def test_the_memory_store_refuses_an_outbox(app: App) -> None:
    async with MemoryEventStore() as store:
        repository = Repository(store, outbox=Outbox(app))
        with pytest.raises(UsageError, match="LogRelay"):
            await repository.save(new_user(1))
        assert await store.stream_version("user-1") == 0


_SAVER = """
import asyncio, os, sys
sys.path.insert(0, sys.argv[4])
from test_eventstore_outbox import SEED, Backend, new_user
from tidings.app import App
from tidings.eventstore.aggregate import Repository
from tidings.reliability.outbox import Outbox

async def main() -> None:
    backend = Backend(sys.argv[1], sys.argv[2])
    app = App(f"sqlite:///{sys.argv[3]}", name="user-service", asyncapi=SEED)
    async with backend.store() as store:
        repository = Repository(store, outbox=Outbox(app, table=backend.table))
        i = 0
        while True:  # until SIGKILL: saves of one and of three aggregates, concurrently
            await asyncio.gather(repository.save(new_user(i)), repository.save(new_user(i + 1), new_user(i + 2)))
            i += 3
            os.write(1, b".")

asyncio.run(main())
"""


def test_a_process_killed_while_saving_leaves_every_event_with_exactly_one_outbox_row(
    backend: Backend, tmp_path: Path
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, backend.kind, backend.where, str(tmp_path / "b.db"), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        saved, deadline = 0, time.monotonic() + 60
        while saved < 150 and time.monotonic() < deadline:  # well into its stride, then killed mid-save
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            saved += len(chunk)
        time.sleep(random.uniform(0, 0.02))  # at a moment of no choosing: mid-transaction, mid-commit...
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert saved >= 150, err.decode()[-2000:]

    async def stored_ids() -> set[str]:
        async with backend.store() as store:
            ids: set[str] = set()
            position = 0
            while events := await store.read_all(from_position=position, limit=1000):
                ids |= {e.event_id for e in events if e.event_type == "user.created"}
                position = events[-1].position
            return ids

    events = asyncio.run(stored_ids())
    rows = [orjson.loads(body)["event_id"] for _, _, body in backend.rows()]
    print(f"\n{backend.kind}: killed after {saved} rounds; {len(events)} events stored, {len(rows)} outbox rows")
    assert len(rows) == len(set(rows))  # none twice
    assert set(rows) == events  # none without the other
