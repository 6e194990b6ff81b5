"""Typed events: a pydantic model per event type, declaring its type name and version.

>>> class UserCreated(Event, type="user.created", version="1.0"):
...     user_id: int
...     email: str
...     name: str
>>> UserCreated.event_type(), UserCreated.event_version()
('user.created', '1.0')

The envelope (event id, timestamp, correlation...) is not part of the model: it is filled when the event
is published (:mod:`tidings.events.envelope`) and travels beside the payload.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tidings.errors import UsageError


class Event(BaseModel):
    """Base class of every typed event: ``class X(Event, type="x.happened", version="1.0")``."""

    # Tolerant reader: a newer producer may add fields; an older consumer ignores them (the contract,
    # not the model, says what a channel may carry).
    model_config = ConfigDict(frozen=True, extra="ignore")

    __event_type__: ClassVar[str] = ""
    __event_version__: ClassVar[str] = "1.0"

    def __init_subclass__(cls, type: str | None = None, version: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if type is not None:
            if not type or type != type.strip():
                raise UsageError(f"{cls.__name__}: the event type must be a non-empty name like 'user.created'")
            cls.__event_type__ = type
        if version is not None:
            cls.__event_version__ = str(version)

    @classmethod
    def event_type(cls) -> str:
        if not cls.__event_type__:
            raise UsageError(
                f'{cls.__name__} has no event type: declare it, e.g. class {cls.__name__}(Event, type="user.created")'
            )
        return cls.__event_type__

    @classmethod
    def event_version(cls) -> str:
        return cls.__event_version__


__all__ = ["Event"]
