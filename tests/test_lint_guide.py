"""The guide's event-design rules: event names, self-contained payloads, versioning."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tidings.asyncapi import LoadOptions, check_file
from tidings.asyncapi.diagnostics import Diagnostic, Severity
from tidings.lint import LintConfig, lint_file

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "examples" / "user-service.asyncapi.yaml"
PAYLOAD_CODES = (
    "tidings-payload-event-id",
    "tidings-payload-timestamp",
    "tidings-payload-event-type",
    "tidings-payload-version",
    "tidings-payload-required",
)


def lint(tmp_path: Path, text: str) -> list[Diagnostic]:
    path = tmp_path / "api.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return lint_file(path, LintConfig(), LoadOptions(root=str(tmp_path))).diagnostics


def by_code(diagnostics: list[Diagnostic], code: str) -> list[Diagnostic]:
    return [d for d in diagnostics if d.code == code]


def guide_findings(diagnostics: list[Diagnostic]) -> list[tuple[str, str]]:
    return sorted((d.code, d.json_path) for d in diagnostics if d.code.startswith("tidings-"))


def one_event(payload: str, *, channel: str = "user.created", extra: str = "") -> str:
    """A 2.6.0 document with one event on ``channel`` whose payload is ``payload`` (YAML, indented 6)."""
    return f"""
        asyncapi: 2.6.0
        info: {{title: T, version: '1'}}
        channels:
          {channel}:
            subscribe:
              message: {{$ref: '#/components/messages/Event'}}
        components:
          messages:
            Event:
              payload:
{textwrap.indent(textwrap.dedent(payload).strip(), " " * 16)}
{extra}
        """


# -- the guide's own document ---------------------------------------------------------------------------
def test_the_seed_is_valid() -> None:
    checked = check_file(SEED, LoadOptions(root=str(REPO)))
    assert checked.valid, checked.diagnostics


def test_the_seed_should_add_event_type_and_version_to_each_payload() -> None:
    found = lint_file(SEED, LintConfig(), LoadOptions(root=str(REPO))).diagnostics
    assert guide_findings(found) == sorted(
        (code, f"/components/schemas/{name}Payload/properties")
        for name in ("UserCreated", "UserUpdated", "UserDeleted")
        for code in ("tidings-payload-event-type", "tidings-payload-version")
    )
    created = next(d for d in by_code(found, "tidings-payload-event-type") if "UserCreated" in d.json_path)
    assert '"event_type"' in created.message
    assert (
        created.suggestion
        == 'add property "event_type" (type: string, const: "user.created") and list it in "required"'
    )
    version = by_code(found, "tidings-payload-version")[0]
    assert '"version"' in version.message
    assert version.suggestion.startswith('add property "version"')
    assert all(d.severity is Severity.WARNING for d in found if d.code.startswith("tidings-"))
    # the location is the payload schema's "properties" key, where the fields go
    assert created.location is not None
    assert created.location.line == 49


# -- event names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channel", "suggestion"),
    [
        ("user_event", "rename to user.created"),
        ("do_something", "rename to something.done"),
        ("create_user", "rename to user.created"),
        ("update_order", "rename to order.updated"),
    ],
)
def test_bad_channel_names_from_the_guide(tmp_path: Path, channel: str, suggestion: str) -> None:
    found = by_code(lint(tmp_path, one_event("{type: string}", channel=channel)), "tidings-event-name")
    assert [(d.json_path, d.suggestion) for d in found] == [(f"/channels/{channel}", suggestion)]
    assert found[0].location is not None
    assert found[0].location.line == 4


@pytest.mark.parametrize("channel", ["user.created", "order.placed", "payment.processed", "inventory.updated"])
def test_good_channel_names_from_the_guide(tmp_path: Path, channel: str) -> None:
    found = lint(tmp_path, one_event("{type: string}", channel=channel))
    assert not by_code(found, "tidings-event-name")
    assert not by_code(found, "tidings-event-name-style")


def test_topic_paths_commands_and_unreadable_names_are_not_judged(tmp_path: Path) -> None:
    for channel in ("users/{id}/create", "orders.commands.create_order", "rpc_queue", "heartbeat"):
        found = lint(tmp_path, one_event("{type: string}", channel=f"'{channel}'"))
        assert not [d for d in found if d.code.startswith("tidings-event-name")], channel


def test_event_type_values_must_be_past_tense_and_dotted(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        one_event(
            """
            type: object
            properties:
              event_type: {type: string, enum: [UserCreated, create_user, user.deleted]}
            """,
            channel="'users'",
        ),
    )
    style = by_code(found, "tidings-event-name-style")
    assert [(d.json_path, d.suggestion, d.severity) for d in style] == [
        ("/components/messages/Event/payload/properties/event_type/enum/0", "rename to user.created", Severity.INFO)
    ]
    named = by_code(found, "tidings-event-name")
    assert [(d.json_path, d.suggestion) for d in named] == [
        ("/components/messages/Event/payload/properties/event_type/enum/1", "rename to user.created")
    ]


def test_message_ids_are_judged_as_identifiers(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        channels:
          users:
            subscribe:
              message:
                oneOf:
                  - {$ref: '#/components/messages/createUser'}
                  - {$ref: '#/components/messages/UserDeleted'}
        components:
          messages:
            createUser: {messageId: createUser, payload: {type: string}}
            UserDeleted: {messageId: userDeleted, payload: {type: string}}
        """,
    )
    # key and messageId are one name: reported once, at the messageId
    assert [(d.json_path, d.suggestion) for d in by_code(found, "tidings-event-name")] == [
        ("/components/messages/createUser/messageId", "rename to userCreated")
    ]


