"""The event store on PostgreSQL (psycopg 3, async): many processes, many machines, one log.

::

    async with PostgresEventStore("postgresql://app@db/app", schema="orders") as store:
        placed = NewEvent(str(uuid4()), "OrderPlaced", b'{"total": 12}')
        await store.append("order-42", [placed], expected_version=NO_STREAM)
        async for event in store.subscribe(from_position=checkpoint):
            ...

Tables (in ``schema``, created by :meth:`PostgresEventStore.start`):

``events``
    one row per event: ``position`` (the primary key: the log), ``stream_id`` and ``version`` (unique
    together: the streams), ``event_id`` (unique: idempotency), ``event_type``, ``schema_version``, ``data`` and
    ``metadata`` (``bytea``, never parsed), ``recorded_at`` (seconds since the epoch, the server's clock).
``streams``
    one row per stream: its ``version``, ``deleted_before`` (soft delete: the version it was deleted at),
    ``hard_deleted`` (the tombstone, kept after a scavenge so that the stream stays deleted) and its retention
    (``max_age``, ``max_count``, ``truncate_before``).
``log``
    one row: the last position handed out.

No gaps in the log
------------------
A reader of the log that has seen position P must never later meet an unseen event at or below P. A sequence
does not give that: it hands numbers out when rows are inserted, transactions commit in another order, so a
reader may see 11 committed while 10 is still in flight, move its checkpoint to 11, and never see 10.

Two designs are known to be safe. One, found in several PostgreSQL event stores and outboxes, stores the writing
transaction's id with each event and lets readers see only transactions older than the oldest one still running
(``pg_snapshot_xmin(pg_current_snapshot())``). It lets writers commit in parallel, but a transaction's id is
taken when it first writes, not when it commits, so readers must order the log by (transaction id, sequence)
rather than by a single position, and every reader stalls behind any long transaction on the server, even one
that never touches the events. The port promises one ``position`` counting up in commit order, so this module
takes the other design:

    **positions are handed out under a lock held until commit.** An append takes the next positions by updating
    the one row of ``log`` (``UPDATE log SET last_position = last_position + n``): the row lock is held until the
    transaction ends, and PostgreSQL makes a transaction's writes visible *before* it releases its locks. So the
    next writer can only number its events once the previous one is visible, every position is committed (and
    visible to new snapshots) in order, and what any reader sees is always a prefix of the log. Positions are
    contiguous too (a rolled-back append gives its numbers back), unlike a sequence's.

The price is that commits of the whole store are serialised, from the counter update to the end of the commit
(WAL flush included). Three things keep that window short and the commits few:

- **one statement**: a batch of appends is one call of the PL/pgSQL function ``append_batch_v1`` (created by
  :meth:`~PostgresEventStore.start`), its own transaction (the connections are in autocommit mode): it takes the
  streams' locks, reads them, checks every append, writes and notifies in one round trip. The counter is updated
  after the checks, so the lock covers only the inserts and the commit, never a round trip to the client. A batch
  of one append (a lone appender's) is one plain statement instead (``append_one``: the lock, an upsert of the
  stream's row that checks the expected version on its newest version, the counter, the events, the NOTIFY),
  prepared once with its generic plan kept on the group commit's own connection: planned at each call, or run
  through PL/pgSQL, it took more than twice as long. When its check fails it writes nothing and the function
  says how;
- **group commit**: the appends made concurrently in one process wait for the batch in flight and then go
  together in the next (one statement, one ``INSERT ... SELECT FROM unnest(arrays)`` for all their events, one
  WAL flush). Each keeps its own outcome: every append is checked before anything is written, so one append's
  :class:`WrongExpectedVersion` does not fail the others of its batch; an :meth:`append_many` is one unit of the
  batch, all or nothing;
- the arrays go to the server in binary (psycopg's text format escapes every element in Python).

When an event id of the batch is already in the store (a retry after a timeout, a duplicate), the function writes
nothing and the batch takes the **checked path**: a transaction of two round trips (pipeline mode) that locks the
streams and reads them with the events holding those ids, decides in Python (:func:`_plan`: the original result
of a retry, :class:`DuplicateEventError`...), then writes as the function does. So does a batch whose insert hit
the unique index on ``event_id`` (another process appended the same id to another stream between the check and
the insert: the statement was rolled back). An ``append_many`` carrying outbox rows (``outbox=``, what a
:class:`~tidings.eventstore.aggregate.Repository` with an outbox saves through) is a batch of its own on the
checked path, the rows inserted in its transaction once its checks have passed.

Consistency of a stream: writers of a stream take a transaction-level advisory lock keyed by a hash of (schema,
stream), in key order (no deadlocks), so the check of ``expected_version`` and the write are atomic; the unique
(stream_id, version) index backs it. Deleting a stream and setting its metadata take the same lock.

Reading
-------
``read_all`` and :meth:`~PostgresEventStore.subscribe` read ``events`` by position (results in binary); nothing
else is needed for gaplessness (see above). A subscription reads history in pages, then ``LISTEN``\\s on its
own connection: every append ``NOTIFY``\\s in its transaction (so the notification comes after the commit), and
on each one the subscriber reads again from its last position; it also polls every ``poll_interval`` seconds in
case a notification was lost (a dropped connection), reconnecting its listener if needed. Any number of
processes may append and subscribe. A filter on event types is applied while scanning the log (there is no index
on ``event_type``: it would slow every append down for the sake of rare filtered readers).

Retention and deletion: a stream's metadata hides its events from ``read_stream`` at once; :meth:`scavenge`
deletes those events, the soft-deleted ones and the hard-deleted streams' from ``events`` (until then they stay
in the log, as in KurrentDB) and then runs ``VACUUM`` on it (``vacuum=False``: leave that to autovacuum), which
makes the space reusable by PostgreSQL; the file itself shrinks only with ``VACUUM FULL``, which locks the table
and is left to the operator.

Errors are :class:`~tidings.eventstore.base.EventStoreError` on one line, the DSN's password masked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import importlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tidings.errors import UsageError, one_line
from tidings.eventstore.base import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
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
from tidings.pgpool import ConnectionPool
from tidings.redact import redact_url

if TYPE_CHECKING:
    import psycopg

    from tidings.reliability.outbox import OutboxRows

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

#: the log positions a type-filtered subscription scans per read
_WINDOW = 5000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
#: a batch of the group commit holds at most this many events (an append bigger than that goes alone)
_BATCH_EVENTS = 5000
#: ... and at most this many appends
_BATCH_APPENDS = 500
#: a batch whose insert met a unique violation (another process appended the same event id since the check) or
#: a deadlock is checked again from scratch, at most this many times
_RETRIES = 5
#: expected_version as the function append_batch takes it (an exact version is itself, >= 0)
_EXPECTED_CODES: dict[str, int] = {ANY: -1, NO_STREAM: -2, STREAM_EXISTS: -3}
#: what append_batch says of each append
_FAST_APPENDED, _FAST_WRONG_VERSION, _FAST_DELETED, _FAST_NOT_TRIED, _FAST_KNOWN_ID = 0, 1, 2, 3, 4
_EVENT_COLUMNS = "stream_id, version, position, event_id, event_type, schema_version, data, metadata, recorded_at"


class _Stream:
    """A stream's row as a batch sees it (and changes it, before writing)."""

    __slots__ = ("deleted_before", "hard_deleted", "version")

    def __init__(self, version: int = 0, deleted_before: int = 0, hard_deleted: bool = False) -> None:
        self.version = version
        self.deleted_before = deleted_before
        self.hard_deleted = hard_deleted


