"""``amqp://`` against the broker contract, on a real RabbitMQ, plus what only it promises: the topology it
declares (durable quorum queues, persistent messages), unroutable publishes refused, dead-letter headers,
delayed redelivery through retry queues, secrets kept out of everything shown, the App end to end, and
reconnection after RabbitMQ closed the connections.

The module works in a virtual host of its own (made with ``rabbitmqctl`` and deleted at the end, with
everything in it); each test has its own exchange, so tests never see each other's messages. Without
``rabbitmqctl`` (a RabbitMQ elsewhere, ``TIDINGS_TEST_AMQP_URL``) the tests run in the URL's virtual host,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from conftest import rabbitmq_vhost_url, rabbitmqctl
from tidings.app import App
from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ATTEMPTS,
    DL_CHANNEL,
    DL_ERROR_TYPE,
    DL_GROUP,
    DL_LAST_FAILURE,
    DL_ORIGIN,
    DURABLE,
    PATTERNS,
    Broker,
    BrokerError,
    Delivery,
    Message,
    broker_from_url,
)
from tidings.brokers.rabbitmq import RabbitBroker
from tidings.errors import UsageError
from tidings.testing import BrokerContract
from tidings.testing.broker_contract import Recorder, message, message_id
from tidings.testing.services import unavailable

SEED = Path(__file__).resolve().parents[1] / "examples" / "user-service.asyncapi.yaml"
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def amqp_url(rabbitmq_url: str) -> Iterator[str]:
    """The RabbitMQ URL, on a virtual host made for this module (deleted at the end, with all it holds)."""
    with rabbitmq_vhost_url(rabbitmq_url, "tidings-test") as url:
        yield url


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


class TestRabbitBrokerContract(BrokerContract):
    timeout = TIMEOUT

    @pytest.fixture(autouse=True)
    def _exchange(self, amqp_url: str) -> None:
        self.url = amqp_url
        self.exchange = unique("contract")  # the backing store: the durability scenario reopens the same one

    def create_broker(self) -> Broker:
        return RabbitBroker(self.url, exchange=self.exchange, reconnect_delay=0.05)


# -- helpers --


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[RabbitBroker]:
    async with RabbitBroker(amqp_url, exchange=unique("t"), reconnect_delay=0.05) as started:
        yield started


@pytest.fixture
async def raw(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel, to look at what the adapter left in RabbitMQ."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def recorder(behaviour: Any = None) -> Recorder:
    return Recorder(behaviour, timeout=TIMEOUT) if behaviour else Recorder(timeout=TIMEOUT)


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (for state that no event announces, like what RabbitMQ holds)."""
    deadline = time.monotonic() + timeout
    while not await _call(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _call(condition: Callable[[], Any]) -> Any:
    result = condition()
    return await result if asyncio.iscoroutine(result) else result


# -- URL and configuration --


def test_the_url_selects_the_rabbitmq_broker_and_its_options() -> None:
    broker = broker_from_url("amqp://app:s3cret@rabbit.internal:5673/prod?exchange=events&queue_type=classic")
    assert isinstance(broker, RabbitBroker)
    assert broker.exchange == "events"
    assert broker.dead_letter_queue == "events.dead-letters"
    assert broker.queue_name("user.created", "email-service") == "events.email-service.user.created"
    assert broker.queue_name("user.*", "log") == "events.log.user.+"
    assert broker.queue_name("user.{userId}.renamed", "log") == "events.log.user.+.renamed"
    assert broker.queue_name("user.>", "log") == "events.log.user.#"
    assert broker.queue_name("user.*", "журнал").startswith("events.______.user.+:")
    assert {DURABLE, PATTERNS, DEAD_LETTER, DELAYED_REDELIVERY} <= broker.capabilities
    assert "durable" not in RabbitBroker("amqp://localhost/?durable=false").capabilities


def test_keyword_arguments_win_over_the_url() -> None:
    broker = RabbitBroker("amqp://localhost/?exchange=from-url&prefetch=3", exchange="from-keyword")
    assert broker.exchange == "from-keyword"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("kafka://localhost:9092", "not a RabbitMQ URL"),
        ("amqp://localhost:notaport/", "not a valid RabbitMQ URL"),
        ("amqp://localhost/?exchnge=typo", "unknown RabbitMQ broker parameter(s) exchnge"),
        ("amqp://localhost/?queue_type=stream", "choose quorum or classic"),
        ("amqp://localhost/?durable=maybe", "use true or false"),
        ("amqp://localhost/?durable=false&queue_type=quorum", "quorum queues are always durable"),
        ("amqp://localhost/?prefetch=0", "must be >= 1"),
        ("amqp://localhost/?delivery_limit=-1", "must be >= 0"),
        ("amqp://localhost/?confirm_batch=many", "is not a number"),
        ("amqp://localhost/?exchange=amq.topic", "RabbitMQ's own"),
        ("amqp://localhost/?exchange=ünïcode", "an AMQP exchange name holds only"),
        ("amqp://localhost/?unroutable=ignore", "choose keep, error or drop"),
    ],
)
def test_a_bad_url_is_a_usage_error(url: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=None) as caught:
        RabbitBroker(url)
    assert complaint in str(caught.value)


