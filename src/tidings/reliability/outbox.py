"""The transactional outbox: an event is published if, and only if, the transaction that caused it commits.

Writing to a database and publishing to a broker are two systems; done one after the other, a crash in
between loses the event, and a rollback after the publish announces a change that never happened. The
outbox makes the event part of the database transaction: :meth:`Outbox.add` inserts the message, exactly
as the app would publish it, into a table of the caller's own database, through the caller's own
connection, and does not commit. A relay (:class:`OutboxRelay`) then reads the table and publishes::

    outbox = Outbox(app)
    with sqlite3.connect("app.db") as conn:          # commits on success, rolls back on an exception
        conn.execute("INSERT INTO users (id, email) VALUES (?, ?)", (7, "jo@example.com"))
        outbox.add(conn, UserCreated(user_id=7, email="jo@example.com", name="Jo"), key="7")

    async with OutboxRelay("sqlite:///app.db", app.broker) as relay:
        await relay.run(stop)                        # until stop is set

:meth:`Outbox.add` takes a ``sqlite3.Connection``, a psycopg 3 ``Connection``, or a SQLAlchemy ``Session``
or ``Connection`` (SQLite or PostgreSQL); :meth:`Outbox.add_async` also takes a psycopg ``AsyncConnection``
and a SQLAlchemy ``AsyncSession`` or ``AsyncConnection``. The envelope is filled and the AsyncAPI contract
checked *before* anything is stored: a :class:`~tidings.app.ContractError` leaves the transaction untouched.
The relay reads ``sqlite:///path/to/app.db`` (or a :class:`~pathlib.Path`) or ``postgresql://user@host/db``
(psycopg 3: ``pip install tidings[postgres]``).

The table (``table=`` names another one, optionally ``schema.table``; both sides must agree)::

    tidings_outbox        id (INTEGER AUTOINCREMENT / BIGSERIAL), channel, key, headers (JSON text), body
                          (BLOB / BYTEA), created_at, sent_at (NULL until the broker confirmed it), seconds
                          since the epoch; one index on (sent_at, id)
    tidings_outbox_lease  SQLite only: which relay may publish, until when

:meth:`Outbox.create_table` creates it through the caller's connection (in the caller's transaction); the
relay creates it too when it starts (``CREATE TABLE IF NOT EXISTS``).

What is guaranteed
------------------
*Nothing lost, nothing invented*: a row exists once its transaction commits, and only then; the relay marks
a row sent only after ``publish_many`` returned, i.e. after the broker confirmed it. A broker outage leaves
the rows where they are: the table is the buffer, and the relay retries the same batch, from the first
unsent row, with exponential backoff and jitter (``backoff=(first, longest)`` seconds), logging one line per
failure (URLs redacted). A row the broker refuses every time blocks the rows after it, by design (order):
the log line names it; fix or delete it.

*At least once*: a relay that dies between the broker's confirmation and the ``UPDATE`` that marks the batch
(or whose batch failed half-way, after the broker took its first messages) publishes those rows again when
it, or another relay, carries on. Consumers see duplicates, with the same ``event_id``: make them idempotent
(:mod:`tidings.reliability.idempotency`), which absorbs them.

*Order*: rows are published in ``id`` order, one batch at a time, and a failed batch is retried whole before
anything after it, so the messages of one key reach the broker in the order they were added (brokers with
the ``ordering`` capability keep it to the consumer). Ids are the order in which rows were *inserted*: on
SQLite (one writer at a time) that is commit order; on PostgreSQL two transactions adding for the same key
concurrently may commit out of id order, and the row committed later is published when it becomes visible.
Transactions that change the same aggregate are serialized by its row lock anyway, which keeps them in order.

*One publisher at a time*: relays of one outbox (processes, machines) take a lease before they publish; the
others stand by and poll it, so no row is published by two relays at once and per-key order holds across
them. PostgreSQL: a session-level ``pg_try_advisory_lock`` held by the relay's connection, released when it
closes or its process dies (a relay cut off by the network keeps it until PostgreSQL notices the dead
connection: TCP keepalives; the lock needs a real session, not a transaction-pooling PgBouncer). SQLite: a
row in ``tidings_outbox_lease`` taken and renewed in ``BEGIN IMMEDIATE`` transactions; a crashed holder's
lease is taken over once it has not been renewed for ``lease_seconds``. A relay renews its lease while a
publish is in flight, and abandons the publish if it finds the lease gone.

Sent rows stay (``sent_at`` set) until :meth:`OutboxRelay.delete_sent` removes the old ones.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import random
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

import orjson

from tidings.brokers.base import Broker, Message, broker_from_url
from tidings.dburl import sqlite_file
from tidings.errors import TidingsError, UsageError
from tidings.lifecycle import Service
from tidings.redact import redact_url
from tidings.reliability.retry import RetryPolicy

if TYPE_CHECKING:
    import psycopg

    from tidings.app.application import App
    from tidings.events.envelope import Envelope
    from tidings.events.event import Event

log = logging.getLogger("tidings.outbox")

T = TypeVar("T")

DEFAULT_TABLE = "tidings_outbox"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_COLUMNS = ("channel", "key", "headers", "created_at", "body")
#: (id, channel, key, headers JSON, body) as the relay reads a row
_Row = tuple[int, str, str | None, str | None, bytes]


class OutboxError(TidingsError):
    """The outbox's database could not do what was asked; one line saying which database and what to do."""


