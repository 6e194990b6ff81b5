"""The envelope every published event carries: the fields the guide asks of every event, filled for you.

========================  ===================================================================
``event_id``              UUID v7 (RFC 9562): unique and time-ordered, so ids sort by creation
``event_type``            ``user.created``
``timestamp``             RFC 3339, UTC, e.g. ``2025-01-15T10:30:00.123456Z``
``version``               the event's schema version, ``1.0``
``source``                who published it (the app's name)
``correlation_id``        the conversation it belongs to: inherited from the event being handled
``causation_id``          the event that caused this one (the id of the event being handled)
``content_type``          ``application/json``
========================  ===================================================================
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

ENVELOPE_FIELDS = (
    "event_id",
    "event_type",
    "timestamp",
    "version",
    "source",
    "correlation_id",
    "causation_id",
    "content_type",
)
JSON = "application/json"


class Envelope(NamedTuple):
    event_id: str
    event_type: str
    timestamp: str
    version: str
    source: str = ""
    correlation_id: str = ""
    causation_id: str = ""
    content_type: str = JSON

    def to_dict(self) -> dict[str, str]:
        """The set fields, in envelope order (an empty one is left out)."""
        if all(self):
            return dict(zip(ENVELOPE_FIELDS, self, strict=True))
        return {name: value for name, value in zip(ENVELOPE_FIELDS, self, strict=True) if value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        return cls(**{k: str(data[k]) for k in ENVELOPE_FIELDS if data.get(k) is not None})


_lock = threading.Lock()
_last = [0, 0]  # last millisecond, counter within it
# Randomness drawn in blocks: one os.urandom call per id cost more than the rest of the id together
# (and releases the GIL each time, which hurts next to a broker's writer thread).
_pool = bytearray()
_POOL_BLOCK = 8 * 1024
# the random tails of ids, as hex text drawn from one block at a time: slicing text is cheaper than
# formatting a 128-bit integer per id
_tails = ""
_next_tail = 0  # where the next tail starts in _tails
_TAIL = 16  # hex digits: the variant's nibble, then the 60 random bits that fill the id


def _random8() -> int:
    global _pool
    if len(_pool) < 8:
        _pool = bytearray(os.urandom(_POOL_BLOCK))
    value = int.from_bytes(_pool[-8:], "big")
    del _pool[-8:]
    return value


def _forget_after_fork() -> None:
    # a forked child must not hand out the parent's remaining random bytes: both would mint the same ids
    global _pool, _tails, _next_tail
    _pool = bytearray()
    _tails, _next_tail = "", 0
    _last[0] = _last[1] = 0


os.register_at_fork(after_in_child=_forget_after_fork)

#: the variant nibble (binary 10xx, RFC 9562 §4.1) for any hex digit: its low two bits kept
_VARIANT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


def uuid7() -> str:
    """A UUID v7 string: 48 bits of Unix milliseconds, then a counter, then randomness (RFC 9562 §5.7).

    Ids made by one process are strictly increasing, even within one millisecond (the 12-bit counter,
    "method 1" of RFC 9562 §6.2); across processes they are ordered to the millisecond.
    """
    global _tails, _next_tail
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms = _last[0]
            _last[1] += 1
            if _last[1] > 0xFFF:  # counter spent: borrow the next millisecond
                ms += 1
                _last[1] = 0
        else:
            _last[1] = _random8() & 0x7FF  # leave room to count up
        _last[0] = ms
        counter = _last[1]
        at = _next_tail
        if at + _TAIL > len(_tails):
            _tails, at = os.urandom(_POOL_BLOCK).hex(), 0
        _next_tail = at + _TAIL
        tail = _tails[at : at + _TAIL]
    t = f"{ms & 0xFFFFFFFFFFFF:012x}"
    return f"{t[:8]}-{t[8:]}-7{counter:03x}-{_VARIANT[tail[0]]}{tail[1:4]}-{tail[4:]}"


def uuid7_many(count: int) -> list[str]:
    """``count`` UUID v7 strings, in increasing order: :func:`uuid7` for a batch, one lock for all."""
    global _tails, _next_tail
    variant = _VARIANT
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms, counter = _last[0], _last[1] + 1
        else:
            counter = _random8() & 0x7FF
        need = count * _TAIL
        at = _next_tail
        if at + need > len(_tails):
            _tails, at = os.urandom(max(_POOL_BLOCK, need // 2)).hex(), 0
        _next_tail = at + need
        tails = _tails[at : at + need]
        out = []
        t = f"{ms & 0xFFFFFFFFFFFF:012x}"
        prefix = f"{t[:8]}-{t[8:]}-7"
        for i in range(0, need, _TAIL):
            if counter > 0xFFF:  # counter spent: borrow the next millisecond
                ms, counter = ms + 1, 0
                t = f"{ms & 0xFFFFFFFFFFFF:012x}"
                prefix = f"{t[:8]}-{t[8:]}-7"
            tail = tails[i : i + _TAIL]
            out.append(f"{prefix}{counter:03x}-{variant[tail[0]]}{tail[1:4]}-{tail[4:]}")
            counter += 1
        _last[0], _last[1] = ms, counter - 1
    return out


_second = [-1, ""]  # the last whole second formatted, and its text


def utc_now() -> str:
    """Now, as RFC 3339 in UTC with microseconds and a ``Z``."""
    now = time.time_ns() // 1000
    seconds, micros = divmod(now, 1_000_000)
    if seconds != _second[0]:  # formatting the date part once a second, not once an event
        _second[1] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = seconds
    return f"{_second[1]}.{micros:06d}Z"


def new_envelope(
    event_type: str,
    version: str,
    *,
    source: str = "",
    correlation_id: str = "",
    causation_id: str = "",
    content_type: str = JSON,
) -> Envelope:
    """A fresh envelope: new id and timestamp; a new conversation unless ``correlation_id`` is given."""
    event_id = uuid7()
    return Envelope(
        event_id, event_type, utc_now(), version, source, correlation_id or event_id, causation_id, content_type
    )


__all__ = ["ENVELOPE_FIELDS", "JSON", "Envelope", "new_envelope", "utc_now", "uuid7", "uuid7_many"]
