"""Event store benchmark: tidings against eventsourcing 9.5 and the raw floor, on SQLite and PostgreSQL.

Side by side in one run, on the same machine, data and durability settings:

- **tidings**: ``SqliteEventStore`` / ``PostgresEventStore`` (``append`` with an exact ``expected_version``,
  ``read_stream``, ``read_all``); concurrent appenders are asyncio tasks sharing one store (group commit);
- **eventsourcing** 9.5: its application recorders (``SQLiteApplicationRecorder``,
  ``PostgresApplicationRecorder``: what its ``Application`` writes through) with ``StoredEvent`` objects,
  ``insert_events`` (its version check is the table's unique constraint), ``select_events`` and
  ``select_notifications``; text originator ids; concurrent appenders are threads (its API is synchronous)
  sharing one recorder with a pool of 17 connections;
- **raw floor**: a minimal table ``events(stream_id, version, data, PRIMARY KEY (stream_id, version))``
  written by hand: one ``INSERT`` committed per single-event append, ``executemany`` + ``COMMIT`` per batch;
  concurrent appenders are 16 threads with a connection each (on SQLite each takes the write lock with
  ``BEGIN IMMEDIATE`` and waits for it with a busy timeout);
- **raw + event ids**: the same with an ``event_id TEXT NOT NULL UNIQUE`` column, the same UUID v7 ids as
  tidings'. It is the floor of any store whose appends are idempotent by a global event id: the third B-tree
  written per commit is what separates it from the raw floor. (tidings keeps event ids unique across the whole
  store because its idempotent consumers, its outbox and its log relay all dedupe on the event id: two events
  sharing one in two streams would make a consumer drop the second as a duplicate.)

Workloads (full size): 100,000 events of about 200 bytes (JSON) over 1,000 streams (100 each), appended 1, 10
or 100 events at a time, round-robin over the streams, by one appender and by 16 concurrent appenders (each
owning a sixteenth of the streams); then, on the store the single-event sequential appends filled, *rebuild*
(each stream read in full and folded by the same trivial function for every contender) and *read all* (the
log from the start, in pages of 1,000). A last row rebuilds through each library's aggregate layer (tidings
``Repository.load`` of an ``Aggregate`` against eventsourcing ``Application.repository.get``).

Durability, the same for every contender: SQLite in WAL mode with ``synchronous=NORMAL`` (eventsourcing's pool
sets WAL but leaves ``synchronous`` at SQLite's default, FULL: this script patches its connections to NORMAL);
PostgreSQL with ``synchronous_commit=on`` (its default: each commit waits for its WAL flush).

Targets (issue): single-event appends at least 0.8x the raw single-commit floor (and beyond it with concurrent
appenders, by group commit); batched appends at least 3x eventsourcing and at least 0.6x the raw floor; rebuild
and read-all at least 3x eventsourcing; rebuild at least 250,000 events/s on SQLite.

    python benchmarks/eventstore.py                 # full: 100,000 events over 1,000 streams
    python benchmarks/eventstore.py --quick         # 10,000 events over 100 streams
    python benchmarks/eventstore.py --only sqlite   # one backend
"""

from __future__ import annotations

import abc
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import orjson
import psycopg
from _common import (  # benchmarks/ is on sys.path: it is the folder of the script being run
    MIN_ROUNDS,
    PG_DSN,
    Report,
    argument_parser,
    console,
    load_summary,
    machine_summary,
    new_table,
    print_verdicts,
    require_postgres,
)
from eventsourcing import application as es_application
from eventsourcing import domain as es_domain
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnectionPool, SQLiteDatastore
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tidings.events import Event
from tidings.events.envelope import uuid7_many
from tidings.eventstore.aggregate import Aggregate, Repository, when
from tidings.eventstore.base import EventStore, NewEvent
from tidings.eventstore.postgres import PostgresEventStore
from tidings.eventstore.sqlite import SqliteEventStore

BENCHMARK = "eventstore"
CONCURRENCY = 16
BATCHES = (1, 10, 100)
PAGE = 1_000
BODY_SIZE = 200
#: the rebuild target on SQLite, events/s
REBUILD_FLOOR = 250_000
TIDINGS, ES, RAW = "tidings", "eventsourcing", "raw floor"
#: the raw floor plus what makes appends idempotent: a unique index on a global event id, as tidings has
RAW_IDS = "raw + event ids"


