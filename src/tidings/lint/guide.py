"""The event-design rules of our guide (``event-driven-asyncapi-guide``), as lint rules.

==============================  ========  =====================================================
code                            severity  the guide says
==============================  ========  =====================================================
``tidings-event-name``          warning   events are named after what happened, in the past
                                          tense: ``user.created``, not ``create_user``,
                                          ``user.create`` or the vague ``user_event``
``tidings-event-name-style``    info      ... and dot-separated in lower case: ``user.created``,
                                          not ``user_created`` or ``UserCreated``
``tidings-payload-event-id``    warning   self-contained payloads carry a unique event id
                                          (``event_id``, ``eventId`` or ``id``; format uuid)
``tidings-payload-timestamp``   warning   ... a timestamp (format date-time)
``tidings-payload-event-type``  warning   ... the event type (``event_type``)
``tidings-payload-version``     warning   ... and a version (a ``version`` field, or the version
                                          in the event type: ``user.created.v2``)
``tidings-payload-required``    warning   object payloads say which fields are ``required``
``tidings-event-versioning``    warning   one way of versioning for all the document's events
==============================  ========  =====================================================

"Operations with ids and descriptions" is Spectral's ``asyncapi2-operation-operationId`` and
``asyncapi-operation-description`` (tagged ``guide`` too), not repeated here.

**What is an event, and what is its name.** Not every message is an event: commands and requests are
named as commands on purpose. A message is left out when every channel it travels on is a command
channel (a segment ``action``, ``command``, ``cmd``, ``request``, ``reply``, ``rpc``...) or when it is
the request or the reply of a 3.x request/reply operation. For the others, the names judged are:

- channel addresses written as event names (``user.created``, ``user_event``), not topic paths with
  ``/`` (``users/{id}/signup``) and not single words;
- the values of the payload's event type (``const``/``enum`` of ``event_type``, ``eventType``, ``type``
  or ``event``): these must also be dot-separated lower case;
- the message's ``messageId``, ``name`` and key: code identifiers, so ``UserCreated`` is fine; only the
  tense is judged (``createUser`` -> ``userCreated``).

A name the word tables cannot read (``rpc_queue``, ``heartbeat``) is not reported: see
:mod:`tidings.lint.naming`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidings.asyncapi.diagnostics import Diagnostic, Path
from tidings.asyncapi.model import Channel, Message
from tidings.asyncapi.spec2 import _is_asyncapi_format
from tidings.lint.helpers import as_dict, as_list, definition_path, iter_items, schema_properties
from tidings.lint.naming import NameFinding, check_event_name, words_of
from tidings.lint.registry import BUILTIN, RuleContext

GUIDE = ("guide",)
rule = BUILTIN.rule

COMMAND_WORDS = frozenset(
    {"action", "actions", "command", "commands", "cmd", "cmds", "request", "requests", "req", "reply", "replies",
     "response", "responses", "rpc", "query", "queries"}
)  # fmt: skip
EVENT_ID_NAMES = ("event_id", "eventId", "eventID", "id")
TIMESTAMP_NAMES = (
    "timestamp", "time", "event_time", "eventTime", "occurred_at", "occurredAt", "sent_at", "sentAt",
    "published_at", "publishedAt", "emitted_at", "emittedAt", "created_at", "createdAt",
)  # fmt: skip
EVENT_TYPE_NAMES = ("event_type", "eventType", "type", "event", "event_name", "eventName")
VERSION_NAMES = ("version", "event_version", "eventVersion", "schema_version", "schemaVersion")
_TIMESTAMP_LIKE = re.compile(r"(?:time|timestamp|_at|[a-z]At)$", re.IGNORECASE)
_VERSIONED_TYPE = re.compile(r"(?:^|[._\-])v\d+$")
_VERSION_SEGMENT = re.compile(r"^v\d+$")


@dataclass
class Event:
    """One event message of the document, with what the payload rules need to know about it."""

    message: Message
    #: where the message is defined (``components/messages/UserCreated``) or used
    path: Path
    channels: list[Channel] = field(default_factory=list)
    #: where the payload schema is defined; ``None`` when the payload is not an object we can read
    payload_path: Path | None = None
    #: top-level payload properties: name -> (schema, path from the payload)
    props: dict[str, tuple[Any, Path]] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    has_properties_key: bool = False
    header_props: dict[str, tuple[Any, Path]] = field(default_factory=dict)
    #: event type values (``const``/``enum`` of the event type property) and where each is written
    type_values: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        """The message's key under ``messages`` (its id in 3.x), if it has one."""
        if len(self.path) >= 2 and self.path[-2] == "messages" and isinstance(self.path[-1], str):
            return self.path[-1]
        return None

    def has(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if n in self.props or n in self.header_props), None)

    def prop(self, name: str) -> dict[str, Any]:
        sub = self.props.get(name) or self.header_props.get(name)
        return as_dict(sub[0]) if sub else {}

    @property
    def event_name(self) -> str | None:
        """The best name we have for this event: its type value, or an event-style channel address."""
        if self.type_values:
            return self.type_values[0][0]
        for channel in self.channels:
            if channel.address and _event_style_address(channel.address):
                return channel.address
        return None

    @property
    def versioned_in_type(self) -> bool:
        if any(_VERSIONED_TYPE.search(v) for v, _ in self.type_values):
            return True
        return any(any(_VERSION_SEGMENT.match(s) for s in re.split(r"[./_\-]", c.address or "")) for c in self.channels)

    def field_path(self) -> tuple[Path, bool]:
        """Where to report a missing payload field: the payload's ``properties`` key, or the payload."""
        assert self.payload_path is not None
        if self.has_properties_key:
            return (*self.payload_path, "properties"), True
        return self.payload_path, False

    def field_name(self, snake: str, camel: str) -> str:
        """``snake`` or ``camel``, whichever matches how the payload's fields are written."""
        names = list(self.props)
        camel_case = any(re.search(r"[a-z][A-Z]", n) for n in names)
        snake_case = any("_" in n for n in names)
        return camel if camel_case and not snake_case else snake


