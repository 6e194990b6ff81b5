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


def compile_schema(schema: Any, *, formats: bool = True, hot: bool = False) -> Any:
    """A compiled draft-07 validator for a bundled schema; raises ``ValueError`` if the schema is broken.

    ``hot``: the validator runs once per message (the runtime contract), so where the schema means exactly
    the same under draft 2019-09 (see :func:`_same_under_2019_09`), that draft's validator is used: it checks
    ``uuid`` natively, where draft 07 calls back into Python for it (half the time of a whole check).
    """
    # imported here: it costs ~10 ms of start-up and only documents with examples need it
    import jsonschema_rs

    if hot and formats and _same_under_2019_09(schema):
        return jsonschema_rs.Draft201909Validator(schema, validate_formats=True)
    # "uuid" is a format of later drafts that draft-07 tooling (ajv-formats, as the AsyncAPI tools use it)
    # checks anyway, and the guide's events rely on it for event_id
    return jsonschema_rs.Draft7Validator(schema, validate_formats=formats, formats={"uuid": _is_uuid})


#: keywords that draft 07 ignores or reads differently from draft 2019-09 (a schema naming any of them, even
#: as a property name, keeps the draft-07 validator: a false alarm only costs speed)
_READ_DIFFERENTLY = frozenset(
    {
        "$schema",
        "$defs",
        "$anchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "$vocabulary",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minContains",
        "maxContains",
        "contentSchema",
    }
)
#: formats draft 2019-09 checks that draft 07 does not (uuid is checked under both, see above)
_FORMATS_2019_09_ONLY = frozenset({"duration"})


def _same_under_2019_09(node: Any) -> bool:
    """Whether a draft-07 schema validates exactly the same under draft 2019-09."""
    if isinstance(node, list):
        return all(_same_under_2019_09(item) for item in node)
    if not isinstance(node, dict):
        return True
    if "$ref" in node and len(node) > 1:  # draft 07 ignores a $ref's siblings; 2019-09 applies them
        return False
    if not _READ_DIFFERENTLY.isdisjoint(node) or node.get("format") in _FORMATS_2019_09_ONLY:
        return False
    return all(_same_under_2019_09(value) for value in node.values())


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _is_uuid(value: str) -> bool:
    # fullmatch: "$" would also match before a trailing newline, and let "<uuid>\n" pass
    return _UUID.fullmatch(value) is not None


__all__ = ["BUNDLE_KEY", "bundle_schema", "compile_schema", "plain_data"]
