"""What a dead letter says about its failure: the ``x-tidings-*`` details, built the same way for every broker.

A dead letter carries the original channel, the consumer group, the error's type and message, a digest of
the traceback, how many deliveries were tried and when the first and the last failed (the broker adds
where the message came from). ``tidings dlq list`` groups by these, and ``replay --error-type`` selects by
them.

The digest names *where* it failed, not the message text: the same bug hit by a thousand events gives one
digest, so a dead-letter queue can be read as a handful of distinct failures. It hashes each frame's file
name, function and line (not the full paths, which differ between machines).

The first failure's time is remembered by the process that saw it (a bounded map; a retry that lands on
another process, or after a restart, reports the first failure that process saw).
"""

from __future__ import annotations

import hashlib
import traceback
from collections import OrderedDict
from pathlib import PurePath
from typing import TYPE_CHECKING

from tidings.brokers.base import (
    DL_ATTEMPTS,
    DL_CHANNEL,
    DL_ERROR,
    DL_ERROR_TYPE,
    DL_FIRST_FAILURE,
    DL_GROUP,
    DL_LAST_FAILURE,
    DL_TRACEBACK,
)
from tidings.events.envelope import utc_now

if TYPE_CHECKING:
    from tidings.brokers.base import Delivery

#: an error message is cut here: a header is no place for a megabyte of repr
MAX_ERROR_TEXT = 1_000


def error_type_name(error: BaseException) -> str:
    """``ValueError`` for built-ins, ``package.module.Name`` for the rest."""
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def traceback_digest(error: BaseException) -> str:
    """12 hex digits naming the failure's place in the code (empty if it was never raised)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    where = "|".join(f"{PurePath(f.filename).name}:{f.name}:{f.lineno}" for f in frames)
    return hashlib.blake2b(f"{error_type_name(error)}|{where}".encode(), digest_size=6).hexdigest()


class FailureLog:
    """What this process remembers of the messages being retried, by (group, event id), at most ``size`` of
    each: when they first failed, and how many of their deliveries went back unhandled because the
    idempotency store was down (those are not the handler's attempts: it never ran)."""

    def __init__(self, size: int = 10_000) -> None:
        self._first: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._store_nacks: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._size = size

    def failed(self, group: str, event_id: str) -> None:
        """A delivery failed and will be retried."""
        key = (group, event_id)
        if key not in self._first:
            self._first[key] = utc_now()
            if len(self._first) > self._size:
                self._first.popitem(last=False)

    def store_failed(self, group: str, event_id: str) -> None:
        """A delivery went back unhandled because the idempotency store failed."""
        key = (group, event_id)
        self._store_nacks[key] = self._store_nacks.pop(key, 0) + 1
        if len(self._store_nacks) > self._size:
            self._store_nacks.popitem(last=False)

    def attempts(self, group: str, event_id: str, delivery: Delivery) -> int:
        """The handler's attempts so far, this delivery included: the broker's count less the store's nacks."""
        if not self._store_nacks:  # the common case: nothing to take off
            return delivery.attempt
        return max(1, delivery.attempt - self._store_nacks.get((group, event_id), 0))

    def handled(self, group: str, event_id: str) -> None:
        """The message is settled: forget its store nacks."""
        if self._store_nacks:
            self._store_nacks.pop((group, event_id), None)

    def give_up(self, group: str, event_id: str, delivery: Delivery, error: BaseException) -> dict[str, str]:
        """The details of a dead letter (the message's failures are forgotten here)."""
        now = utc_now()
        first = self._first.pop((group, event_id), now) if event_id else now
        attempts = self.attempts(group, event_id, delivery)
        self.handled(group, event_id)
        text = " ".join(str(error).split())
        return {
            DL_CHANNEL: delivery.message.channel,
            DL_GROUP: group,
            DL_ERROR_TYPE: error_type_name(error),
            DL_ERROR: text[:MAX_ERROR_TEXT],
            DL_TRACEBACK: traceback_digest(error),
            DL_ATTEMPTS: str(attempts),
            DL_FIRST_FAILURE: first,
            DL_LAST_FAILURE: now,
        }


__all__ = ["MAX_ERROR_TEXT", "FailureLog", "error_type_name", "traceback_digest"]
