"""Projections: read models built from the event store's log, each with a checkpoint kept in the same
transaction as the read model, so that a crash never applies an event twice nor skips one.

::

    class UserCounts(Projection):
        name = "user-counts"

        def setup(self, db: sqlite3.Connection) -> None:            # idempotent: run before every start
            db.execute("CREATE TABLE IF NOT EXISTS user_counts (user_id INTEGER PRIMARY KEY, n INTEGER)")

        def reset(self, db: sqlite3.Connection) -> None:            # for rebuilds: the read model emptied
            db.execute("DROP TABLE IF EXISTS user_counts")

        @handles(UserCreated)                                       # an Event class: the validated model
        def created(self, db: sqlite3.Connection, event: UserCreated) -> None:
            db.execute("INSERT INTO user_counts VALUES (?, 0)", (event.user_id,))

        @handles("user.logged_in")                                  # a type: the RecordedEvent as stored
        def logged_in(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
            ...

    async with ProjectionRunner(store, UserCounts(), SqliteTarget("read.db")) as runner:
        await runner.catch_up()                 # everything up to the log's end, in transactions of `batch`
        await runner.run(stop)                  # ... then live, until `stop` is set
        await runner.rebuild(progress=print)    # reset, checkpoint 0 and catch up again

How exactly-once works
----------------------
The runner reads the log after the checkpoint with ``read_all`` (only the event types the projection handles)
and applies it in batches: one database transaction per batch runs the handlers on the target's connection,
then moves the checkpoint (the table ``tidings_projections``: ``name``, ``position``, ``updated_at``) to the
batch's last position, and commits. Either both the read model's changes and the new checkpoint are durable or
neither is: a process killed mid-batch restarts from the previous checkpoint with a read model that holds
nothing of the lost batch (nothing applied twice), and a commit always carries its checkpoint (nothing
skipped). The log itself is gapless (see :mod:`tidings.eventstore.base`), so a checkpoint is a complete
summary of what was read. A handler therefore must not commit (SQLite: detected and reported; PostgreSQL:
psycopg refuses it inside the batch's transaction block) nor write anywhere but ``db`` if it wants that promise.

When a catch-up reaches the log's end, the checkpoint moves on to the log's last position even if the events
after the last handled one are of other types (so that they are not scanned again). Following live, the runner
only hears of the types it handles, so its checkpoint is the last handled event's position; ``status`` counts
the handled events after the checkpoint, not positions.

Each batch first re-reads its checkpoint under a write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT
... FOR UPDATE``) and refuses to go on (:class:`ProjectionConflict`) if it is not where this runner left it:
two runners of one projection (or a rebuild under a running one) fail loudly instead of applying events twice.

A rebuild's first transaction is ``reset`` + ``setup`` + checkpoint 0; whatever happens after it, the read
model and its checkpoint agree, so a rebuild that crashes midway resumes (``catch_up``/``run``) or restarts
(``rebuild``) cleanly.

Handlers, threads and connections
---------------------------------
Handlers are plain (synchronous) methods taking the target's connection: a :class:`sqlite3.Connection` for
:class:`SqliteTarget`, a synchronous :class:`psycopg.Connection` for :class:`PostgresTarget`. Each batch runs
in a worker thread (:func:`asyncio.to_thread`), so neither slow handlers nor blocking database calls stall the
event loop, and one handler signature serves both databases (an async psycopg connection would force async
handlers on PostgreSQL only). The decoding (JSON, validation of the Event model, upcasting) happens in that
thread too. A target's connection is used by one batch at a time (a lock), so one target may serve several
runners (one after the other, not at once).

Event types starting with ``$`` (``$snapshot:user``...) are the store's machinery: a projection cannot handle
them, and the runner skips any it meets (its checkpoint still moves past them).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import urlsplit

import orjson

from tidings.dburl import POSTGRES_SCHEMES, postgres_dsn, sqlite_file
from tidings.errors import TidingsError, UsageError, describe_error
from tidings.events.event import Event
from tidings.eventstore.base import EventStore, RecordedEvent
from tidings.lifecycle import Service
from tidings.redact import redact_url
from tidings.sqlite_wal import use_wal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tidings.eventstore.aggregate import Upcasters

F = TypeVar("F", bound=Callable[..., None])
#: ``(done, total)``: the log position reached, and the log's last position (both grow during a live run)
Progress = Callable[[int, int], None]
#: the name of the checkpoint table unless a target is told otherwise
CHECKPOINTS = "tidings_projections"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class ProjectionError(TidingsError):
    """A projection could not be applied: a handler failed (the batch was rolled back), or its database did."""


class ProjectionConflict(ProjectionError):
    """The checkpoint moved under this runner: another runner (or a rebuild) works on the same projection."""


def handles(what: str | type[Event]) -> Callable[[F], F]:
    """Mark a method of a :class:`Projection` as the handler of an event type.

    ``@handles(UserCreated)``: the handler receives the event as that model (validated, upcast by the
    projection's ``upcasters`` if stored at an older version); ``@handles("user.created")``: the
    :class:`~tidings.eventstore.base.RecordedEvent` as stored. Stack several to handle several types.
    """
    if isinstance(what, str):
        event_type, model = what, None
    elif isinstance(what, type) and issubclass(what, Event):
        event_type, model = what.event_type(), what
    else:
        raise UsageError(f"@handles takes an event type or an Event class, not {what!r}")
    if not event_type:
        raise UsageError("@handles: the event type is empty")
    if event_type.startswith("$"):
        raise UsageError(f"@handles({event_type!r}): types starting with $ are the event store's own, not events")

    def mark(method: F) -> F:
        marks: tuple[tuple[str, type[Event] | None], ...] = getattr(method, "__tidings_handles__", ())
        method.__tidings_handles__ = (*marks, (event_type, model))  # type: ignore[attr-defined]
        return method

    return mark


class Projection:
    """Base of projections: give ``name``, ``setup``/``reset`` and ``@handles`` methods (see the module)."""

    #: the checkpoint's key: unique among the projections of a target, and stable (renaming means rebuilding)
    name: ClassVar[str]
    #: upgrade events stored at older schema versions before they are validated as their model
    upcasters: ClassVar[Upcasters | None] = None
    #: event type -> (the Event model or None for the raw RecordedEvent, the handler); from ``@handles``
    __handlers__: ClassVar[dict[str, tuple[type[Event] | None, Callable[..., None]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = dict(cls.__handlers__)
        mine: dict[str, str] = {}
        for attribute, method in inspect.getmembers(cls, inspect.isfunction):
            for event_type, model in getattr(method, "__tidings_handles__", ()):
                if event_type in mine and mine[event_type] != attribute:
                    raise UsageError(
                        f"{cls.__name__}: {event_type!r} is handled by both {mine[event_type]}() and {attribute}()"
                    )
                mine[event_type] = attribute
                handlers[event_type] = (model, method)
        cls.__handlers__ = handlers

    @classmethod
    def event_types(cls) -> list[str]:
        """The types this projection handles: the only ones the runner reads from the log."""
        return sorted(cls.__handlers__)

    def setup(self, db: Any) -> None:
        """Create the read model's tables if they do not exist (run before every start: make it idempotent)."""

    def reset(self, db: Any) -> None:
        """Drop or empty the read model, for a rebuild; ``setup`` is called right after, in the same transaction."""
        raise UsageError(f"{type(self).__name__} cannot be rebuilt: define reset(db) to drop or empty its read model")

    def apply(self, db: Any, event: RecordedEvent) -> bool:
        """Run the handler of ``event`` (decoded as it asks); False if this projection does not handle it."""
        if event.event_type.startswith("$"):
            return False
        found = self.__handlers__.get(event.event_type)
        if found is None:
            return False
        model, handler = found
        handler(self, db, event if model is None else self.decode(model, event))
        return True

    def decode(self, model: type[Event], event: RecordedEvent) -> Event:
        """The stored event as ``model``: upcast to the model's version, then validated."""
        from tidings.eventstore.aggregate import Upcasters

        upcasters = self.upcasters if self.upcasters is not None else Upcasters()
        return upcasters.read_as(model, event, orjson.loads(event.data), fix=f" in {type(self).__name__}.upcasters")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={getattr(self, 'name', None)!r})"