@dataclass(frozen=True)
class Plan:
    rounds: int
    events: int
    streams: int

    @property
    def per_stream(self) -> int:
        return self.events // self.streams


FULL = Plan(rounds=3, events=100_000, streams=1_000)
QUICK = Plan(rounds=3, events=10_000, streams=100)


# ---------------------------------------------------------------------------------------------------------------
# eventsourcing at the same durability as the others: its pool turns WAL on but leaves synchronous at FULL

_es_create_connection = SQLiteConnectionPool._create_connection


def _create_connection_synchronous_normal(self: SQLiteConnectionPool) -> Any:
    connection = _es_create_connection(self)
    connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
    return connection


SQLiteConnectionPool._create_connection = _create_connection_synchronous_normal  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------------------
# The data: the same events for every contender, each in the shape its API takes (built before any timing)


def body(stream: int, version: int) -> bytes:
    """A JSON body of exactly BODY_SIZE bytes."""
    fields = {"user_id": stream, "version": version, "email": f"user{stream:05d}@example.com", "note": ""}
    size = len(orjson.dumps(fields))
    fields["note"] = "x" * (BODY_SIZE - size)
    return orjson.dumps(fields)


@dataclass(frozen=True)
class Append:
    """One append: ``count`` events to stream ``stream`` (an index), the stream being at ``version`` before."""

    stream: int
    version: int
    count: int