# -- SQL ----------------------------------------------------------------------------------------------------


def _check_table(table: str) -> str:
    # the name goes into SQL text (identifiers cannot be bound parameters): only plain identifiers
    if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
        raise UsageError(f"outbox table name {table!r}: use letters, digits and _ (optionally schema.table)")
    return table


def _ddl(table: str, dialect: str) -> list[str]:
    schema, _, base = table.rpartition(".")
    if dialect == "sqlite":
        # AUTOINCREMENT: an id is never reused, even once delete_sent emptied the table, so an id named in a
        # log line stays that row's
        id_column, real, blob = "id INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "BLOB"
        index = f"CREATE INDEX IF NOT EXISTS {schema + '.' if schema else ''}{base}_sent ON {base} (sent_at, id)"
    elif dialect == "postgresql":
        id_column, real, blob = "id BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "BYTEA"
        index = f"CREATE INDEX IF NOT EXISTS {base}_sent ON {table} (sent_at, id)"
    else:
        raise UsageError(f"the outbox supports SQLite and PostgreSQL databases, not {dialect!r}")
    # (sent_at, id): the relay's "unsent, in id order" is one range of it, and so is delete_sent's "sent before"
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({id_column}, channel TEXT NOT NULL, key TEXT, headers TEXT, "
        f"created_at {real} NOT NULL, sent_at {real}, body {blob} NOT NULL)",
        index,
    ]


def _insert_sql(table: str, style: str) -> str:
    marks = {"qmark": ["?"] * 5, "format": ["%s"] * 5, "named": [f":{c}" for c in _COLUMNS]}[style]
    return f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({', '.join(marks)})"


def _row(message: Message) -> tuple[str, str | None, str | None, float, bytes]:
    headers = orjson.dumps(dict(message.headers)).decode() if message.headers else None
    return message.channel, message.key, headers, time.time(), bytes(message.body)


# -- errors -------------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and appends the SQL and a link on more lines: the driver's first line
    # says it all; psycopg's errors go on with LINE/HINT lines
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    text = redact_url(text)
    return text if len(text) <= 300 else text[:297] + "..."


def _hint(text: str) -> str:
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return (
            "create the table with Outbox.create_table(conn) and commit, or start an OutboxRelay on this "
            "database once (it creates it)"
        )
    if "locked" in lowered or "busy" in lowered:
        return "another connection holds the database's lock; a running relay retries (timeout= sets the wait)"
    if "not a database" in lowered or "unable to open" in lowered:
        return "check the path: the relay opens the application's existing SQLite file"
    if "connect" in lowered:
        return "check that the database is up and the DSN is right"
    return ""


def _failure(where: str, doing: str, exc: BaseException) -> OutboxError:
    text = _one_line(exc)
    hint = _hint(text)
    return OutboxError(f"outbox on {where}: {doing} failed: {text}" + (f"; {hint}" if hint else ""))


# -- the caller's connection ----------------------------------------------------------------------------------


def _kind(conn: object) -> str:
    """``sqlite3``, ``psycopg`` or ``sqlalchemy``, by type (drivers are imported only by who uses them)."""
    if isinstance(conn, sqlite3.Connection):
        return "sqlite3"
    modules = {cls.__module__.split(".")[0] for cls in type(conn).__mro__}
    if "psycopg" in modules:
        return "psycopg"
    if "sqlalchemy" in modules:
        return "sqlalchemy"
    raise UsageError(
        f"the outbox writes through a sqlite3.Connection, a psycopg Connection or a SQLAlchemy Session or "
        f"Connection, not a {type(conn).__module__}.{type(conn).__qualname__}"
    )