class Checkpoint(NamedTuple):
    """A projection's row of the checkpoint table."""

    name: str
    #: the log position of the last event applied (or passed over): the next read starts after it
    position: int
    #: seconds since the epoch of the last commit
    updated_at: float


class Target(abc.ABC):
    """Where read models and their checkpoints live: one database connection, used by one batch at a time.

    Every method is synchronous and blocking: the runner calls them in a worker thread. SQL is written with
    ``?`` placeholders and each target turns it into its driver's style.
    """

    def __init__(self, *, checkpoints: str = CHECKPOINTS) -> None:
        if not _IDENTIFIER.fullmatch(checkpoints):
            raise UsageError(f"checkpoint table {checkpoints!r} is not a plain SQL name")
        self.checkpoints = checkpoints
        self._conn: Any = None
        self._lock = threading.Lock()

    # -- the database's dialect --

    @abc.abstractmethod
    def _connect(self) -> Any: ...

    @abc.abstractmethod
    def _transaction(self, conn: Any, *, ddl: bool = False) -> contextlib.AbstractContextManager[None]:
        """A transaction; ``ddl``: it may create tables (serialise it with other runners' set-ups)."""

    @abc.abstractmethod
    def _checks(self, conn: Any) -> None:
        """Called before the checkpoint is written: raise if a handler ended the batch's transaction."""

    @abc.abstractmethod
    def _has_checkpoints(self, conn: Any) -> bool: ...

    @abc.abstractmethod
    def _driver_errors(self) -> tuple[type[Exception], ...]: ...

    def _sql(self, sql: str) -> str:
        """``sql`` in the driver's dialect: ``?`` placeholders, and ``$lock`` (lock the rows read until the end of
        the transaction) to be replaced."""
        return sql.replace("$lock", "")

    def _exec(self, conn: Any, sql: str, params: Sequence[object] = ()) -> Any:
        return conn.execute(self._sql(sql.replace("$table", self.checkpoints)), params)

    # -- what the runner does --

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """The connection (opened on first use), held by one caller at a time; driver errors made one-line."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                yield self._conn
            except ProjectionError:
                raise
            except self._driver_errors() as exc:
                if getattr(self._conn, "closed", False):  # a lost connection: the next call opens a new one
                    self._conn = None
                raise ProjectionError(f"{self}: {' '.join(str(exc).split())}") from exc

    def prepare(self, projection: Projection, *, reset: bool = False) -> int:
        """Create the checkpoint table and the read model (``setup``); with ``reset``, empty the read model and
        set the checkpoint to 0 first, all in one transaction. Returns the checkpoint."""
        with self._session() as conn, self._transaction(conn, ddl=True):
            self._exec(
                conn,
                "CREATE TABLE IF NOT EXISTS $table "
                "(name TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
            )
            if reset:
                projection.reset(conn)
            projection.setup(conn)
            self._checks(conn)
            now = time.time()
            if reset:
                self._exec(
                    conn,
                    "INSERT INTO $table (name, position, updated_at) VALUES (?, 0, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = excluded.updated_at",
                    (projection.name, now),
                )
                return 0
            self._exec(
                conn,
                "INSERT INTO $table (name, position, updated_at) VALUES (?, 0, ?) ON CONFLICT (name) DO NOTHING",
                (projection.name, now),
            )
            row = self._exec(conn, "SELECT position FROM $table WHERE name = ?", (projection.name,)).fetchone()
            return int(row[0])

    def apply(self, projection: Projection, expected: int, events: Sequence[RecordedEvent]) -> int:
        """Apply ``events`` and move the checkpoint from ``expected`` to the last one's position, in one
        transaction; how many events were handled."""
        last = events[-1].position
        with self._session() as conn, self._transaction(conn):
            row = self._exec(conn, "SELECT position FROM $table WHERE name = ? $lock", (projection.name,)).fetchone()
            found = None if row is None else int(row[0])
            if found != expected:
                raise ProjectionConflict(
                    f"projection {projection.name!r}: its checkpoint is at {found} in {self}, this runner left it at "
                    f"{expected}: another runner or a rebuild is working on it (run one runner per projection)"
                )
            handled = 0
            for event in events:
                try:
                    if projection.apply(conn, event):
                        handled += 1
                except Exception as exc:
                    raise ProjectionError(
                        f"projection {projection.name!r} failed on {event.event_type!r} (stream {event.stream_id!r} "
                        f"version {event.version}, position {event.position}): {describe_error(exc)}"
                        f" — the batch of {len(events)} events was rolled back, the checkpoint stays at {expected}"
                    ) from exc
            self._checks(conn)
            self._exec(
                conn,
                "UPDATE $table SET position = ?, updated_at = ? WHERE name = ?",
                (last, time.time(), projection.name),
            )
            return handled

    def advance(self, name: str, expected: int, position: int) -> None:
        """Move the checkpoint past events this projection does not handle (no read model change)."""
        with self._session() as conn, self._transaction(conn):
            cursor = self._exec(
                conn,
                "UPDATE $table SET position = ?, updated_at = ? WHERE name = ? AND position = ?",
                (position, time.time(), name, expected),
            )
            if cursor.rowcount != 1:
                raise ProjectionConflict(f"projection {name!r}: its checkpoint moved under this runner in {self}")

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The projection's checkpoint, None if it never ran here; creates nothing."""
        with self._session() as conn:
            if not self._has_checkpoints(conn):
                return None
            row = self._exec(conn, "SELECT position, updated_at FROM $table WHERE name = ?", (name,)).fetchone()
            return None if row is None else Checkpoint(name, int(row[0]), float(row[1]))

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*self._driver_errors()):
                conn.close()


