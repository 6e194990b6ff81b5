"""``kafka://host:9092``: Apache Kafka (and Kafka-protocol brokers) through confluent-kafka (librdkafka).

Install the driver with ``pip install tidings[kafka]``.

A channel is a topic, a group is a Kafka consumer group, the ordering key is the record key and the headers
are record headers (the envelope of the ``headers`` placement travels there). Several bootstrap servers are
separated by commas: ``kafka://k1:9092,k2:9092`` (the port defaults to 9092). The scheme says how to connect::

    kafka://host:9092                       plaintext
    kafka+ssl://host:9093                   TLS
    kafka+sasl://user:pass@host:9092        SASL over plaintext (mechanism=PLAIN unless the URL says otherwise)
    kafka+sasl_ssl://user:pass@host:9093    SASL over TLS

Query parameters (a keyword argument of the same name wins over the URL)::

    partitions=3                  partitions of the topics tidings creates (see "Topics" below)
    replication_factor=-1         replicas of the topics tidings creates; -1: the broker's default
    retention_ms=                 retention.ms of the topics tidings creates (default: the broker's)
    max_message_bytes=4194304     the largest record the producer sends; also the max.message.bytes of the
                                  topics tidings creates (Kafka's own default, 1 MiB, is below a 1 MiB body)
    acks=all                      all | 1 | 0: what "the broker has it" means for publish
    idempotence=true              the idempotent producer (no duplicates, no reordering on retries);
                                  needs acks=all, and is off by default when acks is not all
    linger_ms=5                   how long the producer waits to fill a batch
    compression=none              none | gzip | snappy | lz4 | zstd
    session_timeout_ms=10000      a member that stops heart-beating for this long leaves its group
    auto_offset_reset=earliest    where a group without committed offsets starts: earliest | latest
    fetch_wait_ms=100             longest a fetch waits on the broker for new records (see "Tansu" below)
    commit_interval_ms=100        offsets of settled messages are committed at most this often
    drain_timeout=10              seconds a rebalance waits for the handlers of revoked partitions
    timeout=30                    seconds for bounded waits: reaching the broker at start, a publish's delivery
                                  report, creating topics, a subscription's first partition assignment
    dead_letter_topic=tidings.dead-letters   the topic dead letters are written to
    retry_topic_prefix=tidings.retry         how the retry topics' and retry groups' names begin (see
                                             "Retry topics" below)
    client_id=tidings             the client.id the broker sees
    mechanism=PLAIN               SASL mechanism: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER | GSSAPI
    ssl_ca_location=              TLS: CA bundle (PEM file) to verify the broker with
    ssl_certificate_location=     TLS client authentication: certificate (PEM)
    ssl_key_location=             TLS client authentication: private key (PEM)

Keyword arguments only (secrets have no place in a URL that may be logged): ``username``, ``password``
(instead of the URL's user information) and ``ssl_key_password``. Any librdkafka setting passes through:
as a query parameter with a dot in its name (``kafka://host:9092?fetch.min.bytes=1024``) or in the
``config`` keyword argument, a mapping that wins over everything else. A setting for one kind of client only
takes a ``producer.`` or ``consumer.`` prefix (``producer.batch.size=...``): librdkafka warns about settings
given to a client they do not apply to. The settings this module's guarantees rest on (``group.id``,
``enable.auto.commit``, ``enable.auto.offset.store``) are refused there. Any other parameter is a
:class:`~tidings.errors.UsageError`. A password is never shown: :attr:`KafkaBroker.url`, ``repr``, errors and
logs mask it.

Topics
------
A topic is created (with ``partitions``, ``replication_factor``, ``retention_ms``, ``max_message_bytes``) the
first time this broker publishes to it or subscribes to it, unless it exists; existing topics are used as
they are. :func:`ensure_topics` creates the topics of an AsyncAPI document's channels up front, as their
Kafka bindings describe them (``partitions``, ``replicas``, ``topicConfiguration``). Topic names are Kafka's:
letters, digits, ``.``, ``_`` and ``-``. A pattern (``user.*`` one segment, ``user.#`` / ``user.>`` any
number, ``{param}`` one segment) becomes a librdkafka regex subscription (``^user\\.[^.]*$``): topics that
appear later are picked up at the next metadata refresh (``topic.metadata.refresh.interval.ms``, which this
module sets to 5 s; librdkafka's own default is 5 min). ``subscribe`` also creates the subscription's retry
topics (see "Retry topics" below). The dead-letter topic and the retry topics never reach a pattern's handler.

What is guaranteed
------------------
*Publishing*: ``publish`` returns once the delivery report says the broker has the record, by default with
``acks=all`` and the idempotent producer: on every in-sync replica, never duplicated or reordered by the
producer's retries. A record not confirmed within ``timeout`` seconds (no broker reachable...) raises
:class:`~tidings.brokers.base.BrokerError`. ``publish_many`` produces the whole batch, then waits for all
its delivery reports together: the batch is as durable as one ``publish``, at the cost of one round trip.
Records of one key go to one partition, in publish order.

*Delivery* is at least once. Each subscription is one member of its Kafka consumer group (``group.id`` =
the group name): the group's partitions are shared among its members, and each member reads its own from the
group's committed offsets (a group without any starts at ``auto_offset_reset``). ``subscribe`` to a topic
returns once the member has its first assignment (what is published next reaches the group); to a pattern it
returns at once (a new group starts at ``earliest``, so it misses nothing of the topics that appear).

Auto-commit is off: an offset is committed only once the handler of that message *and of every message before
it in its partition* has settled, so a message is never committed before it was processed, and a message that
finished early does not commit past one still running. ``ack()`` and ``dead_letter()`` settle a message;
commits are sent at most every ``commit_interval_ms`` (asynchronously), and synchronously when partitions are
revoked or the subscription closes. What was not committed (the process died, the handler never finished) is
delivered again to whichever member then owns the partition. A handler that raises is redelivered; one that
returns without settling is acknowledged.

Kafka has no per-message negative acknowledgement. ``nack(delay)`` with ``delay > 0`` writes a copy of the
record to one of the subscription's *retry topics*, waits for its delivery report, and only then settles the
original, whose offset is then committed like an acked one's: the partition goes on, nothing waits in this
process. The copy comes back to the group when it is due, never before ``delay`` seconds, as a message of the
original channel with ``attempt`` + 1 (see "Retry topics" below). ``nack()`` without a delay, and a handler
that raises, hand the message to the handler again at once, in this process, with ``attempt`` + 1; its offset
stays uncommitted meanwhile (a crash in between redelivers it, as attempt 1 again). If the copy cannot be
written (no delivery report within ``timeout``), ``nack`` raises :class:`~tidings.brokers.base.BrokerError`
and the message is handed to the handler again in this process after the delay instead, its offset uncommitted
meanwhile. ``dead_letter(reason, details)`` writes a copy to the dead-letter topic, waits for its delivery
report, and only then settles the original (see "Dead letters" below).

*Ordering* (capability ``ordering``): within one group, the messages of one key are handed to the handler one
at a time, in partition order: the next waits until the previous one is acked, dead-lettered or nacked with a
delay, and a message nacked without one (or whose handler raised) keeps its key's place until its redelivery
settles. A message nacked with a delay leaves its key's order: its copy comes back from a retry topic after the
key's later messages (as on RabbitMQ, whose delayed redeliveries go through retry queues as well). Messages of
different keys (and messages without a key) are handled concurrently, up to ``prefetch`` per subscription. A key
whose handler is slow holds back only its own messages, until at most 1,024 (or 4 x prefetch) messages wait in
this process: then the subscription stops fetching until the backlog shrinks (paused after 0.5 s of it).

*Rebalances*: when partitions are revoked (a member joined or left), their messages that did not reach a
handler are dropped, the rebalance waits (at most ``drain_timeout`` seconds) for their running handlers,
commits what settled, and only then lets the partitions go; the next owner starts from those offsets: nothing
is lost, and what was committed is not delivered again. A handler still running after ``drain_timeout`` is
not waited for: its message goes to the next owner too, and its late settle is ignored. Partitions *lost*
(this member missed its session timeout) cannot be committed: their messages are delivered again.

*Durability* is Kafka's: committed offsets and records live as long as the broker keeps them (retention).

Retry topics
------------
Each subscription (a group on a channel or pattern) has retry topics of its own, one per delay level (1 s, 5 s,
15 s, 1 min, 5 min, 15 min, 1 h), and reads them as a consumer group of its own, the *retry group*::

    tidings.retry.<group>.<channel>.<digest>             the retry group, e.g. tidings.retry.billing.orders.3f2a9c1b
    tidings.retry.<group>.<channel>.<digest>.<level>     its topics: ...orders.3f2a9c1b.1s, ...5s, ... ...1h

``retry_topic_prefix`` sets the first part (:meth:`KafkaBroker.retry_names` gives the names). A character a topic
name may not hold (a pattern's ``*``...) becomes ``_``, and the digest of the exact group and channel keeps apart
subscriptions whose names would read the same. They are per channel, not per group: the handlers of an App share
its name as their group, and each copy must come back to the handler that nacked it. ``subscribe`` creates them
(as it creates other topics: ``partitions``, ``retention_ms``...) before its consumers join, and reads them with a
second consumer: pausing a retry partition never pauses the channel's, and a member joining or leaving the retry
group does not rebalance the main one. A retry group without committed offsets starts at the beginning of its
topics, whatever ``auto_offset_reset`` says. Keep the retention of the retry topics above the longest delay: a
record that retention removes before it is due is lost.

A copy goes to the lowest level not below its delay (a delay above 1 h: to the 1 h level), keyed as the original
(so one key's copies of a level share a partition). It holds the original's key, value and headers (byte for
byte), and beside them, as headers: ``tidings-retry-channel``, ``-partition`` and ``-offset`` (where the original
was published; a copy of a copy keeps the first original's), ``-attempt`` (the attempt the copy was made at),
``-due`` (when it is due: the time of the nack plus its delay, in epoch milliseconds, rounded up), ``-group`` and
``-timestamp`` (the original record's, in milliseconds). The retry consumer hands a record to the handler once it
is due: as a message of ``tidings-retry-channel`` with the original's key and headers (without these), ``attempt``
= ``tidings-retry-attempt`` + 1, :attr:`KafkaDelivery.partition` and ``offset`` the original's. Settling it is
settling a record of the retry topic: an ack commits the retry topic's offset (in order, as on the channel), a
nack with a delay writes the next copy, a nack without one hands it to the handler again here, and a dead letter
names the original (``x-tidings-origin``, ``tidings-dlq-partition``, ``-offset`` and ``-timestamp``).

A record fetched before it is due is held, its partition paused, until it is; then its partition is resumed. So
a message comes back never before its delay, and at most its level's delay after the nack (plus the time to write
and fetch the copy): the records of a partition are handed out in order, and one due later than its successor
holds the successor back, by less than the level's delay (a copy in the 5 s level waits at most 5 s; in the 1 h
level, one behind a delay above 1 h waits for that one). Due times are wall-clock times: a member whose clock is
ahead of the nacking one's redelivers early by the difference, one behind redelivers late.

The retry state is in Kafka, not in the process: records waiting in a retry topic when a member closes or dies
are delivered by the retry group's next member (in this process or another) when they are due. The copy is
confirmed before the original is settled: a crash between the two delivers both, the original again (attempt 1)
and the copy when it is due: a duplicate, never a loss.

Dead letters
------------
``dead_letter(reason, details)`` appends a copy of the record to the dead-letter topic (``dead_letter_topic``;
one partition when tidings creates it) with the record's value, key and headers, and beside them, as headers:
``tidings-dlq-channel``, ``-partition``, ``-offset``, ``-group``, ``-reason``, ``-attempts`` and ``-timestamp``
(the original record's, in milliseconds), the failure's ``details`` (the ``x-tidings-*`` fields of
:data:`~tidings.brokers.base.FAILURE_FIELDS`; others are ignored), and its origin ``x-tidings-origin`` =
``kafka:<topic>/<partition>@<offset>`` (the broker's, whatever ``details`` say). A dead letter is named by its
place in the dead-letter topic: ``id`` = ``"<partition>:<offset>"``.

The topic is append-only, so taking a dead letter out of it is an append too: a *settled marker*, a record
with an empty value, no key and the headers ``tidings-dlq-settled`` = the ids it settles, comma-separated
(``0:17,0:18``), and ``tidings-dlq-settled-as`` = ``replayed`` or ``purged``. A marker is written to the
partition of the dead letters it settles, after them. :meth:`KafkaBroker.dead_letters` reads the whole topic
from its beginning with a throwaway consumer that commits nothing, and returns the records that are neither
markers nor settled by one: every reader, in any process, sees the same. They come in the order their
originals were published (by the original's timestamp, then its topic, partition and offset), which is not the
order they were dead-lettered in: the partitions of a topic are handled concurrently.
:meth:`KafkaBroker.settle_dead_letters` reads them so, and settles the selected ones in rounds of 256: with
``replay``, the round is published again first (``publish_many``: to its original channel, with its original
value, headers and key, confirmed), then one marker per partition is written, confirmed, and ``progress`` is
called. A round whose publish fails raises :class:`~tidings.brokers.base.BrokerError` before its marker is
written: its dead letters stay (those of it that were published will be published again by the next replay;
duplicates, never losses), and earlier rounds stay settled. Two settles running at once may both replay a
dead letter. Markers and the records they settle stay in the topic until its retention removes them, oldest
first: a marker follows what it settles in its partition, so it is never removed before them.

How it runs
-----------
librdkafka does the network I/O in its own threads; Python threads only serve its queues. One producer per
broker, served by a *poll thread* that calls ``poll()``: delivery reports resolve batch counters there, and the
batches that completed in one poll go back to the event loop in one ``call_soon_threadsafe``. A full local
queue (``BufferError``) makes the publisher wait for the poll thread to make room, never fail. Two consumers per
subscription (the channel's and the retry topics'), each served by its own thread calling ``consume()``: each
batch goes to the event loop in one call, where ``prefetch`` worker tasks (shared by both) hand the messages to
the handler. Rebalance callbacks run in those threads and wait there (bounded) for the event loop to drain the
revoked partitions. Commits, pauses and resumes are made by those threads too (a confluent Consumer's calls block
while another thread is in its ``consume()``): the event loop hands them the settled offsets every
``commit_interval_ms``, and the retry topics' thread holds the records that are not due yet.

Tansu
-----
Tansu (the Kafka-protocol broker the tests run) answers a fetch only when ``fetch.wait.max.ms`` is up, not when
records arrive: ``fetch_wait_ms`` bounds the latency there (on Apache Kafka a fetch returns at once). Joining a
group takes it about half of ``session_timeout_ms`` (the tests use 2000 to 6000), plus 3 s for a member that joins
a group that has a leader already; a subscription's two consumers join their groups at the same time. The topics
a consumer subscribes to by name are created before it joins (a topic created later reaches its group only after
a metadata refresh and another rebalance). After a batch of several records it reports the partition's
end (ListOffsets "latest") as the batch's first offset + 1, so a new group with ``auto_offset_reset=latest``
may start a few records early there; :meth:`KafkaBroker.dead_letters` reads to the end that fetches report.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ORIGIN,
    DURABLE,
    FAILURE_FIELDS,
    ORDERING,
    PATTERNS,
    Broker,
    BrokerError,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Subscription,
    split_failure_details,
)
from tidings.errors import TidingsError, UsageError
from tidings.redact import redact_url

if TYPE_CHECKING:
    from tidings.asyncapi.document import Document

logger = logging.getLogger("tidings.brokers.kafka")
#: librdkafka's own log lines (connection failures, rebalances...), at their syslog level
_driver_logger = logging.getLogger("tidings.brokers.kafka.librdkafka")

_SCHEMES = {
    "kafka": "PLAINTEXT",
    "kafka+ssl": "SSL",
    "kafka+sasl": "SASL_PLAINTEXT",
    "kafka+sasl_ssl": "SASL_SSL",
}
_DEFAULT_PORT = 9092
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PATTERN_CHARS = frozenset("*#>{")
#: librdkafka settings this module's guarantees rest on: never from the user's config
_OWNED = frozenset({"group.id", "enable.auto.commit", "enable.auto.offset.store"})
#: query parameters whose value is a secret (masked in anything shown)
# dead-letter record headers (beside the original message's own)
DLQ_CHANNEL = "tidings-dlq-channel"
DLQ_PARTITION = "tidings-dlq-partition"
DLQ_OFFSET = "tidings-dlq-offset"
DLQ_GROUP = "tidings-dlq-group"
DLQ_REASON = "tidings-dlq-reason"
DLQ_ATTEMPTS = "tidings-dlq-attempts"
DLQ_TIMESTAMP = "tidings-dlq-timestamp"  # the original record's timestamp (ms): dead letters are listed by it
_DLQ_HEADERS = frozenset({DLQ_CHANNEL, DLQ_PARTITION, DLQ_OFFSET, DLQ_GROUP, DLQ_REASON, DLQ_ATTEMPTS, DLQ_TIMESTAMP})
# settled markers (records of the dead-letter topic that take dead letters out of it: see the module docs)
DLQ_SETTLED = "tidings-dlq-settled"  # the dead letters it settles: "partition:offset,partition:offset..."
DLQ_SETTLED_AS = "tidings-dlq-settled-as"  # replayed | purged
_FAILURE = frozenset(FAILURE_FIELDS)
# retry records (copies of nacked messages in a retry topic) carry the original's headers and these beside them
_RETRY_HEADER = "tidings-retry-"
RETRY_CHANNEL = "tidings-retry-channel"  # the original's topic: the channel the message is delivered as
RETRY_PARTITION = "tidings-retry-partition"  # the original's partition and offset
RETRY_OFFSET = "tidings-retry-offset"
RETRY_ATTEMPT = "tidings-retry-attempt"  # the attempt the copy was made at: it is delivered as attempt + 1
RETRY_DUE = "tidings-retry-due"  # when it is due: epoch milliseconds
RETRY_GROUP = "tidings-retry-group"  # the consumer group that nacked it
RETRY_TIMESTAMP = "tidings-retry-timestamp"  # the original record's timestamp (ms): a dead letter keeps it
#: retry levels, in seconds, with their topic name suffix: a delay goes to the lowest level not below it (a delay
#: above the highest goes to the highest)
_RETRY_LEVELS: tuple[tuple[float, str], ...] = (
    (1, "1s"),
    (5, "5s"),
    (15, "15s"),
    (60, "1m"),
    (300, "5m"),
    (900, "15m"),
    (3600, "1h"),
)
_NOT_TOPIC_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")
#: dead letters settled per round: replayed together (publish_many), then marked settled by one record
_SETTLE_BATCH = 256
#: a record to produce: topic, partition (None: the partitioner's choice), value, key, headers
_Record = tuple[str, int | None, bytes, bytes | None, list[tuple[str, str | bytes]]]

#: messages a consumer thread asks librdkafka for at once
_BATCH = 1000
#: seconds a subscription's backlog may stay full before its partitions are paused (a resume costs a refetch)
_PAUSE_AFTER = 0.5
#: the poll threads' wait in librdkafka: how soon they notice that they are asked to stop
_POLL_INTERVAL = 0.05
#: publish_many yields to the event loop every this many records (a 100k batch must not starve the loop)
_YIELD_EVERY = 1024


# -- settings ----------------------------------------------------------------------------------------------------


class _Settings(NamedTuple):
    bootstrap: str
    security_protocol: str
    username: str | None
    password: str | None
    mechanism: str
    partitions: int
    replication_factor: int
    retention_ms: int | None
    max_message_bytes: int
    acks: str
    idempotence: bool
    linger_ms: float
    compression: str
    session_timeout_ms: int
    auto_offset_reset: str
    fetch_wait_ms: int
    commit_interval_ms: int
    drain_timeout: float
    timeout: float
    dead_letter_topic: str
    retry_topic_prefix: str
    client_id: str
    ssl_ca_location: str | None
    ssl_certificate_location: str | None
    ssl_key_location: str | None
    ssl_key_password: str | None
    #: librdkafka settings given by the user (dotted query parameters, then ``config``), for every client...
    extra: dict[str, str]
    #: ...and for the producer or the consumers only (given with a ``producer.`` / ``consumer.`` prefix)
    producer_extra: dict[str, str]
    consumer_extra: dict[str, str]


_URL_OPTIONS = frozenset(
    {
        "partitions",
        "replication_factor",
        "retention_ms",
        "max_message_bytes",
        "acks",
        "idempotence",
        "linger_ms",
        "compression",
        "session_timeout_ms",
        "auto_offset_reset",
        "fetch_wait_ms",
        "commit_interval_ms",
        "drain_timeout",
        "timeout",
        "dead_letter_topic",
        "retry_topic_prefix",
        "client_id",
        "mechanism",
        "ssl_ca_location",
        "ssl_certificate_location",
        "ssl_key_location",
    }
)
_KEYWORD_ONLY = frozenset({"username", "password", "ssl_key_password", "config"})


def _parse_url(url: str, options: Mapping[str, object]) -> _Settings:
    """Settings from the URL and keyword options (which win); a :class:`UsageError` that says what is wrong."""
    shown = redact_url(url)
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(f"not a Kafka broker URL: {shown!r}; use kafka://host:9092")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    try:
        parts = urlsplit("kafka://" + rest)  # urlsplit does not take a "_" in a scheme (kafka+sasl_ssl)
    except ValueError as exc:
        raise UsageError(f"not a Kafka broker URL: {shown!r} ({exc})") from None
    if scheme not in _SCHEMES:
        raise UsageError(
            f"not a Kafka broker URL: {shown!r}; use kafka://, kafka+ssl://, kafka+sasl:// or kafka+sasl_ssl://"
        )
    if parts.path not in ("", "/"):
        raise UsageError(f"a Kafka broker URL has no path: {shown!r}; use kafka://host:9092[,host2:9092]")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    bootstrap = ",".join(_host_port(item, shown) for item in hostlist.split(","))

    unknown = sorted(set(options) - _URL_OPTIONS - _KEYWORD_ONLY)
    if unknown:
        known = ", ".join(sorted(_URL_OPTIONS | _KEYWORD_ONLY))
        raise UsageError(f"unknown Kafka broker option(s) {', '.join(unknown)}; known: {known}")
    given: dict[str, object] = {}
    extra: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if "." in name:  # a librdkafka setting
            extra[name] = value
        elif name in _URL_OPTIONS:
            given[name] = value
        elif name in _KEYWORD_ONLY:
            raise UsageError(
                f"Kafka broker URL parameter {name!r} is a keyword argument only: "
                f"KafkaBroker(url, {name}=...) (a secret or a mapping has no place in a URL)"
            )
        else:
            raise UsageError(
                f"unknown Kafka broker URL parameter {name!r}; known: {', '.join(sorted(_URL_OPTIONS))}, "
                "or any librdkafka setting (a name with a dot, like fetch.min.bytes)"
            )
    given.update({name: value for name, value in options.items() if value is not None and name != "config"})
    config = options.get("config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise UsageError("config= is a mapping of librdkafka settings, e.g. {'fetch.min.bytes': '1024'}")
        extra.update({str(k): _config_text(v) for k, v in config.items()})
    producer_extra = {k.removeprefix("producer."): v for k, v in extra.items() if k.startswith("producer.")}
    consumer_extra = {k.removeprefix("consumer."): v for k, v in extra.items() if k.startswith("consumer.")}
    extra = {k: v for k, v in extra.items() if not k.startswith(("producer.", "consumer."))}
    owned = sorted(_OWNED & (set(extra) | set(consumer_extra)))
    if owned:
        raise UsageError(
            f"librdkafka setting(s) {', '.join(owned)} are tidings' own: the group is subscribe()'s group "
            "argument, and offsets are committed only after the handler (that is the at-least-once guarantee)"
        )

    def text(name: str, default: str | None) -> str | None:
        value = given.get(name)
        return default if value is None or value == "" else str(value)

    def number(name: str, default: float | None, *, minimum: float, integer: bool = False) -> Any:
        value = given.get(name)
        if value is None or value == "":
            return default
        try:
            result = int(str(value)) if integer else float(str(value))
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise UsageError(f"Kafka broker option {name}={value!r} is not {kind}") from None
        if not math.isfinite(result) or result < minimum:
            raise UsageError(f"Kafka broker option {name}={value!r} must be >= {minimum:g}")
        return result

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = str(given.get(name) or default)
        folded = value.upper() if name == "mechanism" else value.lower()
        if folded not in allowed:
            raise UsageError(f"Kafka broker option {name}={value!r}: choose one of {', '.join(allowed)}")
        return folded

    def flag(name: str, default: bool) -> bool:
        value = given.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        folded = str(value).lower()
        if folded not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"Kafka broker option {name}={value!r}: use true or false")
        return folded in ("true", "1", "yes")

    protocol = _SCHEMES[scheme]
    username = text("username", unquote(userinfo.partition(":")[0]) if userinfo else None)
    password = text("password", unquote(userinfo.partition(":")[2]) if ":" in userinfo else None)
    sasl = protocol.startswith("SASL")
    if (username or password) and not sasl:
        raise UsageError(
            f"credentials given for {shown!r}, which does not use SASL: "
            "use kafka+sasl://user:pass@host:9092 (or kafka+sasl_ssl:// for SASL over TLS)"
        )
    mechanism = choice("mechanism", "PLAIN", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"))
    if sasl and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (username and password):
        raise UsageError(
            f"SASL {mechanism} needs a user name and a password: kafka+sasl://user:pass@host:9092, "
            "or username=... and password=... keyword arguments"
        )
    acks = choice("acks", "all", ("all", "-1", "1", "0"))
    acks = "all" if acks == "-1" else acks
    idempotence = flag("idempotence", acks == "all")
    if idempotence and acks != "all":
        raise UsageError(f"the idempotent producer needs acks=all (got acks={acks}); use idempotence=false")
    dead_letter_topic = text("dead_letter_topic", "tidings.dead-letters") or ""
    _check_topic(dead_letter_topic, "dead_letter_topic")
    retry_topic_prefix = text("retry_topic_prefix", "tidings.retry") or ""
    _check_topic(retry_topic_prefix, "retry_topic_prefix")
    if len(retry_topic_prefix) > 200:
        raise UsageError(f"retry_topic_prefix={retry_topic_prefix!r} is too long: at most 200 characters")
    session_timeout_ms = number("session_timeout_ms", 10000, minimum=1, integer=True)
    timeout = number("timeout", 30.0, minimum=0.001)
    return _Settings(
        bootstrap=bootstrap,
        security_protocol=protocol,
        username=username,
        password=password,
        mechanism=mechanism,
        partitions=number("partitions", 3, minimum=1, integer=True),
        replication_factor=_replication(given.get("replication_factor")),
        retention_ms=number("retention_ms", None, minimum=-1, integer=True),
        max_message_bytes=number("max_message_bytes", 4 * 1024 * 1024, minimum=1000, integer=True),
        acks=acks,
        idempotence=idempotence,
        linger_ms=number("linger_ms", 5.0, minimum=0),
        compression=choice("compression", "none", ("none", "gzip", "snappy", "lz4", "zstd")),
        session_timeout_ms=session_timeout_ms,
        auto_offset_reset=choice("auto_offset_reset", "earliest", ("earliest", "latest")),
        fetch_wait_ms=number("fetch_wait_ms", 100, minimum=0, integer=True),
        commit_interval_ms=number("commit_interval_ms", 100, minimum=0, integer=True),
        drain_timeout=number("drain_timeout", 10.0, minimum=0),
        timeout=timeout,
        dead_letter_topic=dead_letter_topic,
        retry_topic_prefix=retry_topic_prefix,
        client_id=text("client_id", "tidings") or "tidings",
        ssl_ca_location=text("ssl_ca_location", None),
        ssl_certificate_location=text("ssl_certificate_location", None),
        ssl_key_location=text("ssl_key_location", None),
        ssl_key_password=text("ssl_key_password", None),
        extra=extra,
        producer_extra=producer_extra,
        consumer_extra=consumer_extra,
    )


def _host_port(item: str, shown: str) -> str:
    item = item.strip()
    if not item:
        raise UsageError(f"a Kafka broker URL needs a host: {shown!r}; use kafka://host:9092[,host2:9092]")
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
        host = f"[{host}]"
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise UsageError(f"a Kafka broker URL needs a host: {shown!r}; use kafka://host:9092")
    if not port_text:
        return f"{host}:{_DEFAULT_PORT}"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"bad port {port_text!r} in Kafka broker URL {shown!r}: a number from 1 to 65535")
    return f"{host}:{int(port_text)}"


def _replication(value: object) -> int:
    if value is None or value == "":
        return -1
    try:
        result = int(str(value))
    except ValueError:
        raise UsageError(f"Kafka broker option replication_factor={value!r} is not an integer") from None
    if result == 0 or result < -1:
        raise UsageError(f"Kafka broker option replication_factor={value!r}: a number >= 1, or -1 (broker default)")
    return result


def _config_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_config_text(v) for v in value)
    return str(value)


def _check_topic(name: str, what: str = "channel") -> None:
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"{what} {name!r} is not a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-' "
            "(a pattern uses *, # or > segments)"
        )


def is_pattern(channel: str) -> bool:
    """Whether ``channel`` is a pattern (``user.*``, ``user.#``, ``user.>``, ``user.{id}``) rather than a name."""
    return not _PATTERN_CHARS.isdisjoint(channel)


def topic_regex(pattern: str) -> str:
    """The librdkafka subscription regex of a channel pattern, matching what
    :func:`~tidings.brokers.base.channel_matcher` matches: ``user.*`` -> ``^user\\.[^.]*$``."""
    parts = []
    for segment in pattern.split("."):
        if segment in ("#", ">"):
            parts.append(".*")
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append("[^.]+")
        else:
            literal = segment.replace("*", "")
            if literal and not _TOPIC_NAME.fullmatch(literal):
                raise UsageError(
                    f"pattern {pattern!r}: segment {segment!r} may hold only letters, digits, '_', '-' and '*'"
                )
            parts.append("[^.]*".join(segment.split("*")))
    # `user.#` also matches `user` itself, as channel_matcher has it
    return "^" + r"\.".join(parts).replace(r"\..*", r"(\..*)?") + "$"


def _retry_level(delay: float) -> int:
    """The index in _RETRY_LEVELS of the retry topic for ``delay``: the lowest level not below it."""
    for index, (seconds, _) in enumerate(_RETRY_LEVELS):
        if seconds >= delay:
            return index
    return len(_RETRY_LEVELS) - 1


def retry_names(prefix: str, group: str, channel: str) -> tuple[str, list[str]]:
    """The retry group and the retry topics (one per level, shortest first) of ``group`` on ``channel`` (a topic
    or a pattern): ``<prefix>.<group>.<channel>.<digest>`` and that name + ``.1s``, ``.5s``... Characters a
    topic name may not hold become ``_``; the digest (of the exact group and channel) keeps apart the names that
    would otherwise be the same, and long names are shortened before it."""
    digest = hashlib.blake2s(f"{group}\x00{channel}".encode(), digest_size=4).hexdigest()
    # <prefix>.<readable>.<digest>.<label> in at most 249 characters
    room = 249 - len(prefix) - len(digest) - 3 - max(len(label) for _, label in _RETRY_LEVELS)
    readable = _NOT_TOPIC_CHARACTER.sub("_", f"{group}.{channel}")[: max(0, room)]
    base = f"{prefix}.{readable}.{digest}" if readable else f"{prefix}.{digest}"
    return base, [f"{base}.{label}" for _, label in _RETRY_LEVELS]


# -- the one place where driver errors become tidings errors ----------------------------------------------------

_DRIVER_ERRORS = (KafkaException, BufferError, concurrent.futures.TimeoutError, TimeoutError)


def _kafka_error(error: Any) -> Any:
    """The KafkaError inside ``error`` (a KafkaException, or a KafkaError itself), else None."""
    if isinstance(error, KafkaError):
        return error
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


def _translate(error: BaseException | Any, doing: str, settings: _Settings) -> TidingsError:
    """A tidings error for a driver error (an exception, or a KafkaError from a delivery report), saying what
    failed and what to do. Raise it ``from`` the exception."""
    where = f"Kafka at {settings.bootstrap}"
    err = _kafka_error(error)
    code = err.code() if err is not None else None
    detail = " ".join((err.str() if err is not None else str(error) or type(error).__name__).split())
    seconds = f"{settings.timeout:g} s"
    if isinstance(error, BufferError) or code == KafkaError._QUEUE_FULL:
        advice = "the producer's local queue is full: publish in smaller batches, or raise queue.buffering.max.messages"
    elif code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
        advice = f"cannot reach {where}: check that the broker runs and that host and port are right"
    elif code in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT) or isinstance(
        error, TimeoutError | concurrent.futures.TimeoutError
    ):
        advice = f"{where} did not answer within {seconds}: check that it runs and is reachable (or raise timeout=)"
    elif code == KafkaError.MSG_SIZE_TOO_LARGE:
        advice = "the record is too large: raise max_message_bytes (and the topic's max.message.bytes)"
    elif code in (KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION):
        advice = f"{where} refused the login of user {settings.username!r}: check the user name and password"
    elif code in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    ):
        advice = f"{where} refused access: grant the user the ACLs it needs"
    elif code in (KafkaError.TOPIC_EXCEPTION, KafkaError.UNKNOWN_TOPIC_OR_PART):
        advice = "unknown or invalid topic: topic names are letters, digits, '.', '_' and '-'"
    elif code == KafkaError._INVALID_ARG:
        return UsageError(f"{doing}: librdkafka refused the configuration: {redact_url(detail)}")
    else:
        advice = f"{where} failed"
    return BrokerError(redact_url(f"{doing}: {advice} (librdkafka: {detail})"))


