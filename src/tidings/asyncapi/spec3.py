"""AsyncAPI 3.0.0 and 3.1.0, transcribed from the specification's object tables.

3.0 moved operations out of channels (``operations`` at the root, ``action: send|receive``), made
channel keys identifiers with a separate ``address``, and allows a Reference Object almost everywhere.
"""

from __future__ import annotations

from typing import Any

from tidings.asyncapi.diagnostics import Path

# Objects whose table did not change in 3.0 are shared with 2.x.
from tidings.asyncapi.spec2 import (
    CHANNEL_BINDINGS,
    COMPONENT_KEY,
    COMPONENT_KEY_DESC,
    CONTACT,
    CORRELATION_ID,
    LICENSE,
    MESSAGE_BINDINGS,
    OPERATION_BINDINGS,
    SECURITY_TYPES,
    SERVER_BINDINGS,
    SERVER_VARIABLE,
    _components_map,
    _is_asyncapi_format,
    _security_scheme_extra,
)
from tidings.asyncapi.spec_schema import SCHEMA_OR_BOOL
from tidings.asyncapi.structure import (
    ANY,
    RUNTIME_EXPRESSION,
    STR,
    STR_OR_NULL,
    URI,
    Checker,
    Either,
    F,
    ListOf,
    MapOf,
    Obj,
    OnlyRef,
    Ref,
    Spec,
    Str,
)

EXTERNAL_DOCS = Obj("External Documentation Object", {"description": F(STR), "url": F(URI)}, required=["url"])
EXTERNAL_DOCS_REF = Ref(EXTERNAL_DOCS)
TAG = Obj(
    "Tag Object",
    {"name": F(STR), "description": F(STR), "externalDocs": F(EXTERNAL_DOCS_REF)},
    required=["name"],
)
TAGS = ListOf(Ref(TAG), name="an array of Tag Objects")
INFO = Obj(
    "Info Object",
    {
        "title": F(STR),
        "version": F(STR),
        "description": F(STR),
        "termsOfService": F(URI),
        "contact": F(CONTACT),
        "license": F(LICENSE),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS_REF),
    },
    required=["title", "version"],
)


OAUTH_FLOW = Obj(
    "OAuth Flow Object",
    {
        "authorizationUrl": F(URI),
        "tokenUrl": F(URI),
        "refreshUrl": F(URI),
        "availableScopes": F(MapOf(STR)),
    },
    required=["availableScopes"],
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
        "scopes": F(ListOf(STR)),
    },
    required=["type"],
    extra=_security_scheme_extra,
)
SECURITY = ListOf(Ref(SECURITY_SCHEME), name="an array of Security Scheme Objects")

SERVER = Obj(
    "Server Object",
    {
        "host": F(STR),
        "protocol": F(STR),
        "protocolVersion": F(STR),
        "pathname": F(STR),
        "description": F(STR),
        "title": F(STR),
        "summary": F(STR),
        "variables": F(MapOf(Ref(SERVER_VARIABLE))),
        "security": F(SECURITY),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS_REF),
        "bindings": F(Ref(SERVER_BINDINGS)),
    },
    required=["host", "protocol"],
)

MULTI_FORMAT_SCHEMA = Obj(
    "Multi Format Schema Object",
    {"schemaFormat": F(STR), "schema": F(ANY)},
    required=["schemaFormat", "schema"],
)


class _MessageSchema(Spec):
    """``payload``/``headers``: a Schema Object, a Multi Format Schema Object, or a reference to one."""

    name = "a Schema Object or a Multi Format Schema Object"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if isinstance(node, dict) and "$ref" in node:
            ck.follow(node, self, path, file)
            return
        if isinstance(node, dict) and "schemaFormat" in node:
            ck.visit(node, MULTI_FORMAT_SCHEMA, path, file)
            fmt, schema = node.get("schemaFormat"), node.get("schema")
            if isinstance(fmt, str) and _is_asyncapi_format(fmt) and isinstance(schema, dict | bool):
                ck.visit(schema, SCHEMA_OR_BOOL, (*path, "schema"), file)
            return
        if isinstance(node, dict | bool):
            ck.visit(node, SCHEMA_OR_BOOL, path, file)
            return
        ck.error("structure-type", f'"{path[-1]}" must be {self.name}', path)


