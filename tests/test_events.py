"""The Event base and the envelope: declared type and version, UUID v7 ids, RFC 3339 timestamps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from itertools import pairwise

import pydantic
import pytest

import tidings.events
from tidings.errors import UsageError
from tidings.events import ENVELOPE_FIELDS, JSON, Envelope, Event, new_envelope, utc_now, uuid7, uuid7_many


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


# --- Event --------------------------------------------------------------------------------------------------


def test_event_declares_type_and_version() -> None:
    assert UserCreated.event_type() == "user.created"
    assert UserCreated.event_version() == "1.0"


def test_version_defaults_to_1_0_and_is_a_string() -> None:
    class Plain(Event, type="thing.happened"):
        pass

    class Numbered(Event, type="thing.numbered", version=2):
        pass

    assert Plain.event_version() == "1.0"
    assert Numbered.event_version() == "2"


def test_subclass_inherits_type_and_may_bump_version() -> None:
    class UserCreatedV2(UserCreated, version="2.0"):
        phone: str = ""

    assert UserCreatedV2.event_type() == "user.created"
    assert UserCreatedV2.event_version() == "2.0"
    assert UserCreated.event_version() == "1.0"  # the parent is untouched


def test_missing_type_is_a_clear_usage_error() -> None:
    class Untyped(Event):
        x: int

    with pytest.raises(UsageError, match=r"Untyped has no event type.*type=\"user\.created\""):
        Untyped.event_type()


@pytest.mark.parametrize("bad", ["", " user.created", "user.created "])
def test_blank_or_padded_type_is_refused_at_class_definition(bad: str) -> None:
    with pytest.raises(UsageError, match="non-empty name"):

        class Bad(Event, type=bad):
            pass


def test_extra_fields_are_ignored_not_kept() -> None:
    # tolerant reader: a newer producer may add fields, an older consumer's model neither fails nor keeps them
    # (what a channel may carry is the contract's business, checked against the AsyncAPI schema)
    event = UserCreated(user_id=1, email="a@example.com", name="A", admin=True)  # type: ignore[call-arg]
    assert event.model_dump() == {"user_id": 1, "email": "a@example.com", "name": "A"}
    assert not hasattr(event, "admin")
    assert UserCreated.model_validate({"user_id": 1, "email": "a@example.com", "name": "A", "phone": "555"}) == event


def test_missing_and_wrong_fields_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="email"):
        UserCreated(user_id=1, name="A")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="user_id"):
        UserCreated(user_id="not a number", email="a@example.com", name="A")  # type: ignore[arg-type]


def test_events_are_frozen_and_hashable() -> None:
    event = UserCreated(user_id=1, email="a@example.com", name="A")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        event.name = "B"
    assert event == UserCreated(user_id=1, email="a@example.com", name="A")
    assert hash(event) == hash(UserCreated(user_id=1, email="a@example.com", name="A"))


def test_type_and_version_are_not_fields() -> None:
    event = UserCreated(user_id=1, email="a@example.com", name="A")
    assert event.model_dump() == {"user_id": 1, "email": "a@example.com", "name": "A"}
    assert set(UserCreated.model_fields) == {"user_id", "email", "name"}


# --- uuid7 --------------------------------------------------------------------------------------------------


def test_uuid7_is_an_rfc9562_version_7_uuid() -> None:
    for _ in range(100):
        text = uuid7()
        value = uuid.UUID(text)
        assert str(value) == text  # canonical, lower-case, hyphenated
        assert value.version == 7
        assert text[14] == "7"  # the version nibble
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 62) & 0b11 == 0b10  # the variant bits


def test_uuid7_is_strictly_increasing_in_a_tight_loop() -> None:
    ids = [uuid7() for _ in range(10_000)]
    ints = [uuid.UUID(i).int for i in ids]
    assert all(a < b for a, b in pairwise(ints))
    assert ids == sorted(ids)  # the text sorts the same way as the numbers
    assert len(set(ids)) == len(ids)


def test_uuid7_many_continues_the_same_strictly_increasing_sequence() -> None:
    # batches big enough to spend the 12-bit counter inside one millisecond, between single ids
    ids = [uuid7(), *uuid7_many(5_000), uuid7(), *uuid7_many(1), *uuid7_many(0), uuid7()]
    values = [uuid.UUID(i) for i in ids]
    assert len(ids) == 5_004
    assert all(a.int < b.int for a, b in pairwise(values))
    assert all(
        v.version == 7 and (v.int >> 62) & 0b11 == 0b10 and str(v) == t for v, t in zip(values, ids, strict=True)
    )
    assert len({i[-12:] for i in ids}) == len(ids)  # fresh randomness in every id


def test_uuid7_time_prefix_is_now() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    ms = value.int >> 80
    # never behind the clock; ahead only if ids were made faster than 4,096 a millisecond and the
    # counter borrowed the next millisecond (RFC 9562 §6.2): a few at most, after the loop above
    assert before <= ms <= after + 5


# --- utc_now ------------------------------------------------------------------------------------------------

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def test_utc_now_is_rfc3339_utc_with_z() -> None:
    before = datetime.now(UTC)
    text = utc_now()
    after = datetime.now(UTC)
    assert RFC3339_UTC.match(text), text
    parsed = datetime.fromisoformat(text)  # 3.11 reads the Z
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == UTC.utcoffset(None)
    assert before <= parsed <= after


# --- Envelope -----------------------------------------------------------------------------------------------


def test_new_envelope_fills_id_time_and_defaults() -> None:
    env = new_envelope("user.created", "1.0", source="user-service")
    assert env.event_type == "user.created"
    assert env.version == "1.0"
    assert env.source == "user-service"
    assert uuid.UUID(env.event_id).version == 7
    assert RFC3339_UTC.match(env.timestamp)
    assert env.content_type == JSON == "application/json"
    assert env.causation_id == ""


def test_correlation_defaults_to_the_event_id() -> None:
    env = new_envelope("user.created", "1.0")
    assert env.correlation_id == env.event_id


def test_correlation_and_causation_are_carried_when_given() -> None:
    cause = new_envelope("user.created", "1.0")
    follow_up = new_envelope("email.sent", "1.0", correlation_id=cause.correlation_id, causation_id=cause.event_id)
    assert follow_up.correlation_id == cause.event_id
    assert follow_up.causation_id == cause.event_id
    assert follow_up.event_id != cause.event_id


def test_each_envelope_is_new() -> None:
    a, b = new_envelope("x.y", "1"), new_envelope("x.y", "1")
    assert a.event_id < b.event_id


def test_envelope_dict_round_trip_drops_empty_fields() -> None:
    env = new_envelope("user.created", "1.0")
    as_dict = env.to_dict()
    assert list(as_dict) == [f for f in ENVELOPE_FIELDS if f in as_dict]
    assert "source" not in as_dict  # empty
    assert "causation_id" not in as_dict
    assert Envelope.from_dict(as_dict) == env
    assert Envelope.from_dict({**as_dict, "user_id": 7}) == env  # other keys are not envelope fields


def test_envelope_from_dict_stringifies() -> None:
    env = Envelope.from_dict({"event_id": "e1", "event_type": "t", "timestamp": "ts", "version": 2})
    assert env.version == "2"


# --- the package --------------------------------------------------------------------------------------------


def test_package_exports_every_public_name_of_its_modules() -> None:
    from tidings.events import codec, envelope, event

    names = tidings.events.__all__
    assert len(set(names)) == len(names)
    assert set(names) == {*codec.__all__, *envelope.__all__, *event.__all__}
    for name in names:
        assert getattr(tidings.events, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = tidings.events.nope


def test_codec_import_does_not_load_pydantic() -> None:
    code = "import sys, tidings.events, tidings.events.codec; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    # the random bytes are drawn in blocks: a child that inherited the parent's block would mint its ids
    uuid7()  # the parent now holds a block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "\n".join(uuid7() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        child = f.read().split("\n")
    parent = [uuid7() for _ in range(50)]
    # same millisecond counters may coincide; the random tails must not
    assert not {i[-12:] for i in child} & {i[-12:] for i in parent}
