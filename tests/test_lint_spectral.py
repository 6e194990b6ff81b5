"""Spectral's AsyncAPI rules on small documents, 2.x and 3.x, and the registry/runner around them."""

from __future__ import annotations

import copy
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings.asyncapi import LoadOptions, check_file
from tidings.asyncapi.diagnostics import Diagnostic, Severity
from tidings.lint import (
    RULE_FAILED,
    LintConfig,
    Registry,
    RuleContext,
    builtin_registry,
    lint_document,
    lint_file,
    rule,
)


def lint(tmp_path: Path, text: str, config: LintConfig | None = None) -> list[Diagnostic]:
    path = tmp_path / "api.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return lint_file(path, config or LintConfig(), LoadOptions(root=str(tmp_path))).diagnostics


def paths(diagnostics: list[Diagnostic], code: str) -> list[str]:
    return [d.json_path for d in diagnostics if d.code == code]


def codes(diagnostics: list[Diagnostic]) -> set[str]:
    return {d.code for d in diagnostics}


def enabled(*names: str) -> LintConfig:
    """The default configuration plus rules that are off by default."""
    registry = builtin_registry()
    return LintConfig(registry, {n: registry.get(n).severity for n in names})  # type: ignore[union-attr]


MINIMAL_V2 = """
    asyncapi: 2.6.0
    info: {title: T, version: '1'}
    channels: {}
"""

#: follows every rule, Spectral's and the guide's
GOOD_V2 = """
    asyncapi: 2.6.0
    id: urn:example:users
    defaultContentType: application/json
    info:
      title: Users
      version: '1.0.0'
      description: User events.
      contact: {name: Team, url: https://example.org/team, email: team@example.org}
      license: {name: Apache-2.0, url: https://www.apache.org/licenses/LICENSE-2.0}
    tags:
      - name: users
    servers:
      production: {url: 'kafka.internal:9092', protocol: kafka}
    channels:
      user.created:
        subscribe:
          operationId: sendUserCreated
          description: Sent once a user has signed up.
          message: {$ref: '#/components/messages/UserCreated'}
    components:
      messages:
        UserCreated:
          messageId: userCreated
          payload: {$ref: '#/components/schemas/UserCreated'}
      schemas:
        UserCreated:
          type: object
          required: [event_id, event_type, timestamp, version, user_id]
          properties:
            event_id: {type: string, format: uuid}
            event_type: {type: string, const: user.created}
            timestamp: {type: string, format: date-time}
            version: {type: string, const: '1.0'}
            user_id: {type: integer}
"""


GOOD_V3 = """
    asyncapi: 3.1.0
    id: urn:example:users
    defaultContentType: application/json
    info:
      title: Users
      version: '1.0.0'
      description: User events.
      contact: {name: Team, url: https://example.org/team, email: team@example.org}
      license: {name: Apache-2.0}
      tags: [{name: users}]
    servers:
      production: {host: 'kafka.internal:9092', protocol: kafka}
    channels:
      userCreated:
        address: user.created
        messages:
          UserCreated: {$ref: '#/components/messages/UserCreated'}
    operations:
      sendUserCreated:
        action: send
        description: Sent once a user has signed up.
        channel: {$ref: '#/channels/userCreated'}
    components:
      messages:
        UserCreated:
          payload:
            type: object
            required: [eventId, eventType, timestamp, version]
            properties:
              eventId: {type: string, format: uuid}
              eventType: {type: string, const: user.created}
              timestamp: {type: string, format: date-time}
              version: {type: string}
"""

#: a 3.x request/reply exchange, with a reply channel
REPLY_V3 = """
    asyncapi: 3.0.0
    info: {title: T, version: '1'}
    channels:
      requests:
        address: sums.requested
        messages:
          sum: {payload: {type: object, properties: {a: {type: integer}}}}
      replies:
        address: sums.computed
        messages:
          result: {payload: {type: object, required: [s], properties: {s: {type: integer}}}}
    operations:
      sum:
        action: receive
        channel: {$ref: '#/channels/requests'}
        reply:
          channel: {$ref: '#/channels/replies'}
          messages: [{$ref: '#/channels/replies/messages/result'}]
"""


def test_a_document_that_follows_every_rule_has_only_the_version_hint(tmp_path: Path) -> None:
    found = lint(tmp_path, GOOD_V2)
    assert [(d.code, d.json_path) for d in found] == [("asyncapi-latest-version", "/asyncapi")]
    assert found[0].severity is Severity.INFO