MESSAGE_SCHEMA = _MessageSchema()
MESSAGE_EXAMPLE = Obj(
    "Message Example Object",
    {
        "headers": F(MapOf(ANY)),
        "payload": F(ANY),
        "name": F(STR),
        "summary": F(STR),
    },
)
_MESSAGE_COMMON = {
    "headers": F(MESSAGE_SCHEMA),
    "correlationId": F(Ref(CORRELATION_ID)),
    "contentType": F(STR),
    "name": F(STR),
    "title": F(STR),
    "summary": F(STR),
    "description": F(STR),
    "tags": F(TAGS),
    "externalDocs": F(EXTERNAL_DOCS_REF),
    "bindings": F(Ref(MESSAGE_BINDINGS)),
    "examples": F(ListOf(MESSAGE_EXAMPLE)),
}
MESSAGE_TRAIT = Obj("Message Trait Object", dict(_MESSAGE_COMMON))
MESSAGE = Obj(
    "Message Object",
    {
        **_MESSAGE_COMMON,
        "payload": F(MESSAGE_SCHEMA),
        "traits": F(ListOf(Ref(MESSAGE_TRAIT))),
    },
)
PARAMETER = Obj(
    "Parameter Object",
    {
        "enum": F(ListOf(STR, unique=True)),
        "default": F(STR),
        "description": F(STR),
        "examples": F(ListOf(STR)),
        "location": F(RUNTIME_EXPRESSION),
    },
)
CHANNEL = Obj(
    "Channel Object",
    {
        "address": F(STR_OR_NULL),
        "messages": F(MapOf(Ref(MESSAGE), key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)),
        "title": F(STR),
        "summary": F(STR),
        "description": F(STR),
        "servers": F(ListOf(OnlyRef(SERVER), name="an array of Reference Objects to servers")),
        "parameters": F(
            MapOf(
                Ref(PARAMETER),
                key_pattern=r"^[A-Za-z0-9_\-]+$",
                key_desc="a valid parameter name (letters, digits, '-', '_')",
            )
        ),
        "tags": F(TAGS),
        "externalDocs": F(EXTERNAL_DOCS_REF),
        "bindings": F(Ref(CHANNEL_BINDINGS)),
    },
)
REPLY_ADDRESS = Obj(
    "Operation Reply Address Object",
    {
        "location": F(RUNTIME_EXPRESSION),
        "description": F(STR),
    },
    required=["location"],
)
REPLY = Obj(
    "Operation Reply Object",
    {
        "address": F(Ref(REPLY_ADDRESS)),
        "channel": F(OnlyRef(CHANNEL)),
        "messages": F(ListOf(OnlyRef(MESSAGE))),
    },
)
_OPERATION_COMMON = {
    "title": F(STR),
    "summary": F(STR),
    "description": F(STR),
    "security": F(SECURITY),
    "tags": F(TAGS),
    "externalDocs": F(EXTERNAL_DOCS_REF),
    "bindings": F(Ref(OPERATION_BINDINGS)),
}
OPERATION_TRAIT = Obj("Operation Trait Object", dict(_OPERATION_COMMON))
OPERATION = Obj(
    "Operation Object",
    {
        **_OPERATION_COMMON,
        "action": F(Str(enum=("send", "receive"))),
        "channel": F(OnlyRef(CHANNEL)),
        "traits": F(ListOf(Ref(OPERATION_TRAIT))),
        "messages": F(ListOf(OnlyRef(MESSAGE))),
        "reply": F(Ref(REPLY)),
    },
    required=["action", "channel"],
)


def _schema_component(node: Any) -> Spec | None:
    return MESSAGE_SCHEMA if isinstance(node, dict | bool) else None


COMPONENTS = Obj(
    "Components Object",
    {
        "schemas": F(
            MapOf(Either("a schema", _schema_component), key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)
        ),
        "servers": F(_components_map(SERVER)),
        "channels": F(_components_map(CHANNEL)),
        "operations": F(_components_map(OPERATION)),
        "messages": F(_components_map(MESSAGE)),
        "securitySchemes": F(_components_map(SECURITY_SCHEME)),
        "serverVariables": F(_components_map(SERVER_VARIABLE)),
        "parameters": F(_components_map(PARAMETER)),
        "correlationIds": F(_components_map(CORRELATION_ID)),
        "replies": F(_components_map(REPLY)),
        "replyAddresses": F(_components_map(REPLY_ADDRESS)),
        "externalDocs": F(_components_map(EXTERNAL_DOCS)),
        "tags": F(_components_map(TAG)),
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
                Ref(SERVER),
                key_pattern=r"^[A-Za-z0-9_\-]+$",
                key_desc="a valid server name (letters, digits, '-', '_')",
            )
        ),
        "defaultContentType": F(STR),
        "channels": F(MapOf(Ref(CHANNEL), key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)),
        "operations": F(MapOf(Ref(OPERATION), key_pattern=COMPONENT_KEY, key_desc=COMPONENT_KEY_DESC)),
        "components": F(COMPONENTS),
    },
    required=["asyncapi", "info"],
)

__all__ = ["DOCUMENT", "MESSAGE"]
