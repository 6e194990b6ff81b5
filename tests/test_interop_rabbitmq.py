"""tidings on RabbitMQ next to other RabbitMQ clients: the guide's own pika code, run as the guide writes it,
and FastStream's RabbitBroker on the same exchange, each way round.

The guide's code uses fixed names (exchange ``user_events``, queue ``email_service``) on the default virtual
host of ``localhost``: those tests delete them (and what tidings declares beside them) before and after.
The guide's code is blocking (pika's BlockingConnection): it runs in a child process, with every wait for
it bounded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from tidings.app import App, EventContext
from tidings.brokers.rabbitmq import RabbitBroker
from tidings.events.event import Event

SEED = Path(__file__).resolve().parents[1] / "examples" / "user-service.asyncapi.yaml"
TIMEOUT = 60.0  # a bound, not a wait: a new quorum queue on a loaded 2-core machine can take seconds

# -- the guide's RabbitMQ code ("Implementation with RabbitMQ"), indentation restored, otherwise as written --

GUIDE_SETUP = """
import pika
import json
from datetime import datetime
import uuid
# Connection
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()
# Declare exchange and queues
channel.exchange_declare(exchange='user_events', exchange_type='topic', durable=True)
channel.queue_declare(queue='email_service', durable=True)
channel.queue_bind(exchange='user_events', queue='email_service', routing_key='user.*')
"""

GUIDE_PUBLISHER = """
# Publisher
def publish_user_created(user_id, email, name):
    event = {
        'event_id': str(uuid.uuid4()),
        'event_type': 'user.created',
        'timestamp': datetime.utcnow().isoformat() + 'Z',
        'user_id': user_id,
        'email': email,
        'name': name
    }
    channel.basic_publish(
        exchange='user_events',
        routing_key='user.created',
        body=json.dumps(event),
        properties=pika.BasicProperties(
            delivery_mode=pika.spec.PERSISTENT_DELIVERY_MODE
        )
    )
"""

GUIDE_CALLBACK = """
# Subscriber
def callback(ch, method, properties, body):
    event = json.loads(body)
    # Process event
    send_email(
        to=event['email'],
        subject='Welcome!',
        body=f"Hello {event['name']}"
    )
    # Acknowledge message
    ch.basic_ack(delivery_tag=method.delivery_tag)
"""

GUIDE_CONSUME = """
channel.basic_consume(queue='email_service', on_message_callback=callback)
channel.start_consuming()
"""

# -- what the tests put around it: the guide leaves send_email to the reader, and its consumer never stops --

HARNESS_PRELUDE = """
import json as _json
import sys as _sys

_ARGUMENT = _json.loads(_sys.argv[1])
_sent = []


def send_email(to, subject, body):
    _sent.append(to)
    print(_json.dumps({"send_email": {"to": to, "subject": subject, "body": body}}), flush=True)
    if len(_sent) == _ARGUMENT:  # the guide's consumer runs forever; the test's stops after what it expects
        channel.stop_consuming()
"""

HARNESS_SEE_EVENTS = """
_guide_callback = callback


def callback(ch, method, properties, body):  # shows the test each event as the guide's callback gets it
    print(_json.dumps({"event": _json.loads(body)}), flush=True)
    _guide_callback(ch, method, properties, body)


print("ready", flush=True)
"""

GUIDE_PRODUCER_SCRIPT = (
    HARNESS_PRELUDE
    + GUIDE_SETUP
    + GUIDE_PUBLISHER
    + """
for _user_id, _email, _name in _ARGUMENT:
    publish_user_created(_user_id, _email, _name)