def test_a_3x_document_that_follows_every_rule_has_no_finding(tmp_path: Path) -> None:
    assert lint(tmp_path, GOOD_V3) == []


def test_a_bare_document_misses_the_recommended_fields(tmp_path: Path) -> None:
    found = lint(tmp_path, MINIMAL_V2)
    assert {(d.code, d.json_path, d.severity.label) for d in found} == {
        ("asyncapi-id", "", "warning"),
        ("asyncapi-defaultContentType", "", "warning"),
        ("asyncapi-servers", "", "warning"),
        ("asyncapi2-tags", "", "warning"),
        ("asyncapi-info-description", "/info", "warning"),
        ("asyncapi-info-contact", "/info", "warning"),
        ("asyncapi-info-license", "/info", "warning"),
        ("asyncapi-latest-version", "/asyncapi", "info"),
    }


def test_contact_properties_empty_tags_and_empty_servers(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1', contact: {name: Team, url: https://example.org}}
        servers: {}
        tags: []
        channels: {}
        """,
    )
    assert paths(found, "asyncapi-info-contact-properties") == ["/info/contact"]
    assert "email" in next(d.message for d in found if d.code == "asyncapi-info-contact-properties")
    assert paths(found, "asyncapi-servers") == ["/servers"]
    assert paths(found, "asyncapi2-tags") == ["/tags"]  # deliberate: [] is not a non-empty array


def test_server_url_and_channel_address_shapes(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        servers:
          a: {url: 'mqtt://broker.example.com/', protocol: mqtt}
          b: {url: 'mqtt://{}.internal', protocol: mqtt}
        channels:
          users/: {}
          /: {}
        """,
        enabled("asyncapi-server-not-example-com"),
    )
    assert paths(found, "asyncapi2-server-no-trailing-slash") == ["/servers/a/url"]
    assert paths(found, "asyncapi2-server-no-empty-variable") == ["/servers/b/url"]
    assert paths(found, "asyncapi2-channel-no-trailing-slash") == ["/channels/users~1"]  # "/" alone is fine
    assert paths(found, "asyncapi-server-not-example-com") == ["/servers/a/url"]


def test_operation_ids_come_from_the_operation_or_its_traits(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        channels:
          a:
            publish: {message: {payload: {type: string}}}
          b:
            subscribe:
              traits: [{$ref: '#/components/operationTraits/named'}]
              message: {payload: {type: string}}
        components:
          operationTraits:
            named: {operationId: sendB}
        """,
    )
    assert paths(found, "asyncapi2-operation-operationId") == ["/channels/a/publish"]
    assert paths(found, "asyncapi-operation-description") == ["/channels/a/publish", "/channels/b/subscribe"]


MESSAGES_V2 = """
    asyncapi: {version}
    info: {{title: T, version: '1'}}
    channels:
      a:
        publish:
          message: {{$ref: '#/components/messages/Shared'}}
      b:
        publish:
          message:
            oneOf:
              - {{$ref: '#/components/messages/Shared'}}
              - {{payload: {{type: string}}}}
              - {{messageId: named, payload: {{type: string}}}}
    components:
      messages:
        Shared: {{payload: {{type: string}}}}
        ByTrait:
          traits: [{{messageId: byTrait}}]
          payload: {{type: string}}
"""


def test_message_ids_are_reported_once_where_the_message_is_defined(tmp_path: Path) -> None:
    found = lint(tmp_path, MESSAGES_V2.format(version="2.6.0"))
    assert sorted(paths(found, "asyncapi2-message-messageId")) == [
        "/channels/b/publish/message/oneOf/1",
        "/components/messages/Shared",
    ]


def test_message_ids_are_not_asked_for_before_2_4(tmp_path: Path) -> None:
    assert paths(lint(tmp_path, MESSAGES_V2.format(version="2.3.0")), "asyncapi2-message-messageId") == []


def test_unused_components_and_security_schemes(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        servers:
          prod: {url: 'broker:1883', protocol: mqtt, security: [{used: []}]}
        channels:
          a:
            publish:
              message:
                payload: {$ref: '#/components/schemas/Envelope/properties/id'}
        components:
          schemas:
            Envelope: {type: object, properties: {id: {type: string}}}
            Orphan: {type: string}
          securitySchemes:
            used: {type: userPassword}
            unused: {type: userPassword}
        """,
    )
    # a reference into Envelope counts as a use of Envelope (deliberate: Spectral would report it)
    assert paths(found, "asyncapi-unused-component") == ["/components/schemas/Orphan"]
    assert paths(found, "asyncapi2-unused-securityScheme") == ["/components/securitySchemes/unused"]
    assert {d.severity for d in found if "unused" in d.code} == {Severity.INFO}