def _dialect(conn: Any, kind: str) -> str:
    """``sqlite`` or ``postgresql``: the databases whose outbox a relay can read."""
    if kind == "sqlite3":
        return "sqlite"
    if kind == "psycopg":
        return "postgresql"
    try:
        # a (Async)Session knows its engine through get_bind(); an (Async)Connection has the dialect itself
        bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
        name: str = bind.dialect.name
    except Exception as exc:
        raise UsageError(f"the SQLAlchemy session given to the outbox has no database bound: {exc}") from exc
    if name not in ("sqlite", "postgresql"):
        raise UsageError(f"the outbox supports SQLite and PostgreSQL databases, not {name!r}")
    return name


def _database_errors(kind: str) -> tuple[type[BaseException], ...]:
    if kind == "sqlite3":
        return (sqlite3.Error,)
    if kind == "psycopg":
        import psycopg

        return (psycopg.Error,)
    import sqlalchemy.exc

    return (sqlalchemy.exc.SQLAlchemyError,)


def _describe(conn: object, kind: str) -> str:
    return f"the {kind} {type(conn).__name__} given"


def _require_transaction(conn: Any, kind: str) -> None:
    """Refuse a connection that would commit the row on its own: the outbox is worth nothing outside a transaction.

    (sqlite3 in its default mode and psycopg by default open a transaction at the insert itself: those pass.)
    """
    if kind == "sqlite3":
        autocommit = conn.isolation_level is None and not conn.in_transaction
    elif kind == "psycopg":
        import psycopg

        autocommit = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    else:
        return
    if autocommit:
        raise UsageError(
            "this connection is in autocommit mode with no transaction open: the event would be stored on its own; "
            "open the transaction that changes your data first (BEGIN, or `with conn.transaction():` in psycopg)"
        )


class OutboxRows:
    """Outbox rows that an event store writes inside its own append transaction (no dual write).

    Made by :meth:`Outbox.rows`; given to ``EventStore.append_many(..., outbox=rows)`` (the
    :class:`~tidings.eventstore.aggregate.Repository` does this when it has an ``outbox``). The store runs
    :meth:`write` (SQLite) or :meth:`write_async` (psycopg) on its connection, in the transaction that
    appends the events, only if the appends pass their checks: the rows commit exactly when the events do.
    The table is created in that transaction if missing, once per store.
    """

    __slots__ = ("rows", "table")

    def __init__(self, table: str, rows: list[tuple[str, str | None, str | None, float, bytes]]) -> None:
        self.table = _check_table(table)
        self.rows = rows

    def write(self, conn: sqlite3.Connection, *, create: bool) -> None:
        if create:
            for statement in _ddl(self.table, "sqlite"):
                conn.execute(statement)
        conn.executemany(_insert_sql(self.table, "qmark"), self.rows)

    async def write_async(self, conn: psycopg.AsyncConnection[Any], *, create: bool) -> None:
        if create:
            for statement in _ddl(self.table, "postgresql"):
                await conn.execute(statement)
        async with conn.cursor() as cursor:
            await cursor.executemany(_insert_sql(self.table, "format"), self.rows)