connection.close()
"""
)
GUIDE_CONSUMER_SCRIPT = (
    HARNESS_PRELUDE + GUIDE_SETUP + GUIDE_CALLBACK + HARNESS_SEE_EVENTS + GUIDE_CONSUME + "connection.close()\n"
)

GUIDE_EXCHANGE, GUIDE_QUEUE = "user_events", "email_service"


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def with_exchange(url: str, exchange: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}exchange={exchange}"


@pytest.fixture
def local_rabbitmq(rabbitmq_url: str) -> str:
    """The guide's code connects to localhost's default virtual host: only that RabbitMQ will do."""
    parts = urlsplit(rabbitmq_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or (parts.port or 5672) != 5672 or parts.path not in ("", "/"):
        pytest.skip(f"the guide's code connects to localhost:5672, not to {parts.hostname}:{parts.port}{parts.path}")
    return rabbitmq_url


async def delete_everything(url: str, exchanges: list[str], queues: list[str]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def declared_by(broker_exchange: str) -> tuple[list[str], list[str]]:
    """What a RabbitBroker on ``broker_exchange`` declares beside it: (exchanges, queues)."""
    dead = f"{broker_exchange}.dead-letters"
    return [broker_exchange, dead], [dead, f"{broker_exchange}.unrouted"]


@pytest.fixture
async def guide_names(local_rabbitmq: str) -> AsyncIterator[list[str]]:
    """Deletes the guide's exchange and queue, and what tidings declares next to them, before and after.

    Yields the list to which a test adds the names of the group queues it makes.
    """
    exchanges, queues = declared_by(GUIDE_EXCHANGE)
    queues.append(GUIDE_QUEUE)
    await delete_everything(local_rabbitmq, exchanges, queues)
    made: list[str] = []
    try:
        yield made
    finally:
        await delete_everything(local_rabbitmq, exchanges, queues + made)


async def run_script(script: str, argument: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        json.dumps(argument),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[str, str]:
    """Wait (bounded) for ``process`` to exit 0; its output."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"the guide's code did not finish within {TIMEOUT} s: {err.decode()[-2000:]}") from None
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode(), err.decode()


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    except TimeoutError:
        process.kill()
        raise AssertionError("the guide's code printed nothing in time") from None
    if not line:
        _, err = await finish(process)
        raise AssertionError(f"the guide's code exited early: {err[-2000:]}")
    return line.decode().strip()


# -- the guide's pika code --


async def test_events_the_guides_producer_publishes_reach_a_tidings_subscriber(
    local_rabbitmq: str, guide_names: list[str]
) -> None:
    app = App.from_asyncapi(SEED, broker=with_exchange(local_rabbitmq, GUIDE_EXCHANGE), name="welcome")
    got: list[tuple[UserCreated, EventContext]] = []
    all_in = asyncio.Event()
    users = [[12345, "john.doe@example.com", "John Doe"], [12346, "jane.roe@example.com", "Jane Roe"]]

    @app.subscriber("user.created", group="tidings-welcome")
    async def welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append((event, ctx))
        if len(got) == len(users):
            all_in.set()

    assert isinstance(app.broker, RabbitBroker)
    guide_names.append(app.broker.queue_name("user.created", "tidings-welcome"))
    async with app:  # the group's queue is declared and bound: it keeps what the guide publishes from now on
        await finish(await run_script(GUIDE_PRODUCER_SCRIPT, users))
        await asyncio.wait_for(all_in.wait(), TIMEOUT)
        dead = await app.broker.dead_letters()
    assert not dead, dead
    assert [[e.user_id, e.email, e.name] for e, _ in got] == users
    for _, ctx in got:
        # the guide's envelope fields, read from its body
        assert str(uuid.UUID(ctx.envelope.event_id)) == ctx.envelope.event_id
        assert ctx.envelope.event_type == "user.created"
        assert ctx.envelope.timestamp.endswith("Z")
        assert ctx.attempt == 1


async def test_events_tidings_publishes_reach_the_guides_consumer(local_rabbitmq: str, guide_names: list[str]) -> None:
    count = 3
    consumer = await run_script(GUIDE_CONSUMER_SCRIPT, count)
    try:
        assert await read_line(consumer) == "ready"  # the guide's queue is declared and bound
        app = App(with_exchange(local_rabbitmq, GUIDE_EXCHANGE), name="user-service", asyncapi=SEED)
        async with app:
            envelopes = [
                await app.publish(UserCreated(user_id=i, email=f"user{i}@example.com", name=f"User {i}"))
                for i in range(count)
            ]
        out, _ = await finish(consumer)
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    events = [line["event"] for line in lines if "event" in line]
    emails = [line["send_email"] for line in lines if "send_email" in line]
    assert [e["event_id"] for e in events] == [e.event_id for e in envelopes]
    for i, event in enumerate(events):
        # the fields the guide's events have, where the guide's consumer looks for them
        assert event["event_type"] == "user.created"
        assert event["timestamp"].endswith("Z")
        assert (event["user_id"], event["email"], event["name"]) == (i, f"user{i}@example.com", f"User {i}")
    assert emails == [
        {"to": f"user{i}@example.com", "subject": "Welcome!", "body": f"Hello User {i}"} for i in range(count)
    ]


