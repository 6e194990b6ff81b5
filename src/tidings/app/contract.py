"""The AsyncAPI contract at run time: each channel's message schemas, compiled once, checked per message.

An app bound to a document checks every message it sends before it leaves, and every message it receives
before a handler sees it. Payload schemas are bundled (references made internal) and compiled by
jsonschema-rs once, at bind time, with formats on (``uuid``, ``date-time``, ``email`` are checked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from tidings.asyncapi.document import Document, load_document
from tidings.asyncapi.model import build_model
from tidings.asyncapi.schemas import bundle_schema, compile_schema
from tidings.asyncapi.spec2 import _is_asyncapi_format
from tidings.asyncapi.validate import explain_schema_error, validate
from tidings.errors import TidingsError, UsageError


class ContractError(TidingsError):
    """A message that breaks its channel's contract; names the channel, the field and the rule."""

    def __init__(self, channel: str, field: str, rule: str, message: str) -> None:
        self.channel = channel
        self.field = field
        self.rule = rule
        self.reason = f"channel {channel!r}: {field or 'the message'}: {message} (rule: {rule})"
        super().__init__(self.reason)


class _Compiled:
    __slots__ = ("name", "validator")

    def __init__(self, name: str, validator: Any) -> None:
        self.name = name
        self.validator = validator


class ChannelContract:
    """The messages one channel may carry: a body is valid if it matches any of them."""

    def __init__(self, address: str, messages: list[_Compiled]) -> None:
        self.address = address
        self._messages = messages

    def check(self, channel: str, body: Mapping[str, Any]) -> None:
        """Raise :class:`ContractError` unless ``body`` matches one of the channel's message schemas."""
        if not self._messages:
            return
        for compiled in self._messages:
            if compiled.validator.is_valid(body):  # the common case, and cheaper than collecting errors
                return
        best: tuple[int, Any] | None = None
        for compiled in self._messages:
            errors = list(compiled.validator.iter_errors(body))
            if not errors:
                return
            if best is None or len(errors) < best[0]:
                best = (len(errors), errors[0])
        assert best is not None
        path, message = explain_schema_error(best[1])
        rule = str(best[1].schema_path[-1]) if best[1].schema_path else "schema"
        raise ContractError(channel, ".".join(str(p) for p in path), rule, message)


class Contract:
    """All channel contracts of one document, found by channel name (parameters like ``{userId}`` match)."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self._exact: dict[str, ChannelContract] = {}
        self._patterns: list[tuple[Callable[[str], bool], ChannelContract]] = []
        model = build_model(document)
        for channel in model.channels.values():
            address = channel.address if channel.address is not None else channel.key
            compiled = []
            for message in channel.messages:
                fmt = message.schema_format
                if fmt is not None and not _is_asyncapi_format(fmt):
                    continue  # Avro, Protobuf...: not JSON Schema, not ours to check
                if isinstance(message.payload, dict | bool):
                    schema = bundle_schema(document, message.payload)
                    compiled.append(_Compiled(message.name or message.key, compile_schema(schema, hot=True)))
            contract = ChannelContract(address, compiled)
            if "{" in address:
                regex = re.compile("^" + re.sub(r"\\\{[^{}]*\\\}", "[^./]+", re.escape(address)) + "$")
                self._patterns.append((_matcher(regex), contract))
            else:
                self._exact[address] = contract

    def for_channel(self, channel: str) -> ChannelContract | None:
        found = self._exact.get(channel)
        if found is not None:
            return found
        for matches, contract in self._patterns:
            if matches(channel):
                return contract
        return None

    def require(self, channel: str) -> ChannelContract:
        """The contract of ``channel``; a channel the document does not have breaks the contract too."""
        found = self.for_channel(channel)
        if found is None:
            known = ", ".join(sorted(self.channels())[:8]) or "none"
            raise ContractError(
                channel,
                "",
                "channel",
                f"not in the bound AsyncAPI document (it has: {known}); "
                "add the channel to the document, or use a documented one",
            )
        return found

    def channels(self) -> list[str]:
        return [*self._exact, *(c.address for _, c in self._patterns)]


def _matcher(regex: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda channel: regex.match(channel) is not None


def load_contract(path: str | os.PathLike[str]) -> Contract:
    """Load and validate a document; refuse to bind an app to an invalid contract."""
    document = load_document(path)
    errors = [d for d in validate(document) if d.severity == 0]
    if errors:
        first = errors[0]
        where = f"{first.location}: " if first.location else ""
        raise UsageError(
            f"{os.fspath(path)} is not a valid AsyncAPI document ({len(errors)} error(s)); first: "
            f"{where}{first.message} — run `tidings validate {os.fspath(path)}`"
        )
    return Contract(document)


__all__ = ["ChannelContract", "Contract", "ContractError", "load_contract"]
