"""The embedded event store: one SQLite file (WAL mode) that the processes of one machine share.

::

    async with SqliteEventStore("app.db") as store:
        placed = NewEvent(str(uuid4()), "OrderPlaced", b'{"total": 12}')
        await store.append("order-42", [placed], expected_version=NO_STREAM)
        async for event in store.subscribe(from_position=checkpoint):
            ...

Tables (named ``tidings_*``, so the file may hold the SQLite broker's tables and the application's own too):

``tidings_events``
    one row per event: ``position`` (the rowid: the log), ``stream_id`` and ``version`` (unique together),
    ``event_id`` (unique in the whole store: idempotency), ``event_type``, ``schema_version``, ``recorded_at``
    (seconds since the epoch), ``metadata`` and ``data`` (BLOBs, never parsed). A rowid table, so the log is
    the table's own order: an append writes at its end, ``read_all`` and subscriptions read its pages in order
    (clustered by (stream, version) instead, WITHOUT ROWID, every insert would land at a random place and
    ``read_all`` would look each event up). No index on ``event_type``: it would cost every append a fourth
    B-tree page (a sixth of batched appends' throughput, measured) for the sake of readers filtering by type,
    who scan the log instead (SQLite's C loop skips millions of rows a second).
``tidings_streams``
    one row per stream that has had an event, metadata or a delete: ``version`` (a floor: the version when the
    stream was created, deleted or scavenged; the live version is its last event's when that is higher, so
    that an append need not rewrite this row), ``deleted_through`` (soft delete: versions up to it are not
    read), ``hard_deleted`` (the tombstone, kept after scavenges) and the retention (``max_age``,
    ``max_count``, ``truncate_before``). WITHOUT ROWID: small rows found by their text key.
``tidings_positions``
    one row: the highest position handed out, written by :meth:`SqliteEventStore.scavenge` before it deletes
    events, so that a position is never handed out twice even when the last events are scavenged.

What is guaranteed
------------------
*Consistency*: every write (appends, deletes, metadata) is a ``BEGIN IMMEDIATE`` transaction, which takes
SQLite's one write lock before it reads anything: checking ``expected_version`` and inserting cannot interleave
with another connection's or process's write. *The log has no gaps*: a position is the highest one plus one,
taken under that lock, so positions are handed out in commit order and a reader that has seen position P
never later meets an unseen event at or below P; a failed append uses none (its transaction rolls back).
*Idempotency*: a retry (the ids already stored, in the same stream, consecutive, in order, same content) is
recognised before ``expected_version`` is checked and returns the original result; other reuse of an id is
:class:`~tidings.eventstore.base.DuplicateEventError` (see :mod:`tidings.testing.eventstore_contract`, which
fixes the semantics every backend shares).

*Durability*: ``append`` returns once its transaction is committed. ``synchronous="normal"`` (the default)
does not fsync at each commit: in WAL mode a commit then survives any crash of the process (SIGKILL included:
the WAL is in the OS page cache) and the file is never corrupted, but an OS crash or a power cut may roll back
the last transactions (Kafka's default trade). ``synchronous="full"`` fsyncs the WAL at every commit, for
machines that must not lose a committed event to a power cut; concurrent appends then share one fsync.

How it runs
-----------
The event loop must never wait for the disk or for another process's lock, yet a hop to a thread costs more
than the statements of a small append (the thread waits for the GIL while the loop is busy). So, as
:class:`~tidings.reliability.idempotency.SqliteIdempotencyStore` learned:

- **writes run on the event loop**, on a connection that never waits: ``busy_timeout`` 0 (a write lock held by
  another process makes ``BEGIN IMMEDIATE`` fail at once) and no automatic checkpoints (a checkpoint writes
  and fsyncs the database file). When the lock is busy, the transaction goes to the store's **writer thread**,
  whose connection waits up to ``busy_timeout``; so do all writes with ``synchronous="full"`` (an fsync is a
  wait for the disk).
- **group commit**: a task that writes alone has its transaction run at once, in the call. Writes made
  concurrently (a second task writing in the same turn of the loop, and for a tenth of a second after a
  group of two or more) are queued and go together at the next turn: one transaction, one commit, the
  streams' states read in one query and the plain appends' rows inserted in one ``executemany``. Each keeps
  its own outcome: a failed check fails that append alone (it wrote nothing, or its writes are rolled back to
  a savepoint), the others commit. An :meth:`~SqliteEventStore.append_many` is one unit of the batch, all or
  nothing, its outbox rows (``outbox=``, what a :class:`~tidings.eventstore.aggregate.Repository` with an
  outbox saves through) included: they are inserted after its events, under the same savepoint.
- **checkpoints** run on the writer thread every few thousand pages, passive (writers go on meanwhile). A
  passive checkpoint never catches up with a stream of appends, so past 16 MiB of WAL the writer thread makes
  the WAL start over (``RESTART``): writers are held back while it copies the rest, and wait on that thread,
  not on the loop. The WAL stays at a few tens of MiB, whatever the size of the log.
- **reads run on the event loop** too, on their own connection: in WAL mode a reader never waits for a writer.
  In the rare case SQLite still says busy (another process recovering the WAL after a crash), the read is
  retried on the store's maintenance thread, which also runs :meth:`~SqliteEventStore.scavenge` and
  :meth:`~SqliteEventStore.stats`.
- **subscriptions** read the log in pages, then wait: appends through this store object wake them at once; the
  commits of other processes (or other store objects) are seen at the next poll, every ``poll_interval``
  seconds (0.05 by default).

Retention and deletion: a stream's metadata and a soft delete hide its events from ``read_stream`` at once;
:meth:`~SqliteEventStore.scavenge` deletes those events and the hard-deleted streams' from the log, then gives
the space back to the file system: in a database this store created, pages are moved and the file truncated
a few thousand pages at a time (``auto_vacuum = INCREMENTAL``), so appends can go on in between; in a file
created by something else, a full ``VACUUM`` (appends wait for it, up to ``busy_timeout``). The WAL is then
truncated too.

Errors are :class:`~tidings.eventstore.base.EventStoreError` on one line: the file, what went wrong, what to do.

What it costs
-------------
A commit writes each page it changed to the WAL (two ``pwrite`` calls a page), and an event changes a page of
each of the table's three B-trees: the log's (at its end, shared by the events of a batch), its stream's
(shared by a batch's events of one stream) and the event-id index's, at a random place for random ids, so one
page per event. That is why a lone single-event append costs about 1.5 times an ``INSERT`` and commit into a
table keyed by (stream, version) alone, and why **time-ordered event ids**
(:func:`tidings.events.envelope.uuid7`) make batched appends about three times faster than random UUID4s.
Reads return about 700,000 events a second and hold the loop for the time they take (about 1.5 µs per
event): read very long streams in pages (``limit``) where the loop must stay responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

from tidings.errors import UsageError, one_line
from tidings.eventstore.base import (
    ANY,
    AppendResult,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StoreStats,
    StreamDeleted,
    StreamMetadata,
    WrongExpectedVersion,
    check_append,
    check_read,
    expected_ok,
    judge_retry,
)
from tidings.sqlite_wal import advice, is_busy, use_wal

if TYPE_CHECKING:
    from tidings.reliability.outbox import OutboxRows

T = TypeVar("T")
Entry = tuple[str, Sequence[NewEvent], ExpectedVersion]

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS tidings_events (
    position       INTEGER PRIMARY KEY,  -- the rowid: handed out by the store, highest + 1, under the write lock
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    recorded_at    REAL NOT NULL,
    metadata       BLOB NOT NULL,
    data           BLOB NOT NULL,  -- last: a large body goes to overflow pages that a scan never has to read
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS tidings_streams (
    stream_id       TEXT PRIMARY KEY,
    version         INTEGER NOT NULL DEFAULT 0,
    deleted_through INTEGER NOT NULL DEFAULT 0,
    hard_deleted    INTEGER NOT NULL DEFAULT 0,
    max_age         REAL,
    max_count       INTEGER,
    truncate_before INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_positions (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_position INTEGER NOT NULL
);
COMMIT;
"""

