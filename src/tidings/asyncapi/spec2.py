"""AsyncAPI 2.0.0 to 2.6.0, transcribed from the specification's object tables.

Each field that appeared after 2.0.0 carries ``since``; Reference Objects are accepted exactly where the
specification says "Object | Reference Object" (components and server maps only from 2.3.0).
"""

from __future__ import annotations

from typing import Any

from tidings.asyncapi.diagnostics import Path
from tidings.asyncapi.source import YMap
from tidings.asyncapi.spec_schema import SCHEMA_OR_BOOL, SCHEMA_REF
from tidings.asyncapi.structure import (
    ANY,
    EMAIL,
    RUNTIME_EXPRESSION,
    STR,
    URI,
    Checker,
    Either,
    F,
    ListOf,
    MapOf,
    Obj,
    Ref,
    Spec,
    Str,
)

COMPONENT_KEY = r"^[A-Za-z0-9.\-_]+$"
COMPONENT_KEY_DESC = "a valid component name (letters, digits, '.', '-', '_')"

BINDING_PROTOCOLS = (
    "http",
    "ws",
    "kafka",
    "anypointmq",
    "amqp",
    "amqp1",
    "mqtt",
    "mqtt5",
    "nats",
    "jms",
    "sns",
    "sqs",
    "stomp",
    "redis",
    "mercure",
    "ibmmq",
    "solace",
    "googlepubsub",
    "pulsar",
    "ros2",
)
SECURITY_TYPES = (
    "userPassword",
    "apiKey",
    "X509",
    "symmetricEncryption",
    "asymmetricEncryption",
    "httpApiKey",
    "http",
    "oauth2",
    "openIdConnect",
    "plain",
    "scramSha256",
    "scramSha512",
    "gssapi",
)
DEFAULT_SCHEMA_FORMATS = (
    "application/schema+json",
    "application/schema+yaml",
    "application/vnd.aai.asyncapi",
    "application/vnd.aai.asyncapi+json",
    "application/vnd.aai.asyncapi+yaml",
)

EXTERNAL_DOCS = Obj("External Documentation Object", {"description": F(STR), "url": F(URI)}, required=["url"])
TAG = Obj("Tag Object", {"name": F(STR), "description": F(STR), "externalDocs": F(EXTERNAL_DOCS)}, required=["name"])
TAGS = ListOf(TAG, name="an array of Tag Objects")
CONTACT = Obj("Contact Object", {"name": F(STR), "url": F(URI), "email": F(EMAIL)})
LICENSE = Obj("License Object", {"name": F(STR), "url": F(URI)}, required=["name"])
INFO = Obj(
    "Info Object",
    {
        "title": F(STR),
        "version": F(STR),
        "description": F(STR),
        "termsOfService": F(URI),
        "contact": F(CONTACT),
        "license": F(LICENSE),
    },
    required=["title", "version"],
)


def _bindings(kind: str) -> Obj:
    return Obj(f"{kind} Bindings Object", {p: F(ANY) for p in BINDING_PROTOCOLS})


SERVER_BINDINGS = _bindings("Server")
CHANNEL_BINDINGS = _bindings("Channel")
OPERATION_BINDINGS = _bindings("Operation")
MESSAGE_BINDINGS = _bindings("Message")

SERVER_VARIABLE = Obj(
    "Server Variable Object",
    {
        "enum": F(ListOf(STR, unique=True)),
        "default": F(STR),
        "description": F(STR),
        "examples": F(ListOf(STR)),
    },
)
SECURITY_REQUIREMENT = MapOf(ListOf(STR), name="a Security Requirement Object (scheme name to scopes)")
SERVER = Obj(
    "Server Object",
    {
        "url": F(STR),
        "protocol": F(STR),
        "protocolVersion": F(STR),
        "description": F(STR),
        "variables": F(MapOf(Ref(SERVER_VARIABLE))),
        "security": F(ListOf(SECURITY_REQUIREMENT)),
        "bindings": F(Ref(SERVER_BINDINGS)),
        "tags": F(TAGS, since="2.5.0"),
    },
    required=["url", "protocol"],
)

CORRELATION_ID = Obj(
    "Correlation ID Object", {"description": F(STR), "location": F(RUNTIME_EXPRESSION)}, required=["location"]
)


def _message_example_shape(ck: Checker, node: YMap, path: Path, file: str) -> None:
    if ck.version >= (2, 1, 0) and "headers" not in node and "payload" not in node:
        ck.error("structure-required", 'A Message Example Object must have "headers" or "payload"', path)