@dataclass
class Data:
    plan: Plan
    names: list[str] = field(default_factory=list)
    #: per batch size: each stream's events, their ids made in the order of that workload's appends
    new_events: dict[int, list[list[NewEvent]]] = field(default_factory=dict)
    stored_events: list[list[StoredEvent]] = field(default_factory=list)
    raw_rows: list[list[tuple[str, int, bytes]]] = field(default_factory=list)
    #: per batch size: the raw rows with the same ids as tidings' events
    raw_id_rows: dict[int, list[list[tuple[str, int, str, bytes]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        per = self.plan.per_stream
        self.names = [f"user-{s:05d}" for s in range(self.plan.streams)]
        bodies = [[body(s, v) for v in range(1, per + 1)] for s in range(self.plan.streams)]
        for s, name in enumerate(self.names):
            self.stored_events.append(
                [StoredEvent(name, v, "bench:UserUpdated", b) for v, b in enumerate(bodies[s], start=1)]
            )
            self.raw_rows.append([(name, v, b) for v, b in enumerate(bodies[s], start=1)])
        for batch in BATCHES:
            # the ids tidings gives events: UUID v7, the time an event was made, which is just before its append
            # (its Repository and envelopes make them then); so in the order of the appends, as an app has them
            ids = iter(uuid7_many(self.plan.events))
            made: list[list[str]] = [[""] * per for _ in self.names]
            for a in self.appends(batch):
                for v in range(a.version, a.version + a.count):
                    made[a.stream][v] = next(ids)
            self.new_events[batch] = [
                [NewEvent(i, "user.updated", b) for i, b in zip(made[s], bodies[s], strict=True)]
                for s in range(self.plan.streams)
            ]
            self.raw_id_rows[batch] = [
                [(name, v, e.event_id, e.data) for v, e in enumerate(self.new_events[batch][s], start=1)]
                for s, name in enumerate(self.names)
            ]

    def appends(self, batch: int) -> list[Append]:
        """Round-robin over the streams: every stream's events spread over the whole log."""
        return [Append(s, v, batch) for v in range(0, self.plan.per_stream, batch) for s in range(self.plan.streams)]

    @staticmethod
    def split(appends: list[Append], parts: int) -> list[list[Append]]:
        """``parts`` appenders, each owning the streams ``s % parts == k`` (so no two race on a stream)."""
        return [[a for a in appends if a.stream % parts == k] for k in range(parts)]


def fold(state: dict[str, int], version: int, data: bytes) -> None:
    """The trivial apply function every contender's rebuild runs: the version and the bytes seen."""
    state["version"] = version
    state["size"] += len(data)


def run_threads(parts: Sequence[Sequence[Append]], work: Callable[[int, Sequence[Append]], None]) -> None:
    """One thread per part, ``work(k, part)``; the first error is raised once all are done."""
    errors: list[BaseException] = []

    def target(k: int, part: Sequence[Append]) -> None:
        try:
            work(k, part)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(k, part)) for k, part in enumerate(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def timed_split(appends: list[Append], concurrency: int, work: Callable[[int, Sequence[Append]], None]) -> float:
    """Seconds for ``work(k, part)`` to make the appends: ``work(0, appends)`` in this thread for one appender, else
    ``concurrency`` threads, each owning its share of the streams (:meth:`Data.split`)."""
    start = time.perf_counter()
    if concurrency == 1:
        work(0, appends)
    else:
        run_threads(Data.split(appends, concurrency), work)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# Aggregates, for the rebuild through each library's aggregate layer (the same fields, one event type)


class UserUpdated(Event, type="user.updated", version="1.0"):
    user_id: int
    version: int
    email: str
    note: str


class User(Aggregate, prefix="user"):
    email: str = ""
    updates: int = 0

    @when(UserUpdated)
    def _updated(self, event: UserUpdated) -> None:
        self.email = event.email
        self.updates += 1


class EsUser(es_domain.Aggregate):
    @es_domain.event("Registered")
    def __init__(self, user_id: int, version: int, email: str, note: str) -> None:
        self.email = email
        self.updates = 1

    @es_domain.event("Updated")
    def update(self, user_id: int, version: int, email: str, note: str) -> None:
        self.email = email
        self.updates += 1


class Users(es_application.Application[uuid.UUID]):
    name = "Users"


def event_fields(stream: int, version: int) -> dict[str, Any]:
    fields: dict[str, Any] = orjson.loads(body(stream, version))
    return fields


# ---------------------------------------------------------------------------------------------------------------
# Backends: where a contender's fresh store lives (a file, a schema) and how it is dropped


class Backend(abc.ABC):
    name: str
    durability: str

    @abc.abstractmethod
    def new_place(self) -> str: ...

    @abc.abstractmethod
    def drop(self, place: str) -> None: ...


class SqliteBackend(Backend):
    name = "SQLite"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.durability = f"WAL, synchronous=NORMAL (SQLite {sqlite3.sqlite_version}, a fresh file per store)"

    def new_place(self) -> str:
        folder = self.scratch / uuid.uuid4().hex
        folder.mkdir()
        return str(folder / "events.db")

    def drop(self, place: str) -> None:
        shutil.rmtree(Path(place).parent, ignore_errors=True)


class PostgresBackend(Backend):
    name = "PostgreSQL"

    def __init__(self) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            }
        self.settings = settings
        self.durability = (
            f"synchronous_commit={settings['synchronous_commit']}, fsync={settings['fsync']} "
            f"({settings['wal_sync_method']}; PostgreSQL {settings['server_version'].split()[0]}, "
            "a fresh schema per store)"
        )

    def new_place(self) -> str:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return schema

    def drop(self, place: str) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{place}" CASCADE')


# ---------------------------------------------------------------------------------------------------------------
# Contenders: each measures itself (seconds), its input prepared beforehand


class Contender(abc.ABC):
    name: str
    #: whether it has an aggregate layer (the raw floor has none)
    aggregates = True

    def __init__(self, backend: Backend, data: Data) -> None:
        self.backend = backend
        self.data = data
        self.place = ""
        #: the batch size of the workload being appended (which ids its events carry)
        self.batch = 1

    def create(self) -> None:
        self.place = self.backend.new_place()
        self.open()

    def drop(self) -> None:
        try:
            self.close()
        finally:
            self.backend.drop(self.place)

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def append(self, appends: list[Append], concurrency: int) -> float: ...

    @abc.abstractmethod
    def rebuild(self) -> tuple[float, int]:
        """Seconds, and the events folded."""

    @abc.abstractmethod
    def read_all(self) -> tuple[float, int]:
        """Seconds, and the events read."""

    def aggregate_rebuild(self) -> tuple[float, int]:
        """Fill a fresh store through the aggregate layer (untimed), then load every aggregate: seconds, events."""
        raise NotImplementedError


class Tidings(Contender):
    name = TIDINGS

    def __init__(self, backend: Backend, data: Data, runner: asyncio.Runner) -> None:
        super().__init__(backend, data)
        self.runner = runner
        self.store: EventStore | None = None

    def make_store(self, place: str) -> EventStore:
        if isinstance(self.backend, SqliteBackend):
            return SqliteEventStore(place, synchronous="normal")
        return PostgresEventStore(PG_DSN, schema=place)

    def open(self) -> None:
        self.store = self.make_store(self.place)
        self.runner.run(self.store.start())

    def close(self) -> None:
        if self.store is not None:
            self.runner.run(self.store.close())
            self.store = None

    def append(self, appends: list[Append], concurrency: int) -> float:
        store = self.store
        assert store is not None
        events = self.data.new_events[appends[0].count]
        names = self.data.names

        async def appender(part: list[Append]) -> None:
            for a in part:
                await store.append(
                    names[a.stream], events[a.stream][a.version : a.version + a.count], expected_version=a.version
                )

        async def run() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(appender(part) for part in Data.split(appends, concurrency)))
            return time.perf_counter() - start

        return self.runner.run(run())

    def rebuild(self) -> tuple[float, int]:
        store = self.store
        assert store is not None

        async def run() -> tuple[float, int]:
            count = 0
            start = time.perf_counter()
            for name in self.data.names:
                state = {"version": 0, "size": 0}
                for e in await store.read_stream(name):
                    fold(state, e.version, e.data)
                count += state["version"]
            return time.perf_counter() - start, count

        return self.runner.run(run())

    def read_all(self) -> tuple[float, int]:
        store = self.store
        assert store is not None

        async def run() -> tuple[float, int]:
            count, position = 0, 0
            start = time.perf_counter()
            while True:
                page = await store.read_all(from_position=position, limit=PAGE)
                count += len(page)
                if len(page) < PAGE:
                    break
                position = page[-1].position
            return time.perf_counter() - start, count

        return self.runner.run(run())

    def aggregate_rebuild(self) -> tuple[float, int]:
        async def run() -> tuple[float, int]:
            repository = Repository(self.make_store(self.place))
            async with repository.store:
                for s in range(self.data.plan.streams):
                    user = User(f"{s:05d}")
                    for v in range(1, self.data.plan.per_stream + 1):
                        user.record(UserUpdated(**event_fields(s, v)))
                    await repository.save(user)
                count = 0
                start = time.perf_counter()
                for s in range(self.data.plan.streams):
                    count += (await repository.load(User, f"{s:05d}")).updates
                return time.perf_counter() - start, count

        return self.runner.run(run())


class EventSourcing(Contender):
    name = ES
    recorder: SQLiteApplicationRecorder | PostgresApplicationRecorder

    def open(self) -> None:
        if isinstance(self.backend, SqliteBackend):
            datastore = SQLiteDatastore(self.place, pool_size=CONCURRENCY + 1, originator_id_type="text")
            self.recorder = SQLiteApplicationRecorder(datastore)
        else:
            info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
            pg_datastore = PostgresDatastore(
                dbname=str(info.get("dbname", "postgres")),
                host=str(info.get("host", "127.0.0.1")),
                port=str(info.get("port", 5432)),
                user=str(info.get("user", "postgres")),
                password=str(info.get("password", "")),
                pool_size=CONCURRENCY + 1,
                schema=self.place,
                originator_id_type="text",
                enable_db_functions=True,
            )
            self.recorder = PostgresApplicationRecorder(pg_datastore)
        self.recorder.create_table()

    def close(self) -> None:
        self.recorder.datastore.close()

    def append(self, appends: list[Append], concurrency: int) -> float:
        recorder = self.recorder
        events = self.data.stored_events

        def work(_: int, part: Sequence[Append]) -> None:
            for a in part:
                recorder.insert_events(events[a.stream][a.version : a.version + a.count])

        return timed_split(appends, concurrency, work)

    def rebuild(self) -> tuple[float, int]:
        count = 0
        start = time.perf_counter()
        for name in self.data.names:
            state = {"version": 0, "size": 0}
            for e in self.recorder.select_events(name):
                fold(state, e.originator_version, e.state)
            count += state["version"]
        return time.perf_counter() - start, count

    def read_all(self) -> tuple[float, int]:
        count, next_id = 0, 1
        start = time.perf_counter()
        while True:
            page = self.recorder.select_notifications(next_id, PAGE)
            count += len(page)
            if len(page) < PAGE:
                break
            next_id = page[-1].id + 1
        return time.perf_counter() - start, count

    def aggregate_rebuild(self) -> tuple[float, int]:
        if isinstance(self.backend, SqliteBackend):
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": self.place}
        else:
            info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
                "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
                "POSTGRES_PORT": str(info.get("port", 5432)),
                "POSTGRES_USER": str(info.get("user", "postgres")),
                "POSTGRES_PASSWORD": str(info.get("password", "")),
                "POSTGRES_SCHEMA": self.place,
                "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
            }
        app = Users(env=env)
        try:
            ids = []
            for s in range(self.data.plan.streams):
                user = EsUser(**event_fields(s, 1))
                for v in range(2, self.data.plan.per_stream + 1):
                    user.update(**event_fields(s, v))
                app.save(user)
                ids.append(user.id)
            count = 0
            start = time.perf_counter()
            for aggregate_id in ids:
                count += app.repository.get(aggregate_id).updates
            return time.perf_counter() - start, count
        finally:
            app.close()


