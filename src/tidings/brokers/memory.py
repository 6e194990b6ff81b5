"""``memory://``: an in-process broker for tests and demos, with the semantics of the real ones.

Each consumer group has its own queue per subscription pattern; members of a group share it; every group
sees every message published after it subscribed. Unacknowledged messages are delivered again (nack with a
delay, or a handler that raised), dead letters are kept with their reason. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ORIGIN,
    PATTERNS,
    Broker,
    BrokerError,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Subscription,
    channel_matcher,
)


class _Group:
    def __init__(self, name: str, pattern: str) -> None:
        self.name = name
        self.pattern = pattern
        self.matches: Callable[[str], bool] = channel_matcher(pattern)
        self.queue: asyncio.Queue[tuple[Message, int]] = asyncio.Queue()
        self.members = 0


class MemoryDelivery(Delivery):
    __slots__ = ("_broker", "_group", "_settled", "attempt", "message")

    def __init__(self, broker: MemoryBroker, group: _Group, message: Message, attempt: int) -> None:
        self._broker = broker
        self._group = group
        self.message = message
        self.attempt = attempt
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def nack(self, *, delay: float = 0.0) -> None:
        if not self._settle():
            return
        item = (self.message, self.attempt + 1)
        if delay <= 0:
            self._broker._put(self._group, item)
        else:
            self._broker._later(delay, self._group, item)

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        if self._settle():
            broker = self._broker
            broker._dead_ids += 1
            details = {**(details or {}), DL_ORIGIN: f"memory:{self._group.name}"}
            dead = DeadLetter(self.message, self._group.name, reason, self.attempt, details, str(broker._dead_ids))
            broker._dead.append(dead)


class _MemorySubscription(Subscription):
    """``prefetch`` long-lived workers share the group's queue: at most ``prefetch`` deliveries in flight.

    (Workers rather than a task per delivery: creating and scheduling a task cost more than the rest of
    the memory broker's work per message.)
    """

    def __init__(self, broker: MemoryBroker, group: _Group, handler: Handler, prefetch: int) -> None:
        self.channel = group.pattern
        self.group = group.name
        self._broker = broker
        self._group = group
        self._handler = handler
        self._closing = False
        self._busy: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"memory:{group.pattern}:{i}") for i in range(prefetch)]

    async def _work(self) -> None:
        queue = self._group.queue
        me = asyncio.current_task()
        assert me is not None
        while not self._closing:
            message, attempt = await queue.get()
            self._busy.add(me)
            try:
                await self._handle(message, attempt)
            finally:
                self._busy.discard(me)

    async def _handle(self, message: Message, attempt: int) -> None:
        delivery = MemoryDelivery(self._broker, self._group, message, attempt)
        try:
            await self._handler(delivery)
        except Exception:
            # a handler that raises has not processed the message: at-least-once means try again
            await delivery.nack(delay=0.0)
        else:
            if not delivery._settled:  # the handler forgot: treat as done, like an auto-ack consumer
                await delivery.ack()
        finally:
            self._broker._done_one()

    async def close(self) -> None:
        """Stop intake now; workers in the middle of a delivery finish it first."""
        if self._closing:
            return
        self._closing = True
        for worker in self._workers:
            if worker not in self._busy:  # waiting for a message: nothing to finish
                worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._group.members -= 1


class MemoryBroker(Broker):
    schemes = ("memory",)
    capabilities = frozenset({DELAYED_REDELIVERY, DEAD_LETTER, PATTERNS})

    def __init__(self, url: str = "memory://") -> None:
        self._url = url
        self._groups: dict[tuple[str, str], _Group] = {}
        self._subscriptions: list[_MemorySubscription] = []
        self._dead: list[DeadLetter] = []
        self._dead_ids = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._started = False
        #: every message published, in order, when ``record`` is on (the test harness turns it on); off by
        #: default, so a long-running memory:// app does not keep every message it ever saw
        self.record = False
        self.published: list[Message] = []
        # messages queued, being handled, or waiting for a delayed redelivery: 0 means idle
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def url(self) -> str:
        return self._url

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._subscriptions.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._started = False

    async def publish(self, message: Message) -> None:
        if not self._started:
            raise BrokerError("the memory broker is not started: use `async with broker:` or await broker.start()")
        if self.record:
            self.published.append(message)
        for group in self._groups.values():
            if group.matches(message.channel):
                self._put(group, (message, 1))

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        if not self._started:
            raise BrokerError("the memory broker is not started: use `async with broker:` or await broker.start()")
        state = self._groups.get((channel, group))
        if state is None:
            state = self._groups[(channel, group)] = _Group(group, channel)
        state.members += 1
        subscription = _MemorySubscription(self, state, handler, max(1, prefetch))
        self._subscriptions.append(subscription)
        return subscription

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        done = 0
        kept: list[DeadLetter] = []
        for dead in self._dead:
            if not select(dead):
                kept.append(dead)
                continue
            if replay:
                await self.publish(dead.message)
            done += 1
            if progress is not None:
                progress(done)
        self._dead = kept
        return done

    async def join(self, timeout: float = 10.0) -> None:
        """Wait until every published message has been handled and settled (tests: no sleeps needed)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    def _put(self, group: _Group, item: tuple[Message, int]) -> None:
        self._pending += 1
        self._idle.clear()
        group.queue.put_nowait(item)

    def _done_one(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def _later(self, delay: float, group: _Group, item: tuple[Message, int]) -> None:
        loop = asyncio.get_running_loop()
        self._pending += 1  # the waiting redelivery counts as work not yet done
        self._idle.clear()

        def put() -> None:
            self._timers.discard(handle)
            self._put(group, item)
            self._done_one()

        handle = loop.call_later(delay, put)
        self._timers.add(handle)


__all__ = ["MemoryBroker", "MemoryDelivery"]