def test_duplicate_tag_names_are_errors(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        tags: [{name: a}, {name: b}, {name: a}]
        servers:
          prod: {url: 'broker:1883', protocol: mqtt, tags: [{name: x}, {name: x}]}
        channels:
          c:
            publish:
              tags: [{name: t}, {name: t}]
              message: {payload: {type: string}}
        """,
    )
    assert sorted(paths(found, "asyncapi2-tags-uniqueness")) == [
        "/channels/c/publish/tags/1/name",
        "/servers/prod/tags/1/name",
        "/tags/2/name",
    ]
    assert {d.severity for d in found if d.code == "asyncapi2-tags-uniqueness"} == {Severity.ERROR}


def test_schema_defaults_and_examples_must_match_their_schema(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        channels:
          c:
            parameters:
              id: {schema: {type: integer, default: x}}
            publish:
              message:
                payload: {type: object, examples: [{n: 1}, {n: a}], properties: {n: {type: integer}}}
        components:
          schemas:
            Count: {type: integer, default: 3, examples: [1, '2']}
        """,
    )
    assert paths(found, "asyncapi2-schema-default") == ["/channels/c/parameters/id/schema/default"]
    # the string '2' is checked too (deliberate: the CLI skips string values)
    assert sorted(paths(found, "asyncapi2-schema-examples")) == [
        "/channels/c/publish/message/payload/examples/1/n",
        "/components/schemas/Count/examples/1",
    ]


def test_rules_that_spectral_does_not_recommend_are_off_until_enabled(tmp_path: Path) -> None:
    text = """
        asyncapi: 2.6.0
        info: {title: T, version: '1', license: {name: MIT}}
        servers:
          prod: {url: 'api.example.com', protocol: ws}
        tags: [{name: b}, {name: a}]
        channels:
          'users/{id}':
            parameters:
              id: {schema: {type: string}}
        """
    optional = [
        "asyncapi-info-license-url",
        "asyncapi-server-not-example-com",
        "asyncapi-tag-description",
        "asyncapi-tags-alphabetical",
        "asyncapi-parameter-description",
    ]
    assert not codes(lint(tmp_path, text)) & set(optional)
    found = lint(tmp_path, text, enabled(*optional))
    assert paths(found, "asyncapi-info-license-url") == ["/info/license"]
    assert paths(found, "asyncapi-server-not-example-com") == ["/servers/prod/url"]
    assert paths(found, "asyncapi-tag-description") == ["/tags/0", "/tags/1"]
    assert paths(found, "asyncapi-tags-alphabetical") == ["/tags"]
    assert paths(found, "asyncapi-parameter-description") == ["/channels/users~1{id}/parameters/id"]


def test_license_url_is_not_asked_for_when_there_is_no_license(tmp_path: Path) -> None:
    found = lint(tmp_path, MINIMAL_V2, enabled("asyncapi-info-license-url"))
    assert paths(found, "asyncapi-info-license-url") == []
    assert paths(found, "asyncapi-info-license") == ["/info"]


def test_3x_counterparts(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        """
        asyncapi: 3.0.0
        info: {title: T, version: '1'}
        servers:
          prod: {host: 'broker.internal/', protocol: mqtt, security: [{$ref: '#/components/securitySchemes/used'}]}
          bad: {host: '{}.internal', protocol: mqtt}
        channels:
          users: {address: 'users/'}
        operations:
          listen: {action: receive, channel: {$ref: '#/channels/users'}}
        components:
          securitySchemes:
            used: {type: userPassword}
            unused: {type: userPassword}
        """,
    )
    assert paths(found, "asyncapi3-tags") == ["/info"]
    assert paths(found, "asyncapi3-server-no-trailing-slash") == ["/servers/prod/host"]
    assert paths(found, "asyncapi3-server-no-empty-variable") == ["/servers/bad/host"]
    assert paths(found, "asyncapi3-channel-no-trailing-slash") == ["/channels/users/address"]
    assert paths(found, "asyncapi-operation-description") == ["/operations/listen"]
    # 3.x refers to security schemes with $ref, so the unused-component rule covers them
    assert paths(found, "asyncapi-unused-component") == ["/components/securitySchemes/unused"]
    assert not {c for c in codes(found) if c.startswith("asyncapi2-")}
    assert paths(found, "asyncapi-latest-version") == ["/asyncapi"]


