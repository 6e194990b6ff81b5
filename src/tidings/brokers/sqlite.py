"""``sqlite:///path/to/events.db``: the embedded default broker, durable in one SQLite file (WAL) that the
processes of one machine share.

``sqlite:///events.db`` is relative to the working directory, ``sqlite:////var/lib/app/events.db`` absolute.
Query parameters (a keyword argument of the same name wins over the URL)::

    visibility_timeout=30     seconds a delivery may stay unsettled before it is handed out again
    retention_seconds=        delete messages older than this (default: keep)
    retention_count=          keep at most this many messages per channel (default: keep)
    prune_interval=10         seconds between automatic prunes (only when a retention is set)
    new_group_start=earliest  where a group seen for the first time starts: earliest | latest
    synchronous=normal        normal | full (see below)

The file holds five tables, all named ``tidings_*`` so that it may hold other things too::

    tidings_log           append-only: position (monotonic, never reused), channel, key, headers (JSON text),
                          body (BLOB), created_at
    tidings_channels      every channel name published, so a pattern resolves to names without a scan
    tidings_groups        one row per (group, channel pattern): its id and cursor, the last position taken
    tidings_leases        per message a group has taken and not yet settled: attempt, visible_at, owner, key
    tidings_dead_letters  messages given up on, with group, reason and attempts

What is guaranteed
------------------
*Delivery* is at least once. A *group* is a group name together with the channel (or pattern) it subscribed
to, and each group sees every message of its channel(s) once it exists; a group seen for the first time
starts at the earliest retained message (``new_group_start=latest``: at the end of the log). Members of
one group, in this process or another, share the work: a message is taken under a lease in a
``BEGIN IMMEDIATE`` transaction, so one member holds it at a time. A lease lasts ``visibility_timeout``
seconds: a delivery not settled by then (its process died, its handler hangs) is handed out again, with
``attempt`` + 1, to any member. ``ack()`` deletes the lease (never delivered to the group again), ``nack(delay)``
makes it visible again after ``delay``, ``dead_letter(reason)`` moves it to ``tidings_dead_letters``. Settling
is fenced by attempt: once a lease has expired *and* been handed out again, the late settle of the earlier
delivery is ignored (the newer delivery decides). ``ack()`` returns at once, like AMQP's ``basic.ack``: the
acks of one loop iteration are committed together just after, and closing the subscription waits for them
(a process killed in between has its message delivered again). A handler that raises nacks; one that returns without
settling acks.

*Ordering* (capability ``ordering``): within one group, the messages of one key are handed out one at a
time and in publish order, in every process: the next message of a key waits until the previous one is
acked or dead-lettered. A nack keeps the key's place (its later messages wait out the delay too). The one
way to see two deliveries of a key at once is a handler that outlives the visibility timeout: its message
is redelivered (still ahead of the key's later messages) while it runs; choose a timeout above your
slowest handler. Messages without a key are handed out oldest first, up to ``prefetch`` at once, and with
no ordering promise between them. The later messages of a busy key wait in the lease table, at most 1,024
per group: when that many wait, the group reads no further in the log until its busy keys move on (a slow
key can then delay the other keys, never reorder them).

*Retention* follows Kafka: messages older than ``retention_seconds`` (age counted in publish order) and
all but the newest ``retention_count`` of each channel are deleted by :meth:`SqliteBroker.prune` (called
every ``prune_interval`` seconds while the broker runs) whether or not every group has taken them. A group
that lags past the retention misses the deleted messages, and a pruned message waiting for redelivery is
not delivered again; deliveries already handed to a handler keep their copy. Dead letters are not pruned.

*Durability*: ``publish`` returns once the message is committed. ``synchronous=normal`` (the default)
does not fsync at each commit: in WAL mode a commit then survives any crash of the process (SIGKILL
included, the WAL is in the OS page cache) and the file is never corrupted, but an OS crash or a power
cut may roll back the last transactions. That is Kafka's own default trade (it acknowledges before the
page cache reaches the disk) and it is what makes several thousand commits a second possible;
``synchronous=full`` fsyncs every commit for machines that must survive a power cut.

How it runs
-----------
Every statement of a broker runs in one dedicated thread with one connection (``sqlite3`` connections
belong to one thread). The thread takes whatever is queued (publishes, claims, acks...) and runs it in
one transaction: concurrent publishes and settles share one commit, which is where the throughput comes
from; :meth:`SqliteBroker.publish_many` puts a whole batch in one. Each subscription polls for work with a
short adaptive sleep (1 ms doubling to 50 ms while idle), woken at once by the commits of its own broker
(commits of other processes are seen at the next poll); a busy one waits up to 2 ms for half its
``prefetch`` to be free before it takes more, so that one claim takes many messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson

from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ORIGIN,
    DURABLE,
    ORDERING,
    PATTERNS,
    Broker,
    BrokerError,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Subscription,
    channel_matcher,
    split_failure_details,
)
from tidings.dburl import sqlite_file
from tidings.errors import UsageError, describe_error, one_line
from tidings.redact import redact_url
from tidings.sqlite_wal import advice, is_database_wide, use_wal

logger = logging.getLogger("tidings.brokers.sqlite")

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tidings_log (
    -- AUTOINCREMENT: a position is never reused, even once retention has emptied the log (a reused
    -- position would sit behind a group's cursor and never be delivered)
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT NOT NULL,
    key        TEXT,
    headers    TEXT,
    created_at REAL NOT NULL,
    body       BLOB NOT NULL  -- last: a scan that skips a row never reads its overflow pages
);
CREATE INDEX IF NOT EXISTS tidings_log_channel ON tidings_log (channel, position);
CREATE TABLE IF NOT EXISTS tidings_channels (channel TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_groups (
    id      INTEGER PRIMARY KEY,
    grp     TEXT NOT NULL,
    pattern TEXT NOT NULL,
    cursor  INTEGER NOT NULL,
    UNIQUE (grp, pattern)
);
CREATE TABLE IF NOT EXISTS tidings_leases (
    group_id   INTEGER NOT NULL,  -- tidings_groups.id
    position   INTEGER NOT NULL,
    key        TEXT,
    attempt    INTEGER NOT NULL,  -- deliveries so far, 0 while a keyed message waits for its turn
    visible_at REAL NOT NULL,     -- 0: waiting (never handed out, or released), later than now: leased or delayed
    owner      TEXT,
    PRIMARY KEY (group_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tidings_leases_visible ON tidings_leases (group_id, visible_at);
CREATE INDEX IF NOT EXISTS tidings_leases_key ON tidings_leases (group_id, key, position) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS tidings_dead_letters (
    id         INTEGER PRIMARY KEY,
    grp        TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    position   INTEGER NOT NULL,
    channel    TEXT NOT NULL,
    key        TEXT,
    headers    TEXT,
    body       BLOB NOT NULL,
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    dead_at    REAL NOT NULL
);
"""

