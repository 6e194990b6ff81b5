"""Switching a SQLite file to WAL mode when other processes may be opening it at the same moment.

Every SQLite component of tidings (the embedded broker, the event store, the idempotency store and
projection checkpoints) keeps its file in WAL mode. The switch, and the first read of a WAL file, can
fail with ``database is locked`` *without* SQLite calling the busy handler: while another connection
converts the journal or rebuilds the WAL index, SQLite returns SQLITE_BUSY at once, so the connection's
``timeout`` does not help. Four processes starting on one new file hit this; the cure is to retry
for as long as the busy timeout would have waited.
"""

from __future__ import annotations

import random
import sqlite3
import time

__all__ = ["use_wal"]


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
            message = str(exc)
            if ("locked" not in message and "busy" not in message) or time.monotonic() >= deadline:
                raise
        # jittered so that processes which collided once do not collide again in step
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.1)