class SqliteTarget(Target):
    """Read models in an SQLite file (created if missing; WAL mode). It may be the event store's own file.

    ``synchronous=NORMAL`` in WAL mode: a killed process loses nothing committed; a power cut may lose the last
    commits, but each with its checkpoint, so the projection replays exactly those.
    """

    def __init__(self, path: str | os.PathLike[str], *, checkpoints: str = CHECKPOINTS, timeout: float = 30.0) -> None:
        super().__init__(checkpoints=checkpoints)
        if "." in checkpoints:
            raise UsageError(f"checkpoint table {checkpoints!r}: SQLite has no schemas")
        self.path = os.fspath(path)
        self.timeout = timeout

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the transactions are the explicit BEGIN IMMEDIATE ... COMMIT below, nothing implicit
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            if self.path != ":memory:":
                use_wal(conn, self.timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, *, ddl: bool = False) -> Iterator[None]:
        # IMMEDIATE: the write lock from the start, so the checkpoint read first cannot change before the commit
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _checks(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            raise ProjectionError(
                f"{self}: a handler committed or rolled back the batch's transaction; handlers must leave that to "
                "the runner (the checkpoint must commit with the read model)"
            )

    def _has_checkpoints(self, conn: sqlite3.Connection) -> bool:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.checkpoints,))
        return found.fetchone() is not None

    def _driver_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)

    def checkpoint(self, name: str) -> Checkpoint | None:
        if self.path != ":memory:" and not os.path.exists(self.path):
            return None  # asking must not create the file
        return super().checkpoint(name)

    def __str__(self) -> str:
        return f"sqlite:///{self.path}"


