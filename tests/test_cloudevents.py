"""CloudEvents 1.0 interop with the official ``cloudevents`` SDK, both directions, both content modes.

Which binding: tidings' ``headers`` placement names its headers ``ce_id``, ``ce_type``... and ``content-type``,
which is the CloudEvents **Kafka** protocol binding (the HTTP binding uses ``ce-id`` with a dash and
percent-encodes the values; AMQP uses ``cloudEvents_``). So binary content mode is checked against the SDK's Kafka
binding. Structured content mode is one JSON object whatever the transport: it is checked against the Kafka
binding and the HTTP binding.

The SDK's current API (``cloudevents.core``, 2.x) is the main partner; its 1.x API, which 2.x keeps as
``cloudevents.v1`` (``cloudevents.kafka`` in the SDK 1.x), is checked too, since producers still use it.

The SDK's Kafka binding carries header values as bytes, tidings' codec as str: the helpers below convert, as a
Kafka adapter does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http, kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as legacy_conversion
from cloudevents.v1 import http as legacy_http
from cloudevents.v1 import kafka as legacy_kafka
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.events import (
    CLOUDEVENTS_JSON,
    DEFAULT_SOURCE,
    JSON,
    Envelope,
    Placement,
    decode,
    encode,
    new_envelope,
)

FORMAT = JSONFormat()

texts = st.text(st.characters(codec="utf-8"), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)
data_dicts = st.dictionaries(texts, json_values, max_size=6)
# derandomized: the same examples on every run
SOME = settings(max_examples=50, deadline=None, derandomize=True)

DATA = {"user_id": 12345, "email": "john.doe@example.com", "name": "John Doe", "tags": ["a", "é", "🎉"]}


def _envelope(**changes: str) -> Envelope:
    cause = new_envelope("user.signed_up", "1.0", source="signup-service")
    envelope = new_envelope(
        "user.created",
        "1.0",
        source="user-service",
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
    )
    return envelope._replace(**changes)


def _to_kafka(body: bytes, headers: dict[str, str], key: bytes | None = None) -> kafka.KafkaMessage:
    return kafka.KafkaMessage(headers={k: v.encode() for k, v in headers.items()}, key=key, value=body)


def _from_kafka(message: kafka.KafkaMessage | legacy_kafka.KafkaMessage) -> tuple[Envelope, dict[str, Any]]:
    value = message.value.encode() if isinstance(message.value, str) else message.value
    return decode(value, {k: v.decode() for k, v in message.headers.items()})


def _assert_sdk_event_matches(event: Any, envelope: Envelope, data: dict[str, Any]) -> None:
    """The SDK's event carries every field of the envelope, under the CloudEvents names."""
    assert event.get_specversion() == "1.0"
    assert event.get_id() == envelope.event_id
    assert event.get_type() == envelope.event_type
    assert event.get_source() == (envelope.source or DEFAULT_SOURCE)
    assert event.get_time() == datetime.fromisoformat(envelope.timestamp)
    assert event.get_datacontenttype() == envelope.content_type
    assert event.get_extension("eventversion") == envelope.version
    assert event.get_extension("correlationid") == envelope.correlation_id
    assert event.get_extension("causationid") == (envelope.causation_id or None)
    assert event.get_data() == data


# --- (a) tidings writes, the SDK reads ----------------------------------------------------------------------


def test_sdk_reads_tidings_structured_mode() -> None:
    envelope = _envelope()
    body, headers = encode(envelope, DATA, Placement.CLOUDEVENTS)
    assert headers == {"content-type": CLOUDEVENTS_JSON}
    message = _to_kafka(body, headers)
    _assert_sdk_event_matches(kafka.from_structured(message, FORMAT), envelope, DATA)
    _assert_sdk_event_matches(kafka.from_kafka(message, FORMAT), envelope, DATA)  # the SDK sees structured
    # the same body over HTTP
    _assert_sdk_event_matches(http.from_structured(http.HTTPMessage(headers, body), FORMAT), envelope, DATA)


def test_sdk_reads_tidings_binary_mode() -> None:
    envelope = _envelope()
    body, headers = encode(envelope, DATA, Placement.HEADERS)
    message = _to_kafka(body, headers)
    _assert_sdk_event_matches(kafka.from_binary(message, FORMAT), envelope, DATA)
    _assert_sdk_event_matches(kafka.from_kafka(message, FORMAT), envelope, DATA)  # the SDK sees binary


