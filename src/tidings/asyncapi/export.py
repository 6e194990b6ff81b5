"""Code-first AsyncAPI: render a 3.0.0 or 2.6.0 document from a neutral description of an application.

This module knows AsyncAPI, not tidings' runtime: the application layer describes itself with the small
value types below (:meth:`tidings.app.App.describe` builds them from its registry) and :func:`render`
turns the description into a document, as plain data ready for :func:`dump`::

    >>> description = AppDescription(
    ...     title="user-service",
    ...     servers=(ServerDescription("default", "amqp://app:s3cret@rabbit:5672/"),),
    ...     channels=(ChannelDescription("user.created", ("UserCreated",)),),
    ...     operations=(OperationDescription("send", "user.created"),),
    ...     messages=(MessageDescription("UserCreated", {"type": "object", "properties": {...}}),),
    ... )                                                                   # doctest: +SKIP
    >>> print(dump(render(description, "3.0")))                            # doctest: +SKIP

What :func:`render` takes care of:

- **Payload schemas** may come straight from pydantic (``model_json_schema()``, JSON Schema 2020-12).
  AsyncAPI schemas are a superset of draft-07, so each is made draft-07: ``$defs`` are hoisted into
  ``components/schemas`` (one name per distinct schema, renamed on a clash) and every ``$ref`` rewritten;
  ``prefixItems`` becomes the draft-07 tuple form of ``items``; a ``$ref`` with siblings is wrapped in
  ``allOf`` (draft-07 ignores the siblings of ``$ref``); ``anyOf [{type: X}, {type: null}]`` becomes
  ``type: [X, "null"]`` where that is equivalent; pydantic's OpenAPI-style ``discriminator`` object
  (AsyncAPI's is a plain property name with other rules) and keywords draft-07 has not got are left out.
  ``format`` (``uuid``, ``date-time``, ``email``...) is kept.
- **Examples**: each message gets one example, built from the schema (``const``, ``examples``, ``default``,
  ``enum``, else made up from the type and format: a UUID, an RFC 3339 time, an e-mail address...) and
  checked against its own schema; an example that does not validate is never written.
- **Channel parameters**: every ``{name}`` in a channel address becomes a parameter.
- **Servers**: host and path from the URL, with the user and password removed (and the whole URL passed
  through :func:`tidings.redact.redact_url` first); the protocol from the URL scheme.
- **Names**: channel ids (3.0) and operation ids are made unique; message names must be unique already.
  In 2.x a message used by one operation gets its name as ``messageId``; one used by several has none
  (the official tools count each use of one message as another message with the same id:
  asyncapi/spec#946), and is known by its component key and ``name``.

AsyncAPI 2.x describes operations from the *client's* point of view, 3.0 from the application's own:
an application that **sends** on a channel has, in 2.x, a ``subscribe`` operation there (a client
subscribes to receive what the application sends), and one that **receives** has a ``publish``
operation. 3.0 says ``action: send`` and ``action: receive``. The operation ids are the application's
view in both (``sendUserCreated``, ``receiveUserCreated``). A 2.x channel holds at most one operation of
each kind, so several receivers of one channel share one ``publish`` operation there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from tidings.errors import UsageError
from tidings.redact import redact_url

#: what ``spec_version`` may say, and the document version it means
SPEC_VERSIONS = {"3.0": "3.0.0", "3.0.0": "3.0.0", "2.6": "2.6.0", "2.6.0": "2.6.0"}

#: URL scheme -> AsyncAPI protocol, where they differ or the scheme has a secure variant; other schemes
#: (``memory``, ``sqlite``, ``kafka``, ``nats``...) are used as they are
PROTOCOLS = {
    "amqps": "amqps",
    "kafka+ssl": "kafka-secure",
    "kafka+sasl": "kafka",  # SASL is the server's security scheme, not another protocol
    "kafka+sasl_ssl": "kafka-secure",
    "kafkas": "kafka-secure",
    "mqtts": "secure-mqtt",
    "rediss": "redis",
    "stomp+ssl": "stomps",
}

#: values used in made-up examples (fixed, so that generating twice gives the same document)
EXAMPLE_UUID = "0190a3b4-7c5e-7d2a-9f41-6b8e2c1d4a5f"
EXAMPLE_DATE_TIME = "2025-01-15T10:30:00Z"
_FORMAT_EXAMPLES: dict[str, str] = {
    "uuid": EXAMPLE_UUID,
    "date-time": EXAMPLE_DATE_TIME,
    "date": "2025-01-15",
    "time": "10:30:00Z",
    "duration": "PT1H",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "/example",
    "iri-reference": "/example",
    "url": "https://example.com/",
    "uri-template": "https://example.com/{id}",
    "json-pointer": "/example",
    "relative-json-pointer": "0/example",
    "regex": "^example$",
    "byte": "ZXhhbXBsZQ==",
    "base64": "ZXhhbXBsZQ==",
    "binary": "example",
    "password": "********",
}

Action = Literal["send", "receive"]
#: what a component key (and so a message name) may be made of
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class ServerDescription(NamedTuple):
    """Where the application connects: ``url`` like ``kafka://broker:9092`` (any password is removed)."""

    name: str
    url: str
    #: AsyncAPI protocol; by default taken from the URL scheme (see :data:`PROTOCOLS`)
    protocol: str | None = None
    description: str | None = None