# Leases that are visible now (redeliveries, expired leases, keyed messages whose turn may have come), oldest
# first; a keyed one only if no older lease of its key is outstanding: that is the per-key ordering.
_SQL_VISIBLE = """
SELECT l.position, l.attempt, m.channel, m.key, m.headers, m.body
FROM tidings_leases AS l INDEXED BY tidings_leases_visible JOIN tidings_log AS m ON m.position = l.position
WHERE l.group_id = ? AND l.visible_at <= ?
  AND (l.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM tidings_leases AS o WHERE o.group_id = l.group_id AND o.key = l.key AND o.position < l.position))
ORDER BY l.position LIMIT ?
"""
_SQL_TAKE = (
    "UPDATE tidings_leases SET attempt = attempt + 1, visible_at = ?, owner = ? WHERE group_id = ? AND position = ?"
)
_SQL_LEASE = (
    "INSERT INTO tidings_leases (group_id, position, key, attempt, visible_at, owner) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_NEW_EXACT = (
    "SELECT position, channel, key, headers, body FROM tidings_log WHERE channel = ? AND position > ? "
    "ORDER BY position LIMIT ?"
)

#: how long a member sleeps when it found no work: from the first to the last value, doubling
_POLL_MIN, _POLL_MAX = 0.001, 0.05
#: how long a busy member may wait for half its prefetch to be free before it takes more (bigger claims)
_GATHER = 0.002
#: at most this many keyed messages wait in the lease table per group for their key's turn; past it, new
#: messages stay in the log (keeps a claim's cost bounded when one hot key is slow)
_MAX_WAITING = 1024
#: a pattern subscription scans at most this many log rows per claim (other channels' rows included)
_SCAN_WINDOW = 8192
#: at most this many queued operations share one transaction
_MAX_BATCH = 2048
_BUSY_TIMEOUT = 30.0

_Row = tuple[int, int, str, str | None, str | None, bytes]  # position, attempt, channel, key, headers, body


class _Settings(NamedTuple):
    path: str
    visibility_timeout: float
    retention_seconds: float | None
    retention_count: int | None
    prune_interval: float
    new_group_start: Literal["earliest", "latest"]
    synchronous: Literal["normal", "full"]


