"""``kafka://`` against the broker contract on a real Kafka-protocol broker (Tansu, started once for the session),
plus what only Kafka promises: offsets committed after the handler and never past an unfinished message, keys
and partitions, record headers, consumer-group rebalances, errors that say what to do, topics from an AsyncAPI
document's bindings, and the App end to end.

Tansu keeps everything in memory for the session: each test uses topics and groups of its own (uuid-suffixed).
Settings the tests use (see the adapter's module documentation, "Tansu"): a short session timeout (joining a
group takes Tansu about half of it), short fetch waits (Tansu answers a fetch only when its wait is up), a random
partition for each record without a key (so that two members both get some), a fast metadata refresh (patterns).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tidings.app import App, EventContext
from tidings.brokers.base import (
    DL_ATTEMPTS,
    DL_ERROR_TYPE,
    DL_ORIGIN,
    Broker,
    BrokerError,
    Delivery,
    Message,
    broker_from_url,
    channel_matcher,
)
from tidings.brokers.kafka import (
    DLQ_CHANNEL,
    DLQ_REASON,
    DLQ_SETTLED,
    DLQ_SETTLED_AS,
    RETRY_ATTEMPT,
    RETRY_CHANNEL,
    RETRY_DUE,
    RETRY_GROUP,
    RETRY_OFFSET,
    RETRY_PARTITION,
    RETRY_TIMESTAMP,
    KafkaBroker,
    KafkaDelivery,
    TopicSpec,
    _retry_level,
    ensure_topics,
    topic_regex,
)
from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.reliability.retry import RetryPolicy
from tidings.testing import BrokerContract
from tidings.testing.broker_contract import Recorder, message, message_id

SEED = Path(__file__).resolve().parents[1] / "examples" / "user-service.asyncapi.yaml"
TIMEOUT = 20.0
#: what every test broker adds to the bootstrap address (why: see the module documentation)
SETTINGS = (
    "session_timeout_ms=2000&fetch_wait_ms=25&drain_timeout=5&timeout=15"
    "&producer.sticky.partitioning.linger.ms=0&topic.metadata.refresh.interval.ms=500"
)


def kafka_url(bootstrap: str, extra: str = "") -> str:
    return f"kafka://{bootstrap}?{SETTINGS}{'&' + extra if extra else ''}"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def recorder(behaviour: Callable[[Delivery], Any] | None = None) -> Recorder:
    return Recorder(behaviour, timeout=TIMEOUT) if behaviour else Recorder(timeout=TIMEOUT)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (for state outside this process, like committed offsets) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offsets of ``topic`` (-1001: none), read by a consumer that joins nothing."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return [tp.offset for tp in found]


class TestKafkaBrokerContract(BrokerContract):
    timeout = TIMEOUT

    @pytest.fixture(autouse=True)
    def _kafka(self, kafka_bootstrap: str) -> None:
        self.url = kafka_url(kafka_bootstrap)

    def create_broker(self) -> Broker:
        return KafkaBroker(self.url)


def produce_raw(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Produce with a plain confluent-kafka producer (explicit partitions, raw headers), confirmed."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(topic, **record)
    assert producer.flush(10) == 0


# -- commits ----------------------------------------------------------------------------------------------------


async def test_offsets_are_committed_after_the_handler_and_never_past_an_unfinished_message(
    kafka_bootstrap: str,
) -> None:
    """Partition 0: 'held' (offset 0) is still in its handler when 'after' (offset 1) is acked; partition 1:
    'other' is acked. Once partition 1's commit is visible, partition 0 still has none: a message that finished
    early does not commit past one still running. Releasing 'held' commits both."""
    topic, group = unique("commits"), unique("g")
    release = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        if message_id(delivery) == "held":
            await asyncio.wait_for(release.wait(), TIMEOUT)
        await delivery.ack()

    received = recorder(handle)
    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=2")) as broker:
        await broker.subscribe(topic, group, received, prefetch=8)
        await asyncio.to_thread(
            produce_raw,
            kafka_bootstrap,
            topic,
            [
                {"value": b"0", "partition": 0, "headers": {"id": "held"}},
                {"value": b"1", "partition": 0, "headers": {"id": "after"}},
                {"value": b"2", "partition": 1, "headers": {"id": "other"}},
            ],
        )
        await received.wait_ids({"held", "after", "other"})
        offsets = await wait_for_offsets(kafka_bootstrap, group, topic, lambda found: found[1] == 1)
        assert offsets[0] == -1001, f"partition 0 committed {offsets[0]} while offset 0 is still being handled"
        release.set()
        await wait_for_offsets(kafka_bootstrap, group, topic, lambda found: found == [2, 1])


async def wait_for_offsets(
    bootstrap: str, group: str, topic: str, condition: Callable[[list[int]], bool], partitions: int = 2
) -> list[int]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = await asyncio.to_thread(committed, bootstrap, group, topic, partitions)
        if condition(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for the committed offsets; last seen {found}")
        await asyncio.sleep(0.05)


_CRASHING_MEMBER = textwrap.dedent(
    """
    import asyncio, sys
    from tidings.brokers.kafka import KafkaBroker

    async def main(url, topic, group):
        async def hold(delivery):
            print("holding", delivery.message.headers.get("id"), flush=True)
            await asyncio.Event().wait()  # never settles: the process is killed first

        async with KafkaBroker(url) as broker:
            await broker.subscribe(topic, group, hold)
            await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_message_whose_member_died_in_the_handler_goes_to_the_next_member(kafka_bootstrap: str) -> None:
    """A member killed (SIGKILL) while its handler runs committed nothing: the group's next member gets it."""
    topic, group = unique("crash"), unique("g")
    url = kafka_url(kafka_bootstrap, "partitions=1")
    async with KafkaBroker(url) as broker:
        await broker.publish(message(topic, "m1", b"payload"))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CRASHING_MEMBER, url, topic, group, stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
            assert line.decode().split() == ["holding", "m1"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
        received = recorder()
        await broker.subscribe(topic, group, received)
        await received.wait_ids({"m1"}, "m1 again, at the next member")
        [delivery] = received.deliveries
        assert delivery.message.body == b"payload"


# -- keys, partitions, headers ----------------------------------------------------------------------------------


async def test_the_messages_of_a_key_go_to_one_partition_in_publish_order(kafka_bootstrap: str) -> None:
    topic = unique("accounts")
    keys = [f"account-{i}" for i in range(6)]
    seen: dict[str, list[tuple[int, int]]] = {key: [] for key in keys}

    async def handle(delivery: Delivery) -> None:
        assert isinstance(delivery, KafkaDelivery)
        assert delivery.message.key is not None
        seen[delivery.message.key].append((delivery.partition, int(delivery.message.body)))
        await delivery.ack()

    received = recorder(handle)
    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=3")) as broker:
        await broker.subscribe(topic, unique("g"), received, prefetch=16)
        await broker.publish_many(
            [Message(topic, str(seq).encode(), {"id": f"{key}/{seq}"}, key) for seq in range(10) for key in keys]
        )
        await received.wait_for(lambda: len(received.deliveries) == 60, "all 60 messages")
    partitions_used = set()
    for key, got in seen.items():
        assert len({partition for partition, _ in got}) == 1, f"key {key} spread over partitions: {got}"
        assert [seq for _, seq in got] == list(range(10)), f"key {key} out of order: {got}"
        partitions_used.add(got[0][0])
    assert len(partitions_used) > 1


async def test_keys_and_headers_are_kafka_record_keys_and_headers(kafka_bootstrap: str) -> None:
    """A plain Kafka client's record reaches a handler with its key and headers (as text; a missing value is
    ""); tidings' message reaches a plain consumer as a record with that key and those headers (UTF-8)."""
    topic = unique("records")
    received = recorder()
    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=1")) as broker:
        await broker.subscribe(topic, unique("g"), received)
        await asyncio.to_thread(
            produce_raw,
            kafka_bootstrap,
            topic,
            [
                {
                    "value": b'{"user_id": 7}',
                    "key": b"user-7",
                    "headers": [
                        ("id", b"raw"),
                        ("content-type", b"application/json"),
                        ("ce_id", b"e-1"),
                        ("nil", None),
                    ],
                }
            ],
        )
        await received.wait_ids({"raw"})
        [delivery] = received.deliveries
        assert delivery.message == Message(
            topic,
            b'{"user_id": 7}',
            {"id": "raw", "content-type": "application/json", "ce_id": "e-1", "nil": ""},
            "user-7",
        )
        await broker.publish(Message(topic, b"from tidings", {"id": "mine", "ключ": "значение ✓"}, "клиент-1"))
        await received.wait_ids({"mine"})

    def read_back() -> Any:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique("reader")})
        try:
            consumer.assign([TopicPartition(topic, 0, 1)])
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                for record in consumer.consume(1, 0.2):
                    if record.error() is None:
                        return record
        finally:
            consumer.close()
        raise AssertionError("the record tidings published was not read back")

    record = await asyncio.to_thread(read_back)
    assert record.value() == b"from tidings"
    assert record.key() == "клиент-1".encode()
    assert record.headers() == [("id", b"mine"), ("ключ", "значение ✓".encode())]


