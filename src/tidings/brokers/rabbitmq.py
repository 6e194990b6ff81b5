"""``amqp://user:pass@host:5672/vhost``: RabbitMQ through aio-pika, durable by default.

Install the driver with ``pip install tidings[rabbitmq]``.

``amqps://`` is the same over TLS (port 5671 by default). The path is the virtual host (``/`` when there is
none; write ``%2F`` for a vhost named ``/`` explicitly). Query parameters (a keyword argument of the same
name wins over the URL)::

    exchange=tidings          the topic exchange tidings publishes to and binds its queues to
    queue_type=quorum         quorum | classic: the type of the groups' queues (see below)
    delivery_limit=20         quorum queues: redeliveries of an unsettled message before RabbitMQ gives up on it
    durable=true              true | false: durable exchange and queues, persistent messages (see below)
    unroutable=keep           keep | error | drop: what becomes of a message that no queue is bound for (below)
    prefetch=                 every subscription's prefetch (default: the one subscribe() asks for)
    confirm_batch=1000        publish_many waits for the confirms of this many messages at a time
    connect_timeout=10        seconds to connect, and that a publish waits for a lost connection to come back
    confirm_timeout=30        seconds a publish waits for RabbitMQ's confirms before it fails (BrokerError):
                              a queue without a leader, or a node that stopped answering, never confirms
    reconnect_delay=1         seconds before the second attempt to reconnect; doubles up to...
    reconnect_max_delay=30    ...this many seconds between attempts

aio-pika's own connection parameters pass through unchanged: ``heartbeat``, ``name`` (the connection's
name in RabbitMQ), ``auth``, and the TLS files ``cafile``, ``capath``, ``cadata``, ``certfile``, ``keyfile``,
``no_verify_ssl``. Any other parameter is a :class:`~tidings.errors.UsageError`.

The topology it declares
------------------------
With the default ``exchange=tidings``::

    tidings                         topic exchange; a message's routing key is its channel (user.created)
    tidings.{group}.{pattern}       one queue per group, e.g. tidings.email-service.user.created, bound to the
                                    exchange with the pattern in AMQP terms: user.* stays user.*, user.# and
                                    user.> become user.#, a {param} segment becomes *. AMQP names may not hold
                                    * > { }, so the queue's name writes wildcards as MQTT does (...user.+ for
                                    user.* and user.{id}, ...user.# for user.# and user.>); any other
                                    character a name may not hold becomes _, and a digest of the exact group
                                    and pattern is appended (tidings.email-service.caf__:3f2a9c1b0d)
    tidings.{group}.{pattern}.retry-{t}
                                    delayed redeliveries of that queue, one queue per delay level t (50ms,
                                    100ms, 200ms, 500ms, 1s, 2s, 5s, 10s, 20s, 30s, 1m, 2m, 5m, 10m, 30m, 1h),
                                    declared at the first nack that needs it; classic, dead-lettering back to
                                    the group's queue when a message's time is up
    tidings.dead-letters            fanout exchange for what is given up on, and the classic queue bound to it
    tidings.unrouted                classic queue for messages no queue was bound for (unroutable=keep, below)

Everything is named after the exchange, which makes it a namespace: two applications (or environments)
on two exchanges of one virtual host share nothing, and ``rabbitmqctl list_queues`` shows what belongs to
whom. A *group* is a group name together with the channel (or pattern) it subscribed to, as in the other
brokers, hence a queue name made of both. Members of a group, in this process or another, consume the
same queue and share its messages. The group queues are quorum queues (replicated, with a delivery limit
and the dead-letter exchange above); ``queue_type=classic`` makes them classic queues. A pattern segment
AMQP cannot express (``user.cre*``) is bound as ``*`` and the rest is filtered here: the messages that do
not match are acknowledged and dropped.

Every name is used as it is: queues declared by another tidings process with the same settings are shared,
and a queue or exchange that exists with *other* settings (another ``queue_type``, ``delivery_limit`` or
``durable``) is refused by RabbitMQ; the :class:`BrokerError` says which one. tidings never deletes anything.

What is guaranteed
------------------
*Publishing*: ``publish`` returns once RabbitMQ has confirmed the message (publisher confirms), which for a
persistent message on a durable queue means it is on disk (quorum: on a majority of nodes). A group's
queue is declared (and bound) by its first ``subscribe``, and from then on it keeps every message of its
channel, consumer running or not. A message published before any group subscribed to its channel has
no queue to go to, and RabbitMQ would drop it without a word; tidings publishes ``mandatory``, so that
RabbitMQ returns it instead, and then, by ``unroutable``:

- ``keep`` (the default): it is published again, confirmed, to the queue ``{exchange}.unrouted`` (classic,
  the newest 100,000 kept; header ``x-tidings-channel`` = its channel), where it can be looked at or
  replayed; ``publish`` succeeds, as on the other brokers, where publishing to a channel without
  subscribers is no error;
- ``error``: ``publish`` raises :class:`BrokerError` naming the channel (start a subscriber first, or
  declare and bind a queue yourself);
- ``drop``: published without ``mandatory``: RabbitMQ drops it, its own default.

``publish_many`` sends a whole batch before it waits for the confirms, and concurrent ``publish`` calls
share one channel, so confirms come back many at once. RabbitMQ delivers a message and confirms it
independently: a subscriber may be handling it before the ``publish`` that sent it has returned.

*Delivery* is at least once, with manual acknowledgements and at most ``prefetch`` unacknowledged
deliveries per subscription (``basic.qos``). ``ack()`` returns at once (``basic.ack``, like AMQP itself).
``nack(delay)`` publishes a copy, confirmed, then acks the original: with ``delay <= 0`` back to the group's
queue (behind what is already there), otherwise to the retry queue of the delay's level, where the copy
waits ``delay`` (per-message TTL) before RabbitMQ dead-letters it back into the group's queue. Messages in
one retry queue leave it in order, so a message may wait for one ahead of it with a longer delay of the
same level: never less than its own delay, less than the next level's (1.5 s: under 2 s; the 1h level
has no bound). A handler that raises is nacked (redelivered); one that returns without settling is acked.

``attempt`` counts deliveries across all this: a copy made by ``nack`` carries the attempt it was made
at, and quorum queues count redeliveries themselves (``x-delivery-count``). A message whose consumer dies
without settling it is redelivered by RabbitMQ (``attempt`` + 1; on a classic queue ``attempt`` tells
only that it was redelivered). After ``delivery_limit`` such redeliveries RabbitMQ moves it to the
dead-letter queue itself: a message that crashes its consumer every time cannot block a group forever.
A message that reaches a member after it began to close is handed back (``basic.nack``, requeue), which
quorum queues count as a delivery too.

*Dead letters*: ``dead_letter(reason, details)`` publishes a copy to the dead-letter exchange, confirmed, then
acks the original. The copy has the original's body, properties and headers, and beside them, as headers:
the reason, group, queue, channel and attempts (``x-tidings-reason``, ``-group``, ``-queue``, ``-channel``,
``-attempts``), the failure's ``details`` (the ``x-tidings-*`` fields of
:data:`~tidings.brokers.base.FAILURE_FIELDS`, others are ignored; ``x-tidings-group`` and
``x-tidings-attempts`` hold the broker's values), its origin ``x-tidings-origin`` = ``amqp:<queue>``, and
``x-tidings-dead-letter-id``, a uuid that names it.
:meth:`RabbitBroker.dead_letters` reads the dead-letter queue (``basic.get``, unacknowledged, on a channel
of its own) without taking anything from it: closing the channel hands every message back, in its place.
A dead letter's ``message.headers`` are the original's, its ``details`` the failure fields, its ``id`` that
uuid. A message RabbitMQ dead-lettered itself has the channel, attempts, origin and the time it died as its
details (from its ``x-death`` record), and no such id: it is named by a digest of its content
(``rabbitmq-...``, the same at every read; identical ones get ``-2``, ``-3``... in queue order).
:meth:`RabbitBroker.settle_dead_letters` reads the queue the same way: a selected dead letter is replayed
(published again with :meth:`~RabbitBroker.publish` on its original channel, its original headers, body and
key, confirmed) and only then acked, or, when purging, acked; the others are handed back in their places.
A replay that fails leaves its dead letter in the queue. While a read or a settle holds the messages, another
read sees the queue without them.

*Connections*: one for publishing, opened by ``start``, and one for consuming, opened by the first
``subscribe`` (RabbitMQ blocks a publishing connection under memory pressure; acknowledgements must not
wait behind it). Both reconnect on their own (aio-pika's
robust connection) after a delay that doubles from ``reconnect_delay`` to ``reconnect_max_delay``, and
declare again the exchanges, queues, bindings and consumers. A connection loss cancels the handlers
running on it (their deliveries can no longer be settled) and RabbitMQ delivers those messages again,
to this member once it is back or to another one: nothing unacknowledged is lost, some messages are
handled twice. A ``publish`` waiting for its confirm when the connection drops raises :class:`BrokerError`
(RabbitMQ may or may not have the message: publishing it again may duplicate it); one made while the
connection is down waits up to ``connect_timeout`` for it to come back.

*Durability*: by default the exchange and queues are durable and messages persistent (delivery mode 2):
what ``publish`` returned for survives a restart of RabbitMQ. ``durable=false`` opts out: a transient
exchange and classic non-durable queues, transient messages, lost when RabbitMQ restarts, in exchange
for speed. (Delayed redeliveries and dead-lettering by RabbitMQ itself are at most once between queues:
a message moving from a retry queue back to a group queue that is gone at that moment is dropped.)

*Interoperability*: the headers of a :class:`Message` travel as AMQP headers (the ordering key as
``x-tidings-key``), and the AMQP properties are set from the event's envelope where it is known (the
``ce_*`` headers of the ``headers`` placement, or the first fields of a ``payload`` body, which tidings
writes envelope first): ``message_id`` = event id, ``type`` = event type, ``timestamp``,
``correlation_id``, ``app_id`` = source, ``content_type``. On receipt, AMQP properties that the headers
do not already carry are added to the headers as ``message_id``, ``type``, ``timestamp`` (RFC 3339),
``correlation_id``, ``app_id`` and ``content-type``: the names under which tidings' decoder adopts a
message from a producer that knows nothing of envelopes (pika, FastStream). RabbitMQ's own headers
(``x-death``, ``x-delivery-count``...) and tidings' ``x-tidings-*`` are not passed on.

Credentials come from the URL and never leave it: :attr:`RabbitBroker.url`, ``repr``, errors and logs
show the URL with the password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import aio_pika
import aiormq
import aiormq.exceptions
import pamqp.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel, AbstractRobustConnection
from pamqp.commands import Basic

from tidings.brokers.base import (
    DEAD_LETTER,
    DELAYED_REDELIVERY,
    DL_ATTEMPTS,
    DL_CHANNEL,
    DL_LAST_FAILURE,
    DL_ORIGIN,
    DURABLE,
    FAILURE_FIELDS,
    PATTERNS,
    Broker,
    BrokerError,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    Subscription,
    channel_matcher,
    split_failure_details,
)
from tidings.errors import UsageError
from tidings.redact import redact_url

logger = logging.getLogger("tidings.brokers.rabbitmq")

#: every driver error there is; translated into BrokerError by RabbitBroker._error, nowhere else
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,  # TimeoutError included
)

# headers tidings writes for itself: read on receipt, never passed on to handlers
_KEY = "x-tidings-key"  # the message's ordering key
_ATTEMPT = "x-tidings-attempt"  # copies made by nack: the attempt the copy was made at
_CHANNEL = "x-tidings-channel"  # copies: their routing key is a queue's name, this is the channel
_REASON = "x-tidings-reason"  # dead letters: why, by whom, after how many attempts
_GROUP = "x-tidings-group"
_QUEUE = "x-tidings-queue"
_ATTEMPTS = "x-tidings-attempts"
_DEAD_LETTER_ID = "x-tidings-dead-letter-id"  # dead letters: what names it for settle_dead_letters (a uuid)
# _GROUP and _ATTEMPTS are failure fields too (DL_GROUP, DL_ATTEMPTS): the broker's own values are stored there
_FAILURE = frozenset(FAILURE_FIELDS)
# RabbitMQ's own (dead-lettering history, quorum delivery count): not the message's, not copied either
_RABBITMQ_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
_INTERNAL = (
    frozenset({_KEY, _ATTEMPT, _CHANNEL, _REASON, _GROUP, _QUEUE, _ATTEMPTS, _DEAD_LETTER_ID}) | _RABBITMQ_HEADERS
)

#: delay levels, in seconds, with their queue name suffix: a delay goes to the highest level not above it
_RETRY_LEVELS: tuple[tuple[float, str], ...] = (
    (0.05, "50ms"),
    (0.1, "100ms"),
    (0.2, "200ms"),
    (0.5, "500ms"),
    (1, "1s"),
    (2, "2s"),
    (5, "5s"),
    (10, "10s"),
    (20, "20s"),
    (30, "30s"),
    (60, "1m"),
    (120, "2m"),
    (300, "5m"),
    (600, "10m"),
    (1800, "30m"),
    (3600, "1h"),
)
#: what AMQP allows in a queue or exchange name (pamqp refuses anything else)
_NAME_CHARACTERS = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]*")
_NOT_NAME_CHARACTER = re.compile(r"[^a-zA-Z0-9\-_.:@#,/+ ]")
#: how many messages the unrouted queue keeps (the newest)
_UNROUTED_KEPT = 100_000
#: group queue names leave room for the longest retry suffix (queue names are at most 255 bytes)
_MAX_QUEUE_NAME = 255 - len(".retry-500ms")

# tidings' payload placement writes the envelope first, in this order, with orjson's compact separators:
# the properties can be read from the first bytes of the body without parsing it
_PAYLOAD_ENVELOPE = re.compile(
    rb'\{"event_id":"([^"\\]+)","event_type":"([^"\\]+)","timestamp":"([^"\\]+)"'
    rb'(?:,"version":"[^"\\]*")?(?:,"source":"([^"\\]*)")?(?:,"correlation_id":"([^"\\]*)")?'
)

#: aio-pika's (aiormq's) own URL parameters, passed on as they are
_DRIVER_PARAMETERS = frozenset(
    {"heartbeat", "name", "auth", "cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl"}
)


class _Settings(NamedTuple):
    connect_url: str  # what aio-pika gets: tidings' own parameters removed (it holds the password: never shown)
    host: str
    port: int
    vhost: str
    user: str
    password: str
    exchange: str
    queue_type: Literal["quorum", "classic"]
    delivery_limit: int
    durable: bool
    unroutable: Literal["keep", "error", "drop"]
    prefetch: int | None
    confirm_batch: int
    connect_timeout: float
    confirm_timeout: float
    reconnect_delay: float
    reconnect_max_delay: float
    connection_name: str | None


_OPTIONS = (
    "exchange",
    "queue_type",
    "delivery_limit",
    "durable",
    "unroutable",
    "prefetch",
    "confirm_batch",
    "connect_timeout",
    "confirm_timeout",
    "reconnect_delay",
    "reconnect_max_delay",
)


def _parse_url(url: str, overrides: Mapping[str, object]) -> _Settings:
    """Settings from ``amqp://user:pass@host:port/vhost?param=value`` and keyword overrides; UsageError otherwise."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"not a valid RabbitMQ URL {shown!r}: {redact_url(str(exc))}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise UsageError(f"not a RabbitMQ URL: {shown!r}; use amqp://user:pass@host:5672/vhost (or amqps://)")
    if parts.fragment:
        raise UsageError(f"a RabbitMQ URL has no #fragment: {shown!r}")
    given: dict[str, object] = {}
    passthrough: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _DRIVER_PARAMETERS:
            passthrough.append((name, value))
        else:
            given[name] = value
    given.update({name: value for name, value in overrides.items() if value is not None})
    unknown = sorted(set(given) - set(_OPTIONS))
    if unknown:
        known = sorted({*_OPTIONS, *_DRIVER_PARAMETERS})
        raise UsageError(f"unknown RabbitMQ broker parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")

    def text(name: str, default: str) -> str:
        value = given.get(name)
        return default if value is None or value == "" else str(value)

    def number(name: str, default: float, *, minimum: float, integer: bool = False) -> Any:
        value = given.get(name)
        if value is None or value == "":
            return default
        try:
            result = int(str(value)) if integer else float(str(value))
        except ValueError:
            raise UsageError(f"RabbitMQ broker parameter {name}={value!r} is not a number") from None
        if not math.isfinite(result) or result < minimum:
            raise UsageError(f"RabbitMQ broker parameter {name}={value!r} must be >= {minimum:g}")
        return result

    def flag(name: str, default: bool) -> bool:
        value = given.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"RabbitMQ broker parameter {name}={value!r}: use true or false")

    durable = flag("durable", True)
    queue_type = text("queue_type", "quorum" if durable else "classic").lower()
    if queue_type not in ("quorum", "classic"):
        raise UsageError(f"RabbitMQ broker parameter queue_type={queue_type!r}: choose quorum or classic")
    if queue_type == "quorum" and not durable:
        raise UsageError("quorum queues are always durable: with durable=false use queue_type=classic (the default)")
    exchange = text("exchange", "tidings")
    if not _NAME_CHARACTERS.fullmatch(exchange):
        raise UsageError(
            f"exchange={exchange!r}: an AMQP exchange name holds only letters, digits and - _ . : @ # , / + space"
        )
    if exchange.startswith("amq."):
        raise UsageError(
            f"exchange={exchange!r}: names starting with 'amq.' are RabbitMQ's own and tidings declares "
            f"'{exchange}.dead-letters' beside its exchange; use an exchange of your own (and bind it to "
            f"{exchange!r} if messages arrive there)"
        )
    if len(exchange.encode()) > _MAX_QUEUE_NAME:
        raise UsageError(f"exchange name too long ({len(exchange.encode())} bytes; at most {_MAX_QUEUE_NAME})")
    unroutable = text("unroutable", "keep").lower()
    if unroutable not in ("keep", "error", "drop"):
        raise UsageError(f"RabbitMQ broker parameter unroutable={unroutable!r}: choose keep, error or drop")
    prefetch_value = given.get("prefetch")
    prefetch = None if prefetch_value in (None, "") else number("prefetch", 0, minimum=1, integer=True)
    reconnect_delay = number("reconnect_delay", 1.0, minimum=0.0)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    host = parts.hostname or "localhost"
    port = port or (5671 if scheme == "amqps" else 5672)
    netloc = parts.netloc.rsplit("@", 1)[-1] or f"{host}:{port}"
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    connect_url = f"{scheme}://{userinfo + '@' if userinfo else ''}{netloc}/{quote(vhost, safe='')}"
    if passthrough:
        connect_url += "?" + urlencode(passthrough)
    return _Settings(
        connect_url=connect_url,
        host=host,
        port=port,
        vhost=vhost,
        user=unquote(parts.username or "guest"),
        password=unquote(parts.password or ""),
        exchange=exchange,
        queue_type="quorum" if queue_type == "quorum" else "classic",
        delivery_limit=number("delivery_limit", 20, minimum=0, integer=True),
        durable=durable,
        unroutable=cast(Literal["keep", "error", "drop"], unroutable),
        prefetch=prefetch,
        confirm_batch=number("confirm_batch", 1000, minimum=1, integer=True),
        connect_timeout=number("connect_timeout", 10.0, minimum=0.001),
        confirm_timeout=number("confirm_timeout", 30.0, minimum=0.001),
        reconnect_delay=reconnect_delay,
        reconnect_max_delay=max(reconnect_delay, number("reconnect_max_delay", 30.0, minimum=0.0)),
        connection_name=dict(passthrough).get("name"),
    )