class Outbox:
    """Stores events in the outbox table inside the caller's own database transaction (see the module docs)."""

    def __init__(self, app: App, *, table: str = DEFAULT_TABLE) -> None:
        self.app = app
        self.table = _check_table(table)
        self._insert = {style: _insert_sql(self.table, style) for style in ("qmark", "format", "named")}

    def _prepare(
        self,
        event: Event | Mapping[str, Any],
        key: str | None,
        channel: str | None,
        headers: Mapping[str, str] | None,
        event_type: str | None,
        version: str | None,
    ) -> tuple[tuple[str, str | None, str | None, float, bytes], Envelope]:
        # the app's own path to the broker: envelope filled (inheriting the handled event's correlation),
        # contract checked, body encoded; the row is the very message app.publish would have sent
        message, envelope = self.app._prepare(event, channel, event_type, version, key, headers)
        return _row(message), envelope

    def rows(self, messages: Sequence[Message]) -> OutboxRows:
        """The outbox rows of ``messages`` (already enveloped and checked, e.g. by
        :func:`~tidings.eventstore.publishing.stored_message`), for an event store to write in the transaction
        of its append."""
        return OutboxRows(self.table, [_row(message) for message in messages])

    def add(
        self,
        conn: Any,
        event: Event | Mapping[str, Any],
        *,
        key: str | None = None,
        channel: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_type: str | None = None,
        version: str | None = None,
    ) -> Envelope:
        """Insert ``event`` into the outbox through ``conn``, in its current transaction, without committing.

        ``conn``: a ``sqlite3.Connection``, a psycopg ``Connection``, a SQLAlchemy ``Session`` or ``Connection``.
        The event is published once the caller commits (never if it rolls back). Returns its envelope. Raises
        :class:`~tidings.app.ContractError` (nothing stored) for an event that breaks its channel's contract,
        :class:`OutboxError` if the database refuses the insert.
        """
        kind = _kind(conn)
        if inspect.iscoroutinefunction(getattr(conn, "execute", None)):
            raise UsageError("this connection is asynchronous: use `await outbox.add_async(conn, event)`")
        _require_transaction(conn, kind)
        row, envelope = self._prepare(event, key, channel, headers, event_type, version)
        try:
            conn.execute(*self._insert_for(conn, kind, row))
        except _database_errors(kind) as exc:
            raise _failure(_describe(conn, kind), f"adding a {envelope.event_type} event to {self.table}", exc) from exc
        return envelope

    async def add_async(
        self,
        conn: Any,
        event: Event | Mapping[str, Any],
        *,
        key: str | None = None,
        channel: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_type: str | None = None,
        version: str | None = None,
    ) -> Envelope:
        """:meth:`add` for a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncSession`` / ``AsyncConnection``
        (a synchronous connection is accepted too, and written to at once)."""
        kind = _kind(conn)
        if not inspect.iscoroutinefunction(getattr(conn, "execute", None)):
            return self.add(
                conn, event, key=key, channel=channel, headers=headers, event_type=event_type, version=version
            )
        _require_transaction(conn, kind)
        row, envelope = self._prepare(event, key, channel, headers, event_type, version)
        try:
            await conn.execute(*self._insert_for(conn, kind, row))
        except _database_errors(kind) as exc:
            raise _failure(_describe(conn, kind), f"adding a {envelope.event_type} event to {self.table}", exc) from exc
        return envelope

    def _insert_for(self, conn: Any, kind: str, row: tuple[Any, ...]) -> tuple[Any, Any]:
        """The INSERT and its parameters in the style of ``conn``'s driver (sync or async alike)."""
        if kind == "sqlite3":
            return self._insert["qmark"], row
        if kind == "psycopg":
            return self._insert["format"], row
        import sqlalchemy

        _dialect(conn, kind)  # an unbound session, or a database no relay reads, says so here
        return sqlalchemy.text(self._insert["named"]), dict(zip(_COLUMNS, row, strict=True))

    def _ddl_for(self, conn: Any, kind: str) -> list[Any]:
        """The table's statements for ``conn``'s database, as its driver takes them (sync or async alike)."""
        statements = _ddl(self.table, _dialect(conn, kind))
        if kind != "sqlalchemy":
            return list(statements)
        import sqlalchemy

        return [sqlalchemy.text(statement) for statement in statements]

    def create_table(self, conn: Any) -> None:
        """Create the outbox table and its index if missing, through ``conn`` (commit afterwards: it runs in
        the caller's transaction, like :meth:`add`; sqlite3 in its default mode runs it at once)."""
        kind = _kind(conn)
        if inspect.iscoroutinefunction(getattr(conn, "execute", None)):
            raise UsageError("this connection is asynchronous: use `await outbox.create_table_async(conn)`")
        try:
            for statement in self._ddl_for(conn, kind):
                conn.execute(statement)
        except _database_errors(kind) as exc:
            raise _failure(_describe(conn, kind), f"creating {self.table}", exc) from exc

    async def create_table_async(self, conn: Any) -> None:
        """:meth:`create_table` for the asynchronous connections :meth:`add_async` takes."""
        kind = _kind(conn)
        if not inspect.iscoroutinefunction(getattr(conn, "execute", None)):
            self.create_table(conn)
            return
        try:
            for statement in self._ddl_for(conn, kind):
                await conn.execute(statement)
        except _database_errors(kind) as exc:
            raise _failure(_describe(conn, kind), f"creating {self.table}", exc) from exc


# -- the relay's side: one store per database ------------------------------------------------------------------