class ParameterDescription(NamedTuple):
    """A ``{name}`` in a channel address (parameters not described are added plain)."""

    name: str
    description: str | None = None


class MessageDescription(NamedTuple):
    """One kind of message: its unique ``name`` (the message id) and its JSON Schemas.

    ``payload`` and ``headers`` may be pydantic output as is (``$defs``, 2020-12 keywords).
    ``example`` is a payload example; when it is ``None`` (or not valid) one is made from the schema.
    """

    name: str
    payload: Mapping[str, Any]
    event_type: str | None = None
    version: str | None = None
    headers: Mapping[str, Any] | None = None
    example: Mapping[str, Any] | None = None
    content_type: str = "application/json"
    title: str | None = None
    summary: str | None = None
    description: str | None = None


class ChannelDescription(NamedTuple):
    """A channel: its address (``user.{userId}.renamed``) and the names of the messages it carries."""

    address: str
    messages: tuple[str, ...] = ()
    parameters: tuple[ParameterDescription, ...] = ()
    #: the channel id in 3.0 (default: from the address, ``userUserIdRenamed``)
    name: str | None = None
    description: str | None = None


class OperationDescription(NamedTuple):
    """The application sends or receives on the channel with this ``channel`` address."""

    action: Action
    channel: str
    #: the names of the messages involved (default: all of the channel's)
    messages: tuple[str, ...] = ()
    #: default: ``send``/``receive`` + the message name (or the channel's, for several messages)
    operation_id: str | None = None
    summary: str | None = None
    description: str | None = None


class AppDescription(NamedTuple):
    """Everything a document says about one application."""

    title: str
    version: str = "1.0.0"
    description: str | None = None
    servers: tuple[ServerDescription, ...] = ()
    channels: tuple[ChannelDescription, ...] = ()
    operations: tuple[OperationDescription, ...] = ()
    messages: tuple[MessageDescription, ...] = ()
    default_content_type: str = "application/json"
    #: the application's identifier (a URI such as ``urn:example:user-service``)
    id: str | None = None


# -- rendering ------------------------------------------------------------------------------------


def render(description: AppDescription, spec_version: str = "3.0") -> dict[str, Any]:
    """The AsyncAPI document (``spec_version`` ``"3.0"`` or ``"2.6"``) for ``description``, as plain data.

    Raises :class:`~tidings.errors.UsageError` for an unknown version, duplicate message names, or a
    channel or operation that names a message or channel that is not described.
    """
    version = SPEC_VERSIONS.get(spec_version)
    if version is None:
        raise UsageError(f"cannot write AsyncAPI {spec_version!r}: choose 3.0 or 2.6")
    return _Renderer(description, version).document()


def render_yaml(description: AppDescription, spec_version: str = "3.0") -> str:
    """:func:`render`, as YAML text."""
    return dump(render(description, spec_version))