@pytest.mark.parametrize("placement", [Placement.HEADERS, Placement.CLOUDEVENTS])
def test_sdk_accepts_an_envelope_without_source(placement: Placement) -> None:
    # CloudEvents requires a non-empty source; the SDK refuses an event without one...
    with pytest.raises(CloudEventValidationError, match="source"):
        CloudEvent({"id": "e-1", "type": "user.created", "source": ""})
    # ...so tidings fills in its default rather than emit an invalid CloudEvent
    envelope = new_envelope("user.created", "1.0")
    assert envelope.source == ""
    event = kafka.from_kafka(_to_kafka(*encode(envelope, {}, placement)), FORMAT)
    assert event.get_source() == DEFAULT_SOURCE
    assert event.get_extension("causationid") is None  # empty envelope fields are left out, not sent empty


def test_sdk_reads_tidings_event_without_data_fields() -> None:
    envelope = _envelope()
    for placement in (Placement.HEADERS, Placement.CLOUDEVENTS):
        event = kafka.from_kafka(_to_kafka(*encode(envelope, {}, placement)), FORMAT)
        assert event.get_data() == {}


@SOME
@given(data=data_dicts, source=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20))
def test_sdk_reads_any_json_data_from_tidings(data: dict[str, Any], source: str) -> None:
    envelope = _envelope(source=source)
    for placement in (Placement.HEADERS, Placement.CLOUDEVENTS):
        event = kafka.from_kafka(_to_kafka(*encode(envelope, data, placement)), FORMAT)
        _assert_sdk_event_matches(event, envelope, data)


def test_legacy_sdk_api_reads_tidings() -> None:
    envelope = _envelope()
    body, headers = encode(envelope, DATA, Placement.HEADERS)
    event = legacy_kafka.from_binary(legacy_kafka.KafkaMessage(_to_kafka(body, headers).headers, None, body))
    assert event["id"] == envelope.event_id
    assert event["type"] == envelope.event_type
    assert event["source"] == envelope.source
    assert event["time"] == envelope.timestamp
    assert event["datacontenttype"] == JSON
    assert (event["eventversion"], event["correlationid"], event["causationid"]) == (
        envelope.version,
        envelope.correlation_id,
        envelope.causation_id,
    )
    assert event.get_data() == DATA

    body, headers = encode(envelope, DATA, Placement.CLOUDEVENTS)
    event = legacy_kafka.from_structured(legacy_kafka.KafkaMessage(_to_kafka(body, headers).headers, None, body))
    assert (event["id"], event["type"], event["source"], event["time"]) == (
        envelope.event_id,
        envelope.event_type,
        envelope.source,
        envelope.timestamp,
    )
    assert (event["eventversion"], event["correlationid"], event["causationid"]) == (
        envelope.version,
        envelope.correlation_id,
        envelope.causation_id,
    )
    # (the 1.x Kafka binding takes a structured message's content-type header, the format's
    # application/cloudevents+json, for datacontenttype: a quirk of that SDK, so not compared here)
    assert event.get_data() == DATA
    # and the 1.x HTTP entry point, for the structured body
    event = legacy_http.from_http(headers, body)
    assert (event["id"], event["source"], event["datacontenttype"]) == (envelope.event_id, envelope.source, JSON)
    assert event.get_data() == DATA


# --- (b) the SDK writes, tidings reads ----------------------------------------------------------------------


def _sdk_event(data: dict[str, Any] | None = DATA, **attributes: Any) -> CloudEvent:
    base: dict[str, Any] = {
        "id": "6f0f1a0e-1d6b-4a4e-9a65-0c5c2f1b7b11",
        "type": "user.created",
        "source": "/user-service",
        "time": datetime(2025, 1, 15, 10, 30, 0, 123456, tzinfo=UTC),
        "datacontenttype": "application/json",
        "eventversion": "1.0",
        "correlationid": "corr-1",
        "causationid": "cause-1",
    }
    return CloudEvent({**base, **attributes}, data)


EXPECTED = Envelope(
    event_id="6f0f1a0e-1d6b-4a4e-9a65-0c5c2f1b7b11",
    event_type="user.created",
    timestamp="2025-01-15T10:30:00.123456Z",
    version="1.0",
    source="/user-service",
    correlation_id="corr-1",
    causation_id="cause-1",
    content_type=JSON,
)


def test_tidings_reads_sdk_structured_mode() -> None:
    message = kafka.to_structured(_sdk_event(), FORMAT)
    assert message.headers == {"content-type": CLOUDEVENTS_JSON.encode()}
    assert _from_kafka(message) == (EXPECTED, DATA)
    http_message = http.to_structured(_sdk_event(), FORMAT)
    assert decode(http_message.body, http_message.headers) == (EXPECTED, DATA)


def test_tidings_reads_sdk_binary_mode() -> None:
    message = kafka.to_binary(_sdk_event(), FORMAT)
    assert message.headers["ce_id"] == EXPECTED.event_id.encode()  # the same header names as tidings'
    assert _from_kafka(message) == (EXPECTED, DATA)


