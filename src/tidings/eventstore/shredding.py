"""Crypto-shredding: personal fields encrypted with a key per subject, made unreadable by deleting that key.

An event store is append-only: its events are never rewritten, so personal data written into them cannot be
taken out again when a person asks to be forgotten. Crypto-shredding stores each personal value encrypted
with a key of its own *subject* (a user id, a customer id...); erasing the subject's key turns every such
value, in every event and snapshot, in this store and in its copies, into noise at once, while the rest of
the history stays readable and the events keep their places, versions and positions::

    class UserRegistered(Event, type="user.registered"):
        user_id: str
        plan: str
        email: Annotated[str | None, Personal]          # a personal field must accept None
        name: Annotated[str | None, Personal] = None

    shredder = Shredder(SqliteKeyStore("keys.db"))
    data = await shredder.encrypt_model("42", event)      # or encrypt(subject, dict, personal_fields(cls))
    await store.append("user-42", [NewEvent(str(uuid4()), "user.registered", orjson.dumps(data))])
    ...
    plain = await shredder.decrypt_many([orjson.loads(e.data) for e in await store.read_stream("user-42")])
    await shredder.erase("42")                            # from now on, email and name read as None

In the stored data, a personal value is replaced by a wrapper (its value, JSON-encoded with orjson,
encrypted with AES-256-GCM)::

    {"$shredded": "v1", "subject": "42", "nonce": "<base64, 12 bytes>", "ct": "<base64: ciphertext + tag>"}

and ``None`` stays ``None`` (nothing to protect, and no key is created for a subject that has no personal
data). The associated data of the encryption is the subject and the field's name: a ciphertext copied into
another field or another subject's event fails to decrypt (:class:`ShreddingError`) rather than passing off
as that field's value. Reading an erased subject's wrapper gives ``None`` (hence a personal field must accept
None: the event still validates after erasure); so does a subject that never had a key.

What is protected, what is not
------------------------------
Protected: the values of the fields marked :data:`Personal` (in events) or listed in ``__personal__`` (in an
aggregate's snapshot state), in every copy of the store, once the key is gone.

Not protected:

- everything else stays in clear: event types, stream ids (``user-42``: choose ids that are not personal
  data themselves, e.g. not an email address), metadata, non-personal fields, versions, positions, times;
  and the subject id, which each wrapper names so that a reader knows which key to ask for;
- the *length* of a personal value (GCM does not hide it), and whether it was None;
- copies of a key: a backup or replica of the key store taken before the erasure still holds it (keep key
  store backups short-lived, or apart from the event store's: the data is safe as long as no one holds both);
  the storage may keep old bytes (SQLite: see :class:`SqliteKeyStore`; PostgreSQL: see
  :class:`PostgresKeyStore`; file systems and SSDs keep freed blocks);
- caches: a key cached by another process keeps working there until its entry expires (``cache_ttl``, 60 s by
  default); the process that erases forgets the key at once;
- what was read before the erasure: projections, read models, logs, messages already published. Those must
  be rebuilt or purged by their owners (a projection rebuilt from the store after the erasure reads None).

Keys are 256-bit, from :func:`os.urandom`; they never appear in errors, logs or reprs. A key is never
created again for an erased subject (the erasure leaves a tombstone): writing a non-None personal value for
it raises :class:`SubjectErasedError`, since data written under a new key would read back while the old
events read as None, and a forgotten person would be half remembered.

The marker and :func:`personal_fields` need nothing beyond pydantic; :class:`Shredder` needs the
``cryptography`` package (``pip install 'tidings[crypto]'``), imported only when a shredder is made.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import collections
import contextlib
import importlib
import os
import re
import sqlite3
import threading
import time
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar

import orjson
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema

from tidings.errors import TidingsError, UsageError, one_line
from tidings.pgpool import ConnectionPool
from tidings.redact import redact_url
from tidings.sqlite_wal import advice

if TYPE_CHECKING:
    import psycopg
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: the wrapper's marker key and the one format version this module writes and reads
WRAPPER_KEY: Final = "$shredded"
FORMAT: Final = "v1"
#: 256-bit keys (AES-256-GCM)
KEY_SIZE: Final = 32
#: GCM's standard 96-bit nonce, random per value. Random nonces are safe up to about 2**32 encryptions under
#: one key; a key per subject keeps every key far below that
_NONCE_SIZE: Final = 12
#: what the associated data starts with: a ciphertext of this scheme cannot be taken for one of another
_AD_DOMAIN: Final = "tidings.shredding.v1"
DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_TABLE: Final = "tidings_subject_keys"
DEFAULT_CACHE_SIZE: Final = 10_000
DEFAULT_CACHE_TTL: Final = 60.0

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: SQLite's limit on the number of ``?`` in a statement is 32766 today, 999 in old builds: stay below both
_SQLITE_CHUNK: Final = 500

T = TypeVar("T")


class ShreddingError(TidingsError):
    """A shredded value could not be read or written: tampered ciphertext, unknown format, erased subject..."""


class SubjectErasedError(ShreddingError):
    """A key was asked for a subject whose key was erased: its personal data can no longer be written."""


class KeyStoreError(ShreddingError):
    """The key store could not do what was asked (database unreachable, locked, altered...)."""


def _check_subject(subject: object) -> str:
    if not isinstance(subject, str) or not subject:
        raise UsageError(f"a subject must be a non-empty string (a user id, a customer id...), not {subject!r}")
    return subject


def _check_subjects(subjects: Iterable[str]) -> list[str]:
    # a lone string is an iterable of one-letter subjects: almost certainly a mistake
    if isinstance(subjects, str | bytes):
        raise UsageError(f"subjects must be a collection of subject ids, not the single string {subjects!r}")
    return [_check_subject(s) for s in dict.fromkeys(subjects)]


# --- marking personal fields ------------------------------------------------------------------------------------


class _PersonalMarker:
    """The :data:`Personal` marker: ``Annotated[str | None, Personal]``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Personal"

    def __reduce__(self) -> str:
        return "Personal"  # pickles as the module's singleton

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # pydantic calls this while it builds the model, so a field that could not hold the None it reads as
        # once erased is refused when the class is defined, not when the first erased event is read back.
        # This also refuses the marker inside the type (Optional[Annotated[str, Personal]], list[...]): there
        # it would mark nothing, and the field would be stored in clear
        if not _allows_none(source):
            name = f"field {handler.field_name!r}" if handler.field_name else "a Personal value"
            shown = getattr(source, "__name__", None) or repr(source)
            raise UsageError(
                f"{name}: a Personal field must accept None (what it reads as once its subject's key is erased) "
                f"and mark the whole field: write Annotated[{shown} | None, Personal]"
            )
        return handler(source)


