"""``tidings demo``: the guide's User Service, running for real on the embedded broker (or any broker URL).

A user service publishes ``user.created``, ``user.updated`` and ``user.deleted`` (the guide's payloads, the
envelope filled in); an email service sends a (logged) welcome email on ``user.created``; a log service
records every ``user.*`` event. The service's AsyncAPI document is generated from the code, validated, and
bound as the contract, so one deliberately broken message is dead-lettered with its reason instead of
reaching a handler.

On a broker that outlives the demo (Kafka, RabbitMQ), earlier runs' events may still be there: each run counts
only the events it published itself (by a run id in their headers) and the dead letters it caused (by a run
id in the body).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tidings.app.application import App, EventContext
from tidings.brokers.base import DeadLetter, Message
from tidings.events.envelope import uuid7
from tidings.events.event import Event

log = logging.getLogger("tidings.demo")


class UserCreated(Event, type="user.created", version="1.0"):
    """A user signed up."""

    user_id: int
    email: str
    name: str


class UserUpdated(Event, type="user.updated", version="1.0"):
    """A user changed their profile: ``changes`` holds the new values."""

    user_id: int
    changes: dict[str, Any]


class UserDeleted(Event, type="user.deleted", version="1.0"):
    """A user closed their account."""

    user_id: int


USERS = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
]


def build_app(broker: str, run_id: str | None = None) -> tuple[App, Counter[str], list[str]]:
    """The three services of the guide in one app; returns it with its handled-count and outbox of emails.

    With ``run_id``, only events published with that ``demo-run`` header are counted (this run's: a header
    rather than the ids publish returns, since a consumer may see an event before its publish returns).
    """
    app = App(broker, name="user-service")
    app.publisher(UserCreated, UserUpdated, UserDeleted)
    handled: Counter[str] = Counter()
    emails: list[str] = []

    def counted(ctx: EventContext) -> bool:
        return run_id is None or ctx.headers.get("demo-run") == run_id

    @app.subscriber("user.created", group="email-service")
    async def send_welcome_email(event: UserCreated, ctx: EventContext) -> None:
        if not counted(ctx):
            return
        emails.append(f"To: {event.email} | Subject: Welcome! | Hello {event.name}")
        log.info("welcome email sent to %s", event.email)
        handled["email-service"] += 1

    @app.subscriber("user.*", group="log-service")
    async def log_event(event: dict[str, Any], ctx: EventContext) -> None:
        if not counted(ctx):
            return
        log.info("%s %s", event.get("event_type"), event.get("event_id"))
        handled["log-service"] += 1

    return app, handled, emails


async def run_demo(broker: str | None = None, *, folder: str | None = None) -> dict[str, Any]:
    """Run the scenario and return what happened (the CLI prints it)."""
    from tidings.app.contract import Contract
    from tidings.asyncapi import check_file
    from tidings.asyncapi.export import dump, render

    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
        work = Path(folder or tmp)
        broker = broker or f"sqlite:///{work / 'events.db'}"
        run_id = uuid7()
        app, handled, emails = build_app(broker, run_id)
        ours = {"demo-run": run_id}
        document = work / "user-service.asyncapi.yaml"
        document.write_text(dump(render(app.describe(), "3.0"), "yaml"), encoding="utf-8")
        checked = check_file(document)
        if not checked.valid or checked.document is None:
            raise RuntimeError(f"the generated document is invalid: {checked.diagnostics[:3]}")
        app.contract = Contract(checked.document)

        started = time.perf_counter()
        published = 0
        async with app:
            for i, (name, email) in enumerate(USERS, start=1):
                # the key: the user id, so that one user's events stay in order on brokers that partition
                updated = UserUpdated(user_id=i, changes={"name": name.split()[0]})
                for event in (UserCreated(user_id=i, email=email, name=name), updated):
                    await app.publish(event, key=str(i), headers=ours)
                    published += 1
            await app.publish(UserDeleted(user_id=len(USERS)), key=str(len(USERS)), headers=ours)
            published += 1
            # a message from a misbehaving producer, bypassing the contract: it must be dead-lettered
            broken = {"event_id": "not-a-uuid", "event_type": "user.created", "user_id": "seven", "demo_run": run_id}
            await app.broker.publish(Message("user.created", orjson.dumps(broken)))

            async def ours_dead() -> list[DeadLetter]:
                return [d for d in await app.broker.dead_letters() if run_id.encode() in d.message.body]

            expected = {"email-service": len(USERS), "log-service": published}
            deadline = time.monotonic() + 60  # a Kafka consumer group takes a few seconds to form
            dead: list[DeadLetter] = []
            while time.monotonic() < deadline:
                # the dead letters are read only once the handlers are done: on Kafka each read is a scan of
                # the dead-letter topic
                if all(handled[k] >= v for k, v in expected.items()):
                    dead = await ours_dead()
                    if len(dead) >= 2:
                        break
                await asyncio.sleep(0.05)
            else:
                dead = await ours_dead()
        elapsed = time.perf_counter() - started
        return {
            "broker": app.broker.url,
            "document": os.fspath(document) if folder else document.name,
            "document_valid": checked.valid,
            "published": published,
            "handled": dict(handled),
            "emails": emails,
            "dead_letters": [(d.group, d.reason) for d in dead],
            "seconds": elapsed,
        }


__all__ = ["UserCreated", "UserDeleted", "UserUpdated", "build_app", "run_demo"]