def test_tidings_reads_a_minimal_sdk_event() -> None:
    """Only what CloudEvents requires (the SDK fills id, time and specversion): tidings fills the rest."""
    event = CloudEvent({"type": "user.deleted", "source": "/user-service"}, {"user_id": 7})
    for message in (kafka.to_binary(event, FORMAT), kafka.to_structured(event, FORMAT)):
        envelope, data = _from_kafka(message)
        assert envelope.event_id == event.get_id()
        assert envelope.event_type == "user.deleted"
        assert envelope.source == "/user-service"
        assert datetime.fromisoformat(envelope.timestamp) == event.get_time()
        assert envelope.timestamp.endswith("Z")
        assert (envelope.version, envelope.correlation_id, envelope.causation_id) == ("", "", "")
        assert envelope.content_type == JSON  # JSON unless said otherwise
        assert data == {"user_id": 7}


def test_tidings_reads_sdk_events_without_data() -> None:
    event = _sdk_event(None)
    binary = kafka.to_binary(event, FORMAT)
    assert binary.value == b""  # the SDK sends an empty value
    assert _from_kafka(binary) == (EXPECTED, {})
    assert _from_kafka(kafka.to_structured(event, FORMAT)) == (EXPECTED, {})


def test_tidings_keeps_an_sdk_time_with_an_offset() -> None:
    when = datetime(2025, 1, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    for message in (kafka.to_binary(_sdk_event(time=when), FORMAT), kafka.to_structured(_sdk_event(time=when), FORMAT)):
        envelope, _ = _from_kafka(message)
        assert envelope.timestamp == "2025-01-15T12:30:00+02:00"
        assert datetime.fromisoformat(envelope.timestamp) == when


def test_tidings_ignores_the_partition_key_and_other_extensions() -> None:
    event = _sdk_event(partitionkey="user-12345", traceparent="00-4bf92f3577b34da6-00f067aa0ba902b7-01")
    for message in (kafka.to_binary(event, FORMAT), kafka.to_structured(event, FORMAT)):
        assert message.key == "user-12345"
        assert _from_kafka(message) == (EXPECTED, DATA)


def test_tidings_refuses_sdk_binary_data_with_a_reason() -> None:
    from tidings.events import DecodeError

    event = _sdk_event(b"\x00\x01binary", datacontenttype="application/octet-stream")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=r"data_base64"):
        _from_kafka(kafka.to_structured(event, FORMAT))
    with pytest.raises(DecodeError, match=r"^not JSON"):
        _from_kafka(kafka.to_binary(event, FORMAT))


@SOME
@given(data=data_dicts)
def test_tidings_reads_any_json_data_from_the_sdk(data: dict[str, Any]) -> None:
    event = _sdk_event(data)
    for message in (kafka.to_binary(event, FORMAT), kafka.to_structured(event, FORMAT)):
        assert _from_kafka(message) == (EXPECTED, data)


def test_tidings_reads_the_legacy_sdk_api() -> None:
    attributes = {
        "id": EXPECTED.event_id,
        "type": EXPECTED.event_type,
        "source": EXPECTED.source,
        "time": EXPECTED.timestamp,  # the 1.x API keeps time as a string
        "datacontenttype": JSON,
        "eventversion": "1.0",
        "correlationid": "corr-1",
        "causationid": "cause-1",
    }
    event = legacy_http.CloudEvent(attributes, DATA)
    assert _from_kafka(legacy_kafka.to_binary(event)) == (EXPECTED, DATA)
    # the 1.x Kafka binding moves datacontenttype out of a structured body into the content-type header;
    # tidings reads the body, where JSON is the default anyway
    assert _from_kafka(legacy_kafka.to_structured(event)) == (EXPECTED, DATA)
    headers, body = legacy_conversion.to_structured(event)
    assert decode(body, headers) == (EXPECTED, DATA)


# --- both ways ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", [Placement.HEADERS, Placement.CLOUDEVENTS])
def test_tidings_to_sdk_to_tidings(placement: Placement) -> None:
    """A message that goes through the SDK (read, then written again in the other mode) comes back the same."""
    envelope = _envelope()
    event = kafka.from_kafka(_to_kafka(*encode(envelope, DATA, placement)), FORMAT)
    other = kafka.to_structured if placement is Placement.HEADERS else kafka.to_binary
    assert _from_kafka(other(event, FORMAT)) == (envelope, DATA)


def test_structured_body_is_plain_json() -> None:
    body, _ = encode(_envelope(), DATA, Placement.CLOUDEVENTS)
    assert set(orjson.loads(body)) == {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "datacontenttype",
        "eventversion",
        "correlationid",
        "causationid",
        "data",
    }