#: Marks a field of an event (a pydantic model) as personal data: ``email: Annotated[str | None, Personal]``.
Personal: Final = _PersonalMarker()


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _allows_none(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_allows_none(arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return None in typing.get_args(annotation)
    return False


def _marker_inside(annotation: Any) -> bool:
    """Whether :data:`Personal` appears anywhere within ``annotation`` (its arguments, at any depth)."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return any(e is Personal for e in extras) or _marker_inside(base)
    return any(_marker_inside(arg) for arg in typing.get_args(annotation))


_FIELDS: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()
_FIELDS_LOCK = threading.Lock()


def personal_fields(cls: type) -> frozenset[str]:
    """The names of ``cls``'s personal fields (cached per class).

    For a pydantic model (an :class:`~tidings.events.event.Event`): the fields annotated
    ``Annotated[X | None, Personal]``. For any other class (an aggregate, whose snapshot state is a dict):
    its ``__personal__`` class attribute, a set of attribute names (none declared: no personal field).

    Raises :class:`UsageError` for a personal field that does not accept None, or whose marker is not on the
    field itself (``list[Annotated[str, Personal]]``: would protect nothing).
    """
    with _FIELDS_LOCK:
        found = _FIELDS.get(cls)
    if found is None:
        found = _model_personal_fields(cls) if issubclass(cls, BaseModel) else _declared_personal_fields(cls)
        with _FIELDS_LOCK:
            _FIELDS[cls] = found
    return found


def _model_personal_fields(cls: type[BaseModel]) -> frozenset[str]:
    names = set()
    for name, info in cls.model_fields.items():
        if any(m is Personal for m in info.metadata):
            if not _allows_none(info.annotation):
                raise UsageError(
                    f"{cls.__name__}.{name}: a Personal field must accept None (what it reads as once its subject's "
                    f"key is erased): write Annotated[... | None, Personal]"
                )
            names.add(name)
        elif _marker_inside(info.annotation):
            raise UsageError(
                f"{cls.__name__}.{name}: Personal marks a whole field (its value is encrypted as one piece): "
                "write name: Annotated[... | None, Personal], not the marker inside the type"
            )
    return frozenset(names)


def _declared_personal_fields(cls: type) -> frozenset[str]:
    declared: object = getattr(cls, "__personal__", frozenset())
    if isinstance(declared, str | bytes) or not isinstance(declared, AbstractSet | Sequence):
        raise UsageError(
            f"{cls.__name__}.__personal__ must be a set of attribute names, e.g. frozenset({{'email'}}), "
            f"not {declared!r}"
        )
    if not all(isinstance(name, str) and name for name in declared):
        raise UsageError(f"{cls.__name__}.__personal__ must hold attribute names (non-empty strings)")
    return frozenset(declared)


# --- keys -------------------------------------------------------------------------------------------------------


class KeyStore(abc.ABC):
    """Where the subjects' keys live. A key, once erased, is gone for good: the subject keeps a tombstone, and
    :meth:`get_or_create` refuses it (:class:`SubjectErasedError`).

    Implementations: :class:`MemoryKeyStore`, :class:`SqliteKeyStore`, :class:`PostgresKeyStore`.
    """

    @abc.abstractmethod
    async def get_or_create(self, subject: str) -> bytes:
        """The subject's key, created (256 random bits) if it has none; :class:`SubjectErasedError` if erased."""

    @abc.abstractmethod
    async def get(self, subject: str) -> bytes | None:
        """The subject's key; None if it was erased or never created."""

    @abc.abstractmethod
    async def erase(self, subject: str) -> bool:
        """Destroy the subject's key (and refuse to create another): True if there was one to destroy."""

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        """:meth:`get` for each subject (the stores override it to ask their database once)."""
        return {subject: await self.get(subject) for subject in _check_subjects(subjects)}

    async def close(self) -> None:  # noqa: B027 (not abstract: a store holding nothing open has nothing to do)
        """Let go of connections and threads (the keys stay stored); the store reopens on next use."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _new_key() -> bytes:
    return os.urandom(KEY_SIZE)


class MemoryKeyStore(KeyStore):
    """Keys in a dict of this process: for tests and demos (nothing survives the process)."""

    def __init__(self) -> None:
        #: subject -> key; None: erased (the tombstone)
        self._keys: dict[str, bytes | None] = {}

    async def get_or_create(self, subject: str) -> bytes:
        _check_subject(subject)
        # no await between the look-up and the insertion: concurrent callers cannot make two keys
        if subject not in self._keys:
            self._keys[subject] = _new_key()
        key = self._keys[subject]
        if key is None:
            raise _erased(subject)
        return key

    async def get(self, subject: str) -> bytes | None:
        return self._keys.get(_check_subject(subject))

    async def erase(self, subject: str) -> bool:
        had_key = self._keys.get(_check_subject(subject)) is not None
        self._keys[subject] = None
        return had_key

    def __repr__(self) -> str:
        return f"MemoryKeyStore({len(self._keys)} subjects)"


def _erased(subject: str) -> SubjectErasedError:
    return SubjectErasedError(
        f"subject {subject!r} was erased: its personal data can no longer be stored (write None instead)"
    )


class _Miss:
    """What the cache answers for a subject it does not hold (None meaning erased)."""


_MISS: Final = _Miss()


class _KeyCache:
    """A bounded LRU of keys (and tombstones: None), each entry valid ``ttl`` seconds.

    Why a TTL: another process may erase a key; this one learns of it only by asking the store again.
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[bytes | None, float]] = collections.OrderedDict()

    def lookup(self, subject: str) -> bytes | _Miss | None:
        entry = self._entries.get(subject)
        if entry is None:
            return _MISS
        if entry[1] <= self._clock():
            del self._entries[subject]
            return _MISS
        self._entries.move_to_end(subject)
        return entry[0]

    def put(self, subject: str, key: bytes | None) -> None:
        if self.size <= 0:
            return
        self._entries[subject] = (key, self._clock() + self.ttl)
        self._entries.move_to_end(subject)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, subject: str) -> None:
        self._entries.pop(subject, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"_KeyCache({len(self._entries)}/{self.size} entries, ttl={self.ttl}s)"


class _CachedKeyStore(KeyStore):
    """A key store over a database, with a cache of :class:`_KeyCache` in front of it.

    Subclasses implement three steps on the database: :meth:`_fetch`, :meth:`_create`, :meth:`_erase`.
    """

    def __init__(self, cache_size: int, cache_ttl: float, clock: Callable[[], float]) -> None:
        if not isinstance(cache_size, int) or cache_size < 0:
            raise UsageError(f"cache_size must be a number of keys, 0 for no cache, not {cache_size!r}")
        if not cache_ttl > 0:
            raise UsageError(f"cache_ttl must be a positive number of seconds, not {cache_ttl!r}")
        self._cache = _KeyCache(cache_size, float(cache_ttl), clock)
        # bumped before and after each erasure: a look-up that overlapped one does not put what it read into
        # the cache (it may have read the key just before the erasure, and would keep it alive for a TTL)
        self._erasures = 0

    @abc.abstractmethod
    async def _fetch(self, subjects: list[str]) -> dict[str, bytes | None]:
        """The stored rows of ``subjects``: key, or None for a tombstone; a subject without a row is left out."""

    @abc.abstractmethod
    async def _create(self, subject: str, key: bytes) -> bytes | None:
        """Store ``key`` unless the subject has a row; the key the subject has now (None: erased)."""

    @abc.abstractmethod
    async def _erase(self, subject: str) -> bool:
        """Replace the subject's key by a tombstone (made if there was no row); whether there was a key."""

    async def get(self, subject: str) -> bytes | None:
        return (await self.get_many([subject]))[subject]

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        missing: list[str] = []
        for subject in _check_subjects(subjects):
            cached = self._cache.lookup(subject)
            if isinstance(cached, _Miss):
                missing.append(subject)
            else:
                found[subject] = cached
        if missing:
            epoch = self._erasures
            fetched = await self._fetch(missing)
            for subject in missing:
                if subject in fetched:
                    found[subject] = fetched[subject]
                    if epoch == self._erasures:
                        self._cache.put(subject, fetched[subject])
                else:
                    # never created: not cached, since another process may create it any moment
                    found[subject] = None
        return found

    async def get_or_create(self, subject: str) -> bytes:
        _check_subject(subject)
        cached = self._cache.lookup(subject)
        if isinstance(cached, bytes):
            return cached
        if cached is None:
            raise _erased(subject)
        epoch = self._erasures
        key = await self._create(subject, _new_key())
        if epoch == self._erasures:
            self._cache.put(subject, key)
        if key is None:
            raise _erased(subject)
        return key

    async def erase(self, subject: str) -> bool:
        _check_subject(subject)
        self._erasures += 1
        self._cache.forget(subject)
        try:
            erased = await self._erase(subject)
        finally:
            self._erasures += 1
            self._cache.forget(subject)
        self._cache.put(subject, None)  # a tombstone is for good: it may stay cached
        return erased

    @staticmethod
    def _checked_key(subject: str, key: object, where: str) -> bytes | None:
        if key is None:
            return None
        if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_SIZE:
            # the key's bytes are not shown: only that the row is wrong
            raise KeyStoreError(
                f"{where}: the key of subject {subject!r} is not {KEY_SIZE} bytes: the table was altered"
            )
        return bytes(key)


class SqliteKeyStore(_CachedKeyStore):
    """Keys in the table ``tidings_subject_keys`` of the SQLite database at ``path`` (created if missing)::

        CREATE TABLE tidings_subject_keys (subject TEXT PRIMARY KEY, key BLOB, created_at REAL NOT NULL,
                                           erased_at REAL)

    ``key`` is NULL once erased (``erased_at`` says when). Erasing overwrites the key's bytes with zeros, then
    sets it NULL, on a connection with ``PRAGMA secure_delete=ON`` (SQLite then zeroes the space that deleted
    content leaves behind); in WAL mode (a database shared with a WAL-mode event store) it also checkpoints and
    truncates the WAL, which holds old copies of pages. Without secure_delete, SQLite would keep the old key in
    free space of the file until a ``VACUUM`` or until the space is reused. What this cannot reach: the rollback
    journal and WAL files' freed blocks on disk, file-system snapshots, SSD wear levelling, and backups of the
    file made before the erasure.

    Blocking calls run in a thread of the store's own, one at a time. The cache holds up to ``cache_size`` keys,
    each for ``cache_ttl`` seconds (what another process's erasure takes, at most, to reach this one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = DEFAULT_TABLE,
        busy_timeout: float = 5.0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _NAME.fullmatch(table):
            raise UsageError(f"table must be a plain SQL name (letters, digits, _), not {table!r}")
        super().__init__(cache_size, cache_ttl, clock)
        self.path = Path(path)
        self.table = table
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._thread_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteKeyStore({str(self.path)!r}, table={self.table!r})"

    def _where(self) -> str:
        return f"SQLite key store {str(self.path)!r}"

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                conn.execute("PRAGMA secure_delete=ON")
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.table}" (subject TEXT PRIMARY KEY, key BLOB, '
                    "created_at REAL NOT NULL, erased_at REAL)"
                )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._thread_lock:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-keys-sqlite")
            thread = self._thread

        def call() -> T:
            try:
                return fn(self._open())
            except sqlite3.Error as exc:
                if self._conn is not None and self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise KeyStoreError(f"{self._where()}: {one_line(exc)}; {advice(exc, self.busy_timeout)}") from exc

        return await asyncio.get_running_loop().run_in_executor(thread, call)

    async def _fetch(self, subjects: list[str]) -> dict[str, bytes | None]:
        def fetch(conn: sqlite3.Connection) -> list[tuple[str, Any]]:
            rows: list[tuple[str, Any]] = []
            for i in range(0, len(subjects), _SQLITE_CHUNK):
                chunk = subjects[i : i + _SQLITE_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f'SELECT subject, key FROM "{self.table}" WHERE subject IN ({marks})'
                rows.extend(conn.execute(sql, chunk).fetchall())
            return rows

        return {s: self._checked_key(s, key, self._where()) for s, key in await self._run(fetch)}

    async def _create(self, subject: str, key: bytes) -> bytes | None:
        def create(conn: sqlite3.Connection) -> Any:
            # IMMEDIATE: the write lock from the start, so that two processes cannot both see "no row"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                f'INSERT OR IGNORE INTO "{self.table}" (subject, key, created_at) VALUES (?, ?, ?)',
                (subject, key, self._clock()),
            )
            row = conn.execute(f'SELECT key FROM "{self.table}" WHERE subject = ?', (subject,)).fetchone()
            conn.execute("COMMIT")
            return row[0]

        return self._checked_key(subject, await self._run(create), self._where())

    async def _erase(self, subject: str) -> bool:
        def erase(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            made = conn.execute(
                f'INSERT OR IGNORE INTO "{self.table}" (subject, key, created_at, erased_at) VALUES (?, NULL, ?, ?)',
                (subject, now, now),
            ).rowcount
            had_key = False
            if not made:
                # overwrite, then delete: the zeros take the key's place in the page, and secure_delete zeroes
                # the space the old cell leaves
                had_key = bool(
                    conn.execute(
                        f'UPDATE "{self.table}" SET key = zeroblob(length(key)) WHERE subject = ? AND key IS NOT NULL',
                        (subject,),
                    ).rowcount
                )
                conn.execute(
                    f'UPDATE "{self.table}" SET key = NULL, erased_at = coalesce(erased_at, ?) WHERE subject = ?',
                    (now, subject),
                )
            conn.execute("COMMIT")
            if had_key and conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                # the WAL keeps the pages as they were before, until a checkpoint writes them back and the
                # file is truncated (a reader still on an old snapshot may hold this back: done at next erase)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return had_key

        return await self._run(erase)

    async def close(self) -> None:
        with self._thread_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return

        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        try:
            await asyncio.get_running_loop().run_in_executor(thread, shut)
        finally:
            thread.shutdown(wait=False)
            self._cache.clear()


class PostgresKeyStore(_CachedKeyStore):
    """Keys in the table ``table`` (``schema.table`` allowed; created if missing) of the PostgreSQL database
    ``dsn``, through one connection (psycopg 3, async; key look-ups are rare behind the cache)::

        CREATE TABLE tidings_subject_keys (subject TEXT PRIMARY KEY, key BYTEA, created_at DOUBLE PRECISION
                                           NOT NULL, erased_at DOUBLE PRECISION)

    Erasing sets ``key`` to NULL. PostgreSQL never overwrites a row in place (MVCC): the old row version keeps
    the key in the table's files until VACUUM reclaims it (autovacuum, or run ``VACUUM`` on the table after
    erasures), and the WAL, its archives, replicas' and base backups keep it for as long as they are kept. Keep
    the key store's backups and archives short-lived, or apart from the event store's.

    The cache holds up to ``cache_size`` keys, each for ``cache_ttl`` seconds (what another process's erasure
    takes, at most, to reach this one). A failed statement drops the connection (the next call makes another)
    and raises :class:`KeyStoreError`, the DSN's password masked.
    """

    def __init__(
        self,
        dsn: str = DEFAULT_DSN,
        *,
        table: str = DEFAULT_TABLE,
        connect_timeout: float = 10.0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = table.split(".")
        if len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
            raise UsageError(f"table must be a name or schema.name, not {table!r}")
        try:
            self._psycopg: Any = importlib.import_module("psycopg")
            sql: Any = importlib.import_module("psycopg.sql")
        except ImportError as exc:
            raise UsageError("PostgresKeyStore needs the psycopg driver: pip install 'tidings[postgres]'") from exc
        super().__init__(cache_size, cache_ttl, clock)
        self.dsn = dsn
        self.table = table
        self.connect_timeout = connect_timeout
        # one connection: the statements of a store take turns on it (a failed one drops it, the next makes another)
        self._pool = ConnectionPool(dsn, size=1, connect_timeout=connect_timeout, error=self._error)
        self._started = False
        # composed with Identifier: the table's name is quoted, never pasted into the SQL
        t = sql.Identifier(*parts)
        now = sql.SQL("extract(epoch FROM clock_timestamp())")
        self._create_table_sql = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (subject TEXT PRIMARY KEY, key BYTEA, "
            "created_at DOUBLE PRECISION NOT NULL, erased_at DOUBLE PRECISION)"
        ).format(t)
        self._fetch_sql = sql.SQL("SELECT subject, key FROM {} WHERE subject = ANY(%s)").format(t)
        self._insert_sql = sql.SQL(
            "INSERT INTO {} (subject, key, created_at) VALUES (%s, %s, {}) ON CONFLICT (subject) DO NOTHING"
        ).format(t, now)
        self._select_sql = sql.SQL("SELECT key FROM {} WHERE subject = %s").format(t)
        self._tombstone_sql = sql.SQL(
            "INSERT INTO {} (subject, key, created_at, erased_at) VALUES (%s, NULL, {}, {}) "
            "ON CONFLICT (subject) DO NOTHING"
        ).format(t, now, now)
        self._erase_sql = sql.SQL(
            "UPDATE {} SET key = NULL, erased_at = {} WHERE subject = %s AND key IS NOT NULL"
        ).format(t, now)

    def __repr__(self) -> str:
        return f"PostgresKeyStore({redact_url(self.dsn)!r}, table={self.table!r})"

    def _where(self) -> str:
        return f"PostgreSQL key store {self.table!r} at {redact_url(self.dsn)}"

    def _error(self, exc: BaseException) -> KeyStoreError:
        message = f"{self._where()}: {redact_url(one_line(exc))}"
        if isinstance(exc, self._psycopg.OperationalError):
            message += "; check that PostgreSQL is running and that the DSN (host, port, user, database) is right"
        return KeyStoreError(message)

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], typing.Awaitable[T]]) -> T:
        if not self._started:
            self._pool.reopen()
            await self._pool.create(self.table, [self._create_table_sql])  # (errors come as KeyStoreError)
            self._started = True
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    async def _fetch(self, subjects: list[str]) -> dict[str, bytes | None]:
        async def fetch(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, Any]]:
            cursor = await conn.execute(self._fetch_sql, (subjects,))
            return await cursor.fetchall()

        return {s: self._checked_key(s, key, self._where()) for s, key in await self._run(fetch)}

    async def _create(self, subject: str, key: bytes) -> bytes | None:
        async def create(conn: psycopg.AsyncConnection[Any]) -> Any:
            # two statements, not one: after ON CONFLICT waited for another process's insert of the same
            # subject, only a new statement (a new snapshot, in autocommit) sees that row
            await conn.execute(self._insert_sql, (subject, key))
            cursor = await conn.execute(self._select_sql, (subject,))
            row = await cursor.fetchone()
            return None if row is None else row[0]

        return self._checked_key(subject, await self._run(create), self._where())

    async def _erase(self, subject: str) -> bool:
        async def erase(conn: psycopg.AsyncConnection[Any]) -> bool:
            # the tombstone first: if it goes in, there was no key; if the subject has a row already (or one
            # being inserted by another process, which ON CONFLICT waits for), the update then clears its key.
            # The other order could miss a key created between the two statements
            made = (await conn.execute(self._tombstone_sql, (subject,))).rowcount
            if made:
                return False
            return bool((await conn.execute(self._erase_sql, (subject,))).rowcount)

        return await self._run(erase)

    async def close(self) -> None:
        self._started = False
        self._cache.clear()
        await self._pool.close()


# --- encrypting and decrypting ----------------------------------------------------------------------------------


def _aesgcm_class() -> type[AESGCM]:
    try:
        module = importlib.import_module("cryptography.hazmat.primitives.ciphers.aead")
    except ImportError as exc:
        raise UsageError("crypto-shredding needs the cryptography package: pip install 'tidings[crypto]'") from exc
    cls: type[AESGCM] = module.AESGCM
    return cls


def _associated_data(subject: str, field: str) -> bytes:
    # a JSON array, not a concatenation: ("ab", "c") and ("a", "bc") must not give the same bytes
    return orjson.dumps([_AD_DOMAIN, subject, field])


def is_shredded(value: object) -> bool:
    """Whether ``value`` is a shredded value's wrapper (``{"$shredded": ...}``)."""
    return isinstance(value, dict) and WRAPPER_KEY in value