def _event_style_address(address: str) -> bool:
    """``user.created``, ``user_event``: written like an event name, not a ``/`` topic path or a word."""
    return "/" not in address and ":" not in address and any(c in address for c in "._-")


def _command_channel(channel: Channel) -> bool:
    words = {w for part in re.split(r"[./_\-{}]", channel.address or channel.key) for w in words_of(part)}
    return bool(words & COMMAND_WORDS)


def events(ctx: RuleContext) -> list[Event]:
    """The document's event messages, computed once per document."""
    result: list[Event] = ctx.memo("guide-events", lambda: _collect_events(ctx))
    return result


def _collect_events(ctx: RuleContext) -> list[Event]:
    doc, model = ctx.document, ctx.model
    channels_of: dict[int, list[Channel]] = {}
    for channel in model.channels.values():
        for message in channel.messages:
            channels_of.setdefault(id(message), []).append(channel)
    # requests and replies of 3.x request/reply operations are not events (by the id of their raw object)
    exchanged: set[int] = set()
    for op in model.operations.values():
        reply = ctx.deref(op.raw.get("reply"))
        if isinstance(reply, dict):
            exchanged.update(id(m.raw) for m in op.messages)
            reply_channel = as_dict(ctx.deref(reply.get("channel")))
            replies = [*as_list(reply.get("messages")), *(m for _, m in iter_items(reply_channel.get("messages")))]
            exchanged.update(id(ctx.deref(m)) for m in replies)
    out: list[Event] = []
    for message in model.messages:
        channels = channels_of.get(id(message), [])
        if channels and all(_command_channel(c) for c in channels):
            continue
        if id(message.raw) in exchanged:
            continue
        event = Event(message, definition_path(doc, message.path) or message.path, channels)
        _read_payload(ctx, event)
        out.append(event)
    return out


def _read_payload(ctx: RuleContext, event: Event) -> None:
    message = event.message
    if message.schema_format is not None and not _is_asyncapi_format(message.schema_format):
        return  # Avro, Protobuf...: not a JSON Schema we can read
    raw_payload = ctx.deref(message.raw.get("payload"))
    payload_at: Path = (*event.path, "payload")
    if isinstance(raw_payload, dict) and "schemaFormat" in raw_payload and "schema" in raw_payload:
        payload_at = (*payload_at, "schema")  # 3.x Multi Format Schema Object
    schema = ctx.deref(message.payload)
    if not isinstance(schema, dict):
        return
    props, required = schema_properties(ctx.document, schema)
    if not props and schema.get("type") != "object":
        return  # a string, an array, a oneOf of alternatives...: no fields to judge
    event.payload_path = definition_path(ctx.document, payload_at) or payload_at
    event.props, event.required = props, required
    event.has_properties_key = "properties" in schema
    event.header_props = schema_properties(ctx.document, message.headers)[0] if message.headers else {}
    for name in EVENT_TYPE_NAMES:
        if name not in props:
            continue
        sub, where = props[name]
        sub = as_dict(sub)
        if isinstance(sub.get("const"), str):
            event.type_values.append((sub["const"], (*event.payload_path, *where, "const")))
        for i, value in enumerate(as_list(sub.get("enum"))):
            if isinstance(value, str):
                event.type_values.append((value, (*event.payload_path, *where, "enum", i)))
        break