def dump(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """``document`` as YAML (keys in the order written, no anchors) or as indented JSON."""
    if fmt == "json":
        import json

        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise UsageError(f"unknown format {fmt!r}: choose yaml or json")
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # a document is read by people: no &id001 / *id001
            return True

    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return text


class _Names:
    """Unique names: the wanted one, else the wanted one with 2, 3... appended."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    def claim(self, wanted: str) -> str:
        wanted = wanted or "unnamed"
        name, n = wanted, 2
        while name in self.taken:
            name = f"{wanted}{n}"
            n += 1
        self.taken.add(name)
        return name


class _Renderer:
    def __init__(self, description: AppDescription, version: str) -> None:
        self.d = description
        self.version = version
        self.v2 = version.startswith("2.")
        self.components = _Components()
        self.messages: dict[str, MessageDescription] = {}
        for message in description.messages:
            if not _NAME.fullmatch(message.name):
                raise UsageError(f"message name {message.name!r}: use letters, digits, '.', '-' and '_' only")
            if message.name in self.messages:
                raise UsageError(f"two messages are named {message.name!r}: message names must be unique")
            self.messages[message.name] = message
        self.channels: dict[str, ChannelDescription] = {}
        for channel in description.channels:
            if channel.address in self.channels:
                raise UsageError(f"channel {channel.address!r} is described twice")
            for name in channel.messages:
                self._message_known(name, f"channel {channel.address!r}")
            self.channels[channel.address] = channel
        for op in description.operations:
            if op.channel not in self.channels:
                raise UsageError(f"an operation is on channel {op.channel!r}, which is not described")
            for name in op.messages:
                self._message_known(name, f"the {op.action} operation on {op.channel!r}")
        ids = _Names()
        self.channel_ids = {a: ids.claim(c.name or _camel(a)) for a, c in self.channels.items()}
        #: in how many operations each message is used (2.x: once per channel and kind of operation)
        self.uses: dict[str, int] = {}
        used = {
            (op.channel, op.action, name)
            for op in description.operations
            for name in op.messages or self.channels[op.channel].messages
        }
        for _, _, name in used:
            self.uses[name] = self.uses.get(name, 0) + 1

    def _message_known(self, name: str, where: str) -> None:
        if name not in self.messages:
            raise UsageError(f"{where} names message {name!r}, which is not described")

    def document(self) -> dict[str, Any]:
        d = self.d
        doc: dict[str, Any] = {"asyncapi": self.version}
        if d.id:
            doc["id"] = d.id
        info: dict[str, Any] = {"title": d.title, "version": d.version}
        if d.description:
            info["description"] = d.description
        doc["info"] = info
        if d.servers:
            doc["servers"] = {s.name: self._server(s) for s in d.servers}
        doc["defaultContentType"] = d.default_content_type
        messages = {name: self._message(m) for name, m in self.messages.items()}
        if self.v2:
            doc["channels"] = self._channels_v2()
        else:
            doc["channels"] = {self.channel_ids[a]: self._channel_v3(c) for a, c in self.channels.items()}
            doc["operations"] = self._operations_v3()
        components: dict[str, Any] = {}
        if messages:
            components["messages"] = messages
        if self.components.schemas:
            components["schemas"] = self.components.schemas
        if components:
            doc["components"] = components
        return doc

    # -- servers ----------------------------------------------------------------------------------
    def _server(self, server: ServerDescription) -> dict[str, Any]:
        host, pathname, scheme = split_server_url(server.url)
        protocol = server.protocol or PROTOCOLS.get(scheme, scheme)
        if not protocol:
            raise UsageError(
                f"server {server.name!r}: no protocol; give a URL with a scheme (kafka://...) or a protocol"
            )
        out: dict[str, Any] = {}
        if self.v2:
            out["url"] = host + pathname
        else:
            out["host"] = host
            if pathname:
                out["pathname"] = pathname
        out["protocol"] = protocol
        if server.description:
            out["description"] = server.description
        return out

    # -- messages ---------------------------------------------------------------------------------
    def _message(self, m: MessageDescription) -> dict[str, Any]:
        payload = self.components.add(m.payload, f"{m.name}Payload")
        headers = self.components.add(m.headers, f"{m.name}Headers") if m.headers is not None else None
        out: dict[str, Any] = {}
        if self.v2 and self.uses.get(m.name, 0) <= 1:
            # only where the message is used once: the official tools check messageId uniqueness after
            # dereferencing, so one message in two operations counts as two (asyncapi/spec#946); the
            # component key and ``name`` identify it all the same
            out["messageId"] = m.name
        out["name"] = m.name
        for key, value in (("title", m.title), ("summary", m.summary), ("description", m.description)):
            if value:
                out[key] = value
        out["contentType"] = m.content_type
        if headers is not None:
            out["headers"] = {"$ref": _schema_ref(headers)}
        out["payload"] = {"$ref": _schema_ref(payload)}
        example: dict[str, Any] = {}
        if headers is not None:
            header_example = self.components.example(headers)
            if header_example is _NOTHING:
                return out  # no valid headers example: rather none than a wrong one
            example["headers"] = header_example
        payload_example = _NOTHING
        if m.example is not None and self.components.is_valid(m.example, payload):
            payload_example = copy.deepcopy(dict(m.example))
        if payload_example is _NOTHING:
            payload_example = self.components.example(payload)
        if payload_example is _NOTHING:
            return out
        example["payload"] = payload_example
        out["examples"] = [{"name": _camel(m.name), "summary": f"an example {m.name} message", **example}]
        return out

    def _channel_message_refs(self, names: Sequence[str], address: str) -> list[dict[str, str]]:
        channel_id = self.channel_ids[address]
        if self.v2:
            return [{"$ref": f"#/components/messages/{name}"} for name in names]
        return [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in names]

    # -- channels and operations ------------------------------------------------------------------
    def _parameters(self, channel: ChannelDescription) -> dict[str, Any]:
        described = {p.name: p for p in channel.parameters}
        out: dict[str, Any] = {}
        for name in re.findall(r"\{([^{}]+)\}", channel.address):
            if name in out:
                continue
            param: dict[str, Any] = {}
            given = described.get(name)
            param["description"] = given.description if given and given.description else f"the {name} in the address"
            if self.v2:
                param["schema"] = {"type": "string"}
            out[name] = param
        return out

    def _channel_v3(self, channel: ChannelDescription) -> dict[str, Any]:
        out: dict[str, Any] = {"address": channel.address}
        if channel.description:
            out["description"] = channel.description
        parameters = self._parameters(channel)
        if parameters:
            out["parameters"] = parameters
        if channel.messages:
            out["messages"] = {name: {"$ref": f"#/components/messages/{name}"} for name in channel.messages}
        return out

    def _operation_names(self) -> list[tuple[OperationDescription, str, tuple[str, ...]]]:
        """Each operation with its unique id and its messages (the channel's, when it names none)."""
        ids = _Names()
        out = []
        for op in self.d.operations:
            names = op.messages or self.channels[op.channel].messages
            subject = names[0] if len(names) == 1 else _camel(self.channel_ids[op.channel], upper=True)
            out.append((op, ids.claim(op.operation_id or f"{op.action}{subject}"), names))
        return out

    def _operations_v3(self) -> dict[str, Any]:
        operations: dict[str, Any] = {}
        for op, op_id, names in self._operation_names():
            out: dict[str, Any] = {
                "action": op.action,
                "channel": {"$ref": f"#/channels/{self.channel_ids[op.channel]}"},
            }
            if op.summary:
                out["summary"] = op.summary
            if op.description:
                out["description"] = op.description
            if names:
                out["messages"] = self._channel_message_refs(names, op.channel)
            operations[op_id] = out
        return operations

    def _channels_v2(self) -> dict[str, Any]:
        # 2.x speaks for the client: the application's "send" is the client's "subscribe" (module docstring)
        kinds: dict[Action, str] = {"send": "subscribe", "receive": "publish"}
        grouped: dict[tuple[str, str], list[tuple[OperationDescription, str, tuple[str, ...]]]] = {}
        for op, op_id, names in self._operation_names():
            grouped.setdefault((op.channel, kinds[op.action]), []).append((op, op_id, names))
        channels: dict[str, Any] = {}
        for address, channel in self.channels.items():
            out: dict[str, Any] = {}
            if channel.description:
                out["description"] = channel.description
            parameters = self._parameters(channel)
            if parameters:
                out["parameters"] = parameters
            for kind in ("subscribe", "publish"):
                ops = grouped.get((address, kind))
                if ops:
                    out[kind] = self._operation_v2(ops, address)
            channels[address] = out
        return channels

    def _operation_v2(self, ops: list[tuple[OperationDescription, str, tuple[str, ...]]], address: str) -> Any:
        out: dict[str, Any] = {"operationId": ops[0][1]}
        summaries = [op.summary for op, _, _ in ops if op.summary]
        descriptions = [op.description for op, _, _ in ops if op.description]
        if summaries:
            out["summary"] = "; ".join(dict.fromkeys(summaries))
        if descriptions:
            out["description"] = "\n\n".join(dict.fromkeys(descriptions))
        names = tuple(dict.fromkeys(name for _, _, names in ops for name in names))
        refs = self._channel_message_refs(names, address)
        if len(refs) == 1:
            out["message"] = refs[0]
        elif refs:
            out["message"] = {"oneOf": refs}
        return out


def split_server_url(url: str) -> tuple[str, str, str]:
    """``(host, pathname, scheme)`` of a server URL, without user, password, query or fragment.

    ``amqp://app:s3cret@rabbit:5672/`` -> ``("rabbit:5672", "", "amqp")``;
    ``sqlite:///var/events.db`` -> ``("", "/var/events.db", "sqlite")``.
    """
    url = redact_url(url)  # belt and braces: nothing below may ever see a password
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]  # the user is no business of a document either
    # sqlite:////var/events.db (an absolute path, SQLAlchemy style) reads better as /var/events.db
    pathname = "/" + path.strip("/") if slash and path.strip("/") else ""
    return host, pathname, scheme.lower()


def _camel(text: str, *, upper: bool = False) -> str:
    """``user.{userId}.renamed`` -> ``userUserIdRenamed`` (``upper``: ``UserUserIdRenamed``)."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    if not words:
        return "unnamed"
    joined = "".join(w[:1].upper() + w[1:] for w in words)
    return joined if upper else joined[:1].lower() + joined[1:]


def _schema_ref(name: str) -> str:
    return f"#/components/schemas/{name}"


# -- schemas: from JSON Schema 2020-12 (pydantic) to draft-07 (AsyncAPI) -----------------------------

# keywords whose value is a map of name -> schema, a list of schemas, or one schema
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {"additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if", "then", "else"}
)
# not draft-07 (and no draft-07 equivalent), or not meaningful once the schema is moved
_DROPPED = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "$vocabulary",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minContains",
        "maxContains",
        "contentSchema",
    }
)
_DEFINITIONS = ("$defs", "definitions")
# a schema with one of these is not just "one type": it cannot absorb "null" into its type
_NOT_SIMPLE = frozenset({"$ref", "enum", "const", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"})


def to_draft07(schema: Any, ref: Callable[[str], str] = lambda r: r) -> Any:
    """A draft-07 copy of a JSON Schema 2020-12 ``schema``; ``ref`` rewrites each ``$ref``.

    ``$defs`` / ``definitions`` are left out: the caller hoists them (see :class:`_Components`).
    """
    if not isinstance(schema, Mapping):
        return copy.deepcopy(schema)  # true / false
    out: dict[str, Any] = {}
    dependencies: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED or key in _DEFINITIONS:
            continue
        if key == "discriminator" and not isinstance(value, str):
            continue  # pydantic's is OpenAPI's object; AsyncAPI's is a property name with other rules
        if key == "$ref" and isinstance(value, str):
            out[key] = ref(value)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            converted = {str(k): to_draft07(v, ref) for k, v in value.items()}
            if key == "dependentSchemas":
                dependencies.update(converted)
            else:
                out[key] = converted
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_draft07(v, ref) for v in value]
        elif key in _SCHEMA_ONE or (key == "items" and not isinstance(value, list)):
            out[key] = to_draft07(value, ref)
        elif key == "items":
            out[key] = [to_draft07(v, ref) for v in value]
        elif key == "dependentRequired" and isinstance(value, Mapping):
            dependencies.update({str(k): list(v) for k, v in value.items()})
        elif key == "dependencies" and isinstance(value, Mapping):
            dependencies.update(
                {str(k): list(v) if isinstance(v, list) else to_draft07(v, ref) for k, v in value.items()}
            )
        else:
            out[key] = copy.deepcopy(value)  # annotations and data (default, examples, const, enum...)
    if "prefixItems" in out:  # 2020-12 tuples: prefixItems + items  ->  draft-07: items [...] + additionalItems
        prefix = out.pop("prefixItems")
        if "items" in out:
            out["additionalItems"] = out.pop("items")
        out["items"] = prefix
    if dependencies:
        out["dependencies"] = dependencies
    if "$ref" in out and len(out) > 1:  # draft-07 ignores the siblings of $ref: keep them beside it
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return _absorb_null(out)


def _absorb_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [{type: X, ...}, {type: null}]`` -> ``{type: [X, null], ...}`` where that means the same.

    Every keyword of a plain one-type schema applies to its own type only, so ``null`` still passes.
    """
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or {"type": "null"} not in branches:
        return schema
    other = branches[0] if branches[1] == {"type": "null"} else branches[1]
    if not isinstance(other, dict) or not isinstance(other.get("type"), str) or _NOT_SIMPLE & other.keys():
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.keys() & other.keys():
        return schema
    return {**other, "type": [other["type"], "null"], **rest}


_NOTHING: Any = object()  # "no example can be made" (None is a fine example: JSON null)


class _Components:
    """``components/schemas`` being filled: names kept unique, equal schemas stored once."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.names = _Names()

    def add(self, schema: Mapping[str, Any], wanted: str) -> str:
        """Store ``schema`` (and its ``$defs``) under components; return the name it got."""
        root = self.names.claim(_component_name(wanted))
        local = {
            (container, str(name)): value
            for container in _DEFINITIONS
            if isinstance(schema.get(container), Mapping)
            for name, value in schema[container].items()
        }
        names = {key: _component_name(key[1]) for key in local}

        def ref(value: str) -> str:
            if value == "#":
                return _schema_ref(root)
            for container, name in local:
                prefix = f"#/{container}/{name}"
                if value == prefix or value.startswith(prefix + "/"):
                    return _schema_ref(names[container, name]) + value[len(prefix) :]
            return value

        # a definition keeps its own name unless another schema has it already: then it gets a fresh one;
        # renaming changes the schemas that point at it, so look again until nothing clashes (each round
        # gives at least one definition a fresh name, which cannot clash again)
        mine: set[str] = set()
        for _ in range(len(local) + 1):
            converted = {key: to_draft07(value, ref) for key, value in local.items()}
            used: set[str] = set()
            clashes = []
            for key, name in names.items():
                stored = self.schemas.get(name, _NOTHING)
                free = name in mine or name not in self.names.taken or stored is not _NOTHING
                if name in used or not free or (stored is not _NOTHING and stored != converted[key]):
                    clashes.append(key)
                used.add(name)
            if not clashes:
                break
            for key in clashes:
                names[key] = self.names.claim(names[key])
                mine.add(names[key])
        for key, name in names.items():
            self.names.taken.add(name)
            self.schemas.setdefault(name, converted[key])
        self.schemas[root] = to_draft07({k: v for k, v in schema.items() if k not in _DEFINITIONS}, ref)
        return root

    # -- examples ---------------------------------------------------------------------------------
    def is_valid(self, value: Any, name: str) -> bool:
        from tidings.asyncapi.schemas import compile_schema

        # the component's own references point into components/schemas: give them something to point at
        wrapper = {"allOf": [{"$ref": _schema_ref(name)}], "components": {"schemas": self.schemas}}
        try:
            return bool(compile_schema(wrapper).is_valid(value))
        except ValueError:
            return False

    def example(self, name: str) -> Any:
        """A value valid against component ``name`` (hints from the schema first), or :data:`_NOTHING`."""
        for use_hints in (True, False):
            value = _Example(self.schemas, use_hints).make({"$ref": _schema_ref(name)}, ())
            if value is not _NOTHING and self.is_valid(value, name):
                return value
        return _NOTHING


def _component_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "Schema"


class _Example:
    """Make up one value for a schema: ``const`` / ``examples`` / ``default`` / ``enum`` when allowed to
    (``use_hints``), else from the type, format and bounds. Recursion stops at a schema already being made."""

    def __init__(self, schemas: Mapping[str, Any], use_hints: bool) -> None:
        self.schemas = schemas
        self.use_hints = use_hints

    def make(self, schema: Any, making: tuple[str, ...]) -> Any:
        if schema is True or schema == {}:
            return "example"
        if not isinstance(schema, Mapping):
            return _NOTHING
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/components/schemas/")
            if name == ref or name not in self.schemas or name in making:
                return _NOTHING
            return self.make(self.schemas[name], (*making, name))
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if self.use_hints:
            examples = schema.get("examples")
            if isinstance(examples, list) and examples and not isinstance(examples[0], dict):
                return copy.deepcopy(examples[0])
            if schema.get("default") is not None and not isinstance(schema.get("default"), dict):
                return copy.deepcopy(schema["default"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return copy.deepcopy(schema["enum"][0])
        for key in ("allOf",):
            if isinstance(schema.get(key), list):
                return self._all_of(schema, making)
        for key in ("oneOf", "anyOf"):
            branches = schema.get(key)
            if isinstance(branches, list):
                ordered = sorted(branches, key=lambda b: isinstance(b, Mapping) and b.get("type") == "null")
                for branch in ordered:
                    value = self.make(branch, making)
                    if value is not _NOTHING:
                        return value
                return _NOTHING
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string" if "format" in schema else None
        return self._typed(schema, kind, making)

    def _all_of(self, schema: Mapping[str, Any], making: tuple[str, ...]) -> Any:
        parts = [self.make(s, making) for s in schema["allOf"]]
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        if rest.get("type") or rest.get("properties"):
            parts.append(self.make(rest, making))
        if any(p is _NOTHING for p in parts):
            return _NOTHING
        if all(isinstance(p, dict) for p in parts):
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(part)
            return merged
        return parts[0] if parts else "example"

    def _typed(self, schema: Mapping[str, Any], kind: Any, making: tuple[str, ...]) -> Any:
        if kind == "object":
            return self._object(schema, making)
        if kind == "array":
            return self._array(schema, making)
        if kind == "string":
            return _string(schema)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return "example"

    def _object(self, schema: Mapping[str, Any], making: tuple[str, ...]) -> Any:
        out: dict[str, Any] = {}
        base = schema.get("examples")
        if self.use_hints and isinstance(base, list) and base and isinstance(base[0], dict):
            out.update(copy.deepcopy(base[0]))
        listed = schema.get("required")
        required: list[Any] = listed if isinstance(listed, list) else []
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            for name, sub in properties.items():
                if name in out:
                    continue
                value = self.make(sub, making)
                if value is _NOTHING:
                    if name in required:
                        return _NOTHING
                    continue
                out[name] = value
        for name in required:
            if name not in out:
                out[name] = "example"
        return out

    def _array(self, schema: Mapping[str, Any], making: tuple[str, ...]) -> Any:
        items = schema.get("items")
        if isinstance(items, list):
            values = [self.make(s, making) for s in items]
            return _NOTHING if any(v is _NOTHING for v in values) else values
        if items is None:
            return []
        value = self.make(items, making)
        if value is _NOTHING:
            return [] if not schema.get("minItems") else _NOTHING
        count = max(1, int(schema.get("minItems") or 0))
        return [copy.deepcopy(value) for _ in range(count)]


def _string(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    value = _FORMAT_EXAMPLES.get(fmt, "string") if isinstance(fmt, str) else "string"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    step = 1 if integer else 0.5
    low: float | None = None
    high: float | None = None
    if isinstance(schema.get("minimum"), int | float):
        low = schema["minimum"]
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + step
    if isinstance(schema.get("maximum"), int | float):
        high = schema["maximum"]
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - step
    value: float = 1
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        value = -(-value // multiple) * multiple
    if integer:
        return int(-(-value // 1))
    return float(value)


__all__ = [
    "EXAMPLE_DATE_TIME",
    "EXAMPLE_UUID",
    "PROTOCOLS",
    "SPEC_VERSIONS",
    "Action",
    "AppDescription",
    "ChannelDescription",
    "MessageDescription",
    "OperationDescription",
    "ParameterDescription",
    "ServerDescription",
    "dump",
    "render",
    "render_yaml",
    "split_server_url",
    "to_draft07",
]
