"""Network faults between the adapters and real brokers: latency, a blackhole and cut connections, injected by
:class:`tidings.testing.faults.FaultProxy`. The adapters reconnect, and nothing is lost.

First the proxy itself, against a tiny echo server. Then RabbitMQ and Kafka with a publishing App and a
consuming App both connected through the proxy, while the test cuts every connection (a reset on both sides;
once followed by 0.5 s in which new connections are refused, so that reconnecting fails a few times), adds
50 ms of latency, or swallows the traffic for seconds (a partition, ended by a cut or by AMQP heartbeats).
The publisher does what a user does with a failed publish: it publishes the event again (a retry is a new
event, with a new event id, for the same order). The consumer must receive every order at least once, and
every event whose publish returned. Each broker test prints one
line: orders sent, publishes retried, deliveries, distinct orders received, duplicates, lost, and the
connections the proxy saw (the reconnections among them).

Kafka clients connect to the address the broker advertises, not to the bootstrap address they were given,
so a proxy in front of the shared Tansu would be bypassed after the first metadata answer: the Kafka test
starts a Tansu of its own that advertises the proxy's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import RABBITMQ_URL, rabbitmq_vhost_url
from tidings.app import App, EventContext
from tidings.brokers.base import BrokerError
from tidings.events.event import Event
from tidings.testing.faults import FaultProxy
from tidings.testing.services import free_port, require, tansu

#: orders each broker test publishes
ORDERS = 2_000
#: concurrent publishers (a publish waits for its confirm: one at a time would make latency the whole test)
PUBLISHERS = 32


class OrderPlaced(Event, type="order.placed"):
    order_id: int


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


# -- the proxy itself, against an echo server --


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP echo server on loopback; its port."""
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the proxy reset the connection: that is the point of several tests
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            handlers.discard(task)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def reset_seen(reader: asyncio.StreamReader) -> bool:
    """True if the connection was reset (ECONNRESET); False if it ended with a FIN; fails if it stays open."""
    try:
        data = await asyncio.wait_for(reader.read(1), 5)
    except ConnectionResetError:
        return True
    assert data == b"", f"the connection is still open and sent {data!r}"
    return False


async def test_the_proxy_passes_data_both_ways_unchanged(echo_port: int) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: many chunks
    async with FaultProxy("127.0.0.1", echo_port) as proxy, connect(proxy.port) as (reader, writer):
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert echoed == payload
        assert (proxy.connections, proxy.active) == (1, 1)
        writer.write_eof()  # the end of the stream crosses the proxy too: the echo server closes
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await _wait(lambda: proxy.active == 0)
    print(f"\n[proxy] 1 MiB echoed through {proxy.connections} connection")


async def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_latency_delays_every_chunk_in_both_directions_and_keeps_their_order(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy, connect(proxy.port) as (reader, writer):
        writer.write(b"warm-up")
        assert await reader.readexactly(7) == b"warm-up"
        proxy.latency(0.1)
        started = time.monotonic()
        for i in range(20):
            writer.write(b"%03d" % i)
            await writer.drain()
            await asyncio.sleep(0.005)  # separate chunks
        echoed = await asyncio.wait_for(reader.readexactly(60), 10)
        took = time.monotonic() - started
        assert echoed == b"".join(b"%03d" % i for i in range(20))
        assert took >= 0.2, took  # 0.1 s each way
        assert took < 0.2 + 20 * 0.005 + 0.5, took  # chunks in flight overlap: not 20 x 0.2 s
        proxy.latency(0)
        started = time.monotonic()
        writer.write(b"x")
        await reader.readexactly(1)
        assert time.monotonic() - started < 0.1
    print(f"\n[proxy] latency 0.1 s: 20 chunks echoed in order in {took:.3f} s")


async def test_cut_resets_every_connection_and_new_ones_are_served(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(proxy.port)) for _ in range(3)]
            for reader, writer in clients:
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            assert proxy.cut() == 3
            assert [await reset_seen(reader) for reader, _ in clients] == [True, True, True]
            await _wait(lambda: proxy.active == 0)
        async with connect(proxy.port) as (reader, writer):
            writer.write(b"again")
            assert await reader.readexactly(5) == b"again"
        assert (proxy.connections, proxy.cuts) == (4, 3)
    print(f"\n[proxy] cut {proxy.cuts} connections (reset), {proxy.connections} served")


