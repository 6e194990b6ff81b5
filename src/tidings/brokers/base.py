"""The Broker port: the one small interface every transport implements, speaking only tidings' types.

A broker moves :class:`Message` values (bytes and string headers) on named channels. Consumers
subscribe with a *group*: every group gets every message once, members of one group share the work
(Kafka consumer groups, RabbitMQ queues bound to an exchange, NATS durable consumers...).

A handler receives a :class:`Delivery` and settles it exactly once::

    async def handle(delivery: Delivery) -> None:
        try:
            process(delivery.message)
        except Exception:
            await delivery.nack(delay=1.0)   # redeliver later
            return
        await delivery.ack()                 # done: never delivered to this group again

    async with broker:
        await broker.subscribe("user.created", "email-service", handle)
        await broker.publish(Message("user.created", b'{"event_id": ...}'))

Delivery is *at least once*: a message whose delivery is not acknowledged (the process died, the
handler nacked) is delivered again. What a broker cannot do natively it says in :attr:`Broker.capabilities`,
and the application layer fills in.
"""

from __future__ import annotations

import abc
import fnmatch
import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import orjson

from tidings.errors import TidingsError, UsageError
from tidings.lifecycle import Service
from tidings.redact import redact_url

if TYPE_CHECKING:
    from tidings.asyncapi.document import Document


class BrokerError(TidingsError):
    """The broker could not do what was asked (connection lost, publish not confirmed...)."""


class Message(NamedTuple):
    """One message as a broker carries it."""

    channel: str
    body: bytes
    headers: Mapping[str, str] = {}
    #: ordering key: messages with the same key are delivered in publish order
    key: str | None = None


class Delivery(abc.ABC):
    """A message handed to a subscriber, to be settled once: ack, nack or dead_letter."""

    message: Message
    #: 1 on first delivery, 2 on the first redelivery...
    attempt: int
    _settled: bool

    def _settle(self) -> bool:
        """Mark the delivery settled; False if it already was (a delivery is settled once, by its first call)."""
        if self._settled:
            return False
        self._settled = True
        return True

    @abc.abstractmethod
    async def ack(self) -> None:
        """Done: the group will not see this message again."""

    @abc.abstractmethod
    async def nack(self, *, delay: float = 0.0) -> None:
        """Not done: deliver it again, after ``delay`` seconds."""

    @abc.abstractmethod
    async def dead_letter(self, reason: str, details: Mapping[str, str] | None = None) -> None:
        """Give up on it: keep it, with ``reason``, in the dead-letter store, and do not deliver it again.

        ``details`` are the failure's ``x-tidings-*`` fields (see :data:`FAILURE_FIELDS`), kept with it; the
        broker adds where the message came from (:data:`DL_ORIGIN`).
        """


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(abc.ABC):
    channel: str
    group: str

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop taking new deliveries; those being handled may still settle."""


#: Headers of a dead letter, the same on every broker: what failed, where, when and how often
DL_CHANNEL = "x-tidings-original-channel"
DL_GROUP = "x-tidings-group"
DL_ERROR_TYPE = "x-tidings-error-type"  # ``ValueError``, ``mymodule.PaymentDeclined``; ``ContractError``...
DL_ERROR = "x-tidings-error-message"
DL_TRACEBACK = "x-tidings-traceback-digest"  # the same failure in the same code gives the same digest
DL_ATTEMPTS = "x-tidings-attempts"
DL_FIRST_FAILURE = "x-tidings-first-failure"  # RFC 3339
DL_LAST_FAILURE = "x-tidings-last-failure"
DL_ORIGIN = "x-tidings-origin"  # ``topic/partition@offset``, the queue, the log position
FAILURE_FIELDS = (
    DL_CHANNEL,
    DL_GROUP,
    DL_ERROR_TYPE,
    DL_ERROR,
    DL_TRACEBACK,
    DL_ATTEMPTS,
    DL_FIRST_FAILURE,
    DL_LAST_FAILURE,
    DL_ORIGIN,
)


class DeadLetter(NamedTuple):
    """A message given up on, as the dead-letter store keeps it."""

    message: Message
    group: str
    reason: str
    attempts: int
    #: the failure's ``x-tidings-*`` fields (:data:`FAILURE_FIELDS`); ``message.headers`` are the original's
    details: Mapping[str, str] = {}
    #: what names it in the store, for ``tidings dlq show|replay|purge --id``
    id: str = ""

    @property
    def error_type(self) -> str:
        return self.details.get(DL_ERROR_TYPE, "")

    @property
    def event_type(self) -> str:
        """The event's type, from its CloudEvents header or its JSON body ("" if neither says)."""
        found = self.message.headers.get("ce_type") or self.message.headers.get("type")
        if found:
            return found
        try:
            body = orjson.loads(self.message.body)
        except orjson.JSONDecodeError:
            return ""
        kind = (body.get("type") or body.get("event_type")) if isinstance(body, dict) else None
        return kind if isinstance(kind, str) else ""