class RawSqlite(Contender):
    name = RAW
    aggregates = False
    INSERT = "INSERT INTO events (stream_id, version, data) VALUES (?, ?, ?)"
    TABLE = "CREATE TABLE events (stream_id TEXT, version INTEGER, data BLOB, PRIMARY KEY (stream_id, version))"

    def rows(self) -> list[list[Any]]:
        return self.data.raw_rows  # type: ignore[return-value]

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.place, isolation_level=None, timeout=60, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def open(self) -> None:
        self.conns = [self.connect() for _ in range(CONCURRENCY)]
        self.conns[0].execute(self.TABLE)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def append(self, appends: list[Append], concurrency: int) -> float:
        self.batch = appends[0].count
        rows = self.rows()
        insert = self.INSERT

        def sequential(k: int, part: Sequence[Append]) -> None:
            conn = self.conns[k]
            for a in part:
                if a.count == 1:  # one INSERT, committed on its own (autocommit)
                    conn.execute(insert, rows[a.stream][a.version])
                else:
                    conn.execute("BEGIN")
                    conn.executemany(insert, rows[a.stream][a.version : a.version + a.count])
                    conn.execute("COMMIT")

        def concurrent(k: int, part: Sequence[Append]) -> None:
            conn = self.conns[k]
            for a in part:
                conn.execute("BEGIN IMMEDIATE")  # waits for the write lock (busy timeout)
                conn.executemany(insert, rows[a.stream][a.version : a.version + a.count])
                conn.execute("COMMIT")

        return timed_split(appends, concurrency, sequential if concurrency == 1 else concurrent)

    def rebuild(self) -> tuple[float, int]:
        conn = self.conns[0]
        count = 0
        start = time.perf_counter()
        for name in self.data.names:
            state = {"version": 0, "size": 0}
            for version, data in conn.execute(
                "SELECT version, data FROM events WHERE stream_id = ? ORDER BY version", (name,)
            ):
                fold(state, version, data)
            count += state["version"]
        return time.perf_counter() - start, count

    def read_all(self) -> tuple[float, int]:
        conn = self.conns[0]
        count, after = 0, 0
        start = time.perf_counter()
        while True:
            page = conn.execute(
                "SELECT rowid, stream_id, version, data FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, PAGE),
            ).fetchall()
            count += len(page)
            if len(page) < PAGE:
                break
            after = page[-1][0]
        return time.perf_counter() - start, count