def _parse_url(url: str, overrides: Mapping[str, object]) -> _Settings:
    """Settings from ``sqlite:///path?param=value`` and keyword overrides; a clear UsageError otherwise."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise UsageError(f"not a sqlite broker URL: {shown!r}; use sqlite:///path/to/events.db")
    if parts.netloc:
        raise UsageError(
            f"a sqlite broker URL has no host: {shown!r}; use sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = sqlite_file(parts)
    if path is None:
        raise UsageError(
            f"the sqlite broker needs a file path, got {shown!r}: use sqlite:///events.db "
            "(for an in-process broker use memory://)"
        )
    given: dict[str, object] = dict(parse_qsl(parts.query, keep_blank_values=True))
    given.update({name: value for name, value in overrides.items() if value is not None})
    known = set(_Settings._fields) - {"path"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"unknown sqlite broker parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    def number(name: str, default: float | None, *, positive: bool, integer: bool = False) -> Any:
        value = given.get(name)
        if value is None or value == "":
            return default
        try:
            result = int(str(value)) if integer else float(str(value))
        except ValueError:
            raise UsageError(f"sqlite broker parameter {name}={value!r} is not a number") from None
        if not math.isfinite(result) or result < 0 or (positive and result == 0):
            raise UsageError(f"sqlite broker parameter {name}={value!r} must be {'> 0' if positive else '>= 0'}")
        return result

    def choice(name: str, options: tuple[str, ...]) -> Any:
        value = str(given.get(name) or options[0]).lower()
        if value not in options:
            raise UsageError(f"sqlite broker parameter {name}={value!r}: choose one of {', '.join(options)}")
        return value

    return _Settings(
        path=path,
        visibility_timeout=number("visibility_timeout", 30.0, positive=True),
        retention_seconds=number("retention_seconds", None, positive=False),
        retention_count=number("retention_count", None, positive=False, integer=True),
        prune_interval=number("prune_interval", 10.0, positive=True),
        new_group_start=choice("new_group_start", ("earliest", "latest")),
        synchronous=choice("synchronous", ("normal", "full")),
    )


class _Writer:
    """One thread and one connection that run every statement of a broker, queued work batched per transaction.

    Operations are plain functions of the connection. The thread takes all that is queued (up to
    :data:`_MAX_BATCH`) and runs it in one ``BEGIN IMMEDIATE`` transaction: many publishes and settles then
    cost one commit. If the batch fails, each operation is run again alone, so one bad operation fails
    only its own caller. Results go back to the event loop in one callback per batch.
    """

    def __init__(
        self,
        settings: _Settings,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[], None],
        on_rollback: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._on_commit = on_commit
        self._on_rollback = on_rollback
        self._queue: queue.SimpleQueue[tuple[_Op, asyncio.Future[Any], bool] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name="tidings-sqlite", daemon=True)
        self._thread.start()

    def call(self, op: _Op, *, wake: bool = False) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves after its transaction commits. ``wake``: wake local consumers."""
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:  # no operation may slip in behind the stop marker and wait forever
            if self._stopped:
                raise BrokerError("the sqlite broker is closed: use `async with broker:` or await broker.start()")
            self._queue.put((op, future, wake))
        return future

    async def stop(self) -> None:
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._queue.put(None)
        await asyncio.shield(self._done)

    # -- in the thread --

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._settings.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=True)
        try:
            mode = use_wal(conn, _BUSY_TIMEOUT)
            if mode != "wal":
                raise BrokerError(
                    f"could not put {self._settings.path} in WAL mode (got {mode}): is it on a network share?"
                )
            conn.execute(f"PRAGMA synchronous={self._settings.synchronous.upper()}")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise BrokerError(
                    f"{self._settings.path} holds tidings broker schema version {version}; this tidings reads "
                    f"version {_SCHEMA_VERSION}: upgrade tidings or use another file"
                )
            for statement in _SCHEMA.split(";"):  # (so no ";" inside the schema, comments included)
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        open_error: BaseException | None = None
        try:
            conn = self._connect()
        except Exception as exc:
            open_error = exc
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            work = [item for item in batch if item is not None]
            if not work:
                continue
            if conn is None:
                outcomes: list[tuple[Any, BaseException | None]] = [(None, open_error)] * len(work)
            else:
                outcomes = self._execute(conn, [op for op, _, _ in work])
            wake = any(w for _, _, w in work) and any(exc is None for _, exc in outcomes)
            self._post(
                [(future, result, exc) for (_, future, _), (result, exc) in zip(work, outcomes, strict=True)], wake
            )
        if conn is not None:
            conn.close()
        self._post_done()

    def _execute(self, conn: sqlite3.Connection, ops: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op(conn) for op in ops]
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._on_rollback()
            if len(ops) == 1 or is_database_wide(exc):
                # a lock held elsewhere, a full disk, an I/O error: no one operation is to blame, and running
                # each alone would wait out the busy timeout once per operation (minutes, with the writer
                # blocked for claims and acks meanwhile)
                return [(None, exc)] * len(ops)
            return [self._execute(conn, [op])[0] for op in ops]
        return [(result, None) for result in results]

    def _post(self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]], wake: bool) -> None:
        def resolve() -> None:
            for future, result, exc in outcomes:
                if future.done():  # the caller was cancelled; the work is done all the same
                    continue
                if exc is None:
                    future.set_result(result)
                else:
                    future.set_exception(exc)
            if wake:
                self._on_commit()

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(resolve)

    def _post_done(self) -> None:
        def done() -> None:
            if not self._done.done():
                self._done.set_result(None)
            while True:  # anything queued after the stop marker: fail it rather than leave it waiting
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None and not item[1].done():
                    item[1].set_exception(BrokerError("the sqlite broker was closed before this completed"))

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(done)


