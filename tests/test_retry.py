"""Retry policies (sans I/O, no broker) and what the App does with them: exactly N attempts, then a dead
letter with the failure's details, on the embedded brokers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.app import App
from tidings.brokers.base import (
    DL_ATTEMPTS,
    DL_CHANNEL,
    DL_ERROR,
    DL_ERROR_TYPE,
    DL_FIRST_FAILURE,
    DL_GROUP,
    DL_LAST_FAILURE,
    DL_ORIGIN,
    DL_TRACEBACK,
    Message,
)
from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.reliability.failures import error_type_name, traceback_digest
from tidings.reliability.retry import GiveUp, Retry, RetryPolicy

SEED = Path(__file__).resolve().parent.parent / "examples" / "user-service.asyncapi.yaml"


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


class PaymentDeclinedError(Exception):
    pass


# --- the policy alone ---------------------------------------------------------------------------------------


def test_delays_grow_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(6, base_delay=0.1, multiplier=2, max_delay=0.5, jitter=0)
    delays = [policy.decide(attempt, ValueError("x"), random=0.9) for attempt in range(1, 6)]
    assert delays == [Retry(0.1), Retry(0.2), Retry(0.4), Retry(0.5), Retry(0.5)]


def test_jitter_draws_the_given_share_of_the_delay() -> None:
    policy = RetryPolicy(5, base_delay=1.0, multiplier=2, jitter=0.5)
    assert policy.decide(2, ValueError(), random=0.0) == Retry(1.0)  # half fixed...
    assert policy.decide(2, ValueError(), random=0.999999) == Retry(pytest.approx(2.0, abs=1e-5))  # ...half drawn
    full = RetryPolicy(5, base_delay=1.0, jitter=1.0)
    assert full.decide(1, ValueError(), random=0.0) == Retry(0.0)


def test_the_last_attempt_gives_up_with_a_reason() -> None:
    policy = RetryPolicy(3)
    assert isinstance(policy.decide(2, TimeoutError("slow")), Retry)
    assert policy.decide(3, TimeoutError("slow")) == GiveUp("failed 3 times (the most allowed: 3): TimeoutError: slow")


def test_only_retryable_errors_are_retried() -> None:
    policy = RetryPolicy(5, retry_on=(TimeoutError, ConnectionError), give_up_on=(ConnectionRefusedError,))
    assert isinstance(policy.decide(1, TimeoutError()), Retry)
    assert policy.decide(1, KeyError("email")) == GiveUp("not retryable: KeyError: 'email'")
    assert isinstance(policy.decide(1, ConnectionRefusedError()), GiveUp)


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": -1.0}, {"multiplier": 0.5}, {"jitter": 1.5}])
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    max_attempts=st.integers(1, 50),
    base=st.floats(0, 10),
    multiplier=st.floats(1, 10),
    cap=st.floats(0, 3600),
    jitter=st.floats(0, 1),
    draws=st.lists(st.floats(0, 1, exclude_max=True), min_size=60, max_size=60),
)
def test_a_failing_message_is_tried_exactly_max_attempts_times(
    max_attempts: int, base: float, multiplier: float, cap: float, jitter: float, draws: list[float]
) -> None:
    policy = RetryPolicy(max_attempts, base_delay=base, multiplier=multiplier, max_delay=cap, jitter=jitter)
    attempt = 1
    while isinstance(decision := policy.decide(attempt, RuntimeError("boom"), random=draws[attempt]), Retry):
        assert 0.0 <= decision.delay <= cap + 1e-6
        attempt += 1
    assert attempt == max_attempts  # gave up on the N-th failure: N deliveries, never N + 1


# --- failure details ------------------------------------------------------------------------------------------


def _raise(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_error_types_are_named_by_module_unless_built_in() -> None:
    assert error_type_name(ValueError()) == "ValueError"
    assert error_type_name(PaymentDeclinedError()) == f"{__name__}.PaymentDeclinedError"


def test_the_digest_names_the_place_not_the_message() -> None:
    def elsewhere() -> Exception:
        try:
            raise ValueError("user 1")
        except ValueError as caught:
            return caught

    one, two = _raise(ValueError("user 1")), _raise(ValueError("user 2"))
    assert traceback_digest(one) == traceback_digest(two) != traceback_digest(elsewhere())
    assert len(traceback_digest(one)) == 12
    assert traceback_digest(ValueError("never raised")) == ""


# --- in the App ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
async def test_a_poison_message_is_tried_exactly_n_times_then_dead_lettered_with_details(
    broker: str, tmp_path: Path
) -> None:
    url = "memory://" if broker == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    app = App(url, name="user-service", asyncapi=SEED)
    tries: dict[int, int] = {}
    done = asyncio.Event()

    @app.subscriber("user.created", group="billing", retry=RetryPolicy(3, base_delay=0.01, jitter=0))
    async def charge(event: UserCreated) -> None:
        tries[event.user_id] = tries.get(event.user_id, 0) + 1
        if event.user_id == 13:
            if tries[13] == 3:
                done.set()
            raise PaymentDeclinedError(f"card of user {event.user_id} declined")

    async with app:
        for user_id in (12, 13, 14):
            await app.publish(UserCreated(user_id=user_id, email=f"u{user_id}@example.com", name="U"))
        await asyncio.wait_for(done.wait(), 20)
        for _ in range(200):  # the dead letter is written just after the third failure
            dead = await app.broker.dead_letters()
            if dead:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # no fourth attempt comes
    assert tries == {12: 1, 13: 3, 14: 1}
    [letter] = dead
    assert letter.attempts == 3
    assert letter.reason == (
        "handler test_a_poison_message_is_tried_exactly_n_times_then_dead_lettered_with_details.<locals>.charge: "
        "failed 3 times (the most allowed: 3): PaymentDeclinedError: card of user 13 declined"
    )
    details = letter.details
    assert details[DL_CHANNEL] == "user.created"
    assert details[DL_GROUP] == "billing"
    assert details[DL_ERROR_TYPE] == f"{__name__}.PaymentDeclinedError"
    assert details[DL_ERROR] == "card of user 13 declined"
    assert len(details[DL_TRACEBACK]) == 12
    assert details[DL_ATTEMPTS] == "3"
    assert details[DL_FIRST_FAILURE] < details[DL_LAST_FAILURE]
    assert details[DL_ORIGIN].startswith(broker)
    assert letter.event_type == "user.created"


async def test_a_contract_violation_is_dead_lettered_at_once_without_retries() -> None:
    app = App("memory://", name="user-service", asyncapi=SEED)
    calls: list[object] = []

    @app.subscriber("user.created", group="billing")
    async def charge(event: UserCreated) -> None:
        calls.append(event)

    async with app:
        # a message from a producer that did not check: user_id must be an integer
        body = b'{"event_id": "x", "event_type": "user.created", "user_id": "one"}'
        await app.broker.publish(Message("user.created", body, {}))
        await app.broker.join()  # type: ignore[attr-defined]
    [letter] = await app.broker.dead_letters()
    assert calls == []
    assert letter.attempts == 1
    assert letter.error_type == "tidings.app.contract.ContractError"
    assert letter.reason.startswith("contract: ")
