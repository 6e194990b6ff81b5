"""A hypothesis stateful test of the consumer pipeline against a model: no lost and no doubly-applied events.

The system under test is the real pipeline: an :class:`App` on the embedded ``sqlite://`` broker, a subscriber
with ``inbox=True`` on a :class:`SqliteIdempotencyStore`, whose handler writes its effect (a row of ``effects``)
through ``context.connection``, in the transaction that marks the event processed. The model is the set of
event ids published. Hypothesis interleaves:

``publish(n)``            n new events
``duplicate_delivery(i)`` the very same message (same event id) published again: the broker delivers it twice
``deliver_some``          the consumer runs until it has nothing left it may take
``crash(point, nth, k)``  k new events, then the consumer dies at the nth passing of ``point`` (see below)
``redeliver``             the broker's clock passes the visibility timeout: unsettled leases come back
``restart``               the consumer is stopped and made anew (broker, store, app) on the same files
``drain``                 run until the broker has nothing left for the group; then every event applied once

A crash is a :class:`Crash` (a ``BaseException``, so nothing in the pipeline takes it for a handler failure)
raised at ``before-handler`` (delivery taken, nothing run), ``after-effect`` (effect written, not committed),
``after-mark`` (effect and mark committed, no ack) or ``after-ack`` (ack handed to the broker). From then on the
consumer is dead: every delivery and every settle it attempts raises ``Crash`` too, until it is stopped. What it
had begun is never settled: those leases come back when the broker's clock passes ``visibility_timeout`` (a fake
clock, so a redelivery costs no waiting). Two things differ from SIGKILL, both towards outcomes a real crash may
also have: deliveries taken but not yet begun are given back by the subscription's close, and an ack already
handed to the broker still commits (SIGKILL may lose it, which only adds a redelivery).

Invariants, after every step: every effect's event id was published, and no event id has two effects. At the
end of every example (``teardown``): drained, every published id has exactly one effect (nothing lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from tidings.app import App, EventContext
from tidings.brokers.base import Delivery, Handler, Message, Subscription
from tidings.brokers.sqlite import SqliteBroker
from tidings.events.event import Event
from tidings.reliability.idempotency import SqliteIdempotencyStore
from tidings.reliability.retry import RetryPolicy
from tidings.testing.wrap import BrokerWrapper

CHANNEL = "pipeline.ordered"
GROUP = "fulfilment"
#: seconds of the broker's (fake) clock a delivery stays leased
VISIBILITY = 5.0
CRASH_POINTS = ("before-handler", "after-effect", "after-mark", "after-ack")
#: real seconds a step may take to reach quiet before it gives up waiting (drain fails instead)
STEP_LIMIT = 5.0

FIGURES: Counter[str] = Counter()


class Crash(BaseException):
    """The consumer process dies here (not an Exception: no handler-failure path may take it)."""


class Ordered(Event, type="pipeline.ordered"):
    order_id: int


class Switch:
    """Where the consumer dies: armed with a point, its next passing raises :class:`Crash`; then every one does."""

    def __init__(self) -> None:
        self.armed: str | None = None
        #: the armed point's passings left before the crash (1: the next one)
        self.countdown = 0
        self.dead = False
        #: deliveries between the broker and the end of their settle, now
        self.in_flight = 0

    def passing(self, point: str) -> None:
        if self.dead:
            raise Crash(point)
        if self.armed == point:
            self.countdown -= 1
            if self.countdown > 0:
                return
            self.armed = None
            self.dead = True
            FIGURES[f"crash {point}"] += 1
            raise Crash(point)


class _CrashableDelivery(Delivery):
    def __init__(self, inner: Delivery, switch: Switch) -> None:
        self._inner = inner
        self._switch = switch
        self.message = inner.message
        self.attempt = inner.attempt
        self._settled = False

    async def ack(self) -> None:
        self._switch.passing("after-mark")  # the App acks once the handler returned and the inbox committed
        await self._inner.ack()
        self._switch.passing("after-ack")

    async def nack(self, *, delay: float = 0.0) -> None:
        self._switch.passing("nack")
        await self._inner.nack(delay=delay)

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        self._switch.passing("dead-letter")
        await self._inner.dead_letter(reason, details)


class CrashableBroker(BrokerWrapper):
    """``inner`` with the :class:`Switch` consulted before each handler and around each settle."""

    def __init__(self, inner: SqliteBroker, switch: Switch) -> None:
        super().__init__(inner)
        self.switch = switch

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        switch = self.switch

        async def crashable(delivery: Delivery) -> None:
            switch.in_flight += 1
            try:
                if delivery.attempt > 1:
                    FIGURES["redeliveries"] += 1
                switch.passing("before-handler")
                await handler(_CrashableDelivery(delivery, switch))
            finally:
                switch.in_flight -= 1

        return await self.inner.subscribe(channel, group, crashable, prefetch=prefetch)


class Consumer:
    """One incarnation of the consuming process: its broker connection, its store, its app."""

    def __init__(self, folder: Path, clock: Any) -> None:
        self.switch = Switch()
        self.broker = SqliteBroker(f"sqlite:///{folder / 'broker.db'}", visibility_timeout=VISIBILITY, clock=clock)
        self.store = SqliteIdempotencyStore(folder / "inbox.db")
        self.app = App(CrashableBroker(self.broker, self.switch), name="consumer", shutdown_timeout=5)
        switch = self.switch

        @self.app.subscriber(
            CHANNEL, group=GROUP, idempotency=self.store, inbox=True, prefetch=4, retry=RetryPolicy(1000)
        )
        async def apply(event: Ordered, context: EventContext) -> None:
            context.connection.execute(
                "INSERT INTO effects (event_id, order_id) VALUES (?, ?)", (context.envelope.event_id, event.order_id)
            )
            switch.passing("after-effect")

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.app.subscribers)

    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        try:
            await self.app.stop(timeout=5)
        finally:
            await self.store.close()


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        FIGURES["examples"] += 1
        self.folder = Path(tempfile.mkdtemp(prefix="tidings-model-"))
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_exception)
        self.now = time.time()
        #: the model: every event id published, and its message (for duplicates)
        self.published: dict[str, Message] = {}
        self.consumer: Consumer | None = None
        self.duplicates_absorbed = 0
        self.duplicates_sent = 0
        self.next_order = 0
        with contextlib.closing(sqlite3.connect(self.folder / "inbox.db")) as conn, conn:
            # no unique constraint: an event applied twice must show as two rows, not as an error
            conn.execute("CREATE TABLE effects (event_id TEXT NOT NULL, order_id INTEGER NOT NULL)")
        self.producer_broker = SqliteBroker(f"sqlite:///{self.folder / 'broker.db'}", clock=self.clock)
        self.producer = App(self.producer_broker, name="producer")
        self.loop.run_until_complete(self.producer_broker.start())

    # -- plumbing --

    def clock(self) -> float:
        return self.now

    @staticmethod
    def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # a crashed consumer's worker tasks end with Crash, which nobody retrieves: that is the crash itself
        if isinstance(context.get("exception"), Crash):
            return
        loop.default_exception_handler(context)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def effects(self) -> Counter[str]:
        with contextlib.closing(sqlite3.connect(self.folder / "inbox.db", isolation_level=None)) as conn:
            return Counter(event_id for (event_id,) in conn.execute("SELECT event_id FROM effects"))

    def broker_state(self) -> tuple[int, int, int]:
        """(log positions not yet read by the group, leases it may take now, leases the live consumer holds)."""
        owner = self.consumer.broker._owner if self.consumer is not None else ""
        with contextlib.closing(sqlite3.connect(self.folder / "broker.db", isolation_level=None)) as conn:
            last = conn.execute("SELECT coalesce(max(position), 0) FROM tidings_log").fetchone()[0]
            row = conn.execute("SELECT id, cursor FROM tidings_groups WHERE grp = ?", (GROUP,)).fetchone()
            if row is None:
                return last, 0, 0
            group_id, cursor = row
            takeable, held = conn.execute(
                "SELECT coalesce(sum(visible_at <= ?), 0), coalesce(sum(owner = ?), 0) FROM tidings_leases "
                "WHERE group_id = ?",
                (self.now, owner, group_id),
            ).fetchone()
            return last - cursor, takeable, held

    def leases(self) -> int:
        with contextlib.closing(sqlite3.connect(self.folder / "broker.db", isolation_level=None)) as conn:
            return int(conn.execute("SELECT count(*) FROM tidings_leases").fetchone()[0])

    def live(self) -> Consumer:
        if self.consumer is None:
            consumer = Consumer(self.folder, self.clock)
            self.run(consumer.start())
            self.consumer = consumer
        return self.consumer

    async def until_quiet(self, consumer: Consumer) -> bool:
        """Run until the consumer has taken and settled all it may take now (or died); False on STEP_LIMIT."""
        deadline = time.monotonic() + STEP_LIMIT
        calm = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            if consumer.switch.dead:
                return True
            busy = consumer.switch.in_flight or any(self.broker_state())
            calm = 0 if busy else calm + 1
            if calm >= 2:
                return True
        return False

    def retire(self, consumer: Consumer) -> None:
        self.duplicates_absorbed += consumer.duplicates
        self.run(consumer.stop())
        self.consumer = None

    # -- rules --

    @rule(n=st.integers(min_value=1, max_value=6))
    def publish(self, n: int) -> None:
        messages = []
        for _ in range(n):
            message, envelope = self.producer._prepare(Ordered(order_id=self.next_order), None, None, None, None, None)
            self.next_order += 1
            self.published[envelope.event_id] = message
            messages.append(message)
        self.run(self.producer_broker.publish_many(messages))
        FIGURES["events published"] += n

    @precondition(lambda self: bool(self.published))
    @rule(i=st.integers(min_value=0, max_value=1000))
    def duplicate_delivery(self, i: int) -> None:
        ids = sorted(self.published)
        self.run(self.producer_broker.publish(self.published[ids[i % len(ids)]]))
        self.duplicates_sent += 1
        FIGURES["duplicates published"] += 1

    @rule()
    def deliver_some(self) -> None:
        consumer = self.live()
        self.run(self.until_quiet(consumer))

    @rule(point=st.sampled_from(CRASH_POINTS), nth=st.integers(min_value=1, max_value=3), fresh=st.integers(0, 4))
    def crash(self, point: str, nth: int, fresh: int) -> None:
        """``fresh`` new events first (0: whatever is pending), then die at the ``nth`` passing of ``point``."""
        if fresh:
            self.publish(fresh)
        consumer = self.live()
        consumer.switch.armed, consumer.switch.countdown = point, nth
        self.run(self.until_quiet(consumer))
        if not consumer.switch.dead:
            consumer.switch.armed = None  # nothing passed the point: no crash
            FIGURES["crashes not reached"] += 1
            return
        # abandoned: stopped without settling anything more (every settle and handler raises Crash)
        self.retire(consumer)

    @rule()
    def redeliver(self) -> None:
        self.now += VISIBILITY + 0.5
        FIGURES["visibility timeouts"] += 1

    @rule()
    def restart(self) -> None:
        if self.consumer is not None:
            self.retire(self.consumer)
        self.live()
        FIGURES["restarts"] += 1

    @rule()
    def drain(self) -> None:
        self._drain()

    def _drain(self) -> None:
        """Run until the broker holds nothing for the group; then every published event is applied once."""
        deadline = time.monotonic() + 3 * STEP_LIMIT
        while True:
            consumer = self.live()
            assert self.run(self.until_quiet(consumer)), "the consumer did not settle in time"
            if consumer.switch.dead:  # (only an armed crash kills it, and drain arms none)
                self.retire(consumer)
                continue
            if not self.leases() and not self.broker_state()[0]:
                break
            assert time.monotonic() < deadline, f"not drained: {self.broker_state()}, {self.leases()} leases"
            self.now += VISIBILITY + 0.5  # what a crashed consumer held comes back
        effects = self.effects()
        lost = set(self.published) - set(effects)
        assert not lost, f"{len(lost)} published events were never applied: {sorted(lost)[:3]}"
        twice = {event_id: count for event_id, count in effects.items() if count > 1}
        assert not twice, f"events applied more than once: {twice}"
        FIGURES["drains"] += 1

    # -- invariants --

    @invariant()
    def applied_once_and_only_what_was_published(self) -> None:
        effects = self.effects()
        invented = set(effects) - set(self.published)
        assert not invented, f"effects of events never published: {sorted(invented)}"
        twice = {event_id: count for event_id, count in effects.items() if count > 1}
        assert not twice, f"events applied more than once: {twice}"

    def teardown(self) -> None:
        try:
            self._drain()
            if self.consumer is not None:
                self.retire(self.consumer)
            FIGURES["duplicates absorbed"] += self.duplicates_absorbed
        finally:
            with contextlib.suppress(Exception):
                if self.consumer is not None:
                    self.run(self.consumer.stop())
            self.run(self.producer_broker.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def test_the_pipeline_neither_loses_nor_doubly_applies_an_event() -> None:
    FIGURES.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        PipelineMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    crashes = sum(count for name, count in FIGURES.items() if name.startswith("crash "))
    by_point = ", ".join(f"{point}={FIGURES[f'crash {point}']}" for point in CRASH_POINTS)
    print(
        f"\npipeline model: {FIGURES['examples']} examples, {FIGURES['events published']} events published, "
        f"{FIGURES['duplicates published']} duplicates published, {crashes} crashes ({by_point}), "
        f"{FIGURES['crashes not reached']} crashes armed but not reached, {FIGURES['redeliveries']} redeliveries, "
        f"{FIGURES['duplicates absorbed']} duplicates absorbed, {FIGURES['restarts']} restarts, "
        f"{FIGURES['drains']} drains, in {time.monotonic() - started:.1f} s"
    )
    assert FIGURES["events published"] > 0
