"""Idempotent consumers: remember which events a consumer group has processed, so a redelivery is skipped.

Every broker tidings speaks delivers *at least once*: a handler that crashes, times out or loses its connection
before the ack sees the same event again. An idempotency store turns that into *effectively once* processing by
recording each processed ``event_id`` per consumer group::

    async with SqliteIdempotencyStore("app.db") as store:
        if not await store.seen("billing", event.id):
            await charge(event)
            await store.mark("billing", event.id)

``seen`` then ``mark`` still leaves a window: a crash after the effect and before the mark applies the event
twice on redelivery. When the handler's effects go to the *same database* as the store (SQLite or PostgreSQL),
close the window with the **inbox** pattern: the effect and the mark commit in one transaction, so either both
happen or neither does::

    async with store.transaction("billing", event.id) as tx:
        if not tx.duplicate:
            tx.connection.execute("INSERT INTO charges VALUES (?, ?)", (event.id, amount))  # SQLite: sync calls
            # PostgreSQL: await tx.connection.execute("INSERT INTO charges VALUES (%s, %s)", (event.id, amount))

The user's tables live in the database the store was given (same SQLite path, same PostgreSQL DSN).

Which store
-----------
:class:`MemoryIdempotencyStore`
    One process, nothing survives a restart, bounded (oldest marks evicted first). Tests, or deduplicating
    the redeliveries of a broker within one process's lifetime.
:class:`SqliteIdempotencyStore`
    One machine, durable, no server; the inbox transaction when the handler's effects are in SQLite too.
:class:`RedisIdempotencyStore`
    Many machines, expiry handled by Redis itself, very fast; no inbox transaction (Redis cannot commit
    together with your database), so keep the seen/mark window in mind.
:class:`PostgresIdempotencyStore`
    Many machines, durable, and the inbox transaction for handlers that write to PostgreSQL.

Marks expire after ``ttl`` seconds (``None``: never), which bounds the store; an event redelivered after its
mark expired is processed again, so choose a ``ttl`` longer than any redelivery (a week by default).
Marking an event that is already marked keeps the first mark (and its expiry), as Redis ``SET NX`` does.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from tidings.errors import TidingsError, UsageError, one_line
from tidings.lifecycle import Service
from tidings.pgpool import ConnectionPool
from tidings.redact import redact_url
from tidings.sqlite_wal import advice, is_busy, is_database_wide, use_wal

if TYPE_CHECKING:
    import psycopg
    import redis.asyncio

C = TypeVar("C")
T = TypeVar("T")
Clock = Callable[[], float]

_WEEK = 7 * 86400.0


class StoreError(TidingsError):
    """An idempotency store could not be reached or used (connection refused, database locked, disk full...)."""


class IdempotencyStore(Service):
    """Which events each consumer group has already processed. Every method is safe to call before
    :meth:`start` (it starts the store); ``async with store:`` starts and closes it."""

    #: seconds a mark lasts; ``None``: forever
    ttl: float | None

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and create what the store needs; calling it again does nothing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the store may be started again."""

    @abc.abstractmethod
    async def seen(self, group: str, event_id: str) -> bool:
        """Whether ``group`` has processed ``event_id`` (and the mark has not expired)."""

    @abc.abstractmethod
    async def mark(self, group: str, event_id: str) -> None:
        """Record that ``group`` processed ``event_id``; marking again is harmless."""

    @abc.abstractmethod
    async def purge_expired(self) -> int:
        """Delete expired marks and return how many were deleted."""