def test_the_password_is_never_shown() -> None:
    broker = RabbitBroker("amqp://app:s3cret-pw@rabbit.internal:5672/prod?exchange=events")
    assert "s3cret-pw" not in broker.url
    assert "s3cret-pw" not in repr(broker)
    assert broker.url == "amqp://app:***@rabbit.internal:5672/prod?exchange=events"
    with pytest.raises(UsageError) as caught:
        RabbitBroker("amqp://app:s3cret-pw@rabbit.internal:5672/?bogus=1")
    assert "s3cret-pw" not in str(caught.value)


async def test_a_wrong_password_is_a_one_line_broker_error_without_the_password(rabbitmq_url: str) -> None:
    url = rabbitmq_url.replace("guest:guest@", "guest:not-the-pw-4711@")
    assert "not-the-pw-4711" in url
    broker = RabbitBroker(url)
    with pytest.raises(BrokerError) as caught:
        await broker.start()
    text = str(caught.value)
    assert "not-the-pw-4711" not in text
    assert "\n" not in text
    assert "refused the login of user 'guest'" in text
    assert "check the user name and password" in text
    assert "not-the-pw-4711" not in repr(caught.value)


async def test_an_unreachable_server_is_a_broker_error_that_says_what_to_do(rabbitmq_url: str) -> None:
    from tidings.testing.services import free_port

    port = free_port()  # nothing listens there
    broker = RabbitBroker(f"amqp://guest:pw-1234@127.0.0.1:{port}/", connect_timeout=2)
    with pytest.raises(BrokerError) as caught:
        await broker.start()
    text = str(caught.value)
    assert f"is RabbitMQ running at 127.0.0.1:{port}? check the URL" in text
    assert "pw-1234" not in text


async def test_a_missing_virtual_host_is_named(rabbitmq_url: str) -> None:
    broker = RabbitBroker(f"{rabbitmq_url.rstrip('/')}/no-such-vhost-{uuid.uuid4().hex[:6]}")
    with pytest.raises(BrokerError, match="refused to open virtual host 'no-such-vhost-"):
        await broker.start()


# -- topology and guarantees --