class _Group:
    """What a claim needs to know about one (group, pattern): read in the writer thread only."""

    __slots__ = ("exact", "group", "id", "matches", "pattern", "seen")

    def __init__(self, group: str, pattern: str, group_id: int) -> None:
        self.group = group
        self.pattern = pattern
        self.id = group_id
        self.exact = not any(c in pattern for c in "*#>")
        self.matches = channel_matcher(pattern)
        self.seen: dict[str, bool] = {}

    def channels(self, names: Iterable[str]) -> list[str]:
        out = []
        for name in names:
            hit = self.seen.get(name)
            if hit is None:
                hit = self.seen[name] = self.matches(name)
            if hit:
                out.append(name)
        return out


class SqliteDelivery(Delivery):
    __slots__ = ("_position", "_settled", "_subscription", "attempt", "message")

    def __init__(self, subscription: _SqliteSubscription, position: int, attempt: int, message: Message) -> None:
        self._subscription = subscription
        self._position = position
        self.attempt = attempt
        self.message = message
        self._settled = False

    async def ack(self) -> None:
        if self._settle():
            self._subscription._ack(self._position, self.attempt)

    async def nack(self, *, delay: float = 0.0) -> None:
        if self._settle():
            sub = self._subscription
            await sub._broker._writer_call(
                partial(sub._broker._nack, sub._group_id, self._position, self.attempt, max(0.0, delay)), wake=True
            )

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        if self._settle():
            sub = self._subscription
            await sub._broker._writer_call(
                partial(
                    sub._broker._dead_letter, sub._state, self._position, self.attempt, self.message, reason, details
                ),
                wake=True,
            )


def _read_dead_letters(conn: sqlite3.Connection) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT id, channel, body, headers, key, grp, reason, attempts FROM tidings_dead_letters ORDER BY id"
    ).fetchall()
    found = []
    for row_id, channel, body, headers, key, grp, reason, attempts in rows:
        original, details = split_failure_details(orjson.loads(headers) if headers else {})
        found.append(DeadLetter(Message(channel, body, original, key), grp, reason, attempts, details, str(row_id)))
    return found


def _ack(acks: list[tuple[int, int, int]], conn: sqlite3.Connection) -> None:
    # fenced by attempt: a late ack of a delivery whose lease expired and was handed out again changes nothing
    conn.executemany("DELETE FROM tidings_leases WHERE group_id = ? AND position = ? AND attempt = ?", acks)


def _release(group_id: int, leases: list[tuple[int, int]], conn: sqlite3.Connection) -> None:
    # claimed but never handed to the handler (the subscription closed meanwhile): as if never taken
    conn.executemany(
        "UPDATE tidings_leases SET attempt = attempt - 1, visible_at = 0, owner = NULL "
        "WHERE group_id = ? AND position = ? AND attempt = ?",
        [(group_id, position, attempt) for position, attempt in leases],
    )


