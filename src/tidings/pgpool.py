"""A small pool of autocommit psycopg 3 connections, for the PostgreSQL stores (idempotency, event store).

psycopg_pool would do, but it is another dependency for what these stores need: a handful of connections,
opened on demand, handed out one task at a time, and dropped rather than reused when one comes back dirty
(in a transaction, or broken). Imported only by modules that already need psycopg.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


class ConnectionPool:
    """At most ``size`` connections to ``dsn``; ``error`` turns a driver error into the store's own."""

    def __init__(
        self, dsn: str, *, size: int, connect_timeout: float, error: Callable[[BaseException], Exception]
    ) -> None:
        import psycopg

        self._psycopg = psycopg
        self.dsn = dsn
        self.size = size
        self.connect_timeout = connect_timeout
        self._error = error
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        #: False after close(): connections coming back are closed, not kept
        self.open = True

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new connection of its own (not counted in the pool), e.g. for LISTEN."""
        try:
            conn: psycopg.AsyncConnection[Any] = await self._psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc
        return conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the pool, in autocommit mode; dropped instead of returned if it is not clean."""
        idle_status = self._psycopg.pq.TransactionStatus.IDLE
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.connect()
            try:
                yield conn
            finally:
                if self.open and not conn.closed and conn.info.transaction_status == idle_status:
                    self._idle.append(conn)
                else:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def create(self, name: str, statements: list[Any]) -> None:
        """Run the ``CREATE ... IF NOT EXISTS`` statements of a schema, one process at a time.

        ``IF NOT EXISTS`` is not safe against itself: stores starting together would fail on the catalog's
        unique indexes, so they take turns on an advisory lock named after what they create."""
        try:
            async with self.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tidings:{name}",))
                for statement in statements:
                    await conn.execute(statement)
        except self._psycopg.Error as exc:
            raise self._error(exc) from exc

    async def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back."""
        self.open = False
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()

    def reopen(self) -> None:
        """Take connections back again (after close()); the slots are new, as asyncio's primitives belong to the
        event loop they first wait in, and a store may be started again in another one."""
        self.open = True
        self._slots = asyncio.Semaphore(self.size)


__all__ = ["ConnectionPool"]