def split_failure_details(headers: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A stored dead letter's headers, split into (the original's headers, the failure's details)."""
    original: dict[str, str] = {}
    details: dict[str, str] = {}
    for name, value in headers.items():
        (details if name in _FAILURE_SET else original)[name] = value
    return original, details


_FAILURE_SET = frozenset(FAILURE_FIELDS)


class DeadLetterSelection(NamedTuple):
    """Which dead letters an operation applies to: every given filter must match (none given: all)."""

    ids: frozenset[str] = frozenset()
    #: the full name (``mymodule.PaymentDeclined``) or the class name alone (``PaymentDeclined``)
    error_type: str | None = None
    event_type: str | None = None
    group: str | None = None

    def matches(self, dead: DeadLetter) -> bool:
        if self.ids and dead.id not in self.ids:
            return False
        if self.group is not None and dead.group != self.group:
            return False
        if self.error_type is not None and self.error_type not in (dead.error_type, dead.error_type.rpartition(".")[2]):
            return False
        return self.event_type is None or dead.event_type == self.event_type


#: what a broker may promise; the app layer fills in what is missing
ORDERING = "ordering"  # per key
DELAYED_REDELIVERY = "delayed-redelivery"
DEAD_LETTER = "dead-letter"
DURABLE = "durable"
PATTERNS = "patterns"


class Broker(Service):
    """A transport. Implementations live one per module in :mod:`tidings.brokers`."""

    #: the URL scheme(s) this broker answers to
    schemes: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The broker's URL with any password removed (safe to log and to put in documents)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every subscription and disconnect; idempotent."""

    @abc.abstractmethod
    async def publish(self, message: Message) -> None:
        """Hand ``message`` to the broker; returns once the broker has it (durably, where it is durable)."""

    async def publish_many(self, messages: Iterable[Message]) -> None:
        """Publish a batch, in order; brokers that can batch (one transaction, one flush) override this."""
        for message in messages:
            await self.publish(message)

    @abc.abstractmethod
    async def subscribe(self, channel: str, group: str, handler: Handler, *, prefetch: int = 16) -> Subscription:
        """Deliver the messages of ``channel`` (a name, or a pattern like ``user.*``) to ``handler``.

        At most ``prefetch`` deliveries of this subscription are in flight at once.
        """

    async def dead_letters(self) -> list[DeadLetter]:
        """What has been dead-lettered, oldest first (where the broker keeps it)."""
        return []

    async def settle_dead_letters(
        self,
        select: Callable[[DeadLetter], bool],
        *,
        replay: bool,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Take the selected dead letters out of the store; with ``replay``, first publish each (its original
        headers and body, confirmed) to its original channel. Returns how many; ``progress`` is called
        with the running count. A replayed message goes to every group of its channel again."""
        raise BrokerError(f"{type(self).__name__} keeps no dead letters that could be replayed or purged")

    async def declare(self, document: Document) -> None:
        """Create what an AsyncAPI document's bindings ask of this broker (Kafka: topics with their partitions
        and retention); the app calls it at start when it is bound to a document. Most brokers need nothing."""
        del document  # nothing to declare: the broker needs no set-up from the document


def channel_matcher(pattern: str) -> Callable[[str], bool]:
    """``user.*`` matches one segment (``user.created``), ``user.#`` / ``user.>`` any number of them.

    A channel parameter segment, as AsyncAPI writes it (``user.{userId}.renamed``), matches one segment too.
    """
    if not any(c in pattern for c in "*#>{"):
        return pattern.__eq__
    parts = []
    for segment in pattern.split("."):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(r"[^.]+")
        elif segment in ("#", ">"):
            parts.append(r".*")
        else:
            parts.append(fnmatch.translate(segment).removesuffix(r"\Z").replace(".*", "[^.]*"))
    regex = re.compile(r"\.".join(parts).replace(r"\..*", r"(\..*)?") + r"\Z")
    return lambda channel: regex.match(channel) is not None


#: URL scheme -> (module, class, the extra that installs its driver; "" for none)
_BROKERS = {
    "memory": ("tidings.brokers.memory", "MemoryBroker", ""),
    "sqlite": ("tidings.brokers.sqlite", "SqliteBroker", ""),
    "amqp": ("tidings.brokers.rabbitmq", "RabbitBroker", "rabbitmq"),
    "amqps": ("tidings.brokers.rabbitmq", "RabbitBroker", "rabbitmq"),
    "kafka": ("tidings.brokers.kafka", "KafkaBroker", "kafka"),
    "kafka+ssl": ("tidings.brokers.kafka", "KafkaBroker", "kafka"),
    "kafka+sasl": ("tidings.brokers.kafka", "KafkaBroker", "kafka"),
    "kafka+sasl_ssl": ("tidings.brokers.kafka", "KafkaBroker", "kafka"),
}


def broker_from_url(url: str) -> Broker:
    """The broker for ``url``: ``memory://``, ``sqlite:///path/to/events.db``, ``amqp://``, ``kafka://``.

    Each adapter is imported only when its scheme is asked for, so that a driver is needed only by who uses it.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    found = _BROKERS.get(scheme)
    if found is None:
        raise UsageError(
            f"no broker for {redact_url(url)!r}: use memory://, sqlite:///path/to/events.db, "
            "amqp://user:pass@host:5672/vhost or kafka://host:9092"
        )
    module_name, class_name, extra = found
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not extra or (exc.name or "").startswith("tidings"):
            raise
        raise UsageError(
            f"{scheme}:// needs the {extra} driver ({exc.name}), which is not installed: pip install 'tidings[{extra}]'"
        ) from None
    broker: Broker = getattr(module, class_name)(url)
    return broker


__all__ = [
    "DEAD_LETTER",
    "DELAYED_REDELIVERY",
    "DURABLE",
    "ORDERING",
    "PATTERNS",
    "Broker",
    "BrokerError",
    "DeadLetter",
    "Delivery",
    "Handler",
    "Message",
    "Subscription",
    "broker_from_url",
    "channel_matcher",
]