# -- topics from an AsyncAPI document ---------------------------------------------------------------------------


class TopicSpec(NamedTuple):
    """A topic to create: its name, partitions and replicas (None: the broker's defaults), and topic config."""

    name: str
    partitions: int | None = None
    replicas: int | None = None
    config: Mapping[str, str] = {}


def topic_specs(document: Document) -> list[TopicSpec]:
    """The topics of a document's channels, as their Kafka bindings (AsyncAPI 2.x and 3.x) describe them.

    ``bindings.kafka.topic`` names the topic (else the channel's address), ``partitions`` and ``replicas`` size
    it, ``topicConfiguration`` is its config (``cleanup.policy`` lists joined with commas). Channels whose
    address has a parameter (``user.{id}``) or no address name no one topic and are left out.
    """
    from tidings.asyncapi.model import build_model

    model = build_model(document)
    specs: dict[str, TopicSpec] = {}
    for channel in model.channels.values():
        bindings = document.try_deref(channel.raw.get("bindings"))
        kafka = document.try_deref(bindings.get("kafka")) if isinstance(bindings, dict) else None
        kafka = kafka if isinstance(kafka, dict) else {}
        name = kafka.get("topic") if isinstance(kafka.get("topic"), str) else channel.address
        if not name or "{" in name:
            continue
        _check_topic(name, f"channel {channel.key!r}: topic")
        partitions, replicas = kafka.get("partitions"), kafka.get("replicas")
        configuration = document.try_deref(kafka.get("topicConfiguration"))
        specs[name] = TopicSpec(
            name,
            partitions if isinstance(partitions, int) and not isinstance(partitions, bool) else None,
            replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None,
            {str(k): _config_text(v) for k, v in configuration.items()} if isinstance(configuration, dict) else {},
        )
    return list(specs.values())