async def test_a_full_local_queue_makes_publish_many_wait_not_fail(kafka_bootstrap: str) -> None:
    """librdkafka's queue holds 10 records here: publishing 300 at once waits for room (BufferError) each time."""
    topic = unique("burst")
    received = recorder()
    url = kafka_url(kafka_bootstrap, "partitions=1&producer.queue.buffering.max.messages=10")
    async with KafkaBroker(url) as broker:
        await broker.subscribe(topic, unique("g"), received, prefetch=64)
        await broker.publish_many([message(topic, f"m{i}", key="k") for i in range(300)])
        await received.wait_for(lambda: len(received.deliveries) == 300, "all 300")
    assert received.ids() == [f"m{i}" for i in range(300)]


# -- consumer groups --------------------------------------------------------------------------------------------


async def test_two_members_share_the_partitions_and_a_rebalance_loses_and_repeats_nothing(kafka_bootstrap: str) -> None:
    """A joins; a second member B joins while A's handler holds 'slow': the rebalance waits for it, commits it,
    and only then hands partitions over ('slow' is not handled twice). A and B then split the partitions. B
    leaves: A gets them all. Every message is handled exactly once, and the group's offsets end at the log's end."""
    topic, group = unique("jobs"), unique("workers")
    handled: list[tuple[str, int, str]] = []
    last_offsets: dict[int, int] = {}
    started, release = asyncio.Event(), asyncio.Event()
    progress = recorder()

    def member(name: str) -> Callable[[Delivery], Any]:
        async def handle(delivery: Delivery) -> None:
            assert isinstance(delivery, KafkaDelivery)
            if message_id(delivery) == "slow":
                started.set()
                await asyncio.wait_for(release.wait(), TIMEOUT)
            handled.append((name, delivery.partition, message_id(delivery)))
            last_offsets[delivery.partition] = max(delivery.offset, last_offsets.get(delivery.partition, -1))
            progress.changed()
            await delivery.ack()

        return handle

    def ids() -> list[str]:
        return [mid for _, _, mid in handled]

    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=4")) as broker:
        a = await broker.subscribe(topic, group, member("a"))
        await broker.publish(message(topic, "slow", key="slow"))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        joining = asyncio.ensure_future(broker.subscribe(topic, group, member("b")))
        # white-box: A's partitions are revoked (the rebalance began) while 'slow' is still running
        await wait_until(lambda: not a._partitions, "the revocation of A's partitions")  # type: ignore[attr-defined]
        assert not joining.done()
        release.set()
        b = await asyncio.wait_for(joining, TIMEOUT)

        first = [f"first-{i}" for i in range(40)]
        await broker.publish_many([message(topic, mid, key=mid) for mid in first])
        await progress.wait_for(lambda: set(first) <= set(ids()), "the first 40")
        by_member = {name: {p for n, p, mid in handled if n == name and mid in first} for name in ("a", "b")}
        assert by_member["a"], f"both members get partitions: {by_member}"
        assert by_member["b"], f"both members get partitions: {by_member}"
        assert not by_member["a"] & by_member["b"], f"a partition has one member at a time: {by_member}"

        await b.close()
        second = [f"second-{i}" for i in range(40)]
        await broker.publish_many([message(topic, mid, key=mid) for mid in second])
        await progress.wait_for(lambda: set(second) <= set(ids()), "the second 40, all at A")
        assert {name for name, _, mid in handled if mid in second} == {"a"}
        await broker.publish(message(topic, "last", key="last"))  # a barrier: redeliveries would come before it
        await progress.wait_for(lambda: "last" in ids(), "the last message")
        assert sorted(ids()) == sorted(["slow", *first, *second, "last"]), "a message was lost or handled twice"
        # (from the offsets handled, not the log's end offsets, which Tansu reports wrongly after batches)
        ends = [last_offsets.get(p, -1002) + 1 for p in range(4)]
        await wait_for_offsets(kafka_bootstrap, group, topic, lambda found: found == ends, partitions=4)


