"""Retry policies, sans I/O: what to do after a handler failed, decided without touching a broker or a clock.

>>> policy = RetryPolicy(max_attempts=4, base_delay=0.1, retry_on=(TimeoutError, ConnectionError))
>>> policy.decide(1, TimeoutError("slow"), random=0.5)
Retry(delay=0.075)
>>> policy.decide(4, TimeoutError("slow"))
GiveUp(reason='failed 4 times (the most allowed: 4): TimeoutError: slow')

``attempt`` is the delivery that just failed, counted from 1. The policy never allows more than
``max_attempts`` deliveries: the ``max_attempts``-th failure gives up, so a poison message is tried exactly
N times, never N + 1 and never forever. An error that is not retryable (not one of ``retry_on``, or one
of ``give_up_on``) gives up at once.

The delay grows exponentially (``base_delay * multiplier ** (attempt - 1)``, at most ``max_delay``) with
*jitter*: a share ``jitter`` of it is drawn at random ("equal jitter" at 0.5, "full jitter" at 1.0), so
consumers that failed together do not all come back at the same instant. The random draw is a parameter,
which is what makes the policy testable without patching anything.

Where the delay is spent is the broker's business, and none of them blocks its queue or partition while
it waits: RabbitMQ parks the message in a retry queue whose TTL dead-letters it back, Kafka keeps
consuming the partition while the message waits beside it, the embedded broker hides it behind a
visibility timeout.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import NamedTuple

from tidings.errors import UsageError, describe_error


class Retry(NamedTuple):
    """Deliver the message again after ``delay`` seconds."""

    delay: float


class GiveUp(NamedTuple):
    """Stop: dead-letter the message with ``reason``."""

    reason: str


Decision = Retry | GiveUp


class RetryPolicy:
    """How often and how soon a failed message is tried again (see the module docstring)."""

    __slots__ = ("base_delay", "give_up_on", "jitter", "max_attempts", "max_delay", "multiplier", "retry_on")

    def __init__(
        self,
        max_attempts: int = 5,
        *,
        base_delay: float = 0.05,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        give_up_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1 (the first delivery), not {max_attempts}")
        if base_delay < 0 or max_delay < 0 or multiplier < 1:
            raise UsageError("base_delay and max_delay must be >= 0 and multiplier >= 1")
        if not 0.0 <= jitter <= 1.0:
            raise UsageError(f"jitter is the random share of the delay, between 0 and 1, not {jitter}")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.jitter = jitter
        self.retry_on = retry_on
        self.give_up_on = give_up_on

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, base_delay={self.base_delay}, "
            f"max_delay={self.max_delay}, multiplier={self.multiplier}, jitter={self.jitter})"
        )

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, self.retry_on) and not isinstance(error, self.give_up_on)

    def delay(self, attempt: int, random: float) -> float:
        """The wait after failed delivery ``attempt``, for a uniform draw ``random`` in [0, 1)."""
        # the exponent is capped first: multiplier ** attempt overflows a float long before attempts run out
        exponent = min(attempt - 1, 64)
        ceiling = min(self.max_delay, self.base_delay * self.multiplier**exponent)
        return ceiling * (1.0 - self.jitter) + ceiling * self.jitter * random

    def decide(
        self, attempt: int, error: BaseException, *, random: float | Callable[[], float] = _random.random
    ) -> Decision:
        """After delivery ``attempt`` (1 = the first) failed with ``error``: retry, or give up and why."""
        if not self.retryable(error):
            return GiveUp(f"not retryable: {describe_error(error)}")
        if attempt >= self.max_attempts:
            return GiveUp(f"failed {attempt} times (the most allowed: {self.max_attempts}): {describe_error(error)}")
        draw = random() if callable(random) else random
        return Retry(round(self.delay(attempt, draw), 6))


__all__ = ["Decision", "GiveUp", "Retry", "RetryPolicy", "describe_error"]
