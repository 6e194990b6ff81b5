"""The wire codec: round trips in the three placements, auto-detection, and clear reasons for what it refuses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.errors import TidingsError
from tidings.events import (
    CLOUDEVENTS_JSON,
    DEFAULT_SOURCE,
    ENVELOPE_FIELDS,
    JSON,
    DecodeError,
    Envelope,
    Placement,
    decode,
    encode,
    new_envelope,
)

# --- strategies ---------------------------------------------------------------------------------------------

# text orjson can write: any Unicode scalar value (no lone surrogates, which are not UTF-8)
texts = st.text(st.characters(codec="utf-8"), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # orjson's integer range
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)
# in the payload placement the event's fields sit beside the envelope's, so they may not reuse those names
field_names = texts.filter(lambda k: k not in ENVELOPE_FIELDS)
data_dicts = st.dictionaries(field_names, json_values, max_size=6)
non_empty = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
envelopes = st.builds(
    Envelope,
    event_id=non_empty,
    event_type=non_empty,
    timestamp=st.just("") | non_empty,
    version=st.just("") | non_empty,
    source=st.just("") | non_empty,
    correlation_id=st.just("") | non_empty,
    causation_id=st.just("") | non_empty,
    content_type=st.sampled_from([JSON, "application/vnd.example+json"]),
)

# derandomized: the same examples on every run, so a run is reproducible (and fast)
FAST = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FAST, max_examples=20)


def _cloudevents_view(envelope: Envelope) -> Envelope:
    """What a CloudEvents placement carries: the envelope, with the default source if it had none."""
    return envelope._replace(source=envelope.source or DEFAULT_SOURCE)


# --- round trips --------------------------------------------------------------------------------------------


@FAST
@given(envelope=envelopes, data=data_dicts)
def test_payload_round_trip(envelope: Envelope, data: dict[str, Any]) -> None:
    body, headers = encode(envelope, data, Placement.PAYLOAD)
    assert headers == {"content-type": envelope.content_type}
    got_envelope, got_data = decode(body, headers)
    assert got_envelope == envelope
    # the payload is the guide's flat object: the envelope's fields and the event's, side by side
    assert got_data == {**envelope.to_dict(), **data}
    assert decode(body) == (got_envelope, got_data)  # the body alone is enough


@FAST
@given(envelope=envelopes, data=data_dicts)
def test_headers_round_trip(envelope: Envelope, data: dict[str, Any]) -> None:
    body, headers = encode(envelope, data, Placement.HEADERS)
    assert orjson.loads(body) == data  # the body is the event's own fields only
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_source"]  # never without a source
    assert decode(body, headers) == (_cloudevents_view(envelope), data)


@FAST
@given(envelope=envelopes, data=data_dicts)
def test_cloudevents_round_trip(envelope: Envelope, data: dict[str, Any]) -> None:
    body, headers = encode(envelope, data, Placement.CLOUDEVENTS)
    assert headers == {"content-type": CLOUDEVENTS_JSON}
    structured = orjson.loads(body)
    assert structured["specversion"] == "1.0"
    assert structured["data"] == data
    assert structured["source"]
    assert decode(body, headers) == (_cloudevents_view(envelope), data)
    assert decode(body) == (_cloudevents_view(envelope), data)  # the body alone is enough


@FEW
@given(data=data_dicts)
def test_payload_keys_that_look_like_cloudevents_attributes_are_just_fields(data: dict[str, Any]) -> None:
    envelope = new_envelope("user.created", "1.0")
    data = {**data, "id": 1, "type": "admin"}  # without "specversion" this is no CloudEvent
    got_envelope, got_data = decode(*encode(envelope, data, Placement.PAYLOAD))
    assert got_envelope == envelope
    assert got_data["id"] == 1
    assert got_data["type"] == "admin"


def test_encoded_shapes() -> None:
    envelope = Envelope("id-1", "user.created", "2025-01-15T10:30:00Z", "1.0", "user-service", "c-1", "k-1")
    data = {"user_id": 12345}

    body, headers = encode(envelope, data)  # the guide's placement is the default
    assert orjson.loads(body) == {
        "event_id": "id-1",
        "event_type": "user.created",
        "timestamp": "2025-01-15T10:30:00Z",
        "version": "1.0",
        "source": "user-service",
        "correlation_id": "c-1",
        "causation_id": "k-1",
        "content_type": JSON,
        "user_id": 12345,
    }
    assert headers == {"content-type": JSON}

    body, headers = encode(envelope, data, Placement.HEADERS)
    assert orjson.loads(body) == data
    assert headers == {
        "ce_specversion": "1.0",
        "ce_id": "id-1",
        "ce_type": "user.created",
        "ce_time": "2025-01-15T10:30:00Z",
        "ce_eventversion": "1.0",
        "ce_source": "user-service",
        "ce_correlationid": "c-1",
        "ce_causationid": "k-1",
        "content-type": JSON,
    }

    body, headers = encode(envelope, data, Placement.CLOUDEVENTS)
    assert orjson.loads(body) == {
        "specversion": "1.0",
        "id": "id-1",
        "type": "user.created",
        "time": "2025-01-15T10:30:00Z",
        "eventversion": "1.0",
        "source": "user-service",
        "correlationid": "c-1",
        "causationid": "k-1",
        "datacontenttype": JSON,
        "data": data,
    }
    assert headers == {"content-type": CLOUDEVENTS_JSON}


@pytest.mark.parametrize("placement", [Placement.HEADERS, Placement.CLOUDEVENTS])
def test_cloudevents_placements_never_emit_an_empty_source(placement: Placement) -> None:
    envelope = new_envelope("user.created", "1.0")  # no source given
    assert envelope.source == ""
    body, headers = encode(envelope, {}, placement)
    source = headers["ce_source"] if placement is Placement.HEADERS else orjson.loads(body)["source"]
    assert source == DEFAULT_SOURCE == "tidings"
    assert decode(body, headers)[0].source == "tidings"


def test_payload_placement_keeps_an_empty_source_out() -> None:
    body, _ = encode(new_envelope("user.created", "1.0"), {})
    assert "source" not in orjson.loads(body)


# --- auto-detection -----------------------------------------------------------------------------------------


def test_decode_detects_the_placement_on_its_own() -> None:
    envelope = new_envelope("user.created", "1.0", source="user-service", causation_id="cause-1")
    data = {"user_id": 12345, "email": "john@example.com", "name": "John Doe"}
    decoded = {placement: decode(*encode(envelope, data, placement)) for placement in Placement}
    assert decoded[Placement.PAYLOAD] == (envelope, {**envelope.to_dict(), **data})
    assert decoded[Placement.HEADERS] == (envelope, data)
    assert decoded[Placement.CLOUDEVENTS] == (envelope, data)


def test_binary_mode_needs_its_headers() -> None:
    body, _ = encode(new_envelope("user.created", "1.0"), {"user_id": 1}, Placement.HEADERS)
    with pytest.raises(DecodeError, match="no event_id"):
        decode(body)  # the envelope was in the headers


def test_binary_mode_without_data_decodes_to_no_fields() -> None:
    _, headers = encode(new_envelope("user.deleted", "1.0"), {}, Placement.HEADERS)
    envelope, data = decode(b"", headers)
    assert envelope.event_type == "user.deleted"
    assert data == {}


def test_structured_mode_without_data_decodes_to_no_fields() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "e-1", "type": "user.deleted", "source": "s"})
    envelope, data = decode(body)
    assert (envelope.event_id, envelope.event_type, envelope.source) == ("e-1", "user.deleted", "s")
    assert data == {}


def test_unknown_headers_and_attributes_are_ignored() -> None:
    envelope = new_envelope("user.created", "1.0", source="s")
    body, headers = encode(envelope, {"a": 1}, Placement.HEADERS)
    assert decode(body, {**headers, "ce_partitionkey": "k", "traceparent": "00-ab"}) == (envelope, {"a": 1})
    structured = {**orjson.loads(encode(envelope, {"a": 1}, Placement.CLOUDEVENTS)[0]), "subject": "x"}
    assert decode(orjson.dumps(structured)) == (envelope, {"a": 1})


# --- the guide's payload ------------------------------------------------------------------------------------

# "Event Payload Design", GOOD: complete, self-contained event (the guide's e-mail address is obfuscated in
# the seed text; any address will do here)
GUIDE_GOOD = b"""{
"event_id": "550e8400-e29b-41d4-a716-446655440000",
"event_type": "user.created",
"timestamp": "2025-01-15T10:30:00Z",
"version": "1.0",
"user_id": 12345,
"email": "john.doe@example.com",
"name": "John Doe",
"created_at": "2025-01-15T10:30:00Z"
}"""


def test_the_guides_good_payload_decodes() -> None:
    envelope, data = decode(GUIDE_GOOD, {"content-type": "application/json"})
    assert envelope == Envelope(
        event_id="550e8400-e29b-41d4-a716-446655440000",
        event_type="user.created",
        timestamp="2025-01-15T10:30:00Z",
        version="1.0",
        source="",
        correlation_id="",
        causation_id="",
        content_type=JSON,
    )
    assert data == orjson.loads(GUIDE_GOOD)
    assert data["user_id"] == 12345
    assert data["created_at"] == "2025-01-15T10:30:00Z"
    # and it goes back out the same way
    assert orjson.loads(encode(envelope, data)[0]) == {**orjson.loads(GUIDE_GOOD), "content_type": JSON}


def test_the_guides_bad_payload_is_refused_with_a_reason() -> None:
    with pytest.raises(DecodeError, match="no event_id"):
        decode(b'{"user_id": 12345, "action": "created"}')


# --- refusals -----------------------------------------------------------------------------------------------

CE_HEADERS = {"ce_specversion": "1.0", "ce_id": "e-1", "ce_type": "user.created", "ce_source": "s"}


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        pytest.param(b"hello, world", None, r"^not JSON: ", id="not-json"),
        pytest.param(b"", None, r"^not JSON: .*empty", id="empty"),
        pytest.param(b'{"event_id": "x"', None, r"^not JSON: ", id="truncated"),
        pytest.param(b"\xff\xfe{}", None, r"^not JSON: not UTF-8 text \(invalid byte 0xff at offset 0\)$", id="utf8"),
        pytest.param(b'{"event_id": "\xc3"}', None, r"not UTF-8 text \(invalid byte 0xc3 at offset 14\)", id="utf8-in"),
        pytest.param(b"[1, 2]", None, r"^the body is a JSON array, not an object$", id="array"),
        pytest.param(b'"user.created"', None, r"JSON string, not an object", id="string"),
        pytest.param(b"12345", None, r"JSON number, not an object", id="number"),
        pytest.param(b"null", None, r"JSON null, not an object", id="null"),
        pytest.param(b'{"event_type": "user.created"}', None, r"no event_id", id="no-event-id"),
        pytest.param(b'{"event_id": "", "event_type": "user.created"}', None, r"no event_id", id="empty-event-id"),
        pytest.param(b'{"event_id": "e-1"}', None, r"no event_type", id="no-event-type"),
        pytest.param(b'{"event_id": "e-1", "event_type": null}', None, r"no event_type", id="null-event-type"),
        pytest.param(
            b'{"specversion": "1.0", "id": "e-1", "type": "t", "source": "s", "data": [1]}',
            None,
            r"^the CloudEvent's data is not a JSON object$",
            id="ce-array-data",
        ),
        pytest.param(
            b'{"specversion": "1.0", "id": "e-1", "type": "t", "source": "s", "data": "hi"}',
            None,
            r"data is not a JSON object",
            id="ce-string-data",
        ),
        pytest.param(
            b'{"specversion": "1.0", "id": "e-1", "type": "t", "source": "s", "data_base64": "aGk="}',
            None,
            r"data is binary \(data_base64\)",
            id="ce-binary-data",
        ),
        pytest.param(b'{"specversion": "1.0", "id": "", "type": "t"}', None, r"no event_id", id="ce-empty-id"),
        pytest.param(b'{"a": 1}', {k: v for k, v in CE_HEADERS.items() if k != "ce_id"}, r"no event_id", id="bin-id"),
        pytest.param(b'{"a": 1}', {k: v for k, v in CE_HEADERS.items() if k != "ce_type"}, "no event_type", id="bin-t"),
        pytest.param(b"[1]", CE_HEADERS, r"JSON array, not an object", id="bin-array"),
        pytest.param(b"plain text", CE_HEADERS, r"^not JSON: ", id="bin-not-json"),
    ],
)
def test_refusals_say_why(body: bytes, headers: dict[str, str] | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        decode(body, headers)
    assert caught.value.reason == str(caught.value)
    assert isinstance(caught.value, TidingsError)


# --- foreign messages (no envelope: FastStream, plain Kafka/AMQP clients) ----------------------------------


def test_a_foreign_message_is_adopted_with_the_transports_metadata() -> None:
    body = b'{"user_id": 1, "email": "a@example.com", "name": "A"}'
    headers = {"message_id": "m-1", "correlation_id": "c-1", "content-type": "application/json"}
    envelope, data = decode(body, headers, channel="user.created")
    assert data == {"user_id": 1, "email": "a@example.com", "name": "A"}
    assert (envelope.event_id, envelope.event_type, envelope.correlation_id) == ("m-1", "user.created", "c-1")
    assert envelope.timestamp.endswith("Z")


def test_a_foreign_message_without_metadata_gets_a_fresh_id_and_its_channel_as_type() -> None:
    first, _ = decode(b'{"a": 1}', channel="orders.placed")
    second, _ = decode(b'{"a": 1}', channel="orders.placed")
    assert first.event_type == "orders.placed"
    assert first.event_id != second.event_id
    assert first.correlation_id == first.event_id


def test_half_an_envelope_is_refused_even_with_a_channel() -> None:
    with pytest.raises(DecodeError, match="no event_id"):
        decode(b'{"event_type": "user.created", "user_id": 1}', channel="user.created")
    with pytest.raises(DecodeError, match="no event_id"):
        decode(b'{"a": 1}')  # no channel: nothing to adopt it by


# --- the runtime contract's validators: draft 2019-09 only where it reads a schema as draft 07 does ----------


@pytest.mark.parametrize(
    ("schema", "valid", "invalid", "fast"),
    [
        ({"type": "string", "format": "uuid"}, "01a21a76-1d9a-7107-b9f8-42e4df63b880", "not-a-uuid", True),
        ({"type": "string", "format": "email"}, "a@example.com", "nope", True),
        # draft 07 ignores a $ref's siblings: the maxLength must not apply, so the slow validator stays
        ({"$ref": "#/definitions/s", "maxLength": 1, "definitions": {"s": {"type": "string"}}}, "long", 5, False),
        # draft 07 does not check "duration"
        ({"type": "string", "format": "duration"}, "whatever", 5, False),
        ({"dependencies": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}, False),
    ],
    ids=["uuid", "email", "ref-siblings", "duration", "dependencies"],
)
def test_hot_validators_judge_as_draft_07_does(schema: dict[str, Any], valid: Any, invalid: Any, fast: bool) -> None:
    from tidings.asyncapi.schemas import compile_schema

    hot, plain = compile_schema(schema, hot=True), compile_schema(schema)
    assert (type(hot).__name__ == "Draft201909Validator") is fast
    assert hot.is_valid(valid)
    assert plain.is_valid(valid)
    assert not hot.is_valid(invalid)
    assert not plain.is_valid(invalid)


def test_a_uuid_with_a_trailing_newline_is_not_a_uuid() -> None:
    from tidings.asyncapi.schemas import compile_schema

    for validator in (compile_schema({"format": "uuid"}), compile_schema({"format": "uuid"}, hot=True)):
        assert not validator.is_valid("01a21a76-1d9a-7107-b9f8-42e4df63b880\n")