class InboxTransaction(Generic[C]):
    """What ``store.transaction(group, event_id)`` yields: whether the event is a duplicate and, if not, the
    connection on which the handler's writes commit together with the mark."""

    __slots__ = ("_connection", "duplicate", "event_id", "group")

    def __init__(self, group: str, event_id: str, duplicate: bool, connection: C | None) -> None:
        self.group = group
        self.event_id = event_id
        self.duplicate = duplicate
        self._connection = connection

    @property
    def connection(self) -> C:
        if self._connection is None:
            # a duplicate's transaction was rolled back at once, so that it holds no lock while the body runs
            raise UsageError(
                f"event {self.event_id!r} was already processed by group {self.group!r}: "
                "a duplicate's transaction has no connection (check tx.duplicate first)"
            )
        return self._connection

    def __repr__(self) -> str:
        return f"InboxTransaction(group={self.group!r}, event_id={self.event_id!r}, duplicate={self.duplicate})"


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not ttl > 0:
        raise UsageError(f"ttl must be a positive number of seconds or None (never expire), not {ttl!r}")
    return None if ttl is None else float(ttl)


def _import_driver(module: str, store: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"{store} needs the {module} driver: pip install 'tidings[{extra}]'") from exc


K = TypeVar("K")
R = TypeVar("R")


