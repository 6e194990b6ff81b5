"""``async with`` for the things tidings starts and closes: brokers, event stores, idempotency stores, relays.

Each of them opens connections or threads in ``start()`` and lets go of them in ``close()``; this base class
gives them the one ``async with`` that runs both (``close()`` also when the body raises), instead of each
writing its own ``__aenter__`` and ``__aexit__``.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["Service"]


class Service(abc.ABC):
    """Something with an async ``start()`` and ``close()``, usable as ``async with service:``."""

    @abc.abstractmethod
    async def start(self) -> object:
        """Open what the service needs (connections, threads, tables); safe to call again."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Let go of what :meth:`start` opened."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
