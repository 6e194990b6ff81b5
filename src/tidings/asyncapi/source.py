"""Reading YAML/JSON text into plain Python data that remembers where every value came from.

Why not ``yaml.safe_load``: it forgets positions, expands aliases without a budget, turns ``yes`` into
``True`` and ``2021-01-01`` into a ``date`` (YAML 1.1), and keeps the last of two duplicate keys silently.
AsyncAPI tooling reads YAML 1.2 core-schema semantics, and every diagnostic must point at a line.

We drive libyaml's event parser (C) and build the tree ourselves with an explicit stack, so:

- no object is ever constructed from a tag (``!!python/...`` is refused, only the core tags pass);
- nesting depth is bounded (libyaml itself stops flow nesting at 1000; we bound everything at
  :data:`MAX_DEPTH`);
- aliases are shared, never copied, and the size they *would* expand to is counted against a budget,
  so a billion-laughs document is refused before anyone walks it;
- duplicate keys are reported with both positions.

Mappings become :class:`YMap` and sequences :class:`YList`: ordinary ``dict``/``list`` subclasses that
carry their own :class:`~tidings.errors.Location` and the location of each value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tidings.errors import Location, SourceError

MAX_DEPTH = 512
#: how many nodes a document may expand to once aliases are followed, relative to what it holds
ALIAS_EXPANSION_FACTOR = 50
ALIAS_EXPANSION_FLOOR = 200_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "!",
}

# YAML 1.2 core schema (what the AsyncAPI parser's YAML reader uses), not YAML 1.1.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class YMap(dict[str, Any]):
    """A mapping that knows where it and each of its values start."""

    __slots__ = ("key_locs", "loc", "locs")

    loc: Location
    locs: dict[str, Location]
    key_locs: dict[str, Location]


class YList(list[Any]):
    """A sequence that knows where it and each of its items start."""

    __slots__ = ("loc", "locs")

    loc: Location
    locs: list[Location]


def _plain_scalar(value: str) -> Any:
    if _NULL.match(value):
        return None
    b = _BOOL.get(value)
    if b is not None:
        return b
    if _INT10.match(value):
        return int(value)
    if _INT8.match(value):
        return int(value[2:], 8)
    if _INT16.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return float("-inf") if value.startswith("-") else float("inf")
    if _NAN.match(value):
        return float("nan")
    return value


def _tagged_scalar(tag: str, value: str, loc: Location) -> Any:
    if tag in ("tag:yaml.org,2002:str", "!"):
        return value
    converted = _plain_scalar(value)
    expected = {
        "tag:yaml.org,2002:int": int,
        "tag:yaml.org,2002:float": (int, float),
        "tag:yaml.org,2002:bool": bool,
        "tag:yaml.org,2002:null": type(None),
    }[tag]
    if isinstance(converted, bool) and expected is int:
        converted = value
    if not isinstance(converted, expected):
        raise SourceError(f"value {value!r} does not match its tag {tag}", loc, code="yaml-tag")
    return float(converted) if tag.endswith("float") else converted


class _Frame:
    __slots__ = ("anchor", "container", "key", "key_loc", "size")

    def __init__(self, container: YMap | YList, anchor: str | None) -> None:
        self.container = container
        self.anchor = anchor
        self.key: str | None = None
        self.key_loc: Location | None = None
        self.size = 1


def check_text(data: bytes, file: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Turn raw bytes into text, refusing what is not a reasonable document."""
    if len(data) > max_bytes:
        raise SourceError(
            f"file is {len(data):,} bytes, over the {max_bytes:,}-byte limit "
            "(raise it with --max-size if the document is really that big)",
            Location(file, 1, 1),
            code="too-large",
        )
    nul = data.find(b"\x00", 0, 8192)
    if nul != -1:
        raise SourceError(
            f"binary content (NUL byte at offset {nul}): expected a YAML or JSON text",
            Location(file, 1, 1),
            code="binary-file",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(
            f"not UTF-8 text (invalid byte at offset {exc.start}): expected a YAML or JSON text",
            Location(file, line, 1),
            code="binary-file",
        ) from None
    if not text.strip():
        raise SourceError(
            "empty document: expected an AsyncAPI YAML or JSON text", Location(file, 1, 1), code="empty-file"
        )
    return text


def parse_text(text: str, file: str, duplicates: list[tuple[str, Location, Location]] | None = None) -> Any:
    """Parse one YAML (or JSON) document into YMap/YList/scalars; raise :class:`SourceError` if unsafe.

    Duplicate keys are appended to ``duplicates`` as ``(key, first, second)`` when a list is given, and
    raise otherwise.
    """
    loader = yaml.CSafeLoader(text) if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader(text)
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    root: Any = None
    have_root = False
    nodes = 0
    expanded = 0
    get_event = loader.get_event

    def loc_of(mark: Any) -> Location:
        return Location(file, mark.line + 1, mark.column + 1)

    def attach(value: Any, size: int, loc: Location) -> None:
        nonlocal root, have_root
        if not stack:
            if have_root:
                raise SourceError("more than one YAML document in the stream", loc, code="multi-document")
            root, have_root = value, True
            return
        top = stack[-1]
        top.size += size
        c = top.container
        if isinstance(c, YList):
            c.append(value)
            c.locs.append(loc)
            return
        if top.key is None:
            if isinstance(value, (YMap, YList)):
                raise SourceError("a mapping or sequence cannot be used as a key", loc, code="complex-key")
            key = value if isinstance(value, str) else _key_text(value)
            if key in c:
                first = c.key_locs[key]
                if duplicates is None:
                    raise SourceError(f"duplicate key {key!r} (first at line {first.line})", loc, code="duplicate-key")
                duplicates.append((key, first, loc))
            top.key, top.key_loc = key, loc
            return
        c[top.key] = value
        c.locs[top.key] = loc
        c.key_locs[top.key] = top.key_loc  # type: ignore[assignment]
        top.key = None

    try:
        while True:
            event = get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                break
            cls = type(event)
            if cls is yaml.ScalarEvent:
                nodes += 1
                loc = loc_of(event.start_mark)
                tag = event.tag
                if tag is not None and tag not in _CORE_TAGS:
                    raise SourceError(
                        f"YAML tag {tag} is not allowed: documents are data, not objects",
                        loc,
                        code="yaml-tag",
                    )
                if tag is not None and tag != "!" and not event.implicit[0]:
                    value = _tagged_scalar(tag, event.value, loc)
                elif not event.style and event.implicit[0]:
                    value = _plain_scalar(event.value)
                else:
                    value = event.value
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
                attach(value, 1, loc)
            elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
                nodes += 1
                loc = loc_of(event.start_mark)
                tag = event.tag
                if tag is not None and tag not in _CORE_TAGS:
                    raise SourceError(
                        f"YAML tag {tag} is not allowed: documents are data, not objects",
                        loc,
                        code="yaml-tag",
                    )
                if len(stack) >= MAX_DEPTH:
                    raise SourceError(f"nesting deeper than {MAX_DEPTH} levels", loc, code="too-deep")
                container: YMap | YList
                if cls is yaml.MappingStartEvent:
                    container = YMap()
                    container.locs = {}
                    container.key_locs = {}
                else:
                    container = YList()
                    container.locs = []
                container.loc = loc
                if stack and isinstance(stack[-1].container, YMap) and stack[-1].key is None:
                    raise SourceError("a mapping or sequence cannot be used as a key", loc, code="complex-key")
                stack.append(_Frame(container, event.anchor))
            elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame.anchor is not None:
                    anchors[frame.anchor] = (frame.container, frame.size)
                attach(frame.container, frame.size, frame.container.loc)
            elif cls is yaml.AliasEvent:
                loc = loc_of(event.start_mark)
                target = anchors.get(event.anchor)
                if target is None:
                    raise SourceError(f"unknown alias *{event.anchor}", loc, code="yaml-alias")
                expanded += target[1]
                if expanded > max(ALIAS_EXPANSION_FLOOR, ALIAS_EXPANSION_FACTOR * nodes):
                    raise SourceError(
                        "aliases expand to too many nodes (an alias-expansion bomb?): refused",
                        loc,
                        code="alias-bomb",
                    )
                attach(target[0], target[1], loc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = loc_of(mark) if mark is not None else Location(file, 1, 1)
        problem = exc.problem or exc.context or "syntax error"
        if "maximum nesting depth" in problem:
            raise SourceError("nesting deeper than the parser allows (1000 levels)", loc, code="too-deep") from None
        raise SourceError(f"YAML syntax error: {problem}", loc, code="yaml-syntax") from None
    except yaml.YAMLError as exc:
        raise SourceError(f"YAML error: {exc}", Location(file, 1, 1), code="yaml-syntax") from None
    finally:
        loader.dispose()
    if not have_root:
        raise SourceError(
            "empty document: expected an AsyncAPI YAML or JSON text", Location(file, 1, 1), code="empty-file"
        )
    return root


def _key_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def location_of(node: Any, key: str | int | None = None) -> Location | None:
    """Where ``node`` (or its value at ``key``) starts, if it came from a source file."""
    if key is not None:
        locs = getattr(node, "locs", None)
        if locs is None:
            return None
        if isinstance(node, YMap):
            return node.locs.get(key)  # type: ignore[call-overload,no-any-return]
        if isinstance(key, int) and 0 <= key < len(locs):
            return locs[key]  # type: ignore[no-any-return]
        return None
    return getattr(node, "loc", None)


__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "YList", "YMap", "check_text", "location_of", "parse_text"]
