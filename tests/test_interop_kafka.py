"""tidings on Kafka next to the clients a team already has, on one real Kafka-protocol broker (Tansu):

- the guide's own kafka-python code ("Implementation with Kafka"), run as written with only the bootstrap
  address changed (and, on the consumer, the bounded waits a test needs): what its producer sends, a tidings
  subscriber reads as a UserCreated (the guide's flat payload is tidings' ``payload`` placement), and what
  tidings publishes, the guide's consumer reads with the fields the guide shows;
- FastStream's KafkaBroker (aiokafka), both ways: a FastStream publisher sends the model's fields only, with no
  envelope, which tidings adopts (an envelope made up from the channel and FastStream's ``correlation_id``
  header); a FastStream subscriber reads a tidings event as its pydantic model (the envelope fields beside the
  event's own are ignored by it).

kafka-python is blocking: it runs in a thread, every wait bounded (``consumer_timeout_ms``, events with timeouts).
Both consumers get ``session_timeout_ms=2000``: Tansu makes a group wait about half the session timeout before
it forms (with kafka-python's default it takes over 20 s).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tidings.app import App, EventContext
from tidings.brokers.kafka import KafkaBroker, TopicSpec
from tidings.events.event import Event
from tidings.testing.broker_contract import Recorder

SEED = Path(__file__).resolve().parents[1] / "examples" / "user-service.asyncapi.yaml"
TIMEOUT = 20.0
SETTINGS = "session_timeout_ms=2000&fetch_wait_ms=25&timeout=15"

#: kafka-python 3 warns that a plain function (the guide's lambda) is not one of its Serializer classes
pytestmark = [
    pytest.mark.filterwarnings("ignore:value_deserializer does not implement:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:value_serializer does not implement:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),  # the guide's, on 3.12+
]


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


#: the fields of the guide's user.created event
GUIDE_FIELDS = ("event_id", "event_type", "timestamp", "version", "user_id", "email", "name")


def unique_user_id() -> int:
    return int(uuid.uuid4().int % 10**9)


def kafka_python() -> Any:
    """The ``kafka`` package (kafka-python), imported on first use: importing it warns (DeprecationWarning from
    importlib.resources.read_text, kafka-python 3.0), which this project's pytest settings make an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
    return kafka


# -- the guide's code ("Implementation with Kafka"), as written but for the bootstrap address --------------------


def guide_producer(bootstrap: str) -> tuple[Any, Any]:
    KafkaProducer = kafka_python().KafkaProducer  # the guide's name
    # Producer
    producer = KafkaProducer(bootstrap_servers=[bootstrap], value_serializer=lambda v: json.dumps(v).encode("utf-8"))

    def publish_user_created(user_id: int, email: str, name: str) -> dict[str, Any]:
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": "user.created",
            "timestamp": datetime.utcnow().isoformat() + "Z",
            "version": "1.0",
            "user_id": user_id,
            "email": email,
            "name": name,
        }
        producer.send("user.created", value=event)
        producer.flush()
        return event  # (the guide's function returns nothing; the test compares what was sent)

    return producer, publish_user_created


def guide_consumer(bootstrap: str) -> Any:
    KafkaConsumer = kafka_python().KafkaConsumer  # the guide's name
    # Consumer
    return KafkaConsumer(
        "user.created",
        bootstrap_servers=[bootstrap],
        value_deserializer=lambda m: json.loads(m.decode("utf-8")),
        group_id="email-service",
        # not in the guide: bounded waits for a test, and Tansu's group forming (see the module documentation)
        consumer_timeout_ms=int(TIMEOUT * 1000),
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )


async def test_the_guides_kafka_python_producer_reaches_a_tidings_subscriber(kafka_bootstrap: str) -> None:
    user_id = unique_user_id()
    got: list[tuple[UserCreated, EventContext]] = []
    progress = Recorder(timeout=TIMEOUT)
    app = App(f"kafka://{kafka_bootstrap}?{SETTINGS}", name="email-service", asyncapi=SEED)

    @app.subscriber("user.created", group=f"email-service-{uuid.uuid4().hex[:8]}")
    async def send_welcome(event: UserCreated, context: EventContext) -> None:
        if event.user_id == user_id:  # the topic is shared with other tests of the session
            got.append((event, context))
            progress.changed()

    async with app:
        producer, publish_user_created = await asyncio.to_thread(guide_producer, kafka_bootstrap)
        try:
            sent = await asyncio.to_thread(publish_user_created, user_id, "jo@example.com", "Jo")
        finally:
            await asyncio.to_thread(producer.close, 5)
        await progress.wait_for(lambda: bool(got), "the guide's event at the tidings subscriber")
    [(event, context)] = got
    assert event == UserCreated(user_id=user_id, email="jo@example.com", name="Jo")
    assert context.envelope.event_id == sent["event_id"]
    assert context.envelope.event_type == "user.created"
    assert context.envelope.timestamp == sent["timestamp"]
    assert context.envelope.version == "1.0"
    assert context.channel == "user.created"