class PostgresTarget(Target):
    """Read models in PostgreSQL, through a synchronous psycopg connection (in autocommit, one transaction block
    per batch). ``schema``: created by the first run if missing, and put first on the ``search_path``, so that the
    handlers' and the checkpoint table's unqualified names land in it (default: the connection's search path)."""

    def __init__(self, dsn: str, *, schema: str | None = None, checkpoints: str = CHECKPOINTS) -> None:
        super().__init__(checkpoints=checkpoints)
        if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", schema):
            raise UsageError(f"schema {schema!r} is not a plain SQL name")
        self.dsn = dsn
        self.schema = schema

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise UsageError("a PostgreSQL target needs psycopg: pip install 'tidings[postgres]'") from None
        conn = psycopg.connect(self.dsn, autocommit=True)
        try:
            if self.schema is not None:  # a schema not created yet is allowed here (status must create nothing)
                conn.execute(f'SET search_path TO "{self.schema}", public'.encode())
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: Any, *, ddl: bool = False) -> Iterator[None]:
        with conn.transaction():
            if ddl:  # two runners creating the same table at once would race in PostgreSQL's catalog: one at a time
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tidings-projections:{self.checkpoints}",))
                if self.schema is not None:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'.encode())
            yield

    def _sql(self, sql: str) -> str:
        # the batch's first read locks the checkpoint row until the commit (what BEGIN IMMEDIATE does in SQLite)
        return sql.replace("?", "%s").replace("$lock", "FOR UPDATE")

    def _checks(self, conn: Any) -> None:
        """psycopg refuses commit() and rollback() inside a transaction block: nothing to check here."""

    def _has_checkpoints(self, conn: Any) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (self.checkpoints,)).fetchone()
        return row is not None and row[0] is not None

    def _driver_errors(self) -> tuple[type[Exception], ...]:
        try:
            import psycopg
        except ImportError:
            return ()
        return (psycopg.Error,)

    def __str__(self) -> str:
        return redact_url(self.dsn) + (f" (schema {self.schema})" if self.schema else "")