# -- dead letters -----------------------------------------------------------------------------------------------


def read_raw(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, read from the beginning with a plain consumer that commits nothing."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("raw-reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    records: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: the beginning
        remaining = set(partitions)
        deadline = time.monotonic() + TIMEOUT
        while remaining and time.monotonic() < deadline:
            for record in consumer.consume(100, 0.1):
                if record.error() is None:
                    records.append(record)
                else:
                    remaining.discard(record.partition())
    finally:
        consumer.close()
    assert not remaining, f"{topic} was not read to its end"
    return records


async def test_settled_dead_letters_are_skipped_by_every_reader_and_markers_say_what_they_settle(
    kafka_bootstrap: str,
) -> None:
    """Dead letters in a dead-letter topic of two partitions: purged and replayed ones are marked settled by a
    record in their own partition; dead_letters() skips them and the markers, here and in another broker."""
    topic, dlq, group = unique("orders"), unique("dlq"), unique("g")
    url = kafka_url(kafka_bootstrap, f"partitions=2&dead_letter_topic={dlq}")
    seen: set[str] = set()

    async def give_up_once(delivery: Delivery) -> None:
        if message_id(delivery) in seen:
            await delivery.ack()  # replayed: handled this time
            return
        seen.add(message_id(delivery))
        await delivery.dead_letter("no", {DL_ERROR_TYPE: delivery.message.headers["kind"], DL_ORIGIN: "not this"})

    received = recorder(give_up_once)
    async with KafkaBroker(url) as broker:
        await broker.create_topics([TopicSpec(dlq, partitions=2)])
        await broker.subscribe(topic, group, received)
        kinds = {"m0": "A", "m1": "B", "m2": "A", "m3": "B", "m4": "A"}
        await broker.publish_many(
            [Message(topic, mid.encode(), {"id": mid, "kind": kind}, key=mid) for mid, kind in kinds.items()]
        )
        await received.wait_ids(set(kinds))
        dead = []
        deadline = time.monotonic() + TIMEOUT
        while len(dead := await broker.dead_letters()) < len(kinds):
            assert time.monotonic() < deadline, f"only {len(dead)} dead letters"
            await asyncio.sleep(0.05)
        assert sorted(d.message.headers["id"] for d in dead) == sorted(kinds)
        assert len({d.id for d in dead}) == len(kinds)
        for delivery in received.deliveries:
            assert isinstance(delivery, KafkaDelivery)
            [letter] = [d for d in dead if d.message.headers["id"] == message_id(delivery)]
            assert letter.details[DL_ORIGIN] == f"kafka:{topic}/{delivery.partition}@{delivery.offset}"
            assert letter.details[DL_ERROR_TYPE] == kinds[message_id(delivery)]
            assert letter.message.key == message_id(delivery)
            assert set(letter.message.headers) == {"id", "kind"}

        purged = [d.id for d in dead if d.error_type == "B"]
        assert await broker.settle_dead_letters(lambda d: d.error_type == "B", replay=False) == 2
        [m0] = [d for d in dead if d.message.headers["id"] == "m0"]
        assert await broker.settle_dead_letters(lambda d: d.id == m0.id, replay=True) == 1
        await received.wait_for(lambda: received.ids().count("m0") == 2, "the replayed m0")
        again = received.deliveries[-1]
        assert (again.message.body, again.message.key, dict(again.message.headers)) == (
            b"m0",
            "m0",
            {"id": "m0", "kind": "A"},
        )
        remaining = sorted((d.id, d.message.headers["id"]) for d in await broker.dead_letters())
        assert sorted(mid for _, mid in remaining) == ["m2", "m4"]

    # another broker (another process, as far as Kafka knows) sees the same
    async with KafkaBroker(url) as other:
        assert sorted((d.id, d.message.headers["id"]) for d in await other.dead_letters()) == remaining
        # and what the topic holds: the five dead letters and three markers (one per settle and partition)
        records = await asyncio.to_thread(read_raw, kafka_bootstrap, dlq)
        markers = [r for r in records if DLQ_SETTLED in dict(r.headers())]
        assert len(records) - len(markers) == 5
        settled: dict[str, str] = {}
        for marker in markers:
            headers = {k: v.decode() for k, v in marker.headers()}
            assert marker.value() in (None, b"")
            assert marker.key() is None
            for dead_id in headers[DLQ_SETTLED].split(","):
                assert int(dead_id.partition(":")[0]) == marker.partition()  # in the partition of what it settles
                assert int(dead_id.partition(":")[2]) < marker.offset()  # after it
                settled[dead_id] = headers[DLQ_SETTLED_AS]
        assert settled == {**dict.fromkeys(purged, "purged"), m0.id: "replayed"}
        # everything settled: nothing left to read
        assert await other.settle_dead_letters(lambda d: True, replay=False) == 2
        assert await other.dead_letters() == []


async def test_a_dead_letter_that_cannot_be_replayed_stays_in_the_topic(kafka_bootstrap: str) -> None:
    dlq = unique("dlq")
    async with KafkaBroker(kafka_url(kafka_bootstrap, f"dead_letter_topic={dlq}")) as broker:
        await broker.create_topics([TopicSpec(dlq, partitions=1)])
        # written by hand (another tool): its channel is no topic name
        await asyncio.to_thread(
            produce_raw,
            kafka_bootstrap,
            dlq,
            [{"value": b"x", "headers": {"id": "x", DLQ_CHANNEL: "no such topic!", DLQ_REASON: "no"}}],
        )
        [dead] = await broker.dead_letters()
        assert (dead.message.channel, dead.id) == ("no such topic!", "0:0")
        counted: list[int] = []
        with pytest.raises(BrokerError, match="no such topic!"):
            await broker.settle_dead_letters(lambda d: True, replay=True, progress=counted.append)
        assert counted == []
        assert [d.id for d in await broker.dead_letters()] == ["0:0"]
        assert await broker.settle_dead_letters(lambda d: True, replay=False) == 1
        assert await broker.dead_letters() == []


# -- retry topics -----------------------------------------------------------------------------------------------


def test_a_delay_goes_to_the_lowest_retry_level_not_below_it_and_names_are_topic_names() -> None:
    broker = KafkaBroker("kafka://host")
    group, topics = broker.retry_names("billing", "orders.placed")
    assert group == f"tidings.retry.billing.orders.placed.{group.rsplit('.', 1)[1]}"
    assert topics == [f"{group}.{label}" for label in ("1s", "5s", "15s", "1m", "5m", "15m", "1h")]
    levels = {0.001: "1s", 1: "1s", 1.001: "5s", 5: "5s", 14: "15s", 60: "1m", 61: "5m", 3600: "1h", 86400: "1h"}
    for delay, label in levels.items():
        assert topics[_retry_level(delay)].endswith(f".{label}"), delay
    # groups and channels whose readable names are the same still get retry topics of their own
    assert broker.retry_names("a.b", "c")[0] != broker.retry_names("a", "b.c")[0]
    pattern_group, pattern_topics = broker.retry_names("email service", "user.{id}.*")
    long_group, long_topics = broker.retry_names("g" * 300, "c" * 249)
    custom_group, _ = KafkaBroker("kafka://host?retry_topic_prefix=acme.retries").retry_names("g", "c")
    assert custom_group.startswith("acme.retries.g.c.")
    for name in (pattern_group, *pattern_topics, long_group, *long_topics):
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name), name
    with pytest.raises(UsageError, match="retry_topic_prefix"):
        KafkaBroker("kafka://host?retry_topic_prefix=no%20spaces")


