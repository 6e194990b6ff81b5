"""One object model for AsyncAPI 2.x and 3.x, built from a loaded :class:`Document`.

The rest of tidings (linting, the runtime's contract checks, code generation) reads this model rather
than raw YAML, so it does not care which major version a document is written in.

**Operations and the 2.x inversion.** In 2.x a channel's ``publish`` operation means "other applications
may publish here, *this* application receives"; ``subscribe`` means "this application sends". 3.0 says
what the application itself does: ``action: send`` or ``action: receive``. The model uses the 3.0 meaning:

=================  ==================
2.x                model (3.0 meaning)
=================  ==================
``publish``        ``receive``
``subscribe``      ``send``
=================  ==================

Every model object keeps ``path``, the JSON path where it is written (the referencing site when it was
reached through a ``$ref``), so findings about it can point at the source.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from tidings.asyncapi.diagnostics import Path
from tidings.asyncapi.document import Document

Action = Literal["send", "receive"]
PARAMETER_IN_ADDRESS = re.compile(r"\{([^{}]*)\}")


class _Record:
    """Attribute records with keyword construction, an informative repr and value equality.

    (Not dataclasses: see :mod:`tidings.errors` for why the validate path avoids them.)
    """

    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k not in ("raw", "messages"))
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class Server(_Record):
    __slots__ = ("name", "path", "protocol", "raw", "url", "variables")

    def __init__(
        self,
        name: str,
        url: str,
        protocol: str,
        path: Path,
        raw: dict[str, Any],
        variables: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.protocol = protocol
        self.path = path
        self.raw = raw
        self.variables = variables if variables is not None else {}


class Message(_Record):
    __slots__ = (
        "content_type",
        "examples",
        "headers",
        "key",
        "message_id",
        "name",
        "path",
        "payload",
        "raw",
        "schema_format",
    )

    def __init__(
        self,
        key: str,
        path: Path,
        raw: dict[str, Any],
        name: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        schema_format: str | None = None,
        payload: Any = None,
        headers: Any = None,
        examples: list[Any] | None = None,
    ) -> None:
        self.key = key
        self.path = path
        self.raw = raw
        self.name = name
        self.message_id = message_id
        self.content_type = content_type
        self.schema_format = schema_format
        self.payload = payload
        self.headers = headers
        self.examples = examples if examples is not None else []


class Channel(_Record):
    __slots__ = ("address", "description", "key", "messages", "parameters", "path", "raw", "servers")

    def __init__(
        self,
        key: str,
        address: str | None,
        path: Path,
        raw: dict[str, Any],
        parameters: dict[str, dict[str, Any]] | None = None,
        messages: list[Message] | None = None,
        servers: list[str] | None = None,
        description: str | None = None,
    ) -> None:
        self.key = key
        self.address = address
        self.path = path
        self.raw = raw
        self.parameters = parameters if parameters is not None else {}
        self.messages = messages if messages is not None else []
        self.servers = servers
        self.description = description


class Operation(_Record):
    __slots__ = ("action", "channel", "description", "key", "messages", "operation_id", "path", "raw", "summary")

    def __init__(
        self,
        key: str,
        action: Action,
        channel: Channel | None,
        path: Path,
        raw: dict[str, Any],
        operation_id: str | None = None,
        messages: list[Message] | None = None,
        description: str | None = None,
        summary: str | None = None,
    ) -> None:
        self.key = key
        self.action = action
        self.channel = channel
        self.path = path
        self.raw = raw
        self.operation_id = operation_id
        self.messages = messages if messages is not None else []
        self.description = description
        self.summary = summary


class Model:
    """The whole document: servers, channels, operations and messages, keyed as written."""

    def __init__(self, version: str, major: int, title: str | None, default_content_type: str | None = None) -> None:
        self.version = version
        self.major = major
        self.title = title
        self.default_content_type = default_content_type
        self.servers: dict[str, Server] = {}
        self.channels: dict[str, Channel] = {}
        self.operations: dict[str, Operation] = {}
        #: every distinct message reachable from channels/operations, plus components.messages
        self.messages: list[Message] = []
        self.security_schemes: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return (
            f"Model(asyncapi={self.version!r}, {len(self.channels)} channels, {len(self.operations)} operations, "
            f"{len(self.messages)} messages)"
        )


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._messages: dict[int, Message] = {}

    def deref(self, node: Any) -> Any:
        return self.doc.try_deref(node)

    def message(self, key: str, node: Any, path: Path) -> Message | None:
        ref = node.get("$ref") if isinstance(node, dict) else None
        if isinstance(ref, str) and "/" in ref:
            key = ref.rsplit("/", 1)[-1]  # a referenced component is known by its component name
        raw = self.deref(node)
        if not isinstance(raw, dict):
            return None
        known = self._messages.get(id(raw))
        if known is not None:
            return known
        payload = raw.get("payload")
        headers = raw.get("headers")
        fmt = raw.get("schemaFormat")
        if self.doc.major == 3:
            # 3.x wraps non-default formats in a Multi Format Schema Object
            p = self.deref(payload) if isinstance(payload, dict) else payload
            if isinstance(p, dict) and "schemaFormat" in p and "schema" in p:
                fmt, payload = p["schemaFormat"], p["schema"]
            h = self.deref(headers) if isinstance(headers, dict) else headers
            if isinstance(h, dict) and "schemaFormat" in h and "schema" in h:
                headers = h["schema"]
        msg = Message(
            key=key,
            path=path,
            raw=raw,
            name=raw.get("name"),
            message_id=raw.get("messageId"),
            content_type=raw.get("contentType"),
            schema_format=fmt if isinstance(fmt, str) else None,
            payload=payload,
            headers=headers,
            examples=list(raw.get("examples") or []) if isinstance(raw.get("examples"), list) else [],
        )
        self._messages[id(raw)] = msg
        return msg

    def build(self) -> Model:
        doc = self.doc
        data = _d(doc.data)
        info = _d(data.get("info"))
        model = Model(
            version=doc.version or "",
            major=doc.major or 0,
            title=info.get("title"),
            default_content_type=data.get("defaultContentType"),
        )
        for name, node in _d(data.get("servers")).items():
            raw = _d(self.deref(node))
            url = raw.get("url") if model.major == 2 else _join_host(raw.get("host"), raw.get("pathname"))
            model.servers[name] = Server(
                name,
                url if isinstance(url, str) else "",
                str(raw.get("protocol", "")),
                ("servers", name),
                raw,
                {k: _d(self.deref(v)) for k, v in _d(raw.get("variables")).items()},
            )
        comps = _d(data.get("components"))
        model.security_schemes = {k: _d(self.deref(v)) for k, v in _d(comps.get("securitySchemes")).items()}
        if model.major == 2:
            self._build_v2(data, model)
        else:
            self._build_v3(data, model)
        for key, node in _d(comps.get("messages")).items():
            self.message(key, node, ("components", "messages", key))
        model.messages = list(self._messages.values())
        return model

    def _build_v2(self, data: dict[str, Any], model: Model) -> None:
        for address, node in _d(data.get("channels")).items():
            raw = _d(self.deref(node))
            path: Path = ("channels", address)
            servers = raw.get("servers")
            channel = Channel(
                address,
                address,
                path,
                raw,
                {k: _d(self.deref(v)) for k, v in _d(raw.get("parameters")).items()},
                servers=list(servers) if isinstance(servers, list) else None,
                description=raw.get("description"),
            )
            model.channels[address] = channel
            verbs: tuple[tuple[str, Action], ...] = (("publish", "receive"), ("subscribe", "send"))
            for verb, action in verbs:
                op_raw = raw.get(verb)
                if not isinstance(op_raw, dict):
                    continue
                op_path = (*path, verb)
                op = Operation(
                    f"{address}#{verb}",
                    action,
                    channel,
                    op_path,
                    op_raw,
                    operation_id=op_raw.get("operationId"),
                    description=op_raw.get("description"),
                    summary=op_raw.get("summary"),
                )
                message = op_raw.get("message")
                resolved = self.deref(message) if isinstance(message, dict) else None
                if isinstance(resolved, dict) and isinstance(resolved.get("oneOf"), list) and "$ref" not in message:  # type: ignore[operator]
                    for i, m in enumerate(resolved["oneOf"]):
                        msg = self.message(f"{op.key}#{i}", m, (*op_path, "message", "oneOf", i))
                        if msg:
                            op.messages.append(msg)
                elif message is not None:
                    msg = self.message(op.key, message, (*op_path, "message"))
                    if msg:
                        op.messages.append(msg)
                for msg in op.messages:
                    if msg not in channel.messages:
                        channel.messages.append(msg)
                name = op.operation_id if isinstance(op.operation_id, str) else op.key
                # a duplicate operationId is a validation error; the model still keeps both operations
                model.operations[name if name not in model.operations else op.key] = op

    def _build_v3(self, data: dict[str, Any], model: Model) -> None:
        by_id: dict[int, Channel] = {}
        for key, node in _d(data.get("channels")).items():
            raw = _d(self.deref(node))
            path: Path = ("channels", key)
            address = raw.get("address")
            servers = raw.get("servers")
            channel = Channel(
                key,
                address if isinstance(address, str) else None,
                path,
                raw,
                {k: _d(self.deref(v)) for k, v in _d(raw.get("parameters")).items()},
                servers=[s.get("$ref", "") for s in servers if isinstance(s, dict)]
                if isinstance(servers, list)
                else None,
                description=raw.get("description"),
            )
            for mkey, mnode in _d(raw.get("messages")).items():
                msg = self.message(mkey, mnode, (*path, "messages", mkey))
                if msg:
                    channel.messages.append(msg)
            model.channels[key] = channel
            by_id[id(raw)] = channel
        for key, node in _d(data.get("operations")).items():
            raw = _d(self.deref(node))
            path = ("operations", key)
            ch_raw = self.deref(raw.get("channel")) if isinstance(raw.get("channel"), dict) else None
            op_channel = by_id.get(id(ch_raw)) if ch_raw is not None else None
            action: Action = "receive" if raw.get("action") == "receive" else "send"
            op = Operation(
                key,
                action,
                op_channel,
                path,
                raw,
                operation_id=key,
                description=raw.get("description"),
                summary=raw.get("summary"),
            )
            messages = raw.get("messages")
            if isinstance(messages, list):
                for i, m in enumerate(messages):
                    msg = self.message(key, m, (*path, "messages", i))
                    if msg:
                        op.messages.append(msg)
            elif op_channel is not None:
                op.messages = list(op_channel.messages)
            model.operations[key] = op


def _join_host(host: Any, pathname: Any) -> str:
    if not isinstance(host, str):
        return ""
    return host + (pathname if isinstance(pathname, str) else "")


def build_model(doc: Document) -> Model:
    """The unified model of ``doc``; broken references are skipped (validation reports them).

    Built once per document and kept on it (a loaded document does not change): validation, lint and
    the runtime contract all read the same model.
    """
    if doc.model is None:
        doc.model = _Builder(doc).build()
    return doc.model


__all__ = [
    "PARAMETER_IN_ADDRESS",
    "Action",
    "Channel",
    "Message",
    "Model",
    "Operation",
    "Server",
    "build_model",
]
