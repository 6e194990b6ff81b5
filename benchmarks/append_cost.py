"""Where a single-event append's time goes: the raw floor, then each guarantee of the event store added in turn.

The event store benchmark (``eventstore.py``) compares whole appends; this one takes tidings' single-event
append apart, on SQLite and on PostgreSQL, by running statements that each add one piece of what
the store's append does, side by side in one run, against the same raw floor:

SQLite (WAL, ``synchronous=NORMAL``, one ``INSERT`` committed on its own):
  raw floor         ``events(stream_id, version, data)``, primary key (stream_id, version)
  + event ids       the same with ``event_id TEXT NOT NULL UNIQUE`` (what makes a retried append recognisable)
  + tidings' row    tidings' own table: the log position, the type, the schema version, the metadata, the time
  tidings append    ``await SqliteEventStore.append(...)``: the stream's state read and checked, then the insert

PostgreSQL (``synchronous_commit=on``, each statement its own transaction, prepared, generic plans):
  raw floor, + event ids, + tidings' row   as on SQLite
  + log counter     the position taken from the log's counter row, whose lock is held until the commit (the
                    gapless log in commit order)
  + stream row      the stream's row upserted, its version checked (the expected version)
  + lock, NOTIFY    tidings' whole statement: the stream's advisory lock and the NOTIFY for live subscribers
  tidings append    ``await PostgresEventStore.append(...)``: that statement through psycopg's async API

Each row appends the same events (about 200 bytes, UUID v7 ids made in append order, round-robin over 100
streams); median of 3 rounds, events/s, and the ratio to the raw floor.

    python benchmarks/append_cost.py            # 5,000 appends per row and round (SQLite 20,000)
    python benchmarks/append_cost.py --quick    # a fifth of that
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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
    require_postgres,
)

from tidings.events.envelope import uuid7_many
from tidings.eventstore import sqlite as sqlite_store
from tidings.eventstore.base import EventStore, NewEvent
from tidings.eventstore.postgres import PostgresEventStore
from tidings.eventstore.sqlite import SqliteEventStore

BENCHMARK = "append_cost"
STREAMS = 100
BODY = b'{"user_id": 7, "email": "user00007@example.com", "note": "' + b"x" * 140 + b'"}'
FLOOR = "raw floor"

#: a step: its name, and a function that appends ``n`` events to a fresh place and returns the seconds it took
Step = tuple[str, Callable[[int], float]]


def events(n: int) -> list[tuple[str, int, str]]:
    """(stream, version, event id) of each append, round-robin over the streams, ids made in that order."""
    ids = uuid7_many(n)
    return [(f"user-{i % STREAMS:05d}", i // STREAMS + 1, ids[i]) for i in range(n)]


def appends_through(store: EventStore, n: int) -> float:
    """Seconds for ``n`` single-event appends through the store's API, each with its exact expected version."""

    async def run() -> float:
        async with store:
            todo = [(s, [NewEvent(i, "user.updated", BODY)], v - 1) for s, v, i in events(n)]
            start = time.perf_counter()
            for stream, new, expected in todo:
                await store.append(stream, new, expected_version=expected)
            return time.perf_counter() - start

    return asyncio.run(run())


# -- SQLite --------------------------------------------------------------------------------------------------


def sqlite_steps(scratch: Path) -> list[Step]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(scratch / f"{uuid.uuid4().hex}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def plain(
        table: str, insert: str, row: Callable[[int, tuple[str, int, str]], tuple[object, ...]]
    ) -> Callable[[int], float]:
        def run(n: int) -> float:
            conn = connect()
            conn.executescript(table)
            todo = events(n)
            start = time.perf_counter()
            for i, e in enumerate(todo):
                conn.execute(insert, row(i, e))
            seconds = time.perf_counter() - start
            conn.close()
            return seconds

        return run

    minimal = "CREATE TABLE events (stream_id TEXT, version INTEGER, data BLOB, PRIMARY KEY (stream_id, version))"
    with_ids = minimal.replace("data BLOB", "event_id TEXT NOT NULL UNIQUE, data BLOB")

    def tidings_append(n: int) -> float:
        return appends_through(SqliteEventStore(scratch / f"{uuid.uuid4().hex}.db"), n)

    return [
        (FLOOR, plain(minimal, "INSERT INTO events VALUES (?, ?, ?)", lambda _, e: (e[0], e[1], BODY))),
        ("+ event ids", plain(with_ids, "INSERT INTO events VALUES (?, ?, ?, ?)", lambda _, e: (*e, BODY))),
        (
            "+ tidings' row",
            plain(
                sqlite_store._SCHEMA,
                sqlite_store._INSERT,
                lambda i, e: (i + 1, e[0], e[1], e[2], "user.updated", BODY, b"", "1.0", time.time()),
            ),
        ),
        ("tidings append", tidings_append),
    ]


