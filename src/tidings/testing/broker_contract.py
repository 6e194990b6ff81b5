"""The broker contract: one test suite that every :class:`~tidings.brokers.base.Broker` adapter must pass.

Subclass :class:`BrokerContract` in a test module (its name must start with ``Test`` for pytest to collect it)
and give it the one hook, :meth:`BrokerContract.create_broker`, which returns a new, *unstarted* broker::

    from tidings.testing import BrokerContract
    from tidings.brokers.sqlite import SqliteBroker

    class TestSqliteBroker(BrokerContract):
        @pytest.fixture(autouse=True)
        def _database(self, tmp_path):
            self.url = f"sqlite:///{tmp_path}/events.db"

        def create_broker(self):
            return SqliteBroker(self.url)

The hook is a plain function (not a coroutine): creating a broker does no I/O, :meth:`Broker.start` does,
and the suite starts and closes every broker itself. Each call must return a broker on the same backing store
as the previous calls of the same test (the durability scenario reopens it); pytest makes a new instance of
the class per test, so a fixture that sets attributes on ``self`` is the way to give each test its own store.

What is checked: publish then receive, every group gets every message, members of a group share the work
(each message once), acked messages are not redelivered, nack redelivers with ``attempt + 1``, a handler that
raises is redelivered, a handler that returns without settling acks, settling twice changes nothing, closing a
subscription or the broker stops intake while in-flight handlers finish (and what was not handed out goes to the
next member), ``prefetch`` is both reached and never exceeded, large (1 MiB), empty and binary bodies and
Unicode headers and keys round-trip, publishing on an unstarted broker raises ``BrokerError``, ``start`` and
``close`` are idempotent. Scenarios that need a capability run only where the broker claims it (the others are
skipped, saying why): ``delayed-redelivery`` (not redelivered before the delay), ``dead-letter`` (recorded with
reason and attempts, never redelivered), ``patterns`` (``*`` one segment, ``#`` any number), ``ordering`` (per
key, across two members, nacks included) and ``durable`` (what was published survives a restart).

The scenarios are plain (synchronous) test methods that each run their own event loop with
:func:`asyncio.run`, so the suite needs pytest but no asyncio plugin; every wait is on a condition with a
timeout (:attr:`BrokerContract.timeout`), never a sleep. Channel and group names are unique per test, so a
broker whose store outlives a test (a Kafka cluster...) does not see other tests' messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

import pytest

from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ATTEMPTS,
    DL_CHANNEL,
    DL_ERROR,
    DL_ERROR_TYPE,
    DL_ORIGIN,
    DURABLE,
    FAILURE_FIELDS,
    ORDERING,
    PATTERNS,
    Broker,
    BrokerError,
    DeadLetter,
    DeadLetterSelection,
    Delivery,
    Message,
)

Behaviour: TypeAlias = Callable[[Delivery], Awaitable[None]]


async def _ack(delivery: Delivery) -> None:
    await delivery.ack()


class Recorder:
    """A handler that records every delivery (and when it started) and lets a scenario wait for a condition.

    ``behaviour`` settles the delivery (default: ack). Waiting is on an event set at each change, with a
    timeout, never on a sleep.
    """

    def __init__(self, behaviour: Behaviour = _ack, *, timeout: float) -> None:
        self.behaviour = behaviour
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self.started_at: list[float] = []
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.started_at.append(time.monotonic())
        self.changed()
        await self.behaviour(delivery)

    def changed(self) -> None:
        self._changed.set()

    def ids(self) -> list[str]:
        return [message_id(delivery) for delivery in self.deliveries]

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Return once ``condition()`` holds; fail the test, saying ``what`` was awaited, after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._changed.clear()  # cleared before the check: a change after it wakes the wait below
            if condition():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.ids()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_ids(self, expected: set[str], what: str = "") -> None:
        await self.wait_for(lambda: expected <= set(self.ids()), what or f"ids {sorted(expected)}")


def message_id(delivery: Delivery) -> str:
    return delivery.message.headers.get("id", "")


def message(
    channel: str,
    message_id: str,
    body: bytes = b"{}",
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Message:
    return Message(channel, body, {"id": message_id, **(headers or {})}, key)


Scenario: TypeAlias = Callable[[Any, Broker], Awaitable[None]]


def scenario(fn: Scenario) -> Callable[[Any], None]:
    """Turn ``async def test_x(self, broker)`` into a plain test method that runs it on a started broker.

    (Only the name and docstring are copied: a ``__wrapped__`` would make pytest look for a ``broker`` fixture.)
    """

    def test(self: BrokerContract) -> None:
        self.run(fn)

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    return test


class BrokerContract:
    """Subclass it and implement :meth:`create_broker` (see the module documentation)."""

    #: seconds any one wait of a scenario may take before the test fails
    timeout: float = 20.0

    def create_broker(self) -> Broker:
        """A new, unstarted broker on this test's backing store."""
        raise NotImplementedError("a BrokerContract subclass implements create_broker()")

    # -- helpers --

    def run(self, fn: Scenario, *, start: bool = True) -> None:
        async def main() -> None:
            broker = self.create_broker()
            if not start:
                await asyncio.wait_for(fn(self, broker), self.timeout)
                return
            await asyncio.wait_for(broker.start(), self.timeout)
            try:
                await fn(self, broker)
            except BaseException:
                with contextlib.suppress(Exception):  # the scenario's own failure is the one to report
                    await asyncio.wait_for(broker.close(), self.timeout)
                raise
            await asyncio.wait_for(broker.close(), self.timeout)

        asyncio.run(main())

    def recorder(self, behaviour: Behaviour = _ack) -> Recorder:
        return Recorder(behaviour, timeout=self.timeout)

    def unique(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"

    def require(self, broker: Broker, capability: str) -> None:
        if capability not in broker.capabilities:
            pytest.skip(f"{type(broker).__name__} does not claim {capability!r}")

    async def barrier(self, broker: Broker, channel: str, recorder: Recorder) -> str:
        """Publish a last message on ``channel`` and wait until ``recorder`` has it: what the broker would have
        redelivered before it has been delivered by then (the best a test can do without sleeping). Returns
        the barrier message's id (they all start with ``barrier-``)."""
        sentinel = self.unique("barrier")
        await broker.publish(message(channel, sentinel))
        await recorder.wait_ids({sentinel}, "the barrier message")
        return sentinel

    # -- the scenarios --

    @scenario
    async def test_publish_then_receive(self, broker: Broker) -> None:
        channel = self.unique("user.created")
        received = self.recorder()
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1", b'{"user_id": 1}', headers={"content-type": "application/json"}))
        await received.wait_ids({"m1"})
        [delivery] = received.deliveries
        assert delivery.message.channel == channel
        assert delivery.message.body == b'{"user_id": 1}'
        assert delivery.message.headers["content-type"] == "application/json"
        assert delivery.attempt == 1

    @scenario
    async def test_every_group_gets_every_message(self, broker: Broker) -> None:
        channel = self.unique("user.created")
        first, second = self.recorder(), self.recorder()
        await broker.subscribe(channel, self.unique("email"), first)
        await broker.subscribe(channel, self.unique("audit"), second)
        ids = {f"m{i}" for i in range(10)}
        for i in range(10):
            await broker.publish(message(channel, f"m{i}"))
        await first.wait_ids(ids)
        await second.wait_ids(ids)
        await self.barrier(broker, channel, first)
        await self.barrier(broker, channel, second)
        for received in (first, second):
            assert sorted(i for i in received.ids() if not i.startswith("barrier-")) == sorted(ids)

    @scenario
    async def test_members_of_a_group_share_the_work(self, broker: Broker) -> None:
        """With prefetch=1 and member A busy, the next message goes to member B; each message is handled once."""
        channel, group = self.unique("jobs"), self.unique("workers")
        handled: list[tuple[str, str]] = []
        busy: set[str] = set()
        both_busy = asyncio.Event()
        progress = self.recorder()

        def member(name: str) -> Behaviour:
            async def handle(delivery: Delivery) -> None:
                if name not in busy:  # each member's first message waits until the other member holds one too
                    busy.add(name)
                    if len(busy) == 2:
                        both_busy.set()
                    await asyncio.wait_for(both_busy.wait(), self.timeout)
                handled.append((name, message_id(delivery)))
                progress.changed()
                await delivery.ack()

            return handle

        await broker.subscribe(channel, group, member("a"), prefetch=1)
        await broker.subscribe(channel, group, member("b"), prefetch=1)
        ids = {f"m{i}" for i in range(20)}
        for i in range(20):
            await broker.publish(message(channel, f"m{i}"))
        await progress.wait_for(lambda: ids <= {mid for _, mid in handled}, "all 20 messages handled by the group")
        await broker.publish(message(channel, "last"))  # a barrier: redeliveries would come before it
        await progress.wait_for(lambda: "last" in {mid for _, mid in handled}, "the last message")
        assert {name for name, _ in handled} == {"a", "b"}
        assert len(handled) == 21, f"a message was handled twice: {sorted(handled, key=lambda h: h[1])}"

    @scenario
    async def test_acked_message_is_not_redelivered(self, broker: Broker) -> None:
        channel = self.unique("orders")
        received = self.recorder()
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 1

    @scenario
    async def test_nack_redelivers_with_the_next_attempt(self, broker: Broker) -> None:
        async def nack_first(delivery: Delivery) -> None:
            if delivery.attempt == 1:
                await delivery.nack()
            else:
                await delivery.ack()

        channel = self.unique("orders")
        received = self.recorder(nack_first)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1", b"payload"))
        await received.wait_for(lambda: received.ids().count("m1") == 2, "the redelivery of m1")
        assert [d.attempt for d in received.deliveries] == [1, 2]
        assert received.deliveries[1].message.body == b"payload"
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 2

    @scenario
    async def test_nack_with_delay_is_not_redelivered_before_the_delay(self, broker: Broker) -> None:
        self.require(broker, DELAYED_REDELIVERY)
        delay = 0.3
        nacked_at: list[float] = []

        async def nack_first(delivery: Delivery) -> None:
            if delivery.attempt == 1:
                nacked_at.append(time.monotonic())
                await delivery.nack(delay=delay)
            else:
                await delivery.ack()

        channel = self.unique("orders")
        received = self.recorder(nack_first)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_for(lambda: len(received.deliveries) == 2, "the delayed redelivery")
        waited = received.started_at[1] - nacked_at[0]
        assert waited >= delay - 0.005, f"redelivered after {waited:.3f}s, before the {delay}s delay"
        assert received.deliveries[1].attempt == 2

    @scenario
    async def test_handler_that_raises_is_redelivered(self, broker: Broker) -> None:
        async def fail_first(delivery: Delivery) -> None:
            if delivery.attempt == 1:
                raise RuntimeError("handler failed (on purpose, in a test)")
            await delivery.ack()

        channel = self.unique("orders")
        received = self.recorder(fail_first)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_for(lambda: len(received.deliveries) == 2, "the redelivery after the exception")
        assert [d.attempt for d in received.deliveries] == [1, 2]
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 2

    @scenario
    async def test_handler_that_does_not_settle_acks(self, broker: Broker) -> None:
        async def forget(delivery: Delivery) -> None:
            return None

        channel = self.unique("orders")
        received = self.recorder(forget)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 1

    @scenario
    async def test_settling_twice_changes_nothing(self, broker: Broker) -> None:
        async def ack_then_nack(delivery: Delivery) -> None:
            await delivery.ack()
            await delivery.nack()
            await delivery.dead_letter("too late")

        channel = self.unique("orders")
        received = self.recorder(ack_then_nack)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 1
        assert not [d for d in await broker.dead_letters() if d.message.channel == channel]

    @scenario
    async def test_dead_letter_is_recorded_and_not_redelivered(self, broker: Broker) -> None:
        self.require(broker, DEAD_LETTER)

        async def give_up_on_second(delivery: Delivery) -> None:
            if delivery.attempt == 1:
                await delivery.nack()
            else:
                await delivery.dead_letter("missing field 'email'")

        channel, group = self.unique("user.created"), self.unique("email")
        received = self.recorder(give_up_on_second)
        await broker.subscribe(channel, group, received)
        await broker.publish(message(channel, "m1", b"\x00not json", key="user-1"))
        await received.wait_for(lambda: len(received.deliveries) == 2, "the second delivery")
        received.behaviour = _ack
        await self.barrier(broker, channel, received)
        assert received.ids().count("m1") == 2
        [dead] = [d for d in await broker.dead_letters() if d.message.channel == channel]
        assert dead.reason == "missing field 'email'"
        assert dead.group == group
        assert dead.attempts == 2
        assert dead.message.body == b"\x00not json"
        assert dead.message.headers["id"] == "m1"
        assert dead.message.key == "user-1"

    @scenario
    async def test_dead_letter_keeps_the_failure_details_and_its_origin(self, broker: Broker) -> None:
        self.require(broker, DEAD_LETTER)
        details = {
            DL_CHANNEL: "the.channel",
            DL_ERROR_TYPE: "ValueError",
            DL_ERROR: "bad email",
            DL_ATTEMPTS: "1",
        }

        async def give_up(delivery: Delivery) -> None:
            if delivery.message.headers["id"].startswith("barrier-"):
                await delivery.ack()
            else:
                await delivery.dead_letter("ValueError: bad email", details)

        channel = self.unique("user.created")
        received = self.recorder(give_up)
        await broker.subscribe(channel, self.unique("email"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        await self.barrier(broker, channel, received)
        [dead] = [d for d in await broker.dead_letters() if d.message.channel == channel]
        assert {k: dead.details.get(k) for k in details} == details
        assert dead.details.get(DL_ORIGIN)  # where it came from: queue, partition and offset, log position
        assert dead.error_type == "ValueError"
        assert dead.id
        assert not set(dead.message.headers) & set(FAILURE_FIELDS)  # the original's headers, as published
        assert dead.message.headers["id"] == "m1"

    @scenario
    async def test_dead_letters_are_replayed_and_purged_by_selection(self, broker: Broker) -> None:
        self.require(broker, DEAD_LETTER)

        seen: set[str] = set()

        async def give_up_once(delivery: Delivery) -> None:
            if delivery.message.headers["id"] in seen or "kind" not in delivery.message.headers:
                # the replayed copy (handled this time), or the barrier
                await delivery.ack()
                return
            seen.add(delivery.message.headers["id"])
            kind = delivery.message.headers["kind"]
            await delivery.dead_letter(f"{kind}: no", {DL_ERROR_TYPE: kind})

        channel = self.unique("user.created")
        received = self.recorder(give_up_once)
        await broker.subscribe(channel, self.unique("email"), received)
        for i, kind in enumerate(["KeyError", "ValueError", "ValueError", "TimeoutError"]):
            await broker.publish(Message(channel, b"{}", {"id": f"m{i}", "kind": kind}))
        await received.wait_ids({"m0", "m1", "m2", "m3"})
        await self.barrier(broker, channel, received)

        async def mine() -> list[DeadLetter]:
            return [d for d in await broker.dead_letters() if d.message.channel == channel]

        assert [d.message.headers["id"] for d in await mine()] == ["m0", "m1", "m2", "m3"]
        on_channel = DeadLetterSelection(error_type="ValueError")
        purged = await broker.settle_dead_letters(
            lambda d: d.message.channel == channel and on_channel.matches(d), replay=False
        )
        assert purged == 2
        assert [d.message.headers["id"] for d in await mine()] == ["m0", "m3"]
        [m3] = [d for d in await mine() if d.message.headers["id"] == "m3"]
        counted: list[int] = []
        replayed = await broker.settle_dead_letters(
            DeadLetterSelection(ids=frozenset({m3.id})).matches, replay=True, progress=counted.append
        )
        assert replayed == 1
        assert counted[-1] == 1
        await received.wait_for(lambda: received.ids().count("m3") == 2, "the replayed message")
        assert [d.message.headers["id"] for d in await mine()] == ["m0"]
        assert await broker.settle_dead_letters(lambda d: d.message.channel == channel, replay=False) == 1
        assert await mine() == []

    @scenario
    async def test_patterns(self, broker: Broker) -> None:
        self.require(broker, PATTERNS)
        prefix = self.unique("t")
        one, many = self.recorder(), self.recorder()
        await broker.subscribe(f"{prefix}.user.*", self.unique("one-segment"), one)
        await broker.subscribe(f"{prefix}.user.#", self.unique("any-segments"), many)
        for channel in ("user.created", "user.deleted", "order.created", "user.created.v2", "users.created"):
            await broker.publish(message(f"{prefix}.{channel}", channel))
        await one.wait_ids({"user.created", "user.deleted"})
        await many.wait_ids({"user.created", "user.deleted", "user.created.v2"})
        await self.barrier(broker, f"{prefix}.user.last", one)
        await self.barrier(broker, f"{prefix}.user.last", many)
        assert sorted(i for i in one.ids() if not i.startswith("barrier-")) == ["user.created", "user.deleted"]
        assert sorted(i for i in many.ids() if not i.startswith("barrier-")) == [
            "user.created",
            "user.created.v2",
            "user.deleted",
        ]
        assert {d.message.channel for d in one.deliveries} >= {f"{prefix}.user.created", f"{prefix}.user.deleted"}

    @scenario
    async def test_closing_a_subscription_stops_intake_and_lets_inflight_finish(self, broker: Broker) -> None:
        release = asyncio.Event()
        settled: list[str] = []

        async def slow(delivery: Delivery) -> None:
            await asyncio.wait_for(release.wait(), self.timeout)
            await delivery.ack()  # must still work while the subscription closes
            settled.append(message_id(delivery))

        channel, group = self.unique("orders"), self.unique("g")
        received = self.recorder(slow)
        subscription = await broker.subscribe(channel, group, received, prefetch=1)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        closing = asyncio.ensure_future(subscription.close())
        await broker.publish(message(channel, "m2"))
        done, _ = await asyncio.wait({closing}, timeout=0.05)
        assert not done, "close() returned while a handler was still running"
        release.set()
        await asyncio.wait_for(closing, self.timeout)
        assert settled == ["m1"]
        assert received.ids() == ["m1"]
        # what the closed member did not take goes to the next member of the group; what it acked does not
        successor = self.recorder()
        await broker.subscribe(channel, group, successor)
        await successor.wait_ids({"m2"})
        await self.barrier(broker, channel, successor)
        assert "m1" not in successor.ids()

    @scenario
    async def test_closing_the_broker_lets_inflight_handlers_finish(self, broker: Broker) -> None:
        release = asyncio.Event()
        outcome: list[str] = []

        async def slow(delivery: Delivery) -> None:
            await asyncio.wait_for(release.wait(), self.timeout)
            try:
                await delivery.ack()
            except BrokerError as exc:  # pragma: no cover - what the test is there to catch
                outcome.append(f"ack failed: {exc}")
            else:
                outcome.append("acked")

        channel = self.unique("orders")
        received = self.recorder(slow)
        await broker.subscribe(channel, self.unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})
        closing = asyncio.ensure_future(broker.close())
        done, _ = await asyncio.wait({closing}, timeout=0.05)
        assert not done, "close() returned while a handler was still running"
        release.set()
        await asyncio.wait_for(closing, self.timeout)
        assert outcome == ["acked"]

    @scenario
    async def test_prefetch_is_reached_and_never_exceeded(self, broker: Broker) -> None:
        """With prefetch=2, two deliveries are in flight at once, never three."""
        total, prefetch = 9, 2
        arrived = current = highest = released = 0

        async def hold(delivery: Delivery) -> None:
            nonlocal arrived, current, highest, released
            arrived += 1
            current += 1
            index, highest = arrived, max(highest, current)
            if current >= prefetch or arrived == total:
                released = arrived  # a full round (or the last one) may go: it proved `prefetch` were held
            received.changed()
            await received.wait_for(lambda: index <= released, f"message {index} to be released")
            current -= 1
            await delivery.ack()
            received.changed()

        channel = self.unique("jobs")
        received = self.recorder(hold)
        await broker.subscribe(channel, self.unique("g"), received, prefetch=prefetch)
        for i in range(total):
            await broker.publish(message(channel, f"m{i}"))
        await received.wait_for(lambda: arrived == total and current == 0, f"all {total} handled")
        assert highest == prefetch, f"{highest} deliveries in flight at once with prefetch={prefetch}"

    @scenario
    async def test_ordering_per_key(self, broker: Broker) -> None:
        """Two members, prefetch 8, three keys: each key's messages are handled one at a time, in publish order,
        even when some are nacked (the key's later messages wait for the redelivery)."""
        self.require(broker, ORDERING)
        keys, per_key = ("k1", "k2", "k3"), 15
        busy_keys: set[str] = set()
        overlaps: list[str] = []
        acked: dict[str, list[int]] = {key: [] for key in keys}
        seen: dict[str, list[int]] = {key: [] for key in keys}

        async def handle(delivery: Delivery) -> None:
            key = delivery.message.key
            assert key is not None
            seq = int(delivery.message.body)
            seen[key].append(seq)
            if key in busy_keys:
                overlaps.append(f"{key}:{seq}")
            busy_keys.add(key)
            await asyncio.sleep(0)  # a yield, not a wait: gives another member the chance to break the order
            busy_keys.discard(key)
            if seq % 4 == 1 and delivery.attempt == 1:
                await delivery.nack()
                return
            acked[key].append(seq)
            await delivery.ack()
            received.changed()

        channel, group = self.unique("accounts"), self.unique("ledger")
        received = self.recorder(handle)  # one recorder for both members: a change in either wakes the wait
        await broker.subscribe(channel, group, received, prefetch=8)
        await broker.subscribe(channel, group, received, prefetch=8)
        for seq in range(per_key):
            for key in keys:
                await broker.publish(Message(channel, str(seq).encode(), {"id": f"{key}-{seq}"}, key))
        await received.wait_for(lambda: all(len(acked[key]) == per_key for key in keys), "every message acked")
        assert not overlaps, f"two deliveries of one key in flight at once: {overlaps}"
        for key in keys:
            assert acked[key] == list(range(per_key)), f"key {key} acked out of order: {acked[key]}"
            assert seen[key] == sorted(seen[key]), f"key {key} delivered out of order: {seen[key]}"

    @scenario
    async def test_bodies_headers_and_keys_round_trip(self, broker: Broker) -> None:
        large = bytes(range(256)) * 4096  # 1 MiB, every byte value
        headers = {"ключ": "значение ✓", "emoji": "🎉", "content-type": "application/octet-stream", "empty": ""}
        sent = {
            "large": Message("", large, {"id": "large"}, None),
            "binary": Message("", b"\x00\xff\x00\x80\r\n", {"id": "binary"}, "клиент-1"),
            "empty": Message("", b"", {"id": "empty"}, None),
            "unicode": Message("", "тело ✓".encode(), {"id": "unicode", **headers}, "ключ-🎉"),
        }
        channel = self.unique("blobs")
        received = self.recorder()
        await broker.subscribe(channel, self.unique("g"), received)
        for item in sent.values():
            await broker.publish(item._replace(channel=channel))
        await received.wait_ids(set(sent))
        for delivery in received.deliveries:
            expected = sent[message_id(delivery)]
            assert delivery.message.body == expected.body
            assert isinstance(delivery.message.body, bytes)
            assert {k: delivery.message.headers.get(k) for k in expected.headers} == dict(expected.headers)
            assert delivery.message.key == expected.key

    def test_publish_before_start_raises(self) -> None:
        async def check(self: BrokerContract, broker: Broker) -> None:
            with pytest.raises(BrokerError):
                await broker.publish(message("orders", "m1"))

        self.run(check, start=False)

    def test_start_and_close_are_idempotent(self) -> None:
        async def check(self: BrokerContract, broker: Broker) -> None:
            await broker.start()
            await broker.start()
            channel = self.unique("orders")
            received = self.recorder()
            await broker.subscribe(channel, self.unique("g"), received)
            await broker.publish(message(channel, "m1"))
            await received.wait_ids({"m1"})
            await broker.close()
            await broker.close()

        self.run(check, start=False)

    def test_published_messages_survive_a_restart(self) -> None:
        channel, group = self.unique("orders"), self.unique("g")

        async def before(self: BrokerContract, broker: Broker) -> None:
            self.require(broker, DURABLE)
            subscription = await broker.subscribe(channel, group, self.recorder())  # the group now exists
            await subscription.close()
            await broker.publish(message(channel, "m1", b"kept"))

        async def after(self: BrokerContract, broker: Broker) -> None:
            received = self.recorder()
            await broker.subscribe(channel, group, received)
            await received.wait_ids({"m1"})
            assert received.deliveries[0].message.body == b"kept"

        self.run(before)
        self.run(after)


__all__ = ["BrokerContract", "Recorder", "message", "message_id", "scenario"]