def target_from_url(url: str) -> Target:
    """The target ``url`` names: ``sqlite:///path/to/read.db`` or ``postgresql://user@host/db[?schema=name]``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = sqlite_file(parts)
        if path is None:
            raise UsageError(f"an SQLite read model is a file: sqlite:///path/to/read.db, not {redact_url(url)!r}")
        return SqliteTarget(path)
    if scheme in POSTGRES_SCHEMES:
        dsn, schema = postgres_dsn(parts, "schema")
        return PostgresTarget(dsn, schema=schema)
    raise UsageError(
        f"not a read-model database URL: {redact_url(url)!r} (sqlite:///path/to/read.db, postgresql://...)"
    )


class ProjectionStatus(NamedTuple):
    name: str
    #: None: the projection never ran on this target
    checkpoint: int | None
    last_position: int
    #: events of the types it handles after its checkpoint (counted up to a limit: see ``exact``)
    behind: int
    exact: bool
    updated_at: float | None


async def _next(events: AsyncIterator[RecordedEvent]) -> RecordedEvent | None:
    """The next event, None at the end (StopAsyncIteration cannot travel through a task)."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


class ProjectionRunner(Service):
    """Applies the log to one projection on one target (see the module). One runner per projection at a time.

    ``batch``: events per transaction; ``idle``: when following live, a batch commits once no event came for
    this long (seconds), and ``max_delay`` after its first event at the latest.
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection | type[Projection],
        target: Target,
        *,
        batch: int = 500,
        idle: float = 0.05,
        max_delay: float = 1.0,
    ) -> None:
        if isinstance(projection, type):
            projection = projection()
        name = getattr(projection, "name", None)
        if not isinstance(name, str) or not name:
            raise UsageError(f'{type(projection).__name__} has no name: set `name = "..."` in its class')
        if not projection.event_types():
            raise UsageError(f"{type(projection).__name__} handles no event type: mark methods with @handles(...)")
        if batch < 1:
            raise UsageError(f"batch must be at least 1 (got {batch})")
        self.store = store
        self.projection = projection
        self.target = target
        self.batch = batch
        self.idle = idle
        self.max_delay = max_delay
        self._types = projection.event_types()
        #: the checkpoint as this runner last committed it; None until the target is prepared
        self._position: int | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def position(self) -> int | None:
        """The checkpoint as this runner last saw or wrote it (None before the first call)."""
        return self._position

    async def start(self) -> int:
        """Create the checkpoint table and the read model (``setup``) if needed; the checkpoint."""
        self._position = await asyncio.to_thread(self.target.prepare, self.projection)
        return self._position

    async def close(self) -> None:
        await asyncio.to_thread(self.target.close)

    async def catch_up(self, *, progress: Progress | None = None) -> int:
        """Apply every event up to the log's end, ``batch`` per transaction; the number of events applied."""
        return await self._catch_up(progress, None)

    async def rebuild(self, *, progress: Progress | None = None) -> int:
        """Empty the read model and apply the whole log again; the number of events applied.

        The reset and the checkpoint's return to 0 commit together, before any event is applied: a rebuild
        that stops midway leaves a read model consistent with its checkpoint, to resume or rebuild again.
        """
        if type(self.projection).reset is Projection.reset:
            self.projection.reset(None)  # raises the UsageError that says what to write
        self._position = await asyncio.to_thread(self.target.prepare, self.projection, reset=True)
        return await self._catch_up(progress, None)

    async def run(self, stop: asyncio.Event) -> int:
        """Catch up, then follow the log live until ``stop`` is set (or the store closes), committing a batch
        when ``batch`` events are in or after ``idle`` seconds without one; the number of events applied.
        The events received when ``stop`` is set are committed before it returns."""
        applied = await self._catch_up(None, stop)
        if stop.is_set():
            return applied
        return applied + await self._follow(stop)

    async def status(self, *, count_limit: int = 100_000) -> ProjectionStatus:
        """Where the projection is against the log, without creating or changing anything."""
        found = await asyncio.to_thread(self.target.checkpoint, self.name)
        last = (await self.store.stats()).last_position
        checkpoint = None if found is None else found.position
        behind, position = 0, checkpoint or 0
        while behind < count_limit:
            page = await self.store.read_all(
                from_position=position, limit=min(1000, count_limit - behind), event_types=self._types
            )
            if not page:
                break
            behind += len(page)
            position = page[-1].position
        exact = behind < count_limit or not await self.store.read_all(
            from_position=position, limit=1, event_types=self._types
        )
        return ProjectionStatus(self.name, checkpoint, last, behind, exact, None if found is None else found.updated_at)

    # -- the work --

    async def _prepared(self) -> int:
        if self._position is None:
            return await self.start()
        return self._position

    async def _apply(self, events: list[RecordedEvent]) -> int:
        position = await self._prepared()
        try:
            handled = await asyncio.to_thread(self.target.apply, self.projection, position, events)
        except BaseException:
            # cancelled, the worker thread may still commit; failed, another runner may have moved it: either
            # way the checkpoint is read again (under the target's lock, so after that thread) before going on
            self._position = None
            raise
        self._position = events[-1].position
        return handled

    async def _catch_up(self, progress: Progress | None, stop: asyncio.Event | None) -> int:
        position = await self._prepared()
        applied = 0
        while stop is None or not stop.is_set():
            # the log's end as of now, read before the page: if the page comes back empty, every event up to it
            # has been seen, handled or not, and the checkpoint may move there
            # (the newest event, not stats(): that counts every event of the log, at each page)
            newest = await self.store.read_all(backwards=True, limit=1)
            last = newest[0].position if newest else 0
            page = await self.store.read_all(from_position=position, limit=self.batch, event_types=self._types)
            if not page:
                if last > position:  # only events of other types since: no need to scan them again next time
                    self._position = None  # (as in _apply, should it fail or be cancelled)
                    await asyncio.to_thread(self.target.advance, self.name, position, last)
                    self._position = position = last
                if progress is not None:
                    progress(position, max(last, position))
                break
            applied += await self._apply(page)
            position = page[-1].position
            if progress is not None:
                progress(position, max(last, position))
        return applied

    async def _follow(self, stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        position = await self._prepared()
        events = self.store.subscribe(from_position=position, event_types=self._types)
        stopping = asyncio.ensure_future(stop.wait())
        upcoming: asyncio.Task[RecordedEvent | None] | None = None
        pending: list[RecordedEvent] = []
        opened = 0.0
        applied = 0
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.create_task(_next(events))
                timeout = None
                if pending:
                    timeout = max(0.0, min(self.idle, opened + self.max_delay - loop.time()))
                done, _ = await asyncio.wait({upcoming, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                ended = False
                if upcoming in done:
                    event = upcoming.result()
                    upcoming = None
                    if event is None:
                        ended = True  # the store closed
                    else:
                        if not pending:
                            opened = loop.time()
                        pending.append(event)
                        if len(pending) < self.batch and not stopping.done():
                            continue  # more may be coming right behind it
                # here: the batch is full, or idle, or overdue, or we are stopping
                if pending:
                    applied += await self._apply(pending)
                    pending = []
                if ended or stopping.done():
                    return applied
        finally:
            for task in (upcoming, stopping):
                if task is not None and not task.done():
                    task.cancel()
                    # whatever it ends with (cancelled, or the subscription's own error) must not hide ours
                    await asyncio.gather(task, return_exceptions=True)
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()


__all__ = [
    "CHECKPOINTS",
    "Checkpoint",
    "PostgresTarget",
    "Projection",
    "ProjectionConflict",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionStatus",
    "SqliteTarget",
    "Target",
    "handles",
    "target_from_url",
]
