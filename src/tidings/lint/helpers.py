"""Small functions the rules share: JavaScript truthiness, where an object is defined, which parts of
the document are referenced, and reading JSON Schema objects."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

from tidings.asyncapi.diagnostics import Path
from tidings.asyncapi.document import Document
from tidings.errors import ReferenceError_

#: a reference chain longer than this is treated as broken (validation reports real cycles)
_MAX_HOPS = 64


def truthy(value: Any) -> bool:
    """JavaScript truthiness, which Spectral's ``truthy`` function uses: ``{}`` and ``[]`` are true,
    ``""``, ``0``, ``false`` and ``null`` (or absent) are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == value and value != 0  # NaN is falsy too
    return True


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def closest_path(data: Any, path: Path) -> Path:
    """The longest prefix of ``path`` that exists in ``data``: Spectral reports a missing field at the
    nearest object that does exist (``info`` for a missing ``info.contact``)."""
    node = data
    for i, key in enumerate(path):
        if not _has(node, key):
            return path[:i]
        node = node[key]
    return path


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def definition_path(doc: Document, path: Path) -> Path | None:
    """Where the object at ``path`` is written, when that is in the document itself.

    ``("channels", "user.created", "publish", "message")`` whose value is ``$ref:
    '#/components/messages/UserCreated'`` gives ``("components", "messages", "UserCreated")``. ``None``
    when the object lives in another file or a reference is broken.
    """
    resolver = doc.resolver
    node: Any = doc.data
    file = doc.key
    out: list[str | int] = []

    def follow(node: Any, file: str, out: list[str | int]) -> tuple[Any, str, list[str | int]]:
        hops = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            hops += 1
            if hops > _MAX_HOPS:
                raise ReferenceError_("reference chain too long")
            target = resolver.resolve(node["$ref"], resolver.file_of(node, file), None)
            node, file, out = target.value, target.file, list(target.path)
        return node, file, out

    try:
        for i, key in enumerate(path):
            if isinstance(node, dict) and "$ref" in node and key not in node:
                node, file, out = follow(node, file, out)
            if not _has(node, key):
                out.extend(path[i:])  # a missing field: keep the rest of the path as written
                return tuple(out) if file == doc.key else None
            node = node[key]
            out.append(key)
        node, file, out = follow(node, file, out)
    except ReferenceError_:
        return None
    return tuple(out) if file == doc.key else None


def referenced_paths(doc: Document) -> set[tuple[str, ...]]:
    """Every path inside the document that some ``$ref`` points at (in the document itself or in a file
    it loaded), as tuples of strings."""
    resolver = doc.resolver
    found: set[tuple[str, ...]] = set()
    for file, root in list(resolver.files.items()):
        stack: list[Any] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str):
                    if ref.startswith("#"):
                        if file == doc.key:
                            found.add(_pointer_tokens(ref[1:]))
                    else:
                        try:
                            target = resolver.resolve(ref, file, None)
                        except ReferenceError_:
                            pass
                        else:
                            if target.file == doc.key:
                                found.add(tuple(str(p) for p in target.path))
                stack.extend(v for v in node.values() if isinstance(v, dict | list))
            else:
                stack.extend(v for v in node if isinstance(v, dict | list))
    return found


def _pointer_tokens(pointer: str) -> tuple[str, ...]:
    pointer = urllib.parse.unquote(pointer)
    if pointer in ("", "/"):
        return ()
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def schema_properties(doc: Document, schema: Any, *, depth: int = 0) -> tuple[dict[str, tuple[Any, Path]], list[str]]:
    """The top-level properties of an object schema and its ``required`` names, including those an
    ``allOf`` part contributes (the usual "event envelope" composition).

    Each property maps to ``(sub-schema with references followed, path from the schema)``, e.g.
    ``("allOf", 0, "properties", "event_id")``.
    """
    schema = doc.try_deref(schema) if isinstance(schema, dict) else schema
    if not isinstance(schema, dict) or depth > 8:
        return {}, []
    props: dict[str, tuple[Any, Path]] = {}
    required: list[str] = [r for r in as_list(schema.get("required")) if isinstance(r, str)]
    for i, part in enumerate(as_list(schema.get("allOf"))):
        more, req = schema_properties(doc, part, depth=depth + 1)
        props.update({k: (v, ("allOf", i, *where)) for k, (v, where) in more.items()})
        required.extend(req)
    for name, sub in as_dict(schema.get("properties")).items():
        props[name] = (doc.try_deref(sub) if isinstance(sub, dict) else sub, ("properties", name))
    return props, required


def iter_items(value: Any) -> Iterator[tuple[str, Any]]:
    """``value.items()`` for a mapping, nothing otherwise; extension keys (``x-...``) are skipped."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not (isinstance(k, str) and k.startswith("x-")):
                yield k, v


__all__ = [
    "as_dict",
    "as_list",
    "closest_path",
    "definition_path",
    "iter_items",
    "referenced_paths",
    "schema_properties",
    "truthy",
]