MESSAGE_EXAMPLE = Obj(
    "Message Example Object",
    {
        "headers": F(MapOf(ANY)),
        "payload": F(ANY),
        "name": F(STR),
        "summary": F(STR),
    },
    extra=_message_example_shape,
)
MESSAGE_EXAMPLE_20 = Obj("Message Example Object", {}, additional=F(ANY))


_MESSAGE_COMMON = {
    "headers": F(SCHEMA_REF),
    "correlationId": F(Ref(CORRELATION_ID)),
    "schemaFormat": F(STR),
    "contentType": F(STR),
    "name": F(STR),
    "title": F(STR),
    "summary": F(STR),
    "description": F(STR),
    "tags": F(TAGS),
    "externalDocs": F(EXTERNAL_DOCS),
    "bindings": F(Ref(MESSAGE_BINDINGS)),
    "messageId": F(STR, since="2.4.0"),
}


class _Examples(Spec):
    name = "an array of Message Example Objects"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        item = MESSAGE_EXAMPLE if ck.version >= (2, 1, 0) else MESSAGE_EXAMPLE_20
        ListOf(item, name=self.name).check(ck, node, path, file)


def _message_payload(ck: Checker, node: YMap, path: Path, file: str) -> None:
    """``payload`` is an AsyncAPI/JSON schema only when ``schemaFormat`` says so (the default does)."""
    if "payload" not in node:
        return
    fmt = node.get("schemaFormat")
    if isinstance(fmt, str) and not _is_asyncapi_format(fmt):
        return  # Avro, RAML, Protobuf...: not ours to check structurally
    payload = node["payload"]
    if isinstance(payload, dict | bool):
        ck.visit(payload, SCHEMA_OR_BOOL, (*path, "payload"), file)


def _is_asyncapi_format(fmt: str) -> bool:
    base = fmt.split(";")[0].strip()
    return base in DEFAULT_SCHEMA_FORMATS


MESSAGE_TRAIT = Obj("Message Trait Object", {**_MESSAGE_COMMON, "examples": F(_Examples())})
MESSAGE = Obj(
    "Message Object",
    {
        **_MESSAGE_COMMON,
        "payload": F(ANY),
        "examples": F(_Examples()),
        "traits": F(ListOf(Ref(MESSAGE_TRAIT))),
    },
    extra=_message_payload,
)
MESSAGE_REF = Ref(MESSAGE)
MESSAGE_ONE_OF = Obj(
    "Message Object (oneOf)",
    {"oneOf": F(ListOf(MESSAGE_REF, min_items=1))},
    required=["oneOf"],
    extensions=False,
)


def _message_or_one_of(node: Any) -> Spec | None:
    if not isinstance(node, dict):
        return None
    if "oneOf" in node and "$ref" not in node:
        return MESSAGE_ONE_OF
    return MESSAGE_REF


OPERATION_TRAIT = Obj(
    "Operation Trait Object",
    {
        "operationId": F(STR),
        "summary": F(STR),
        "description": F(STR),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS),
        "bindings": F(Ref(OPERATION_BINDINGS)),
        "security": F(ListOf(SECURITY_REQUIREMENT), since="2.4.0"),
    },
)
OPERATION = Obj(
    "Operation Object",
    {
        "operationId": F(STR),
        "summary": F(STR),
        "description": F(STR),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS),
        "bindings": F(Ref(OPERATION_BINDINGS)),
        "traits": F(ListOf(Ref(OPERATION_TRAIT))),
        "message": F(Either("a Message Object, a Reference Object or {oneOf: [...]}", _message_or_one_of)),
        "security": F(ListOf(SECURITY_REQUIREMENT, name="an array of Security Requirement Objects"), since="2.4.0"),
    },
)
PARAMETER = Obj(
    "Parameter Object",
    {
        "description": F(STR),
        "schema": F(SCHEMA_REF),
        "location": F(RUNTIME_EXPRESSION),
    },
)
CHANNEL_ITEM = Obj(
    "Channel Item Object",
    {
        "description": F(STR),
        "servers": F(ListOf(STR, unique=True), since="2.2.0"),
        "subscribe": F(OPERATION),
        "publish": F(OPERATION),
        "parameters": F(
            MapOf(
                Ref(PARAMETER),
                key_pattern=r"^[A-Za-z0-9_\-]+$",
                key_desc="a valid parameter name (letters, digits, '-', '_')",
            )
        ),
        "bindings": F(Ref(CHANNEL_BINDINGS)),
    },
)
CHANNEL_ITEM_REF = Ref(CHANNEL_ITEM)