# -- FastStream --


@pytest.fixture
async def faststream_names(rabbitmq_url: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A unique exchange for FastStream and tidings to share; it and every queue of the test deleted after."""
    exchange = unique("fs-interop")
    made: list[str] = []
    try:
        yield exchange, made
    finally:
        exchanges, queues = declared_by(exchange)
        await delete_everything(rabbitmq_url, exchanges, queues + made)


def faststream_broker(url: str) -> Any:
    from faststream.rabbit import RabbitBroker as FastStreamBroker

    return FastStreamBroker(url, logger=None)


async def test_a_faststream_publisher_reaches_a_tidings_subscriber(
    rabbitmq_url: str, faststream_names: tuple[str, list[str]]
) -> None:
    from faststream.rabbit import ExchangeType, RabbitExchange
    from pydantic import BaseModel

    class UserCreatedModel(BaseModel):  # FastStream's side: its own model, no envelope
        user_id: int
        email: str
        name: str

    exchange, made = faststream_names
    app = App(with_exchange(rabbitmq_url, exchange), name="welcome")
    got: list[tuple[UserCreated, EventContext]] = []
    arrived = asyncio.Event()
    group = unique("tidings-welcome")

    @app.subscriber("user.created", group=group)
    async def welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append((event, ctx))
        arrived.set()

    assert isinstance(app.broker, RabbitBroker)
    made.append(app.broker.queue_name("user.created", group))
    fs = faststream_broker(rabbitmq_url)
    async with app:
        await fs.start()
        try:
            await fs.publish(
                UserCreatedModel(user_id=7, email="ann@example.com", name="Ann"),
                exchange=RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True),
                routing_key="user.created",
                correlation_id="conversation-7",
            )
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
        finally:
            await fs.stop()
        assert not await app.broker.dead_letters()
    [(event, ctx)] = got
    assert (event.user_id, event.email, event.name) == (7, "ann@example.com", "Ann")
    # no envelope in FastStream's body: tidings made one from the AMQP properties
    assert ctx.envelope.event_id == ctx.headers["message_id"]
    assert ctx.envelope.event_type == "user.created"  # the channel: FastStream sets no AMQP type
    assert ctx.envelope.correlation_id == "conversation-7"
    assert ctx.envelope.content_type == "application/json"


async def test_a_tidings_publisher_reaches_a_faststream_subscriber(
    rabbitmq_url: str, faststream_names: tuple[str, list[str]]
) -> None:
    from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue
    from faststream.rabbit.annotations import RabbitMessage
    from pydantic import BaseModel

    class UserCreatedModel(BaseModel):
        user_id: int
        email: str
        name: str

    exchange, made = faststream_names
    queue = unique("faststream-welcome")
    made.append(queue)
    got: asyncio.Queue[tuple[UserCreatedModel, Any]] = asyncio.Queue()
    fs = faststream_broker(rabbitmq_url)

    @fs.subscriber(
        RabbitQueue(queue, routing_key="user.*", durable=True),
        RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True),
    )
    async def on_user_created(body: UserCreatedModel, message: RabbitMessage) -> None:
        await got.put((body, message.raw_message))

    await fs.start()  # declares the exchange, and its queue bound to it
    try:
        app = App(with_exchange(rabbitmq_url, exchange), name="user-service")
        async with app:
            envelope = await app.publish(UserCreated(user_id=8, email="bob@example.com", name="Bob"))
            body, raw = await asyncio.wait_for(got.get(), TIMEOUT)
    finally:
        await fs.stop()
    assert (body.user_id, body.email, body.name) == (8, "bob@example.com", "Bob")
    # the envelope, as standard AMQP properties for consumers that read those
    assert raw.message_id == envelope.event_id
    assert raw.type == "user.created"
    assert raw.app_id == "user-service"
    assert raw.correlation_id == envelope.correlation_id
    assert raw.content_type == "application/json"
    assert raw.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(raw.body)["event_id"] == envelope.event_id
