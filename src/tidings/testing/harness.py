"""Run an app in-process on ``memory://`` and assert on what it handled and published, with no sleeps.

>>> async def test_welcome_email_is_sent():
...     async with TestApp(app) as t:
...         await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
...         await t.settle()                      # every message handled, every follow-up too
...         assert t.handled_by("send_welcome")[0].event.user_id == 1
...         [sent] = t.published_events("email.welcome.sent")
...         assert sent.envelope.causation_id == t.published[0].envelope.event_id
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tidings.app.application import App, CallNext, Incoming
from tidings.brokers.base import DeadLetter
from tidings.brokers.memory import MemoryBroker
from tidings.errors import UsageError
from tidings.events.codec import decode
from tidings.events.envelope import Envelope
from tidings.events.event import Event


class Handled(NamedTuple):
    subscriber: str
    group: str
    channel: str
    event: Any
    envelope: Envelope


class Published(NamedTuple):
    channel: str
    envelope: Envelope
    data: dict[str, Any]
    headers: Mapping[str, str]


class TestApp:
    """A harness around an :class:`App` whose broker is a :class:`MemoryBroker`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, app: App) -> None:
        if not isinstance(app.broker, MemoryBroker):
            raise UsageError("TestApp needs an app on memory:// (App(broker='memory://', ...))")
        self.app = app
        self.broker: MemoryBroker = app.broker
        self.broker.record = True
        self.handled: list[Handled] = []
        if self._record not in app.middleware:
            app.middleware.append(self._record)

    async def _record(self, incoming: Incoming, call_next: CallNext) -> None:
        await call_next(incoming)
        self.handled.append(
            Handled(incoming.subscriber.name, incoming.group, incoming.channel, incoming.event, incoming.envelope)
        )

    async def __aenter__(self) -> TestApp:
        await self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.stop()

    async def publish(self, event: Event | Mapping[str, Any], **kwargs: Any) -> Envelope:
        return await self.app.publish(event, **kwargs)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every message (and every follow-up it caused) has been handled and settled."""
        await self.broker.join(timeout)

    @property
    def published(self) -> list[Published]:
        out = []
        for message in self.broker.published:
            envelope, data = decode(message.body, message.headers)
            out.append(Published(message.channel, envelope, data, message.headers))
        return out

    def published_events(self, event_type: str) -> list[Published]:
        return [p for p in self.published if p.envelope.event_type == event_type]

    def handled_by(self, subscriber: str) -> list[Handled]:
        """What the handler named ``subscriber`` (its function name or qualified name) handled."""
        return [h for h in self.handled if h.subscriber == subscriber or h.subscriber.endswith("." + subscriber)]

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.broker.dead_letters()


__all__ = ["Handled", "Published", "TestApp"]