# -- event names -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _NameAt:
    finding: NameFinding
    path: Path
    at_key: bool
    what: str


def _name_findings(ctx: RuleContext) -> list[_NameAt]:
    result: list[_NameAt] = ctx.memo("guide-names", lambda: list(_judge_names(ctx)))
    return result


def _judge_names(ctx: RuleContext) -> Iterator[_NameAt]:
    seen_channels: set[str] = set()
    for channel in ctx.model.channels.values():
        address = channel.address
        if not address or address in seen_channels or not _event_style_address(address) or _command_channel(channel):
            continue
        seen_channels.add(address)
        finding = check_event_name(address)
        if finding:
            if ctx.major == 2:
                yield _NameAt(finding, channel.path, True, "channel")
            else:
                yield _NameAt(finding, (*channel.path, "address"), False, "channel address")
    for event in events(ctx):
        judged: set[tuple[str, ...]] = set()
        raw = event.message.raw
        candidates: list[tuple[str, Path, bool, bool, str]] = [
            (value, where, False, False, "event type") for value, where in event.type_values
        ]
        for field_name in ("messageId", "name"):
            if isinstance(raw.get(field_name), str):
                candidates.append((raw[field_name], (*event.path, field_name), False, True, f"message {field_name}"))
        if event.key:
            candidates.append((event.key, event.path, True, True, "message key"))
        for name, path, at_key, identifier, what in candidates:
            words = tuple(w for part in name.split(".") for w in words_of(part))
            if words in judged:
                continue  # "channelArchive" and "channel_archive" are one name: report it once
            judged.add(words)
            finding = check_event_name(name, identifier=identifier)
            if finding:
                yield _NameAt(finding, path, at_key, what)


@rule(
    "tidings-event-name",
    description="Event names say what happened, in the past tense (user.created, not create_user).",
    tags=GUIDE,
)
def event_name(ctx: RuleContext) -> Iterator[Diagnostic]:
    for item in _name_findings(ctx):
        if item.finding.kind != "style":
            yield ctx.report(
                f"{item.what}: {item.finding.message}",
                item.path,
                at_key=item.at_key,
                suggestion=f"rename to {item.finding.suggestion}",
            )


@rule(
    "tidings-event-name-style",
    severity="info",
    description="Event names are dot-separated lower case (user.created, not user_created).",
    tags=GUIDE,
)
def event_name_style(ctx: RuleContext) -> Iterator[Diagnostic]:
    for item in _name_findings(ctx):
        if item.finding.kind == "style":
            yield ctx.report(
                f"{item.what}: {item.finding.message}",
                item.path,
                at_key=item.at_key,
                suggestion=f"rename to {item.finding.suggestion}",
            )


# -- self-contained payloads -----------------------------------------------------------------------------
def _payload_events(ctx: RuleContext) -> Iterator[Event]:
    for event in events(ctx):
        if event.payload_path is not None:
            yield event


def _add(field: str, schema: str) -> str:
    return f'add property "{field}" ({schema}) and list it in "required"'


@rule(
    "tidings-payload-event-id",
    description="Event payloads carry a unique event id with format uuid.",
    tags=GUIDE,
)
def payload_event_id(ctx: RuleContext) -> Iterator[Diagnostic]:
    for event in _payload_events(ctx):
        ids = [n for n in EVENT_ID_NAMES if n in event.props or n in event.header_props]
        if any(event.prop(n).get("format") == "uuid" for n in ids):
            continue
        where, at_key = event.field_path()
        named = [n for n in ids if n != "id"]
        if named:
            name = named[0]
            yield ctx.report(
                f'the event id "{name}" should be a UUID: declare format: uuid',
                where,
                at_key=at_key,
                suggestion=f'add format: uuid to "{name}"',
            )
            continue
        field_name = event.field_name("event_id", "eventId")
        note = ' ("id" is not a UUID, so it reads as the id of an entity)' if "id" in ids else ""
        yield ctx.report(
            f'the payload has no event id{note}: add "{field_name}" (format uuid) so consumers can '
            "recognise a duplicate delivery",
            where,
            at_key=at_key,
            suggestion=_add(field_name, "type: string, format: uuid"),
        )