OAUTH_FLOW = Obj(
    "OAuth Flow Object",
    {
        "authorizationUrl": F(URI),
        "tokenUrl": F(URI),
        "refreshUrl": F(URI),
        "scopes": F(MapOf(STR)),
    },
    required=["scopes"],
)
OAUTH_FLOWS = Obj(
    "OAuth Flows Object",
    {
        "implicit": F(OAUTH_FLOW),
        "password": F(OAUTH_FLOW),
        "clientCredentials": F(OAUTH_FLOW),
        "authorizationCode": F(OAUTH_FLOW),
    },
)

_SECURITY_REQUIRED = {
    "apiKey": ("in",),
    "httpApiKey": ("name", "in"),
    "http": ("scheme",),
    "oauth2": ("flows",),
    "openIdConnect": ("openIdConnectUrl",),
}
_SECURITY_IN = {"apiKey": ("user", "password"), "httpApiKey": ("query", "header", "cookie")}


def _security_scheme_extra(ck: Checker, node: YMap, path: Path, file: str) -> None:
    kind = node.get("type") if isinstance(node.get("type"), str) else None  # a list/map "type" is unhashable
    for req in _SECURITY_REQUIRED.get(kind, ()):  # type: ignore[arg-type]
        if req not in node:
            ck.error("structure-required", f'A Security Scheme Object of type "{kind}" must have "{req}"', path)
    allowed_in = _SECURITY_IN.get(kind)  # type: ignore[arg-type]
    if allowed_in and "in" in node and node["in"] not in allowed_in:
        ck.error(
            "structure-enum",
            f'"in" for a "{kind}" security scheme must be one of {", ".join(allowed_in)}; got {node["in"]!r}',
            (*path, "in"),
        )


SECURITY_SCHEME = Obj(
    "Security Scheme Object",
    {
        "type": F(Str(enum=SECURITY_TYPES)),
        "description": F(STR),
        "name": F(STR),
        "in": F(STR),
        "scheme": F(STR),
        "bearerFormat": F(STR),
        "flows": F(OAUTH_FLOWS),
        "openIdConnectUrl": F(STR),
    },
    required=["type"],
    extra=_security_scheme_extra,
)


def _components_map(spec: Spec) -> MapOf:
    return MapOf(Ref(spec), key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)


COMPONENTS = Obj(
    "Components Object",
    {
        "schemas": F(MapOf(SCHEMA_REF, key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)),
        "servers": F(_components_map(SERVER), since="2.3.0"),
        "channels": F(MapOf(CHANNEL_ITEM_REF), since="2.3.0"),
        "serverVariables": F(_components_map(SERVER_VARIABLE), since="2.4.0"),
        "messages": F(_components_map(MESSAGE)),
        "securitySchemes": F(_components_map(SECURITY_SCHEME)),
        "parameters": F(_components_map(PARAMETER)),
        "correlationIds": F(_components_map(CORRELATION_ID)),
        "operationTraits": F(_components_map(OPERATION_TRAIT)),
        "messageTraits": F(_components_map(MESSAGE_TRAIT)),
        "serverBindings": F(_components_map(SERVER_BINDINGS)),
        "channelBindings": F(_components_map(CHANNEL_BINDINGS)),
        "operationBindings": F(_components_map(OPERATION_BINDINGS)),
        "messageBindings": F(_components_map(MESSAGE_BINDINGS)),
    },
)

DOCUMENT = Obj(
    "AsyncAPI Object",
    {
        "asyncapi": F(STR),
        "id": F(URI),
        "info": F(INFO),
        "servers": F(
            MapOf(
                Ref(SERVER, since="2.3.0"),
                key_pattern=r"^[A-Za-z0-9_\-]+$",
                key_desc="a valid server name (letters, digits, '-', '_')",
            )
        ),
        "defaultContentType": F(STR),
        "channels": F(MapOf(CHANNEL_ITEM_REF)),
        "components": F(COMPONENTS),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS),
    },
    required=["asyncapi", "info", "channels"],
)

__all__ = ["DOCUMENT", "MESSAGE", "SCHEMA_REF"]