class _SqliteSubscription(Subscription):
    """One member of a group: a claim loop that takes up to ``prefetch`` messages, and at most ``prefetch``
    workers that run the handler on them.

    Workers that live as long as the subscription (rather than a task per message), claims that wait a
    moment for half the prefetch to be free, and acks gathered per loop iteration (one statement for all
    acks made together) keep the per-message cost low.
    """

    def __init__(self, broker: SqliteBroker, state: _Group, handler: Handler, prefetch: int) -> None:
        self.channel = state.pattern
        self.group = state.group
        self._broker = broker
        self._state = state
        self._group_id = state.id
        self._handler = handler
        self._prefetch = prefetch
        self._half = max(1, prefetch // 2)
        #: taken under a lease, not yet given to a worker
        self._ready: deque[SqliteDelivery] = deque()
        #: taken and not yet finished (ready + being handled): never more than prefetch
        self._taken = 0
        self._workers: set[asyncio.Task[None]] = set()
        #: workers waiting for work
        self._idle: list[asyncio.Future[bool]] = []
        #: workers woken (or started) for ready work that have not run yet
        self._woken = 0
        #: acks queued in this loop iteration, and the writer operations of those flushed but not committed
        self._acks: list[tuple[int, int, int]] = []
        self._flushing: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(
            self._consume(), name=f"sqlite:{state.group}:{state.pattern}"
        )

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        idle = _POLL_MIN
        half = self._half
        while not self._closing:
            self._wake.clear()  # before the claim: a commit during it must not be missed
            if self._taken >= self._prefetch:
                await self._wake.wait()  # a worker finishing a message sets it
                continue
            if self._prefetch - self._taken < half:
                # busy: give the handlers a moment to free more slots, so that one claim takes many messages
                deadline = loop.time() + _GATHER
                while self._prefetch - self._taken < half and not self._closing and loop.time() < deadline:
                    timer = loop.call_later(deadline - loop.time(), self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
                    self._wake.clear()
            try:
                rows: list[_Row] = await self._broker._writer_call(
                    partial(self._broker._claim, self._state, self._prefetch - self._taken)
                )
            except BrokerError as exc:
                logger.warning("sqlite broker: could not take messages for group %r (%s); retrying", self.group, exc)
                rows = []
                idle = _POLL_MAX
            if rows:
                idle = _POLL_MIN
                self._taken += len(rows)
                parsed: tuple[str | None, dict[str, str]] = (None, {})
                for position, attempt, channel, key, headers, body in rows:
                    if headers != parsed[0]:  # most messages of a batch carry the same headers: parse once
                        parsed = (headers, orjson.loads(headers) if headers else {})
                    message = Message(channel, body, dict(parsed[1]), key)
                    self._ready.append(SqliteDelivery(self, position, attempt, message))
                if self._closing:
                    break  # close() gives them back
                self._dispatch(loop)
                continue
            timer = loop.call_later(idle, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            idle = min(idle * 2, _POLL_MAX)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure a worker is on its way to what is ready.

        Workers wake each other in a chain: one that takes a delivery while more are ready wakes one more
        (unless one is already on its way). Handlers that never wait are then all run by one worker with no
        task switch per message; handlers that wait spread over as many workers as there are deliveries.
        """
        if self._ready and not self._woken:
            self._wake_worker(loop)

    def _wake_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._idle:
            parked = self._idle.pop()
            if not parked.done():
                parked.set_result(True)
                self._woken += 1
                return
        if len(self._workers) < self._prefetch:
            worker = loop.create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
            self._woken += 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        self._woken -= 1  # started by _wake_worker, which counted it as on its way
        while not self._closing:
            if not self._ready:
                parked: asyncio.Future[bool] = loop.create_future()
                self._idle.append(parked)
                if await parked:  # True: woken for work; False: close()
                    self._woken -= 1
                continue
            delivery = self._ready.popleft()
            if self._ready and not self._woken:
                self._wake_worker(loop)
            try:
                await self._handle(delivery)
            finally:
                self._taken -= 1
                free = self._prefetch - self._taken
                # wake the claim loop only when what it waits for has just come true (one slot free after
                # being full, half of them free while it gathers), not once per message
                if free == 1 or free == self._half:
                    self._wake.set()

    async def _handle(self, delivery: SqliteDelivery) -> None:
        try:
            await self._handler(delivery)
        except Exception as exc:
            # a handler that raises has not processed the message: at-least-once means try again
            logger.warning(
                "handler for %r (group %r) raised %s; the message will be redelivered",
                delivery.message.channel,
                self.group,
                describe_error(exc),
            )
            settle: Callable[[], Awaitable[None]] = delivery.nack
        else:
            settle = delivery.ack  # the handler did not settle: treated as done, like an auto-ack consumer
        try:
            await settle()
        except BrokerError as exc:
            logger.warning(
                "could not settle a delivery of %r (group %r): %s; its lease will expire and it will be redelivered",
                delivery.message.channel,
                self.group,
                exc,
            )

    def _ack(self, position: int, attempt: int) -> None:
        """Queue an ack: the acks made in one loop iteration share one statement and one transaction.

        Not awaited, like AMQP's ``basic.ack`` or Kafka's asynchronous commit: waiting for the commit would
        hold a prefetch slot per message for a whole writer round trip. An ack that never commits (the
        process died first, the write failed) leaves the lease to expire: the message is delivered again,
        which at-least-once allows; :meth:`close` waits for every queued ack.
        """
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        self._acks.append((self._group_id, position, attempt))

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            done = self._broker._submit(partial(_ack, acks), wake=True)
        except BrokerError:
            logger.warning("sqlite broker: could not ack %d deliveries; they will be redelivered", len(acks))
            return
        self._flushing.add(done)
        done.add_done_callback(self._flushed)

    def _flushed(self, done: asyncio.Future[Any]) -> None:
        self._flushing.discard(done)
        if not done.cancelled() and done.exception() is not None:
            logger.warning(
                "sqlite broker: an ack of group %r failed (%s); its deliveries will be redelivered",
                self.group,
                done.exception(),
            )

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        await asyncio.shield(self._task)  # lets a claim in progress finish
        for parked in self._idle:
            if not parked.done():
                parked.set_result(False)
        self._idle.clear()
        if self._workers:  # each finishes the message it is handling, then stops
            await asyncio.gather(*list(self._workers), return_exceptions=True)
        self._flush_acks()  # nothing acknowledged is lost: every queued ack commits before close returns
        if self._flushing:
            await asyncio.gather(*list(self._flushing), return_exceptions=True)
        if self._ready:  # taken but never handed to the handler: give them back to the group
            leases = [(delivery._position, delivery.attempt) for delivery in self._ready]
            self._taken -= len(self._ready)
            self._ready.clear()
            with contextlib.suppress(BrokerError):
                await self._broker._writer_call(partial(_release, self._group_id, leases), wake=True)
        self._broker._subscriptions.discard(self)


class SqliteBroker(Broker):
    """The embedded default broker: see the module documentation for what it guarantees."""

    schemes = ("sqlite",)
    capabilities = frozenset({DURABLE, DELAYED_REDELIVERY, DEAD_LETTER, PATTERNS, ORDERING})

    def __init__(
        self,
        url: str,
        *,
        visibility_timeout: float | None = None,
        retention_seconds: float | None = None,
        retention_count: int | None = None,
        prune_interval: float | None = None,
        new_group_start: Literal["earliest", "latest"] | None = None,
        synchronous: Literal["normal", "full"] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` gives wall-clock seconds (shared by all processes: leases and ages are compared across
        them); tests pass a fake one to expire leases and age messages without waiting."""
        self._url = url
        self._settings = _parse_url(
            url,
            {
                "visibility_timeout": visibility_timeout,
                "retention_seconds": retention_seconds,
                "retention_count": retention_count,
                "prune_interval": prune_interval,
                "new_group_start": new_group_start,
                "synchronous": synchronous,
            },
        )
        self._clock = clock
        #: identifies this broker's leases in the file (for whoever inspects it)
        self._owner = uuid.uuid4().hex
        self._writer: _Writer | None = None
        self._subscriptions: set[_SqliteSubscription] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._known_channels: set[str] = set()  # writer thread only
        #: the last headers encoded, and their JSON text (publish reuses it while they repeat)
        self._last_headers: tuple[dict[str, str] | None, str | None] = (None, None)

    @property
    def url(self) -> str:
        return redact_url(self._url)

    @property
    def path(self) -> str:
        """The database file."""
        return self._settings.path

    @property
    def visibility_timeout(self) -> float:
        return self._settings.visibility_timeout

    async def start(self) -> None:
        if self._writer is not None:
            return
        loop = asyncio.get_running_loop()
        self._known_channels = set()
        writer = _Writer(self._settings, loop, self._wake_all, self._known_channels.clear)
        self._writer = writer
        try:
            await self._writer_call(lambda conn: None)  # surfaces an unopenable file here, not at first publish
        except BaseException:
            self._writer = None
            await writer.stop()
            raise
        if self._settings.retention_seconds is not None or self._settings.retention_count is not None:
            self._pruner = loop.create_task(self._prune_periodically(), name="sqlite:prune")

    async def close(self) -> None:
        if self._writer is None:
            return
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        # subscriptions first: their in-flight handlers still need the writer to settle
        for subscription in list(self._subscriptions):
            await subscription.close()
        writer, self._writer = self._writer, None
        await writer.stop()

    async def publish(self, message: Message) -> None:
        await self._writer_call(partial(self._append, [self._row(message)]), wake=True)

    async def publish_many(self, messages: Iterable[Message]) -> None:
        """Publish ``messages`` in one transaction, in order: all are committed, or none (and it raises)."""
        rows = [self._row(message) for message in messages]
        if rows:
            await self._writer_call(partial(self._append, rows), wake=True)

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        if not channel or not group:
            raise UsageError("subscribe needs a channel (or pattern) and a group name")
        group_id = await self._writer_call(partial(self._join, group, channel))
        subscription = _SqliteSubscription(self, _Group(group, channel, group_id), handler, max(1, prefetch))
        self._subscriptions.add(subscription)
        return subscription

    async def dead_letters(self) -> list[DeadLetter]:
        dead: list[DeadLetter] = await self._writer_call(_read_dead_letters)
        return dead

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        # one transaction: a replayed message is in the log exactly when it is gone from the dead letters
        def settle(conn: sqlite3.Connection) -> list[DeadLetter]:
            chosen = [dead for dead in _read_dead_letters(conn) if select(dead)]
            if replay and chosen:
                self._append([self._row(dead.message) for dead in chosen], conn)
            conn.executemany("DELETE FROM tidings_dead_letters WHERE id = ?", [(int(dead.id),) for dead in chosen])
            return chosen

        chosen: list[DeadLetter] = await self._writer_call(settle, wake=replay)
        if progress is not None and chosen:
            progress(len(chosen))
        return len(chosen)

    async def prune(self) -> int:
        """Apply the retention now; returns how many messages were deleted (see the module documentation)."""
        deleted: int = await self._writer_call(self._prune)
        return deleted

    # -- on the event loop --

    def _submit(self, op: _Op, *, wake: bool = False) -> asyncio.Future[Any]:
        if self._writer is None:
            raise BrokerError("the sqlite broker is not started: use `async with broker:` or await broker.start()")
        return self._writer.call(op, wake=wake)

    async def _translated(self, result: Awaitable[T]) -> T:
        try:
            return await result
        except sqlite3.Error as exc:  # the one place where sqlite3 errors become tidings errors
            detail = f"{one_line(exc)}; {advice(exc, _BUSY_TIMEOUT)}"
            raise BrokerError(f"sqlite broker {self._settings.path}: {detail}") from exc

    async def _writer_call(self, op: _Op, *, wake: bool = False) -> Any:
        return await self._translated(self._submit(op, wake=wake))

    def _wake_all(self) -> None:
        for subscription in self._subscriptions:
            subscription._wake.set()

    def _row(self, message: Message) -> tuple[str, str | None, str | None, bytes]:
        if not isinstance(message.body, bytes | bytearray | memoryview):
            raise UsageError(f"a message body is bytes, not {type(message.body).__name__}")
        if not message.headers:
            headers = None
        elif message.headers == self._last_headers[0]:  # most messages carry the same headers as the last
            headers = self._last_headers[1]
        else:
            try:
                headers = orjson.dumps(dict(message.headers)).decode()
            except (TypeError, ValueError) as exc:
                raise UsageError(f"message headers must map str to str (valid Unicode): {exc}") from exc
            self._last_headers = (dict(message.headers), headers)
        return message.channel, message.key, headers, bytes(message.body)

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.prune_interval)
            try:
                await self.prune()
            except BrokerError as exc:
                logger.warning("sqlite broker: pruning failed (%s); will try again", exc)

    # -- in the writer thread --

    def _append(self, rows: list[tuple[str, str | None, str | None, bytes]], conn: sqlite3.Connection) -> None:
        new = {row[0] for row in rows} - self._known_channels
        if new:
            conn.executemany("INSERT OR IGNORE INTO tidings_channels (channel) VALUES (?)", [(c,) for c in new])
            self._known_channels.update(new)  # cleared on rollback (see _Writer)
        now = self._clock()
        conn.executemany(
            "INSERT INTO tidings_log (channel, key, headers, created_at, body) VALUES (?, ?, ?, ?, ?)",
            [(channel, key, headers, now, body) for channel, key, headers, body in rows],
        )

    def _join(self, group: str, pattern: str, conn: sqlite3.Connection) -> int:
        if self._settings.new_group_start == "latest":
            start = conn.execute("SELECT coalesce(max(position), 0) FROM tidings_log").fetchone()[0]
        else:
            start = 0  # positions start at 1; pruned ones are simply absent
        conn.execute(
            "INSERT OR IGNORE INTO tidings_groups (grp, pattern, cursor) VALUES (?, ?, ?)", (group, pattern, start)
        )
        group_id: int = conn.execute(
            "SELECT id FROM tidings_groups WHERE grp = ? AND pattern = ?", (group, pattern)
        ).fetchone()[0]
        return group_id

    def _claim(self, state: _Group, limit: int, conn: sqlite3.Connection) -> list[_Row]:
        """Take up to ``limit`` messages for ``state``'s group under a lease; runs inside BEGIN IMMEDIATE."""
        now = self._clock()
        until = now + self._settings.visibility_timeout
        owner = self._owner
        out: list[_Row] = []
        # 1. what is visible again: nacked, expired, or a keyed message whose turn has come
        visible = conn.execute(_SQL_VISIBLE, (state.id, now, limit)).fetchall()
        if visible:
            conn.executemany(_SQL_TAKE, [(until, owner, state.id, row[0]) for row in visible])
            out = [
                (pos, attempt + 1, channel, key, headers, body) for pos, attempt, channel, key, headers, body in visible
            ]
        room = limit - len(out)
        if room <= 0:
            return out
        waiting = conn.execute(
            "SELECT count(*) FROM tidings_leases WHERE group_id = ? AND visible_at = 0", (state.id,)
        ).fetchone()[0]
        if waiting >= _MAX_WAITING:
            return out
        # 2. new messages from the log, after the group's cursor
        cursor = conn.execute("SELECT cursor FROM tidings_groups WHERE id = ?", (state.id,)).fetchone()[0]
        last = conn.execute("SELECT max(position) FROM tidings_log").fetchone()[0]
        if last is None or last <= cursor:
            return out
        if state.exact:
            new = conn.execute(_SQL_NEW_EXACT, (state.pattern, cursor, room)).fetchall()
            end = last
        else:
            names = state.channels(row[0] for row in conn.execute("SELECT channel FROM tidings_channels"))
            end = min(last, cursor + _SCAN_WINDOW)
            if names:
                # `+channel`: scan the log in position order from the cursor instead of the channel index, which
                # would read every matching row of the window before sorting
                new = conn.execute(
                    "SELECT position, channel, key, headers, body FROM tidings_log WHERE position > ? AND position <= ?"
                    f" AND +channel IN ({','.join('?' * len(names))}) ORDER BY position LIMIT ?",
                    (cursor, end, *names, room),
                ).fetchall()
            else:
                new = []
        # the cursor passes everything scanned; in this write transaction nothing can appear behind it
        cursor = new[-1][0] if len(new) == room else end
        conn.execute("UPDATE tidings_groups SET cursor = ? WHERE id = ?", (cursor, state.id))
        if not new:
            return out
        keys = {row[2] for row in new if row[2] is not None}
        busy: set[str] = set()
        if keys:
            # a key with an outstanding lease (in flight, delayed or waiting) keeps its later messages waiting
            busy = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT key FROM tidings_leases WHERE group_id = ? "
                    f"AND key IN ({','.join('?' * len(keys))})",
                    (state.id, *keys),
                )
            }
        leases: list[tuple[int, int, str | None, int, float, str | None]] = []
        for position, channel, key, headers, body in new:
            if key is not None and key in busy:
                leases.append((state.id, position, key, 0, 0.0, None))
                continue
            if key is not None:
                busy.add(key)
            leases.append((state.id, position, key, 1, until, owner))
            out.append((position, 1, channel, key, headers, body))
        conn.executemany(_SQL_LEASE, leases)
        return out

    def _nack(self, group_id: int, position: int, attempt: int, delay: float, conn: sqlite3.Connection) -> None:
        # a delay of 0 still stores a time, not 0: 0 marks a message never handed out (see the lease table)
        conn.execute(
            "UPDATE tidings_leases SET visible_at = ?, owner = NULL "
            "WHERE group_id = ? AND position = ? AND attempt = ?",
            (self._clock() + delay, group_id, position, attempt),
        )

    def _dead_letter(
        self,
        state: _Group,
        position: int,
        attempt: int,
        message: Message,
        reason: str,
        details: Mapping[str, str] | None,
        conn: sqlite3.Connection,
    ) -> None:
        held = conn.execute(
            "DELETE FROM tidings_leases WHERE group_id = ? AND position = ? AND attempt = ?",
            (state.id, position, attempt),
        ).rowcount
        if not held:  # the lease expired and went to another member, which now decides
            return
        # the failure's fields ride with the original headers (split again on reading): no schema change
        stored = {**message.headers, **(details or {}), DL_ORIGIN: f"sqlite:{state.group}@{position}"}
        headers = orjson.dumps(stored).decode()
        conn.execute(
            "INSERT INTO tidings_dead_letters (grp, pattern, position, channel, key, headers, body, reason, attempts, "
            "dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                state.group,
                state.pattern,
                position,
                message.channel,
                message.key,
                headers,
                message.body,
                reason,
                attempt,
                self._clock(),
            ),
        )

    def _prune(self, conn: sqlite3.Connection) -> int:
        deleted = 0
        settings = self._settings
        if settings.retention_seconds is not None:
            # the log is in publish order: read from the oldest until the first young message (O(deleted rows))
            cutoff = self._clock() - settings.retention_seconds
            first_kept = conn.execute(
                "SELECT position FROM tidings_log WHERE created_at >= ? ORDER BY position LIMIT 1", (cutoff,)
            ).fetchone()
            if first_kept is None:
                deleted += conn.execute("DELETE FROM tidings_log").rowcount
            else:
                deleted += conn.execute("DELETE FROM tidings_log WHERE position < ?", first_kept).rowcount
        if settings.retention_count is not None:
            for (channel,) in conn.execute("SELECT channel FROM tidings_channels").fetchall():
                newest_dropped = conn.execute(
                    "SELECT position FROM tidings_log WHERE channel = ? ORDER BY position DESC LIMIT 1 OFFSET ?",
                    (channel, settings.retention_count),
                ).fetchone()
                if newest_dropped is not None:
                    deleted += conn.execute(
                        "DELETE FROM tidings_log WHERE channel = ? AND position <= ?", (channel, newest_dropped[0])
                    ).rowcount
        if deleted:
            # leases of deleted messages: nothing left to redeliver (a handler holding one keeps its copy)
            conn.execute(
                "DELETE FROM tidings_leases WHERE NOT EXISTS "
                "(SELECT 1 FROM tidings_log AS m WHERE m.position = tidings_leases.position)"
            )
        return deleted


__all__ = ["SqliteBroker", "SqliteDelivery"]
