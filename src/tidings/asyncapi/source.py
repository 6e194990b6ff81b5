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
#: how many nodes aliases may add once expanded: 50 per 4 bytes of text (about 50x what a document holds)
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
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


Pos = tuple[int, int]


class YMap(dict[str, Any]):
    """A mapping that knows where it, each key and each value start (1-based line, column)."""

    __slots__ = ("file", "key_locs", "locs", "pos")

    file: str
    pos: Pos
    #: where each value starts
    locs: dict[str, Pos]
    #: where each key is written
    key_locs: dict[str, Pos]

    @property
    def loc(self) -> Location:
        return Location(self.file, *self.pos)

    def value_location(self, key: str, *, at_key: bool = False) -> Location | None:
        pos = (self.key_locs if at_key else self.locs).get(key)
        return Location(self.file, *pos) if pos else None


class YList(list[Any]):
    """A sequence that knows where it and each of its items start (1-based line, column)."""

    __slots__ = ("file", "locs", "pos")

    file: str
    pos: Pos
    locs: list[Pos]

    @property
    def loc(self) -> Location:
        return Location(self.file, *self.pos)

    def value_location(self, index: int) -> Location | None:
        return Location(self.file, *self.locs[index]) if 0 <= index < len(self.locs) else None


# Plain scalars that are not strings: a few words, and numbers (which start with one of these characters).
_WORDS: dict[str, Any] = {
    "": None, "~": None, "null": None, "Null": None, "NULL": None,
    "true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
    ".inf": float("inf"), ".Inf": float("inf"), ".INF": float("inf"), "+.inf": float("inf"),
    "+.Inf": float("inf"), "+.INF": float("inf"), "-.inf": float("-inf"), "-.Inf": float("-inf"),
    "-.INF": float("-inf"), ".nan": float("nan"), ".NaN": float("nan"), ".NAN": float("nan"),
}  # fmt: skip
_NUMBER_START = frozenset("-+.0123456789")


def _plain_scalar(value: str) -> Any:
    """YAML 1.2 core schema resolution of a plain (unquoted, untagged) scalar."""
    if value in _WORDS:
        return _WORDS[value]
    if value[0] not in _NUMBER_START:
        return value
    if _INT10.match(value):
        return int(value)
    if _INT8.match(value):
        return int(value[2:], 8)
    if _INT16.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    return value


def _tagged_scalar(tag: str, value: str, loc: Location) -> Any:
    if tag in ("tag:yaml.org,2002:str", "!"):
        return value
    converted = _plain_scalar(value)
    expected: type | tuple[type, ...] = _TAG_TYPES[tag]
    if isinstance(converted, bool) and expected is int:
        converted = value
    if not isinstance(converted, expected):
        raise SourceError(f"value {value!r} does not match its tag {tag}", loc, code="yaml-tag")
    return float(converted) if tag.endswith("float") else converted  # type: ignore[arg-type]