async def test_a_nacked_message_goes_to_a_retry_topic_its_offset_is_committed_and_it_comes_back_after_the_delay(
    kafka_bootstrap: str,
) -> None:
    """nack(delay=3) writes a copy to the group's 5 s retry topic (the original's key, value and headers, and where
    it came from, its attempt, when it is due), and the original's offset is committed at once: the partition goes
    on (the key's next message is handled meanwhile). The copy comes back as the original channel's message,
    attempt 2, not before the delay; acking it commits the retry topic's offset."""
    topic, group, delay = unique("orders"), unique("g"), 3.0
    nacked_at: list[float] = []
    came_back_at: list[float] = []

    async def handle(delivery: Delivery) -> None:
        if message_id(delivery) == "m1" and delivery.attempt == 1:
            nacked_at.append(time.time())
            await delivery.nack(delay=delay)
            return
        if message_id(delivery) == "m1":
            came_back_at.append(time.time())
        await delivery.ack()

    received = recorder(handle)
    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=1")) as broker:
        retry_group, retry_topics = broker.retry_names(group, topic)
        await broker.subscribe(topic, group, received)
        await broker.publish(Message(topic, b"payload", {"id": "m1", "content-type": "text/plain"}, "k"))
        await received.wait_ids({"m1"})
        await broker.publish(Message(topic, b"next", {"id": "m2"}, "k"))  # the same key: not held back
        await received.wait_ids({"m2"})
        assert not came_back_at
        # the original's offset, and the next one's, are committed long before the copy is due
        await wait_for_offsets(kafka_bootstrap, group, topic, lambda found: found == [2], partitions=1)
        assert time.time() - nacked_at[0] < delay, "the original's offset was committed only after the delay"

        [copy] = await asyncio.to_thread(read_raw, kafka_bootstrap, retry_topics[1])  # the 5 s level
        headers = {k: v.decode() for k, v in copy.headers()}
        due = int(headers.pop(RETRY_DUE))
        assert nacked_at[0] * 1000 + delay * 1000 <= due <= nacked_at[0] * 1000 + delay * 1000 + 1000
        assert headers.pop(RETRY_TIMESTAMP).isdigit()
        assert headers == {
            "id": "m1",
            "content-type": "text/plain",
            RETRY_CHANNEL: topic,
            RETRY_PARTITION: "0",
            RETRY_OFFSET: "0",
            RETRY_ATTEMPT: "1",
            RETRY_GROUP: group,
        }
        assert (copy.key(), copy.value()) == (b"k", b"payload")

        await received.wait_for(lambda: received.ids().count("m1") == 2, "m1 from the retry topic")
        waited = came_back_at[0] - nacked_at[0]
        assert waited >= delay, f"redelivered after {waited:.3f} s, before the {delay} s delay"
        assert waited < delay + 3, f"redelivered only after {waited:.3f} s"
        again = received.deliveries[-1]
        assert isinstance(again, KafkaDelivery)
        assert again.attempt == 2
        assert again.message == Message(topic, b"payload", {"id": "m1", "content-type": "text/plain"}, "k")
        assert (again.partition, again.offset) == (0, 0)  # the original's place
        await wait_for_offsets(kafka_bootstrap, retry_group, retry_topics[1], lambda found: found == [1], partitions=1)
        await self_barrier(broker, topic, received)
        assert received.ids().count("m1") == 2