class _Existing(NamedTuple):
    """An event already in the store (or written earlier in the same batch) whose id an append reuses."""

    stream_id: str
    version: int
    #: the position, or for an event of this batch its offset in the batch (``batch``)
    position: int
    event_type: str
    schema_version: str
    data: bytes
    metadata: bytes
    batch: bool


@dataclass
class _Unit:
    """What one call (``append``: one append, ``append_many``: several) gives the group commit: all or none."""

    appends: list[tuple[str, Sequence[NewEvent], ExpectedVersion]]
    future: asyncio.Future[list[AppendResult]]
    events: int = 0
    #: rows for the outbox, written in the unit's transaction (such a unit is a batch of its own)
    outbox: OutboxRows | None = None


@dataclass
class _Plan:
    """A batch once checked: the rows to write, and each unit's outcome (results with offsets, or an error)."""

    event_rows: list[tuple[str, int, NewEvent]] = field(default_factory=list)
    stream_versions: dict[str, int] = field(default_factory=dict)
    #: per unit: an error, or per append (stream, first version, last version, first pos, last pos, relative)
    outcomes: list[EventStoreError | list[tuple[str, int, int, int, int, bool]]] = field(default_factory=list)


def _deleted(stream_id: str, what: str = "") -> StreamDeleted:
    return StreamDeleted(f"stream {stream_id!r} was deleted for good{what}")


def _check_expected(stream_id: str, expected: ExpectedVersion, stream: _Stream) -> None:
    """Raise :class:`WrongExpectedVersion` unless ``stream`` is where ``expected`` says."""
    if not expected_ok(expected, stream.version):
        raise WrongExpectedVersion(stream_id, expected, stream.version)


def _replayed(
    stream_id: str, events: Sequence[NewEvent], found: list[_Existing | None]
) -> tuple[str, int, int, int, int, bool]:
    """The original result of an append made again (same ids, order and content, in the same stream), or
    :class:`DuplicateEventError`."""
    first, last = judge_retry(stream_id, events, found)
    if any(existing is not None and existing.batch != first.batch for existing in found):
        raise DuplicateEventError(
            f"stream {stream_id!r}: these event ids were appended partly in this batch, partly before"
        )
    return (stream_id, first.version, last.version, first.position, last.position, first.batch)


def _plan(units: Sequence[_Unit], streams: dict[str, _Stream], existing: dict[str, _Existing]) -> _Plan:
    """Check every unit of a batch, in order, against the streams as the earlier units of the batch leave them;
    pure (no I/O), so a unit that fails leaves nothing behind and the others go on."""
    plan = _Plan()
    for unit in units:
        working: dict[str, _Stream] = {}
        rows: list[tuple[str, int, NewEvent]] = []
        written: dict[str, _Existing] = {}
        results: list[tuple[str, int, int, int, int, bool]] = []
        try:
            for stream_id, events, expected in unit.appends:
                stream = working.get(stream_id)
                if stream is None:
                    base = streams.get(stream_id) or _Stream()
                    stream = working[stream_id] = _Stream(base.version, base.deleted_before, base.hard_deleted)
                if stream.hard_deleted:
                    raise _deleted(stream_id, ": it cannot be appended to")
                ids = [e.event_id for e in events]
                if len(set(ids)) != len(ids):
                    raise DuplicateEventError(f"stream {stream_id!r}: the same event id twice in one append")
                found = [written.get(i) or existing.get(i) for i in ids]
                if events and any(f is not None for f in found):
                    results.append(_replayed(stream_id, events, found))
                    continue
                _check_expected(stream_id, expected, stream)
                offset = len(plan.event_rows) + len(rows)
                for i, event in enumerate(events):
                    version = stream.version + 1 + i
                    rows.append((stream_id, version, event))
                    written[event.event_id] = _Existing(
                        stream_id,
                        version,
                        offset + i + 1,
                        event.event_type,
                        event.schema_version,
                        event.data,
                        event.metadata,
                        True,
                    )
                n = len(events)
                results.append((stream_id, stream.version + 1, stream.version + n, offset + 1, offset + n, True))
                stream.version += n
        except EventStoreError as exc:
            plan.outcomes.append(exc)
            continue
        plan.outcomes.append(results)
        plan.event_rows.extend(rows)
        existing.update(written)
        for stream_id, stream in working.items():
            if stream.version != (streams.get(stream_id) or _Stream()).version:
                plan.stream_versions[stream_id] = stream.version
            streams[stream_id] = stream
    return plan


