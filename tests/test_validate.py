"""The validator's rules, one small document at a time (AsyncAPI 2.6.0 and 3.0.0), and the validate CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from conftest import CliRun, WriteYaml
from tidings.asyncapi import CheckResult, Diagnostic, Severity, check_file

Cli = Callable[..., CliRun]

V2 = """\
asyncapi: 2.6.0
info:
  title: Orders
  version: 1.0.0
servers:
  prod:
    url: broker.example.com:9092
    protocol: kafka
    security:
      - key: []
channels:
  orders/{orderId}:
    parameters:
      orderId:
        schema: {type: string}
    subscribe:
      operationId: sendOrder
      message:
        $ref: '#/components/messages/Order'
  audit:
    publish:
      operationId: receiveAudit
      message:
        payload: {type: string}
components:
  messages:
    Order:
      headers:
        type: object
        properties:
          trace: {type: string}
      payload:
        type: object
        properties:
          id: {type: integer}
          status: {type: string, enum: [new, paid]}
      examples:
        - headers: {trace: abc}
          payload: {id: 1, status: new}
  securitySchemes:
    key:
      type: httpApiKey
      name: X-Key
      in: header
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://auth.example.com/token
          scopes:
            orders:write: write orders
"""

V3 = """\
asyncapi: 3.0.0
info:
  title: Orders
  version: 1.0.0
servers:
  prod:
    host: broker.example.com:9092
    protocol: kafka
    security:
      - $ref: '#/components/securitySchemes/key'
channels:
  order:
    address: orders/{orderId}
    servers:
      - $ref: '#/servers/prod'
    parameters:
      orderId:
        description: the order
    messages:
      order:
        $ref: '#/components/messages/Order'
  audit:
    address: audit
    messages:
      entry:
        payload: {type: string}
operations:
  sendOrder:
    action: send
    channel:
      $ref: '#/channels/order'
    messages:
      - $ref: '#/channels/order/messages/order'
components:
  servers:
    spare:
      host: spare.example.com
      protocol: kafka
  messages:
    Order:
      payload:
        type: object
        properties:
          id: {type: integer}
          status: {type: string, enum: [new, paid]}
      examples:
        - payload: {id: 1, status: new}
  securitySchemes:
    key:
      type: httpApiKey
      name: X-Key
      in: header
"""

BASES = {"2.6.0": V2, "3.0.0": V3}


def variant(base: str, *edits: tuple[str, str]) -> str:
    """``base`` with each ``(old, new)`` replaced exactly once (so a typo in a test cannot go unnoticed)."""
    for old, new in edits:
        assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
        base = base.replace(old, new)
    return base


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` occurrence of ``needle``."""
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    return text.count("\n", 0, at) + 1


def col_of(text: str, needle: str) -> int:
    at = text.index(needle)
    return at - (text.rfind("\n", 0, at) + 1) + 1


@pytest.fixture
def check(write_yaml: WriteYaml) -> Callable[[str], CheckResult]:
    def run(text: str, name: str = "spec.yaml") -> CheckResult:
        return check_file(write_yaml(name, text))

    return run


def errors(result: CheckResult) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def only(result: CheckResult, code: str) -> Diagnostic:
    """The single error of ``result``, which must have ``code``."""
    errs = errors(result)
    assert [d.code for d in errs] == [code], "\n".join(f"{d.location} [{d.code}] {d.message}" for d in errs)
    return errs[0]


def at(d: Diagnostic, line: int, column: int | None = None) -> None:
    assert d.location is not None, d
    assert d.location.line == line, f"{d.location} [{d.code}] {d.message}"
    if column is not None:
        assert d.location.column == column, f"{d.location} [{d.code}] {d.message}"


# --- the baselines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", BASES)
def test_base_documents_are_valid(check: Callable[[str], CheckResult], version: str) -> None:
    result = check(BASES[version])
    assert result.valid, [f"{d.location} {d.message}" for d in result.diagnostics]
    assert result.document is not None
    assert result.document.version == version