async def self_barrier(broker: Broker, channel: str, received: Recorder) -> None:
    sentinel = unique("barrier")
    await broker.publish(message(channel, sentinel))
    await received.wait_ids({sentinel}, "the barrier message")


async def test_a_message_waiting_in_a_retry_topic_is_redelivered_by_the_next_subscription_of_the_group(
    kafka_bootstrap: str,
) -> None:
    """The retry state is in Kafka, not in the process: a member nacks m1 with a delay and closes before it is due;
    a new broker's member of the group gets it when it is due, as attempt 2 (and not the original again)."""
    topic, group, delay = unique("orders"), unique("g"), 3.0
    url = kafka_url(kafka_bootstrap, "partitions=1")
    nacked_at: list[float] = []

    async def nack(delivery: Delivery) -> None:
        nacked_at.append(time.time())
        await delivery.nack(delay=delay)

    async with KafkaBroker(url) as first:
        await first.subscribe(topic, group, recorder(nack))
        await first.publish(message(topic, "m1", b"payload", key="k"))
        await wait_until(lambda: bool(nacked_at), "the first delivery")
        await wait_for_offsets(kafka_bootstrap, group, topic, lambda found: found == [1], partitions=1)
    assert time.time() - nacked_at[0] < delay, "the first member closed after m1 was due: the test proves nothing"

    received = recorder()
    async with KafkaBroker(url) as second:
        await second.subscribe(topic, group, received)
        await received.wait_ids({"m1"}, "m1 from the retry topic")
        delivery = received.deliveries[0]
        waited = received.started_at[0] - time.monotonic() + time.time() - nacked_at[0]
        assert waited >= delay, f"redelivered after {waited:.3f} s, before the {delay} s delay"
        assert (delivery.attempt, delivery.message.body, delivery.message.key) == (2, b"payload", "k")
        assert delivery.message.channel == topic
        await self_barrier(second, topic, received)
        assert received.ids().count("m1") == 1