def test_findings_point_at_the_source_line(tmp_path: Path) -> None:
    found = lint(tmp_path, MINIMAL_V2)
    contact = next(d for d in found if d.code == "asyncapi-info-contact")
    assert contact.location is not None
    assert (contact.location.file.endswith("api.yaml"), contact.location.line) == (True, 2)


# -- the registry and the runner ------------------------------------------------------------------------
def test_rule_describes_a_plain_function_without_changing_it() -> None:
    @rule("demo-rule", severity="error", description="A demo.", tags=["demo"], versions=[3])
    def demo(ctx: RuleContext) -> Iterator[Diagnostic]:
        yield ctx.report("demo", ())

    registry = Registry()
    added = registry.add(demo)
    assert (added.code, added.severity, added.description, added.tags, added.versions) == (
        "demo-rule",
        Severity.ERROR,
        "A demo.",
        frozenset({"demo"}),
        frozenset({3}),
    )
    assert added.check is demo
    with pytest.raises(ValueError, match="already taken"):
        registry.add(demo)


def test_every_builtin_rule_is_documented_and_tagged() -> None:
    registry = builtin_registry()
    assert len(registry) >= 40
    for r in registry:
        assert r.description, r.code
        assert r.tags & {"spectral", "guide"}, r.code
        assert r.check.__module__.startswith("tidings.lint.")


def test_a_failing_rule_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    def explodes(ctx: RuleContext) -> list[Diagnostic]:
        raise RuntimeError("boom")

    def direct(ctx: RuleContext) -> list[Diagnostic]:
        # built without ctx.report, at another severity: the runner applies the configured one
        return [Diagnostic(Severity.HINT, "direct", "made by hand", ())]

    registry = builtin_registry().copy()
    registry.add(explodes)
    registry.add(direct)
    found = lint(tmp_path, MINIMAL_V2, LintConfig(registry, {"direct": Severity.ERROR}))
    failed = [d for d in found if d.code == RULE_FAILED]
    assert len(failed) == 1
    assert failed[0].severity is Severity.ERROR
    assert '"explodes"' in failed[0].message
    assert "boom" in failed[0].message
    assert [d.severity for d in found if d.code == "direct"] == [Severity.ERROR]
    assert "asyncapi-id" in codes(found)


def test_documents_that_are_not_asyncapi_get_validation_only(tmp_path: Path) -> None:
    found = lint(tmp_path, "openapi: 3.0.0\ninfo: {title: T, version: '1'}\n")
    assert codes(found) == {"not-asyncapi"}
    found = lint(tmp_path, "asyncapi: 1.2.0\ninfo: {title: T, version: '1'}\n")
    assert codes(found) == {"unsupported-version"}


JUNK: list[object] = [None, "x", 0, [], {}, ["a"], {"$ref": "#/nope"}, {"$ref": 5}, True, {"a": 1}, [None]]


@pytest.mark.parametrize(
    "text",
    [GOOD_V2, MESSAGES_V2.format(version="2.6.0"), GOOD_V3, REPLY_V3],
    ids=["good-2.6", "messages-2.6", "good-3.1", "reply-3.0"],
)
def test_rules_survive_malformed_documents(tmp_path: Path, text: str) -> None:
    """Replace random parts of a document with values of the wrong type: every rule must cope (report or
    stay silent), none may raise. Deterministic: a fixed seed."""
    path = tmp_path / "api.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    registry = builtin_registry()
    everything = LintConfig(registry, {r.code: r.severity for r in registry})
    rnd = random.Random(20250115)
    for _ in range(150):
        checked = check_file(path, LoadOptions(root=str(tmp_path)))
        assert checked.document is not None
        slots: list[tuple[Any, Any]] = []
        stack: list[Any] = [checked.document.data]
        while stack:
            node = stack.pop()
            keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
            for k in keys:
                slots.append((node, k))
                stack.append(node[k])
        for _ in range(rnd.randint(1, 4)):
            parent, key = rnd.choice(slots)
            parent[key] = copy.deepcopy(rnd.choice(JUNK))
        failed = [d.message for d in lint_document(checked.document, everything) if d.code == RULE_FAILED]
        assert failed == []


def test_spectral_builtin_names_map_to_our_rules() -> None:
    from tidings.lint.spectral import SPECTRAL_ALIASES

    registry = builtin_registry()
    for alias, targets in SPECTRAL_ALIASES.items():
        assert alias not in registry, alias
        assert all(t in registry for t in targets), alias
