"""An event store from a URL, for the command line and for configuration files.

========================================  =====================================================
``memory://``                             in this process only (tests, demos)
``sqlite:///path/to/events.db``           the embedded default: one SQLite file (``sqlite:///:memory:`` is refused)
``postgresql://user@host:5432/db``        PostgreSQL (``?schema=name``, default ``tidings``); ``postgres://`` too
========================================  =====================================================
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.dburl import POSTGRES_SCHEMES, postgres_dsn, sqlite_file
from tidings.errors import UsageError
from tidings.eventstore.base import EventStore
from tidings.redact import redact_url


def store_from_url(url: str) -> EventStore:
    """The store ``url`` names (not started)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from tidings.eventstore.memory import MemoryEventStore

        return MemoryEventStore()
    if scheme == "sqlite":
        path = sqlite_file(parts)
        if path is None:
            raise UsageError(f"an SQLite event store is a file: sqlite:///path/to/events.db, not {redact_url(url)!r}")
        from tidings.eventstore.sqlite import SqliteEventStore

        return SqliteEventStore(path)
    if scheme in POSTGRES_SCHEMES:
        dsn, schema = postgres_dsn(parts, "schema")
        from tidings.eventstore.postgres import PostgresEventStore

        return PostgresEventStore(dsn, schema=schema or "tidings")
    raise UsageError(
        f"not an event store URL: {redact_url(url)!r} (memory://, sqlite:///path/to/events.db, postgresql://...)"
    )


__all__ = ["store_from_url"]
