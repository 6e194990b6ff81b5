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

__all__ = ["is_busy", "is_database_wide", "use_wal"]

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