@rule(
    "tidings-payload-timestamp",
    description="Event payloads carry the time the event happened, with format date-time.",
    tags=GUIDE,
)
def payload_timestamp(ctx: RuleContext) -> Iterator[Diagnostic]:
    for event in _payload_events(ctx):
        names = [*event.props, *event.header_props]
        if any(
            event.prop(n).get("format") == "date-time" and (n in TIMESTAMP_NAMES or _TIMESTAMP_LIKE.search(n))
            for n in names
        ):
            continue
        where, at_key = event.field_path()
        known = next((n for n in TIMESTAMP_NAMES if n in names), None)
        if known:
            yield ctx.report(
                f'the timestamp "{known}" should declare format: date-time (RFC 3339)',
                where,
                at_key=at_key,
                suggestion=f'add format: date-time to "{known}"',
            )
        else:
            yield ctx.report(
                'the payload has no timestamp: add "timestamp" (format date-time), the time the event happened',
                where,
                at_key=at_key,
                suggestion=_add("timestamp", "type: string, format: date-time"),
            )


@rule(
    "tidings-payload-event-type",
    description="Event payloads carry their event type (event_type).",
    tags=GUIDE,
)
def payload_event_type(ctx: RuleContext) -> Iterator[Diagnostic]:
    for event in _payload_events(ctx):
        if event.has(EVENT_TYPE_NAMES):
            continue
        where, at_key = event.field_path()
        field_name = event.field_name("event_type", "eventType")
        name = event.event_name
        schema = f'type: string, const: "{name}"' if name else "type: string"
        yield ctx.report(
            f'the payload does not say which event it is: add "{field_name}"'
            + (f' (e.g. "{name}")' if name else "")
            + ", so a consumer can route and store it without knowing the channel",
            where,
            at_key=at_key,
            suggestion=_add(field_name, schema),
        )


@rule(
    "tidings-payload-version",
    description="Event payloads carry a version: a version field, or the version in the event type.",
    tags=GUIDE,
)
def payload_version(ctx: RuleContext) -> Iterator[Diagnostic]:
    for event in _payload_events(ctx):
        if event.has(VERSION_NAMES) or event.versioned_in_type:
            continue
        where, at_key = event.field_path()
        yield ctx.report(
            'the payload has no version: add a "version" field (e.g. "1.0"), or put the version in the event '
            'type (e.g. "user.created.v2"), so the event can evolve',
            where,
            at_key=at_key,
            suggestion=_add("version", 'type: string, e.g. "1.0"'),
        )


@rule(
    "tidings-payload-required",
    description='Object payloads declare which fields are "required".',
    tags=GUIDE,
)
def payload_required(ctx: RuleContext) -> Iterator[Diagnostic]:
    for event in _payload_events(ctx):
        if event.props and not event.required:
            assert event.payload_path is not None
            yield ctx.report(
                'the payload declares no "required" fields: list the fields every event carries',
                event.payload_path,
                suggestion=f"add required: [{_first_names(list(event.props))}]",
            )


def _first_names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


@rule(
    "tidings-event-versioning",
    description="All events of a document are versioned the same way (version field or event type).",
    tags=GUIDE,
)
def event_versioning(ctx: RuleContext) -> Iterator[Diagnostic]:
    by_field: list[Event] = []
    by_type: list[Event] = []
    for event in _payload_events(ctx):
        in_field, in_type = event.has(VERSION_NAMES) is not None, event.versioned_in_type
        if in_field and not in_type:
            by_field.append(event)
        elif in_type and not in_field:
            by_type.append(event)
    if not by_field or not by_type:
        return
    # the majority sets the convention; the others are the findings
    if len(by_field) >= len(by_type):
        odd, usual, how = by_type, by_field, "only in its event type"
    else:
        odd, usual, how = by_field, by_type, 'only in a "version" field'
    convention = 'a "version" field' if usual is by_field else 'the event type (e.g. "user.created.v2")'
    for event in odd:
        assert event.payload_path is not None
        yield ctx.report(
            f"versioning is not consistent: this event carries its version {how}, while {len(usual)} other "
            f"event(s) use {convention}; version all events the same way",
            event.payload_path,
            suggestion=f"version this event with {convention}",
        )


__all__ = ["COMMAND_WORDS", "Event", "events"]