class RawSqliteIds(RawSqlite):
    name = RAW_IDS
    INSERT = "INSERT INTO events (stream_id, version, event_id, data) VALUES (?, ?, ?, ?)"
    TABLE = (
        "CREATE TABLE events (stream_id TEXT, version INTEGER, event_id TEXT NOT NULL UNIQUE, data BLOB, "
        "PRIMARY KEY (stream_id, version))"
    )

    def rows(self) -> list[list[Any]]:
        return self.data.raw_id_rows[self.batch]  # type: ignore[return-value]


class RawPostgres(Contender):
    name = RAW
    aggregates = False
    with_ids = False

    def rows(self) -> list[list[Any]]:
        return self.data.raw_id_rows[self.batch] if self.with_ids else self.data.raw_rows  # type: ignore[return-value]

    def open(self) -> None:
        self.table = f'"{self.place}".events'
        if self.with_ids:
            self.insert = f"INSERT INTO {self.table} (stream_id, version, event_id, data) VALUES (%s, %s, %s, %s)"
            ids = "event_id TEXT NOT NULL UNIQUE, "
        else:
            self.insert = f"INSERT INTO {self.table} (stream_id, version, data) VALUES (%s, %s, %s)"
            ids = ""
        self.conns = [psycopg.connect(PG_DSN, autocommit=True) for _ in range(CONCURRENCY)]
        self.conns[0].execute(
            f"CREATE TABLE {self.table} (stream_id TEXT, version INTEGER, {ids}data BYTEA, "  # type: ignore[arg-type]
            "PRIMARY KEY (stream_id, version))"
        )

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def append(self, appends: list[Append], concurrency: int) -> float:
        self.batch = appends[0].count
        rows = self.rows()
        insert = self.insert

        def work(k: int, part: Sequence[Append]) -> None:
            conn = self.conns[k]
            for a in part:
                if a.count == 1:  # one INSERT, committed on its own (autocommit: one round trip)
                    conn.execute(insert, rows[a.stream][a.version])
                else:
                    with conn.transaction(), conn.cursor() as cursor:  # executemany is pipelined by psycopg
                        cursor.executemany(insert, rows[a.stream][a.version : a.version + a.count])

        return timed_split(appends, concurrency, work)

    def rebuild(self) -> tuple[float, int]:
        conn = self.conns[0]
        query = f"SELECT version, data FROM {self.table} WHERE stream_id = %s ORDER BY version"
        count = 0
        start = time.perf_counter()
        for name in self.data.names:
            state = {"version": 0, "size": 0}
            for version, data in conn.execute(query, (name,)).fetchall():
                fold(state, version, data)
            count += state["version"]
        return time.perf_counter() - start, count

    def read_all(self) -> tuple[float, int]:
        # the minimal table has no log position: the floor reads it in pages by its primary key
        conn = self.conns[0]
        query = (
            f"SELECT stream_id, version, data FROM {self.table} WHERE (stream_id, version) > (%s, %s) "
            "ORDER BY stream_id, version LIMIT %s"
        )
        count, after = 0, ("", 0)
        start = time.perf_counter()
        while True:
            page = conn.execute(query, (*after, PAGE)).fetchall()
            count += len(page)
            if len(page) < PAGE:
                break
            after = (page[-1][0], page[-1][1])
        return time.perf_counter() - start, count