def test_3x_addresses_and_request_reply_messages(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 3.0.0
        info: {title: T, version: '1'}
        channels:
          users:
            address: user_event
            messages:
              Changed: {payload: {type: string}}
          sums:
            address: sums
            messages:
              requestSum: {payload: {type: object, properties: {a: {type: integer}}}}
              sumResult: {payload: {type: object, properties: {s: {type: integer}}}}
        operations:
          sum:
            action: receive
            channel: {$ref: '#/channels/sums'}
            messages: [{$ref: '#/channels/sums/messages/requestSum'}]
            reply:
              channel: {$ref: '#/channels/sums'}
              messages: [{$ref: '#/channels/sums/messages/sumResult'}]
        """,
    )
    assert [(d.json_path, d.suggestion) for d in by_code(found, "tidings-event-name")] == [
        ("/channels/users/address", "rename to user.created")
    ]
    # requests and replies are not events: no payload findings for them
    assert not [d for d in found if d.code in PAYLOAD_CODES]


# -- self-contained payloads ----------------------------------------------------------------------------
def test_an_incomplete_payload_gets_one_finding_per_missing_field(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        one_event(
            """
            type: object
            properties:
              user_id: {type: integer}
              action: {type: string}
            """
        ),
    )
    assert guide_findings(found) == sorted(
        [(code, "/components/messages/Event/payload/properties") for code in PAYLOAD_CODES[:-1]]
        + [("tidings-payload-required", "/components/messages/Event/payload")]
    )
    suggestions = {d.code: d.suggestion for d in found}
    assert '"event_id" (type: string, format: uuid)' in suggestions["tidings-payload-event-id"]
    assert '"timestamp" (type: string, format: date-time)' in suggestions["tidings-payload-timestamp"]
    assert 'const: "user.created"' in suggestions["tidings-payload-event-type"]
    assert suggestions["tidings-payload-required"] == "add required: [user_id, action]"


def test_fields_present_but_without_their_format(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        one_event(
            """
            type: object
            required: [event_id, timestamp]
            properties:
              event_id: {type: string}
              timestamp: {type: integer}
              event_type: {type: string}
              version: {type: string}
            """
        ),
    )
    assert [d.suggestion for d in by_code(found, "tidings-payload-event-id")] == ['add format: uuid to "event_id"']
    assert [d.suggestion for d in by_code(found, "tidings-payload-timestamp")] == [
        'add format: date-time to "timestamp"'
    ]
    assert not by_code(found, "tidings-payload-event-type")
    assert not by_code(found, "tidings-payload-version")


def test_an_entity_id_is_not_an_event_id_and_camel_case_payloads_get_camel_case_names(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        one_event(
            """
            type: object
            required: [id]
            properties:
              id: {type: integer}
              sentAt: {type: string, format: date-time}
              userId: {type: integer}
            """
        ),
    )
    event_id = by_code(found, "tidings-payload-event-id")
    assert len(event_id) == 1
    assert '"id" is not a UUID' in event_id[0].message
    assert '"eventId"' in event_id[0].suggestion
    assert '"eventType"' in by_code(found, "tidings-payload-event-type")[0].suggestion
    assert not by_code(found, "tidings-payload-timestamp")  # sentAt, format date-time


def test_envelope_fields_may_come_from_allof_or_headers(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        channels:
          user.created:
            subscribe:
              message:
                headers:
                  type: object
                  properties:
                    event_type: {type: string}
                    version: {type: string}
                payload:
                  allOf:
                    - {$ref: '#/components/schemas/Envelope'}
                    - type: object
                      required: [user_id]
                      properties:
                        user_id: {type: integer}
        components:
          schemas:
            Envelope:
              type: object
              required: [event_id, timestamp]
              properties:
                event_id: {type: string, format: uuid}
                timestamp: {type: string, format: date-time}
        """,
    )
    assert guide_findings(found) == []


