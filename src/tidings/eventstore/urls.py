"""An event store from a URL, for the command line and for configuration files.

========================================  =====================================================
``memory://``                             in this process only (tests, demos)
``sqlite:///path/to/events.db``           the embedded default: one SQLite file (``sqlite:///:memory:`` is refused)
``postgresql://user@host:5432/db``        PostgreSQL (``?schema=name``, default ``tidings``); ``postgres://`` too
========================================  =====================================================
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

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
        # as SQLAlchemy and the sqlite broker read it: sqlite:///events.db is relative, sqlite:////var/events.db not
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if parts.netloc or not path or path == ":memory:" or path.startswith("file:"):
            raise UsageError(f"an SQLite event store is a file: sqlite:///path/to/events.db, not {redact_url(url)!r}")
        from tidings.eventstore.sqlite import SqliteEventStore

        return SqliteEventStore(path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", "tidings")
        rest = "&".join(f"{k}={v}" for k, v in query.items())
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
        from tidings.eventstore.postgres import PostgresEventStore

        return PostgresEventStore(dsn, schema=schema)
    raise UsageError(
        f"not an event store URL: {redact_url(url)!r} (memory://, sqlite:///path/to/events.db, postgresql://...)"
    )


__all__ = ["store_from_url"]