class _Store(abc.ABC):
    """What the relay asks of its database; every method raises :class:`OutboxError` on a database error."""

    where: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create the tables if missing."""

    @abc.abstractmethod
    async def close(self, owner: str) -> None:
        """Release the lease if held, and disconnect."""

    @abc.abstractmethod
    async def acquire(self, owner: str, seconds: float, *, verify: bool) -> bool:
        """Take or renew the lease; ``verify``: make sure it is still held (a round trip), even if fresh."""

    @abc.abstractmethod
    async def fetch(self, limit: int) -> list[_Row]:
        """The first ``limit`` unsent rows, in id order."""

    @abc.abstractmethod
    async def mark(self, ids: list[int], now: float) -> None:
        """Mark these rows sent."""

    @abc.abstractmethod
    async def pending(self) -> int:
        """How many rows are unsent."""

    @abc.abstractmethod
    async def delete_sent(self, before: float) -> int:
        """Delete the rows sent before ``before``; how many."""


class _SqliteStore(_Store):
    """One connection in one dedicated thread (``sqlite3`` connections belong to the thread that made them)."""

    def __init__(self, path: str, table: str, timeout: float) -> None:
        self.path = path
        self.table = table
        self.lease_table = f"{table}_lease"
        self.timeout = timeout
        self.where = f"SQLite {path}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: until when our lease is known to be held (0: not held, or not known)
        self._held_until = 0.0

    async def _run(self, doing: str, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="tidings-outbox")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._in_thread, op)
        except sqlite3.Error as exc:
            raise _failure(self.where, doing, exc) from exc

    def _in_thread(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            # mode=rw: a wrong path is an error, not a new empty database that the relay would watch forever
            uri = f"file:{quote(self.path)}?mode=rw"
            self._conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        conn = self._conn
        try:
            return op(conn)
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        def ensure(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _ddl(self.table, "sqlite"):
                conn.execute(statement)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.lease_table} "
                "(name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)"
            )
            conn.execute("COMMIT")

        await self._run(f"opening the outbox {self.table}", ensure)

    async def close(self, owner: str) -> None:
        if self._executor is None:
            return

        def release(conn: sqlite3.Connection) -> None:
            try:  # (whether or not it was ours at the last look: only our own row is deleted)
                conn.execute(f"DELETE FROM {self.lease_table} WHERE name = ? AND owner = ?", (self.table, owner))
            finally:
                conn.close()
                self._conn = None

        executor = self._executor
        try:
            if self._conn is not None:
                await self._run("releasing the relay lease", release)
        finally:
            self._held_until = 0.0
            self._executor = None
            executor.shutdown(wait=False)

    async def acquire(self, owner: str, seconds: float, *, verify: bool) -> bool:
        now = time.time()
        # renewing is a write transaction: while a lease is fresh (renewed less than a third of its length
        # ago) it cannot have been taken, so an idle relay does not write to the application's database 5x/s
        if not verify and self._held_until - seconds * 2 / 3 > now:
            return True

        def take(conn: sqlite3.Connection) -> float:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                f"SELECT owner, expires_at FROM {self.lease_table} WHERE name = ?", (self.table,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                conn.execute("COMMIT")
                return 0.0
            until = now + seconds
            conn.execute(
                f"INSERT INTO {self.lease_table} (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (self.table, owner, until),
            )
            conn.execute("COMMIT")
            return until

        self._held_until = 0.0  # unknown until the transaction says (an error leaves it unknown: not held)
        self._held_until = await self._run("taking the relay lease", take)
        return self._held_until > 0

    async def fetch(self, limit: int) -> list[_Row]:
        sql = f"SELECT id, channel, key, headers, body FROM {self.table} WHERE sent_at IS NULL ORDER BY id LIMIT ?"
        rows: list[_Row] = await self._run("reading unsent rows", lambda conn: conn.execute(sql, (limit,)).fetchall())
        return rows

    async def mark(self, ids: list[int], now: float) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"UPDATE {self.table} SET sent_at = ? WHERE id = ?", [(now, i) for i in ids])
            conn.execute("COMMIT")

        await self._run("marking rows sent", update)

    async def pending(self) -> int:
        sql = f"SELECT count(*) FROM {self.table} WHERE sent_at IS NULL"
        count: int = await self._run("counting unsent rows", lambda conn: conn.execute(sql).fetchone()[0])
        return count

    async def delete_sent(self, before: float) -> int:
        sql = f"DELETE FROM {self.table} WHERE sent_at IS NOT NULL AND sent_at < ?"
        deleted: int = await self._run("deleting sent rows", lambda conn: conn.execute(sql, (before,)).rowcount)
        return deleted


def _lock_key(text: str) -> int:
    # advisory locks take a bigint: a stable digest of the table's name (Python's hash() is salted per process)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


class _PostgresStore(_Store):
    """One psycopg ``AsyncConnection`` in autocommit mode, which holds the advisory lock as long as it lives."""

    def __init__(self, dsn: str, table: str, timeout: float) -> None:
        self.dsn = dsn
        self.table = table
        self.timeout = timeout
        self.where = f"PostgreSQL {redact_url(dsn)}"
        self._lease_key = _lock_key(f"tidings-outbox-relay:{table}")
        # another key for creating the table: relays standing by must not wait for the publishing one's lock
        self._ddl_key = _lock_key(f"tidings-outbox-ddl:{table}")
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._locked = False

    async def _run(self, doing: str, op: Callable[[psycopg.AsyncConnection[tuple[Any, ...]]], Awaitable[T]]) -> T:
        try:
            import psycopg
        except ImportError:
            raise UsageError(
                "a PostgreSQL outbox needs psycopg 3, which is not installed: pip install 'tidings[postgres]'"
            ) from None
        try:
            if self._conn is None or self._conn.closed:
                self._locked = False
                self._conn = None
                self._conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=max(2, round(self.timeout))
                )
            return await op(self._conn)
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                # the session is gone, and the advisory lock with it: start over at the next call
                self._locked = False
                with contextlib.suppress(psycopg.Error):
                    await self._conn.close()
                self._conn = None
            raise _failure(self.where, doing, exc) from exc

    async def open(self) -> None:
        async def ensure(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
            # CREATE TABLE IF NOT EXISTS races with itself on PostgreSQL (two relays starting together): serialize
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ddl_key,))
                for statement in _ddl(self.table, "postgresql"):
                    await conn.execute(statement)

        await self._run(f"opening the outbox {self.table}", ensure)

    async def close(self, owner: str) -> None:
        del owner  # the lock belongs to the session, not to a name
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._locked and not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (self._lease_key,))
        except Exception as exc:  # closing the connection releases it anyway
            log.debug("outbox: unlocking on %s failed: %s", self.where, _one_line(exc))
        finally:
            self._locked = False
            await conn.close()

    async def acquire(self, owner: str, seconds: float, *, verify: bool) -> bool:
        del owner, seconds  # held as long as the session lives, by whoever holds the connection

        async def take(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> bool:
            if self._locked:
                if verify:  # a lost connection shows only on use
                    await conn.execute("SELECT 1")
                return True
            # not re-entered once held: a session-level advisory lock taken twice must be released twice
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lease_key,))).fetchone()
            self._locked = bool(row and row[0])
            return self._locked

        return await self._run("taking the relay lock", take)

    async def fetch(self, limit: int) -> list[_Row]:
        sql = f"SELECT id, channel, key, headers, body FROM {self.table} WHERE sent_at IS NULL ORDER BY id LIMIT %s"

        async def select(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[_Row]:
            if not self._locked:
                # _run connected anew since the lock was taken: the lock went with the old session
                raise OutboxError(f"outbox on {self.where}: the connection was lost, and the relay lock with it")
            rows: list[_Row] = await (await conn.execute(sql, (limit,))).fetchall()
            return rows

        return await self._run("reading unsent rows", select)

    async def mark(self, ids: list[int], now: float) -> None:
        # by id, never "id <= last": a row with a lower id whose transaction commits only now must stay unsent
        sql = f"UPDATE {self.table} SET sent_at = %s WHERE id = ANY(%s::bigint[])"

        async def update(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
            await conn.execute(sql, (now, ids))

        await self._run("marking rows sent", update)

    async def pending(self) -> int:
        sql = f"SELECT count(*) FROM {self.table} WHERE sent_at IS NULL"

        async def count(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> int:
            row = await (await conn.execute(sql)).fetchone()
            return int(row[0]) if row else 0

        return await self._run("counting unsent rows", count)

    async def delete_sent(self, before: float) -> int:
        sql = f"DELETE FROM {self.table} WHERE sent_at IS NOT NULL AND sent_at < %s"

        async def delete(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> int:
            return (await conn.execute(sql, (before,))).rowcount

        return await self._run("deleting sent rows", delete)


def _store_for(source: str | os.PathLike[str], table: str, timeout: float) -> _Store:
    if isinstance(source, os.PathLike):
        return _SqliteStore(os.fspath(source), table, timeout)
    if not isinstance(source, str) or not source:
        raise UsageError(f"an outbox relay reads sqlite:///path/to/app.db or postgresql://..., not {source!r}")
    if "://" not in source:
        return _SqliteStore(source, table, timeout)
    scheme = source.split("://", 1)[0].lower()
    base = scheme.split("+", 1)[0]  # SQLAlchemy's URLs name a driver: postgresql+psycopg://, sqlite+pysqlite://
    shown = redact_url(source)
    if base == "sqlite":
        parts = urlsplit(source)
        path = sqlite_file(parts)
        if path is None or parts.query:
            raise UsageError(
                f"outbox relay source {shown!r}: use sqlite:///relative/app.db or sqlite:////absolute/app.db "
                "(the application's database file, no host and no parameters)"
            )
        return _SqliteStore(path, table, timeout)
    if base in ("postgresql", "postgres"):
        return _PostgresStore("postgresql" + source[len(scheme) :], table, timeout)
    raise UsageError(f"outbox relay source {shown!r}: use sqlite:///path/to/app.db or postgresql://user@host/db")


class OutboxRelay(Service):
    """Publishes the outbox's rows, in order, to ``broker``, and marks each one sent once the broker confirmed.

    ``source``: ``sqlite:///path/to/app.db`` (or a :class:`~pathlib.Path`) or ``postgresql://user@host/db``.
    ``broker``: a :class:`~tidings.brokers.base.Broker` (started if needed, left open: it may be an app's) or
    a URL (the relay's own broker, closed with it). ``batch``: rows per publish. ``poll_interval``: seconds
    between looks at an empty table (and at a lease held by another relay). ``backoff``: the first and the
    longest wait after a failure, doubling in between, with jitter. ``lease_seconds``: how long a SQLite
    lease outlives its relay (PostgreSQL: how often a publishing relay checks its lock). ``name``: this
    relay in logs and in the lease (default ``host:pid:random``). ``timeout``: seconds to wait for a
    database lock (SQLite) or connection (PostgreSQL).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        broker: Broker | str,
        *,
        table: str = DEFAULT_TABLE,
        batch: int = 500,
        poll_interval: float = 0.2,
        backoff: tuple[float, float] = (0.1, 10.0),
        lease_seconds: float = 30.0,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if batch < 1:
            raise UsageError(f"outbox relay batch={batch}: must be at least 1")
        if not (poll_interval > 0 and lease_seconds > 0 and timeout > 0):
            raise UsageError("outbox relay poll_interval, lease_seconds and timeout must be > 0")
        if len(backoff) != 2 or not 0 < backoff[0] <= backoff[1]:
            raise UsageError(f"outbox relay backoff={backoff!r}: (first, longest) seconds, 0 < first <= longest")
        self.table = _check_table(table)
        self._store = _store_for(source, self.table, timeout)
        self._owns_broker = isinstance(broker, str)
        self.broker: Broker = broker_from_url(broker) if isinstance(broker, str) else broker
        self.batch = batch
        self.poll_interval = poll_interval
        self.backoff = (float(backoff[0]), float(backoff[1]))
        # the consumers' retry schedule, "equal jitter": at least half the ceiling, so relays that failed
        # together do not retry in step
        self._backoff = RetryPolicy(base_delay=self.backoff[0], max_delay=self.backoff[1], jitter=0.5)
        self.lease_seconds = lease_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        #: rows marked sent by this relay since it was made
        self.sent = 0
        #: failures in a row (0 once a batch went through)
        self.failures = 0
        self._started = False
        self._opened = False
        self._holding = False
        self._batch_ids: tuple[int, int] | None = None
        #: ids the broker confirmed whose marking failed: marked first, not published again
        self._confirmed: list[int] = []

    @property
    def source(self) -> str:
        """The database, password removed (safe to log)."""
        return self._store.where

    @property
    def holds_lease(self) -> bool:
        """Whether this relay was the one allowed to publish, at its last look."""
        return self._holding

    # -- lifecycle --

    async def start(self) -> None:
        """Open the database (creating the outbox table if missing) and start the broker; idempotent.

        Raises :class:`OutboxError` if the database cannot be opened: a relay fails fast on a wrong path or DSN.
        """
        if self._started:
            return
        await self.ensure()
        try:
            await self.broker.start()
        except BaseException:
            await self._close_store()
            raise
        self._started = True

    async def ensure(self) -> None:
        """Open the database and create the outbox table (and the lease table) if missing; :meth:`start` calls it."""
        if not self._opened:
            try:
                await self._store.open()
            except BaseException:
                with contextlib.suppress(OutboxError):  # (the thread and the connection must not outlive it)
                    await self._store.close(self.name)
                raise
            self._opened = True

    async def _close_store(self) -> None:
        self._opened = False
        self._holding = False
        try:
            await self._store.close(self.name)
        except OutboxError as exc:  # the lease then expires on its own
            log.warning("outbox relay %s: %s", self.name, exc)

    async def close(self) -> None:
        """Release the lease (another relay takes over at once) and disconnect; idempotent."""
        started, self._started = self._started, False
        try:
            if self._opened:
                await self._close_store()
        finally:
            if started and self._owns_broker:
                await self.broker.close()

    # -- relaying --

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows, if this relay holds the lease; returns how many were marked sent.

        Raises what the broker raised (the rows stay unsent, to be retried) or :class:`OutboxError`.
        """
        await self.start()
        held = await self._store.acquire(self.name, self.lease_seconds, verify=False)
        if held != self._holding:
            if held:
                log.info("outbox relay %s: publishing from %s to %s", self.name, self.source, self._broker_url)
            else:
                log.info("outbox relay %s: another relay publishes from %s; standing by", self.name, self.source)
            self._holding = held
        if not held:
            return 0
        if self._confirmed:
            # the broker confirmed these but marking them failed: mark them now rather than publish them again
            await self._store.mark(self._confirmed, time.time())
            done, self._confirmed = len(self._confirmed), []
            self._batch_ids = None
            self.sent += done
            return done
        rows = await self._store.fetch(self.batch)
        if not rows:
            return 0
        self._batch_ids = (rows[0][0], rows[-1][0])
        messages = [
            Message(channel, bytes(body), orjson.loads(headers) if headers else {}, key)
            for _, channel, key, headers, body in rows
        ]
        await self._publish(messages)
        self._confirmed = [row[0] for row in rows]
        await self._store.mark(self._confirmed, time.time())
        self._confirmed = []
        self._batch_ids = None
        self.sent += len(rows)
        return len(rows)

    async def _publish(self, messages: list[Message]) -> None:
        """``broker.publish_many``, renewing the lease while it runs (a broker that is reconnecting may take
        longer than the lease): a relay that finds its lease gone abandons the publish, as another relay may
        now be publishing the same rows."""
        task = asyncio.ensure_future(self.broker.publish_many(messages))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.lease_seconds / 3)
                if done:
                    task.result()
                    return
                if not await self._store.acquire(self.name, self.lease_seconds, verify=True):
                    self._holding = False
                    raise OutboxError(
                        f"outbox relay {self.name}: lost the lease on {self.source} while publishing; "
                        "another relay carries on (the rows may be published twice)"
                    )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or the task is cancelled), surviving broker and database outages.

        A failed batch is retried, whole, after ``backoff`` (exponential, with jitter); each failure is logged
        in one line. Returns once ``stop`` is set, with the batch in flight finished.
        """
        stop = stop if stop is not None else asyncio.Event()
        await self.start()
        while not stop.is_set():
            try:
                sent = await self.relay_once()
            except Exception as exc:
                self.failures += 1
                delay = self._delay(self.failures)
                log.warning(
                    "outbox relay %s: %s; retry %d in %.2f s", self.name, self._explain(exc), self.failures, delay
                )
                await _sleep(stop, delay)
                continue
            if self.failures:
                log.info("outbox relay %s: publishing again after %d failure(s)", self.name, self.failures)
                self.failures = 0
            if sent < self.batch:  # the table is drained (or another relay publishes): look again later
                await _sleep(stop, self.poll_interval)

    def _delay(self, failures: int) -> float:
        return self._backoff.delay(failures, random.random())

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, OutboxError):
            return str(exc)
        ids = self._batch_ids
        rows = f"rows {ids[0]}..{ids[1]}" if ids else "a batch"
        return f"publishing {rows} of {self.source} to {self._broker_url} failed: {_one_line(exc)}"

    @property
    def _broker_url(self) -> str:
        return redact_url(self.broker.url)

    # -- housekeeping --

    async def pending(self) -> int:
        """How many rows are not sent yet."""
        await self.ensure()
        return await self._store.pending()

    async def delete_sent(self, older_than: float) -> int:
        """Delete the rows sent more than ``older_than`` seconds ago; returns how many."""
        await self.ensure()
        return await self._store.delete_sent(time.time() - older_than)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


__all__ = ["DEFAULT_TABLE", "Outbox", "OutboxError", "OutboxRelay", "OutboxRows"]