def test_seed_document_is_valid(seed_file: Path) -> None:
    result = check_file(seed_file)
    assert result.valid
    assert result.diagnostics == []


def test_seed_document_cli_exit_0(cli: Cli, seed_file: Path) -> None:
    run = cli("validate", seed_file.name, cwd=seed_file.parent)
    assert run.returncode == 0, run.output
    assert run.stdout == f"✔ {seed_file.name} is valid (AsyncAPI 2.6.0)\n"


# --- structure -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", BASES)
def test_unknown_property_with_did_you_mean(check: Callable[[str], CheckResult], version: str) -> None:
    text = variant(BASES[version], ("  title: Orders\n", "  title: Orders\n  descripton: typo\n"))
    d = only(check(text), "structure-unknown-property")
    assert d.message == 'Property "descripton" is not expected in an Info Object (did you mean "description"?)'
    assert d.path == ("info", "descripton")
    at(d, line_of(text, "descripton"), 3)


@pytest.mark.parametrize("version", BASES)
def test_unknown_property_far_from_any_field_has_no_suggestion(
    check: Callable[[str], CheckResult], version: str
) -> None:
    text = variant(BASES[version], ("  title: Orders\n", "  title: Orders\n  zzzz: 1\n"))
    d = only(check(text), "structure-unknown-property")
    assert "did you mean" not in d.message


@pytest.mark.parametrize("version", BASES)
def test_extensions_are_allowed(check: Callable[[str], CheckResult], version: str) -> None:
    text = variant(BASES[version], ("  title: Orders\n", "  title: Orders\n  x-team: {name: core}\n"))
    assert check(text).valid


def test_field_newer_than_the_document_version(check: Callable[[str], CheckResult]) -> None:
    """Server ``tags`` arrived in 2.5.0; a 2.2.0 document is told exactly that, at the key."""
    text = variant(
        V2,
        ("asyncapi: 2.6.0", "asyncapi: 2.2.0"),
        ("    protocol: kafka\n", "    protocol: kafka\n    tags:\n      - name: eu\n"),
    )
    d = only(check(text), "structure-version")
    assert d.message == (
        'Property "tags" is not expected in a Server Object before AsyncAPI 2.5.0 (this document declares 2.2.0)'
    )
    assert d.path == ("servers", "prod", "tags")
    at(d, line_of(text, "tags:"), 5)
    assert check(variant(text, ("asyncapi: 2.2.0", "asyncapi: 2.5.0"))).valid


def test_message_id_needs_2_4_0(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("asyncapi: 2.6.0", "asyncapi: 2.3.0"), ("    Order:\n", "    Order:\n      messageId: order\n"))
    d = only(check(text), "structure-version")
    assert "before AsyncAPI 2.4.0" in d.message
    at(d, line_of(text, "messageId"))


@pytest.mark.parametrize("version", BASES)
def test_ref_where_not_allowed(check: Callable[[str], CheckResult], version: str) -> None:
    text = variant(
        BASES[version],
        ("info:\n  title: Orders\n  version: 1.0.0\n", "info:\n  $ref: '#/x-info'\n"),
    )
    text += "x-info:\n  title: Orders\n  version: 1.0.0\n"
    result = check(text)
    refused = [d for d in errors(result) if d.code == "ref-not-allowed"]
    assert len(refused) == 1
    assert f"an Info Object cannot be a $ref in AsyncAPI {version}" in refused[0].message
    at(refused[0], line_of(text, "$ref: '#/x-info'"))


def test_server_ref_only_from_2_3_0(check: Callable[[str], CheckResult]) -> None:
    servers = "servers:\n  prod:\n    $ref: '#/components/servers/main'\n"
    text = variant(
        V2,
        ("asyncapi: 2.6.0", "asyncapi: 2.2.0"),
        (
            "servers:\n  prod:\n    url: broker.example.com:9092\n    protocol: kafka\n    security:\n"
            "      - key: []\n",
            servers,
        ),
    )
    result = check(text)
    refused = [d for d in errors(result) if d.code == "ref-not-allowed"]
    assert len(refused) == 1
    assert "can be a $ref only from AsyncAPI 2.3.0" in refused[0].message
    at(refused[0], line_of(text, "$ref: '#/components/servers/main'"))


