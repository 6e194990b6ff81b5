"""Reading database URLs the one way every part of tidings takes them.

``sqlite:///events.db`` is a path relative to the working directory and ``sqlite:////var/events.db`` an
absolute one (as SQLAlchemy and the embedded broker read them); ``postgresql://user@host:5432/db`` (also
``postgres://`` and ``postgresql+psycopg://``) is handed to libpq once tidings' own query parameters (such
as ``schema``) are taken out. The callers keep their own error messages: they know what the URL was for.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlunsplit

__all__ = ["POSTGRES_SCHEMES", "postgres_dsn", "sqlite_file"]

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def sqlite_file(parts: SplitResult) -> str | None:
    """The file a ``sqlite://`` URL names; None when it names none (a host, no path, ``:memory:``, ``file:``)."""
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if parts.netloc or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def postgres_dsn(parts: SplitResult, option: str) -> tuple[str, str | None]:
    """The libpq URL of a PostgreSQL URL without tidings' ``option`` parameter, and that option's value."""
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == option), None)
    # encoded again (a value may hold & or =), with %20 for a space: libpq does not read + as one
    rest = urlencode([(k, v) for k, v in query if k != option], quote_via=quote)
    return urlunsplit(("postgresql", parts.netloc, parts.path, rest, "")), value