async def ensure_topics(broker: KafkaBroker, document: Document | str | os.PathLike[str]) -> list[str]:
    """Create the topics of an AsyncAPI document's channels that do not exist yet (see :func:`topic_specs`);
    returns the names of those created. ``document`` is a loaded document or the path of one.

    Unset sizes fall back to the broker's options (``partitions``, ``replication_factor``, ``retention_ms``).
    Existing topics are left as they are, whatever the document says.
    """
    if isinstance(document, str | os.PathLike):
        from tidings.asyncapi.document import load_document

        document = load_document(document)
    return await broker.create_topics(topic_specs(document))


# -- producing --------------------------------------------------------------------------------------------------


class _Reports:
    """Waits for the delivery reports of a batch of records (one for ``publish``); called by librdkafka.

    ``expected`` is written by the event loop only, ``reported`` by the poll thread only: no lock is needed,
    and both threads may see the batch complete (resolving it is idempotent).
    """

    __slots__ = ("completed", "error", "expected", "future", "reported")

    def __init__(self, future: asyncio.Future[Any], expected: int, completed: list[_Reports]) -> None:
        self.future = future
        self.expected = expected
        self.reported = 0
        self.error: Any = None
        self.completed = completed

    def __call__(self, err: Any, msg: Any) -> None:  # the on_delivery callback, in the poll thread
        if err is not None and self.error is None:
            self.error = err
        self.reported += 1
        if self.reported == self.expected:
            self.completed.append(self)

    def resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(self.error)