def test_a_version_in_the_event_type_counts_as_a_version(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        one_event(
            """
            type: object
            required: [event_id]
            properties:
              event_id: {type: string, format: uuid}
              timestamp: {type: string, format: date-time}
              event_type: {type: string, const: user.created.v2}
            """
        ),
    )
    assert guide_findings(found) == []


def test_versioning_must_be_consistent_across_events(tmp_path: Path) -> None:
    envelope = """
                  event_id: {type: string, format: uuid}
                  timestamp: {type: string, format: date-time}"""
    found = lint(
        tmp_path,
        f"""
        asyncapi: 2.6.0
        info: {{title: T, version: '1'}}
        channels:
          events:
            subscribe:
              message:
                oneOf:
                  - {{$ref: '#/components/messages/A'}}
                  - {{$ref: '#/components/messages/B'}}
                  - {{$ref: '#/components/messages/C'}}
        components:
          messages:
            A:
              payload:
                type: object
                required: [event_id]
                properties:{envelope}
                  event_type: {{type: string, const: user.created}}
                  version: {{type: string}}
            B:
              payload:
                type: object
                required: [event_id]
                properties:{envelope}
                  event_type: {{type: string, const: user.deleted}}
                  version: {{type: string}}
            C:
              payload:
                type: object
                required: [event_id]
                properties:{envelope}
                  event_type: {{type: string, const: user.renamed.v2}}
        """,
    )
    assert guide_findings(found) == [("tidings-event-versioning", "/components/messages/C/payload")]
    assert "2 other event(s)" in by_code(found, "tidings-event-versioning")[0].message


def test_a_payload_shared_by_two_messages_is_reported_once(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        channels:
          user.created:
            subscribe: {message: {payload: {$ref: '#/components/schemas/P'}}}
          user.deleted:
            subscribe: {message: {payload: {$ref: '#/components/schemas/P'}}}
        components:
          schemas:
            P: {type: object, required: [a], properties: {a: {type: string}}}
        """,
    )
    assert [d.json_path for d in by_code(found, "tidings-payload-version")] == ["/components/schemas/P/properties"]


def test_non_object_and_non_json_schema_payloads_are_not_judged(tmp_path: Path) -> None:
    found = lint(tmp_path, one_event("{type: string}"))
    assert not [d for d in found if d.code in PAYLOAD_CODES]
    found = lint(
        tmp_path,
        one_event("{type: record, name: User, fields: [{name: id, type: string}]}").replace(
            "            Event:\n",
            "            Event:\n              schemaFormat: application/vnd.apache.avro;version=1.9.0\n",
        ),
    )
    assert not [d for d in found if d.code in PAYLOAD_CODES]