@pytest.mark.parametrize(
    ("version", "edit", "message", "path"),
    [
        ("2.6.0", ("  title: Orders\n", ""), 'An Info Object is missing the required property "title"', ("info",)),
        ("3.0.0", ("  version: 1.0.0\n", ""), 'An Info Object is missing the required property "version"', ("info",)),
        (
            "2.6.0",
            ("    protocol: kafka\n", ""),
            'A Server Object is missing the required property "protocol"',
            ("servers", "prod"),
        ),
        (
            "3.0.0",
            ("    host: broker.example.com:9092\n", ""),
            'A Server Object is missing the required property "host"',
            None,
        ),
        (
            "3.0.0",
            ("    action: send\n", ""),
            'An Operation Object is missing the required property "action"',
            ("operations", "sendOrder"),
        ),
    ],
)
def test_missing_required_field(
    check: Callable[[str], CheckResult],
    version: str,
    edit: tuple[str, str],
    message: str,
    path: tuple[str, ...] | None,
) -> None:
    d = only(check(variant(BASES[version], edit)), "structure-required")
    assert d.message == message
    if path is not None:
        assert d.path == path


def test_missing_channels_in_2x(check: Callable[[str], CheckResult]) -> None:
    text = V2[: V2.index("channels:")] + V2[V2.index("components:") :]
    d = only(check(text), "structure-required")
    assert d.message == 'An AsyncAPI Object is missing the required property "channels"'
    at(d, 1)


def test_3x_operation_without_channel(check: Callable[[str], CheckResult]) -> None:
    text = variant(V3, ("    channel:\n      $ref: '#/channels/order'\n", ""))
    result = check(text)
    assert "structure-required" in {d.code for d in errors(result)}
    [d] = [d for d in errors(result) if d.code == "structure-required"]
    assert d.message == 'An Operation Object is missing the required property "channel"'
    at(d, line_of(text, "action: send"))


def test_not_asyncapi_and_unsupported_version(check: Callable[[str], CheckResult]) -> None:
    d = only(check("openapi: 3.1.0\ninfo: {}\n"), "not-asyncapi")
    at(d, 1)
    d = only(check(variant(V2, ("asyncapi: 2.6.0", "asyncapi: 1.2.0"))), "unsupported-version")
    assert "1.2.0" in d.message
    at(d, 1, col_of(V2, "2.6.0"))


# --- semantics -------------------------------------------------------------------------------------------


def test_duplicate_operation_id(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("operationId: receiveAudit", "operationId: sendOrder"))
    d = only(check(text), "operation-id-unique")
    assert 'operationId "sendOrder" is used twice' in d.message
    # the second use is reported (whichever channel the model meets second)
    assert d.location is not None
    assert d.location.line in (line_of(text, "operationId: sendOrder", 1), line_of(text, "operationId: sendOrder", 2))


@pytest.mark.parametrize("version", BASES)
def test_channel_parameter_used_but_not_declared(check: Callable[[str], CheckResult], version: str) -> None:
    address = "orders/{orderId}"
    text = variant(BASES[version], (address, "orders/{orderId}/{lineId}"))
    d = only(check(text), "channel-parameters")
    assert 'uses parameter "lineId" but does not declare it under "parameters"' in d.message
    at(d, line_of(text, "{lineId}"))


@pytest.mark.parametrize("version", BASES)
def test_channel_parameter_declared_but_not_used(check: Callable[[str], CheckResult], version: str) -> None:
    text = variant(BASES[version], ("orders/{orderId}", "orders/all"))
    d = only(check(text), "channel-parameters")
    assert 'parameter "orderId" is declared but not used' in d.message
    at(d, line_of(text, "orderId:"), col_of(text, "orderId:"))