async def test_refuse_resets_new_connections_only(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy, connect(proxy.port) as (old_reader, old_writer):
        await _wait(lambda: proxy.active == 1)
        proxy.refuse()
        async with connect(proxy.port) as (reader, _):
            assert await reset_seen(reader)
        old_writer.write(b"still")
        assert await old_reader.readexactly(5) == b"still"
        proxy.heal()
        async with connect(proxy.port) as (reader, writer):
            writer.write(b"back")
            assert await reader.readexactly(4) == b"back"
        assert (proxy.refused, proxy.connections) == (1, 2)


async def test_blackhole_swallows_bytes_and_keeps_the_connection(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy, connect(proxy.port) as (reader, writer):
        proxy.blackhole()
        writer.write(b"lost in transit")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert proxy.dropped == len(b"lost in transit")
        assert proxy.active == 1
        proxy.heal()
        writer.write(b"after")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"after"  # the swallowed bytes never come
    print(f"\n[proxy] blackhole dropped {proxy.dropped} bytes, the connection lived on")


async def test_a_target_that_is_down_resets_the_client_and_only_loopback_is_served() -> None:
    async with FaultProxy("127.0.0.1", free_port()) as proxy, connect(proxy.port) as (reader, _):
        assert await reset_seen(reader)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("127.0.0.1", 5672, listen_host="0.0.0.0")


# -- what the broker tests share --


@dataclass
class Tally:
    """What the publishers and the consumer saw."""

    #: orders to publish: 0 .. orders-1
    orders: int = ORDERS
    #: event ids of the publishes that returned (RabbitMQ confirmed / Kafka's delivery report)
    confirmed: set[str] = field(default_factory=set)
    #: orders whose publish returned
    sent: int = 0
    #: failed publishes, by exception type (each one published again)
    failures: Counter[str] = field(default_factory=Counter)
    #: order id of every delivery, duplicates included
    deliveries: list[int] = field(default_factory=list)
    received_ids: set[str] = field(default_factory=set)
    #: connections reset by each cut, in order
    cuts: list[int] = field(default_factory=list)

    def line(self, broker: str, proxy: FaultProxy, first_connections: int, seconds: float) -> str:
        distinct = len(set(self.deliveries))
        return (
            f"[{broker}] sent={self.sent} retried={sum(self.failures.values())} {dict(self.failures)} "
            f"received={len(self.deliveries)} distinct={distinct} duplicates={len(self.deliveries) - distinct} "
            f"lost={self.orders - distinct} | connections={proxy.connections} (first {first_connections}, "
            f"reconnections {proxy.connections - first_connections}) cuts={self.cuts} refused={proxy.refused} "
            f"dropped={proxy.dropped}B | {seconds:.1f} s"
        )


def consume_into(app: App, channel: str, group: str, tally: Tally) -> None:
    @app.subscriber(channel, group=group)
    async def record(event: OrderPlaced, context: EventContext) -> None:
        tally.deliveries.append(event.order_id)
        tally.received_ids.add(context.envelope.event_id)


async def publish_orders(app: App, channel: str, tally: Tally, *, timeout: float) -> None:
    """Publish the tally's orders with PUBLISHERS concurrent publishers; a failed publish is published again."""
    pending: Iterator[int] = iter(range(tally.orders))

    async def publisher() -> None:
        for order_id in pending:
            while True:
                try:
                    envelope = await asyncio.wait_for(
                        app.publish(OrderPlaced(order_id=order_id), channel=channel, key=str(order_id)), timeout
                    )
                except (BrokerError, TimeoutError) as exc:
                    tally.failures[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                tally.confirmed.add(envelope.event_id)
                tally.sent += 1
                break

    await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def received_everything(tally: Tally, timeout: float = 30) -> None:
    """Wait until the consumer had every order, and every event whose publish returned."""
    everything = set(range(tally.orders))
    await until(lambda: set(tally.deliveries) >= everything, "every order to be received", timeout)
    await until(lambda: tally.confirmed <= tally.received_ids, "every confirmed event to be received", 10)


def assert_nothing_lost(tally: Tally) -> None:
    assert tally.sent == tally.orders
    lost = set(range(tally.orders)) - set(tally.deliveries)
    assert not lost, f"{len(lost)} orders lost: {sorted(lost)[:20]}"
    missing = tally.confirmed - tally.received_ids
    assert not missing, f"{len(missing)} events lost whose publish had returned"


async def faults_at(tally: Tally, schedule: list[tuple[int, Callable[[], object]]]) -> None:
    """Run each action of ``schedule`` once ``tally.sent`` reaches its count (while the publishers run)."""
    for count, action in schedule:
        while tally.sent < count:
            await asyncio.sleep(0.002)
        if isinstance(result := action(), int):  # a cut: how many connections it reset
            tally.cuts.append(result)


def cut_and_refuse(proxy: FaultProxy, seconds: float) -> int:
    """Cut every connection and refuse new ones for ``seconds``: the broker is gone for a while."""
    proxy.refuse()
    asyncio.get_running_loop().call_later(seconds, proxy.refuse, False)
    return proxy.cut()


# -- RabbitMQ --


@pytest.fixture(scope="module")
def amqp_target() -> Iterator[tuple[str, int, str]]:
    """(host, port, URL path) of RabbitMQ; the path names a virtual host made for this module when it can."""
    url = urlsplit(RABBITMQ_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 5672
    require("RabbitMQ", host, port)
    with rabbitmq_vhost_url(RABBITMQ_URL, "tidings-faults") as own:
        yield host, port, urlsplit(own).path or "/"


@contextlib.asynccontextmanager
async def rabbitmq_through_proxy(
    target: tuple[str, int, str], extra: str = ""
) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A proxy in front of RabbitMQ and the URL (own exchange) that connects through it."""
    host, port, path = target
    base = urlsplit(RABBITMQ_URL)
    async with FaultProxy(host, port) as proxy:
        netloc = f"{base.username or 'guest'}:{base.password or 'guest'}@127.0.0.1:{proxy.port}"
        query = f"exchange={unique('faults')}&reconnect_delay=0.05&reconnect_max_delay=0.5&connect_timeout=5{extra}"
        yield proxy, urlunsplit((base.scheme, netloc, path, query, ""))


async def test_rabbitmq_apps_survive_three_cuts_and_latency_and_lose_nothing(
    amqp_target: tuple[str, int, str],
) -> None:
    channel, tally = unique("orders"), Tally()
    started = time.monotonic()
    async with rabbitmq_through_proxy(amqp_target) as (proxy, url):
        consumer, publisher = App(url, name="faults-consumer"), App(url, name="faults-publisher")
        consume_into(consumer, channel, unique("g"), tally)
        async with consumer, publisher:
            first = proxy.connections
            schedule: list[tuple[int, Callable[[], object]]] = [
                (400, proxy.cut),
                (800, lambda: cut_and_refuse(proxy, 0.5)),  # reconnecting fails for a while
                (1_000, lambda: proxy.latency(0.05)),
                (1_200, proxy.cut),  # reconnecting through a slow link
                (1_400, lambda: proxy.latency(0)),
            ]
            faults = asyncio.create_task(faults_at(tally, schedule))
            await publish_orders(publisher, channel, tally, timeout=10)
            await faults
            await received_everything(tally)
    print("\n" + tally.line("rabbitmq cut x3 + latency 50 ms", proxy, first, time.monotonic() - started))
    assert proxy.cuts >= 3 * first  # every cut reset all the connections of both apps
    assert proxy.connections > first
    assert_nothing_lost(tally)


@pytest.mark.parametrize("ending", ["cut", "heartbeats"])
async def test_rabbitmq_apps_come_back_from_a_blackhole_and_lose_nothing_confirmed(
    amqp_target: tuple[str, int, str], ending: str
) -> None:
    """``cut``: a 2 s partition, then every connection reset when it ends (what the clients' timeouts would
    do, sooner). ``heartbeats``: a 3 s partition with 1 s AMQP heartbeats, then just healed: RabbitMQ gave the
    connections up (two missed heartbeats) and its goodbye crosses once the partition ends."""
    channel, tally = unique("orders"), Tally(orders=400)
    started = time.monotonic()
    extra, blackout = ("", 2.0) if ending == "cut" else ("&heartbeat=1", 3.0)
    async with rabbitmq_through_proxy(amqp_target, extra) as (proxy, url):
        consumer, publisher = App(url, name="faults-consumer"), App(url, name="faults-publisher")
        consume_into(consumer, channel, unique("g"), tally)

        async def partition() -> None:
            proxy.blackhole()
            await asyncio.sleep(blackout)
            proxy.heal()
            if ending == "cut":
                # in the same step as heal(): no byte may cross a stream the blackhole cut mid-frame
                tally.cuts.append(proxy.cut())

        async with consumer, publisher:
            first = proxy.connections
            partitions: list[asyncio.Task[None]] = []
            schedule: list[tuple[int, Callable[[], object]]] = [
                (100, lambda: partitions.append(asyncio.create_task(partition()))),
            ]
            faults = asyncio.create_task(faults_at(tally, schedule))
            # at most 0.5 s per attempt, then published again: the partition is felt
            await publish_orders(publisher, channel, tally, timeout=0.5)
            await faults
            await asyncio.gather(*partitions)
            await received_everything(tally)
    label = f"rabbitmq blackhole {blackout:g} s, ended by {ending}"
    print("\n" + tally.line(label, proxy, first, time.monotonic() - started))
    assert tally.failures["TimeoutError"] > 0  # the partition was felt
    assert proxy.dropped > 0
    assert proxy.connections > first  # the apps reconnected through the proxy
    assert_nothing_lost(tally)


# -- Kafka --

KAFKA_SETTINGS = (
    "session_timeout_ms=2000&fetch_wait_ms=25&drain_timeout=5&timeout=15"
    "&producer.sticky.partitioning.linger.ms=0&topic.metadata.refresh.interval.ms=500"
)


@contextlib.asynccontextmanager
async def tansu_behind_proxy() -> AsyncIterator[FaultProxy]:
    """A Tansu broker of its own that advertises the proxy's port: every client connection goes through it."""
    tansu_port = free_port()
    async with FaultProxy("127.0.0.1", tansu_port) as proxy:
        with tansu(port=tansu_port, advertised_port=proxy.port):
            yield proxy


def advertised_ports(port: int) -> set[int]:
    """The ports of the brokers in the metadata Tansu gives a client that bootstraps at ``port``."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
    return {broker.port for broker in metadata.brokers.values()}


async def test_kafka_apps_survive_cuts_and_latency_and_lose_nothing() -> None:
    channel, tally = unique("orders"), Tally()
    started = time.monotonic()
    async with tansu_behind_proxy() as proxy:
        url = f"kafka://127.0.0.1:{proxy.port}?{KAFKA_SETTINGS}"
        consumer, publisher = App(url, name="faults-consumer"), App(url, name="faults-publisher")
        consume_into(consumer, channel, unique("g"), tally)
        async with consumer, publisher:
            first = proxy.connections
            assert await asyncio.to_thread(advertised_ports, proxy.port) == {proxy.port}
            schedule: list[tuple[int, Callable[[], object]]] = [
                (600, lambda: cut_and_refuse(proxy, 0.5)),
                (900, lambda: proxy.latency(0.05)),
                (1_300, proxy.cut),
                (1_600, lambda: proxy.latency(0)),
            ]
            faults = asyncio.create_task(faults_at(tally, schedule))
            await publish_orders(publisher, channel, tally, timeout=20)
            await faults
            await received_everything(tally, 40)
    print("\n" + tally.line("kafka cut x2 + latency 50 ms", proxy, first, time.monotonic() - started))
    assert proxy.cuts >= 2
    assert proxy.connections > first
    assert_nothing_lost(tally)