async def test_a_pattern_subscriptions_retries_come_back_on_their_own_channel(kafka_bootstrap: str) -> None:
    prefix = unique("shop")
    channel = f"{prefix}.order.placed"

    async def nack_first(delivery: Delivery) -> None:
        if delivery.attempt == 1 and message_id(delivery) == "m1":
            await delivery.nack(delay=0.2)
        else:
            await delivery.ack()

    received = recorder(nack_first)
    async with KafkaBroker(kafka_url(kafka_bootstrap)) as broker:
        await broker.create_topics([TopicSpec(channel)])
        await broker.subscribe(f"{prefix}.#", unique("g"), received)
        await broker.publish(message(channel, "m1"))
        await received.wait_for(lambda: received.ids().count("m1") == 2, "m1 again")
        assert [(d.message.channel, d.attempt) for d in received.deliveries] == [(channel, 1), (channel, 2)]


async def test_an_app_gives_up_after_exactly_n_attempts_through_the_retry_topics(kafka_bootstrap: str) -> None:
    """RetryPolicy(3): three deliveries (the first, two from retry topics), then a dead letter saying 3 attempts,
    whose origin is the original record (not the retry topic's copy)."""
    channel, dlq = unique("orders"), unique("dlq")
    app = App(kafka_url(kafka_bootstrap, f"partitions=1&dead_letter_topic={dlq}"), name=unique("billing"))
    attempts: list[int] = []
    progress = recorder()

    @app.subscriber(channel, retry=RetryPolicy(3, base_delay=0.1, jitter=0))
    async def charge(event: UserCreated, context: EventContext) -> None:
        attempts.append(context.attempt)
        progress.changed()
        raise ValueError("card declined")

    async with app:
        await app.publish(UserCreated(user_id=1, email="jo@example.com", name="Jo"), channel=channel, key="jo")

        async def dead() -> list[Any]:
            return [d for d in await app.broker.dead_letters() if d.message.channel == channel]

        deadline = time.monotonic() + TIMEOUT
        while not (found := await dead()):
            assert time.monotonic() < deadline, f"not dead-lettered; attempts {attempts}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # no fourth attempt comes
    assert attempts == [1, 2, 3]
    [letter] = found
    assert letter.attempts == 3
    assert letter.details[DL_ATTEMPTS] == "3"
    assert letter.details[DL_ORIGIN] == f"kafka:{channel}/0@0"
    assert letter.message.key == "jo"
    assert not [name for name in letter.message.headers if name.startswith("tidings-retry-")]


# -- errors and URLs --------------------------------------------------------------------------------------------


async def test_an_unreachable_broker_fails_start_within_the_timeout_in_one_line_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = KafkaBroker("kafka+sasl://app:s3cret@127.0.0.1:1?timeout=1")
    assert broker.url == "kafka+sasl://app:***@127.0.0.1:1?timeout=1"
    assert "s3cret" not in repr(broker)
    with pytest.raises(BrokerError, match="not started"):
        await broker.publish(message("orders", "m1"))
    started = time.monotonic()
    with caplog.at_level("DEBUG"), pytest.raises(BrokerError) as caught:
        await broker.start()
    assert time.monotonic() - started < 5
    text = str(caught.value)
    assert "127.0.0.1:1" in text
    assert "check that the broker runs" in text
    assert "\n" not in text
    assert "s3cret" not in text
    assert "s3cret" not in caplog.text
    await broker.close()  # never started: nothing to do


