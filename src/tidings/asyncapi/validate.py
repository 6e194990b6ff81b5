"""Validation: is this a usable AsyncAPI document, as the specification defines one?

Three passes, each building on the last:

1. **identity**: a mapping with an ``asyncapi`` string naming a supported version;
2. **structure**: every object against its table in :mod:`~tidings.asyncapi.spec2` /
   :mod:`~tidings.asyncapi.spec3`, references followed where allowed;
3. **semantics**: the rules the specification states in prose and the official parser enforces
   (unique ids, declared parameters, server variables, security names, examples that match their
   schemas...), plus the ones it misses for 3.x (see :func:`_semantic_v3`).

Style and design advice (missing descriptions, event naming) is linting, not validation: see
:mod:`tidings.lint`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tidings.asyncapi import spec2, spec3
from tidings.asyncapi.diagnostics import Diagnostic, Path, Severity, dotted
from tidings.asyncapi.document import (
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    Document,
    duplicate_key_diagnostics,
)
from tidings.asyncapi.model import PARAMETER_IN_ADDRESS, Message, Model, build_model
from tidings.asyncapi.schemas import bundle_schema, compile_schema, plain_data
from tidings.asyncapi.source import YMap
from tidings.asyncapi.spec2 import _is_asyncapi_format
from tidings.asyncapi.structure import Checker
from tidings.errors import ReferenceError_

E = Severity.ERROR


def validate(doc: Document) -> list[Diagnostic]:
    """Every finding that makes ``doc`` invalid (errors), plus load findings; an empty list means valid."""
    identity = _identity(doc)
    if identity:
        return duplicate_key_diagnostics(doc) + identity
    diagnostics: list[Diagnostic] = []
    version = doc.version_tuple
    assert version is not None
    checker = Checker(doc.resolver, version)
    table = spec2.DOCUMENT if version[0] == 2 else spec3.DOCUMENT
    checker.visit(doc.data, table, (), doc.key)
    diagnostics += checker.diagnostics
    diagnostics += _sweep_references(doc, checker.unchecked)
    model = build_model(doc)
    semantic = _Semantic(doc, model)
    diagnostics += list(semantic.run())
    # last: the passes above load the referenced files, whose duplicate keys count too
    return _dedupe(duplicate_key_diagnostics(doc) + diagnostics)


def _sweep_references(doc: Document, subtrees: list[tuple[Any, Path, str]]) -> list[Diagnostic]:
    """Resolve every ``$ref`` in the subtrees the structure pass had no table for (bindings, extensions,
    non-JSON-Schema payloads): a document with a dangling reference anywhere is unusable."""
    out: list[Diagnostic] = []
    resolver = doc.resolver
    seen: set[int] = set()
    stack: list[tuple[Any, str, Path]] = [(node, file, path) for node, path, file in subtrees]
    while stack:
        node, file, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    target = resolver.resolve(ref, file, node if isinstance(node, YMap) else None)
                except ReferenceError_ as exc:
                    out.append(Diagnostic(E, exc.code, exc.message, (*path, "$ref"), exc.location))
                else:
                    if target.file != file and isinstance(target.value, dict | list):
                        stack.append((target.value, target.file, path))
            for key, value in node.items():
                if isinstance(value, dict | list):
                    stack.append((value, file, (*path, key)))
        else:
            for i, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, file, (*path, i)))
    return out


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, str, Any]] = set()
    out: list[Diagnostic] = []
    for d in diagnostics:
        key = (d.code, d.message, d.location)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _identity(doc: Document) -> list[Diagnostic]:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("asyncapi"), str):
        return [
            doc.diagnostic(
                E,
                "not-asyncapi",
                'This is not an AsyncAPI document: the "asyncapi" field (a version string '
                'such as "3.0.0") is missing at the top level.',
                (),
            )
        ]
    version = data["asyncapi"]
    if version not in SUPPORTED_VERSIONS:
        return [
            doc.diagnostic(
                E,
                "unsupported-version",
                f'Version "{version}" is not supported: use one of '
                f"{', '.join(SUPPORTED_VERSIONS)} ({LATEST_VERSION} is the latest).",
                ("asyncapi",),
            )
        ]
    return []


class _Semantic:
    def __init__(self, doc: Document, model: Model) -> None:
        self.doc = doc
        self.model = model
        self.data: dict[str, Any] = doc.data

    def err(self, code: str, message: str, path: Path, *, at_key: bool = False, severity: Severity = E) -> Diagnostic:
        return self.doc.diagnostic(severity, code, message, path, at_key=at_key)

    def run(self) -> Iterator[Diagnostic]:
        yield from self._channels()
        yield from self._server_variables()
        yield from self._messages()
        if self.model.major == 2:
            yield from self._semantic_v2()
        else:
            yield from self._semantic_v3()
            yield from self._parameters_v3()

    # -- shared ------------------------------------------------------------------------------
    def _channels(self) -> Iterator[Diagnostic]:
        for channel in self.model.channels.values():
            address = channel.address
            if address is None:
                continue
            names = PARAMETER_IN_ADDRESS.findall(address)
            addr_path = channel.path if self.model.major == 2 else (*channel.path, "address")
            at_key = self.model.major == 2
            if "" in names:
                yield self.err(
                    "channel-empty-parameter",
                    f'channel address "{address}" has an empty parameter {{}}: name it, e.g. {{userId}}',
                    addr_path,
                    at_key=at_key,
                )
            if "?" in address or "#" in address:
                yield self.err(
                    "channel-query-or-fragment",
                    f'channel address "{address}" must not contain a query (?) or fragment (#): put that in bindings',
                    addr_path,
                    at_key=at_key,
                )
            declared = channel.parameters
            # The specification only says parameters SHOULD be declared; once a "parameters" map exists,
            # leaving one out is an inconsistency (and the official parser calls it an error too).
            missing_severity = E if "parameters" in channel.raw else Severity.WARNING
            for name in names:
                if name and name not in declared:
                    yield self.err(
                        "channel-parameters",
                        f'channel "{address}" uses parameter "{name}" but does not declare it under "parameters"',
                        addr_path,
                        at_key=at_key,
                        severity=missing_severity,
                    )
            for name in declared:
                if name not in names:
                    yield self.err(
                        "channel-parameters",
                        f'parameter "{name}" is declared but not used in the channel address "{address}"',
                        (*channel.path, "parameters", name),
                        at_key=True,
                    )

    def _server_variables(self) -> Iterator[Diagnostic]:
        for server in self.model.servers.values():
            used = [n for n in PARAMETER_IN_ADDRESS.findall(server.url) if n]
            field_name = "url" if self.model.major == 2 else "host"
            # as for channel parameters: an error once a "variables" map exists, a warning before
            missing_severity = E if "variables" in server.raw else Severity.WARNING
            for name in used:
                if name not in server.variables:
                    yield self.err(
                        "server-variables",
                        f'server "{server.name}" uses variable "{name}" in its {field_name} but does '
                        'not declare it under "variables"',
                        (*server.path, field_name),
                        severity=missing_severity,
                    )
            for name, var in server.variables.items():
                vpath = (*server.path, "variables", name)
                if name not in used:
                    yield self.err(
                        "server-variables",
                        f'server variable "{name}" is declared but not used in "{server.url}"',
                        vpath,
                        at_key=True,
                    )
                enum = var.get("enum")
                if isinstance(enum, list):
                    default = var.get("default")
                    if default is not None and default not in enum:
                        yield self.err(
                            "server-variables",
                            f'default "{default}" of server variable "{name}" is not one of its enum values {enum}',
                            (*vpath, "default"),
                            severity=Severity.WARNING,
                        )
                    for i, example in enumerate(_l(var.get("examples"))):
                        if example not in enum:
                            yield self.err(
                                "server-variables",
                                f'example "{example}" of server variable "{name}" is not one of its enum values {enum}',
                                (*vpath, "examples", i),
                                severity=Severity.WARNING,
                            )

    def _messages(self) -> Iterator[Diagnostic]:
        for msg in self.model.messages:
            yield from self._message_examples(msg)
            headers = self.doc.try_deref(msg.headers) if isinstance(msg.headers, dict) else None
            if isinstance(headers, dict) and "type" in headers and headers.get("type") != "object":
                yield self.err(
                    "message-headers-object",
                    'message "headers" schema must be of type "object"',
                    (*msg.path, "headers", "type"),
                )

    def _message_examples(self, msg: Message) -> Iterator[Diagnostic]:
        if not msg.examples:
            return
        if msg.schema_format is not None and not _is_asyncapi_format(msg.schema_format):
            return
        checks: list[tuple[str, Any]] = []
        for part, schema in (("payload", msg.payload), ("headers", msg.headers)):
            if isinstance(schema, dict | bool):
                try:
                    checks.append((part, compile_schema(bundle_schema(self.doc, schema))))
                except ValueError as exc:
                    yield self.err(
                        "schema-invalid",
                        f"the {part} schema cannot be compiled: {_first_line(exc)}",
                        (*msg.path, part),
                    )
        for i, example in enumerate(msg.examples):
            example = self.doc.try_deref(example) if isinstance(example, dict) else example
            if not isinstance(example, dict):
                continue
            for part, validator in checks:
                if part not in example:
                    continue
                for error in validator.iter_errors(plain_data(example[part])):
                    where, message = explain_schema_error(error)
                    yield self.err(
                        "message-examples",
                        f"example {i} does not match the {part} schema"
                        f"{' at ' + dotted(where) if where else ''}: {message}",
                        (*msg.path, "examples", i, part, *where),
                    )

    # -- 2.x ---------------------------------------------------------------------------------
    def _semantic_v2(self) -> Iterator[Diagnostic]:
        seen_ops: dict[str, Path] = {}
        for address, node in _d(self.data.get("channels")).items():
            channel = self.doc.try_deref(node)
            for verb in ("publish", "subscribe"):
                op = _d(channel).get(verb) if isinstance(channel, dict) else None
                op_id = op.get("operationId") if isinstance(op, dict) else None
                if not isinstance(op_id, str):
                    continue
                path: Path = ("channels", address, verb, "operationId")
                if op_id in seen_ops:
                    yield self.err(
                        "operation-id-unique",
                        f'operationId "{op_id}" is used twice (first at {dotted(seen_ops[op_id][:-1])}): '
                        "operationIds must be unique",
                        path,
                    )
                else:
                    seen_ops[op_id] = path
        seen_msgs: dict[str, Path] = {}
        for msg in self.model.messages:
            if not isinstance(msg.message_id, str):
                continue
            if msg.message_id in seen_msgs and seen_msgs[msg.message_id] != msg.path:
                yield self.err(
                    "message-id-unique",
                    f'messageId "{msg.message_id}" is used by two messages (first at '
                    f"{dotted(seen_msgs[msg.message_id])}): messageIds must be unique",
                    (*msg.path, "messageId"),
                )
            seen_msgs.setdefault(msg.message_id, msg.path)
        for channel in self.model.channels.values():
            for i, name in enumerate(channel.servers or []):
                if isinstance(name, str) and name not in self.model.servers:
                    yield self.err(
                        "channel-servers",
                        f'channel "{channel.key}" names server "{name}", which is not declared under "servers"',
                        (*channel.path, "servers", i),
                    )
        for server in self.model.servers.values():
            yield from self._security_requirements(server.raw.get("security"), (*server.path, "security"), "Server")
        for op in self.model.operations.values():
            yield from self._security_requirements(op.raw.get("security"), (*op.path, "security"), "Operation")

    def _security_requirements(self, requirements: Any, path: Path, owner: str) -> Iterator[Diagnostic]:
        if not isinstance(requirements, list):
            return
        schemes = self.model.security_schemes
        for i, requirement in enumerate(requirements):
            if not isinstance(requirement, dict):
                continue
            for name, scopes in requirement.items():
                sub = (*path, i, name)
                scheme = schemes.get(name)
                if scheme is None:
                    yield self.err(
                        f"{owner.lower()}-security",
                        f'{owner} must not reference an undefined security scheme: "{name}" is not in '
                        "components.securitySchemes",
                        sub,
                        at_key=True,
                    )
                    continue
                if not isinstance(scopes, list):
                    continue
                kind = scheme.get("type")
                # oauth2 scopes are listed in its flows; openIdConnect's live at its discovery URL (not ours
                # to fetch); every other type takes none
                if kind == "oauth2":
                    known = _oauth_scopes(scheme, "scopes")
                    for j, scope in enumerate(scopes):
                        if isinstance(scope, str) and scope not in known:  # non-strings: structure reports them
                            yield self.err(
                                f"{owner.lower()}-security",
                                f'scope "{scope}" is not defined by security scheme "{name}"',
                                (*sub, j),
                            )
                elif kind not in ("oauth2", "openIdConnect") and scopes:
                    yield self.err(
                        f"{owner.lower()}-security",
                        f'security scheme "{name}" of type "{kind}" takes no scopes: use []',
                        sub,
                    )

    # -- 3.x ---------------------------------------------------------------------------------
    def _semantic_v3(self) -> Iterator[Diagnostic]:
        """The official parser checks little here; these are the specification's own MUSTs for 3.x."""
        data = self.data
        for key, node in _d(data.get("operations")).items():
            op_raw = self.doc.try_deref(node)
            if not isinstance(op_raw, dict):
                continue
            path: Path = ("operations", key)
            channel_ref = op_raw.get("channel")
            ref = channel_ref.get("$ref") if isinstance(channel_ref, dict) else None
            if isinstance(ref, str) and ref.startswith("#") and not ref.startswith("#/channels/"):
                yield self.err(
                    "operation-channel",
                    f'operation "{key}" must point at a channel under #/channels, not {ref}',
                    (*path, "channel", "$ref"),
                )
            channel_raw = self.doc.try_deref(channel_ref) if isinstance(channel_ref, dict) else None
            if isinstance(channel_raw, dict):
                yield from self._messages_in_channel(
                    op_raw.get("messages"), channel_raw, (*path, "messages"), f'operation "{key}"'
                )
            reply = self.doc.try_deref(op_raw.get("reply")) if isinstance(op_raw.get("reply"), dict) else None
            if isinstance(reply, dict):
                reply_channel = self.doc.try_deref(reply["channel"]) if isinstance(reply.get("channel"), dict) else None
                if isinstance(reply_channel, dict):
                    yield from self._messages_in_channel(
                        reply.get("messages"),
                        reply_channel,
                        (*path, "reply", "messages"),
                        f'the reply of "{key}"',
                    )
            for i, item in enumerate(_l(op_raw.get("security"))):
                yield from self._scheme_ref(item, (*path, "security", i))
        for name, node in _d(data.get("servers")).items():
            server = self.doc.try_deref(node)
            if isinstance(server, dict):
                for i, item in enumerate(_l(server.get("security"))):
                    yield from self._scheme_ref(item, ("servers", name, "security", i))
        for channel in self.model.channels.values():
            for i, item in enumerate(_l(channel.raw.get("servers"))):
                ref = item.get("$ref") if isinstance(item, dict) else None
                if isinstance(ref, str) and not ref.startswith("#/servers/"):
                    yield self.err(
                        "channel-servers",
                        f'channel "{channel.key}" must list servers declared under #/servers, not {ref}',
                        (*channel.path, "servers", i, "$ref"),
                    )

    def _messages_in_channel(
        self, messages: Any, channel_raw: dict[str, Any], path: Path, owner: str
    ) -> Iterator[Diagnostic]:
        if not isinstance(messages, list):
            return
        allowed = {id(self.doc.try_deref(m)) for m in _d(channel_raw.get("messages")).values()}
        for i, m in enumerate(messages):
            target = self.doc.try_deref(m) if isinstance(m, dict) else None
            if target is not None and id(target) not in allowed:
                ref = m.get("$ref") if isinstance(m, dict) else m
                yield self.err(
                    "operation-messages",
                    f"{owner} lists message {ref}, which is not one of its channel's messages",
                    (*path, i),
                )

    def _scheme_ref(self, item: Any, path: Path) -> Iterator[Diagnostic]:
        scheme = self.doc.try_deref(item) if isinstance(item, dict) else None
        if not isinstance(scheme, dict):
            return
        scopes = scheme.get("scopes")
        if scheme.get("type") == "oauth2" and isinstance(scopes, list):
            known = _oauth_scopes(scheme, "availableScopes")
            for j, scope in enumerate(scopes):
                if isinstance(scope, str) and scope not in known:  # non-strings: structure reports them
                    yield self.err(
                        "security-scopes",
                        f'scope "{scope}" is not among the availableScopes of this oauth2 scheme\'s flows',
                        (*path, "scopes", j),
                    )

    def _parameters_v3(self) -> Iterator[Diagnostic]:
        for channel in self.model.channels.values():
            for name, param in channel.parameters.items():
                enum = param.get("enum")
                if not isinstance(enum, list):
                    continue
                ppath = (*channel.path, "parameters", name)
                default = param.get("default")
                if default is not None and default not in enum:
                    yield self.err(
                        "parameter-enum",
                        f'default "{default}" of parameter "{name}" is not one of its enum values {enum}',
                        (*ppath, "default"),
                        severity=Severity.WARNING,
                    )
                for i, example in enumerate(_l(param.get("examples"))):
                    if example not in enum:
                        yield self.err(
                            "parameter-enum",
                            f'example "{example}" of parameter "{name}" is not one of its enum values {enum}',
                            (*ppath, "examples", i),
                            severity=Severity.WARNING,
                        )


def explain_schema_error(error: Any, limit: int = 200) -> tuple[tuple[str | int, ...], str]:
    """(instance path, message) for a jsonschema-rs error, descending into the closest ``oneOf``/``anyOf``
    alternative so the user reads "status: 'x' is not one of [...]" rather than "matches no alternative"."""
    context = getattr(error.kind, "context", None)
    if context:
        branch = min((b for b in context if b), key=len, default=None)
        if branch:
            path, message = explain_schema_error(branch[0], limit)
            index = context.index(branch)
            keyword = error.schema_path[-1] if error.schema_path else "oneOf"
            return path, f"no {keyword} alternative matches; the closest (#{index}) fails: {message}"
    message = str(error.message)
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    return tuple(error.instance_path), message


def _oauth_scopes(scheme: dict[str, Any], key: str) -> set[str]:
    scopes: set[str] = set()
    for flow in _d(scheme.get("flows")).values():
        scopes.update(_d(_d(flow).get(key)).keys())
    return scopes


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    """``value`` if it is a list, else ``[]`` (``x or []`` is not enough: ``security: true`` would crash)."""
    return value if isinstance(value, list) else []


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["validate"]