async def test_a_message_no_queue_is_bound_for_is_kept_in_the_unrouted_queue(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    unrouted = f"{broker.exchange}.unrouted"
    await broker.publish(Message("nobody.listens", b"one", {"id": "1"}))
    await broker.publish_many([Message("nobody.listens", b"two"), Message("nobody.either", b"three", key="k")])
    await wait_until(lambda: _count(raw, unrouted), "the unrouted messages")
    queue = await raw.declare_queue(unrouted, passive=True)
    kept = []
    while (got := await queue.get(no_ack=True, fail=False)) is not None:
        kept.append((got.body, got.headers["x-tidings-channel"]))
    assert sorted(kept) == [(b"one", "nobody.listens"), (b"three", "nobody.either"), (b"two", "nobody.listens")]


async def test_with_unroutable_error_publishing_where_no_queue_is_bound_raises(amqp_url: str) -> None:
    async with RabbitBroker(amqp_url, exchange=unique("t"), unroutable="error") as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.publish(Message("nobody.listens", b"{}"))
        text = str(caught.value)
        assert "'nobody.listens'" in text
        assert "no queue is bound for it" in text
        assert "Start a subscriber for it first" in text
        with pytest.raises(BrokerError, match="no queue is bound"):
            await broker.publish_many([Message("nobody.listens", b"{}")])
        # a bound channel is fine, of course
        channel = unique("orders")
        received = recorder()
        await broker.subscribe(channel, unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_ids({"m1"})


async def test_with_unroutable_drop_rabbitmq_drops_it(amqp_url: str, raw: aio_pika.abc.AbstractChannel) -> None:
    async with RabbitBroker(amqp_url, exchange=unique("t"), unroutable="drop") as broker:
        await broker.publish(Message("nobody.listens", b"{}"))  # no error, and nothing kept
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await raw.declare_queue(f"{broker.exchange}.unrouted", passive=True)


async def test_queues_are_durable_quorum_queues_and_messages_persistent(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    channel, group = unique("orders"), unique("g")
    subscription = await broker.subscribe(channel, group, recorder())
    await subscription.close()  # the queue stays, and keeps what is published for the group
    await broker.publish(Message(channel, b'{"n": 1}', {"content-type": "application/json"}))
    # a passive declare fails unless the queue exists with exactly these settings
    queue = await raw.declare_queue(
        broker.queue_name(channel, group),
        durable=True,
        passive=True,
    )
    await wait_until(lambda: _count(raw, queue.name), "the message in the group's queue")
    got = await queue.get(no_ack=False)
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert got.body == b'{"n": 1}'
    assert got.content_type == "application/json"
    assert got.headers.get("x-delivery-count") == 0  # only quorum queues count deliveries
    await got.nack(requeue=True)
    # the exchange is durable: declaring it durable again is accepted, non-durable is refused
    await raw.declare_exchange(broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True)


async def test_the_group_queue_is_quorum_and_durable_and_a_mismatch_is_explained(amqp_url: str) -> None:
    exchange, channel, group = unique("t"), unique("orders"), unique("g")
    async with RabbitBroker(amqp_url, exchange=exchange) as broker:
        await (await broker.subscribe(channel, group, recorder())).close()
        name = broker.queue_name(channel, group)
    connection = await aio_pika.connect(amqp_url)
    try:
        # RabbitMQ refuses a declaration that differs from the queue's: what it accepts is what the queue is
        for arguments, durable in (({"x-queue-type": "classic"}, True), ({"x-queue-type": "quorum"}, False)):
            probe = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await probe.declare_queue(name, durable=durable, arguments=arguments)
    finally:
        await connection.close()
    # a broker configured otherwise is told what is wrong, not just "PRECONDITION_FAILED"
    async with RabbitBroker(amqp_url, exchange=exchange, queue_type="classic") as other:
        with pytest.raises(BrokerError) as caught:
            await other.subscribe(channel, group, recorder())
    text = str(caught.value)
    assert f"declaring the queue {name!r} of group {group!r}" in text
    assert "x-queue-type" in text
    assert "exists with other settings" in text


async def _count(raw: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await raw.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


async def _count_is(raw: aio_pika.abc.AbstractChannel, name: str, expected: int) -> bool:
    return await _count(raw, name) == expected


async def test_amqp_properties_are_set_from_the_envelope(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    app = App(broker, name="user-service", asyncapi=SEED)
    channel, group = "user.created", unique("g")
    subscription = await broker.subscribe(channel, group, recorder())
    await subscription.close()
    envelope = await app.publish(
        {"user_id": 7, "email": "ann@example.com", "name": "Ann"}, event_type="user.created", channel=channel
    )
    queue = await raw.declare_queue(broker.queue_name(channel, group), durable=True, passive=True)
    await wait_until(lambda: _count(raw, queue.name), "the message")
    got = await queue.get(no_ack=True)
    assert got.message_id == envelope.event_id
    assert got.type == "user.created"
    assert got.app_id == "user-service"
    assert got.correlation_id == envelope.correlation_id
    assert got.content_type == "application/json"
    assert got.timestamp is not None
    assert abs(got.timestamp.timestamp() - time.time()) < 60


async def test_dead_letters_carry_reason_group_channel_and_attempts_in_headers(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    async def give_up(delivery: Delivery) -> None:
        await delivery.dead_letter("missing field 'email'", {DL_ERROR_TYPE: "KeyError", DL_ORIGIN: "not this"})

    channel, group = unique("user.created"), unique("email")
    received = recorder(give_up)
    await broker.subscribe(channel, group, received)
    await broker.publish(Message(channel, b"{}", {"id": "m1", "trace": "abc"}, key="user-1"))
    await received.wait_ids({"m1"})
    await wait_until(lambda: _count(raw, broker.dead_letter_queue), "the dead letter")
    # what RabbitMQ holds, for any other tool to read
    queue = await raw.declare_queue(broker.dead_letter_queue, passive=True)
    got = await queue.get(no_ack=False)
    assert got.headers["x-tidings-reason"] == "missing field 'email'"
    assert got.headers["x-tidings-group"] == group
    assert got.headers["x-tidings-queue"] == broker.queue_name(channel, group)
    assert got.headers["x-tidings-channel"] == channel
    assert got.headers["x-tidings-attempts"] == 1
    assert got.headers["x-tidings-key"] == "user-1"
    assert got.headers["x-tidings-error-type"] == "KeyError"
    assert got.headers["x-tidings-origin"] == f"amqp:{broker.queue_name(channel, group)}"  # the broker's, always
    dead_id = got.headers["x-tidings-dead-letter-id"]
    assert isinstance(dead_id, str)
    assert len(dead_id) == 32
    assert got.headers["trace"] == "abc"
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    await got.nack(requeue=True)
    # and what dead_letters() makes of it, without taking it away
    for _ in range(2):
        [dead] = [d for d in await broker.dead_letters() if d.message.channel == channel]
        assert (dead.reason, dead.group, dead.attempts) == ("missing field 'email'", group, 1)
        assert dead.id == dead_id
        assert dead.message.key == "user-1"
        assert dead.message.headers["trace"] == "abc"
        assert not [h for h in dead.message.headers if h.startswith("x-tidings-")]
        assert dead.details == {
            DL_ERROR_TYPE: "KeyError",
            DL_GROUP: group,
            DL_ATTEMPTS: "1",
            DL_ORIGIN: f"amqp:{broker.queue_name(channel, group)}",
        }


async def test_a_message_redelivered_past_the_delivery_limit_is_dead_lettered_by_rabbitmq(
    amqp_url: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    async with RabbitBroker(amqp_url, exchange=unique("t"), delivery_limit=1) as broker:
        channel, group = unique("orders"), unique("g")
        await (await broker.subscribe(channel, group, recorder())).close()
        await broker.publish(Message(channel, b"poison", {"id": "p"}, key="k"))
        queue = await raw.declare_queue(broker.queue_name(channel, group), passive=True)
        got: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def take() -> bool:
            message = await queue.get(no_ack=False, fail=False)
            if message is not None:
                got.append(message)
            return message is not None

        for _ in range(2):  # a consumer that never settles it, as RabbitMQ sees one that dies: handed back
            await wait_until(take, "the delivery")
            await got[-1].nack(requeue=True)
        dead: list[Any] = []

        async def dead_lettered() -> bool:
            dead[:] = await broker.dead_letters()
            return bool(dead)

        await wait_until(dead_lettered, "RabbitMQ to dead-letter it")
        [letter] = dead
        assert letter.reason.startswith("RabbitMQ dead-lettered it: delivered 2 times from queue")
        assert letter.group == broker.queue_name(channel, group)  # RabbitMQ knows the queue, not the group
        assert letter.attempts == 2
        assert (letter.message.channel, letter.message.body, letter.message.key) == (channel, b"poison", "k")
        assert letter.message.headers["id"] == "p"
        assert not [h for h in letter.message.headers if h.startswith("x-")]
        assert letter.details[DL_ORIGIN] == f"amqp:{broker.queue_name(channel, group)}"
        assert (letter.details[DL_CHANNEL], letter.details[DL_ATTEMPTS]) == (channel, "2")
        assert letter.details[DL_LAST_FAILURE].endswith("Z")
        # it carries no id of tidings': it is named by its content, the same at every read
        assert letter.id.startswith("rabbitmq-")
        assert [d.id for d in await broker.dead_letters()] == [letter.id]
        # and it can be replayed: to its channel, with its key and headers, for the group to handle this time
        received = recorder()
        await broker.subscribe(channel, group, received)
        counted: list[int] = []
        assert await broker.settle_dead_letters(lambda d: d.id == letter.id, replay=True, progress=counted.append) == 1
        assert counted == [1]
        await received.wait_ids({"p"})
        [again] = received.deliveries
        assert (again.message.body, again.message.key) == (b"poison", "k")
        assert await broker.dead_letters() == []


async def test_settling_dead_letters_keeps_the_others_in_order_and_a_failed_replay_keeps_its_dead_letter(
    amqp_url: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    # unroutable=error: replaying to a channel no queue is bound for fails, which is the failure wanted here
    async with RabbitBroker(amqp_url, exchange=unique("t"), unroutable="error") as broker:
        channel = unique("orders")
        seen: set[str] = set()

        async def give_up_once(delivery: Delivery) -> None:
            if delivery.message.headers["id"] in seen:  # replayed: handled this time
                await delivery.ack()
                return
            seen.add(delivery.message.headers["id"])
            await delivery.dead_letter("no", {DL_ERROR_TYPE: delivery.message.headers["kind"]})

        received = recorder(give_up_once)
        await broker.subscribe(channel, unique("g"), received)
        for i, kind in enumerate(["A", "B", "A", "B", "A"]):
            await broker.publish(Message(channel, b"{}", {"id": f"m{i}", "kind": kind}))
        await wait_until(lambda: _count_is(raw, broker.dead_letter_queue, 5), "the dead letters")
        before = await broker.dead_letters()
        assert [d.message.headers["id"] for d in before] == ["m0", "m1", "m2", "m3", "m4"]
        assert len({d.id for d in before}) == 5
        assert await broker.settle_dead_letters(lambda d: d.error_type == "B", replay=False) == 2
        after = await broker.dead_letters()
        assert [d.message.headers["id"] for d in after] == ["m0", "m2", "m4"]
        assert [d.id for d in after] == [before[0].id, before[2].id, before[4].id]
        # a dead letter (as tidings writes them, from another producer) whose channel no queue is bound for
        await raw.default_exchange.publish(
            aio_pika.Message(b"lost", headers={"id": "x", "x-tidings-reason": "no", "x-tidings-channel": "gone"}),
            routing_key=broker.dead_letter_queue,
        )
        await wait_until(lambda: _count_is(raw, broker.dead_letter_queue, 4), "the foreign dead letter")
        counted: list[int] = []
        with pytest.raises(BrokerError, match="'gone'"):
            await broker.settle_dead_letters(
                lambda d: d.message.headers["id"] != "m2", replay=True, progress=counted.append
            )
        assert counted == [1, 2]  # m0 and m4 were replayed (and taken out) before x failed
        await received.wait_for(lambda: received.ids().count("m4") == 2, "the replayed messages")
        assert received.ids().count("m0") == 2
        # x stays, and so does m2, which was not selected: in their places
        assert [d.message.headers["id"] for d in await broker.dead_letters()] == ["m2", "x"]


async def test_a_delayed_redelivery_waits_in_a_retry_queue(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    nacked_at: list[float] = []
    nacked: list[bool] = []  # the nack returned: the retry queue exists (declared by the nack itself)
    delay = 0.7

    async def later(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            nacked_at.append(time.monotonic())
            await delivery.nack(delay=delay)
            nacked.append(True)
        else:
            await delivery.ack()

    channel, group = unique("orders"), unique("g")
    received = recorder(later)
    await broker.subscribe(channel, group, received)
    await broker.publish(message(channel, "m1"))
    retry_queue = f"{broker.queue_name(channel, group)}.retry-500ms"
    await wait_until(lambda: _count(raw, retry_queue) if nacked else False, "the copy in the 500ms retry queue")
    assert received.ids() == ["m1"]
    await received.wait_for(lambda: len(received.deliveries) == 2, "the delayed redelivery")
    waited = received.started_at[1] - nacked_at[0]
    assert delay - 0.005 <= waited < delay + 2.0
    assert [d.attempt for d in received.deliveries] == [1, 2]
    assert received.deliveries[1].message.channel == channel
    assert await _count(raw, retry_queue) == 0


async def test_attempts_count_up_across_nacks_and_redeliveries(broker: RabbitBroker) -> None:
    async def fail_three_times(delivery: Delivery) -> None:
        if delivery.attempt <= 3:
            await delivery.nack(delay=0.06 if delivery.attempt == 2 else 0)
        else:
            await delivery.ack()

    channel = unique("orders")
    received = recorder(fail_three_times)
    await broker.subscribe(channel, unique("g"), received)
    await broker.publish(message(channel, "m1"))
    await received.wait_for(lambda: len(received.deliveries) == 4, "four deliveries")
    assert [d.attempt for d in received.deliveries] == [1, 2, 3, 4]


async def test_a_group_queue_survives_its_subscribers_and_a_new_member_resumes(amqp_url: str) -> None:
    exchange, channel, group = unique("t"), unique("orders"), unique("g")
    async with RabbitBroker(amqp_url, exchange=exchange) as first:
        await (await first.subscribe(channel, group, recorder())).close()
        await first.publish_many([message(channel, f"m{i}") for i in range(50)])
    async with RabbitBroker(amqp_url, exchange=exchange) as second:
        received = recorder()
        await second.subscribe(channel, group, received)
        await received.wait_ids({f"m{i}" for i in range(50)})


async def test_a_pattern_segment_amqp_cannot_say_is_filtered(broker: RabbitBroker) -> None:
    prefix = unique("p")
    received = recorder()
    await broker.subscribe(f"{prefix}.user.cre*", unique("g"), received)
    await broker.subscribe(f"{prefix}.#", unique("all"), recorder())  # so that every channel below is routable
    for name in ("user.created", "user.deleted", "user.crewed"):
        await broker.publish(message(f"{prefix}.{name}", name))
    await received.wait_ids({"user.created", "user.crewed"})
    await broker.publish(message(f"{prefix}.user.create", "barrier"))
    await received.wait_ids({"barrier"})
    assert sorted(received.ids()) == ["barrier", "user.created", "user.crewed"]


async def test_channel_parameters_bind_one_segment(broker: RabbitBroker) -> None:
    prefix = unique("p")
    received = recorder()
    await broker.subscribe(f"{prefix}.user.{{userId}}.renamed", unique("g"), received)
    await broker.subscribe(f"{prefix}.#", unique("all"), recorder())
    await broker.publish(message(f"{prefix}.user.42.renamed", "one"))
    await broker.publish(message(f"{prefix}.user.42.7.renamed", "two-segments"))
    await broker.publish(message(f"{prefix}.user.43.renamed", "barrier"))
    await received.wait_ids({"one", "barrier"})
    assert sorted(received.ids()) == ["barrier", "one"]


async def test_publish_many_is_confirmed_in_batches(amqp_url: str) -> None:
    async with RabbitBroker(amqp_url, exchange=unique("t"), confirm_batch=7) as broker:
        channel = unique("bulk")
        received = recorder()
        await broker.subscribe(channel, unique("g"), received, prefetch=64)
        await broker.publish_many(message(channel, f"m{i}") for i in range(100))
        await received.wait_ids({f"m{i}" for i in range(100)})


async def test_foreign_amqp_properties_reach_the_handler_as_headers(
    broker: RabbitBroker, raw: aio_pika.abc.AbstractChannel
) -> None:
    channel = unique("user.created")
    received = recorder()
    await broker.subscribe(channel, unique("g"), received)
    exchange = await raw.get_exchange(broker.exchange)
    sent_at = time.time()
    await exchange.publish(
        aio_pika.Message(
            b'{"user_id": 1}',
            content_type="application/json",
            message_id="abc-123",
            type="user.created",
            correlation_id="conversation-1",
            app_id="legacy-service",
            timestamp=sent_at,
            headers={"count": 3, "flag": True, "plain": "text"},
        ),
        routing_key=channel,
    )
    await received.wait_for(lambda: bool(received.deliveries), "the foreign message")
    headers = received.deliveries[0].message.headers
    assert headers["message_id"] == "abc-123"
    assert headers["type"] == "user.created"
    assert headers["correlation_id"] == "conversation-1"
    assert headers["app_id"] == "legacy-service"
    assert headers["content-type"] == "application/json"
    assert headers["timestamp"].endswith("Z")
    assert (headers["count"], headers["flag"], headers["plain"]) == ("3", "true", "text")
    assert received.deliveries[0].attempt == 1


# -- the App, end to end --


async def test_the_app_runs_on_rabbitmq_with_the_guides_document(amqp_url: str) -> None:
    url = f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={unique('app')}"
    app = App.from_asyncapi(SEED, broker=url, name="email-service")
    created = app.event_class("user.created")
    welcomed: list[tuple[int, str]] = []
    done = asyncio.Event()

    @app.subscriber("user.created", group=unique("email-service"))
    async def send_welcome(event: created) -> None:  # type: ignore[valid-type]
        welcomed.append((event.user_id, event.email))  # type: ignore[attr-defined]
        done.set()

    async with app:
        assert isinstance(app.broker, RabbitBroker)
        await app.broker.publish(Message("user.created", b"this is not json"))
        await app.publish(created(user_id=12345, email="john@example.com", name="John Doe"))
        await asyncio.wait_for(done.wait(), TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not (dead := await app.broker.dead_letters()):
            assert time.monotonic() < deadline, "the invalid message was not dead-lettered"
            await asyncio.sleep(0.02)
    assert welcomed == [(12345, "john@example.com")]
    [letter] = dead
    assert letter.message.body == b"this is not json"
    assert letter.reason.startswith("undecodable: not JSON")
    assert letter.message.channel == "user.created"


# -- reconnection --


def connection_pids(name_part: str) -> list[str]:
    listed = rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    assert listed is not None
    return [line.split("\t", 1)[0] for line in listed.stdout.splitlines() if name_part in line]


async def test_a_closed_connection_is_reopened_and_nothing_is_lost(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        unavailable("needs rabbitmqctl to close the connections from RabbitMQ's side")
    exchange, channel, group = unique("reconnect"), unique("orders"), unique("g")
    received = recorder()
    async with RabbitBroker(amqp_url, exchange=exchange, reconnect_delay=0.05) as broker:
        await broker.subscribe(channel, group, received, prefetch=4)
        await broker.publish_many([message(channel, f"before-{i}") for i in range(20)])
        await received.wait_ids({f"before-{i}" for i in range(20)})
        pids = await asyncio.to_thread(connection_pids, exchange)
        assert len(pids) == 2, pids  # publish and consume
        for pid in pids:
            closed = await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "closed by a tidings test")
            assert closed is not None
            assert closed.returncode == 0, closed.stderr
        # publishing waits for the publish connection to come back (connect_timeout), then goes on
        await broker.publish_many([message(channel, f"after-{i}") for i in range(20)])
        await received.wait_ids({f"after-{i}" for i in range(20)}, "the messages published after the reconnection")
        await wait_until(lambda: len(connection_pids(exchange)) == 2, "both connections back")
    assert set(received.ids()) == {f"{when}-{i}" for when in ("before", "after") for i in range(20)}


async def test_a_handler_running_when_the_connection_drops_is_redelivered(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        unavailable("needs rabbitmqctl to close the connections from RabbitMQ's side")
    exchange, channel = unique("reconnect"), unique("orders")
    started = asyncio.Event()
    outcomes: list[str] = []

    async def hold_first(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            started.set()
            try:
                await asyncio.sleep(TIMEOUT)  # until the connection drops (cancelled)
            except asyncio.CancelledError:
                outcomes.append("cancelled")
                raise
        outcomes.append(f"attempt {delivery.attempt}")
        await delivery.ack()

    received = recorder(hold_first)
    async with RabbitBroker(amqp_url, exchange=exchange, reconnect_delay=0.05) as broker:
        await broker.subscribe(channel, unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        for pid in await asyncio.to_thread(connection_pids, f"{exchange} consume"):
            await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "closed by a tidings test")
        await received.wait_for(lambda: "attempt 2" in outcomes, "the redelivery after the reconnection")
    assert outcomes == ["cancelled", "attempt 2"]
    assert [message_id(d) for d in received.deliveries] == ["m1", "m1"]


async def test_closing_the_broker_while_reconnecting_does_not_hang(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        unavailable("needs rabbitmqctl to close the connections from RabbitMQ's side")
    exchange = unique("reconnect")
    broker = RabbitBroker(amqp_url, exchange=exchange, reconnect_delay=0.05)
    await broker.start()
    await broker.subscribe(unique("orders"), unique("g"), recorder())
    for pid in await asyncio.to_thread(connection_pids, exchange):
        await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "closed by a tidings test")
    await asyncio.wait_for(broker.close(), TIMEOUT)
    with contextlib.suppress(BrokerError):
        await broker.close()


async def test_a_publish_rabbitmq_never_confirms_fails_after_confirm_timeout(amqp_url: str) -> None:
    # a network that swallows everything (the fault proxy's blackhole): the publish goes out, no confirm comes
    # back, and the caller hears so after confirm_timeout instead of waiting forever (an outbox relay would hang)
    from urllib.parse import urlsplit

    from tidings.testing.faults import FaultProxy

    target = urlsplit(amqp_url)
    async with FaultProxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        url = amqp_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}", 1)
        async with RabbitBroker(url, exchange=unique("t"), confirm_timeout=0.5, reconnect_delay=0.05) as broker:
            await broker.publish(message("orders", "m0"))  # confirmed: the way is open
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(BrokerError, match=r"did not confirm them within 0\.5 s") as caught:
                await broker.publish_many([message("orders", f"m{i}") for i in range(1, 4)])
            assert time.monotonic() - started < 5
            assert "guest:guest" not in str(caught.value)
            proxy.heal()
            proxy.cut()
