"""Events: typed event classes, the envelope every event carries, and the wire codec.

>>> from tidings.events import Event, decode, encode, new_envelope
>>> class UserCreated(Event, type="user.created", version="1.0"):
...     user_id: int
>>> envelope = new_envelope(UserCreated.event_type(), UserCreated.event_version(), source="user-service")
>>> body, headers = encode(envelope, UserCreated(user_id=1).model_dump())
>>> decode(body, headers)[0] == envelope
True

The names are loaded on first use: importing this package (or :mod:`tidings.events.codec`, which imports
it first) does not import pydantic; only :class:`Event` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.events.codec import CLOUDEVENTS_JSON, DEFAULT_SOURCE, DecodeError, Placement, decode, encode
    from tidings.events.envelope import ENVELOPE_FIELDS, JSON, Envelope, new_envelope, utc_now, uuid7, uuid7_many
    from tidings.events.event import Event

# public name -> the module that defines it
_WHERE = {
    "CLOUDEVENTS_JSON": "codec",
    "DEFAULT_SOURCE": "codec",
    "DecodeError": "codec",
    "Placement": "codec",
    "decode": "codec",
    "encode": "codec",
    "ENVELOPE_FIELDS": "envelope",
    "JSON": "envelope",
    "Envelope": "envelope",
    "new_envelope": "envelope",
    "utc_now": "envelope",
    "uuid7": "envelope",
    "uuid7_many": "envelope",
    "Event": "event",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "CLOUDEVENTS_JSON",
    "DEFAULT_SOURCE",
    "ENVELOPE_FIELDS",
    "JSON",
    "DecodeError",
    "Envelope",
    "Event",
    "Placement",
    "decode",
    "encode",
    "new_envelope",
    "utc_now",
    "uuid7",
    "uuid7_many",
]