@pytest.mark.parametrize(
    ("version", "field"),
    [("2.6.0", "url: broker.example.com:9092"), ("3.0.0", "host: broker.example.com:9092")],
)
def test_server_variables(check: Callable[[str], CheckResult], version: str, field: str) -> None:
    key, _, value = field.partition(": ")
    templated = f"{key}: '{{env}}.{value}'"
    declared = "    variables:\n      env:\n        enum: [dev, prod]\n        default: prod\n"
    ok = variant(
        BASES[version],
        (field, templated),
        ("    protocol: kafka\n    security:", "    protocol: kafka\n" + declared + "    security:"),
    )
    assert check(ok).valid

    # a "variables" map that lacks a used name: error
    other = variant(
        ok, ("      env:\n", "      region:\n"), ("[dev, prod]", "[eu, us]"), ("default: prod", "default: eu")
    )
    errs = errors(check(other))
    assert sorted(d.message for d in errs) == [
        'server "prod" uses variable "env" in its ' + key + ' but does not declare it under "variables"',
        f'server variable "region" is declared but not used in "{{env}}.{value}"',
    ]
    d = next(d for d in errs if "uses variable" in d.message)
    at(d, line_of(other, templated))

    # no "variables" map at all: only a warning, as the official parser has it
    used_undeclared = variant(BASES[version], (field, templated))
    result = check(used_undeclared)
    assert result.valid
    [w] = result.diagnostics
    assert (w.severity, w.code) == (Severity.WARNING, "server-variables")
    assert 'uses variable "env"' in w.message
    at(w, line_of(used_undeclared, templated))

    unused = variant(
        BASES[version], ("    protocol: kafka\n    security:", "    protocol: kafka\n" + declared + "    security:")
    )
    d = only(check(unused), "server-variables")
    assert 'server variable "env" is declared but not used' in d.message
    at(d, line_of(unused, "env:"), col_of(unused, "env:"))

    bad_default = variant(ok, ("default: prod", "default: test"))
    result = check(bad_default)
    assert result.valid
    [w] = result.diagnostics
    assert (w.severity, w.code) == (Severity.WARNING, "server-variables")
    assert 'default "test" of server variable "env" is not one of its enum values' in w.message
    at(w, line_of(bad_default, "default: test"), col_of(bad_default, "test"))


@pytest.mark.parametrize("version", BASES)
def test_channel_parameter_without_parameters_map_is_a_warning(
    check: Callable[[str], CheckResult], version: str
) -> None:
    if version == "2.6.0":
        text = variant(V2, ("    parameters:\n      orderId:\n        schema: {type: string}\n", ""))
    else:
        text = variant(V3, ("    parameters:\n      orderId:\n        description: the order\n", ""))
    result = check(text)
    assert result.valid
    [w] = result.diagnostics
    assert (w.severity, w.code) == (Severity.WARNING, "channel-parameters")
    at(w, line_of(text, "orders/{orderId}"))


def test_2x_security_requirement_names_undeclared_scheme(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("      - key: []", "      - nokey: []"))
    d = only(check(text), "server-security")
    assert '"nokey" is not in components.securitySchemes' in d.message
    at(d, line_of(text, "nokey"), col_of(text, "nokey"))


def test_2x_operation_security(check: Callable[[str], CheckResult]) -> None:
    text = variant(
        V2, ("      operationId: sendOrder\n", "      operationId: sendOrder\n      security:\n        - nope: []\n")
    )
    d = only(check(text), "operation-security")
    assert '"nope"' in d.message
    at(d, line_of(text, "nope"))
    scoped = variant(
        V2,
        (
            "      operationId: sendOrder\n",
            "      operationId: sendOrder\n      security:\n        - oauth: ['orders:write', 'orders:read']\n",
        ),
    )
    d = only(check(scoped), "operation-security")
    assert 'scope "orders:read" is not defined by security scheme "oauth"' in d.message


