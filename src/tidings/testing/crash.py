"""Deterministic crash hooks: kill a consumer with SIGKILL exactly where a crash hurts most.

Random kills rarely land in the windows that matter (between a handler's effect and its dedupe mark,
between the mark and the ack), so crash tests name the window instead::

    TIDINGS_CRASH_AT=after-mark:25 python consumer.py     # dies at the 25th ack, after its mark committed

The points, in the order a delivery passes them:

==================  =====================================================================================
``before-handler``  the broker handed the delivery over; nothing ran yet
``after-effect``    the handler wrote its effect (the handler calls :func:`crash_point` itself), before
                    the dedupe mark and the commit
``after-mark``      the handler returned and the mark is committed; the ack not yet sent
``after-ack``       the ack was handed to the broker (it may or may not have reached it)
==================  =====================================================================================

:class:`CrashingBroker` wraps a real broker and calls the hooks around its deliveries; it changes nothing
else. ``SIGKILL`` gives the process no chance to clean up: no ``finally``, no flush, no goodbye to the
broker, which is what a power cut or the OOM killer does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from tidings.brokers.base import Delivery, Handler, Subscription
from tidings.testing.wrap import BrokerWrapper

CRASH_POINTS = ("before-handler", "after-effect", "after-mark", "after-ack")
ENV = "TIDINGS_CRASH_AT"

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    if point not in CRASH_POINTS or not nth.isdigit():
        raise ValueError(f"{ENV}={spec!r}: expected POINT:N with POINT one of {', '.join(CRASH_POINTS)}")
    return point, int(nth)


def crash_point(point: str) -> None:
    """Pass ``point``; if ``TIDINGS_CRASH_AT`` names it and this is its N-th passing, die now (SIGKILL)."""
    target = _target()
    if target is None or target[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


class _CrashingDelivery(Delivery):
    def __init__(self, inner: Delivery) -> None:
        self._inner = inner
        self.message = inner.message
        self.attempt = inner.attempt
        self._settled = False

    async def ack(self) -> None:
        crash_point("after-mark")  # the App acks right after the handler returned and the mark committed
        await self._inner.ack()
        crash_point("after-ack")

    async def nack(self, *, delay: float = 0.0) -> None:
        await self._inner.nack(delay=delay)

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        await self._inner.dead_letter(reason, details)


class CrashingBroker(BrokerWrapper):
    """``inner``, with :func:`crash_point` called before each handler and around each ack."""

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        async def crashing(delivery: Delivery) -> None:
            crash_point("before-handler")
            await handler(_CrashingDelivery(delivery))

        return await self.inner.subscribe(channel, group, crashing, prefetch=prefetch)


__all__ = ["CRASH_POINTS", "ENV", "CrashingBroker", "crash_point"]