def _binding(pattern: str) -> tuple[str, bool]:
    """The AMQP binding key for a tidings channel or pattern, and whether deliveries must be filtered here."""
    segments: list[str] = []
    exact = True
    for segment in pattern.split("."):
        if segment in ("#", ">"):
            segments.append("#")
        elif segment == "*" or (segment.startswith("{") and segment.endswith("}")):
            segments.append("*")
        elif any(c in segment for c in "*?[#>"):
            # a glob inside a segment (user.cre*), which AMQP cannot say: bind the whole segment, filter here
            segments.append("*")
            exact = False
        else:
            segments.append(segment)
    return ".".join(segments), not exact


def _queue_name(exchange: str, group: str, pattern: str) -> str:
    """``{exchange}.{group}.{pattern}`` in the characters AMQP allows in a queue name.

    The wildcards read as MQTT writes them (``*`` and ``{param}``: ``+``; ``>``: ``#``); any other character
    a queue name may not hold becomes ``_``, and then a digest of the exact group and pattern is appended,
    so that two groups never share a queue by accident.
    """
    segments = ["+" if s == "*" or (s.startswith("{") and s.endswith("}")) else s for s in pattern.split(".")]
    name = f"{exchange}.{group}.{'.'.join(segments).replace('>', '#')}"
    if _NAME_CHARACTERS.fullmatch(name):
        return name
    digest = hashlib.sha256(f"{group}\0{pattern}".encode()).hexdigest()[:10]
    return f"{_NOT_NAME_CHARACTER.sub('_', name)}:{digest}"