class _Batcher(Generic[K, R]):
    """Group commit for ``seen`` and ``mark``: calls made while a batch is in flight wait and go together in
    the next one, as one round trip (one thread hop and one transaction, one Redis pipeline, one PostgreSQL
    statement). A consumer with ``prefetch`` handlers in flight pays one round trip per batch rather than one
    per event, which is what keeps deduplication cheap next to the pipeline it guards; a lone call waits for
    nobody (its batch leaves at the next turn of the event loop)."""

    def __init__(self, run: Callable[[list[K]], Awaitable[list[R]]], limit: int = 512) -> None:
        self._run = run
        self._limit = limit
        self._pending: list[tuple[K, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((key, future))
        if self._drainer is None or self._drainer.done() or self._drainer.get_loop() is not loop:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._limit]
            del self._pending[: self._limit]
            try:
                results = await self._run([key for key, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)


Key = tuple[str, str]


class _GroupCommitted(IdempotencyStore):
    """``seen`` and ``mark`` through one :class:`_Batcher`: the marks and the lookups that wait together go
    to the store together, in one round trip (marks first, so a lookup sees a mark made in the same batch)."""

    def __init__(self) -> None:
        self._batch: _Batcher[tuple[bool, str, str], bool] = _Batcher(self._apply_ops)

    async def seen(self, group: str, event_id: str) -> bool:
        return await self._batch((False, group, event_id))

    async def mark(self, group: str, event_id: str) -> None:
        await self._batch((True, group, event_id))

    async def _apply_ops(self, ops: list[tuple[bool, str, str]]) -> list[bool]:
        marks = list(dict.fromkeys((g, e) for is_mark, g, e in ops if is_mark))
        lookups = [(g, e) for is_mark, g, e in ops if not is_mark]
        live = await self._apply(marks, lookups)
        return [is_mark or (g, e) in live for is_mark, g, e in ops]

    @abc.abstractmethod
    async def _apply(self, marks: list[Key], lookups: list[Key]) -> set[Key]:
        """Write ``marks`` (durably, before returning), then return which of ``lookups`` hold a live mark."""


# -- memory --


class MemoryIdempotencyStore(IdempotencyStore):
    """Marks in a dict of this process, at most ``max_entries`` of them (the oldest are evicted first).

    An evicted or expired mark means a redelivery of that event is processed again: size ``max_entries`` for
    the number of distinct events a redelivery can lag behind.
    """

    def __init__(self, max_entries: int = 100_000, ttl: float | None = None, *, clock: Clock = time.time) -> None:
        if max_entries < 1:
            raise UsageError(f"max_entries must be at least 1, not {max_entries!r}")
        self.max_entries = max_entries
        self.ttl = _check_ttl(ttl)
        self._clock = clock
        # insertion order is mark order (a live mark is never moved), so the front holds the oldest marks:
        # both eviction and purge_expired take from there
        self._marks: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._marks)

    def _live(self, key: tuple[str, str], now: float) -> bool:
        at = self._marks.get(key)
        if at is None:
            return False
        if self.ttl is not None and at + self.ttl <= now:
            del self._marks[key]
            return False
        return True

    async def seen(self, group: str, event_id: str) -> bool:
        return self._live((group, event_id), self._clock())

    async def mark(self, group: str, event_id: str) -> None:
        key = (group, event_id)
        now = self._clock()
        if self._live(key, now):
            return
        self._marks[key] = now
        while len(self._marks) > self.max_entries:
            self._marks.popitem(last=False)

    async def purge_expired(self) -> int:
        if self.ttl is None:
            return 0
        cutoff = self._clock() - self.ttl
        purged = 0
        # oldest first, so stop at the first live mark (a clock that stepped back may leave a few expired marks
        # behind a live one: seen() still treats them as expired, the next purge gets them)
        while self._marks:
            key, at = next(iter(self._marks.items()))
            if at > cutoff:
                break
            del self._marks[key]
            purged += 1
        return purged


# -- SQLite --

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS tidings_processed (
    grp          TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at REAL NOT NULL,
    PRIMARY KEY (grp, event_id)
) WITHOUT ROWID;
-- purge_expired deletes by age: without the index it would scan the table while holding the write lock
CREATE INDEX IF NOT EXISTS tidings_processed_at ON tidings_processed (processed_at);
"""
_SQLITE_INSERT = "INSERT INTO tidings_processed (grp, event_id, processed_at) VALUES (?, ?, ?) "
_SQLITE_LOOKUP = "SELECT processed_at FROM tidings_processed WHERE grp = ? AND event_id = ?"
#: marks between two checkpoints of the write-ahead log (each mark is about 100 bytes of it)
_CHECKPOINT_EVERY = 10_000
# the batched forms: the keys as one JSON array of [group, event_id] pairs
_SQLITE_LOOKUP_MANY = (
    "SELECT json_group_array(json_array(p.grp, p.event_id, p.processed_at)) FROM json_each(?) AS k "
    "JOIN tidings_processed AS p ON p.grp = k.value ->> 0 AND p.event_id = k.value ->> 1"
)
_SQLITE_INSERT_MANY = (
    "INSERT INTO tidings_processed (grp, event_id, processed_at) "
    "SELECT value ->> 0, value ->> 1, ? FROM json_each(?) WHERE true "  # WHERE: SQLite's upsert-after-SELECT rule
)
_SQLITE_MARK_MANY = _SQLITE_INSERT_MANY + (
    "ON CONFLICT (grp, event_id) DO UPDATE SET processed_at = excluded.processed_at "
    "WHERE tidings_processed.processed_at <= ?"
)
_SQLITE_MARK_MANY_FOREVER = _SQLITE_INSERT_MANY + "ON CONFLICT (grp, event_id) DO NOTHING"


class SqliteIdempotencyStore(_GroupCommitted):
    """Marks in the table ``tidings_processed`` of the SQLite file ``path`` (WAL mode), shared by every process
    of the machine that opens the same file.

    ``seen``, ``mark`` and ``purge_expired`` run on one dedicated thread with its own connection, so the event
    loop never waits for the disk or for another process's lock. :meth:`transaction` is the inbox.

    Durability is ``synchronous=NORMAL``: a commit survives a crash of the process (SIGKILL included), an OS
    crash or power cut may lose the last ones. ``busy_timeout`` is how long a statement waits for a write lock
    held by another connection before it fails with :class:`StoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ttl: float | None = _WEEK,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            # each inbox transaction opens its own connection, which would see a different, empty database
            raise UsageError("SqliteIdempotencyStore needs a file; for marks in memory use MemoryIdempotencyStore")
        self.ttl = _check_ttl(ttl)
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        # Inbox transactions get their own thread: one waiting in BEGIN IMMEDIATE for another connection's lock
        # must not hold up the writer thread, and the writer thread (a mark() waiting for a transaction's lock)
        # must not hold up that transaction's COMMIT.
        self._tx_thread: ThreadPoolExecutor | None = None
        # SQLite has one writer at a time anyway: transactions of this store queue here, on the event loop,
        # rather than in SQLite's busy handler, where a body slower than busy_timeout would fail the next one
        self._tx_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        #: the event loop's own connection for batches (see _open_fast), and marks since the last checkpoint
        self._fast: sqlite3.Connection | None = None
        self._inbox: sqlite3.Connection | None = None
        self._unchecked = 0
        super().__init__()

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"SQLite idempotency store {self.path}: {one_line(exc)}; {advice(exc, self.busy_timeout)}")

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the inbox connection is opened on the transaction thread and used by the
        # handler on the event loop, one after the other, never at the same time
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            use_wal(conn, self.busy_timeout)  # persistent in the file: inbox connections inherit it
            conn.executescript(_SQLITE_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    async def start(self) -> None:
        if self._conn is not None:  # started: every batch calls this, no lock needed to see it
            return
        async with self._start_lock:
            if self._conn is not None:
                return
            writer = ThreadPoolExecutor(1, thread_name_prefix="tidings-idempotency-sqlite")
            try:
                self._conn = await asyncio.get_running_loop().run_in_executor(writer, self._open)
            except sqlite3.Error as exc:
                writer.shutdown(wait=False)
                raise self._error(exc) from exc
            self._writer = writer
            self._tx_thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-inbox-sqlite")

    async def close(self) -> None:
        async with self._start_lock:
            conn, writer, tx_thread = self._conn, self._writer, self._tx_thread
            self._conn = self._writer = self._tx_thread = None
            fast, self._fast = self._fast, None
            inbox, self._inbox = self._inbox, None
            for own in (fast, inbox):
                if own is not None:
                    with contextlib.suppress(sqlite3.Error):
                        own.close()
            if conn is None or writer is None or tx_thread is None:
                return
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(writer, conn.close)
            # the shutdowns wait for queued work: run them off the loop
            await loop.run_in_executor(None, writer.shutdown)
            await loop.run_in_executor(None, tx_thread.shutdown)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await self.start()
        conn, writer = self._conn, self._writer
        assert conn is not None
        assert writer is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(writer, fn, conn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _is_live(self, processed_at: float, now: float) -> bool:
        return self.ttl is None or processed_at + self.ttl > now

    async def _apply(self, marks: list[Key], lookups: list[Key]) -> set[Key]:
        now = self._clock()
        mark_params: tuple[Any, ...]
        if self.ttl is None:
            mark_sql, mark_params = _SQLITE_MARK_MANY_FOREVER, (now, orjson.dumps(marks))
        else:
            mark_sql, mark_params = _SQLITE_MARK_MANY, (now, orjson.dumps(marks), now - self.ttl)

        def apply(conn: sqlite3.Connection) -> list[list[Any]]:
            # One statement each, the mark being its own transaction (durable once mark() returns): the
            # sqlite3 module lets go of the GIL at every step, and each step taken back from a busy event loop
            # can wait a whole switch interval (5 ms), so a statement per key would cost a switch per key.
            if marks:
                conn.execute(mark_sql, mark_params)
            if not lookups:
                return []
            row = conn.execute(_SQLITE_LOOKUP_MANY, (orjson.dumps(lookups),)).fetchone()
            found: list[list[Any]] = orjson.loads(row[0])
            return found

        await self.start()
        fast = self._fast
        if fast is None:
            try:
                fast = self._fast = self._open_fast()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        try:
            found = apply(fast)
        except sqlite3.OperationalError as exc:
            if fast.in_transaction:
                fast.execute("ROLLBACK")
            if not is_busy(exc):
                raise self._error(exc) from exc
            # another connection holds the lock: wait for it on the writer thread, never on the event loop
            found = await self._run(apply)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        else:
            self._marked(len(marks))
        return {(g, e) for g, e, at in found if self._is_live(at, now)}

    def _open_fast(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        # The batch runs on the event loop when it can: a thread hop costs more than the statements (the
        # thread waits for the GIL while the loop is busy). It must never wait there, so this connection does
        # not wait for locks (timeout 0: busy means "go to the writer thread") and does not checkpoint (a
        # checkpoint writes the database file; the writer thread does it, see _checkpoint).
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=check_same_thread)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _marked(self, count: int) -> None:
        """``count`` marks committed: checkpoint the WAL on the writer thread now and then."""
        self._unchecked += count
        if self._unchecked >= _CHECKPOINT_EVERY:
            self._unchecked = 0
            self._checkpoint()

    def _checkpoint(self) -> None:
        writer, conn = self._writer, self._conn
        if writer is None or conn is None:
            return

        def checkpoint() -> None:
            with contextlib.suppress(sqlite3.Error):  # PASSIVE: never waits; a busy one is simply next time's
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

        writer.submit(checkpoint)

    async def purge_expired(self) -> int:
        if self.ttl is None:
            return 0
        cutoff = self._clock() - self.ttl
        sql = "DELETE FROM tidings_processed WHERE processed_at <= ?"
        return await self._run(lambda conn: conn.execute(sql, (cutoff,)).rowcount)

    # -- inbox --

    def _inbox_connection(self) -> sqlite3.Connection:
        # One connection for every inbox transaction of this store (they take turns: _tx_lock), used on the
        # event loop like the batches' (see _open_fast): no lock waits there (timeout 0; a busy BEGIN waits on
        # the inbox thread instead) and no checkpoints (the writer thread's job).
        conn = self._inbox
        if conn is None:
            conn = self._inbox = self._open_fast(check_same_thread=False)  # (also used on the inbox thread)
        return conn

    def _begin(self, conn: sqlite3.Connection, group: str, event_id: str, now: float) -> bool:
        """Open the transaction; True if the event is a duplicate (and the transaction already closed)."""
        # IMMEDIATE takes the write lock now, so the duplicate check below cannot race another consumer:
        # a second transaction for the same event waits here until the first has committed its mark
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(_SQLITE_LOOKUP, (group, event_id)).fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        duplicate = row is not None and self._is_live(row[0], now)
        if duplicate:
            conn.execute("ROLLBACK")
        return duplicate

    def _begin_waiting(self, conn: sqlite3.Connection, group: str, event_id: str, now: float) -> bool:
        # on the inbox thread: wait for the other connection's lock up to busy_timeout, as the store promises
        conn.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout * 1000)}")
        try:
            return self._begin(conn, group, event_id, now)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _commit(self, conn: sqlite3.Connection, group: str, event_id: str, now: float) -> None:
        try:
            if not conn.in_transaction:
                raise UsageError(
                    "the handler ended the inbox transaction itself (COMMIT/ROLLBACK on tx.connection): "
                    "its writes were not committed together with the mark; leave the commit to the store"
                )
            # inside the transaction the mark is known absent or expired: overwrite unconditionally
            conn.execute(
                _SQLITE_INSERT + "ON CONFLICT (grp, event_id) DO UPDATE SET processed_at = excluded.processed_at",
                (group, event_id, now),
            )
            conn.execute("COMMIT")  # holds the write lock already, and does not checkpoint: no wait
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        self._marked(1)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def transaction(self, group: str, event_id: str) -> AsyncIterator[InboxTransaction[sqlite3.Connection]]:
        """The inbox: process ``event_id`` for ``group`` and mark it in one SQLite transaction.

        If the event was already processed, ``tx.duplicate`` is true and nothing is open. Otherwise
        ``tx.connection`` is a :class:`sqlite3.Connection` to this store's file inside ``BEGIN IMMEDIATE``:
        run the handler's writes on it (plain synchronous calls: the write lock is already held, so they wait
        for no one; keep them short, they run on the event loop). Leaving the block normally inserts the mark
        and commits both; an exception rolls both back and propagates. Do not commit or roll back
        ``tx.connection`` yourself, and do not call this store's other methods inside the block (they use
        another connection, which would wait for this transaction's lock).
        """
        await self.start()
        tx_thread = self._tx_thread
        assert tx_thread is not None
        loop = asyncio.get_running_loop()
        async with self._tx_lock:
            try:
                conn = self._inbox_connection()
                try:
                    duplicate = self._begin(conn, group, event_id, self._clock())
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    duplicate = await loop.run_in_executor(
                        tx_thread, self._begin_waiting, conn, group, event_id, self._clock()
                    )
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            if duplicate:
                yield InboxTransaction(group, event_id, True, None)
                return
            try:
                yield InboxTransaction(group, event_id, False, conn)
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._rollback(conn)
                if is_database_wide(exc):
                    # the handler's own write met the database's trouble (a full disk, a lock held elsewhere):
                    # the store's failure, not the event's, so the event must not count it as an attempt
                    raise self._error(exc) from exc
                raise
            try:
                self._commit(conn, group, event_id, self._clock())
            except sqlite3.Error as exc:
                raise self._error(exc) from exc


# -- Redis --


_REDIS_MARK = """
local px = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    if px > 0 then redis.call('SET', key, '1', 'NX', 'PX', px) else redis.call('SET', key, '1', 'NX') end
end
return #KEYS
"""


class RedisIdempotencyStore(_GroupCommitted):
    """One Redis key per mark, ``{prefix}{group}:{event_id}``, set with ``SET NX PX`` so that Redis expires it.

    ``purge_expired`` has nothing to do (returns 0). A ``:`` in a group name is written ``%3A`` (and ``%``
    ``%25``), so that ``("a:b", "c")`` and ``("a", "b:c")`` stay two keys.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        ttl: float | None = _WEEK,
        prefix: str = "tidings:processed:",
        *,
        timeout: float = 5.0,
    ) -> None:
        self._redis = _import_driver("redis.asyncio", "RedisIdempotencyStore", "redis")
        self.url = url
        self.ttl = _check_ttl(ttl)
        self.prefix = prefix
        self.timeout = timeout
        self._client: redis.asyncio.Redis | None = None
        self._script_sha: str | None = None
        super().__init__()

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"Redis idempotency store at {redact_url(self.url)}: {redact_url(one_line(exc))}; "
            "check that Redis is running and that the URL (host, port, password) is right"
        )

    def key(self, group: str, event_id: str) -> str:
        return f"{self.prefix}{group.replace('%', '%25').replace(':', '%3A')}:{event_id}"

    async def start(self) -> None:
        if self._client is not None:
            return
        from redis.exceptions import RedisError

        try:
            client = self._redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        except ValueError as exc:  # a malformed URL
            raise UsageError(f"not a Redis URL: {redact_url(self.url)} ({one_line(exc)})") from exc
        try:
            await client.ping()  # fail at start, with a clear message, rather than at the first event
        except RedisError as exc:
            await client.aclose()
            raise self._error(exc) from exc
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _ready(self) -> redis.asyncio.Redis:
        await self.start()
        assert self._client is not None
        return self._client

    async def _apply(self, marks: list[Key], lookups: list[Key]) -> set[Key]:
        from redis.exceptions import RedisError

        client = await self._ready()
        # PX in milliseconds: EX takes whole seconds only; 0: no expiry
        px = 0 if self.ttl is None else max(1, round(self.ttl * 1000))
        try:
            script = await self._mark_script(client) if marks else ""
            # one round trip: the marks as one script call (SET NX [PX] per key, inside Redis), the lookups as
            # one MGET (a pipeline of EXISTS would cost redis-py a command object per key)
            async with client.pipeline(transaction=False) as pipe:
                if marks:
                    pipe.evalsha(script, len(marks), *(self.key(*k) for k in marks), px)
                if lookups:
                    pipe.mget([self.key(*k) for k in lookups])
                replies = await pipe.execute()
        except RedisError as exc:
            if "NOSCRIPT" in str(exc):  # the server was restarted or flushed its scripts: load it again next time
                self._script_sha = None
            raise self._error(exc) from exc
        values = replies[-1] if lookups else []
        return {key for key, value in zip(lookups, values, strict=True) if value is not None}

    async def _mark_script(self, client: redis.asyncio.Redis) -> str:
        if self._script_sha is None:
            self._script_sha = str(await client.script_load(_REDIS_MARK))
        return self._script_sha

    async def purge_expired(self) -> int:
        return 0


# -- PostgreSQL --


class PostgresIdempotencyStore(_GroupCommitted):
    """Marks in the table ``table`` (created if missing; ``schema.table`` allowed) of the PostgreSQL database
    ``dsn``, through at most ``pool_size`` connections (psycopg 3, async).

    Expiry uses ``clock`` (this process's wall clock): keep the clocks of the consumers in sync (NTP), or a
    mark may live a little longer or shorter than ``ttl``. :meth:`transaction` is the inbox.
    A connection that fails is dropped and replaced at the next call; the failing call raises
    :class:`StoreError` (no retry here: the broker's redelivery is the retry).
    """

    def __init__(
        self,
        dsn: str = "postgresql://postgres@127.0.0.1:5432/test",
        ttl: float | None = _WEEK,
        table: str = "tidings_processed",
        *,
        clock: Clock = time.time,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        self._psycopg = _import_driver("psycopg", "PostgresIdempotencyStore", "postgres")
        parts = table.split(".")
        if not table or len(parts) > 2 or not all(parts):
            raise UsageError(f"table must be a name or schema.name, not {table!r}")
        if pool_size < 1:
            raise UsageError(f"pool_size must be at least 1, not {pool_size!r}")
        self.dsn = dsn
        self.ttl = _check_ttl(ttl)
        self.table = table
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._clock = clock
        sql = importlib.import_module("psycopg.sql")
        # composed with Identifier: the table name is quoted, never pasted into the SQL
        t = sql.Identifier(*parts)
        index = sql.Identifier(f"{parts[-1]}_processed_at")
        self._schema = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (grp TEXT NOT NULL, event_id TEXT NOT NULL, "
                "processed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (grp, event_id))"
            ).format(t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (processed_at)").format(index, t),
        ]
        insert = sql.SQL("INSERT INTO {} AS p (grp, event_id, processed_at) VALUES (%s, %s, %s) ").format(t)
        # the insert comes first, so that a second consumer of the same event blocks on the primary key until the
        # first commits, then sees its row; a live mark stays as it is, an expired one is taken over. RETURNING
        # says which: a row back means this call made the mark
        self._claim_sql = insert + sql.SQL(
            "ON CONFLICT (grp, event_id) DO UPDATE SET processed_at = EXCLUDED.processed_at "
            "WHERE p.processed_at <= %s RETURNING 1"
        )
        self._claim_forever_sql = insert + sql.SQL("ON CONFLICT (grp, event_id) DO NOTHING RETURNING 1")
        # the batched forms (see _Batcher): arrays in, one statement for many events
        self._seen_many_sql = sql.SQL(
            "SELECT grp, event_id, processed_at FROM {} "
            "WHERE (grp, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(t)
        insert_many = sql.SQL(
            "INSERT INTO {} AS p (grp, event_id, processed_at) "
            "SELECT g, e, %s::double precision FROM unnest(%s::text[], %s::text[]) AS u (g, e) "
        ).format(t)
        self._mark_many_sql = insert_many + sql.SQL(
            "ON CONFLICT (grp, event_id) DO UPDATE SET processed_at = EXCLUDED.processed_at WHERE p.processed_at <= %s"
        )
        self._mark_many_forever_sql = insert_many + sql.SQL("ON CONFLICT (grp, event_id) DO NOTHING")
        super().__init__()
        self._purge_sql = sql.SQL("DELETE FROM {} WHERE processed_at <= %s").format(t)
        self._pool = ConnectionPool(dsn, size=pool_size, connect_timeout=connect_timeout, error=self._error)
        self._connection = self._pool.connection
        self._started = False
        self._start_lock = asyncio.Lock()

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"PostgreSQL idempotency store at {redact_url(self.dsn)}: {redact_url(one_line(exc))}; "
            "check that PostgreSQL is running and that the DSN (host, port, user, password, database) is right"
        )

    async def start(self) -> None:
        if self._started:  # every batch calls this: no lock needed to see it
            return
        async with self._start_lock:
            if self._started:
                return
            self._started = True
            self._pool.reopen()
            try:
                await self._pool.create(self.table, self._schema)
            except BaseException:
                self._started = False
                raise

    async def close(self) -> None:
        async with self._start_lock:
            self._started = False
            await self._pool.close()

    def _claim_params(self, group: str, event_id: str) -> tuple[Any, tuple[Any, ...]]:
        now = self._clock()
        if self.ttl is None:
            return self._claim_forever_sql, (group, event_id, now)
        return self._claim_sql, (group, event_id, now, now - self.ttl)

    async def _apply(self, marks: list[Key], lookups: list[Key]) -> set[Key]:
        await self.start()
        now = self._clock()
        mark_sql = self._mark_many_forever_sql if self.ttl is None else self._mark_many_sql
        mark_params: tuple[Any, ...] = (now, [k[0] for k in marks], [k[1] for k in marks])
        if self.ttl is not None:
            mark_params = (*mark_params, now - self.ttl)
        try:
            async with self._connection() as conn:
                if marks:
                    await conn.execute(mark_sql, mark_params)
                if not lookups:
                    return set()
                cursor = await conn.execute(self._seen_many_sql, ([k[0] for k in lookups], [k[1] for k in lookups]))
                rows = await cursor.fetchall()
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc
        return {(g, e) for g, e, at in rows if self.ttl is None or at + self.ttl > now}

    async def purge_expired(self) -> int:
        if self.ttl is None:
            return 0
        await self.start()
        cutoff = self._clock() - self.ttl
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(self._purge_sql, (cutoff,))
                return cursor.rowcount
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(
        self, group: str, event_id: str
    ) -> AsyncIterator[InboxTransaction[psycopg.AsyncConnection[Any]]]:
        """The inbox: process ``event_id`` for ``group`` and mark it in one PostgreSQL transaction.

        The mark is inserted first: if another consumer is processing the same event, this waits until that
        transaction ends, then finds its mark (``tx.duplicate``, nothing left open) or, if it rolled back, takes
        over. Otherwise ``tx.connection`` is a :class:`psycopg.AsyncConnection` inside the transaction: run the
        handler's writes on it (``conn.transaction()`` inside makes a savepoint). Leaving the block normally
        commits writes and mark together; an exception rolls both back and propagates. Handler errors are raised
        as they are; only the store's own statements (the mark, the commit) raise :class:`StoreError`.
        """
        await self.start()
        sql, params = self._claim_params(group, event_id)
        claimed = False
        in_body = False
        try:
            async with self._connection() as conn, conn.transaction():
                cursor = await conn.execute(sql, params)
                claimed = await cursor.fetchone() is not None
                if not claimed:
                    # release the connection before the body runs: a duplicate has nothing to write
                    raise self._psycopg.Rollback()
                in_body = True
                yield InboxTransaction(group, event_id, False, conn)
                in_body = False
        except self._psycopg.Error as exc:
            if in_body:
                raise
            raise self._error(exc) from exc
        if not claimed:
            yield InboxTransaction(group, event_id, True, None)


__all__ = [
    "IdempotencyStore",
    "InboxTransaction",
    "MemoryIdempotencyStore",
    "PostgresIdempotencyStore",
    "RedisIdempotencyStore",
    "SqliteIdempotencyStore",
    "StoreError",
]
