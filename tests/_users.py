"""The user aggregate of the event-store tests, on the seed document's ``user.created``, and a subscriber that
collects what reaches the broker."""

from __future__ import annotations

import asyncio

from tidings.app import App, EventContext
from tidings.events.event import Event
from tidings.eventstore.aggregate import Aggregate, when


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


class User(Aggregate, prefix="user"):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email = ""

    @when(UserCreated)
    def _created(self, event: UserCreated) -> None:
        self.email = event.email


def new_user(i: int, cls: type[User] = User) -> User:
    """User ``i`` (a ``cls``), created: one event to save."""
    user = cls(str(i))
    user.record(UserCreated(user_id=i, email=f"u{i}@example.com", name="U"))
    return user


def collect_users(app: App, expected: int) -> tuple[list[tuple[str, int]], asyncio.Event]:
    """Subscribe the ``email-service`` group of ``app`` to ``user.created``: the (event id, user id) pairs it
    gets, in arrival order, and an event set once ``expected`` of them have arrived."""
    got: list[tuple[str, int]] = []
    done = asyncio.Event()

    @app.subscriber("user.created", group="email-service")
    async def welcome(event: UserCreated, context: EventContext) -> None:
        got.append((context.envelope.event_id, event.user_id))
        if len(got) == expected:
            done.set()

    return got, done