async def test_a_setting_librdkafka_does_not_know_is_a_usage_error_at_start() -> None:
    broker = KafkaBroker("kafka://127.0.0.1:1?no.such.setting=1&timeout=1")
    with pytest.raises(UsageError, match=r"no\.such\.setting"):
        await broker.start()


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("kafka://", {}, "needs a host"),
        ("kafka://host:notaport", {}, "bad port"),
        ("kafka://host:9092/events", {}, "has no path"),
        ("kafkas://host:9092", {}, "not a Kafka broker URL"),
        ("kafka://host?bogus=1", {}, "unknown Kafka broker URL parameter 'bogus'"),
        ("kafka://host", {"bogus": 1}, "unknown Kafka broker option(s) bogus"),
        ("kafka://host?partitions=0", {}, "partitions='0' must be >= 1"),
        ("kafka://host?timeout=soon", {}, "is not a number"),
        ("kafka://host?auto_offset_reset=never", {}, "choose one of earliest, latest"),
        ("kafka://host?acks=1&idempotence=true", {}, "needs acks=all"),
        ("kafka://app:s3cret@host", {}, "does not use SASL"),
        ("kafka+sasl://host", {}, "needs a user name and a password"),
        ("kafka://host?password=s3cret", {}, "keyword argument only"),
        ("kafka://host?dead_letter_topic=dead%20letters", {}, "is not a Kafka topic name"),
        ("kafka://host?group.id=x", {}, "are tidings' own"),
        ("kafka://host", {"config": {"enable.auto.commit": True}}, "are tidings' own"),
    ],
)
def test_a_bad_url_or_option_is_a_usage_error_that_says_what_is_wrong(
    url: str, options: dict[str, object], says: str
) -> None:
    with pytest.raises(UsageError) as caught:
        KafkaBroker(url, **options)
    assert says in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_url_options_keywords_and_librdkafka_settings() -> None:
    broker = broker_from_url("kafka+sasl_ssl://app:p%40ss@k1,k2:9093?mechanism=scram-sha-512&partitions=6&linger_ms=2")
    assert isinstance(broker, KafkaBroker)
    assert broker.bootstrap_servers == "k1:9092,k2:9093"
    assert broker.url == "kafka+sasl_ssl://app:***@k1,k2:9093?mechanism=scram-sha-512&partitions=6&linger_ms=2"
    producer = broker._producer_config()
    assert (producer["security.protocol"], producer["sasl.mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (producer["sasl.username"], producer["sasl.password"]) == ("app", "p@ss")
    assert (producer["acks"], producer["enable.idempotence"], producer["linger.ms"]) == ("all", True, 2.0)
    # keyword arguments win over the URL; dotted names and config= pass through to librdkafka
    broker = KafkaBroker(
        "kafka://host?partitions=6&fetch.min.bytes=10&consumer.fetch.max.bytes=9999999&producer.batch.size=100",
        partitions=2,
        ssl_key_password="secret-key",
        config={"socket.keepalive.enable": True},
    )
    assert broker._settings.partitions == 2
    consumer = broker._consumer_config("g")
    assert consumer["group.id"] == "g"
    assert (consumer["enable.auto.commit"], consumer["enable.auto.offset.store"]) == (False, False)
    assert (consumer["fetch.min.bytes"], consumer["fetch.max.bytes"]) == ("10", "9999999")
    assert consumer["socket.keepalive.enable"] == "true"
    assert "batch.size" not in consumer
    assert broker._producer_config()["batch.size"] == "100"
    assert "secret-key" not in broker.url
    assert KafkaBroker("kafka://host?acks=1")._producer_config()["enable.idempotence"] is False


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("user.*", ["user.created", "user.x"], ["user", "user.created.v2", "users.created"]),
        ("user.#", ["user", "user.created", "user.created.v2"], ["users.created", "order.created"]),
        ("user.>", ["user.created.v2"], ["userx"]),
        ("user.{id}.renamed", ["user.42.renamed"], ["user.renamed", "user.4.2.renamed"]),
        ("user.cre*", ["user.created", "user.cre"], ["user.deleted"]),
    ],
)
def test_patterns_become_librdkafka_regexes_that_match_what_channel_matcher_matches(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    regex, matcher = re.compile(topic_regex(pattern)), channel_matcher(pattern)
    for topic in matching:
        assert regex.search(topic), topic
        assert matcher(topic), topic
    for topic in not_matching:
        assert not regex.search(topic), topic
        assert not matcher(topic), topic


# -- topics from an AsyncAPI document ---------------------------------------------------------------------------

DOCUMENT_3 = """
asyncapi: 3.0.0
info: {title: Orders, version: 1.0.0}
channels:
  placed:
    address: orders.placed.SUFFIX
    bindings:
      kafka:
        partitions: 5
        replicas: 1
        topicConfiguration:
          retention.ms: 86400000
          cleanup.policy: [delete]
        bindingVersion: 0.5.0
  audit:
    address: audit.SUFFIX
  renamed:
    address: user.{userId}.renamed
    parameters:
      userId: {}
  logical:
    address: logical.SUFFIX
    bindings:
      kafka:
        topic: physical.SUFFIX
        partitions: 2
"""

DOCUMENT_2 = """
asyncapi: 2.6.0
info: {title: Orders, version: 1.0.0}
channels:
  shipped.SUFFIX:
    bindings:
      kafka:
        partitions: 4
        topicConfiguration:
          retention.ms: 3600000
    subscribe:
      message:
        payload: {type: object}
"""


@pytest.mark.parametrize("text", [DOCUMENT_3, DOCUMENT_2], ids=["asyncapi-3", "asyncapi-2"])
async def test_ensure_topics_creates_the_topics_a_documents_kafka_bindings_describe(
    kafka_bootstrap: str, tmp_path: Path, text: str
) -> None:
    suffix = uuid.uuid4().hex[:10]
    path = tmp_path / "orders.asyncapi.yaml"
    path.write_text(text.replace("SUFFIX", suffix), encoding="utf-8")
    expected = (
        {f"orders.placed.{suffix}": (5, "86400000"), f"audit.{suffix}": (3, None), f"physical.{suffix}": (2, None)}
        if text is DOCUMENT_3
        else {f"shipped.{suffix}": (4, "3600000")}
    )
    async with KafkaBroker(kafka_url(kafka_bootstrap, "partitions=3")) as broker:
        assert sorted(await ensure_topics(broker, path)) == sorted(expected)
        assert await ensure_topics(broker, path) == []  # they exist now: left as they are

    def describe() -> dict[str, tuple[int, str | None]]:
        from confluent_kafka.admin import AdminClient, ConfigResource

        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        try:
            metadata = admin.list_topics(timeout=10)
            found = {}
            for name in expected:
                [config] = admin.describe_configs([ConfigResource("topic", name)]).values()
                retention = config.result(10).get("retention.ms")
                found[name] = (len(metadata.topics[name].partitions), retention.value if retention else None)
            return found
        finally:
            # the client and its futures form a reference cycle: collect it now, so that its connection closes
            # (a connection left open makes Tansu wait 5 s when it stops)
            del admin
            gc.collect()

    described = await asyncio.to_thread(describe)
    for name, (partitions, retention) in expected.items():
        assert described[name][0] == partitions, name
        if retention is not None:
            assert described[name][1] == retention, name


async def test_an_app_bound_to_a_document_creates_its_topics_at_start(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:10]
    path = tmp_path / "orders.asyncapi.yaml"
    path.write_text(DOCUMENT_3.replace("SUFFIX", suffix), encoding="utf-8")
    app = App(kafka_url(kafka_bootstrap), name="orders", asyncapi=path)
    async with app:
        pass

    def partitions() -> int:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        try:
            topic = admin.list_topics(timeout=10).topics.get(f"orders.placed.{suffix}")
            return len(topic.partitions) if topic is not None else 0
        finally:
            del admin
            gc.collect()

    assert await asyncio.to_thread(partitions) == 5  # the channel's bindings.kafka.partitions


# -- the App ----------------------------------------------------------------------------------------------------


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


async def test_the_app_end_to_end_on_kafka(kafka_bootstrap: str) -> None:
    """The guide's document on kafka://: a typed handler gets UserCreated; a message that breaks the contract
    is dead-lettered with the reason. (Other tests of the session use the guide's user.created topic too: this
    one looks only at its own user ids.)"""
    group = unique("email-service")
    user_id, bad_user_id = int(time.time() * 1000) % 10**9, int(time.time() * 1000) % 10**9 + 1
    got: list[UserCreated] = []
    progress = recorder()
    app = App(kafka_url(kafka_bootstrap), name="user-service", asyncapi=SEED)

    @app.subscriber("user.created", group=group)
    async def send_welcome(event: UserCreated) -> None:
        if event.user_id == user_id:
            got.append(event)
            progress.changed()

    async with app:
        await app.publish(UserCreated(user_id=user_id, email="jo@example.com", name="Jo"))
        await progress.wait_for(lambda: bool(got), "the typed event")
        assert got == [UserCreated(user_id=user_id, email="jo@example.com", name="Jo")]
        broken = {
            "event_id": str(uuid.uuid4()),
            "event_type": "user.created",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": "1.0",
            "user_id": bad_user_id,
            "name": "No Email",
        }
        await app.broker.publish(Message("user.created", orjson.dumps(broken), {"content-type": "application/json"}))

        async def ours() -> list[Any]:
            return [
                dead
                for dead in await app.broker.dead_letters()
                if dead.group == group and orjson.loads(dead.message.body).get("user_id") == bad_user_id
            ]

        deadline = time.monotonic() + TIMEOUT
        while not (dead := await ours()):
            assert time.monotonic() < deadline, "the broken message was not dead-lettered"
            await asyncio.sleep(0.1)
    [record] = dead
    assert record.reason.startswith("contract:")
    assert "email" in record.reason
    assert record.message.channel == "user.created"
    assert record.attempts == 1
    assert got == [UserCreated(user_id=user_id, email="jo@example.com", name="Jo")]
