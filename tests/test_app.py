"""The App on memory://: typed handlers, envelopes, follow-ups, the contract both ways, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import orjson
import pytest

from tidings.app import App, CallNext, ContractError, EventContext, Incoming
from tidings.brokers.base import Message
from tidings.events.event import Event
from tidings.testing.harness import TestApp

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "user-service.asyncapi.yaml"


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


class WelcomeSent(Event, type="email.welcome.sent"):
    user_id: int


def make_app(**kwargs: object) -> App:
    return App("memory://", name="user-service", asyncapi=SEED, **kwargs)  # type: ignore[arg-type]


async def test_typed_handler_gets_the_event_and_its_envelope() -> None:
    app = make_app()
    got: list[tuple[UserCreated, EventContext]] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append((event, ctx))

    async with TestApp(app) as t:
        sent = await t.publish(UserCreated(user_id=7, email="jo@example.com", name="Jo"))
        await t.settle()
    [(event, ctx)] = got
    assert event == UserCreated(user_id=7, email="jo@example.com", name="Jo")
    assert ctx.envelope == sent
    assert uuid.UUID(sent.event_id).version == 7
    assert sent.event_type == "user.created"
    assert sent.version == "1.0"
    assert sent.source == "user-service"
    assert sent.timestamp.endswith("Z")
    assert ctx.group == "email-service"
    assert ctx.attempt == 1


async def test_follow_up_events_carry_causation_and_correlation() -> None:
    app = App("memory://", name="user-service")  # email.welcome.sent is not in the guide's document

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None:
        await app.publish(WelcomeSent(user_id=event.user_id))
        await app.publish_many([WelcomeSent(user_id=-event.user_id)])

    async with TestApp(app) as t:
        first = await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await t.settle()
        follow_ups = t.published_events("email.welcome.sent")
    assert [f.data["user_id"] for f in follow_ups] == [1, -1]
    for follow_up in follow_ups:  # one published alone, one in a batch
        assert follow_up.envelope.causation_id == first.event_id
        assert follow_up.envelope.correlation_id == first.correlation_id == first.event_id


async def test_a_channel_the_document_does_not_have_is_refused_both_ways() -> None:
    app = make_app()
    handled: list[object] = []

    @app.subscriber("email.#", group="log")
    async def log(event: dict) -> None:  # type: ignore[type-arg]
        handled.append(event)

    async with TestApp(app) as t:
        with pytest.raises(ContractError, match="not in the bound AsyncAPI document"):
            await t.publish(WelcomeSent(user_id=1))
        assert t.broker.published == []
        # and a producer that bypasses the contract: dead-lettered, not handled
        await t.broker.publish(Message("email.welcome.sent", b'{"event_id": "x", "event_type": "email.welcome.sent"}'))
        await t.settle()
        [dead] = await t.dead_letters()
    assert handled == []
    assert "not in the bound AsyncAPI document" in dead.reason


async def test_an_invalid_outgoing_event_raises_before_anything_is_sent() -> None:
    app = make_app()
    async with TestApp(app) as t:
        with pytest.raises(ContractError) as caught:
            await t.publish(UserCreated(user_id=1, email="not-an-email", name="A"))
        assert t.broker.published == []
    assert caught.value.channel == "user.created"
    assert caught.value.field == "email"
    assert caught.value.rule == "format"


async def test_publish_many_checks_every_event_first_and_sends_none_if_one_is_invalid() -> None:
    app = make_app()
    handled: list[int] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None:
        handled.append(event.user_id)

    good = [UserCreated(user_id=i, email=f"u{i}@example.com", name="U") for i in range(5)]
    async with TestApp(app) as t:
        with pytest.raises(ContractError) as caught:
            await app.publish_many([*good, UserCreated(user_id=9, email="nope", name="U")])
        assert t.broker.published == []
        envelopes = await app.publish_many(good, key=lambda e: str(e.user_id))  # type: ignore[attr-defined]
        await t.settle()
        sent = t.broker.published
    assert caught.value.field == "email"
    assert handled == [0, 1, 2, 3, 4]
    assert [m.key for m in sent] == ["0", "1", "2", "3", "4"]
    assert len({e.event_id for e in envelopes}) == 5
    assert [t.event_id for t in sorted(envelopes)] == [e.event_id for e in envelopes]  # time-ordered ids


async def test_publish_many_sends_what_publish_sends_for_each_event() -> None:
    app = make_app()
    events = [UserCreated(user_id=i, email=f"u{i}@example.com", name="U") for i in range(3)]
    async with TestApp(app) as t:
        for event in events:
            await app.publish(event, key=str(event.user_id))
        one_by_one = list(t.broker.published)
        await app.publish_many(events, key=lambda e: str(e.user_id))  # type: ignore[attr-defined]
        batch = t.broker.published[len(one_by_one) :]

    def comparable(message: Message) -> tuple[object, ...]:
        body = orjson.loads(message.body)
        assert body.pop("event_id") == body.pop("correlation_id")  # a new conversation each
        body.pop("timestamp")
        return message.channel, body, dict(message.headers), message.key

    assert [comparable(m) for m in batch] == [comparable(m) for m in one_by_one]


async def test_publish_many_on_sqlite_delivers_the_whole_batch(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'events.db'}", name="user-service", asyncapi=SEED)
    handled: list[int] = []
    all_in = asyncio.Event()

    @app.subscriber("user.created", group="email-service", prefetch=64)
    async def send_welcome(event: UserCreated) -> None:
        handled.append(event.user_id)
        if len(handled) == 300:
            all_in.set()

    async with app:
        await app.publish_many([UserCreated(user_id=i, email=f"u{i}@example.com", name="U") for i in range(300)])
        await asyncio.wait_for(all_in.wait(), 30)
    assert sorted(handled) == list(range(300))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"event_id": "550e8400-e29b-41d4-a716-446655440000", "event_type": "user.created", '
            b'"timestamp": "2025-01-15T10:30:00Z", "user_id": 1, "name": "A"}',
            "email",
        ),
        (
            b'{"event_id": "not-a-uuid", "event_type": "user.created", "timestamp": "2025-01-15T10:30:00Z", '
            b'"user_id": 1, "email": "a@example.com", "name": "A"}',
            "uuid",
        ),
        (b"this is not json", "undecodable"),
    ],
    ids=["missing-field", "wrong-format", "not-json"],
)
async def test_an_invalid_incoming_message_is_dead_lettered_and_the_consumer_goes_on(body: bytes, reason: str) -> None:
    app = make_app()
    handled: list[int] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None:
        handled.append(event.user_id)

    async with TestApp(app) as t:
        await t.broker.publish(Message("user.created", body))
        await t.publish(UserCreated(user_id=2, email="b@example.com", name="B"))
        await t.settle()
        [dead] = await t.dead_letters()
    assert handled == [2]
    assert dead.message.body == body
    assert reason in dead.reason
    assert dead.group == "email-service"


async def test_a_foreign_message_is_handled_and_the_contract_still_decides() -> None:
    # what FastStream or a plain client sends: the event's fields only, no envelope
    foreign = b'{"user_id": 5, "email": "e@example.com", "name": "E"}'
    loose = App("memory://", name="user-service")
    got: list[tuple[UserCreated, EventContext]] = []

    @loose.subscriber("user.created", group="email-service")
    async def welcome(event: UserCreated, ctx: EventContext) -> None:
        got.append((event, ctx))

    async with TestApp(loose) as t:
        await t.broker.publish(Message("user.created", foreign, {"message_id": "fs-1"}))
        await t.settle()
    [(event, ctx)] = got
    assert event.user_id == 5
    assert (ctx.envelope.event_id, ctx.envelope.event_type) == ("fs-1", "user.created")

    strict = make_app()  # the guide's document requires event_id, event_type... in the payload

    @strict.subscriber("user.created", group="email-service")
    async def never(event: UserCreated) -> None:
        raise AssertionError("an event that breaks the contract reached the handler")

    async with TestApp(strict) as t:
        await t.broker.publish(Message("user.created", foreign))
        await t.settle()
        [dead] = await t.dead_letters()
    assert dead.reason.startswith("contract:")


async def test_sync_handlers_run_in_a_worker_thread() -> None:
    app = make_app()
    threads: list[int] = []

    @app.subscriber("user.created", group="audit")
    def audit(event: dict) -> None:  # type: ignore[type-arg]
        threads.append(threading.get_ident())

    async with TestApp(app) as t:
        await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await t.settle()
    assert threads
    assert threads[0] != threading.get_ident()


async def test_a_failing_handler_is_retried_then_dead_lettered() -> None:
    app = make_app(max_attempts=3)
    attempts: list[int] = []

    @app.subscriber("user.created", group="flaky")
    async def flaky(event: UserCreated, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("mail server down")

    async with TestApp(app) as t:
        await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await t.settle()
        [dead] = await t.dead_letters()
    assert attempts == [1, 2, 3]
    assert "mail server down" in dead.reason
    assert dead.attempts == 3


async def test_patterns_and_middleware_order() -> None:
    order: list[str] = []

    async def outer(incoming: Incoming, call_next: CallNext) -> None:
        order.append("outer-in")
        await call_next(incoming)
        order.append("outer-out")

    async def inner(incoming: Incoming, call_next: CallNext) -> None:
        order.append("inner")
        await call_next(incoming)

    app = make_app(middleware=[outer, inner])

    @app.subscriber("user.*", group="log")
    async def log(event: dict) -> None:  # type: ignore[type-arg]
        order.append(event["event_type"])

    async with TestApp(app) as t:
        await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await t.settle()
    assert order == ["outer-in", "inner", "user.created", "outer-out"]


async def test_shutdown_lets_in_flight_handlers_finish() -> None:
    app = make_app()
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    @app.subscriber("user.created", group="slow")
    async def slow(event: UserCreated) -> None:
        started.set()
        await release.wait()
        finished.append(event.user_id)

    t = TestApp(app)
    await t.__aenter__()
    await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(app.stop(timeout=5))
    await asyncio.sleep(0)  # let stop() close intake first
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [1]


def test_a_handler_must_take_the_event() -> None:
    app = make_app()
    with pytest.raises(Exception, match="must take"):

        @app.subscriber("user.created")
        async def nothing() -> None: ...


async def test_an_app_from_a_document_gets_typed_events_without_hand_written_models() -> None:
    app = App.from_asyncapi(SEED, name="email-service")
    created = app.event_class("user.created")
    got: list[object] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: created) -> None:  # type: ignore[valid-type]
        got.append(event)

    async with TestApp(app) as t:
        await t.publish({"user_id": 3, "email": "c@example.com", "name": "C"}, event_type="user.created")
        await t.settle()
    [event] = got
    assert isinstance(event, created)
    assert (event.user_id, event.email, event.name) == (3, "c@example.com", "C")  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="no message schema"):
        app.event_class("order.placed")


async def test_the_pytest_plugin_runs_an_app(tidings_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    names: list[str] = []

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None:
        names.append(event.name)

    t = await tidings_app(app)
    await t.publish(UserCreated(user_id=1, email="a@example.com", name="Ann"))
    await t.settle()
    assert names == ["Ann"]
    assert [h.subscriber for h in t.handled] == [send_welcome.__qualname__]
