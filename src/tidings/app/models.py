"""Event classes made from a document's message schemas, for apps written contract-first.

``App.from_asyncapi("asyncapi.yaml")`` binds the contract and builds one :class:`~tidings.events.event.Event`
subclass per channel message, so a handler can take typed objects without a hand-written model::

    app = App.from_asyncapi("asyncapi.yaml", broker="sqlite:///events.db")
    UserCreated = app.event_class("user.created")

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None:   # noqa: the class comes from the document
        print(event.email)

The generated model is tolerant (unknown fields ignored) and typed where JSON Schema says so; the exact
check (formats, enums, patterns) is the contract's, run before the handler.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

from pydantic import Field, create_model

from tidings.asyncapi.document import Document
from tidings.asyncapi.model import Message, build_model
from tidings.events.envelope import ENVELOPE_FIELDS
from tidings.events.event import Event

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "array": list[Any],
    "null": type(None),
}


def _python_type(schema: Any, document: Document) -> Any:
    schema = document.try_deref(schema) if isinstance(schema, dict) else schema
    if not isinstance(schema, dict):
        return Any
    kind = schema.get("type")
    if isinstance(kind, list):
        types = [_JSON_TYPES.get(k, Any) for k in kind if isinstance(k, str)]
        if not types:
            return Any
        result = types[0]
        for t in types[1:]:
            result = result | t
        return result
    if isinstance(kind, str) and kind in _JSON_TYPES:
        return _JSON_TYPES[kind]
    return Any


def _class_name(text: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", text)
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    if not name or not name[0].isalpha():
        name = "Event" + name
    return name


def event_class_for(message: Message, event_type: str, document: Document) -> type[Event]:
    """An Event subclass for ``message``: one field per payload property, envelope fields left out."""
    payload = document.try_deref(message.payload) if isinstance(message.payload, dict) else None
    properties = payload.get("properties") if isinstance(payload, dict) else None
    required = set(payload.get("required") or []) if isinstance(payload, dict) else set()
    fields: dict[str, Any] = {}
    for name, schema in (properties or {}).items():
        if name in ENVELOPE_FIELDS or not isinstance(name, str):
            continue
        python_name = name if name.isidentifier() and not keyword.iskeyword(name) else None
        annotation = _python_type(schema, document)
        if python_name is None:
            continue  # not a Python identifier: reachable through the event's model_extra (extra="allow")
        fields[python_name] = (annotation, ...) if name in required else (annotation | None, Field(default=None))
    name = _class_name(message.name or message.message_id or message.key or event_type)
    cls: type[Event] = create_model(name, __base__=Event, **fields)
    cls.__event_type__ = event_type
    cls.__event_version__ = "1.0"
    return cls


def event_classes(document: Document) -> dict[str, type[Event]]:
    """One event class per channel address (the first message of each channel)."""
    out: dict[str, type[Event]] = {}
    for channel in build_model(document).channels.values():
        address = channel.address if channel.address is not None else channel.key
        if channel.messages:
            out[address] = event_class_for(channel.messages[0], address, document)
    return out


__all__ = ["event_class_for", "event_classes"]
