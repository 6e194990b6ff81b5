"""The AsyncAPI Schema Object: JSON Schema draft-07 plus ``discriminator``, ``externalDocs``, ``deprecated``.

Only the shape of each keyword is checked here (``type`` names a JSON type, ``required`` is a list of
strings, ``properties`` maps names to schemas...). Unknown keywords are allowed, as in JSON Schema.
"""

from __future__ import annotations

import re
from typing import Any

from tidings.asyncapi.diagnostics import Path
from tidings.asyncapi.structure import (
    ANY,
    BOOL,
    NONNEG_INT,
    NUM,
    POS_NUM,
    STR,
    Checker,
    Either,
    F,
    ListOf,
    MapOf,
    Obj,
    Ref,
    Spec,
    kind_of,
)

JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


class _TypeKeyword(Spec):
    name = "a JSON type name or an array of them"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        names = node if isinstance(node, list) else [node]
        if not names and isinstance(node, list):
            ck.error("schema-type", '"type" must not be an empty array', path)
        for i, name in enumerate(names):
            sub = (*path, i) if isinstance(node, list) else path
            if not isinstance(name, str) or name not in JSON_TYPES:
                ck.error("schema-type", f'"type" must be one of {", ".join(JSON_TYPES)}; got {name!r}', sub)


class _Pattern(Spec):
    name = "a regular expression"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not isinstance(node, str):
            ck.error("structure-type", f'"{path[-1]}" must be a string, got {kind_of(node)}', path)
            return
        try:
            re.compile(node)
        except re.error as exc:
            # ECMA-262 and Python differ at the edges; only report what is broken in both senses.
            if "bad escape" not in str(exc) and "unknown extension" not in str(exc):
                ck.error("schema-pattern", f'"{path[-1]}" is not a valid regular expression: {exc}', path)


def _schema_or_bool(node: Any) -> Spec | None:
    if isinstance(node, bool):
        return ANY
    if isinstance(node, dict):
        return SCHEMA_REF
    return None


def _schema_table() -> Obj:
    schema = Either("a schema (object or boolean)", _schema_or_bool)
    schemas = ListOf(schema, min_items=1, name="a non-empty array of schemas")
    schema_map = MapOf(schema, name="an object of schemas")
    return Obj(
        "Schema Object",
        {
            "$id": F(STR),
            "$schema": F(STR),
            "$comment": F(STR),
            "title": F(STR),
            "description": F(STR),
            "default": F(ANY),
            "readOnly": F(BOOL),
            "writeOnly": F(BOOL),
            "examples": F(ListOf(ANY)),
            "multipleOf": F(POS_NUM),
            "maximum": F(NUM),
            "exclusiveMaximum": F(NUM),
            "minimum": F(NUM),
            "exclusiveMinimum": F(NUM),
            "maxLength": F(NONNEG_INT),
            "minLength": F(NONNEG_INT),
            "pattern": F(_Pattern()),
            "additionalItems": F(schema),
            "items": F(
                Either(
                    "a schema or an array of schemas",
                    lambda n: schemas if isinstance(n, list) else _schema_or_bool(n),
                )
            ),
            "maxItems": F(NONNEG_INT),
            "minItems": F(NONNEG_INT),
            "uniqueItems": F(BOOL),
            "contains": F(schema),
            "maxProperties": F(NONNEG_INT),
            "minProperties": F(NONNEG_INT),
            "required": F(ListOf(STR, unique=True, name="an array of property names")),
            "additionalProperties": F(schema),
            "definitions": F(schema_map),
            "$defs": F(schema_map),
            "properties": F(schema_map),
            "patternProperties": F(schema_map),
            "dependencies": F(
                MapOf(
                    Either(
                        "a schema or an array of property names",
                        lambda n: ListOf(STR) if isinstance(n, list) else _schema_or_bool(n),
                    )
                )
            ),
            "propertyNames": F(schema),
            "const": F(ANY),
            "enum": F(ListOf(ANY)),
            "type": F(_TypeKeyword()),
            "format": F(STR),
            "contentMediaType": F(STR),
            "contentEncoding": F(STR),
            "if": F(schema),
            "then": F(schema),
            "else": F(schema),
            "allOf": F(schemas),
            "anyOf": F(schemas),
            "oneOf": F(schemas),
            "not": F(schema),
            "discriminator": F(STR),
            "externalDocs": F(ANY),
            "deprecated": F(BOOL),
        },
        closed=False,
    )


SCHEMA: Obj = _schema_table()
SCHEMA_REF = Ref(SCHEMA)
SCHEMA_OR_BOOL = Either("a schema (object or boolean)", _schema_or_bool)

__all__ = ["JSON_TYPES", "SCHEMA", "SCHEMA_OR_BOOL", "SCHEMA_REF"]