# The fast path of an append (see PostgresEventStore._write_fast): a whole group-commit batch in one statement.
# In PL/pgSQL (a volatile function) every statement takes a new snapshot, so the reads after the locks see what
# the previous holder of a lock committed. The two lookups by key run through EXECUTE, planned at each call with
# the actual arrays: PL/pgSQL caches a generic plan for its static statements, and one made while a table was
# small (a sequential scan) would stay as the table grows, until the next ANALYZE; the other statements have no
# such choice to make, and keep their cached plans (planning every statement would cost a third of the speed).
_APPEND_BATCH = """
CREATE OR REPLACE FUNCTION {append_batch}(
    locks bigint[], units int[], stream_ids text[], expected int[], counts int[], event_append int[],
    event_offset int[], ids text[], types text[], schema_versions text[], datas bytea[], metas bytea[],
    now_ float8, channel text
) RETURNS TABLE (out_status int, out_version int, out_position bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
#variable_conflict use_column
DECLARE
    n_app int := cardinality(stream_ids);
    statuses int[] := array_fill(0, ARRAY[n_app]);
    versions int[] := array_fill(0, ARRAY[n_app]);
    positions bigint[] := array_fill(0::bigint, ARRAY[n_app]);
    kept boolean[] := array_fill(false, ARRAY[n_app]);
    known_names text[];
    known_versions int[];
    known_hard boolean[];
    unit_names text[];
    unit_versions int[];
    changed_names text[] := '{{}}';
    changed_versions int[] := '{{}}';
    i int := 1;
    j int;
    k int;
    last int;
    failed int;
    cur int;
    idx int;
    ok boolean;
    written int := 0;
    base bigint;
    stamp float8;
    found boolean;
BEGIN
    -- 0 appended, 1 wrong expected version (out_version: the actual one), 2 stream deleted, 3 not tried (another
    -- append of its unit failed), 4 an event id is already in the store: nothing written, the caller decides
    PERFORM pg_advisory_xact_lock(key) FROM unnest(locks) AS key;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM {events} AS e WHERE e.event_id = ANY($1))' INTO found USING ids;
    IF found THEN
        RETURN QUERY SELECT 4, 0, 0::bigint FROM generate_series(1, n_app);
        RETURN;
    END IF;
    EXECUTE 'SELECT coalesce(array_agg(s.stream_id), ''{{}}''), coalesce(array_agg(s.version), ''{{}}''), '
            'coalesce(array_agg(s.hard_deleted), ''{{}}'') FROM {streams} AS s WHERE s.stream_id = ANY($1)'
       INTO known_names, known_versions, known_hard USING stream_ids;
    -- unit by unit (the appends of a unit are consecutive): all of a unit's appends, or none
    WHILE i <= n_app LOOP
        last := i;
        WHILE last < n_app AND units[last + 1] = units[i] LOOP
            last := last + 1;
        END LOOP;
        unit_names := '{{}}';
        unit_versions := '{{}}';
        failed := 0;
        FOR j IN i..last LOOP
            idx := array_position(unit_names, stream_ids[j]);
            IF idx IS NOT NULL THEN
                cur := unit_versions[idx];
            ELSE
                idx := array_position(known_names, stream_ids[j]);
                IF idx IS NOT NULL AND known_hard[idx] THEN
                    statuses[j] := 2;
                    failed := j;
                    EXIT;
                END IF;
                cur := CASE WHEN idx IS NULL THEN 0 ELSE known_versions[idx] END;
            END IF;
            -- -1 any, -2 no stream, -3 stream exists (a soft-deleted stream exists), else the exact version
            ok := CASE expected[j] WHEN -1 THEN true WHEN -2 THEN cur = 0 WHEN -3 THEN cur > 0
                  ELSE cur = expected[j] END;
            IF NOT ok THEN
                statuses[j] := 1;
                versions[j] := cur;
                failed := j;
                EXIT;
            END IF;
            versions[j] := cur + 1;
            idx := array_position(unit_names, stream_ids[j]);
            IF idx IS NULL THEN
                unit_names := unit_names || stream_ids[j];
                unit_versions := unit_versions || (cur + counts[j]);
            ELSE
                unit_versions[idx] := cur + counts[j];
            END IF;
        END LOOP;
        IF failed > 0 THEN
            FOR j IN i..last LOOP
                IF j <> failed THEN
                    statuses[j] := 3;
                END IF;
            END LOOP;
        ELSE
            FOR j IN i..last LOOP
                kept[j] := true;
                written := written + counts[j];
            END LOOP;
            FOR k IN 1..cardinality(unit_names) LOOP
                idx := array_position(known_names, unit_names[k]);
                IF idx IS NULL THEN
                    idx := cardinality(known_names) + 1;
                    known_names[idx] := unit_names[k];
                    known_hard[idx] := false;
                END IF;
                known_versions[idx] := unit_versions[k];
                idx := array_position(changed_names, unit_names[k]);
                IF idx IS NULL THEN
                    idx := cardinality(changed_names) + 1;
                    changed_names[idx] := unit_names[k];
                END IF;
                changed_versions[idx] := unit_versions[k];
            END LOOP;
        END IF;
        i := last + 1;
    END LOOP;
    IF written > 0 THEN
        INSERT INTO {streams} AS s (stream_id, version)
            SELECT * FROM unnest(changed_names, changed_versions)
            ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version;
        -- the log's counter, last: its row lock is held until the commit (the gapless log)
        UPDATE {log} SET last_position = last_position + written RETURNING last_position INTO base;
        base := base - written;
        FOR j IN 1..n_app LOOP
            IF kept[j] THEN
                positions[j] := base + 1;
                base := base + counts[j];
            END IF;
        END LOOP;
        stamp := coalesce(now_, extract(epoch FROM clock_timestamp())::float8);
        INSERT INTO {events} (position, stream_id, version, event_id, event_type, schema_version, data, metadata,
                              recorded_at)
            SELECT positions[e.a] + e.o, stream_ids[e.a], versions[e.a] + e.o, e.id, e.t, e.s, e.d, e.m, stamp
              FROM unnest(event_append, event_offset, ids, types, schema_versions, datas, metas)
                   AS e (a, o, id, t, s, d, m)
             WHERE kept[e.a];
        PERFORM pg_notify(channel, '');
    END IF;
    RETURN QUERY SELECT * FROM unnest(statuses, versions, positions);
END
$body$
"""


