"""A broker that hands every call to another one: the base of the test kit's instrumented brokers.

Fault and crash tests need a *real* broker with one behaviour changed (a publish that fails on cue, a
process that dies inside a delivery). Subclass :class:`BrokerWrapper` and override that one method; all
the rest goes to the wrapped broker unchanged, so what is tested is the real adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tidings.brokers.base import Broker, DeadLetter, Handler, Message, Subscription

if TYPE_CHECKING:
    from tidings.asyncapi.document import Document


class BrokerWrapper(Broker):
    """``inner``, unchanged; override what the test changes."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.schemes = inner.schemes
        self.capabilities = inner.capabilities

    @property
    def url(self) -> str:
        return self.inner.url

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, message: Message) -> None:
        await self.inner.publish(message)

    async def publish_many(self, messages: Iterable[Message]) -> None:
        await self.inner.publish_many(messages)

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        return await self.inner.subscribe(channel, group, handler, prefetch=prefetch)

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.inner.dead_letters()

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        return await self.inner.settle_dead_letters(select, replay=replay, progress=progress)

    async def declare(self, document: Document) -> None:
        await self.inner.declare(document)


__all__ = ["BrokerWrapper"]