def test_3x_security_ref_to_undeclared_scheme(check: Callable[[str], CheckResult]) -> None:
    text = variant(V3, ("securitySchemes/key'", "securitySchemes/nokey'"))
    d = only(check(text), "invalid-ref")
    assert "nokey" in d.message
    at(d, line_of(text, "securitySchemes/nokey"))


@pytest.mark.parametrize("version", BASES)
def test_message_example_must_match_payload(check: Callable[[str], CheckResult], version: str) -> None:
    text = variant(BASES[version], ("payload: {id: 1, status: new}", "payload: {id: 1, status: lost}"))
    d = only(check(text), "message-examples")
    assert d.message.startswith("example 0 does not match the payload schema at status:")
    assert "lost" in d.message
    assert d.path[-4:] == ("examples", 0, "payload", "status")
    at(d, line_of(text, "status: lost"), col_of(text, "lost"))


def test_2x_message_example_must_match_headers(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("headers: {trace: abc}", "headers: {trace: 7}"))
    d = only(check(text), "message-examples")
    assert "headers schema" in d.message
    at(d, line_of(text, "trace: 7"), col_of(text, "7}"))


@pytest.mark.parametrize("version", BASES)
def test_message_example_of_non_json_schema_format_is_not_checked(
    check: Callable[[str], CheckResult], version: str
) -> None:
    fmt = "application/vnd.apache.avro;version=1.9.0"
    if version == "2.6.0":
        text = variant(
            V2,
            ("    Order:\n      headers:", f"    Order:\n      schemaFormat: '{fmt}'\n      headers:"),
            ("payload: {id: 1, status: new}", "payload: {anything: goes}"),
        )
    else:
        text = variant(
            V3,
            (
                "      payload:\n        type: object\n        properties:\n          id: {type: integer}\n"
                "          status: {type: string, enum: [new, paid]}\n",
                f"      payload:\n        schemaFormat: '{fmt}'\n        schema:\n          type: record\n"
                "          name: Order\n          fields: [{name: id, type: int}]\n",
            ),
            ("payload: {id: 1, status: new}", "payload: {anything: goes}"),
        )
    assert check(text).valid


def test_3x_operation_message_not_in_its_channel(check: Callable[[str], CheckResult]) -> None:
    text = variant(
        V3, ("      - $ref: '#/channels/order/messages/order'", "      - $ref: '#/channels/audit/messages/entry'")
    )
    d = only(check(text), "operation-messages")
    assert "#/channels/audit/messages/entry" in d.message
    assert d.path == ("operations", "sendOrder", "messages", 0)
    at(d, line_of(text, "#/channels/audit/messages/entry"))


def test_3x_channel_servers_must_be_under_servers(check: Callable[[str], CheckResult]) -> None:
    text = variant(V3, ("      - $ref: '#/servers/prod'", "      - $ref: '#/components/servers/spare'"))
    d = only(check(text), "channel-servers")
    assert "#/components/servers/spare" in d.message
    at(d, line_of(text, "#/components/servers/spare"))


def test_2x_channel_servers_must_be_declared(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("  audit:\n", "  audit:\n    servers: [prod, staging]\n"))
    d = only(check(text), "channel-servers")
    assert 'names server "staging"' in d.message
    at(d, line_of(text, "[prod, staging]"), col_of(text, "staging"))


def test_broken_local_ref_has_did_you_mean(check: Callable[[str], CheckResult]) -> None:
    text = variant(V2, ("'#/components/messages/Order'", "'#/components/messages/Ordr'"))
    d = only(check(text), "invalid-ref")
    assert "Ordr" in d.message
    at(d, line_of(text, "Ordr"))


