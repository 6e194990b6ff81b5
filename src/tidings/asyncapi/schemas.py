"""Turning a document's payload schemas into compiled validators.

A payload schema may ``$ref`` other parts of the document or other files. The compiled validator
(jsonschema-rs) must not go looking for them itself (no network, no file access of its own), so we
*bundle* first: every referenced schema is copied once under ``#/$tidings/<n>`` and each ``$ref`` is
rewritten to point there. Recursive schemas stay recursive; nothing is expanded twice.
"""

from __future__ import annotations

import re
from typing import Any

from tidings.asyncapi.document import Document
from tidings.asyncapi.source import YMap
from tidings.errors import ReferenceError_

BUNDLE_KEY = "$tidings"


def bundle_schema(doc: Document, schema: Any, file: str | None = None) -> Any:
    """A self-contained copy of ``schema`` (plain dicts/lists) with all references made internal."""
    definitions: dict[str, Any] = {}
    names: dict[tuple[str, int], str] = {}
    resolver = doc.resolver

    def copy(node: Any, base: str) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and isinstance(node["$ref"], str):
                ref = node["$ref"]
                try:
                    target = resolver.resolve(
                        ref, resolver.file_of(node, base), node if isinstance(node, YMap) else None
                    )
                except ReferenceError_:
                    return {}  # a broken reference is reported by validation; here it matches anything
                key = (target.file, id(target.value))
                name = names.get(key)
                if name is None:
                    name = names[key] = f"r{len(names)}"
                    definitions[name] = None  # reserve, so a cycle finds the name
                    definitions[name] = _copy_if_self_contained(target.value)
                    if definitions[name] is None:
                        definitions[name] = copy(target.value, target.file)
                return {"$ref": f"#/{BUNDLE_KEY}/{name}"}
            return {str(k): copy(v, base) for k, v in node.items()}
        if isinstance(node, list):
            return [copy(v, base) for v in node]
        return node

    root_file = resolver.file_of(schema, file or doc.key)
    out = _copy_if_self_contained(schema)
    if out is None:
        out = copy(schema, root_file)
    if definitions:
        if not isinstance(out, dict):
            return out
        if "$ref" in out:
            # draft-07 ignores siblings of $ref, so wrap instead of adding a sibling
            out = {"allOf": [out]}
        out[BUNDLE_KEY] = definitions
    return out


def _copy_if_self_contained(node: Any) -> Any:
    """A plain copy of ``node`` made in C (orjson) when it holds no ``$ref``; ``None`` otherwise.

    Most referenced schemas are leaves; copying them node by node in Python was the larger part of
    checking message examples on big documents.
    """
    import orjson

    try:
        data = orjson.dumps(node)
    except TypeError:  # an int beyond 64 bits, say: let the Python copy handle it
        return None
    # orjson writes NaN and infinities as null: where a null shows up, copy the slow, exact way
    if b'"$ref"' in data or b"null" in data:
        return None
    return orjson.loads(data)


def plain_data(value: Any) -> Any:
    """``value`` as plain dicts/lists with string keys: what the compiled validator expects to read."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    return value


def compile_schema(schema: Any, *, formats: bool = True) -> Any:
    """A compiled draft-07 validator for a bundled schema; raises ``ValueError`` if the schema is broken."""
    # imported here: it costs ~10 ms of start-up and only documents with examples need it
    import jsonschema_rs

    # "uuid" is a format of later drafts that draft-07 tooling (ajv-formats, as the AsyncAPI tools use it)
    # checks anyway, and the guide's events rely on it for event_id
    return jsonschema_rs.Draft7Validator(schema, validate_formats=formats, formats={"uuid": _is_uuid})


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _is_uuid(value: str) -> bool:
    return _UUID.match(value) is not None


__all__ = ["BUNDLE_KEY", "bundle_schema", "compile_schema", "plain_data"]