# ---------------------------------------------------------------------------------------------------------------
# The run


def workload_name(batch: int, concurrency: int) -> str:
    per = "1 event per append" if batch == 1 else f"{batch} events per append"
    return f"append, {per}, " + ("1 appender" if concurrency == 1 else f"{concurrency} appenders")


APPEND_WORKLOADS = [(b, 1) for b in BATCHES] + [(b, CONCURRENCY) for b in BATCHES]
REBUILD, READ_ALL, AGGREGATES = "rebuild every stream", "read all", "rebuild through the aggregate layer"


@dataclass
class Results:
    #: (backend, workload, contender) -> events/s of each round
    rates: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add(self, backend: str, workload: str, contender: str, events: int, seconds: float) -> None:
        self.rates.setdefault((backend, workload, contender), []).append(events / seconds)

    def median(self, backend: str, workload: str, contender: str) -> float | None:
        rates = self.rates.get((backend, workload, contender))
        return statistics.median(rates) if rates else None


def run_backend(
    backend: Backend, contenders: list[Contender], data: Data, results: Results, progress: Progress, task: Any
) -> None:
    plan = data.plan
    appends = {b: data.appends(b) for b in BATCHES}
    for round_no in range(plan.rounds):
        # interleaved: a change in the machine's load during the run falls on every contender alike
        for batch, concurrency in APPEND_WORKLOADS:
            workload = workload_name(batch, concurrency)
            for contender in contenders:
                progress.update(
                    task,
                    description=f"{backend.name}, round {round_no + 1}/{plan.rounds}: {workload}, {contender.name}",
                )
                contender.create()
                try:
                    seconds = contender.append(appends[batch], concurrency)
                    results.add(backend.name, workload, contender.name, plan.events, seconds)
                    if (batch, concurrency) == (1, 1):  # the most interleaved log: read it back
                        progress.update(task, description=f"{backend.name}: {REBUILD}, {contender.name}")
                        seconds, count = contender.rebuild()
                        check(count, plan.events, contender, REBUILD)
                        results.add(backend.name, REBUILD, contender.name, count, seconds)
                        progress.update(task, description=f"{backend.name}: {READ_ALL}, {contender.name}")
                        seconds, count = contender.read_all()
                        check(count, plan.events, contender, READ_ALL)
                        results.add(backend.name, READ_ALL, contender.name, count, seconds)
                finally:
                    contender.drop()
        for contender in contenders:
            if not contender.aggregates:
                continue
            progress.update(
                task, description=f"{backend.name}, round {round_no + 1}/{plan.rounds}: {AGGREGATES}, {contender.name}"
            )
            contender.place = backend.new_place()
            try:
                seconds, count = contender.aggregate_rebuild()
                check(count, plan.events, contender, AGGREGATES)
                results.add(backend.name, AGGREGATES, contender.name, count, seconds)
            finally:
                backend.drop(contender.place)