def _retry_level(delay: float) -> tuple[float, str]:
    level = _RETRY_LEVELS[0]
    for candidate in _RETRY_LEVELS:
        if candidate[0] > delay:
            break
        level = candidate
    return level


def _text(value: Any) -> str:
    """A header value from another producer as text (tidings' headers are strings)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _count(value: Any) -> int:
    """A count from a header someone else may have written: 0 if it is not one."""
    try:
        return max(0, int(_text(value)))
    except ValueError:
        return 0


def _content_id(incoming: AbstractIncomingMessage) -> str:
    """An id for a dead letter that carries none (RabbitMQ dead-lettered it): a digest of what it holds, the
    same at every read (its headers include RabbitMQ's x-death record, with the time it died)."""
    digest = hashlib.sha256(incoming.body)
    digest.update(repr([(name, _text(value)) for name, value in incoming.headers.items()]).encode())
    digest.update(repr((incoming.routing_key, incoming.message_id, incoming.timestamp)).encode())
    return f"rabbitmq-{digest.hexdigest()[:20]}"


_last_rfc3339: tuple[datetime | None, str] = (None, "")  # the last AMQP timestamp formatted, and its text


def _rfc3339(value: datetime) -> str:
    # AMQP timestamps are whole seconds: consecutive messages mostly carry the same one, formatted once
    global _last_rfc3339
    last = _last_rfc3339  # one read: another thread's broker may replace it meanwhile
    if value == last[0]:
        return last[1]
    utc = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    _last_rfc3339 = (value, utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_rfc3339[1]


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class _BackoffConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, waiting longer and longer between reconnection attempts.

    aio-pika sleeps ``reconnect_interval`` between attempts, a fixed value; here it is read as the time
    since the connection was lost (at least the first delay, at most the longest): each wait about doubles.
    """

    _first_delay: float = 1.0
    _longest_delay: float = 30.0
    _lost_at: float | None = None

    @property
    def reconnect_interval(self) -> float:
        if self.connected.is_set():
            self._lost_at = None
            return self._first_delay
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
        return min(self._longest_delay, max(self._first_delay, now - self._lost_at))

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._first_delay = float(value)


class RabbitDelivery(Delivery):
    """A message delivered from a group's queue; settling it acks the AMQP delivery (see the module docs)."""

    __slots__ = ("_incoming", "_settled", "_subscription", "attempt", "message")

    def __init__(
        self, subscription: _RabbitSubscription, incoming: AbstractIncomingMessage, message: Message, attempt: int
    ) -> None:
        self._subscription = subscription
        self._incoming = incoming
        self.message = message
        self.attempt = attempt
        self._settled = False

    async def ack(self) -> None:
        if self._settle():
            await self._subscription._ack(self._incoming)

    async def nack(self, *, delay: float = 0.0) -> None:
        if self._settle():
            await self._subscription._redeliver(self, delay)

    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        if self._settle():
            await self._subscription._dead_letter(self, reason, details)


class _RabbitSubscription(Subscription):
    """One consumer (on its own channel, with its own prefetch) of a group's queue."""

    def __init__(
        self,
        broker: RabbitBroker,
        channel: str,
        group: str,
        queue_name: str,
        handler: Handler,
        amqp_channel: AbstractRobustChannel,
        queue: AbstractQueue,
        filtered: bool,
    ) -> None:
        self.channel = channel
        self.group = group
        self.queue_name = queue_name
        self._broker = broker
        self._handler = handler
        self._amqp_channel = amqp_channel
        self._queue = queue
        self._matches = channel_matcher(channel) if filtered else None
        self._consumer_tag: str | None = None
        self._closing = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        if self._closing:  # delivered between close() and RabbitMQ's cancel-ok: give it back to the group
            with contextlib.suppress(*_DRIVER_ERRORS):
                await incoming.channel.basic_nack(incoming.delivery_tag or 0, requeue=True, wait=False)
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            message, attempt = self._broker._received(incoming)
            if self._matches is not None and not self._matches(message.channel):
                await self._ack(incoming)  # bound wider than the pattern (see _binding): not this group's
                return
            delivery = RabbitDelivery(self, incoming, message, attempt)
            try:
                await self._handler(delivery)
            except Exception:
                # a handler that raises has not processed the message: at-least-once means try again
                logger.warning(
                    "handler for %r (group %r) raised; the message will be redelivered",
                    message.channel,
                    self.group,
                    exc_info=True,
                )
                if not delivery._settled:
                    with contextlib.suppress(BrokerError):  # logged where it failed; RabbitMQ redelivers
                        await delivery.nack()
            else:
                if not delivery._settled:  # the handler did not settle: treated as done, like an auto-ack consumer
                    await delivery.ack()
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _ack(self, incoming: AbstractIncomingMessage) -> None:
        try:
            # wait=False: the frame is queued for the socket, not waited for (basic.ack has no answer); an
            # ack that never arrives (connection lost) means a redelivery, which at-least-once allows
            await incoming.channel.basic_ack(incoming.delivery_tag or 0, wait=False)
        except _DRIVER_ERRORS:
            logger.warning(
                "could not ack a delivery of group %r (the connection was lost): RabbitMQ will deliver it again",
                self.group,
            )

    async def _give_back(self, incoming: AbstractIncomingMessage) -> None:
        with contextlib.suppress(*_DRIVER_ERRORS):
            await incoming.channel.basic_nack(incoming.delivery_tag or 0, requeue=True, wait=False)

    def _lost(self, incoming: AbstractIncomingMessage) -> bool:
        """True if ``incoming`` came on a channel that is gone: RabbitMQ delivers it again whatever we do now
        (a copy made for a nack or a dead letter would be a duplicate)."""
        try:
            return incoming.channel.is_closed
        except _DRIVER_ERRORS:
            return True

    async def _redeliver(self, delivery: RabbitDelivery, delay: float) -> None:
        broker = self._broker
        incoming = delivery._incoming
        if self._lost(incoming):
            return
        headers = _copied_headers(incoming, delivery.message.channel)
        headers[_ATTEMPT] = delivery.attempt
        try:
            if delay > 0:
                target = await broker._retry_queue(self.queue_name, delay)
                # never early: the copy leaves the retry queue once its own time (whole milliseconds) is up
                await broker._publish_copy(incoming, "", target, headers, str(max(1, math.ceil(delay * 1000))))
            else:
                await broker._publish_copy(incoming, "", self.queue_name, headers, None)
        except BrokerError:
            await self._give_back(incoming)  # not delayed, but not lost: RabbitMQ delivers it again now
            raise
        await self._ack(incoming)

    async def _dead_letter(self, delivery: RabbitDelivery, reason: str, details: Mapping[str, str] | None) -> None:
        broker = self._broker
        incoming = delivery._incoming
        if self._lost(incoming):
            logger.warning(
                "could not dead-letter a delivery of group %r (the connection was lost): RabbitMQ will deliver it "
                "again",
                self.group,
            )
            return
        # the original's headers (without failure fields it may carry from elsewhere), then the failure's
        headers = {k: v for k, v in _copied_headers(incoming, delivery.message.channel).items() if k not in _FAILURE}
        if details:
            headers.update({name: str(value) for name, value in details.items() if name in _FAILURE})
        headers.update(
            {
                _REASON: reason,
                _GROUP: self.group,
                _QUEUE: self.queue_name,
                _ATTEMPTS: delivery.attempt,
                DL_ORIGIN: f"amqp:{self.queue_name}",
                _DEAD_LETTER_ID: uuid.uuid4().hex,
            }
        )
        try:
            await broker._publish_copy(incoming, broker._dead_letter_exchange, delivery.message.channel, headers, None)
        except BrokerError:
            await self._give_back(incoming)
            raise
        await self._ack(incoming)

    async def close(self) -> None:
        """Stop taking deliveries now; those being handled are settled first, then the channel closes."""
        if self._closing:
            await self._idle.wait()
            return
        self._closing = True
        if self._consumer_tag is not None:
            # a lost connection took the consumer with it (and cancel would wait for the reconnection)
            with contextlib.suppress(*_DRIVER_ERRORS):
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), self._broker._settings.connect_timeout)
        await self._idle.wait()
        with contextlib.suppress(*_DRIVER_ERRORS):
            await self._amqp_channel.close()
        self._broker._subscriptions.discard(self)