class _PollThread:
    """Serves the producer's queue: delivery reports, errors and logs.

    Reports completed in one ``poll()`` go back to the event loop together, in one ``call_soon_threadsafe``.
    """

    def __init__(self, producer: Any, admin: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.producer = producer
        self.admin = admin
        self.loop = loop
        #: batches whose last report arrived, appended by librdkafka's callbacks in this thread
        self.completed: list[_Reports] = []
        #: set by the event loop when a publisher waits for room in the local queue
        self.room_wanted = False
        self.room = asyncio.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tidings-kafka-producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poll, admin_poll, completed, loop = self.producer.poll, self.admin.poll, self.completed, self.loop
        while not self._stopping:
            try:
                served = poll(_POLL_INTERVAL)
                admin_poll(0)  # the admin client's logs and errors
            except Exception:  # a callback failed: keep serving, or every later publish would hang
                logger.exception("kafka producer: serving delivery reports failed")
                continue
            if completed:
                done = completed[:]
                completed.clear()
                if not _call_soon(loop, self._resolve, done):
                    return
            elif served and self.room_wanted and not _call_soon(loop, self._made_room):
                return

    def _resolve(self, done: list[_Reports]) -> None:
        for reports in done:
            reports.resolve()
        self._made_room()

    def _made_room(self) -> None:
        if self.room_wanted:
            self.room_wanted = False
            self.room.set()

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.to_thread(self._thread.join)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> bool:
    """``loop.call_soon_threadsafe``; False if the loop is gone (the process is ending)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


# -- consuming --------------------------------------------------------------------------------------------------

_IDLE: Any = object()  # a key with a message in flight and none waiting


class _Partition:
    """What a subscription tracks of one assigned partition (on the event loop only)."""

    __slots__ = (
        "busy",
        "commit_at",
        "final",
        "ignored",
        "keys",
        "member",
        "partition",
        "pending",
        "revoked",
        "sent",
        "settled",
        "topic",
    )

    def __init__(self, topic: str, partition: int, ignored: bool, member: _Member) -> None:
        self.topic = topic
        self.partition = partition
        #: records of the dead-letter topic, retry topics or internal topics reached by a pattern: settled unseen
        self.ignored = ignored
        #: the consumer the partition is assigned to (its commits and flow control)
        self.member = member
        #: offsets handed over and not yet committable, in partition order
        self.pending: deque[int] = deque()
        #: offsets settled while an earlier one in ``pending`` is not
        self.settled: set[int] = set()
        #: the next offset to commit (one past the last contiguous settled one), and the last one sent
        self.commit_at: int | None = None
        self.sent: int | None = None
        #: keys with a message in the handler or waiting for a redelivery -> their later messages (or _IDLE)
        self.keys: dict[bytes, Any] = {}
        #: handlers running on this partition's messages
        self.busy = 0
        #: revoked: hand nothing more out; final: the rebalance is done with it, late settles are ignored
        self.revoked = False
        self.final = False


class KafkaDelivery(Delivery):
    """A record handed to a handler. :attr:`partition` and :attr:`offset` are its place in its channel's topic;
    for a redelivery from a retry topic, the original record's place there."""

    __slots__ = (
        "_headers",
        "_key",
        "_nacked",
        "_offset",
        "_origin",
        "_partition",
        "_settled",
        "_subscription",
        "_timestamp",
        "attempt",
        "message",
    )

    def __init__(
        self,
        subscription: _KafkaSubscription,
        partition: _Partition,
        offset: int,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        message: Message,
        attempt: int,
        timestamp: int = -1,
        origin: tuple[str, int, int] | None = None,
    ) -> None:
        self._subscription = subscription
        self._partition = partition  # the partition the record was read from (a retry topic's, for a retry)
        self._offset = offset
        self._key = key
        self._headers = headers  # as received, without tidings' retry headers: a dead letter keeps them byte for byte
        self._timestamp = timestamp  # the original record's, in ms (-1: none); a dead letter keeps it
        #: read from a retry topic: the original record's topic, partition and offset (None: it is the original)
        self._origin = origin
        self.message = message
        self.attempt = attempt
        self._settled = False
        self._nacked = False

    @property
    def partition(self) -> int:
        return self._partition.partition if self._origin is None else self._origin[1]

    @property
    def offset(self) -> int:
        return self._offset if self._origin is None else self._origin[2]

    def _place(self) -> tuple[str, int, int]:
        """Where the message was published: topic, partition and offset."""
        return self._origin or (self._partition.topic, self._partition.partition, self._offset)

    def _again(self) -> KafkaDelivery:
        """The same record, to be handed to the handler again (``attempt`` + 1)."""
        return KafkaDelivery(
            self._subscription,
            self._partition,
            self._offset,
            self._key,
            self._headers,
            self.message,
            self.attempt + 1,
            self._timestamp,
            self._origin,
        )

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        state = self._partition
        if not state.final:
            self._subscription._settle(state, self._offset)

    async def nack(self, *, delay: float = 0.0) -> None:
        if self._settled:
            return
        self._settled = True
        subscription = self._subscription
        if delay <= 0 or self._partition.final:
            # at once (or revoked meanwhile, and then the partition's next owner has it): see _redeliver
            self._nacked = True
            subscription._redeliver(self, delay)
            return
        try:
            await subscription._broker._write_retry(self, subscription, delay)
        except BaseException as exc:
            # not copied, so not settled: handed to the handler again in this process after the delay, its offset
            # uncommitted meanwhile (a crash redelivers it too)
            if isinstance(exc, Exception):
                logger.warning(
                    "kafka subscription %s (group %s): could not write a retry record (%s); redelivering the "
                    "message in this process after %g s instead",
                    subscription.channel,
                    subscription.group,
                    exc,
                    delay,
                )
            self._nacked = True
            subscription._redeliver(self, delay)
            raise
        subscription._done(self)  # the copy is in the retry topic: the original's offset may be committed

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        if self._settled:
            return
        self._settled = True
        if self._partition.final:  # revoked meanwhile: the partition's next owner decides
            return
        subscription = self._subscription
        try:
            await subscription._broker._write_dead_letter(self, subscription.group, reason, details)
        except BaseException:
            # not dead-lettered, so not settled either: try again later, as a redelivery
            self._nacked = True
            subscription._redeliver(self, 1.0)
            raise
        subscription._done(self)


class _Member:
    """One confluent Consumer of a subscription, served by its own thread: the *main* member reads the channel's
    topics as the subscription's group, the *retry* member reads the subscription's retry topics as its retry
    group. Everything on the consumer is called in that thread (a confluent Consumer's calls block while another
    thread is in its ``consume()``)."""

    def __init__(
        self,
        subscription: _KafkaSubscription,
        consumer: Any,
        topics: list[str],
        group: str,
        prefetch: int,
        *,
        retry: bool,
    ) -> None:
        self.subscription = subscription
        self.consumer = consumer
        self.topics = topics
        self.group = group
        self.retry = retry
        self.loop = subscription._loop
        #: the assigned partitions (on the event loop only)
        self.partitions: dict[tuple[str, int], _Partition] = {}
        self.assigned = asyncio.Event()
        # offsets to commit, handed from the loop to the consumer thread
        self.commit_lock = threading.Lock()
        self.to_commit: dict[tuple[str, int], int] = {}
        # flow control: records fetched (written by the thread) minus released (written by the loop)
        self.fetched = 0
        self.released = 0
        self.high = max(1024, 4 * prefetch)
        self.low = self.high // 2
        self.space = threading.Event()
        self.space_wanted = False
        self.stopping = False
        #: the retry member's records fetched before they were due, by partition, with their due times (epoch ms);
        #: their partitions are paused meanwhile (in the consumer thread only)
        self.holding: dict[tuple[str, int], deque[tuple[int, Any]]] = {}
        self.done: asyncio.Future[None] = self.loop.create_future()
        kind = "kafka-retry" if retry else "kafka-consumer"
        self.thread = threading.Thread(target=self._run, name=f"tidings-{kind}:{subscription.group}", daemon=True)

    def _what(self) -> str:
        subscription = self.subscription
        what = f"{subscription.channel} (group {subscription.group})"
        return f"retry topics of {what}" if self.retry else what

    # -- in the consumer thread --

    def _run(self) -> None:
        consumer, loop, holding = self.consumer, self.loop, self.holding
        on_records = self.subscription._on_records
        quiet_unknown = self.subscription._pattern and not self.retry
        paused = False
        full_since = 0.0
        error: BaseException | None = None
        try:
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
            while not self.stopping:
                if self.to_commit:
                    self._send_commits(consumer)
                wait: float | None = _POLL_INTERVAL * 2
                if holding:
                    wait = self._hand_over_due(consumer, _POLL_INTERVAL * 2)
                    if wait is None:
                        return
                if paused:
                    if self.fetched - self.released <= self.low:
                        consumer.resume(self._not_held(consumer.assignment()))
                        paused = False
                    else:
                        consumer.pause(consumer.assignment())  # partitions assigned since are paused too
                elif self.fetched - self.released >= self.high:
                    # fast handlers drain a full backlog in milliseconds: wait for that rather than pause at
                    # once, since a resume costs a refetch (hundreds of milliseconds on some brokers)
                    full_since = full_since or time.monotonic()
                    self.space.clear()
                    self.space_wanted = True
                    if self.fetched - self.released < self.high or self.space.wait(_POLL_INTERVAL):
                        full_since = 0.0  # the handlers make progress: fetch on
                    elif time.monotonic() - full_since < _PAUSE_AFTER:
                        continue
                    else:  # stuck (a slow key holds the backlog): pause, keep serving rebalances
                        consumer.pause(consumer.assignment())
                        paused = True
                else:
                    full_since = 0.0
                # paused, this serves rebalance callbacks and returns nothing. One record is waited for, the
                # rest taken as they are: consume(n, timeout) would hold a lone record until n arrive or the
                # timeout runs out, which is the latency of every quiet topic
                first = consumer.poll(wait)
                if first is None:
                    continue
                batch = [first, *consumer.consume(_BATCH - 1, 0)]
                good = []
                for record in batch:
                    err = record.error()
                    if err is None:
                        good.append(record)
                    elif not (quiet_unknown and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                        logger.warning("kafka consumer of %s: %s", self._what(), err.str())
                if good and self.retry:
                    good = self._hold_early(consumer, good)
                if good:
                    self.fetched += len(good)
                    if not _call_soon(loop, on_records, self, good):
                        return
        except BaseException as exc:
            error = exc
            logger.error("kafka consumer of %s stopped: %r", self._what(), exc)
        finally:
            try:
                consumer.close()  # revokes (see _on_revoke: the final commit) and leaves the group
            except Exception as exc:
                logger.warning("kafka consumer of %s: closing failed: %s", self._what(), exc)
            _call_soon(loop, self._finished, error)

    def _hold_early(self, consumer: Any, records: list[Any]) -> list[Any]:
        """The records of a retry topic that are due; the others are held, with their partition paused, until
        they are (a record held holds its partition's later ones behind it)."""
        now = time.time() * 1000
        holding = self.holding
        ready = []
        pause = []
        for record in records:
            place = (record.topic(), record.partition())
            held = holding.get(place)
            if held is not None:  # fetched before its partition was paused: in order, behind the held ones
                held.append((_due(record), record))
                continue
            due = _due(record)
            if due > now:
                holding[place] = deque(((due, record),))
                pause.append(TopicPartition(*place))
            else:
                ready.append(record)
        if pause:
            consumer.pause(pause)
        return ready

    def _hand_over_due(self, consumer: Any, wait: float) -> float | None:
        """Hand the held records that are due to the event loop and resume the partitions no longer held; returns
        how long the next poll may wait (until the next record is due, at most ``wait``), None if the loop is gone."""
        now = time.time() * 1000
        ready = []
        resume = []
        soonest = math.inf
        for place, held in list(self.holding.items()):
            while held and held[0][0] <= now:
                ready.append(held.popleft()[1])
            if held:
                soonest = min(soonest, held[0][0])
            else:
                del self.holding[place]
                resume.append(TopicPartition(*place))
        if resume:
            consumer.resume(resume)  # fetching goes on after the last record held
        if ready:
            self.fetched += len(ready)
            if not _call_soon(self.loop, self.subscription._on_records, self, ready):
                return None
        return min(wait, max(0.0, (soonest - now) / 1000))

    def _not_held(self, partitions: list[Any]) -> list[Any]:
        holding = self.holding
        return [tp for tp in partitions if (tp.topic, tp.partition) not in holding] if holding else partitions

    def _release_held(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions revoked or lost: their held records are dropped (not handed out, they are not committed:
        their next owner fetches them) and they are resumed (librdkafka keeps a partition paused across
        rebalances)."""
        if not self.holding:
            return
        held = [tp for tp in partitions if self.holding.pop((tp.topic, tp.partition), None) is not None]
        if held:
            with contextlib.suppress(KafkaException):
                consumer.resume(held)

    def _send_commits(self, consumer: Any) -> None:
        with self.commit_lock:
            offsets, self.to_commit = self.to_commit, {}
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)
        except KafkaException as exc:  # e.g. during a rebalance: the revoke commits synchronously anyway
            logger.warning("kafka consumer of %s: commit failed: %s", self._what(), exc)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        _call_soon(self.loop, self.subscription._assign, self, [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Let the event loop drain the revoked partitions (bounded), then commit what settled, synchronously:
        the partitions' next owner must start after it."""
        self._release_held(consumer, partitions)
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        timeout = self.subscription._drain_timeout
        result: concurrent.futures.Future[list[tuple[str, int, int]]] = concurrent.futures.Future()
        if not _call_soon(self.loop, self.subscription._start_revoke, self, revoked, result, timeout):
            return
        try:
            offsets = result.result(timeout=timeout + 10)
        except Exception as exc:
            logger.warning("kafka consumer of %s: revoking: %r", self._what(), exc)
            return
        with self.commit_lock:  # the final offsets below supersede what was queued for these partitions
            for tp in revoked:
                self.to_commit.pop(tp, None)
        if offsets:
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)
            except KafkaException as exc:
                # the next owner starts from the previous commit: some messages are handled twice
                logger.warning("kafka consumer of %s: commit on revoke failed: %s", self._what(), exc)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._release_held(consumer, partitions)
        lost = [(tp.topic, tp.partition) for tp in partitions]
        logger.warning("kafka consumer of %s: partitions lost (session timed out): %s", self._what(), lost)
        # nothing can be committed any more: no waiting, and the offsets computed are dropped
        _call_soon(self.loop, self.subscription._start_revoke, self, lost, concurrent.futures.Future(), 0.0)
        with self.commit_lock:
            for tp in lost:
                self.to_commit.pop(tp, None)

    # -- on the event loop --

    def _finished(self, error: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if error is not None and not self.subscription._closing:
            logger.error("kafka subscription: the consumer of %s is no longer consuming", self._what())


def _due(record: Any) -> int:
    """When a record of a retry topic is due (epoch ms; 0: now)."""
    for name, value in record.headers() or ():
        if name == RETRY_DUE:
            return _number(None if value is None else value.decode("ascii", "replace"), 0)
    return 0


class _KafkaSubscription(Subscription):
    """One consumer-group member: two confluent Consumers (the channel's topics, the retry topics), each served
    by its own thread, and ``prefetch`` worker tasks that hand both's messages to the handler."""

    def __init__(
        self,
        broker: KafkaBroker,
        channel: str,
        group: str,
        handler: Handler,
        prefetch: int,
        consumer: Any,
        topics: list[str],
        retry_consumer: Any,
        retry_group: str,
        retry_topics: list[str],
    ) -> None:
        self.channel = channel
        self.group = group
        #: the retry topics of this subscription, one per level of _RETRY_LEVELS, and the group that reads them
        self.retry_topics = retry_topics
        self.retry_group = retry_group
        self._broker = broker
        self._handler = handler
        self._pattern = is_pattern(channel)
        settings = broker._settings
        self._ignored_topic = settings.dead_letter_topic
        self._retry_prefix = settings.retry_topic_prefix + "."
        self._loop = asyncio.get_running_loop()
        self._ready: deque[KafkaDelivery] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._timers: set[asyncio.TimerHandle] = set()
        self._dirty: set[_Partition] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._commit_interval = settings.commit_interval_ms / 1000
        self._drain_timeout = settings.drain_timeout
        self._drained = asyncio.Event()
        self._closing = False
        self._stopping = False
        self._main = _Member(self, consumer, topics, group, prefetch, retry=False)
        self._retry = _Member(self, retry_consumer, retry_topics, retry_group, prefetch, retry=True)
        self._members = (self._main, self._retry)
        self._partitions = self._main.partitions
        self._workers = [
            self._loop.create_task(self._work(), name=f"kafka:{channel}:{group}:{i}") for i in range(prefetch)
        ]
        for member in self._members:
            member.thread.start()

    async def _assigned(self) -> None:
        """Once both consumers have their first partition assignment."""
        for member in self._members:
            await member.assigned.wait()

    # -- on the event loop --

    def _assign(self, member: _Member, partitions: list[tuple[str, int]]) -> None:
        retry_prefix, pattern = self._retry_prefix, self._pattern and not member.retry
        for topic, partition in partitions:
            ignored = pattern and (topic == self._ignored_topic or topic.startswith(("__", retry_prefix)))
            member.partitions[(topic, partition)] = _Partition(topic, partition, ignored, member)
        member.assigned.set()

    def _start_revoke(
        self,
        member: _Member,
        partitions: list[tuple[str, int]],
        result: concurrent.futures.Future[Any],
        timeout: float,
    ) -> None:
        self._loop.create_task(self._revoke(member, partitions, result, timeout))

    async def _revoke(
        self,
        member: _Member,
        partitions: list[tuple[str, int]],
        result: concurrent.futures.Future[Any],
        timeout: float,
    ) -> None:
        try:
            states = [s for s in (member.partitions.pop(tp, None) for tp in partitions) if s is not None]
            for state in states:
                state.revoked = True
            deadline = time.monotonic() + timeout
            while any(state.busy for state in states):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning(
                        "kafka consumer of %s: handlers still running after drain_timeout=%g s; their messages go "
                        "to the partitions' next owner",
                        member._what(),
                        self._drain_timeout,
                    )
                    break
                self._drained.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), remaining)
            offsets = []
            for state in states:
                state.final = True
                self._dirty.discard(state)
                if state.commit_at is not None:  # even if sent: that asynchronous commit may not have gone out
                    offsets.append((state.topic, state.partition, state.commit_at))
                self._release(member, len(state.pending))
                state.pending.clear()
                state.keys.clear()
            result.set_result(offsets)
        except BaseException as exc:
            result.set_exception(exc)
            raise

    def _on_records(self, member: _Member, records: list[Any]) -> None:
        """A batch from a consumer thread: track each offset, queue the deliveries (keys in order)."""
        partitions, ready, retry = member.partitions, self._ready, member.retry
        topic: str | None = None
        number = -1
        state: _Partition | None = None
        dropped = 0
        last_raw: Any = None
        last_headers: dict[str, str] = {}
        for record in records:
            t, p = record.topic(), record.partition()
            if p != number or t != topic:
                topic, number = t, p
                state = partitions.get((t, p))
            if state is None:  # revoked since it was fetched
                dropped += 1
                continue
            offset = record.offset()
            state.pending.append(offset)
            if state.ignored:
                self._settle(state, offset)
                continue
            key = record.key()
            if retry:
                delivery = self._retry_delivery(state, record)
            else:
                raw = record.headers()
                if raw is None:
                    headers: dict[str, str] = {}
                elif raw == last_raw:  # consecutive messages often carry the same headers (content-type...)
                    headers = last_headers
                else:
                    headers = {k: "" if v is None else v.decode("utf-8", "replace") for k, v in raw}
                    last_raw, last_headers = raw, headers
                delivery = KafkaDelivery(
                    self,
                    state,
                    offset,
                    key,
                    raw,
                    Message(t, record.value() or b"", headers, None if key is None else key.decode("utf-8", "replace")),
                    1,
                    record.timestamp()[1],
                )
            if key is not None:
                waiting = state.keys.get(key)
                if waiting is not None:  # the key is busy: this one waits for its turn
                    if waiting is _IDLE:
                        state.keys[key] = deque((delivery,))
                    else:
                        waiting.append(delivery)
                    continue
                state.keys[key] = _IDLE
            ready.append(delivery)
        if dropped:
            self._release(member, dropped)
        self._wake()

    def _retry_delivery(self, state: _Partition, record: Any) -> KafkaDelivery:
        """A record of a retry topic, as the delivery of the message it is a copy of (see the module docs)."""
        own: dict[str, str] = {}
        raw: list[tuple[str, bytes]] = []
        for name, value in record.headers() or ():
            if name.startswith(_RETRY_HEADER):
                own[name] = "" if value is None else value.decode("utf-8", "replace")
            else:
                raw.append((name, value))
        key = record.key()
        channel = own.get(RETRY_CHANNEL) or record.topic()
        message = Message(
            channel,
            record.value() or b"",
            {k: "" if v is None else v.decode("utf-8", "replace") for k, v in raw},
            None if key is None else key.decode("utf-8", "replace"),
        )
        return KafkaDelivery(
            self,
            state,
            record.offset(),
            key,
            raw or None,
            message,
            _number(own.get(RETRY_ATTEMPT), 1) + 1,
            _number(own.get(RETRY_TIMESTAMP), -1),
            (channel, _number(own.get(RETRY_PARTITION), -1), _number(own.get(RETRY_OFFSET), -1)),
        )

    def _wake(self) -> None:
        idle, n = self._idle, len(self._ready)
        while idle and n:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    async def _work(self) -> None:
        """One of ``prefetch`` workers: hands deliveries to the handler, one at a time, and after a keyed one the
        next message of its key if it waits. (One loop rather than a coroutine per message: this is the hot path.)"""
        ready, idle, loop, handler = self._ready, self._idle, self._loop, self._handler
        while not self._closing:
            if not ready:
                waiter: asyncio.Future[None] = loop.create_future()
                idle.append(waiter)
                await waiter
                continue
            delivery = ready.popleft()
            while True:
                state = delivery._partition
                if state.revoked:
                    break
                state.busy += 1
                try:
                    await handler(delivery)
                except Exception:
                    if not delivery._settled:
                        self._failed(delivery)
                        await delivery.nack()
                else:
                    if not delivery._settled:  # the handler forgot: done, like an auto-ack consumer
                        delivery._settled = True
                        if not state.final:
                            self._settle(state, delivery._offset)
                finally:
                    state.busy -= 1
                    if state.revoked and not state.busy:
                        self._drained.set()
                key = delivery._key
                # a message redelivered in this process keeps its key's turn until that redelivery; one nacked to a
                # retry topic has left the partition, and its key goes on
                if key is None or delivery._nacked:
                    break
                waiting = state.keys.get(key)
                if waiting is None:
                    break
                if waiting is _IDLE or not waiting:
                    del state.keys[key]
                    break
                if self._closing or state.revoked:
                    break
                delivery = waiting.popleft()

    def _failed(self, delivery: KafkaDelivery) -> None:
        state = delivery._partition
        logger.warning(
            "kafka subscription %s (group %s): handler failed on %s[%d]@%d (attempt %d); redelivering",
            self.channel,
            self.group,
            state.topic,
            state.partition,
            delivery._offset,
            delivery.attempt,
            exc_info=True,
        )

    def _done(self, delivery: KafkaDelivery) -> None:
        """``delivery`` was acked, dead-lettered or copied to a retry topic."""
        state = delivery._partition
        if not state.final:
            self._settle(state, delivery._offset)

    def _settle(self, state: _Partition, offset: int) -> None:
        pending = state.pending
        if pending[0] != offset:
            state.settled.add(offset)  # an earlier one is still running: nothing committable yet
            return
        pending.popleft()
        released = 1
        settled = state.settled
        if settled:
            while pending and pending[0] in settled:
                offset = pending.popleft()
                settled.discard(offset)
                released += 1
        state.commit_at = offset + 1
        self._release(state.member, released)
        if not state.revoked:
            self._dirty.add(state)
            if self._flush is None and not self._stopping:
                self._flush = self._loop.call_later(self._commit_interval, self._commit)

    def _release(self, member: _Member, count: int) -> None:
        member.released += count
        if member.space_wanted and member.fetched - member.released <= member.low:
            member.space_wanted = False
            member.space.set()

    def _commit(self) -> None:
        """Hand the settled offsets to the consumer threads, which commit them asynchronously."""
        self._flush = None
        if self._stopping:
            return
        for state in self._dirty:
            if not state.revoked and state.commit_at is not None and state.commit_at != state.sent:
                member = state.member
                with member.commit_lock:
                    member.to_commit[(state.topic, state.partition)] = state.sent = state.commit_at
        self._dirty.clear()

    def _redeliver(self, delivery: KafkaDelivery, delay: float) -> None:
        """Hand ``delivery`` to the handler again in this process after ``delay`` (its offset stays uncommitted
        meanwhile): a nack without a delay, or the fallback when a retry or dead-letter record could not be
        written."""
        state = delivery._partition
        if state.revoked or self._closing:  # the offset stays uncommitted: the partition's next reader has it
            return
        again = delivery._again()
        if delay <= 0:
            self._ready.append(again)
            self._wake()
            return

        def due() -> None:
            self._timers.discard(timer)
            if not state.revoked and not self._closing:
                self._ready.append(again)
                self._wake()

        timer = self._loop.call_later(delay, due)
        self._timers.add(timer)

    async def close(self) -> None:
        """Stop intake now; handlers already running finish first; then commit and leave the groups."""
        if not self._closing:
            self._closing = True
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        # cancelled while waiting (App.stop's timeout): the workers are cancelled with it, their messages
        # stay uncommitted, and a later close() finishes the job
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._stopping = True  # the threads close the consumers: a last revoke commits what settled
        for member in self._members:
            member.stopping = True
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        await asyncio.shield(asyncio.gather(*(member.done for member in self._members)))
        self._broker._subscriptions.discard(self)


# -- the broker -------------------------------------------------------------------------------------------------


class KafkaBroker(Broker):
    """Kafka through confluent-kafka; see the module documentation for the URL, options and guarantees."""

    schemes = tuple(_SCHEMES)
    capabilities = frozenset({DURABLE, PATTERNS, DEAD_LETTER, DELAYED_REDELIVERY, ORDERING})

    def __init__(self, url: str, **options: object) -> None:
        self._url = url
        self._settings = _parse_url(url, options)
        self._producer: Any = None
        self._admin: Any = None
        self._poller: _PollThread | None = None
        self._topics: set[str] = set()
        self._subscriptions: set[_KafkaSubscription] = set()

    def __repr__(self) -> str:
        return f"KafkaBroker({self.url!r})"

    @property
    def url(self) -> str:
        return redact_url(self._url)

    @property
    def bootstrap_servers(self) -> str:
        return self._settings.bootstrap

    @property
    def dead_letter_topic(self) -> str:
        return self._settings.dead_letter_topic

    # -- librdkafka configuration --

    def _common_config(self) -> dict[str, Any]:
        s = self._settings
        config: dict[str, Any] = {
            "bootstrap.servers": s.bootstrap,
            "client.id": s.client_id,
            "security.protocol": s.security_protocol,
            "topic.metadata.refresh.interval.ms": 5000,
            "message.max.bytes": s.max_message_bytes,
            "logger": _driver_logger,
            "error_cb": self._on_error,
        }
        if s.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = s.mechanism
            if s.username is not None:
                config["sasl.username"] = s.username
            if s.password is not None:
                config["sasl.password"] = s.password
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "ssl_key_password"):
            value = getattr(s, name)
            if value is not None:
                config[name.replace("_", ".")] = value
        return config

    def _producer_config(self) -> dict[str, Any]:
        s = self._settings
        return {
            **self._common_config(),
            "acks": s.acks,
            "enable.idempotence": s.idempotence,
            "linger.ms": s.linger_ms,
            "compression.type": s.compression,
            "message.timeout.ms": max(1, int(s.timeout * 1000)),
            **s.extra,
            **s.producer_extra,
        }

    def _consumer_config(self, group: str) -> dict[str, Any]:
        s = self._settings
        return {
            **self._common_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": s.auto_offset_reset,
            "session.timeout.ms": s.session_timeout_ms,
            "heartbeat.interval.ms": max(1, min(3000, s.session_timeout_ms // 3)),
            "fetch.wait.max.ms": s.fetch_wait_ms,
            "on_commit": self._on_commit,
            **s.extra,
            **s.consumer_extra,
        }

    def _on_error(self, err: Any) -> None:
        # librdkafka reconnects on its own; these also reach the librdkafka logger
        if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("kafka at %s: %s", self._settings.bootstrap, redact_url(err.str()))
        else:
            logger.debug("kafka at %s: %s", self._settings.bootstrap, redact_url(err.str()))

    @staticmethod
    def _on_commit(err: Any, partitions: list[Any]) -> None:
        if err is not None:
            logger.warning("kafka: committing offsets failed (they will be delivered again): %s", err.str())

    def _error(self, error: BaseException | Any, doing: str) -> TidingsError:
        return _translate(error, doing, self._settings)

    # -- lifecycle --

    async def start(self) -> None:
        if self._producer is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            producer = Producer(self._producer_config())
            common = {k: v for k, v in self._common_config().items() if k != "message.max.bytes"}
            admin = AdminClient({**common, **self._settings.extra})
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "creating the Kafka client") from exc
        poller = _PollThread(producer, admin, loop)
        try:
            # a bounded check that the broker answers: an unreachable one fails here, not at the first publish
            await asyncio.to_thread(producer.list_topics, timeout=self._settings.timeout)
        except _DRIVER_ERRORS as exc:
            await poller.stop()
            raise self._error(exc, f"connecting to {self.url}") from exc
        self._producer, self._admin, self._poller = producer, admin, poller
        self._topics = set()

    async def close(self) -> None:
        if self._producer is None:
            return
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, poller = self._producer, self._poller
        self._producer = self._admin = self._poller = None
        assert poller is not None
        await poller.stop()
        # what is still queued gets its delivery report (or fails) within the timeout, in this thread now
        remaining = await asyncio.to_thread(producer.flush, self._settings.timeout)
        for reports in poller.completed:
            reports.resolve()
        poller.completed.clear()
        if remaining:
            logger.warning("kafka at %s: %d record(s) not confirmed when closing", self._settings.bootstrap, remaining)

    # -- publishing --

    def _require_producer(self) -> Any:
        if self._producer is None:
            raise BrokerError("the Kafka broker is not started: use `async with broker:` or await broker.start()")
        return self._producer

    async def publish(self, message: Message) -> None:
        self._require_producer()
        if message.channel not in self._topics:
            await self.create_topics([TopicSpec(message.channel)])
        poller = self._poller
        assert poller is not None
        reports = _Reports(asyncio.get_running_loop().create_future(), 1, poller.completed)
        await self._produce([message], reports)
        await self._confirmed(reports, f"publishing on {message.channel}")

    async def publish_many(self, messages: Iterable[Message]) -> None:
        """Produce every message, then wait for all their delivery reports together; raises
        :class:`BrokerError` if any was not confirmed (the others may have been: publishing again may
        duplicate them)."""
        self._require_producer()
        batch = messages if isinstance(messages, list) else list(messages)
        if not batch:
            return
        new = {m.channel for m in batch} - self._topics
        if new:
            await self.create_topics([TopicSpec(name) for name in sorted(new)])
        poller = self._poller
        assert poller is not None
        reports = _Reports(asyncio.get_running_loop().create_future(), len(batch), poller.completed)
        await self._produce(batch, reports)
        await self._confirmed(reports, f"publishing {len(batch)} messages")

    async def _produce(self, messages: list[Message], reports: _Reports) -> None:
        produce = self._producer.produce
        produced = 0
        try:
            for message in messages:
                headers = message.headers
                while True:
                    try:
                        produce(
                            message.channel,
                            message.body,
                            message.key,
                            on_delivery=reports,
                            headers=headers if headers.__class__ is dict else dict(headers),
                        )
                        break
                    except BufferError:
                        await self._wait_for_room()
                produced += 1
                if not produced % _YIELD_EVERY:
                    await asyncio.sleep(0)
        except BaseException as exc:
            reports.expected = produced  # those get their reports; the batch completes with them
            if reports.reported >= produced:
                reports.resolve()
            if isinstance(exc, TypeError):
                raise UsageError(f"a message's body is bytes, its key and headers str: {exc}") from exc
            if isinstance(exc, _DRIVER_ERRORS):
                raise self._error(exc, f"publishing on {messages[produced].channel}") from exc
            raise

    async def _wait_for_room(self) -> None:
        """The local queue is full: wait until the poll thread has served delivery reports."""
        poller = self._poller
        if poller is None:
            raise BrokerError("the Kafka broker closed while publishing")
        poller.room.clear()
        poller.room_wanted = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller.room.wait(), _POLL_INTERVAL * 2)

    async def _confirmed(self, reports: _Reports, doing: str) -> None:
        error = await reports.future
        if error is not None:
            raise self._error(error, doing) from KafkaException(error)

    # -- topics --

    async def declare(self, document: Document) -> None:
        """Create the document's topics, as its Kafka bindings describe them (see :func:`ensure_topics`)."""
        await ensure_topics(self, document)

    async def create_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Create the topics of ``specs`` that do not exist; returns the names of those created. Unset sizes
        and config come from the broker's options (``partitions``, ``replication_factor``, ``retention_ms``,
        ``max_message_bytes``)."""
        admin = self._admin
        if admin is None:
            raise BrokerError("the Kafka broker is not started: use `async with broker:` or await broker.start()")
        s = self._settings
        new_topics = []
        for spec in specs:
            _check_topic(spec.name)
            config = {"max.message.bytes": str(s.max_message_bytes)}
            if s.retention_ms is not None:
                config["retention.ms"] = str(s.retention_ms)
            config.update(spec.config)
            new_topics.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions or s.partitions,
                    replication_factor=spec.replicas or s.replication_factor,
                    config=config,
                )
            )
        if not new_topics:
            return []
        created = []
        try:
            futures = admin.create_topics(new_topics, request_timeout=s.timeout, operation_timeout=s.timeout)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "creating topics") from exc
        for name, future in futures.items():
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), s.timeout + 1)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._error(exc, f"creating topic {name!r}") from exc
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, f"creating topic {name!r}") from exc
            else:
                created.append(name)
            self._topics.add(name)
        return created

    # -- subscribing --

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        """Join ``group`` on ``channel``, and the subscription's retry group on its retry topics (see the module
        documentation); for a topic name, returns once both members have their first partition assignment (so
        what is published next reaches the group's members), a pattern returns at once."""
        self._require_producer()
        if not channel or not group:
            raise UsageError("subscribe needs a channel (or pattern) and a group name")
        pattern = is_pattern(channel)
        if pattern:
            topics = [topic_regex(channel)]
        else:
            _check_topic(channel)
            topics = [channel]
        retry_group, retry_topics = self.retry_names(group, channel)
        # every topic exists before a consumer joins: a broker may leave a topic created later unassigned (Tansu)
        missing = [name for name in (*retry_topics, *([] if pattern else topics)) if name not in self._topics]
        if missing:
            await self.create_topics([TopicSpec(name) for name in missing])
        consumers: list[Any] = []
        try:
            consumers.append(Consumer(self._consumer_config(group)))
            # a retry group without committed offsets reads its topics from the start, whatever auto_offset_reset
            consumers.append(Consumer({**self._consumer_config(retry_group), "auto.offset.reset": "earliest"}))
        except _DRIVER_ERRORS as exc:
            for consumer in consumers:
                consumer.close()
            raise self._error(exc, f"subscribing to {channel} as {group}") from exc
        subscription = _KafkaSubscription(
            self,
            channel,
            group,
            handler,
            max(1, prefetch),
            consumers[0],
            topics,
            consumers[1],
            retry_group,
            retry_topics,
        )
        self._subscriptions.add(subscription)
        if not subscription._pattern:
            try:
                await asyncio.wait_for(subscription._assigned(), self._settings.timeout)
            except TimeoutError as exc:
                await subscription.close()
                raise BrokerError(
                    f"subscribing to {channel} as group {group}: no partition assignment from "
                    f"{self._settings.bootstrap} within {self._settings.timeout:g} s: check that the broker "
                    "runs (or raise timeout=; joining a group can take session_timeout_ms)"
                ) from exc
        return subscription

    def retry_names(self, group: str, channel: str) -> tuple[str, list[str]]:
        """The retry group and retry topics (one per delay level, shortest first) of ``group`` on ``channel``."""
        return retry_names(self._settings.retry_topic_prefix, group, channel)

    async def _write_retry(self, delivery: KafkaDelivery, subscription: _KafkaSubscription, delay: float) -> None:
        """Append a copy of ``delivery`` to the subscription's retry topic for ``delay``, due ``delay`` seconds from
        now, and wait for its delivery report (see the module documentation)."""
        due = math.ceil(time.time() * 1000 + delay * 1000)
        topic = subscription.retry_topics[_retry_level(delay)]
        if topic not in self._topics:
            await self.create_topics([TopicSpec(topic)])
        channel, partition, offset = delivery._place()
        # the original's headers as received (byte for byte), without the retry headers of an earlier copy
        headers: list[tuple[str, str | bytes]] = [
            (k, v) for k, v in (delivery._headers or ()) if not k.startswith(_RETRY_HEADER)
        ]
        headers += [
            (RETRY_CHANNEL, channel),
            (RETRY_PARTITION, str(partition)),
            (RETRY_OFFSET, str(offset)),
            (RETRY_ATTEMPT, str(delivery.attempt)),
            (RETRY_DUE, str(due)),
            (RETRY_GROUP, subscription.group),
        ]
        if delivery._timestamp >= 0:
            headers.append((RETRY_TIMESTAMP, str(delivery._timestamp)))
        doing = f"writing a message of {channel} to the retry topic {topic!r}"
        await self._produce_confirmed([(topic, None, delivery.message.body, delivery._key, headers)], doing)

    # -- dead letters --

    async def _write_dead_letter(
        self, delivery: KafkaDelivery, group: str, reason: str, details: Mapping[str, str] | None = None
    ) -> None:
        topic = await self._dead_letter_topic()
        message = delivery.message
        origin_topic, origin_partition, origin_offset = delivery._place()
        # the original's headers as received (byte for byte), without any that are the dead letter's own
        headers: list[tuple[str, str | bytes]] = [
            (k, v)
            for k, v in (delivery._headers or ())
            if k not in _DLQ_HEADERS
            and k not in _FAILURE
            and k not in (DLQ_SETTLED, DLQ_SETTLED_AS)
            and not k.startswith(_RETRY_HEADER)
        ]
        headers += [
            (DLQ_CHANNEL, message.channel),
            (DLQ_PARTITION, str(origin_partition)),
            (DLQ_OFFSET, str(origin_offset)),
            (DLQ_GROUP, group),
            (DLQ_REASON, reason),
            (DLQ_ATTEMPTS, str(delivery.attempt)),
        ]
        if delivery._timestamp >= 0:
            headers.append((DLQ_TIMESTAMP, str(delivery._timestamp)))
        if details:
            headers += [(k, str(v)) for k, v in details.items() if k in _FAILURE and k != DL_ORIGIN]
        headers.append((DL_ORIGIN, f"kafka:{origin_topic}/{origin_partition}@{origin_offset}"))
        doing = f"dead-lettering a message of {message.channel}"
        await self._produce_confirmed([(topic, None, message.body, delivery._key, headers)], doing)

    async def _dead_letter_topic(self) -> str:
        self._require_producer()
        topic = self._settings.dead_letter_topic
        if topic not in self._topics:
            await self.create_topics([TopicSpec(topic, partitions=1)])  # one partition: oldest first
        return topic

    async def _produce_confirmed(self, records: list[_Record], doing: str) -> None:
        """Produce ``records`` (topic, partition or None, value, key, headers) and wait for all their delivery
        reports; :class:`BrokerError` if one was not confirmed."""
        producer = self._require_producer()
        poller = self._poller
        assert poller is not None
        reports = _Reports(asyncio.get_running_loop().create_future(), len(records), poller.completed)
        produced = 0
        try:
            for topic, partition, value, key, headers in records:
                extra = {} if partition is None else {"partition": partition}
                while True:
                    try:
                        producer.produce(topic, value, key, on_delivery=reports, headers=headers, **extra)
                        break
                    except BufferError:
                        await self._wait_for_room()
                produced += 1
        except BaseException as exc:
            reports.expected = produced  # those get their reports; the batch completes with them
            if reports.reported >= produced:
                reports.resolve()
            if isinstance(exc, _DRIVER_ERRORS):
                raise self._error(exc, doing) from exc
            raise
        await self._confirmed(reports, doing)

    async def dead_letters(self) -> list[DeadLetter]:
        """What the dead-letter topic holds and no marker has settled, read from its beginning (nothing is
        committed), in the order their originals were published (see the module documentation)."""
        return _unsettled(await self._dead_letter_records())

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Take the selected dead letters out of the dead-letter topic by appending settled markers for them
        (see the module documentation); with ``replay``, each is first published again, confirmed, on its
        original channel (its original body, headers and key). A publish that fails raises
        :class:`BrokerError` and the dead letters of its round stay (some of them may have been published:
        replaying them again duplicates those)."""
        chosen = [dead for dead in await self.dead_letters() if select(dead)]
        topic = await self._dead_letter_topic() if chosen else self._settings.dead_letter_topic
        done = 0
        for start in range(0, len(chosen), _SETTLE_BATCH):
            batch = chosen[start : start + _SETTLE_BATCH]
            if replay:
                try:
                    await self.publish_many([dead.message for dead in batch])
                except UsageError as exc:  # a dead letter naming a channel that is no topic (written by hand...)
                    raise BrokerError(f"replaying {len(batch)} dead letter(s) of {topic!r}: {exc}") from exc
            # one marker per partition of the dead-letter topic, written to that partition (after what it settles)
            by_partition: dict[int, list[str]] = {}
            for dead in batch:
                by_partition.setdefault(int(dead.id.partition(":")[0]), []).append(dead.id)
            settled_as = "replayed" if replay else "purged"
            markers: list[_Record] = [
                (topic, partition, b"", None, [(DLQ_SETTLED, ",".join(ids)), (DLQ_SETTLED_AS, settled_as)])
                for partition, ids in by_partition.items()
            ]
            await self._produce_confirmed(markers, f"marking {len(batch)} dead letter(s) of {topic!r} settled")
            for _ in batch:
                done += 1
                if progress is not None:
                    progress(done)
        return done

    async def _dead_letter_records(self) -> list[Any]:
        self._require_producer()
        try:
            return await asyncio.to_thread(self._read_dead_letter_records)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, f"reading the dead-letter topic {self._settings.dead_letter_topic!r}") from exc

    def _read_dead_letter_records(self) -> list[Any]:
        """Every record of the dead-letter topic, markers included."""
        topic, timeout = self._settings.dead_letter_topic, self._settings.timeout
        config = self._consumer_config(f"tidings-dead-letter-reader-{uuid.uuid4().hex}")
        del config["on_commit"]
        # read to each partition's end as the fetches report it, not to a watermark asked for first: some brokers
        # (Tansu) report a partition's end wrongly after a batch of several records
        config["enable.partition.eof"] = True
        consumer = Consumer(config)
        records: list[Any] = []
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                return []
            remaining = set(found.partitions)
            consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in remaining])
            deadline = time.monotonic() + timeout
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the dead-letter topic was not read to its end within {timeout:g} s")
                for record in consumer.consume(_BATCH, _POLL_INTERVAL * 2):
                    err = record.error()
                    if err is None:
                        records.append(record)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(record.partition())
                    else:
                        raise KafkaException(err)
        finally:
            consumer.close()
        return records


def _unsettled(records: list[Any]) -> list[DeadLetter]:
    """The dead letters among ``records`` (the dead-letter topic's) that no marker among them settles, in the
    order their originals were published (see the module documentation)."""
    settled: set[str] = set()
    letters: list[Any] = []
    for record in records:
        marker = next((value for name, value in record.headers() or () if name == DLQ_SETTLED), None)
        if marker is None:
            letters.append(record)
        else:
            settled.update(marker.decode("ascii", "replace").split(","))
    found = [
        _dead_letter_record(record) for record in letters if f"{record.partition()}:{record.offset()}" not in settled
    ]
    found.sort(key=lambda pair: pair[0])
    return [dead for _, dead in found]


def _dead_letter_record(record: Any) -> tuple[tuple[int, str, int, int, int, int], DeadLetter]:
    """The dead letter in ``record``, and where it goes in a list of them: by its original's timestamp (else its
    own), then the original's topic, partition and offset, then its place in the dead-letter topic."""
    own: dict[str, str] = {}
    headers: dict[str, str] = {}
    for name, value in record.headers() or ():
        text = "" if value is None else value.decode("utf-8", "replace")
        (own if name in _DLQ_HEADERS else headers)[name] = text
    original, details = split_failure_details(headers)
    key = record.key()
    message = Message(
        own.get(DLQ_CHANNEL, record.topic()),
        record.value() or b"",
        original,
        None if key is None else key.decode("utf-8", "replace"),
    )
    attempts = own.get(DLQ_ATTEMPTS, "")
    dead = DeadLetter(
        message,
        own.get(DLQ_GROUP, ""),
        own.get(DLQ_REASON, ""),
        int(attempts) if attempts.isdigit() else 0,
        details,
        f"{record.partition()}:{record.offset()}",
    )
    place = (
        _number(own.get(DLQ_TIMESTAMP), record.timestamp()[1]),
        message.channel,
        _number(own.get(DLQ_PARTITION), -1),
        _number(own.get(DLQ_OFFSET), -1),
        record.partition() or 0,
        record.offset() or 0,
    )
    return place, dead


def _number(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


__all__ = [
    "KafkaBroker",
    "KafkaDelivery",
    "TopicSpec",
    "ensure_topics",
    "is_pattern",
    "retry_names",
    "topic_regex",
    "topic_specs",
]