def check(count: int, expected: int, contender: Contender, what: str) -> None:
    if count != expected:
        raise RuntimeError(f"{contender.name}, {what}: {count:,} events seen, {expected:,} expected")


@dataclass(frozen=True)
class Target:
    workload: str
    peer: str
    at_least: float
    #: "≥" or ">" (beyond)
    strict: bool = False


def targets_for(backend: str) -> list[Target]:
    found = [Target(workload_name(1, 1), RAW, 0.8), Target(workload_name(1, CONCURRENCY), RAW, 1.0, strict=True)]
    for batch in BATCHES[1:]:
        for concurrency in (1, CONCURRENCY):
            found += [
                Target(workload_name(batch, concurrency), ES, 3.0),
                Target(workload_name(batch, concurrency), RAW, 0.6),
            ]
    found += [Target(REBUILD, ES, 3.0), Target(READ_ALL, ES, 3.0)]
    return found


def report(plan: Plan, backends: list[Backend], results: Results, args: Any) -> None:
    out = Report(BENCHMARK)
    verdicts: list[tuple[str, bool]] = []
    workloads = [workload_name(b, c) for b, c in APPEND_WORKLOADS] + [REBUILD, READ_ALL, AGGREGATES]
    for backend in backends:
        table = new_table(
            f"{backend.name}: {plan.events:,} events of {BODY_SIZE} bytes over {plan.streams:,} streams; "
            f"{backend.durability}",
            caption=f"events/s: median of {plan.rounds} rounds (min–max); ratios: speed of tidings ÷ the peer's "
            "(> 1: tidings is faster); rebuild and read all on the log the single-event appends by one appender "
            "filled (every stream spread over it)"
            + (
                "; the raw floor reads all by its primary key (its minimal table has no log position)"
                if isinstance(backend, PostgresBackend)
                else ""
            ),
        )
        table.add_column("workload")
        for name in (TIDINGS, ES, RAW, RAW_IDS):
            table.add_column(f"{name}\nevents/s", justify="right")
        table.add_column(f"tidings/\n{ES}", justify="right")
        table.add_column("tidings/\nraw floor", justify="right")
        table.add_column(f"tidings/\n{RAW_IDS}", justify="right")
        for workload in workloads:
            cells = [workload]
            for name in (TIDINGS, ES, RAW, RAW_IDS):
                rates = results.rates.get((backend.name, workload, name))
                if not rates:
                    cells.append("—")
                    continue
                median = statistics.median(rates)
                cells.append(f"{median:,.0f}\n[dim]{min(rates):,.0f}–{max(rates):,.0f}[/dim]")
                out.add_result(f"{backend.name} {workload}: {name}", median, "events/s", higher_is_better=True)
            ours = results.median(backend.name, workload, TIDINGS)
            for peer in (ES, RAW, RAW_IDS):
                theirs = results.median(backend.name, workload, peer)
                if ours is None or theirs is None:
                    cells.append("—")
                    continue
                ratio = ours / theirs
                out.add_ratio(peer, f"{backend.name} {workload} events/s", ratio)
                mark = ""
                for target in targets_for(backend.name):
                    if target.workload == workload and target.peer == peer:
                        ok = ratio > target.at_least if target.strict else ratio >= target.at_least
                        sign = ">" if target.strict else "≥"
                        text = f"{backend.name}, {workload}: {sign} {target.at_least}x {peer} ({ratio:.2f}x)"
                        floor = results.median(backend.name, workload, RAW)
                        if peer == ES and floor is not None and theirs * target.at_least > floor:
                            # a target above the raw floor: no store doing the same work can meet it
                            text += (
                                f"; {target.at_least}x {peer} is {theirs * target.at_least / floor:.2f}x the raw floor"
                            )
                        verdicts.append((text, ok))
                        mark = " ✔" if ok else " [red]✘[/red]"
                cells.append(f"{ratio:.2f}x{mark}")
            table.add_row(*cells)
        console.print(table)
        if isinstance(backend, SqliteBackend):
            rebuild = results.median(backend.name, REBUILD, TIDINGS)
            if rebuild is not None:
                verdicts.append(
                    (f"SQLite, {REBUILD}: ≥ {REBUILD_FLOOR:,} events/s ({rebuild:,.0f})", rebuild >= REBUILD_FLOOR)
                )
    print_verdicts(
        "Targets (issue): single-event appends ≥ 0.8x the raw single-commit floor, beyond it with concurrent "
        "appenders; batched appends ≥ 3x eventsourcing and ≥ 0.6x the raw floor; rebuild and read-all ≥ 3x "
        f"eventsourcing; rebuild ≥ {REBUILD_FLOOR:,} events/s on SQLite:",
        verdicts,
        out,
        args.json,
    )


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="measure one backend only")
    args = parser.parse_args()
    if args.only != "sqlite":
        require_postgres()  # before anything is measured: a run without it would pass for a whole one
    plan = QUICK if args.quick else FULL
    assert plan.rounds >= MIN_ROUNDS
    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    console.print(
        f"Contenders: tidings {package_version('tidings')} (event ids: UUID v7, as tidings makes them); "
        f"eventsourcing {package_version('eventsourcing')} (its application recorders, text originator ids, a pool "
        f"of {CONCURRENCY + 1} connections; on PostgreSQL enable_db_functions, its fastest insert: one round trip); "
        "the raw floor (plain INSERT / executemany into events(stream_id, version, data)), and the raw floor "
        "with a unique event_id column (what makes a retried append recognisable, and what tidings indexes). "
        f"{CONCURRENCY} concurrent appenders: asyncio tasks sharing one store for tidings, threads for the others "
        f"(a connection each for the raw floor). Psycopg {package_version('psycopg')}."
    )
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as scratch:
        backends: list[Backend] = []
        if args.only in (None, "sqlite"):
            backends.append(SqliteBackend(Path(scratch)))
        if args.only in (None, "postgres"):
            backends.append(PostgresBackend())
        for backend in backends:
            console.print(f"Durability on {backend.name}, the same for every contender: {backend.durability}")
        if args.only != "postgres":
            console.print(
                "  (eventsourcing's SQLite pool turns WAL on but leaves synchronous at SQLite's default, FULL: this "
                "script patches SQLiteConnectionPool._create_connection to run PRAGMA synchronous=NORMAL as well)"
            )
        started = time.perf_counter()
        results = Results()
        progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        )
        with progress, asyncio.Runner() as runner:
            task = progress.add_task("preparing the events", total=None)
            data = Data(plan)
            for backend in backends:
                contenders: list[Contender] = [
                    Tidings(backend, data, runner),
                    EventSourcing(backend, data),
                    RawSqlite(backend, data) if isinstance(backend, SqliteBackend) else RawPostgres(backend, data),
                ]
                if isinstance(backend, SqliteBackend):
                    contenders.append(RawSqliteIds(backend, data))
                else:
                    with_ids = RawPostgres(backend, data)
                    with_ids.name, with_ids.with_ids = RAW_IDS, True
                    contenders.append(with_ids)
                run_backend(backend, contenders, data, results, progress, task)
    console.print(f"Measured in {time.perf_counter() - started:.0f} s; {load_summary()} at the end")
    report(plan, backends, results, args)


if __name__ == "__main__":
    main()