def _copied_headers(incoming: AbstractIncomingMessage, channel: str) -> dict[str, Any]:
    """The AMQP headers for a copy of ``incoming`` (nack, dead letter): RabbitMQ's own left out."""
    headers = {name: value for name, value in incoming.headers.items() if name not in _INTERNAL}
    key = incoming.headers.get(_KEY)
    if key is not None:
        headers[_KEY] = key
    headers[_CHANNEL] = channel
    return headers


class RabbitBroker(Broker):
    """RabbitMQ through aio-pika: see the module documentation for the topology and what is guaranteed."""

    schemes = ("amqp", "amqps")
    capabilities = frozenset({DURABLE, PATTERNS, DEAD_LETTER, DELAYED_REDELIVERY})

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        exchange: str | None = None,
        queue_type: Literal["quorum", "classic"] | None = None,
        delivery_limit: int | None = None,
        durable: bool | None = None,
        unroutable: Literal["keep", "error", "drop"] | None = None,
        prefetch: int | None = None,
        confirm_batch: int | None = None,
        connect_timeout: float | None = None,
        confirm_timeout: float | None = None,
        reconnect_delay: float | None = None,
        reconnect_max_delay: float | None = None,
    ) -> None:
        self._url = url
        self._settings = _parse_url(
            url,
            {
                "exchange": exchange,
                "queue_type": queue_type,
                "delivery_limit": delivery_limit,
                "durable": durable,
                "unroutable": unroutable,
                "prefetch": prefetch,
                "confirm_batch": confirm_batch,
                "connect_timeout": connect_timeout,
                "confirm_timeout": confirm_timeout,
                "reconnect_delay": reconnect_delay,
                "reconnect_max_delay": reconnect_max_delay,
            },
        )
        if not self._settings.durable:
            self.capabilities = frozenset(self.capabilities - {DURABLE})
        self._dead_letter_exchange = f"{self._settings.exchange}.dead-letters"
        self._unrouted_queue = f"{self._settings.exchange}.unrouted"
        self._delivery_mode = 2 if self._settings.durable else 1
        self._mandatory = self._settings.unroutable != "drop"
        self._publisher: AbstractRobustConnection | None = None
        self._consumer: AbstractRobustConnection | None = None
        self._consumer_lock = asyncio.Lock()
        self._publish_channel: AbstractRobustChannel | None = None
        self._topology_channel: AbstractRobustChannel | None = None
        #: the publish channel's current AMQP channel (a new one after each reconnection)
        self._amqp: aiormq.Channel | None = None
        self._subscriptions: set[_RabbitSubscription] = set()
        self._retry_queues: set[str] = set()

    def __repr__(self) -> str:
        return f"RabbitBroker({self.url!r})"

    @property
    def url(self) -> str:
        return redact_url(self._url)

    @property
    def exchange(self) -> str:
        """The topic exchange messages are published to."""
        return self._settings.exchange

    @property
    def dead_letter_queue(self) -> str:
        """The queue that keeps what is dead-lettered (bound to the fanout exchange of the same name)."""
        return self._dead_letter_exchange

    def queue_name(self, channel: str, group: str) -> str:
        """The queue of ``group`` for ``channel`` (a name or a pattern): see the module documentation."""
        return _queue_name(self._settings.exchange, group, channel)

    # -- lifecycle --

    async def start(self) -> None:
        if self._publisher is not None:
            return
        connection = await self._connect("publish")
        try:
            settings = self._settings
            topology = await self._open_channel(connection, "declaring the exchanges", confirms=False)
            publish = await self._open_channel(connection, "opening the publish channel", confirms=True)
            try:
                await topology.declare_exchange(
                    settings.exchange, aio_pika.ExchangeType.TOPIC, durable=settings.durable
                )
                await topology.declare_exchange(
                    self._dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=settings.durable
                )
                dead_letters = await topology.declare_queue(
                    self._dead_letter_exchange, durable=settings.durable, arguments={"x-queue-type": "classic"}
                )
                await dead_letters.bind(self._dead_letter_exchange, "")
                if settings.unroutable == "keep":
                    await topology.declare_queue(
                        self._unrouted_queue,
                        durable=settings.durable,
                        arguments={"x-queue-type": "classic", "x-max-length": _UNROUTED_KEPT},
                    )
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, f"declaring the exchange {settings.exchange!r} and its dead letters") from exc
        except BaseException:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await connection.close()
            raise
        self._publisher, self._topology_channel, self._publish_channel = connection, topology, publish
        self._amqp = cast(aiormq.Channel, await publish.get_underlay_channel())

    async def close(self) -> None:
        if self._publisher is None:
            return
        # subscriptions first: their in-flight handlers may still ack, nack or dead-letter (which publishes)
        if self._subscriptions:
            await asyncio.gather(*(s.close() for s in list(self._subscriptions)), return_exceptions=True)
        publisher, consumer = self._publisher, self._consumer
        self._publisher = self._consumer = None
        self._publish_channel = self._topology_channel = None
        self._amqp = None
        self._retry_queues.clear()
        for connection in (consumer, publisher):
            if connection is not None:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await connection.close()

    # -- publishing --

    async def publish(self, message: Message) -> None:
        channel = self._amqp
        if channel is None or channel.is_closed:
            channel = await self._publish_amqp_channel()
        properties = self._properties(message)
        try:
            await channel.basic_publish(
                message.body,
                exchange=self._settings.exchange,
                routing_key=message.channel,
                properties=properties,
                mandatory=self._mandatory,
                wait=False,  # the confirm is what we wait for, not the socket's drain of each frame
            )
        except aiormq.exceptions.PublishError as exc:  # returned: no queue is bound for its channel
            if self._settings.unroutable != "keep":
                raise self._error(exc, f"publishing on {message.channel!r}") from exc
            await self._keep_unrouted(channel, message, properties)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, f"publishing on {message.channel!r}") from exc

    async def publish_many(self, messages: Iterable[Message]) -> None:
        """Publish ``messages`` in order on one channel, waiting for the confirms of ``confirm_batch`` at a time.

        Raises :class:`BrokerError` if any was not confirmed (the others were: publishing the batch again
        duplicates them).
        """
        batch: list[Message] = []
        size = self._settings.confirm_batch
        for message in messages:
            batch.append(message)
            if len(batch) >= size:
                await self._publish_batch(batch)
                batch = []
        if batch:
            await self._publish_batch(batch)

    async def _publish_batch(self, batch: list[Message]) -> None:
        channel = self._amqp
        if channel is None or channel.is_closed:
            channel = await self._publish_amqp_channel()
        exchange, mandatory = self._settings.exchange, self._mandatory
        properties = [self._properties(m) for m in batch]
        confirms = asyncio.gather(
            *(
                channel.basic_publish(
                    m.body, exchange=exchange, routing_key=m.channel, properties=p, mandatory=mandatory, wait=False
                )
                for m, p in zip(batch, properties, strict=True)
            ),
            return_exceptions=True,
        )
        timeout = self._settings.confirm_timeout
        try:
            results = await asyncio.wait_for(confirms, timeout)
        except TimeoutError:
            # unconfirmed is not lost, nor stored: the caller publishes again (consumers absorb duplicates)
            raise BrokerError(
                f"publishing {len(batch)} message(s) on {batch[0].channel!r}: RabbitMQ did not confirm them within "
                f"{timeout:g} s (a quorum queue without a leader? an overloaded node?); they may or may not be "
                f"stored: publish them again ({redact_url(self._url)})"
            ) from None
        failed: list[tuple[Message, BaseException]] = []
        unrouted: list[tuple[Message, Basic.Properties]] = []
        keep = self._settings.unroutable == "keep"
        for m, p, result in zip(batch, properties, results, strict=True):
            if isinstance(result, aiormq.exceptions.PublishError) and keep:
                unrouted.append((m, p))
            elif isinstance(result, BaseException):
                failed.append((m, result))
        if unrouted:
            kept = await asyncio.gather(
                *(self._keep_unrouted(channel, m, p) for m, p in unrouted), return_exceptions=True
            )
            failed += [(m, r) for (m, _), r in zip(unrouted, kept, strict=True) if isinstance(r, BaseException)]
        if not failed:
            return
        message, exc = failed[0]
        if isinstance(exc, BrokerError):
            error = exc
        elif isinstance(exc, _DRIVER_ERRORS):
            error = self._error(exc, f"publishing on {message.channel!r}")
        else:
            raise exc
        if len(failed) > 1:
            error = BrokerError(f"{len(failed)} of {len(batch)} messages were not published; the first: {error}")
        raise error from exc

    async def _keep_unrouted(self, channel: aiormq.Channel, message: Message, properties: Basic.Properties) -> None:
        """Publish a message RabbitMQ returned (no queue bound for its channel) to the unrouted queue."""
        headers = properties.headers if properties.headers is not None else {}
        headers[_CHANNEL] = message.channel
        properties.headers = headers
        try:
            await channel.basic_publish(
                message.body,
                exchange="",
                routing_key=self._unrouted_queue,
                properties=properties,
                mandatory=True,
                wait=False,
            )
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, f"keeping a message of {message.channel!r} in {self._unrouted_queue!r}") from exc

    async def _publish_amqp_channel(self) -> aiormq.Channel:
        """The publish channel's AMQP channel, waiting (up to connect_timeout) for a reconnection if need be."""
        publish = self._publish_channel
        if publish is None:
            raise BrokerError("the RabbitMQ broker is not started: use `async with broker:` or await broker.start()")
        try:
            await asyncio.wait_for(publish.ready(), self._settings.connect_timeout)
            self._amqp = cast(aiormq.Channel, await publish.get_underlay_channel())
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "waiting for the connection to come back") from exc
        return self._amqp

    def _properties(self, message: Message) -> Basic.Properties:
        """The AMQP properties of ``message``: its headers, and the envelope's fields where they can be read."""
        body = message.body
        if type(body) is not bytes and not isinstance(body, bytes | bytearray | memoryview):
            raise UsageError(f"a message body is bytes, not {type(body).__name__}")
        headers = message.headers
        table: dict[str, Any] = dict(headers) if headers else {}
        if message.key is not None:
            table[_KEY] = message.key
        get = headers.get
        message_id = get("ce_id") or get("message_id")
        if message_id is not None:  # the headers placement, or a message relayed with its AMQP metadata
            event_type = get("ce_type") or get("type")
            timestamp = get("ce_time") or get("timestamp")
            source = get("ce_source") or get("app_id")
            correlation_id = get("ce_correlationid") or get("correlation_id")
        else:
            found = _PAYLOAD_ENVELOPE.match(body)
            if found is None:
                event_type = timestamp = source = correlation_id = None
            else:
                message_id, event_type, timestamp = (v.decode() for v in found.group(1, 2, 3))
                source = found[4].decode() if found[4] else None
                correlation_id = found[5].decode() if found[5] else None
        return Basic.Properties(
            content_type=get("content-type"),
            headers=table,
            delivery_mode=self._delivery_mode,
            message_id=message_id,
            message_type=event_type,
            timestamp=_timestamp(timestamp),
            correlation_id=correlation_id,
            app_id=source,
        )

    async def _publish_copy(
        self,
        incoming: AbstractIncomingMessage,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        expiration: str | None,
    ) -> None:
        """Publish a copy of ``incoming`` (same body and properties, ``headers``), confirmed."""
        properties = Basic.Properties(
            content_type=incoming.content_type,
            content_encoding=incoming.content_encoding,
            headers=headers,
            delivery_mode=self._delivery_mode,
            priority=incoming.priority,
            correlation_id=incoming.correlation_id,
            reply_to=incoming.reply_to,
            expiration=expiration,
            message_id=incoming.message_id,
            timestamp=incoming.timestamp,
            message_type=incoming.type,
            app_id=incoming.app_id,
        )
        channel = self._amqp
        if channel is None or channel.is_closed:
            channel = await self._publish_amqp_channel()
        try:
            await channel.basic_publish(
                incoming.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                wait=False,
            )
        except _DRIVER_ERRORS as exc:
            where = f"the queue {routing_key!r}" if not exchange else f"the exchange {exchange!r}"
            raise self._error(exc, f"publishing a copy to {where}") from exc

    # -- subscribing --

    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        if self._publisher is None:
            raise BrokerError("the RabbitMQ broker is not started: use `async with broker:` or await broker.start()")
        if not channel or not group:
            raise UsageError("subscribe needs a channel (or pattern) and a group name")
        queue_name = self.queue_name(channel, group)
        if len(queue_name.encode()) > _MAX_QUEUE_NAME:
            raise UsageError(
                f"the queue name {queue_name!r} (exchange.group.channel) is longer than {_MAX_QUEUE_NAME} "
                "bytes: use a shorter group name"
            )
        binding, filtered = _binding(channel)
        settings = self._settings
        connection = await self._consumer_connection()
        amqp_channel = await self._open_channel(connection, f"opening a channel for group {group!r}", confirms=False)
        try:
            try:
                await amqp_channel.set_qos(prefetch_count=max(1, settings.prefetch or prefetch))
                # bounded: a quorum queue that has lost its leader never answers a declare
                queue = await asyncio.wait_for(
                    amqp_channel.declare_queue(queue_name, durable=settings.durable, arguments=self._queue_arguments()),
                    settings.confirm_timeout,
                )
                await asyncio.wait_for(queue.bind(settings.exchange, binding), settings.confirm_timeout)
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, f"declaring the queue {queue_name!r} of group {group!r}") from exc
            except TimeoutError:
                raise BrokerError(
                    f"declaring the queue {queue_name!r} of group {group!r}: no answer from RabbitMQ within "
                    f"{settings.confirm_timeout:g} s (a quorum queue without a leader?) ({redact_url(self._url)})"
                ) from None
            subscription = _RabbitSubscription(self, channel, group, queue_name, handler, amqp_channel, queue, filtered)
            try:
                subscription._consumer_tag = await queue.consume(subscription._on_message)
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, f"consuming the queue {queue_name!r}") from exc
        except BaseException:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await amqp_channel.close()
            raise
        self._subscriptions.add(subscription)
        return subscription

    def _queue_arguments(self) -> dict[str, Any]:
        settings = self._settings
        arguments: dict[str, Any] = {
            "x-queue-type": settings.queue_type,
            "x-dead-letter-exchange": self._dead_letter_exchange,
        }
        if settings.queue_type == "quorum":
            arguments["x-delivery-limit"] = settings.delivery_limit
        return arguments

    async def _consumer_connection(self) -> AbstractRobustConnection:
        # opened at the first subscribe: an app that only publishes needs one connection
        async with self._consumer_lock:
            if self._consumer is None:
                self._consumer = await self._connect("consume")
            return self._consumer

    async def _retry_queue(self, queue_name: str, delay: float) -> str:
        """The retry queue of ``queue_name`` for ``delay``, declared the first time it is needed."""
        _, label = _retry_level(delay)
        name = f"{queue_name}.retry-{label}"
        if name not in self._retry_queues:
            topology = self._topology_channel
            if topology is None:
                raise BrokerError("the RabbitMQ broker is closed: it cannot redeliver later")
            try:
                await topology.declare_queue(
                    name,
                    durable=self._settings.durable,
                    arguments={
                        "x-queue-type": "classic",
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue_name,
                    },
                )
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, f"declaring the retry queue {name!r}") from exc
            self._retry_queues.add(name)
        return name

    def _received(self, incoming: AbstractIncomingMessage) -> tuple[Message, int]:
        """The tidings message in ``incoming``, and its attempt."""
        table = incoming.headers
        headers: dict[str, str] = {}
        channel = incoming.routing_key or ""
        key: str | None = None
        previous = 0
        count: int | None = None
        for name, value in table.items():
            if name not in _INTERNAL:
                headers[name] = value if type(value) is str else _text(value)
            elif name == _KEY:
                key = _text(value)
            elif name == _CHANNEL:
                channel = _text(value)
            elif name == _ATTEMPT:
                previous = value if type(value) is int else _count(value)
            elif name == "x-delivery-count":
                count = value if type(value) is int else _count(value)
        if count is None:  # a classic queue: it says only whether this is a redelivery
            count = 1 if incoming.redelivered else 0
        # AMQP metadata of producers that do not write tidings' headers, under the names the decoder reads
        if incoming.content_type and "content-type" not in headers:
            headers["content-type"] = incoming.content_type
        if incoming.message_id and "message_id" not in headers:
            headers["message_id"] = incoming.message_id
        if incoming.type and "type" not in headers:
            headers["type"] = incoming.type
        if incoming.timestamp and "timestamp" not in headers:
            headers["timestamp"] = _rfc3339(incoming.timestamp)
        if incoming.correlation_id and "correlation_id" not in headers:
            headers["correlation_id"] = incoming.correlation_id
        if incoming.app_id and "app_id" not in headers:
            headers["app_id"] = incoming.app_id
        return Message(channel, incoming.body, headers, key), previous + count + 1

    # -- dead letters --

    async def dead_letters(self) -> list[DeadLetter]:
        """What is in the dead-letter queue, oldest first; it stays there (read, then handed back unacked).

        A message RabbitMQ dead-lettered itself (its delivery limit reached) has the queue's name as its
        group (RabbitMQ records the queue, not the group) and a reason that says so.
        """
        found: list[DeadLetter] = []
        await self._read_dead_letters("reading the dead letters", lambda incoming, dead: found.append(dead))
        return found

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Take the selected dead letters out of the dead-letter queue; with ``replay``, each is first published
        again (confirmed, as :meth:`publish` does) on its original channel, and only then acknowledged.

        The queue is read as :meth:`dead_letters` reads it: what is not selected is handed back, in its place,
        when the reading channel closes. A publish that fails raises :class:`BrokerError` and leaves its dead
        letter (and those not reached yet) in the queue; those settled before it stay settled.
        """
        done = 0

        async def settle(incoming: AbstractIncomingMessage, dead: DeadLetter) -> None:
            nonlocal done
            if not select(dead):
                return  # left unacked: back in its place when the channel closes
            if replay:
                await self.publish(dead.message)
            try:
                await incoming.channel.basic_ack(incoming.delivery_tag or 0)
            except _DRIVER_ERRORS as exc:
                # (replayed, it is now both published and still a dead letter: a second replay duplicates it)
                raise self._error(exc, f"removing dead letter {dead.id} from {self._dead_letter_exchange!r}") from exc
            done += 1
            if progress is not None:
                progress(done)

        doing = "replaying the dead letters" if replay else "purging the dead letters"
        await self._read_dead_letters(doing, settle)
        return done

    async def _read_dead_letters(
        self, doing: str, each: Callable[[AbstractIncomingMessage, DeadLetter], Awaitable[None] | None]
    ) -> None:
        """Get every message of the dead-letter queue (unacked) on a channel of its own, oldest first, and call
        ``each`` with it; closing the channel then hands back, in their places, those ``each`` did not ack."""
        connection = self._publisher
        if connection is None:
            raise BrokerError("the RabbitMQ broker is not started: use `async with broker:` or await broker.start()")
        channel = await self._open_channel(connection, doing, confirms=False)
        seen: dict[str, int] = {}
        try:
            try:
                queue = await channel.declare_queue(self._dead_letter_exchange, passive=True, robust=False)
            except _DRIVER_ERRORS as exc:
                raise self._error(
                    exc, f"{doing}: opening the dead-letter queue {self._dead_letter_exchange!r}"
                ) from exc
            while True:
                try:
                    incoming = await queue.get(no_ack=False, fail=False)
                except _DRIVER_ERRORS as exc:
                    raise self._error(
                        exc, f"{doing}: reading the dead-letter queue {self._dead_letter_exchange!r}"
                    ) from exc
                if incoming is None:
                    break
                result = each(incoming, self._dead_letter_record(incoming, seen))
                if result is not None:
                    await result
        finally:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await channel.close()  # what was read but not acked goes back, in its place

    def _dead_letter_record(self, incoming: AbstractIncomingMessage, seen: dict[str, int]) -> DeadLetter:
        """The dead letter in ``incoming``; ``seen`` counts the fallback ids handed out so far in this read."""
        table = incoming.headers
        received, _ = self._received(incoming)
        original, details = split_failure_details(received.headers)
        message = received._replace(headers=original)
        for name in (_GROUP, _ATTEMPTS):  # tidings' own headers, which are failure fields as well
            if name in table:
                details[name] = _text(table[name])
        if _DEAD_LETTER_ID in table:
            dead_id = _text(table[_DEAD_LETTER_ID])
        else:  # dead-lettered by RabbitMQ itself: named by its content (and its rank among identical ones)
            dead_id = _content_id(incoming)
            seen[dead_id] = rank = seen.get(dead_id, 0) + 1
            dead_id = dead_id if rank == 1 else f"{dead_id}-{rank}"
        if _REASON in table:
            reason, group = _text(table[_REASON]), _text(table.get(_GROUP, ""))
            attempts = _count(table.get(_ATTEMPTS, 0))
            if _QUEUE in table:  # (a dead letter tidings wrote; one from another tool may not say)
                details.setdefault(DL_ORIGIN, f"amqp:{_text(table[_QUEUE])}")
            return DeadLetter(message, group, reason, attempts, details, dead_id)
        # dead-lettered by RabbitMQ itself (delivery limit reached): from its x-death record
        deaths = table.get("x-death")
        death: Mapping[str, Any] = (
            deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        )
        queue = _text(death.get("queue", table.get("x-first-death-queue", "")))
        cause = _text(death.get("reason", table.get("x-first-death-reason", "unknown")))
        if _CHANNEL not in table:
            routing_keys = death.get("routing-keys")
            if isinstance(routing_keys, list) and routing_keys:
                message = message._replace(channel=_text(routing_keys[0]))
        previous = _count(table.get(_ATTEMPT, 0))
        if cause == "delivery_limit":
            reason = (
                f"RabbitMQ dead-lettered it: delivered {self._settings.delivery_limit + 1} times from queue "
                f"{queue!r} without being settled (its consumers died or lost their connection)"
            )
            attempts = previous + self._settings.delivery_limit + 1
        else:
            reason = f"RabbitMQ dead-lettered it from queue {queue!r}: {cause}"
            attempts = previous + 1
        details.update({DL_CHANNEL: message.channel, DL_ATTEMPTS: str(attempts), DL_ORIGIN: f"amqp:{queue}"})
        died_at = death.get("time")
        if isinstance(died_at, datetime):
            details[DL_LAST_FAILURE] = _rfc3339(died_at)
        return DeadLetter(message, queue, reason, attempts, details, dead_id)

    # -- the edge with aio-pika --

    async def _connect(self, role: str) -> AbstractRobustConnection:
        settings = self._settings
        name = settings.connection_name or f"tidings {settings.exchange} {role} (pid {os.getpid()})"
        try:
            connection = await asyncio.wait_for(
                aio_pika.connect_robust(
                    settings.connect_url,
                    timeout=settings.connect_timeout,
                    client_properties={"connection_name": name},
                    connection_class=_BackoffConnection,
                    reconnect_interval=settings.reconnect_delay,
                ),
                settings.connect_timeout,
            )
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "connecting") from exc
        connection._longest_delay = settings.reconnect_max_delay
        return connection

    async def _open_channel(
        self, connection: AbstractRobustConnection, doing: str, *, confirms: bool
    ) -> AbstractRobustChannel:
        try:
            # a connection being reopened has no transport to open a channel on yet
            await asyncio.wait_for(connection.ready(), self._settings.connect_timeout)
            channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
            await channel.initialize(timeout=self._settings.connect_timeout)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, doing) from exc
        return channel

    def _error(self, exc: BaseException, doing: str) -> BrokerError:
        """The one place where driver errors become tidings errors: what failed, and what to do about it."""
        settings = self._settings
        where = f"RabbitMQ at {settings.host}:{settings.port}"
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, aiormq.exceptions.PublishError) and not doing.startswith("publishing on "):
            text = f"{doing}: {where} returned it: no such queue (was it deleted while in use?)"
        elif isinstance(exc, aiormq.exceptions.PublishError):
            channel = doing.removeprefix("publishing on ")
            text = (
                f"{where} returned the message published on {channel}: no queue is bound for it on the exchange "
                f"{settings.exchange!r}. Start a subscriber for it first (subscribe declares and binds its "
                "group's queue, which then keeps every message), declare and bind a queue yourself, or use "
                f"unroutable=keep to keep such messages in the queue {self._unrouted_queue!r}"
            )
        elif isinstance(exc, aiormq.exceptions.DeliveryError):
            text = f"{doing}: {where} did not accept the message (negative confirm: {detail}); publish it again"
        elif isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
            text = (
                f"{doing}: {where} refused the login of user {settings.user!r} ({detail}): "
                "check the user name and password in the URL"
            )
        elif isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
            text = (
                f"{doing}: {where} refused access ({detail}): give user {settings.user!r} permissions on "
                f"virtual host {settings.vhost!r}"
            )
        elif isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
            text = (
                f"{doing}: {where} refused it ({detail}): an exchange or queue of that name exists with other "
                "settings (queue_type, delivery_limit, durable); delete it or use the settings it was declared with"
            )
        elif isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            text = f"{doing}: {where} does not have it ({detail}); was it deleted while in use?"
        elif isinstance(exc, aiormq.exceptions.ProtocolSyntaxError) and "Connection.Close" in detail:
            text = (
                f"{doing}: {where} refused to open virtual host {settings.vhost!r}: does it exist, and may user "
                f"{settings.user!r} use it? (check the URL's path)"
            )
        elif isinstance(exc, aiormq.exceptions.ConnectionClosed) and "CONNECTION_FORCED" in detail:
            text = (
                f"{doing}: {where} closed the connection ({detail}); it is being reopened: try again (a publish "
                "that was waiting for its confirm may have been taken: publishing it again may duplicate it)"
            )
        elif isinstance(exc, TimeoutError):
            text = (
                f"{doing}: no answer from {where} within {settings.connect_timeout:g} s: is RabbitMQ running at "
                f"{settings.host}:{settings.port}? check the URL"
            )
        elif isinstance(exc, ConnectionError | OSError | aiormq.exceptions.ChannelInvalidStateError):
            text = (
                f"{doing}: cannot reach {where} ({detail}): is RabbitMQ running at {settings.host}:{settings.port}? "
                f"check the URL ({self.url})"
            )
        else:
            text = f"{doing}: {where} failed: {detail}"
        text = redact_url(text)
        if settings.password:
            text = text.replace(settings.password, "***")
        return BrokerError(text)


__all__ = ["RabbitBroker", "RabbitDelivery"]