_EVENT = "stream_id, version, position, event_id, event_type, schema_version, data, metadata, recorded_at"
_EVENT_E = ", ".join(f"e.{column}" for column in _EVENT.split(", "))
#: the columns in the order of NewEvent's fields after the first three, so that a row is (position, stream,
#: version, *event, recorded_at)
_INSERT = (
    "INSERT INTO tidings_events "
    "(position, stream_id, version, event_id, event_type, data, metadata, schema_version, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: the next position: one more than the highest stored or the highest a scavenge deleted
_HEAD = (
    "SELECT max(coalesce((SELECT max(position) FROM tidings_events), 0), "
    "coalesce((SELECT last_position FROM tidings_positions), 0))"
)
#: (tombstoned, live version): one row whether or not the stream has a row (aggregates over at most one)
_STATE = (
    "SELECT coalesce(max(hard_deleted), 0), max(coalesce(max(version), 0), "
    "coalesce((SELECT max(e.version) FROM tidings_events AS e WHERE e.stream_id = ?1), 0)) "
    "FROM tidings_streams WHERE stream_id = ?1"
)
#: the same, and the next position (for a transaction's first append: one statement less)
_STATE_HEAD = _STATE.replace(" FROM tidings_streams", ", " + _HEAD[len("SELECT ") :] + " FROM tidings_streams")
#: the same for many streams at once (a JSON array of ids): (id, tombstoned, live version)
_STATES = (
    "SELECT j.value, coalesce(s.hard_deleted, 0), max(coalesce(s.version, 0), coalesce("
    "(SELECT max(e.version) FROM tidings_events AS e WHERE e.stream_id = j.value), 0)) "
    "FROM json_each(?) AS j LEFT JOIN tidings_streams AS s ON s.stream_id = j.value"
)
_CREATED = (
    "INSERT INTO tidings_streams (stream_id, version) VALUES (?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = max(version, excluded.version)"
)
_KNOWN = (
    "SELECT event_id, stream_id, version, position, event_type, data, metadata, schema_version "
    "FROM tidings_events WHERE event_id IN (SELECT value FROM json_each(?))"
)
_METADATA = "SELECT hard_deleted, max_age, max_count, truncate_before FROM tidings_streams WHERE stream_id = ?"
# A stream read is one statement, so one snapshot: the stream's row (tombstone, retention, soft delete) and its
# events are read together. ``first`` is the lowest version still visible; ``cutoff`` the max_age limit.
_VISIBLE = """WITH s AS MATERIALIZED (
    SELECT coalesce(max(hard_deleted), 0) AS hard,
        max(coalesce(max(deleted_through), 0) + 1, coalesce(max(truncate_before), 1),
            CASE WHEN max(max_count) IS NULL THEN 1 ELSE max(coalesce(max(version), 0), coalesce(
                (SELECT max(x.version) FROM tidings_events AS x WHERE x.stream_id = ?1), 0)) - max(max_count) + 1
            END) AS first,
        ?3 - max(max_age) AS cutoff
    FROM tidings_streams WHERE stream_id = ?1)
"""
# scalar subqueries rather than a join with s: the planner then walks the (stream_id, version) index in order
# instead of sorting the result in a temporary B-tree
_READ_FORWARDS = (
    _VISIBLE + f"SELECT {_EVENT_E} FROM tidings_events AS e "
    "WHERE e.stream_id = ?1 AND e.version >= max(?2, (SELECT first FROM s)) AND (SELECT hard FROM s) = 0 "
    "AND e.recorded_at > coalesce((SELECT cutoff FROM s), -1e308) ORDER BY e.version LIMIT ?4"
)
_READ_BACKWARDS = (
    _VISIBLE + f"SELECT {_EVENT_E} FROM tidings_events AS e "
    "WHERE e.stream_id = ?1 AND e.version <= ?2 AND e.version >= (SELECT first FROM s) AND (SELECT hard FROM s) = 0 "
    "AND e.recorded_at > coalesce((SELECT cutoff FROM s), -1e308) ORDER BY e.version DESC LIMIT ?4"
)
_ALL_FORWARDS = f"SELECT {_EVENT} FROM tidings_events WHERE position > ? ORDER BY position LIMIT ?"
_ALL_BACKWARDS = f"SELECT {_EVENT} FROM tidings_events WHERE position < ? ORDER BY position DESC LIMIT ?"
_TYPES = "event_type IN (SELECT value FROM json_each(?))"
_ALL_FORWARDS_TYPED = f"SELECT {_EVENT} FROM tidings_events WHERE position > ? AND {_TYPES} ORDER BY position LIMIT ?"
_ALL_BACKWARDS_TYPED = (
    f"SELECT {_EVENT} FROM tidings_events WHERE position < ? AND {_TYPES} ORDER BY position DESC LIMIT ?"
)
#: a subscription filtering by type scans the log a window at a time: the window's last position, then its matches
_WINDOW_END = (
    "SELECT max(position) FROM (SELECT position FROM tidings_events WHERE position > ? ORDER BY position LIMIT ?)"
)
_WINDOW_TYPED = (
    f"SELECT {_EVENT} FROM tidings_events WHERE position > ? AND position <= ? AND {_TYPES} ORDER BY position"
)
_STATS = (
    "SELECT (SELECT count(*) FROM tidings_streams WHERE version > 0 AND hard_deleted = 0), "
    "(SELECT count(*) FROM tidings_events), " + _HEAD[len("SELECT ") :]
)

#: larger than any position or version
_END = 2**63 - 1
#: a group-commit transaction takes at most this many appends, and this many events (an append bigger than that
#: goes alone): the batch runs on the event loop, which it holds for about 2 µs per event
_BATCH_OPS = 500
_BATCH_EVENTS = 5000
#: the log positions a type-filtered subscription scans per read
_WINDOW = 5000
#: after two tasks wrote in one turn of the loop, writes wait for the next group commit for this many seconds
_GROUPING = 0.1
#: a task writing without ever awaiting anything else lets the loop run after this many writes
_INLINE_PER_TURN = 32
#: WAL pages written (an estimate: about two per event) between two checkpoints by the writer thread
_CHECKPOINT_PAGES = 4000
#: a WAL of more frames than this (4 KiB each) is made to start over at the next checkpoint (see _checkpoint)
_WAL_RESTART_FRAMES = 4096
#: milliseconds that checkpoint waits for readers of the old WAL (writers wait meanwhile)
_RESTART_WAIT_MS = 100
#: the WAL is truncated back to this size after a checkpoint that emptied it
_WAL_LIMIT = 64 * 1024 * 1024
#: free pages given back to the file system per transaction of a scavenge (appends may run in between)
_VACUUM_STEP = 2000
#: page cache of the writing connections, in KiB: the event-id index is written at random places, keep it in
#: memory (the reading ones keep SQLite's default, 2 MiB: reads go through the log and the streams in order)
_WRITER_CACHE_KIB = 32768

_OP_ERRORS = (EventStoreError, UsageError, ValueError, TypeError, OverflowError)
_ARGUMENT_ERRORS = (sqlite3.ProgrammingError, sqlite3.InterfaceError)


def _judge_retry(stream_id: str, events: Sequence[NewEvent], found: dict[str, tuple[Any, ...]]) -> AppendResult:
    """Ids already stored (rows by event id): the original result if this append is a retry of an earlier one."""
    stored = [_stored(found[e.event_id]) if e.event_id in found else None for e in events]
    first, last = judge_retry(stream_id, events, stored)
    return AppendResult(stream_id, first.version, last.version, first.position, last.position)


def _stored(row: tuple[Any, ...]) -> RecordedEvent:
    event_id, stream_id, version, position, event_type, data, metadata, schema_version = row
    return RecordedEvent(stream_id, version, position, event_id, event_type, schema_version, data, metadata, 0.0)


class _Tx:
    """A write transaction under way: its connection, the next position to hand out, its clock reading."""

    __slots__ = ("appended", "conn", "next_position", "now")

    def __init__(self, conn: sqlite3.Connection, next_position: int, now: float) -> None:
        self.conn = conn
        #: 0: not read yet (the first append of the transaction reads it with the stream's state)
        self.next_position = next_position
        self.now = now
        #: events written (a commit that wrote some wakes the subscriptions)
        self.appended = 0


class _Op:
    """One unit of a group-commit batch: ``run`` inside the batch's transaction, its outcome to ``future``."""

    __slots__ = ("entry", "events", "future", "run", "savepoint")

    def __init__(
        self,
        run: Callable[[_Tx], Any],
        events: int,
        savepoint: bool,
        future: asyncio.Future[Any] | None,
        entry: Entry | None = None,
    ) -> None:
        self.run = run
        self.events = events
        #: whether a failure may come after some of its writes (so, in a batch with others, it needs a savepoint)
        self.savepoint = savepoint
        self.future = future
        #: a plain append (one stream): a batch writes its events together with the other plain appends' rows
        self.entry = entry


class SqliteEventStore(EventStore):
    """The event store in the SQLite file ``path`` (created if missing), shared by every process that opens it.

    ``synchronous``: ``"normal"`` (a commit survives a crash of the process, not of the machine) or ``"full"``
    (fsync at each commit). ``busy_timeout``: seconds a write waits for the lock another process holds before
    it fails with :class:`EventStoreError`. ``poll_interval``: how often a caught-up subscription looks for the
    commits of other processes. ``page_size``: the events a subscription reads at a time. ``clock``: seconds
    since the epoch, for ``recorded_at`` and ``max_age`` (inject one only for tests).

    One store object belongs to one event loop at a time (it may be closed and started again in another).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.05,
        page_size: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:") or "mode=memory" in self.path:
            # every connection of a store would see its own, empty database
            raise UsageError("SqliteEventStore needs a file; for events in memory use MemoryEventStore")
        if synchronous not in ("normal", "full"):
            raise UsageError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if not busy_timeout >= 0:
            raise UsageError(f"busy_timeout must be a number of seconds >= 0, not {busy_timeout!r}")
        if not poll_interval > 0:
            raise UsageError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
        if page_size < 1:
            raise UsageError(f"page_size must be at least 1, not {page_size!r}")
        self.synchronous = synchronous
        self.busy_timeout = float(busy_timeout)
        self.poll_interval = float(poll_interval)
        self.page_size = page_size
        self._clock = clock
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the writer thread and its connection (waits for locks), the maintenance thread and its connection
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._maintenance: ThreadPoolExecutor | None = None
        self._maintenance_conn: sqlite3.Connection | None = None
        #: the event loop's connections: writes (never wait) and reads
        self._fast: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # group commit: operations waiting for the next transaction; whether a flush is scheduled; the batch
        # that went to the writer thread (the next one waits for it, so that batches commit in queue order)
        self._queue: list[_Op] = []
        self._flush_scheduled = False
        self._in_thread: asyncio.Future[Any] | None = None
        # the lone writer's fast path (see _alone): which task wrote in this turn of the loop, how many times,
        # and until when (loop time) writes are grouped because several tasks wrote together
        self._turn_owner: asyncio.Task[Any] | None = None
        self._turn_writes = 0
        self._group_until = 0.0
        self._unchecked_pages = 0
        self._checkpointing = False
        #: set by the writer thread while a RESTART checkpoint is pending: writes go to that thread meanwhile
        self._restarting = False
        #: the subscriptions waiting for live events, woken by this store's commits and by close()
        self._waiters: set[asyncio.Event] = set()
        #: how many times the store was started: a subscription ends when the store it began in is closed
        self._generation = 0

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.path!r})"

    # -- errors --

    def _error(self, exc: BaseException) -> EventStoreError:
        error = EventStoreError(f"SQLite event store {self.path}: {one_line(exc)}; {advice(exc, self.busy_timeout)}")
        error.__cause__ = exc
        return error

    def _not_open(self) -> EventStoreError:
        if self._closed:
            return EventStoreError(f"SQLite event store {self.path} is closed")
        return EventStoreError(f"SQLite event store {self.path} is not started: call start(), or use `async with`")

    # -- lifecycle --

    def _connect(self, timeout: float, *, writes: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            # checkpoints are the writer thread's job (a checkpoint writes and fsyncs the database file)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            if writes:
                conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        """On the writer thread: its connection, WAL mode and the schema (taking turns with other processes)."""
        conn = self._connect(self.busy_timeout)
        try:
            # a new file only: auto_vacuum can be chosen before the first table exists (an existing file keeps
            # its mode, and a scavenge then runs VACUUM)
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = use_wal(conn, self.busy_timeout)
            if mode != "wal":
                raise sqlite3.OperationalError(f"could not switch the journal to WAL mode (it is {mode})")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            conn.executescript(_SCHEMA)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            loop = asyncio.get_running_loop()
            writer = ThreadPoolExecutor(1, thread_name_prefix="tidings-eventstore-writer")
            maintenance = ThreadPoolExecutor(1, thread_name_prefix="tidings-eventstore-maintenance")
            conns: list[sqlite3.Connection] = []
            try:
                self._writer_conn = await loop.run_in_executor(writer, self._open_writer)
                conns.append(self._writer_conn)
                self._maintenance_conn = await loop.run_in_executor(
                    maintenance, partial(self._connect, self.busy_timeout, writes=False)
                )
                conns.append(self._maintenance_conn)
                # the event loop's own: timeout 0, they never wait (busy means "go to a thread")
                self._fast = self._connect(0)
                conns.append(self._fast)
                self._reader = self._connect(0, writes=False)
                conns.append(self._reader)
                self._reader.execute("PRAGMA query_only = 1")
            except BaseException as exc:
                for conn in conns:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                self._writer_conn = self._maintenance_conn = self._fast = self._reader = None
                writer.shutdown(wait=False)
                maintenance.shutdown(wait=False)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise
            self._writer, self._maintenance, self._loop = writer, maintenance, loop
            self._queue, self._flush_scheduled, self._in_thread = [], False, None
            self._unchecked_pages, self._checkpointing, self._restarting = 0, False, False
            self._turn_owner, self._turn_writes, self._group_until = None, 0, 0.0
            self._started, self._closed = True, False
            self._generation += 1

    async def close(self) -> None:
        async with self._start_lock:
            if not self._started:
                self._closed = True
                return
            self._started, self._closed = False, True
            for waiter in list(self._waiters):  # live subscriptions see the store closed, and end
                waiter.set()
            # what was queued before close() is still written
            while self._queue or self._in_thread is not None or self._flush_scheduled:
                pending = [op.future for op in self._queue if op.future is not None]
                if self._in_thread is not None:
                    pending.append(self._in_thread)
                if pending:
                    await asyncio.wait(pending)
                else:
                    await asyncio.sleep(0)
            loop = asyncio.get_running_loop()
            for conn in (self._fast, self._reader):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            writer, maintenance = self._writer, self._maintenance
            writer_conn, maintenance_conn = self._writer_conn, self._maintenance_conn
            self._fast = self._reader = self._writer_conn = self._maintenance_conn = None
            self._writer = self._maintenance = None
            for executor, conn in ((writer, writer_conn), (maintenance, maintenance_conn)):
                if executor is None:
                    continue
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await loop.run_in_executor(executor, conn.close)
                # the shutdown waits for queued work (a checkpoint): off the loop
                await loop.run_in_executor(None, executor.shutdown)

    # -- group commit --

    async def _write(self, run: Callable[[_Tx], T], events: int, savepoint: bool, entry: Entry | None = None) -> T:
        """Run ``run`` in a write transaction: at once if this task writes alone, else in the next group commit."""
        if not self._started:
            raise self._not_open()
        fast = self._fast
        if fast is not None and self._alone():
            try:
                outcomes, appended = self._transaction(fast, [_Op(run, events, savepoint, None, entry)])
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise self._error(exc) from exc
                # another connection holds the write lock: queue it, the flush sends it to the writer thread
            else:
                self._committed(appended)
                ok, value = outcomes[0]
                if ok:
                    result: T = value
                    return result
                raise value
        return await self._submit(run, events, savepoint, entry)

    def _alone(self) -> bool:
        """Whether a write may run right now, on the loop, in a transaction of its own.

        It may when nothing is queued or in flight, and no other task has written in this turn of the loop (nor,
        in a group of two or more, within the last ``_GROUPING`` seconds): a lone writer saves the turn of the
        loop a group commit waits for, concurrent writers share commits. A task that writes in a tight loop
        without ever awaiting anything else gives the loop a turn every ``_INLINE_PER_TURN`` writes.
        """
        if self._queue or self._flush_scheduled or self._in_thread is not None or self._restarting:
            return False
        if self.synchronous != "normal":
            return False
        loop = self._loop
        assert loop is not None
        if loop.time() < self._group_until:
            return False
        task = asyncio.current_task()
        owner = self._turn_owner
        if owner is None:
            self._turn_owner, self._turn_writes = task, 1
            loop.call_soon(self._end_turn)
            return True
        if owner is task:
            self._turn_writes += 1
            return self._turn_writes <= _INLINE_PER_TURN
        self._group_until = loop.time() + _GROUPING  # two tasks writing in one turn: group from now on
        return False

    def _end_turn(self) -> None:
        self._turn_owner = None

    def _submit(
        self, run: Callable[[_Tx], T], events: int, savepoint: bool, entry: Entry | None = None
    ) -> asyncio.Future[T]:
        if not self._started:
            raise self._not_open()
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Op(run, events, savepoint, future, entry))
        if not self._flush_scheduled and self._in_thread is None:
            # after the callbacks already ready: the appends other tasks make in this turn of the loop join in
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _take(self) -> list[_Op]:
        ops: list[_Op] = []
        events = 0
        queue = self._queue
        taken = 0
        for op in queue:
            if ops and (len(ops) >= _BATCH_OPS or events + op.events > _BATCH_EVENTS):
                break
            taken += 1
            if op.future is not None and op.future.done():  # cancelled by its caller before it started
                continue
            ops.append(op)
            events += op.events
        del queue[:taken]
        return ops

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._in_thread is not None:
            return  # the thread batch's completion flushes again
        while self._queue:
            ops = self._take()
            if not ops:
                continue
            fast = self._fast
            if self.synchronous == "normal" and fast is not None and not self._restarting:
                try:
                    outcomes, appended = self._transaction(fast, ops)
                except sqlite3.Error as exc:
                    if not is_busy(exc):
                        self._fail(ops, exc)
                        continue
                    # another connection holds the write lock: wait for it on the writer thread, not here (the
                    # transaction was rolled back, nothing of it is committed)
                except BaseException as exc:
                    self._fail(ops, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                else:
                    self._settle(ops, outcomes, appended)
                    if self._queue:  # the rest in the next turn of the loop: other tasks run in between
                        self._flush_scheduled = True
                        asyncio.get_running_loop().call_soon(self._flush)
                    return
            self._to_thread(ops)
            return

    def _to_thread(self, ops: list[_Op]) -> None:
        loop, writer, conn = self._loop, self._writer, self._writer_conn
        assert loop is not None
        assert writer is not None
        assert conn is not None
        future = loop.run_in_executor(writer, self._transaction, conn, ops)
        self._in_thread = future
        future.add_done_callback(partial(self._thread_done, ops))

    def _thread_done(self, ops: list[_Op], future: asyncio.Future[tuple[list[tuple[bool, Any]], int]]) -> None:
        self._in_thread = None
        if future.cancelled():
            self._fail(ops, EventStoreError(f"SQLite event store {self.path}: the write was cancelled"))
        elif (exc := future.exception()) is not None:
            self._fail(ops, exc)
        else:
            self._settle(ops, *future.result())
        if self._queue and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _settle(self, ops: list[_Op], outcomes: list[tuple[bool, Any]], appended: int) -> None:
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            if op.future is None or op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)
        if len(ops) > 1 and self._loop is not None:
            self._group_until = self._loop.time() + _GROUPING
        self._committed(appended)

    def _committed(self, appended: int) -> None:
        """After a commit: wake the subscriptions, and checkpoint the WAL now and then."""
        if not appended:
            return
        for waiter in self._waiters:
            waiter.set()
        self._unchecked_pages += 2 + 2 * appended
        if self._unchecked_pages >= _CHECKPOINT_PAGES and not self._checkpointing:
            self._checkpoint()

    def _fail(self, ops: list[_Op], exc: BaseException) -> None:
        for op in ops:
            if op.future is not None and not op.future.done():
                op.future.set_exception(self._error(exc) if isinstance(exc, sqlite3.Error) else exc)

    def _checkpoint(self) -> None:
        loop, writer, conn = self._loop, self._writer, self._writer_conn
        if loop is None or writer is None or conn is None:
            return
        self._unchecked_pages = 0
        self._checkpointing = True
        busy_ms = round(self.busy_timeout * 1000)

        def checkpoint() -> None:
            with contextlib.suppress(sqlite3.Error):
                # PASSIVE copies the WAL into the database without holding writers back. But the WAL starts over
                # (instead of growing) only if a checkpoint has copied all of it before the next write begins,
                # which a passive one beside a stream of appends never has (they add frames while it copies).
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames <= _WAL_RESTART_FRAMES:
                    return
                # RESTART holds writers back until it has copied the rest. The loop's writes come to this thread
                # meanwhile (and wait behind it): on the loop they would win every race for the lock against
                # SQLite's sleeping busy handler. It waits for readers briefly: writers wait while it does.
                self._restarting = True
                try:
                    conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}")
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")

        def done(_: asyncio.Future[None]) -> None:
            self._checkpointing = self._restarting = False

        loop.run_in_executor(writer, checkpoint).add_done_callback(done)

    def _transaction(self, conn: sqlite3.Connection, ops: list[_Op]) -> tuple[list[tuple[bool, Any]], int]:
        """Run ``ops`` in one transaction on ``conn``: (True, result) or (False, its exception) for each, and
        how many events were written.

        An op's own failure (a check, a duplicate, a caller's mistake) fails that op alone: it raised before
        writing, or its writes are rolled back to a savepoint. A database error (disk full, busy...) rolls the
        whole transaction back and propagates.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            tx = _Tx(conn, 0, self._clock())
            if len(ops) == 1:
                outcomes = [self._run_op(tx, ops[0], savepoint=False)]
                # alone and failed: whatever it wrote before failing goes too
                conn.execute("COMMIT" if outcomes[0][0] else "ROLLBACK")
            else:
                outcomes = self._run_batch(tx, ops)
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return outcomes, tx.appended

    def _run_op(self, tx: _Tx, op: _Op, *, savepoint: bool) -> tuple[bool, Any]:
        conn = tx.conn
        if savepoint:
            conn.execute("SAVEPOINT op")
        position, appended = tx.next_position, tx.appended
        try:
            result = op.run(tx)
        except _OP_ERRORS as exc:
            failure: BaseException = exc
        except _ARGUMENT_ERRORS as exc:
            failure = UsageError(
                f"SQLite event store {self.path}: {one_line(exc)}; an event is a NewEvent of str ids and types "
                "and bytes bodies"
            )
        else:
            if savepoint:
                conn.execute("RELEASE op")
            return True, result
        if savepoint:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        tx.next_position, tx.appended = position, appended
        return False, failure

    def _run_batch(self, tx: _Tx, ops: list[_Op]) -> list[tuple[bool, Any]]:
        """A group commit's ops, in order. The plain appends whose check passes (the common case) are written
        together: their streams' states come from one query, their rows go in one ``executemany``. The others
        (a failing check, a retry, a tombstone, ``append_many``, deletes, metadata) run one by one, after the
        plain rows before them are written, so that each sees what the ops before it did."""
        conn = tx.conn
        tx.next_position = conn.execute(_HEAD).fetchone()[0] + 1
        outcomes: list[tuple[bool, Any] | None] = [None] * len(ops)
        #: a stream's version as this transaction has it so far (-1: tombstoned), for the streams of plain appends
        versions: dict[str, int] = {}
        streams = list(dict.fromkeys(op.entry[0] for op in ops if op.entry is not None))
        if len(streams) > 1:
            for stream_id, hard, version in conn.execute(_STATES, (orjson.dumps(streams),)):
                versions[stream_id] = -1 if hard else version
        pending: list[tuple[int, AppendResult]] = []
        rows: list[tuple[Any, ...]] = []
        created: list[tuple[str, int]] = []

        def write_pending() -> None:
            if not pending:
                return
            first = pending[0][1].first_position
            conn.execute("SAVEPOINT plain")
            try:
                conn.executemany(_INSERT, rows)
                if created:
                    conn.executemany(_CREATED, created)
            except (sqlite3.IntegrityError, *_ARGUMENT_ERRORS):
                # one of them reuses an event id (a retry, a duplicate) or is malformed: one by one, so that it
                # alone fails (or gets its original result)
                conn.execute("ROLLBACK TO plain")
                conn.execute("RELEASE plain")
                tx.next_position = first
                versions.clear()
                for index, _ in pending:
                    outcomes[index] = self._run_op(tx, ops[index], savepoint=ops[index].savepoint)
            else:
                conn.execute("RELEASE plain")
                tx.appended += len(rows)
                for index, result in pending:
                    outcomes[index] = (True, result)
            pending.clear()
            rows.clear()
            created.clear()

        now = tx.now
        for index, op in enumerate(ops):
            if op.entry is not None:
                stream_id, events, expected = op.entry
                version = versions.get(stream_id)
                if version is None:
                    hard, version = conn.execute(_STATE, (stream_id,)).fetchone()
                    versions[stream_id] = version = -1 if hard else version
                if version >= 0 and expected_ok(expected, version):
                    count, position = len(events), tx.next_position
                    rows += [(position + i, stream_id, version + 1 + i, *e, now) for i, e in enumerate(events)]
                    if version == 0:
                        created.append((stream_id, count))
                    versions[stream_id] = version + count
                    tx.next_position = position + count
                    result = AppendResult(stream_id, version + 1, version + count, position, position + count - 1)
                    pending.append((index, result))
                    continue
            write_pending()
            outcomes[index] = self._run_op(tx, op, savepoint=op.savepoint)
            versions.clear()  # what it did is in the database now: read the states again
        write_pending()
        return [outcome for outcome in outcomes if outcome is not None]

    # -- writing --

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        check_append(stream_id, events, expected_version)
        # one stream: failure-atomic on its own (one statement, or a savepoint around a multi-row insert)
        run = partial(self._append_one, stream_id, events, expected_version)
        return await self._write(run, len(events), False, (stream_id, events, expected_version))

    async def append_many(
        self,
        appends: Sequence[tuple[str, Sequence[NewEvent], ExpectedVersion]],
        *,
        outbox: OutboxRows | None = None,
    ) -> list[AppendResult]:
        for stream_id, events, expected in appends:
            check_append(stream_id, events, expected)
        if not appends:
            return []
        entries = list(appends)
        count = sum(len(events) for _, events, _ in entries)
        savepoint = len(entries) > 1 or outbox is not None  # a later failure must undo the events written
        return await self._write(partial(self._append_entries, entries, outbox), count, savepoint)

    def _append_entries(self, entries: list[Entry], outbox: OutboxRows | None, tx: _Tx) -> list[AppendResult]:
        results = [self._append_one(stream_id, events, expected, tx) for stream_id, events, expected in entries]
        if outbox is not None:
            try:
                try:
                    outbox.write(tx.conn, create=False)
                except sqlite3.OperationalError as exc:
                    if "no such table" not in str(exc):
                        raise
                    # its first rows: created in this transaction (SQLite's failed statement left the rest intact)
                    outbox.write(tx.conn, create=True)
            except sqlite3.DatabaseError as exc:
                # this op fails alone (its events go with it), saying which table refused
                raise EventStoreError(f"{self._error(exc)} (writing to the outbox table {outbox.table})") from exc
        return results

    def _append_one(
        self, stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion, tx: _Tx
    ) -> AppendResult:
        conn = tx.conn
        if tx.next_position:
            hard, version = conn.execute(_STATE, (stream_id,)).fetchone()
        else:
            hard, version, head = conn.execute(_STATE_HEAD, (stream_id,)).fetchone()
            tx.next_position = head + 1
        if hard:
            raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it cannot be appended to")
        if not expected_ok(expected, version):
            # a retry is recognised before the check: the stream has moved on since the original append
            found = self._known(conn, stream_id, events)
            if found:
                return _judge_retry(stream_id, events, found)
            raise WrongExpectedVersion(stream_id, expected, version)
        position, count, now = tx.next_position, len(events), tx.now
        try:
            if count == 1:  # one statement: it fails whole, no savepoint needed
                conn.execute(_INSERT, (position, stream_id, version + 1, *events[0], now))
            else:
                conn.execute("SAVEPOINT entry")
                try:
                    conn.executemany(
                        _INSERT,
                        [(position + i, stream_id, version + 1 + i, *event, now) for i, event in enumerate(events)],
                    )
                except BaseException:
                    conn.execute("ROLLBACK TO entry")
                    conn.execute("RELEASE entry")
                    raise
                conn.execute("RELEASE entry")
        except sqlite3.IntegrityError as exc:
            # an event id already stored: under the write lock, the one unique key this insert can break
            found = self._known(conn, stream_id, events)
            if not found:  # a NOT NULL column given None
                raise UsageError(
                    f"stream {stream_id!r}: {one_line(exc)}; every field of a NewEvent is required"
                ) from exc
            return _judge_retry(stream_id, events, found)
        if version == 0:  # the stream's first events: its row (counted by stats(), kept after a scavenge)
            conn.execute(_CREATED, (stream_id, count))
        tx.next_position = position + count
        tx.appended += count
        return AppendResult(stream_id, version + 1, version + count, position, position + count - 1)

    @staticmethod
    def _known(conn: sqlite3.Connection, stream_id: str, events: Sequence[NewEvent]) -> dict[str, tuple[Any, ...]]:
        """The stored events whose ids this append reuses (an id twice in the append is a duplicate at once)."""
        ids = [event.event_id for event in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventError(f"stream {stream_id!r}: the same event id twice in one append")
        return {row[0]: row for row in conn.execute(_KNOWN, (orjson.dumps(ids),))}

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        for name, value in zip(metadata._fields, metadata, strict=True):
            if value is not None and value < 0:
                raise ValueError(f"stream {stream_id!r}: {name} cannot be negative ({value!r})")
        max_age, max_count, truncate_before = metadata

        def run(tx: _Tx) -> None:
            hard, _ = tx.conn.execute(_STATE, (stream_id,)).fetchone()
            if hard:
                raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): its metadata cannot be set")
            tx.conn.execute(
                "INSERT INTO tidings_streams (stream_id, max_age, max_count, truncate_before) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stream_id) DO UPDATE SET max_age = excluded.max_age, max_count = excluded.max_count, "
                "truncate_before = excluded.truncate_before",
                (
                    stream_id,
                    None if max_age is None else float(max_age),
                    None if max_count is None else int(max_count),
                    None if truncate_before is None else int(truncate_before),
                ),
            )

        await self._write(run, 0, False)

    async def delete_stream(self, stream_id: str, *, hard: bool = False) -> None:
        def run(tx: _Tx) -> None:
            tombstoned, version = tx.conn.execute(_STATE, (stream_id,)).fetchone()
            if tombstoned:
                if hard:
                    return  # deleted for good already: the retry of a hard delete is not an error
                raise StreamDeleted(f"stream {stream_id!r} was deleted (hard)")
            if hard:  # a tombstone, also for a stream that never existed: its name is taken for good
                tx.conn.execute(
                    "INSERT INTO tidings_streams (stream_id, version, hard_deleted) VALUES (?1, ?2, 1) "
                    "ON CONFLICT (stream_id) DO UPDATE SET version = ?2, hard_deleted = 1",
                    (stream_id, version),
                )
            elif version > 0:  # hidden up to its current version, independently of its metadata
                tx.conn.execute(
                    "INSERT INTO tidings_streams (stream_id, version, deleted_through) VALUES (?1, ?2, ?2) "
                    "ON CONFLICT (stream_id) DO UPDATE SET version = ?2, deleted_through = ?2",
                    (stream_id, version),
                )

        await self._write(run, 0, False)

    # -- reading --

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on the event loop's reader connection; on the maintenance thread if SQLite says busy."""
        conn = self._reader
        if conn is None:
            raise self._not_open()
        try:
            return read(conn)
        except sqlite3.Error as exc:
            if not is_busy(exc):
                raise self._error(exc) from exc
        return await self._on_maintenance(read)

    async def _on_maintenance(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop, maintenance, conn = self._loop, self._maintenance, self._maintenance_conn
        if loop is None or maintenance is None or conn is None:
            raise self._not_open()
        try:
            return await loop.run_in_executor(maintenance, work, conn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def read_stream(
        self, stream_id: str, *, from_version: int | None = None, backwards: bool = False, limit: int | None = None
    ) -> list[RecordedEvent]:
        check_read(limit)
        if backwards:
            sql, start = _READ_BACKWARDS, _END if from_version is None else from_version
        else:
            sql, start = _READ_FORWARDS, 1 if from_version is None else from_version
        params = (stream_id, start, self._clock(), -1 if limit is None else limit)

        def read(conn: sqlite3.Connection) -> list[RecordedEvent]:
            events = [] if limit == 0 else list(map(RecordedEvent._make, conn.execute(sql, params).fetchall()))
            if not events:  # a tombstoned stream reads nothing: say why
                self._check_tombstone(conn, stream_id, "read")
            return events

        return await self._read(read)

    @staticmethod
    def _check_tombstone(conn: sqlite3.Connection, stream_id: str, what: str) -> None:
        row = conn.execute(_METADATA, (stream_id,)).fetchone()
        if row is not None and row[0]:
            raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it cannot be {what}")

    async def read_all(
        self,
        *,
        from_position: int = 0,
        backwards: bool = False,
        limit: int = 1000,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        check_read(limit, event_types)
        if limit == 0 or (event_types is not None and not event_types):
            if not self._started:
                raise self._not_open()
            return []
        start = (from_position if from_position > 0 else _END) if backwards else from_position
        params: tuple[Any, ...]
        if event_types is None:
            sql, params = (_ALL_BACKWARDS if backwards else _ALL_FORWARDS), (start, limit)
        else:
            types = orjson.dumps(list(event_types))
            sql, params = (_ALL_BACKWARDS_TYPED if backwards else _ALL_FORWARDS_TYPED), (start, types, limit)
        return await self._read(lambda conn: list(map(RecordedEvent._make, conn.execute(sql, params).fetchall())))

    async def stream_version(self, stream_id: str) -> int:
        def read(conn: sqlite3.Connection) -> int:
            hard, version = conn.execute(_STATE, (stream_id,)).fetchone()
            if hard:
                raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it has no version")
            return int(version)

        return await self._read(read)

    async def stream_metadata(self, stream_id: str) -> StreamMetadata:
        def read(conn: sqlite3.Connection) -> StreamMetadata:
            row = conn.execute(_METADATA, (stream_id,)).fetchone()
            if row is None:
                return StreamMetadata()
            if row[0]:
                raise StreamDeleted(f"stream {stream_id!r} was deleted (hard): it has no metadata")
            return StreamMetadata(*row[1:])

        return await self._read(read)

    def subscribe(
        self, *, from_position: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        check_read(None, event_types)
        types = None if event_types is None else orjson.dumps(list(dict.fromkeys(event_types)))
        return self._subscription(from_position, types)

    def _page(self, conn: sqlite3.Connection, after: int, types: bytes | None) -> tuple[list[RecordedEvent], int]:
        """The next events of the log after ``after`` (of ``types``) and the position up to which it was read.

        Gapless by construction: a position is taken under the write lock and committed before the next one is,
        so every position up to a committed one is committed (or scavenged) too.
        """
        if types is None:
            rows = conn.execute(_ALL_FORWARDS, (after, self.page_size)).fetchall()
            return list(map(RecordedEvent._make, rows)), (rows[-1][2] if rows else after)
        end = conn.execute(_WINDOW_END, (after, max(self.page_size, _WINDOW))).fetchone()[0]
        if end is None:
            return [], after
        rows = conn.execute(_WINDOW_TYPED, (after, end, types)).fetchall()
        return list(map(RecordedEvent._make, rows)), end

    async def _subscription(self, after: int, types: bytes | None) -> AsyncIterator[RecordedEvent]:
        """Pages of the log while there are any, then a wait for the next commit; ends when the store closes."""
        if not self._started:
            raise self._not_open()
        loop = asyncio.get_running_loop()
        generation = self._generation
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            while self._started and self._generation == generation:
                # cleared before reading: a commit after the read sets it again, so the wait below cannot miss it
                waiter.clear()
                page, scanned = await self._read(partial(self._page, after=after, types=types))
                if scanned == after:
                    # other processes' commits wake nobody here: look again every poll_interval
                    timer = loop.call_later(self.poll_interval, waiter.set)
                    try:
                        await waiter.wait()
                    finally:
                        timer.cancel()
                    continue
                after = scanned  # past the events of other types too: they are not scanned again
                for event in page:
                    yield event
                    if not self._started or self._generation != generation:
                        return
        finally:
            self._waiters.discard(waiter)

    # -- maintenance --

    async def scavenge(self) -> int:
        if not self._started:
            raise self._not_open()
        removed = await self._on_maintenance(self._delete_given_up)
        await self._on_maintenance(self._give_space_back)
        return removed

    def _delete_given_up(self, conn: sqlite3.Connection) -> int:
        """Delete what retention, soft deletes and tombstones gave up, in one transaction; how many events."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the highest position handed out is kept, so that deleting the last events does not give it back
            conn.execute(
                "INSERT INTO tidings_positions (id, last_position) VALUES (1, (" + _HEAD + ")) "
                "ON CONFLICT (id) DO UPDATE SET last_position = excluded.last_position"
            )
            removed = conn.execute(
                "DELETE FROM tidings_events WHERE stream_id IN "
                "(SELECT stream_id FROM tidings_streams WHERE hard_deleted = 1)"
            ).rowcount
            now = self._clock()
            rows = conn.execute(
                "SELECT stream_id, version, deleted_through, max_age, max_count, truncate_before "
                "FROM tidings_streams WHERE hard_deleted = 0 AND (deleted_through > 0 OR max_age IS NOT NULL "
                "OR max_count IS NOT NULL OR truncate_before IS NOT NULL)"
            ).fetchall()
            for stream_id, floor, deleted_through, max_age, max_count, truncate_before in rows:
                _, version = conn.execute(_STATE, (stream_id,)).fetchone()
                first = max(deleted_through + 1, truncate_before or 1)
                if max_count is not None:
                    first = max(first, version - max_count + 1)
                cutoff = -1e308 if max_age is None else now - max_age
                gone = conn.execute(
                    "DELETE FROM tidings_events WHERE stream_id = ? AND (version < ? OR recorded_at <= ?)",
                    (stream_id, first, cutoff),
                ).rowcount
                if gone and version > floor:
                    # the version carries on even if every event of the stream is gone
                    conn.execute("UPDATE tidings_streams SET version = ? WHERE stream_id = ?", (version, stream_id))
                removed += gone
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return removed

    def _give_space_back(self, conn: sqlite3.Connection) -> None:
        """Shrink the file: free pages moved and truncated in short steps (or one VACUUM), then the WAL."""
        if conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL
                # each step its own short transaction: appends (waiting on the lock) go in between
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                while free > 0:
                    conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_STEP})").fetchall()
                    free, before = conn.execute("PRAGMA freelist_count").fetchone()[0], free
                    if free >= before:  # no progress (cannot happen, but never loop forever)
                        break
            else:
                conn.execute("VACUUM")
        # TRUNCATE: the WAL back to 0 bytes once every frame is in the database (it waits for readers)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def stats(self) -> StoreStats:
        if not self._started:
            raise self._not_open()

        def read(conn: sqlite3.Connection) -> StoreStats:
            streams, events, last_position = conn.execute(_STATS).fetchone()
            size = 0
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += os.path.getsize(self.path + suffix)
            return StoreStats(streams, events, last_position, size)

        # a count of the events reads a whole index: on the maintenance thread, not on the loop
        return await self._on_maintenance(read)


__all__ = ["SqliteEventStore"]