# -- PostgreSQL ----------------------------------------------------------------------------------------------


def postgres_steps(schemas: list[str]) -> list[Step]:
    def fresh() -> str:
        schema = f"tidings_bench_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        return schema

    def statement(
        make: Callable[[str], tuple[list[str], str]], params: Callable[..., dict[str, object]]
    ) -> Callable[[int], float]:
        def run(n: int) -> float:
            schema = fresh()
            setup, sql = make(schema)
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
                for text in setup:
                    conn.execute(text.encode())
                # the same settings as the store's own writer: a generic plan, kept
                conn.execute("SET plan_cache_mode = force_generic_plan")
                todo = events(n)
                start = time.perf_counter()
                for i, (stream, version, event_id) in enumerate(todo):
                    conn.execute(sql.encode(), params(schema, i, stream, version, event_id), prepare=True)
                return time.perf_counter() - start

        return run

    def minimal(schema: str) -> tuple[list[str], str]:
        table = f'"{schema}".events'
        create = f"CREATE TABLE {table} (stream_id TEXT, version INT, data BYTEA, PRIMARY KEY (stream_id, version))"
        return [create], f"INSERT INTO {table} VALUES (%(stream)s, %(version)s, %(data)s)"

    def with_ids(schema: str) -> tuple[list[str], str]:
        table = f'"{schema}".events'
        create = (
            f"CREATE TABLE {table} (stream_id TEXT, version INT, event_id TEXT NOT NULL UNIQUE, data BYTEA, "
            "PRIMARY KEY (stream_id, version))"
        )
        return [create], f"INSERT INTO {table} VALUES (%(stream)s, %(version)s, %(id)s, %(data)s)"

    def store_schema(schema: str) -> list[str]:
        async def create() -> None:
            async with PostgresEventStore(PG_DSN, schema=schema):
                pass  # start() creates the tables

        asyncio.run(create())
        return []

    columns = "(position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)"
    values = "%(id)s, 'user.updated', '1.0', %(data)s, ''::bytea, extract(epoch FROM clock_timestamp())"

    def tidings_row(schema: str) -> tuple[list[str], str]:
        setup = store_schema(schema)
        return setup, (
            f'INSERT INTO "{schema}".events {columns} VALUES (%(position)s, %(stream)s, %(version)s, {values})'
        )

    def counter(schema: str) -> tuple[list[str], str]:
        setup = store_schema(schema)
        return setup, (
            f'WITH c AS (UPDATE "{schema}".log SET last_position = last_position + 1 RETURNING last_position) '
            f'INSERT INTO "{schema}".events {columns} SELECT c.last_position, %(stream)s, %(version)s, {values} FROM c'
        )

    def stream_row(schema: str) -> tuple[list[str], str]:
        setup = store_schema(schema)
        return setup, (
            f'WITH s AS (INSERT INTO "{schema}".streams AS s (stream_id, version) VALUES (%(stream)s, 1) '
            "ON CONFLICT (stream_id) DO UPDATE SET version = s.version + 1 "
            "WHERE s.version = %(version)s - 1 AND NOT s.hard_deleted RETURNING s.version), "
            f'c AS (UPDATE "{schema}".log SET last_position = last_position + 1 WHERE (SELECT count(*) FROM s) = 1 '
            f'RETURNING last_position) INSERT INTO "{schema}".events {columns} '
            f"SELECT c.last_position, %(stream)s, s.version, {values} FROM c, s"
        )

    def plain_params(schema: str, i: int, stream: str, version: int, event_id: str) -> dict[str, object]:
        return {"stream": stream, "version": version, "id": event_id, "data": BODY, "position": i + 1}

    def lock_key(schema: str, stream: str) -> int:
        digest = hashlib.blake2b(f"{schema}\x00{stream}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def whole_step(n: int) -> float:
        from tidings.eventstore.postgres import _Statements

        schema = fresh()
        store_schema(schema)
        sql = _Statements(schema, False).append_one_event
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("SET plan_cache_mode = force_generic_plan")
            todo = events(n)
            start = time.perf_counter()
            for stream, version, event_id in todo:
                params = {
                    "lock": lock_key(schema, stream),
                    "stream": stream,
                    "n": 1,
                    "expected": version - 1,
                    "now": None,
                    "channel": f"{schema}.appended",
                    "ids": event_id,
                    "types": "user.updated",
                    "schema_versions": "1.0",
                    "datas": BODY,
                    "metas": b"",
                }
                conn.execute(sql, params, prepare=True)
            return time.perf_counter() - start

    def tidings_append(n: int) -> float:
        return appends_through(PostgresEventStore(PG_DSN, schema=fresh()), n)

    return [
        (FLOOR, statement(minimal, plain_params)),
        ("+ event ids", statement(with_ids, plain_params)),
        ("+ tidings' row", statement(tidings_row, plain_params)),
        ("+ log counter", statement(counter, plain_params)),
        ("+ stream row", statement(stream_row, plain_params)),
        ("+ lock, NOTIFY (tidings' statement)", whole_step),
        ("tidings append", tidings_append),
    ]


def drop_schemas(schemas: list[str]) -> None:
    """Drop the schemas a run made (some names may never have been created: ``IF EXISTS``)."""
    if not schemas:
        return
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


# -- the run -------------------------------------------------------------------------------------------------


def measure(steps: list[Step], n: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(rounds):
        for name, step in steps:  # interleaved: a change in the machine's load falls on every step alike
            rates[name].append(n / step(n))
    return rates


def show(title: str, rates: dict[str, list[float]], report: Report, backend: str) -> None:
    table = new_table(title, caption="events/s: median (min–max) of the rounds; µs per append; ratio to the raw floor")
    for column in ("step", "events/s", "µs per append", "÷ raw floor"):
        table.add_column(column, justify="left" if column == "step" else "right")
    floor = statistics.median(rates[FLOOR])
    for name, values in rates.items():
        median = statistics.median(values)
        table.add_row(
            name,
            f"{median:,.0f} [dim]({min(values):,.0f}–{max(values):,.0f})[/dim]",
            f"{1e6 / median:,.0f}",
            f"{median / floor:.2f}x",
        )
        report.add_result(f"{backend} {name}", median, "events/s", higher_is_better=True)
    report.add_ratio(
        FLOOR, f"{backend} single-event append events/s", statistics.median(rates["tidings append"]) / floor
    )
    console.print(table)


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="measure one backend only")
    args = parser.parse_args()
    if args.only != "sqlite":
        require_postgres()  # before anything is measured: a run without it would pass for a whole one
    n_pg, n_sqlite = (1_000, 4_000) if args.quick else (5_000, 20_000)
    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    report = Report(BENCHMARK)
    if args.only != "postgres":
        scratch = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
        try:
            with console.status("SQLite: appending"):
                rates = measure(sqlite_steps(scratch), n_sqlite, MIN_ROUNDS)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        show(
            f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL: {n_sqlite:,} single-event appends",
            rates,
            report,
            "SQLite",
        )
    if args.only != "sqlite":
        schemas: list[str] = []
        try:
            with console.status("PostgreSQL: appending"):
                rates = measure(postgres_steps(schemas), n_pg, MIN_ROUNDS)
        except BaseException:
            try:  # clean up, but the error being raised is the one to see
                drop_schemas(schemas)
            except psycopg.Error as exc:
                console.print(
                    f"[yellow]Could not drop the schemas {', '.join(schemas)}: {' '.join(str(exc).split())}[/yellow]"
                )
            raise
        drop_schemas(schemas)
        show(f"PostgreSQL, synchronous_commit=on: {n_pg:,} single-event appends", rates, report, "PostgreSQL")
    console.print(f"{load_summary()} at the end")
    if args.json:
        report.write_json(args.json)


if __name__ == "__main__":
    main()
