"""Bytes on the wire <-> (envelope, payload dict), with orjson, in three placements.

``payload`` (the guide's style, the default)
    one flat JSON object: envelope fields beside the event's own fields::

        {"event_id": "...", "event_type": "user.created", "timestamp": "...", "version": "1.0",
         "user_id": 12345, ...}

``headers`` (CloudEvents 1.0 *binary* content mode)
    the body is the event's own fields; the envelope travels in message headers named as the CloudEvents
    Kafka binding names them (``ce_id``, ``ce_type``, ``ce_time``, ``ce_source``, ``ce_specversion``,
    ``content-type``; extensions ``ce_correlationid``, ``ce_causationid``, ``ce_eventversion``).

``cloudevents`` (CloudEvents 1.0 *structured* content mode)
    one JSON object ``{"specversion": "1.0", "id": ..., "type": ..., "data": {...}}`` with content type
    ``application/cloudevents+json``.

CloudEvents requires ``source``: an envelope without one is sent, in the two CloudEvents placements, with
``source`` set to :data:`DEFAULT_SOURCE` (``"tidings"``), so that no CloudEvent leaves without it. Both
placements are read and written by the official ``cloudevents`` SDK (its Kafka binding for ``headers``;
``tests/test_cloudevents.py``).

:func:`decode` recognises all three on its own, so a consumer reads whatever a producer chose.

Messages from producers that know nothing of envelopes (FastStream, a plain Kafka or AMQP client: a JSON
object of the event's fields only) are *foreign*: given the channel they arrived on, :func:`decode` adopts
them with an envelope made up from what the transport knows (``event_id`` from a ``message_id`` /
``message-id`` header, else a new UUID v7; ``event_type`` from a ``type`` header, else the channel; the time
from a ``timestamp`` header, else now). A body that carries *part* of an envelope (an ``event_type`` and no
``event_id``) is a broken tidings event, not a foreign one, and is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import orjson

from tidings.errors import TidingsError
from tidings.events.envelope import JSON, Envelope, utc_now, uuid7

CLOUDEVENTS_JSON = "application/cloudevents+json"
SPECVERSION = "1.0"
#: the CloudEvents ``source`` of an envelope that has none (CloudEvents requires a non-empty ``source``)
DEFAULT_SOURCE = "tidings"

# envelope field <-> CloudEvents attribute
_CE_ATTRIBUTES = {
    "event_id": "id",
    "event_type": "type",
    "timestamp": "time",
    "source": "source",
    "content_type": "datacontenttype",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "version": "eventversion",
}
_FROM_CE = {v: k for k, v in _CE_ATTRIBUTES.items()}
HEADER_PREFIX = "ce_"
# what a parsed JSON value is called in JSON's words (for DecodeError reasons)
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class Placement(enum.StrEnum):
    PAYLOAD = "payload"
    HEADERS = "headers"
    CLOUDEVENTS = "cloudevents"


class DecodeError(TidingsError):
    """A message that is not an event tidings can read; ``reason`` says why, for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def payload_body(envelope: Envelope, data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``payload`` placement's JSON object: the envelope's fields, then the event's."""
    fields = envelope.to_dict()
    if fields.keys().isdisjoint(data):  # the usual case: envelope first (key order), then the event's fields
        fields.update(data)
        return fields
    # the envelope is the envelope: an event field of the same name must not overwrite it
    return {**fields, **data, **fields}


def payload_headers(envelope: Envelope) -> dict[str, str]:
    return {"content-type": envelope.content_type or JSON}


def encode(
    envelope: Envelope, data: Mapping[str, Any], placement: Placement = Placement.PAYLOAD
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one message."""
    placement = Placement(placement)
    if placement is Placement.PAYLOAD:
        return orjson.dumps(payload_body(envelope, data)), payload_headers(envelope)
    if not envelope.source:  # CloudEvents requires a source: never emit a CloudEvent without one
        envelope = envelope._replace(source=DEFAULT_SOURCE)
    if placement is Placement.HEADERS:
        headers = {HEADER_PREFIX + "specversion": SPECVERSION}
        for name, value in envelope.to_dict().items():
            if name == "content_type":
                headers["content-type"] = value
            else:
                headers[HEADER_PREFIX + _CE_ATTRIBUTES[name]] = value
        return orjson.dumps(data), headers
    structured: dict[str, Any] = {"specversion": SPECVERSION}
    for name, value in envelope.to_dict().items():
        structured[_CE_ATTRIBUTES[name]] = value
    structured["data"] = data
    return orjson.dumps(structured), {"content-type": CLOUDEVENTS_JSON}


def decode(
    body: bytes, headers: Mapping[str, str] | None = None, *, channel: str | None = None
) -> tuple[Envelope, dict[str, Any]]:
    """``(envelope, data)`` from a message in any of the three placements; raises :class:`DecodeError`.

    ``data`` is what the payload schema describes: the event's own fields (with the envelope fields too,
    for the ``payload`` placement, where they are part of the body). With ``channel``, a foreign message
    (no envelope at all) is adopted (see the module documentation); without it, it is refused.
    """
    headers = headers or {}
    binary_mode = HEADER_PREFIX + "specversion" in headers
    if binary_mode and not body:  # a CloudEvent without data (the SDK sends an empty value): no fields
        body = b"{}"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(_not_json(body, exc)) from None
    if not isinstance(parsed, dict):
        raise DecodeError(f"the body is a JSON {_JSON_KINDS.get(type(parsed), 'value')}, not an object")
    if binary_mode:
        fields = {
            _FROM_CE[k[len(HEADER_PREFIX) :]]: v
            for k, v in headers.items()
            if k.startswith(HEADER_PREFIX) and k[len(HEADER_PREFIX) :] in _FROM_CE
        }
        if "content-type" in headers:
            fields["content_type"] = headers["content-type"]
        return _envelope(fields), parsed
    if "specversion" in parsed and "type" in parsed and "id" in parsed:
        fields = {_FROM_CE[k]: v for k, v in parsed.items() if k in _FROM_CE}
        if "data_base64" in parsed:  # binary data: not an event payload, and not to be dropped silently
            raise DecodeError("the CloudEvent's data is binary (data_base64), not a JSON object")
        data = parsed.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DecodeError("the CloudEvent's data is not a JSON object")
        return _envelope(fields), data
    if channel is not None and "event_id" not in parsed and "event_type" not in parsed:
        return _adopted(headers, channel), parsed
    return _envelope(parsed), parsed


def _adopted(headers: Mapping[str, str], channel: str) -> Envelope:
    """The envelope of a foreign message: from the transport's own metadata where it has some."""
    get = headers.get
    event_id = get("message_id") or get("message-id") or uuid7()
    return Envelope(
        str(event_id),
        str(get("type") or channel),
        str(get("timestamp") or utc_now()),
        "",
        str(get("app_id") or ""),
        str(get("correlation_id") or get("correlation-id") or event_id),
        "",
        str(get("content-type") or get("content_type") or JSON),
    )


def _not_json(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """The reason for a body orjson refused; only on the error path, so the check for UTF-8 costs nothing."""
    try:
        bytes(body).decode()
    except UnicodeDecodeError as bad:  # orjson would only say "str is not valid UTF-8: surrogates not allowed"
        return f"not JSON: not UTF-8 text (invalid byte 0x{bad.object[bad.start]:02x} at offset {bad.start})"
    return f"not JSON: {exc}"


def _envelope(fields: Mapping[str, Any]) -> Envelope:
    """The envelope from a mapping that holds (at least) its fields; one pass, no intermediate dicts."""
    get = fields.get
    event_id, event_type = get("event_id"), get("event_type")
    if not event_id or not event_type:
        missing = "event_id" if not event_id else "event_type"
        raise DecodeError(f'the message has no {missing} (an event needs "event_id" and "event_type")')
    # written out rather than looped: this runs once per message received
    timestamp, version, source = get("timestamp"), get("version"), get("source")
    correlation_id, causation_id, content_type = get("correlation_id"), get("causation_id"), get("content_type")
    return Envelope(
        str(event_id),
        str(event_type),
        "" if timestamp is None else str(timestamp),
        "" if version is None else str(version),
        "" if source is None else str(source),
        "" if correlation_id is None else str(correlation_id),
        "" if causation_id is None else str(causation_id),
        JSON if content_type is None else str(content_type),
    )


__all__ = ["CLOUDEVENTS_JSON", "DEFAULT_SOURCE", "DecodeError", "Placement", "decode", "encode"]