_TAG_TYPES: dict[str, type | tuple[type, ...]] = {
    "tag:yaml.org,2002:int": int,
    "tag:yaml.org,2002:float": (int, float),
    "tag:yaml.org,2002:bool": bool,
    "tag:yaml.org,2002:null": type(None),
}


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
    raise otherwise (the last value wins, as in every YAML loader).
    """
    loader = yaml.CSafeLoader(text) if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader(text)
    # The loop below is the hot path of every command: it is written flat on purpose (no helper calls
    # per event, positions as int tuples) because it runs once per node of every document.
    #
    # Each stack frame: [container, anchor, pending key, pending key position]
    stack: list[list[Any]] = []
    anchors: dict[str, Any] = {}
    result: list[Any] = []
    # how many nodes aliases may add once expanded, in all (see below)
    budget = max(ALIAS_EXPANSION_FLOOR, ALIAS_EXPANSION_FACTOR * len(text) // 4)
    get_event = loader.get_event
    scalar_event, map_start, seq_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
    map_end, seq_end, alias_event = yaml.MappingEndEvent, yaml.SequenceEndEvent, yaml.AliasEvent
    stream_end = yaml.StreamEndEvent
    plain, words, number_start = _plain_scalar, _WORDS, _NUMBER_START
    core_tags = _CORE_TAGS

    def where(pos: Pos) -> Location:
        return Location(file, *pos)

    try:
        while True:
            event: Any = get_event()
            cls = type(event)
            if cls is scalar_event:
                mark = event.start_mark
                pos: Pos = (mark.line + 1, mark.column + 1)
                tag = event.tag
                if tag is None:
                    value: Any = event.value
                    # only a plain scalar can be something other than a string, and only if it is one
                    # of a few words or starts like a number: test that before calling anything
                    if not event.style and (value in words or value[0] in number_start):
                        value = plain(value)
                elif tag not in core_tags:
                    raise SourceError(
                        f"YAML tag {tag} is not allowed: documents are data, not objects", where(pos), code="yaml-tag"
                    )
                elif tag != "!" and not event.implicit[0]:
                    value = _tagged_scalar(tag, event.value, where(pos))
                else:
                    value = event.value
                if event.anchor is not None:
                    anchors[event.anchor] = value
            elif cls is map_start or cls is seq_start:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                tag = event.tag
                if tag is not None and tag not in core_tags:
                    raise SourceError(
                        f"YAML tag {tag} is not allowed: documents are data, not objects", where(pos), code="yaml-tag"
                    )
                if len(stack) >= MAX_DEPTH:
                    raise SourceError(f"nesting deeper than {MAX_DEPTH} levels", where(pos), code="too-deep")
                if stack and stack[-1][2] is None and type(stack[-1][0]) is YMap:
                    raise SourceError("a mapping or sequence cannot be used as a key", where(pos), code="complex-key")
                container: YMap | YList
                if cls is map_start:
                    container = YMap()
                    container.locs = {}
                    container.key_locs = {}
                else:
                    container = YList()
                    container.locs = []
                container.file = file
                container.pos = pos
                stack.append([container, event.anchor, None, None])
                continue
            elif cls is map_end or cls is seq_end:
                frame = stack.pop()
                value = frame[0]
                pos = value.pos
                if frame[1] is not None:
                    anchors[frame[1]] = value
            elif cls is alias_event:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                target = anchors.get(event.anchor)
                if target is None:
                    raise SourceError(f"unknown alias *{event.anchor}", where(pos), code="yaml-alias")
                value = target
                # Aliases are shared, not copied; what is bounded is how much they *would* expand to,
                # because every walker after this one expands them.
                budget -= _count_nodes(target, budget)
                if budget < 0:
                    raise SourceError(
                        "aliases expand to too many nodes (an alias-expansion bomb?): refused",
                        where(pos),
                        code="alias-bomb",
                    )
            elif event is None or cls is stream_end:
                break
            else:
                continue  # stream/document start and end
            # attach the finished node to its parent
            if not stack:
                if result:
                    raise SourceError("more than one YAML document in the stream", where(pos), code="multi-document")
                result.append(value)
                continue
            top = stack[-1]
            parent = top[0]
            if type(parent) is YList:
                parent.append(value)
                parent.locs.append(pos)
                continue
            key = top[2]
            if key is None:
                if type(value) is YMap or type(value) is YList:
                    raise SourceError("a mapping or sequence cannot be used as a key", where(pos), code="complex-key")
                key = value if type(value) is str else _key_text(value)
                if key in parent:
                    first = where(parent.key_locs[key])
                    if duplicates is None:
                        raise SourceError(
                            f"duplicate key {key!r} (first at line {first.line})", where(pos), code="duplicate-key"
                        )
                    duplicates.append((key, first, where(pos)))
                top[2], top[3] = key, pos
                continue
            parent[key] = value
            parent.locs[key] = pos
            parent.key_locs[key] = top[3]
            top[2] = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark is not None else Location(file, 1, 1)
        problem = exc.problem or exc.context or "syntax error"
        if "maximum nesting depth" in problem:
            raise SourceError("nesting deeper than the parser allows (1000 levels)", loc, code="too-deep") from None
        raise SourceError(f"YAML syntax error: {problem}", loc, code="yaml-syntax") from None
    except yaml.reader.ReaderError as exc:
        # Not a MarkedYAMLError: it carries an offset, not a line/column mark, and its str() spans two
        # lines. libyaml (CSafeLoader) counts the offset in UTF-8 bytes, PyYAML's own reader in characters.
        if isinstance(loader, yaml.SafeLoader):
            prefix = text[: exc.position]
        else:
            prefix = text.encode("utf-8")[: exc.position].decode("utf-8", "replace")
        column = len(prefix) - (prefix.rfind("\n") + 1) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SourceError(
            f"YAML error: unacceptable character {char}: {exc.reason}",
            Location(file, prefix.count("\n") + 1, column),
            code="yaml-syntax",
        ) from None
    except yaml.YAMLError as exc:
        # any other libyaml error: keep the message on one line (diagnostics are one line each)
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"YAML error: {summary}", Location(file, 1, 1), code="yaml-syntax") from None
    finally:
        loader.dispose()
    if not result:
        raise SourceError(
            "empty document: expected an AsyncAPI YAML or JSON text", Location(file, 1, 1), code="empty-file"
        )
    return result[0]


def _count_nodes(value: Any, limit: int) -> int:
    """How many nodes ``value`` expands to, counting at most a little past ``limit``."""
    count = 0
    todo = [value]
    while todo and count <= limit:
        node = todo.pop()
        count += 1
        if type(node) is YMap:
            todo.extend(node.values())
        elif type(node) is YList:
            todo.extend(node)
    return count


def kind_of(value: Any) -> str:
    """How a value reads in a message: "an object", "an array", "null", "a boolean", "a number", "a string"."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


def _key_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def location_of(node: Any, key: str | int | None = None, *, at_key: bool = False) -> Location | None:
    """Where ``node`` (or its value, or key, at ``key``) starts, if it came from a source file."""
    if key is None:
        return node.loc if isinstance(node, YMap | YList) else None
    if isinstance(node, YMap) and isinstance(key, str):
        return node.value_location(key, at_key=at_key)
    if isinstance(node, YList) and isinstance(key, int):
        return node.value_location(key)
    return None


__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "Pos",
    "YList",
    "YMap",
    "check_text",
    "kind_of",
    "location_of",
    "parse_text",
]
