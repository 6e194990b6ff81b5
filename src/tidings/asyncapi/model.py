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
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.asyncapi.diagnostics import Path
from tidings.asyncapi.document import Document

Action = Literal["send", "receive"]
PARAMETER_IN_ADDRESS = re.compile(r"\{([^{}]*)\}")


@dataclass(slots=True)
class Server:
    name: str
    url: str
    protocol: str
    path: Path
    raw: dict[str, Any]
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    key: str
    path: Path
    raw: dict[str, Any]
    name: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    schema_format: str | None = None
    payload: Any = None
    headers: Any = None
    examples: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Channel:
    key: str
    address: str | None
    path: Path
    raw: dict[str, Any]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    servers: list[str] | None = None
    description: str | None = None


@dataclass(slots=True)
class Operation:
    key: str
    action: Action
    channel: Channel | None
    path: Path
    raw: dict[str, Any]
    operation_id: str | None = None
    messages: list[Message] = field(default_factory=list)
    description: str | None = None
    summary: str | None = None


@dataclass
class Model:
    version: str
    major: int
    title: str | None
    servers: dict[str, Server] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    #: every distinct message reachable from channels/operations, plus components.messages
    messages: list[Message] = field(default_factory=list)
    security_schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_content_type: str | None = None


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._messages: dict[int, Message] = {}

    def deref(self, node: Any) -> Any:
        return self.doc.try_deref(node)

    def message(self, key: str, node: Any, path: Path) -> Message | None:
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
    """The unified model of ``doc``; broken references are skipped (validation reports them)."""
    return _Builder(doc).build()


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