async def test_a_tidings_publisher_reaches_the_guides_kafka_python_consumer(kafka_bootstrap: str) -> None:
    user_id = unique_user_id()
    joined = threading.Event()
    emails: list[dict[str, str]] = []
    logged: list[dict[str, Any]] = []

    def send_email(to: str, subject: str, body: str) -> None:
        emails.append({"to": to, "subject": subject, "body": body})

    def log_event(event: dict[str, Any]) -> None:
        logged.append(event)

    def run_guide_consumer() -> None:
        consumer = guide_consumer(kafka_bootstrap)
        try:
            # the guide's consumer starts at the end of the log: join the group before anything is published
            deadline = time.monotonic() + TIMEOUT
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=100)
            for partition in consumer.assignment():
                consumer.position(partition)
            joined.set()

            # the guide's handle_user_created(), as written (plus a way out once the test's event is in)
            for message in consumer:
                event = message.value
                # Send welcome email
                send_email(to=event["email"], subject="Welcome!", body=f"Hello {event['name']}")
                # Log event
                log_event(event)
                if event.get("user_id") == user_id:
                    break
        finally:
            consumer.close()

    consuming = asyncio.ensure_future(asyncio.to_thread(run_guide_consumer))
    assert await asyncio.to_thread(joined.wait, TIMEOUT), "the guide's consumer did not join its group"
    async with App(f"kafka://{kafka_bootstrap}?{SETTINGS}", name="user-service", asyncapi=SEED) as app:
        sent = await app.publish(UserCreated(user_id=user_id, email="jo@example.com", name="Jo"))
    await asyncio.wait_for(consuming, TIMEOUT + 5)
    [event] = [e for e in logged if e.get("user_id") == user_id]
    # the fields the guide's event has (tidings adds envelope fields of its own, like source and correlation_id)
    assert {name: event[name] for name in GUIDE_FIELDS} == {
        "event_id": sent.event_id,
        "event_type": "user.created",
        "timestamp": sent.timestamp,
        "version": "1.0",
        "user_id": user_id,
        "email": "jo@example.com",
        "name": "Jo",
    }
    assert {"to": "jo@example.com", "subject": "Welcome!", "body": "Hello Jo"} in emails


# -- FastStream ------------------------------------------------------------------------------------------------


class UserCreatedModel(BaseModel):
    """FastStream's side: a plain pydantic model, no envelope."""

    user_id: int
    email: str
    name: str


def faststream_broker(bootstrap: str) -> Any:
    from faststream.kafka import KafkaBroker as FastStreamKafkaBroker

    return FastStreamKafkaBroker(bootstrap, logger=None)


async def test_a_faststream_publisher_reaches_a_tidings_subscriber(kafka_bootstrap: str) -> None:
    """FastStream sends the model's fields only; tidings adopts the message (needs codec.decode(channel=...)):
    the event type is the channel, the correlation id FastStream's ``correlation_id`` header."""
    topic = f"signups.{uuid.uuid4().hex[:10]}"
    got: list[tuple[UserCreated, EventContext]] = []
    progress = Recorder(timeout=TIMEOUT)
    app = App(f"kafka://{kafka_bootstrap}?{SETTINGS}", name="email-service")  # no contract: FastStream has none

    @app.subscriber(topic, group="email-service")
    async def send_welcome(event: UserCreated, context: EventContext) -> None:
        got.append((event, context))
        progress.changed()

    async with app:
        async with faststream_broker(kafka_bootstrap) as fast:
            await fast.publish(
                UserCreatedModel(user_id=7, email="jo@example.com", name="Jo"), topic=topic, correlation_id="corr-7"
            )
        await progress.wait_for(lambda: bool(got), "FastStream's message at the tidings subscriber")
        assert [d for d in await app.broker.dead_letters() if d.message.channel == topic] == []
    [(event, context)] = got
    assert event == UserCreated(user_id=7, email="jo@example.com", name="Jo")
    assert context.envelope.event_type == topic
    assert context.envelope.correlation_id == "corr-7"
    assert context.envelope.event_id


async def test_a_tidings_publisher_reaches_a_faststream_subscriber(kafka_bootstrap: str) -> None:
    topic = f"signups.{uuid.uuid4().hex[:10]}"
    from faststream.kafka.annotations import KafkaMessage

    received: asyncio.Queue[tuple[UserCreatedModel, Any]] = asyncio.Queue()
    fast = faststream_broker(kafka_bootstrap)

    @fast.subscriber(
        topic,
        group_id="welcome-service",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    async def handle(event: UserCreatedModel, message: KafkaMessage) -> None:
        await received.put((event, message))

    async with App(f"kafka://{kafka_bootstrap}?{SETTINGS}", name="user-service") as app:
        assert isinstance(app.broker, KafkaBroker)
        await app.broker.create_topics([TopicSpec(topic)])  # aiokafka sees a topic created later only minutes later
        async with fast:
            await fast.start()
            sent = await app.publish(UserCreated(user_id=7, email="jo@example.com", name="Jo"), channel=topic)
            event, message = await asyncio.wait_for(received.get(), TIMEOUT)
    assert event == UserCreatedModel(user_id=7, email="jo@example.com", name="Jo")
    assert message.headers["content-type"] == "application/json"
    assert json.loads(message.body)["event_id"] == sent.event_id  # the envelope travels beside the fields
