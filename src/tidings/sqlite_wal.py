"""What every SQLite component of tidings shares: switching a file to WAL mode when other processes may be
opening it at the same moment, and telling a database's own trouble from a statement's.

Every SQLite component of tidings (the embedded broker, the event store, the idempotency store and
projection checkpoints) keeps its file in WAL mode. The switch, and the first read of a WAL file, can
fail with ``database is locked`` *without* SQLite calling the busy handler: while another connection
converts the journal or rebuilds the WAL index, SQLite returns SQLITE_BUSY at once, so the connection's
``timeout`` does not help. Four processes starting on one new file hit this; the cure is to retry
for as long as the busy timeout would have waited.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from typing import TypeGuard

__all__ = ["advice", "is_busy", "is_database_wide", "use_wal"]

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_DATABASE_WIDE = re.compile(r"locked|busy|full|disk I/O|malformed|readonly|unable to open", re.IGNORECASE)


def use_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Run ``PRAGMA journal_mode = WAL`` on ``conn``, retrying a busy file for up to ``timeout`` seconds.

    Returns the journal mode SQLite reports (``"wal"`` unless the file system cannot do WAL, such as
    some network shares); the caller decides whether anything else is acceptable.
    """
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        # jittered so that processes which collided once do not collide again in step
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.1)


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def is_database_wide(exc: BaseException) -> TypeGuard[sqlite3.DatabaseError]:
    """An error of the database itself (a lock held elsewhere, a full or failing disk, a corrupt or read-only
    file), not of the statement that met it: every other statement would meet it too."""
    return isinstance(exc, sqlite3.DatabaseError) and bool(_DATABASE_WIDE.search(str(exc)))


def advice(exc: BaseException, busy_timeout: float) -> str:
    """What to do about ``exc``, by its SQLite error code: the end of a one-line error."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF if isinstance(exc, sqlite3.Error) else 0
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or (code == 0 and "locked" in str(exc)):
        return (
            f"another connection or process held the write lock for longer than busy_timeout ({busy_timeout:g} s): "
            "retry, raise busy_timeout, or keep other writers' transactions short"
        )
    if code == 13:  # SQLITE_FULL
        return "the disk (or the file system's quota) is full: free some space"
    if code == 8:  # SQLITE_READONLY
        return "check that the file and its folder are writable (SQLite writes -wal and -shm files next to it)"
    if code in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return "the file is not a SQLite database or is damaged: check the path"
    if code == 14:  # SQLITE_CANTOPEN
        return "check that the folder exists and is writable"
    return "check that the path is a SQLite database on a local, writable disk with free space"