def test_messages_report_in_the_file_they_are_written_in(check: Callable[[str], CheckResult], tmp_path: Path) -> None:
    (tmp_path / "messages.yaml").write_text(
        "Order:\n  payload:\n    type: object\n    properties:\n      id: {type: integer}\n"
        "  examples:\n    - payload: {id: one}\n",
        encoding="utf-8",
    )
    text = variant(V2, ("'#/components/messages/Order'", "'./messages.yaml#/Order'"))
    d = only(check(text), "message-examples")
    assert d.location is not None
    assert Path(d.location.file).name == "messages.yaml"
    at(d, 7)


# --- the CLI's renderings --------------------------------------------------------------------------------

BAD_V2 = variant(V2, ("  title: Orders\n", "  title: Orders\n  descripton: typo\n"), ("status: new", "status: lost"))


def test_text_output_shows_source_line_and_caret(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_V2, encoding="utf-8")
    run = cli("validate", "bad.yaml", cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(r"^bad\.yaml:\d+:\d+: error \[", line)]
    assert len(heads) == 2
    for i in heads:
        m = re.match(r"^bad\.yaml:(\d+):(\d+): ", lines[i])
        assert m
        line, col = int(m[1]), int(m[2])
        gutter, _, source = lines[i + 1].partition(" | ")
        assert int(gutter) == line
        assert source == BAD_V2.splitlines()[line - 1]
        caret = lines[i + 2]
        assert caret.strip() == "^"
        assert caret.index("^") == len(gutter) + len(" | ") + col - 1
    assert lines[-1] == "✖ bad.yaml: 2 errors"
    assert "\x1b[" not in run.stdout  # NO_COLOR is honoured


def test_json_output(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_V2, encoding="utf-8")
    (tmp_path / "good.yaml").write_text(V3, encoding="utf-8")
    run = cli("validate", "--format", "json", "good.yaml", "bad.yaml", cwd=tmp_path)
    assert run.returncode == 1
    payload = json.loads(run.stdout)
    assert [(r["file"], r["valid"], r["asyncapi"]) for r in payload] == [
        ("good.yaml", True, "3.0.0"),
        ("bad.yaml", False, "2.6.0"),
    ]
    assert payload[0]["diagnostics"] == []
    diags = payload[1]["diagnostics"]
    assert [d["code"] for d in diags] == ["structure-unknown-property", "message-examples"]
    first = diags[0]
    assert first == {
        "severity": "error",
        "code": "structure-unknown-property",
        "message": 'Property "descripton" is not expected in an Info Object (did you mean "description"?)',
        "path": "/info/descripton",
        "file": "bad.yaml",
        "line": line_of(BAD_V2, "descripton"),
        "column": 3,
    }
    assert diags[1]["path"].endswith("/examples/0/payload/status")
    assert diags[1]["line"] == line_of(BAD_V2, "status: lost")