class PostgresEventStore(EventStore):
    """The event store in the PostgreSQL database ``dsn``, tables in ``schema`` (created if missing), through at
    most ``pool_size`` connections, plus one for the appends (the group commit's) and one per live subscription (for
    ``LISTEN``).

    ``poll_interval``: how often a caught-up subscription reads the log even without a notification.
    ``page_size``: the events a subscription reads at a time. ``vacuum``: whether :meth:`scavenge` runs
    ``VACUUM`` after deleting. ``clock``: seconds since the epoch for ``recorded_at`` and ``max_age``; by
    default the server's clock, so that every process agrees (inject one only for tests).

    A connection that fails is dropped and replaced at the next call; the failing call raises
    :class:`EventStoreError`. An append whose commit was cut off may or may not have happened: append it again
    (same event ids), which is idempotent.
    """

    def __init__(
        self,
        dsn: str = DEFAULT_DSN,
        *,
        schema: str = "tidings",
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        poll_interval: float = 1.0,
        page_size: int = 500,
        vacuum: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        try:
            self._psycopg: Any = importlib.import_module("psycopg")
        except ImportError as exc:
            raise UsageError("PostgresEventStore needs the psycopg driver: pip install 'tidings[postgres]'") from exc
        if not _NAME.fullmatch(schema) or len(schema.encode()) > 50:
            raise UsageError(f"schema must be a plain SQL name (letters, digits, _), at most 50 bytes, not {schema!r}")
        if pool_size < 1:
            raise UsageError(f"pool_size must be at least 1, not {pool_size!r}")
        if page_size < 1:
            raise UsageError(f"page_size must be at least 1, not {page_size!r}")
        if not poll_interval > 0:
            raise UsageError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.vacuum = vacuum
        self._clock = clock
        self.channel = f"{schema}.appended"
        self._sql = _Statements(schema, clock is not None)
        self._pool = ConnectionPool(dsn, size=pool_size, connect_timeout=connect_timeout, error=self._error)
        self._connect = self._pool.connect
        self._connection = self._pool.connection
        #: the connection the group commit writes through (one batch in flight at a time), kept apart from the pool
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._pending: collections.deque[_Unit] = collections.deque()
        #: outbox tables known to exist (created, if missing, by the first append that writes to one)
        self._outbox_tables: set[str] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._listeners: set[psycopg.AsyncConnection[Any]] = set()
        #: set by close(): wakes the subscriptions that wait without a listener, so that they end at once
        self._closing = asyncio.Event()
        #: how many times the store was started: a subscription ends when the store it began in is closed
        self._generation = 0

    def __repr__(self) -> str:
        return f"PostgresEventStore({redact_url(self.dsn)!r}, schema={self.schema!r})"

    # -- connections --

    def _error(self, exc: BaseException) -> EventStoreError:
        message = f"PostgreSQL event store at {redact_url(self.dsn)} (schema {self.schema}): "
        message += redact_url(one_line(exc))
        if isinstance(exc, self._psycopg.OperationalError):
            # connecting, or the connection lost: what the user can check (other errors speak for themselves)
            message += (
                "; check that PostgreSQL is running and that the DSN (host, port, user, password, database) is right"
            )
        return EventStoreError(message)

    @contextlib.asynccontextmanager
    async def _writer_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The group commit's own connection (only the drainer uses it), in autocommit mode; dropped if not clean.

        Its statements keep their generic plans (``plan_cache_mode``): PostgreSQL otherwise plans the fast path's
        statement again at every call (its plans with the values are estimated cheaper), which took more time than
        running it. Its only lookups are by primary key, whatever the size of the tables; the checked path's
        lookups by arrays are never prepared, so they are planned at each call still."""
        conn = self._writer
        if conn is None or conn.closed:
            conn = await self._connect()
            try:
                await conn.execute("SET plan_cache_mode = force_generic_plan")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
            self._writer = conn
        try:
            yield conn
        finally:
            idle_status = self._psycopg.pq.TransactionStatus.IDLE
            if not self._started or conn.closed or conn.info.transaction_status != idle_status:
                self._writer = None
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._check_started()
        try:
            async with self._connection() as conn:
                # results in binary: a bytea comes as its bytes (in text, as hex to decode), reads twice as fast
                cursor = await conn.execute(query, params, binary=True)
                return await cursor.fetchall() if cursor.description else []
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    def _check_started(self) -> None:
        if not self._started:
            raise EventStoreError(f"{self!r} is not started: call start() or use it in 'async with'")

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            self._started = True
            self._generation += 1
            # new ones in each start: asyncio's primitives belong to the event loop they first wait in, and a
            # store may be closed and started again in another one
            self._closing = asyncio.Event()
            self._pool.reopen()
            try:
                await self._pool.create(self.schema, self._sql.schema)
            except BaseException:
                self._started = False
                raise

    async def close(self) -> None:
        async with self._start_lock:
            drainer = self._drainer
            if drainer is not None and not drainer.done():
                # appends already accepted are written (or fail) before the connections go
                with contextlib.suppress(Exception):
                    await asyncio.shield(drainer)
            self._started = False
            self._closing.set()
            await self._pool.close()
            own = [self._writer] if self._writer is not None else []
            self._writer = None
            # closing a listener wakes the subscription waiting on it (an OperationalError, which ends it quietly)
            listeners, self._listeners = self._listeners, set()
            for conn in [*own, *listeners]:
                with contextlib.suppress(Exception):
                    await conn.close()

    # -- appending --

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], *, expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        results = await self._submit([(stream_id, events, expected_version)])
        return results[0]

    async def append_many(
        self,
        appends: Sequence[tuple[str, Sequence[NewEvent], ExpectedVersion]],
        *,
        outbox: OutboxRows | None = None,
    ) -> list[AppendResult]:
        if not appends:
            return []
        return await self._submit(list(appends), outbox)

    async def _submit(
        self, appends: list[tuple[str, Sequence[NewEvent], ExpectedVersion]], outbox: OutboxRows | None = None
    ) -> list[AppendResult]:
        self._check_started()
        for stream_id, events, expected in appends:
            check_append(stream_id, events, expected)
        loop = asyncio.get_running_loop()
        unit = _Unit(appends, loop.create_future(), sum(len(events) for _, events, _ in appends), outbox)
        self._pending.append(unit)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await unit.future

    async def _drain(self) -> None:
        """Group commit: one batch in flight at a time; what arrives meanwhile waits and goes in the next."""
        while self._pending:
            batch: list[_Unit] = []
            events = 0
            while self._pending and len(batch) < _BATCH_APPENDS:
                unit = self._pending[0]
                if batch and (events + unit.events > _BATCH_EVENTS or unit.outbox is not None):
                    break
                batch.append(self._pending.popleft())
                events += unit.events
                if unit.outbox is not None:
                    break  # its outbox rows share its transaction, not the others'
            try:
                await self._write(batch)
            except BaseException as exc:
                error = exc if isinstance(exc, EventStoreError) else self._error(exc)
                for unit in batch:
                    if not unit.future.done():
                        unit.future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise

    async def _write(self, batch: list[_Unit]) -> None:
        names = sorted({stream_id for unit in batch for stream_id, _, _ in unit.appends})
        ids = [event.event_id for unit in batch for _, events, _ in unit.appends for event in events]
        locks = sorted({self._lock_key(name) for name in names})
        errors = self._psycopg.errors
        outbox = batch[0].outbox
        async with self._writer_connection() as conn:
            if outbox is not None:
                # the checked path inside a transaction that also holds the outbox rows (when the checks pass)
                for attempt in range(_RETRIES + 1):
                    try:
                        async with conn.transaction():
                            plan, base = await self._write_once(conn, batch, names, ids, locks)
                            if not isinstance(plan.outcomes[0], EventStoreError):
                                try:
                                    await outbox.write_async(conn, create=outbox.table not in self._outbox_tables)
                                except (errors.UniqueViolation, errors.DeadlockDetected):
                                    raise  # (a concurrent CREATE TABLE: the next attempt finds it)
                                except self._psycopg.Error as exc:
                                    where = f"(writing to the outbox table {outbox.table})"
                                    raise EventStoreError(f"{self._error(exc)} {where}") from exc
                    except (errors.UniqueViolation, errors.DeadlockDetected):
                        if attempt == _RETRIES:
                            raise
                        continue
                    break
                if not isinstance(plan.outcomes[0], EventStoreError):
                    self._outbox_tables.add(outbox.table)  # committed: it exists from now on
                self._settle(batch, plan, base)
                return
            # the fast path: new event ids (an id twice in the batch is a duplicate, or a replay, for _plan)
            if len(set(ids)) == len(ids):
                try:
                    outcomes = await self._write_fast(conn, batch, locks, ids)
                except (errors.UniqueViolation, errors.DeadlockDetected):
                    outcomes = None  # a race on an event id: the checked path sorts it out
                if outcomes is not None:
                    for unit, fast in zip(batch, outcomes, strict=True):
                        if not unit.future.done():
                            if isinstance(fast, EventStoreError):
                                unit.future.set_exception(fast)
                            else:
                                unit.future.set_result(fast)
                    return
            for attempt in range(_RETRIES + 1):
                try:
                    plan, base = await self._write_once(conn, batch, names, ids, locks)
                except (errors.UniqueViolation, errors.DeadlockDetected):
                    # another process wrote one of our event ids (in another stream) between our check and our
                    # insert, and everything was rolled back: check again, it now shows as a duplicate
                    if attempt == _RETRIES:
                        raise
                    continue
                break
        self._settle(batch, plan, base)

    @staticmethod
    def _settle(batch: list[_Unit], plan: _Plan, base: int) -> None:
        for unit, outcome in zip(batch, plan.outcomes, strict=True):
            if unit.future.done():
                continue
            if isinstance(outcome, EventStoreError):
                unit.future.set_exception(outcome)
            else:
                unit.future.set_result(
                    [
                        AppendResult(s, v1, v2, p1 + base if rel else p1, p2 + base if rel else p2)
                        for s, v1, v2, p1, p2, rel in outcome
                    ]
                )

    async def _write_once(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: list[_Unit],
        names: list[str],
        ids: list[str],
        locks: list[int],
    ) -> tuple[_Plan, int]:
        """One transaction in two round trips: lock the streams and read them, check (in Python), then write."""
        sql = self._sql
        base = 0
        counter: psycopg.AsyncCursor[Any] | None = None
        async with conn.pipeline(), conn.transaction():
            # round trip 1: the streams' locks (in key order: no deadlock), their rows, the events with our ids
            await conn.execute(sql.lock_streams, (locks,))
            # never prepared: a generic plan of "= ANY(array)" made while a table was small would stay a sequential
            # scan as it grows (psycopg prepares a statement run five times)
            streams_cursor = await conn.execute(sql.select_streams, (names,), prepare=False)
            existing_cursor = await conn.execute(sql.select_ids, (ids,), prepare=False)
            streams = {row[0]: _Stream(row[1], row[2], row[3]) for row in await streams_cursor.fetchall()}
            existing = {
                event_id: _Existing(stream_id, version, position, event_type, schema_version, data, metadata, False)
                for event_id, stream_id, version, position, event_type, schema_version, data, metadata in (
                    await existing_cursor.fetchall()
                )
            }
            plan = _plan(batch, streams, existing)
            rows = plan.event_rows
            if rows:
                # round trip 2, one statement then COMMIT: the streams, then the log's counter, whose row lock is
                # held until the commit (the gapless log: see the module docstring), the events numbered after it,
                # and the NOTIFY (delivered at the commit)
                stream_ids = list(plan.stream_versions)
                params: dict[str, Any] = {
                    "streams": stream_ids,
                    "versions": [plan.stream_versions[s] for s in stream_ids],
                    "n": len(rows),
                    "stream_id": [r[0] for r in rows],
                    "version": [r[1] for r in rows],
                    "event_id": [r[2].event_id for r in rows],
                    "event_type": [r[2].event_type for r in rows],
                    "schema_version": [r[2].schema_version for r in rows],
                    "data": [r[2].data for r in rows],
                    "metadata": [r[2].metadata for r in rows],
                    "now": self._clock() if self._clock is not None else None,
                    "channel": self.channel,
                }
                counter = await conn.execute(sql.write, params)
        if counter is not None:
            row = await counter.fetchone()
            assert row is not None
            base = int(row[0]) - len(rows)
        return plan, base

    async def _write_fast(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Unit], locks: list[int], ids: list[str]
    ) -> list[EventStoreError | list[AppendResult]] | None:
        """The whole batch in one statement, which is its own transaction (the connection is in autocommit):
        the function ``append_batch`` takes the locks, checks and writes; None if an event id is already in the
        store (a retry, a duplicate), in which case it wrote nothing and :func:`_plan` must decide."""
        appends = [(unit_no, append) for unit_no, unit in enumerate(batch) for append in unit.appends]
        if len(appends) == 1:
            one = await self._write_one(conn, appends[0][1], locks[0], ids)
            if one is not None:
                return [[one]]
            # the stream is not where the append expects it (or is deleted): the function says how
        event_append = [i for i, (_, (_, events, _)) in enumerate(appends, 1) for _ in events]
        event_offset = [k for _, (_, events, _) in appends for k in range(len(events))]
        every = [event for _, (_, events, _) in appends for event in events]
        params = (
            locks,
            [unit_no for unit_no, _ in appends],
            [stream_id for _, (stream_id, _, _) in appends],
            [expected if isinstance(expected, int) else _EXPECTED_CODES[expected] for _, (_, _, expected) in appends],
            [len(events) for _, (_, events, _) in appends],
            event_append,
            event_offset,
            ids,
            [e.event_type for e in every],
            [e.schema_version for e in every],
            [e.data for e in every],
            [e.metadata for e in every],
            self._clock() if self._clock is not None else None,
            self.channel,
        )
        cursor = await conn.execute(self._sql.append_batch, params)
        rows = await cursor.fetchall()
        if any(status == _FAST_KNOWN_ID for status, _, _ in rows):
            return None
        outcomes: list[EventStoreError | list[AppendResult]] = [[] for _ in batch]
        for (unit_no, (stream_id, events, expected)), (status, version, first_position) in zip(
            appends, rows, strict=True
        ):
            outcome = outcomes[unit_no]
            if isinstance(outcome, EventStoreError):
                continue
            if status == _FAST_WRONG_VERSION:
                outcomes[unit_no] = WrongExpectedVersion(stream_id, expected, version)
            elif status == _FAST_DELETED:
                outcomes[unit_no] = _deleted(stream_id, ": it cannot be appended to")
            elif status == _FAST_APPENDED:
                n = len(events)
                outcome.append(
                    AppendResult(stream_id, version, version + n - 1, first_position, first_position + n - 1)
                )
            # _FAST_NOT_TRIED: another append of the unit failed (its error is the unit's)
        return outcomes

    async def _write_one(
        self,
        conn: psycopg.AsyncConnection[Any],
        append: tuple[str, Sequence[NewEvent], ExpectedVersion],
        lock: int,
        ids: list[str],
    ) -> AppendResult | None:
        """A batch of one append, in one plain statement (its own transaction): None if the stream is not where
        ``expected`` says (nothing written); an event id already in the store raises UniqueViolation."""
        stream_id, events, expected = append
        n = len(events)
        params: dict[str, Any] = {
            "lock": lock,
            "stream": stream_id,
            "n": n,
            "expected": expected if isinstance(expected, int) else _EXPECTED_CODES[expected],
            "now": self._clock() if self._clock is not None else None,
            "channel": self.channel,
        }
        if n == 1:
            event = events[0]
            params.update(
                ids=event.event_id,
                types=event.event_type,
                schema_versions=event.schema_version,
                datas=event.data,
                metas=event.metadata,
            )
            query = self._sql.append_one_event
        else:
            params.update(
                ids=ids,
                types=[e.event_type for e in events],
                schema_versions=[e.schema_version for e in events],
                datas=[e.data for e in events],
                metas=[e.metadata for e in events],
            )
            query = self._sql.append_one
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
        if row is None:
            return None
        version, position = int(row[0]), int(row[1])
        return AppendResult(stream_id, version - n + 1, version, position - n + 1, position)

    def _lock_key(self, stream_id: str) -> int:
        digest = hashlib.blake2b(f"{self.schema}\x00{stream_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    # -- reading --

    async def read_stream(
        self, stream_id: str, *, from_version: int | None = None, backwards: bool = False, limit: int | None = None
    ) -> list[RecordedEvent]:
        check_read(limit)
        if limit == 0:
            return []
        start = (2**31 - 1 if backwards else 0) if from_version is None else from_version
        query = self._sql.read_stream_backwards if backwards else self._sql.read_stream
        params: list[Any] = [start, limit, stream_id]
        if self._clock is not None:
            params.insert(0, self._clock())
        rows = await self._fetch(query, params)
        if not rows:
            return []
        if rows[0][0]:
            raise _deleted(stream_id, ": it cannot be read")
        return [RecordedEvent._make(row[1:]) for row in rows if row[1] is not None]

    async def read_all(
        self,
        *,
        from_position: int = 0,
        backwards: bool = False,
        limit: int = 1000,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        check_read(limit, event_types)
        if limit == 0:
            return []
        sql = self._sql
        if backwards:
            query = sql.read_all_backwards if event_types is None else sql.read_all_backwards_types
            start = from_position if from_position > 0 else 2**63 - 1
        else:
            query = sql.read_all if event_types is None else sql.read_all_types
            start = from_position
        params: list[Any] = [start, limit] if event_types is None else [start, list(event_types), limit]
        return [RecordedEvent._make(row) for row in await self._fetch(query, params)]

    async def stream_version(self, stream_id: str) -> int:
        rows = await self._fetch(self._sql.stream_version, (stream_id,))
        if not rows:
            return 0
        version, hard_deleted = rows[0]
        if hard_deleted:
            raise _deleted(stream_id)
        return int(version)

    async def subscribe(
        self, *, from_position: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """History in pages, then live: on each notification of an append (and every ``poll_interval`` seconds
        in any case) the log is read again from the last position delivered. Ends when the store is closed."""
        check_read(None, event_types)
        self._check_started()
        generation, closing = self._generation, self._closing
        position = from_position
        listener: psycopg.AsyncConnection[Any] | None = None
        types = list(event_types) if event_types is not None else None

        def ended() -> bool:
            return not self._started or self._generation != generation

        try:
            while not ended():
                if listener is None:
                    # LISTEN before reading: an append committed between the read and the LISTEN would otherwise
                    # wait for the next poll
                    listener = await self._listen()
                try:
                    if types is None:
                        page = await self.read_all(from_position=position, limit=self.page_size)
                        more = len(page) == self.page_size
                    else:
                        page, end = await self._window(position, types)
                        more = end > position
                except EventStoreError:
                    if ended():
                        return
                    raise
                for event in page:
                    position = event.position
                    yield event
                if more:
                    if types is not None:
                        position = end  # past the window's events of other types too: never scanned again
                    continue
                if listener is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closing.wait(), self.poll_interval)
                    continue
                try:
                    async for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
                        pass
                except self._psycopg.Error:
                    # the listener's connection was lost (or closed by close()): poll until a new one is up
                    await self._drop_listener(listener)
                    listener = None
        finally:
            if listener is not None:
                await self._drop_listener(listener)

    async def _window(self, after: int, types: list[str]) -> tuple[list[RecordedEvent], int]:
        """The events of ``types`` in the next window of the log after ``after``, and the window's last position
        (``after`` when the log has nothing more)."""
        if not types:
            return [], after
        window = max(self.page_size, _WINDOW)
        rows = await self._fetch(self._sql.window_types, (after, window, after, types))
        if not rows:
            return [], after
        return [RecordedEvent._make(row[1:]) for row in rows if row[1] is not None], int(rows[0][0])

    async def _listen(self) -> psycopg.AsyncConnection[Any] | None:
        """A connection LISTENing for appends, or None (closed store, PostgreSQL unreachable: the caller polls)."""
        if not self._started:
            return None
        try:
            conn = await self._connect()
        except EventStoreError:
            return None  # reads will tell whether PostgreSQL is gone; meanwhile poll
        try:
            await conn.execute(self._sql.listen)
        except self._psycopg.Error:
            with contextlib.suppress(Exception):
                await conn.close()
            return None
        self._listeners.add(conn)
        return conn

    async def _drop_listener(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._listeners.discard(conn)
        with contextlib.suppress(Exception):
            await conn.close()

    # -- metadata, deletion, maintenance --

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        # a row comes back unless the stream is a tombstone (the upsert's WHERE leaves it as it is)
        rows = await self._locked(
            stream_id,
            self._sql.set_metadata,
            (stream_id, metadata.max_age, metadata.max_count, metadata.truncate_before),
        )
        if not rows:
            raise _deleted(stream_id, ": its metadata cannot be set")

    async def stream_metadata(self, stream_id: str) -> StreamMetadata:
        rows = await self._fetch(self._sql.get_metadata, (stream_id,))
        if not rows:
            return StreamMetadata()
        max_age, max_count, truncate_before, hard_deleted = rows[0]
        if hard_deleted:
            raise _deleted(stream_id)
        return StreamMetadata(max_age, max_count, truncate_before)

    async def delete_stream(self, stream_id: str, *, hard: bool = False) -> None:
        rows = await self._locked(stream_id, self._sql.hard_delete if hard else self._sql.soft_delete, (stream_id,))
        if not hard and rows and rows[0][0]:
            raise _deleted(stream_id)

    async def _locked(self, stream_id: str, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``query`` in a transaction holding ``stream_id``'s lock (as appends do), in one round trip."""
        self._check_started()
        try:
            async with self._connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    await conn.execute(self._sql.lock_streams, ([self._lock_key(stream_id)],))
                    cursor = await conn.execute(query, params)
                return await cursor.fetchall() if cursor.description else []
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    async def scavenge(self) -> int:
        params: list[Any] = [] if self._clock is None else [self._clock()]
        rows = await self._fetch(self._sql.scavenge, params)
        deleted = int(rows[0][0]) if rows else 0
        if deleted and self.vacuum:
            # VACUUM cannot run in a transaction: the pool's connections are in autocommit mode
            await self._fetch(self._sql.vacuum)
        return deleted

    async def stats(self) -> StoreStats:
        rows = await self._fetch(self._sql.stats)
        streams, events, last_position, size = rows[0]
        return StoreStats(int(streams), int(events), int(last_position), int(size))


class _Statements:
    """Every statement of a store, its schema's name quoted in (psycopg.sql.Identifier, never pasted)."""

    def __init__(self, schema: str, client_clock: bool) -> None:
        sql: Any = importlib.import_module("psycopg.sql")

        def q(text: str) -> str:
            composed = sql.SQL(text).format(
                events=sql.Identifier(schema, "events"),
                streams=sql.Identifier(schema, "streams"),
                log=sql.Identifier(schema, "log"),
                schema=sql.Identifier(schema),
                channel=sql.Identifier(f"{schema}.appended"),
                append_batch=sql.Identifier(schema, "append_batch_v1"),
            )
            result: str = composed.as_string(None)
            return result

        now = "%s::float8" if client_clock else "extract(epoch FROM clock_timestamp())::float8"
        now_param = "%(now)s::float8" if client_clock else now
        self.schema = [
            q("CREATE SCHEMA IF NOT EXISTS {schema}"),
            q(
                "CREATE TABLE IF NOT EXISTS {events} ("
                "position BIGINT PRIMARY KEY, stream_id TEXT NOT NULL, version INT NOT NULL, "
                "event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, schema_version TEXT NOT NULL, "
                "data BYTEA NOT NULL, metadata BYTEA NOT NULL, recorded_at DOUBLE PRECISION NOT NULL, "
                "UNIQUE (stream_id, version))"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {streams} ("
                "stream_id TEXT PRIMARY KEY, version INT NOT NULL DEFAULT 0, "
                "deleted_before INT NOT NULL DEFAULT 0, hard_deleted BOOLEAN NOT NULL DEFAULT false, "
                "max_age DOUBLE PRECISION, max_count INT, truncate_before INT)"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {log} ("
                "id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id), last_position BIGINT NOT NULL)"
            ),
            q("INSERT INTO {log} (id, last_position) VALUES (true, 0) ON CONFLICT (id) DO NOTHING"),
            q(_APPEND_BATCH),
        ]
        # array parameters go in binary (%b): psycopg's text dumper escapes every element in Python (a bytea as
        # hex), the binary one copies the bytes; six times less client CPU for a 100-event append
        self.lock_streams = "SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k"
        self.append_batch = q(
            "SELECT * FROM {append_batch}(%b::bigint[], %b::int[], %b::text[], %b::int[], %b::int[], %b::int[], "
            "%b::int[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::bytea[], %s::float8, %s::text)"
        )
        # the fast path of a batch of one append (a lone appender's): one plain statement, prepared, whose generic
        # plan the writer's connection keeps (see PostgresEventStore._writer). The stream's lock first (an InitPlan,
        # run before the upsert's row), then the upsert, which checks ``expected`` (-1 any, -2 no stream, -3 stream
        # exists, else the version) against the row's latest version whatever the statement's snapshot (ON CONFLICT
        # DO UPDATE locks and reads the newest row); a stream that must exist is inserted only if a row is seen (rows
        # of ``streams`` are never deleted, so the insert then always meets it). Then the log's counter (its row lock
        # held until the commit, the UPDATE reading the newest row too), the events, the NOTIFY. No row back: the
        # check failed (the function says how); an event id already in the store fails the insert (UniqueViolation)
        append_one = (
            "WITH l AS (SELECT pg_advisory_xact_lock(%(lock)s::bigint)), "
            "s AS (INSERT INTO {streams} AS s (stream_id, version) SELECT %(stream)s::text, %(n)s::int "
            "WHERE (SELECT count(*) FROM l) = 1 AND (%(expected)s::int IN (-1, -2, 0) "
            "OR EXISTS (SELECT FROM {streams} AS k WHERE k.stream_id = %(stream)s::text)) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version "
            "WHERE NOT s.hard_deleted AND CASE %(expected)s::int WHEN -1 THEN true WHEN -2 THEN s.version = 0 "
            "WHEN -3 THEN s.version > 0 ELSE s.version = %(expected)s::int END RETURNING s.version), "
            "c AS (UPDATE {log} SET last_position = last_position + %(n)s::int WHERE (SELECT count(*) FROM s) = 1 "
            f"RETURNING last_position, {now_param} AS now), "
            "w AS (INSERT INTO {events} (position, stream_id, version, event_id, event_type, schema_version, data, "
            "metadata, recorded_at) "
            "SELECT c.last_position - %(n)s::int + u.o, %(stream)s::text, s.version - %(n)s::int + u.o::int, u.id, "
            "u.t, u.s, u.d, u.m, c.now FROM c, s, EVENTS AS u (id, t, s, d, m, o)) "
            "SELECT s.version, c.last_position, pg_notify(%(channel)s::text, '') FROM s, c"
        )
        self.append_one = q(
            append_one.replace(
                "EVENTS",
                "unnest(%(ids)b::text[], %(types)b::text[], %(schema_versions)b::text[], %(datas)b::bytea[], "
                "%(metas)b::bytea[]) WITH ORDINALITY",
            )
        )
        # ... and of one event: its fields as they are (psycopg dumps an array element by element, in Python)
        self.append_one_event = q(
            append_one.replace(
                "EVENTS",
                "(VALUES (%(ids)s::text, %(types)s::text, %(schema_versions)s::text, %(datas)b::bytea, "
                "%(metas)b::bytea, 1::bigint))",
            )
        )
        self.select_streams = q(
            "SELECT stream_id, version, deleted_before, hard_deleted FROM {streams} WHERE stream_id = ANY(%b::text[])"
        )
        self.select_ids = q(
            "SELECT event_id, stream_id, version, position, event_type, schema_version, data, metadata "
            "FROM {events} WHERE event_id = ANY(%b::text[])"
        )
        # the checked path's write, one statement: the InitPlan on ``upserted`` makes the streams' upsert run before
        # the counter's row is locked, so the lock that serialises commits is taken as late as can be
        self.write = q(
            "WITH upserted AS (INSERT INTO {streams} (stream_id, version) "
            "SELECT * FROM unnest(%(streams)b::text[], %(versions)b::int[]) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version RETURNING 1), "
            "counter AS (UPDATE {log} SET last_position = last_position + %(n)s "
            "WHERE (SELECT count(*) FROM upserted) >= 0 RETURNING last_position), "
            "written AS (INSERT INTO {events} (position, stream_id, version, event_id, event_type, schema_version, "
            "data, metadata, recorded_at) "
            "SELECT c.last_position - %(n)s + u.ord, u.stream_id, u.version, u.event_id, u.event_type, "
            "u.schema_version, u.data, u.metadata, t.now FROM counter AS c, "
            "unnest(%(stream_id)b::text[], %(version)b::int[], %(event_id)b::text[], %(event_type)b::text[], "
            "%(schema_version)b::text[], %(data)b::bytea[], %(metadata)b::bytea[]) "
            "WITH ORDINALITY AS u (stream_id, version, event_id, event_type, schema_version, data, metadata, ord), "
            f"(SELECT {now_param} AS now) AS t) "
            "SELECT last_position, pg_notify(%(channel)s, '') FROM counter"
        )
        self.listen = q("LISTEN {channel}")
        # the first version a stream read may return: after the soft delete, $tb, $maxCount; $maxAge by time
        visible = (
            "e.version > s.deleted_before AND e.version >= coalesce(s.truncate_before, 0) "
            "AND (s.max_count IS NULL OR e.version > s.version - s.max_count) "
            "AND (s.max_age IS NULL OR e.recorded_at >= t.now - s.max_age)"
        )
        columns = ", ".join(f"e.{c}" for c in _EVENT_COLUMNS.split(", "))
        # one round trip: the stream's row (none: no stream; hard_deleted: StreamDeleted) and its visible events
        # (a row of NULLs when there are none); parameters: [now], from_version, limit, stream_id
        read_stream = (
            f"SELECT s.hard_deleted, {columns} FROM (SELECT {now} AS now) AS t CROSS JOIN {{streams}} AS s "
            "LEFT JOIN LATERAL (SELECT e.* FROM {events} AS e "
            f"WHERE e.stream_id = s.stream_id AND NOT s.hard_deleted AND {visible} "
            "AND e.version CMP %s ORDER BY e.version ORDER LIMIT %s) AS e ON true WHERE s.stream_id = %s"
        )
        self.read_stream = q(read_stream.replace("CMP", ">=").replace("ORDER LIMIT", "LIMIT"))
        self.read_stream_backwards = q(read_stream.replace("CMP", "<=").replace("ORDER LIMIT", "DESC LIMIT"))
        select_events = f"SELECT {_EVENT_COLUMNS} FROM {{events}}"
        self.read_all = q(f"{select_events} WHERE position > %s ORDER BY position LIMIT %s")
        self.read_all_types = q(
            f"{select_events} WHERE position > %s AND event_type = ANY(%b::text[]) ORDER BY position LIMIT %s"
        )
        # a subscription filtering by type reads the log a window of positions at a time, matching or not, and
        # carries on after the window: otherwise each wake-up would scan again every event of other types since
        # its last match (there is no index on the type). One row per match, each with the window's end; a row
        # of NULLs but the end when nothing matched; no row when the log has nothing after the position
        self.window_types = q(
            "WITH w AS (SELECT max(position) AS last FROM (SELECT position FROM {events} WHERE position > %s "
            f"ORDER BY position LIMIT %s) AS x WHERE x.position IS NOT NULL) SELECT w.last, {columns} FROM w "
            "LEFT JOIN LATERAL (SELECT * FROM {events} AS e WHERE e.position > %s AND e.position <= w.last "
            "AND e.event_type = ANY(%b::text[])) AS e ON true WHERE w.last IS NOT NULL ORDER BY e.position"
        )
        self.read_all_backwards = q(f"{select_events} WHERE position < %s ORDER BY position DESC LIMIT %s")
        self.read_all_backwards_types = q(
            f"{select_events} WHERE position < %s AND event_type = ANY(%b::text[]) ORDER BY position DESC LIMIT %s"
        )
        self.stream_version = q("SELECT version, hard_deleted FROM {streams} WHERE stream_id = %s")
        self.set_metadata = q(
            "INSERT INTO {streams} AS s (stream_id, max_age, max_count, truncate_before) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET max_age = EXCLUDED.max_age, max_count = EXCLUDED.max_count, "
            "truncate_before = EXCLUDED.truncate_before WHERE NOT s.hard_deleted RETURNING 1"
        )
        self.get_metadata = q(
            "SELECT max_age, max_count, truncate_before, hard_deleted FROM {streams} WHERE stream_id = %s"
        )
        self.soft_delete = q(
            "UPDATE {streams} SET deleted_before = version WHERE stream_id = %s RETURNING hard_deleted"
        )
        self.hard_delete = q(
            "INSERT INTO {streams} (stream_id, hard_deleted) VALUES (%s, true) "
            "ON CONFLICT (stream_id) DO UPDATE SET hard_deleted = true"
        )
        gone = (
            "s.hard_deleted OR e.version <= s.deleted_before OR e.version < coalesce(s.truncate_before, 0) "
            "OR (s.max_count IS NOT NULL AND e.version <= s.version - s.max_count) "
            "OR (s.max_age IS NOT NULL AND e.recorded_at < t.now - s.max_age)"
        )
        self.scavenge = q(
            f"WITH t AS (SELECT {now} AS now), gone AS (DELETE FROM {{events}} AS e USING {{streams}} AS s, t "
            f"WHERE e.stream_id = s.stream_id AND ({gone}) RETURNING 1) SELECT count(*) FROM gone"
        )
        self.vacuum = q("VACUUM {events}")
        self.stats = q(
            "SELECT (SELECT count(*) FROM {streams} WHERE version > 0 AND NOT hard_deleted), "
            "(SELECT count(*) FROM {events}), (SELECT last_position FROM {log}), "
            "pg_total_relation_size('{events}') + pg_total_relation_size('{streams}') + pg_total_relation_size('{log}')"
        )


__all__ = ["DEFAULT_DSN", "PostgresEventStore"]