class _Wrapper(typing.NamedTuple):
    subject: str
    nonce: bytes
    ct: bytes


def _parse(field: str, value: dict[str, Any]) -> _Wrapper:
    version = value.get(WRAPPER_KEY)
    subject = value.get("subject")
    shown = f"field {field!r}" + (f" of subject {subject!r}" if isinstance(subject, str) else "")
    if version != FORMAT:
        raise ShreddingError(f"{shown}: unknown shredded format {version!r} (this version of tidings reads {FORMAT!r})")
    if not isinstance(subject, str) or not subject:
        raise ShreddingError(f"{shown}: malformed shredded value (no subject)")
    try:
        nonce = base64.b64decode(value["nonce"], validate=True)
        ct = base64.b64decode(value["ct"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ShreddingError(f"{shown}: malformed shredded value (nonce or ct missing or not base64)") from None
    if len(nonce) != _NONCE_SIZE or len(ct) < 16:
        raise ShreddingError(f"{shown}: malformed shredded value (nonce or ct of the wrong size)")
    return _Wrapper(subject, nonce, ct)


class Shredder:
    """Encrypts personal fields with their subject's key from ``keys``, and decrypts them (None once erased).

    Works on dicts (an event's JSON body, a snapshot's state): the event store only ever sees the result as
    opaque bytes. Only the top level of a dict is looked at: a personal field's value is encrypted as one piece,
    whatever it holds; decrypt a snapshot's ``state`` dict, not the snapshot body around it.
    """

    def __init__(self, keys: KeyStore) -> None:
        self._aesgcm = _aesgcm_class()
        self._invalid_tag: type[Exception] = importlib.import_module("cryptography.exceptions").InvalidTag
        self.keys = keys

    def __repr__(self) -> str:
        return f"Shredder({self.keys!r})"

    async def encrypt(self, subject: str, data: Mapping[str, Any], fields: AbstractSet[str]) -> dict[str, Any]:
        """A copy of ``data`` in which each of ``fields`` present and not None is replaced by its wrapper.

        The subject's key is created on first need (not at all if every personal value is None).
        Raises :class:`SubjectErasedError` for a non-None personal value of an erased subject, and
        :class:`ShreddingError` for a *non*-personal value shaped like a wrapper, which would be taken for
        a ciphertext when read back (and could be used to make a stream unreadable).
        """
        _check_subject(subject)
        if isinstance(fields, str):
            raise UsageError(f"fields must be a set of field names, not the single string {fields!r}")
        out = dict(data)
        todo: list[tuple[str, Any]] = []
        for name, value in out.items():
            if name in fields:
                if value is not None:
                    todo.append((name, value))
            elif is_shredded(value):
                raise ShreddingError(
                    f"field {name!r} of subject {subject!r} is not personal but holds a value shaped like a shredded "
                    f"one (a dict with {WRAPPER_KEY!r}): refusing to store it, it would be read back as a ciphertext"
                )
        if not todo:
            return out
        aes = self._aesgcm(await self.keys.get_or_create(subject))
        for name, value in todo:
            try:
                plain = orjson.dumps(value)
            except orjson.JSONEncodeError as exc:
                raise UsageError(
                    f"field {name!r} of subject {subject!r} cannot be encoded as JSON ({one_line(str(exc))}): "
                    "pass the model's model_dump(mode='json')"
                ) from None
            nonce = os.urandom(_NONCE_SIZE)
            ct = aes.encrypt(nonce, plain, _associated_data(subject, name))
            out[name] = {
                WRAPPER_KEY: FORMAT,
                "subject": subject,
                "nonce": base64.b64encode(nonce).decode("ascii"),
                "ct": base64.b64encode(ct).decode("ascii"),
            }
        return out

    async def encrypt_model(self, subject: str, model: BaseModel) -> dict[str, Any]:
        """``model.model_dump(mode="json")`` with its :func:`personal_fields` encrypted for ``subject``."""
        return await self.encrypt(subject, model.model_dump(mode="json"), personal_fields(type(model)))

    async def decrypt(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``data`` with every wrapper replaced by its value, or by None if its subject's key is gone.

        Raises :class:`ShreddingError` (naming the field and subject) for a ciphertext that does not
        authenticate: altered, or moved from another field or subject.
        """
        return (await self.decrypt_many([data]))[0]

    async def decrypt_many(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`decrypt` for each dict, asking the key store once for all the subjects they name."""
        parsed: list[list[tuple[str, _Wrapper]]] = []
        subjects: dict[str, None] = {}
        for data in items:
            wrappers = [(name, _parse(name, value)) for name, value in data.items() if is_shredded(value)]
            parsed.append(wrappers)
            subjects.update(dict.fromkeys(w.subject for _, w in wrappers))
        if not subjects:
            return [dict(data) for data in items]
        keys = await self.keys.get_many(subjects)
        ciphers = {subject: self._aesgcm(key) for subject, key in keys.items() if key is not None}
        out: list[dict[str, Any]] = []
        for data, wrappers in zip(items, parsed, strict=True):
            plain = dict(data)
            for name, wrapper in wrappers:
                aes = ciphers.get(wrapper.subject)
                if aes is None:
                    plain[name] = None  # the key is gone: that is what erasure means
                    continue
                try:
                    clear = aes.decrypt(wrapper.nonce, wrapper.ct, _associated_data(wrapper.subject, name))
                except self._invalid_tag:
                    raise ShreddingError(
                        f"cannot decrypt field {name!r} of subject {wrapper.subject!r}: its ciphertext was altered, "
                        "or moved from another field or subject"
                    ) from None
                try:
                    plain[name] = orjson.loads(clear)
                except orjson.JSONDecodeError:
                    raise ShreddingError(
                        f"field {name!r} of subject {wrapper.subject!r}: the decrypted value is not JSON"
                    ) from None
            out.append(plain)
        return out

    async def erase(self, subject: str) -> bool:
        """Forget the subject's key for good (see :meth:`KeyStore.erase`): True if there was one."""
        return await self.keys.erase(subject)


__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_TABLE",
    "FORMAT",
    "KEY_SIZE",
    "WRAPPER_KEY",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "Personal",
    "PostgresKeyStore",
    "Shredder",
    "ShreddingError",
    "SqliteKeyStore",
    "SubjectErasedError",
    "is_shredded",
    "personal_fields",
]