# The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json) that our output uses.
SARIF_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "informationUri": {"type": "string", "format": "uri"},
                                    "rules": {
                                        "type": "array",
                                        "uniqueItems": True,
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {"id": {"type": "string"}},
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {
                                    "type": "object",
                                    "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
                                    "properties": {"text": {"type": "string"}},
                                },
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "anyOf": [
                                                    {"required": ["address"]},
                                                    {"required": ["artifactLocation"]},
                                                ],
                                                "properties": {
                                                    "artifactLocation": {
                                                        "type": "object",
                                                        "properties": {"uri": {"type": "string"}},
                                                    },
                                                    "region": {
                                                        "type": "object",
                                                        "properties": {
                                                            "startLine": {"type": "integer", "minimum": 1},
                                                            "startColumn": {"type": "integer", "minimum": 1},
                                                        },
                                                    },
                                                },
                                            },
                                            "logicalLocations": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "properties": {"fullyQualifiedName": {"type": "string"}},
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_sarif_output(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_V2, encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    run = cli("validate", "-f", "sarif", "bad.yaml", "empty.yaml", cwd=tmp_path)
    assert run.returncode == 1
    log = json.loads(run.stdout)
    validator = jsonschema_rs.Draft7Validator(SARIF_SUBSET)
    problems = [e.message for e in validator.iter_errors(log)]
    assert problems == []
    [sarif_run] = log["runs"]
    assert sarif_run["tool"]["driver"]["name"] == "tidings"
    rule_ids = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    results = sarif_run["results"]
    assert {r["ruleId"] for r in results} == set(rule_ids)
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("structure-unknown-property", "error"),
        ("message-examples", "error"),
        ("empty-file", "error"),
    ]
    loc = results[0]["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "bad.yaml"
    assert loc["physicalLocation"]["region"] == {"startLine": line_of(BAD_V2, "descripton"), "startColumn": 3}
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == "/info/descripton"
    assert results[2]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "empty.yaml"


def test_sarif_of_a_valid_file_has_no_results(cli: Cli, seed_file: Path) -> None:
    run = cli("validate", "--format", "sarif", seed_file.name, cwd=seed_file.parent)
    assert run.returncode == 0
    log = json.loads(run.stdout)
    assert log["version"] == "2.1.0"
    assert log["runs"][0]["results"] == []


def test_several_files_each_reported_exit_1_if_any_invalid(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(V2, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(BAD_V2, encoding="utf-8")
    (tmp_path / "c.yaml").write_text(V3, encoding="utf-8")
    run = cli("validate", "a.yaml", "b.yaml", "c.yaml", cwd=tmp_path)
    assert run.returncode == 1
    assert "✔ a.yaml is valid (AsyncAPI 2.6.0)" in run.stdout
    assert "✖ b.yaml: 2 errors" in run.stdout
    assert "✔ c.yaml is valid (AsyncAPI 3.0.0)" in run.stdout
    order = [run.stdout.index(s) for s in ("✔ a.yaml", "✖ b.yaml", "✔ c.yaml")]
    assert order == sorted(order)

    both_good = cli("validate", "a.yaml", "c.yaml", cwd=tmp_path)
    assert both_good.returncode == 0, both_good.output

    quiet = cli("validate", "--quiet", "a.yaml", "b.yaml", "c.yaml", cwd=tmp_path)
    assert quiet.returncode == 1
    assert "a.yaml" not in quiet.stdout
    assert "✖ b.yaml: 2 errors" in quiet.stdout


def test_missing_file_among_several_exits_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(V2, encoding="utf-8")
    run = cli("validate", "a.yaml", "missing.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert "missing.yaml: error: no such file" in run.stderr


@pytest.mark.parametrize("version", BASES)
@pytest.mark.parametrize("bad_type", ["[]", "{a: 1}", "[oauth2]"])
def test_security_scheme_type_of_the_wrong_shape(
    check: Callable[[str], CheckResult], version: str, bad_type: str
) -> None:
    """A list or map as a scheme's ``type`` is a type error, not a crash (it used to raise TypeError)."""
    text = variant(BASES[version], ("      type: httpApiKey", f"      type: {bad_type}"))
    result = check(text)
    assert not result.valid
    d = next(d for d in errors(result) if d.path[-1] == "type")
    assert d.code == "structure-type"
    at(d, line_of(text, f"type: {bad_type}"))


def test_2x_security_scope_of_the_wrong_shape(check: Callable[[str], CheckResult]) -> None:
    """A map or list as an OAuth scope is a type error, not a crash (it used to raise TypeError)."""
    text = variant(V2, ("      - key: []", "      - oauth: [{a: 1}, [x], 'orders:write']"))
    result = check(text)
    assert not result.valid
    assert {d.code for d in errors(result)} == {"structure-type"}
    assert all(d.location is not None and d.location.line == line_of(text, "oauth:") for d in errors(result))


INJECTION_KEY = '"x\\nfake.yaml:1:1: error [forged] all good\\e[2J"'


def test_text_output_cannot_be_forged_by_a_key(cli: Cli, tmp_path: Path) -> None:
    """A key holding a newline and an ANSI escape stays inside its own, single output line."""
    text = variant(V2, ("  title: Orders\n", f"  title: Orders\n  {INJECTION_KEY}: 1\n"))
    (tmp_path / "inj.yaml").write_text(text, encoding="utf-8")
    run = cli("validate", "inj.yaml", cwd=tmp_path)
    assert run.returncode == 1
    assert "\x1b" not in run.stdout
    heads = [line for line in run.stdout.splitlines() if re.match(r"^\S+:\d+:\d+: error \[", line)]
    assert len(heads) == 1, run.stdout
    assert heads[0].startswith(f"inj.yaml:{line_of(text, 'fake.yaml')}:3: error [structure-unknown-property]")
    assert "[forged]" in heads[0]  # shown, escaped, inside the real finding


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (("  title: Orders\n", f"  title: Orders\n  {INJECTION_KEY}: 1\n"), "structure-unknown-property"),
        (("  audit:\n", '  "audit\\n{x}":\n'), "channel-parameters"),
    ],
)
def test_messages_are_one_line_even_when_quoting_the_document(
    check: Callable[[str], CheckResult], edit: tuple[str, str], code: str
) -> None:
    """Diagnostics are one line each (the text, JSON and SARIF consumers and the LSP rely on it)."""
    result = check(variant(V2, edit))
    found = [d for d in result.diagnostics if d.code == code]
    assert found
    for d in found:
        assert "\n" not in d.message, repr(d.message)
        assert "\x1b" not in d.message, repr(d.message)


OAUTH_INLINE = """\
    security:
      - type: oauth2
        flows:
          clientCredentials:
            tokenUrl: https://auth.example.com/token
            availableScopes: {write: w}
        scopes: [{a: 1}, write]
"""


@pytest.mark.parametrize(
    ("version", "edit", "needle"),
    [
        pytest.param(
            "3.0.0",
            ("    action: send\n", "    action: send\n    security: true\n"),
            "security: true",
            id="op-security",
        ),
        pytest.param(
            "3.0.0",
            ("    security:\n      - $ref: '#/components/securitySchemes/key'\n", "    security: 5\n"),
            "security: 5",
            id="server-security",
        ),
        pytest.param(
            "3.0.0",
            ("    servers:\n      - $ref: '#/servers/prod'\n", "    servers: true\n"),
            "servers: true",
            id="servers",
        ),
        pytest.param(
            "3.0.0",
            ("        description: the order\n", "        description: the order\n        examples: true\n"),
            "examples: true",
            id="parameter-examples",
        ),
        pytest.param(
            "3.0.0", ("    action: send\n", "    action: send\n" + OAUTH_INLINE), "scopes: [{a: 1}", id="oauth-scope"
        ),
        pytest.param(
            "2.6.0",
            (
                "    url: broker.example.com:9092\n",
                "    url: '{env}.example.com'\n    variables:\n      env:\n        enum: [a]\n        examples: true\n",
            ),
            "examples: true",
            id="variable-examples",
        ),
    ],
)
def test_lists_of_the_wrong_type_are_reported_not_crashed_on(
    check: Callable[[str], CheckResult], version: str, edit: tuple[str, str], needle: str
) -> None:
    """Found by test_property: ``x.get("security") or []`` and ``scope in set`` raised TypeError."""
    text = variant(BASES[version], edit)
    result = check(text)
    assert not result.valid
    assert {d.code for d in errors(result)} == {"structure-type"}
    for d in errors(result):
        at(d, line_of(text, needle))


def test_output_cut_short_by_the_reader_is_no_traceback(tmp_path: Path) -> None:
    """`tidings validate big.yaml | head -1`: the pipe closes early; the command must end quietly."""
    doc = tmp_path / "many.yaml"
    lines = ["asyncapi: 2.6.0", "info: {title: T, version: '1'}", "channels:"]
    lines += [f"  c{i}:\n    subscribe:\n      operationId: same" for i in range(300)]
    doc.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        f"{sys.executable} -m tidings validate {doc} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
