"""A small declarative language for the shape of AsyncAPI objects, and the walker that checks it.

The specification text describes every object as a table of fixed fields, patterned fields and
"this field may be a Reference Object". :mod:`tidings.asyncapi.spec2` and :mod:`tidings.asyncapi.spec3`
transcribe those tables into :class:`Obj` values; :class:`Checker` walks a loaded document against them,
follows ``$ref`` where the specification allows one, and reports, in words a person can act on, every
place the document departs from the tables.

Fields carry the minor version that introduced them (``since``), so one table serves 2.0.0 to 2.6.0 and
a 2.2.0 document using a 2.5.0 field is told exactly that.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tidings.asyncapi.diagnostics import Diagnostic, Path, Severity
from tidings.asyncapi.source import YList, YMap, kind_of, location_of
from tidings.errors import Location, ReferenceError_

if TYPE_CHECKING:
    from tidings.asyncapi.refs import Resolver

Version = tuple[int, int, int]
EXTENSION = re.compile(r"^x-")


def vtext(v: Version) -> str:
    return ".".join(map(str, v))


class Spec:
    """The expected shape of one value."""

    name = "value"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        raise NotImplementedError


_CONTAINERS = frozenset({YMap, YList, dict, list})


class _Lazy:
    """A spec given as a function, for tables that refer to themselves (schemas contain schemas)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Spec]) -> None:
        self.make = make


class Field:
    """One field of a table: its spec, and the version that introduced (or removed) it."""

    __slots__ = ("since", "spec", "until")

    def __init__(
        self, spec: Spec | Callable[[], Spec], since: Version | None = None, until: Version | None = None
    ) -> None:
        self.spec: Spec | _Lazy = spec if isinstance(spec, Spec) else _Lazy(spec)
        self.since = since
        self.until = until

    def resolved(self) -> Spec:
        s = self.spec
        if isinstance(s, _Lazy):
            self.spec = s = s.make()
        return s


def _version(text: str | None) -> Version | None:
    if text is None:
        return None
    a, b, c = (int(x) for x in text.split("."))
    return (a, b, c)


def F(spec: Spec | Callable[[], Spec], since: str | None = None, until: str | None = None) -> Field:
    return Field(spec, _version(since), _version(until))


class Scalar(Spec):
    def __init__(
        self,
        name: str,
        accepts: Callable[[Any], bool],
        *,
        enum: Iterable[Any] | None = None,
        pattern: str | None = None,
        pattern_desc: str = "",
        min_value: float | None = None,
    ) -> None:
        self.name = name
        self.accepts = accepts
        self.enum = tuple(enum) if enum is not None else None
        self.pattern = re.compile(pattern) if pattern else None
        self.pattern_desc = pattern_desc
        self.min_value = min_value

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not self.accepts(node):
            ck.error("structure-type", f"{_label(path)} must be {self.name}, got {kind_of(node)}", path)
            return
        if self.enum is not None and node not in self.enum:
            options = ", ".join(map(str, self.enum))
            hint = _did_you_mean(str(node), [str(e) for e in self.enum])
            ck.error("structure-enum", f"{_label(path)} is {node!r}; allowed values: {options}{hint}", path)
        if self.pattern is not None and not self.pattern.search(node):
            ck.error("structure-pattern", f"{_label(path)} {node!r} is not {self.pattern_desc}", path)
        if self.min_value is not None and node < self.min_value:
            ck.error("structure-range", f"{_label(path)} must be at least {self.min_value:g}", path)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def Str(*, enum: Iterable[str] | None = None, pattern: str | None = None, pattern_desc: str = "") -> Scalar:
    return Scalar("a string", _is_str, enum=enum, pattern=pattern, pattern_desc=pattern_desc)


STR = Str()
URI = Str(pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:", pattern_desc="an absolute URI")
URI_REF = STR
EMAIL = Str(pattern=r"^[^@\s]+@[^@\s]+$", pattern_desc="an email address")
BOOL = Scalar("a boolean", lambda v: isinstance(v, bool))
NUM = Scalar("a number", _is_num)
NONNEG_INT = Scalar("a non-negative integer", _is_int, min_value=0)
POS_NUM = Scalar("a number greater than 0", lambda v: _is_num(v) and v > 0)
STR_OR_NULL = Scalar("a string or null", lambda v: v is None or isinstance(v, str))
RUNTIME_EXPRESSION = Str(
    pattern=r"^\$message\.(header|payload)(#(/([^/~]|~[01])*)*)?$",
    pattern_desc="a runtime expression like $message.payload#/user/id",
)


class AnyValue(Spec):
    name = "any value"

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if isinstance(node, dict | list):
            ck.unchecked.append((node, path, file))


ANY = AnyValue()


class Obj(Spec):
    """An object with fixed fields, optionally patterned fields, and ``x-`` extensions."""

    def __init__(
        self,
        name: str,
        fields: dict[str, Field],
        *,
        required: Iterable[str] = (),
        patterned: Iterable[tuple[str, Field]] = (),
        extensions: bool = True,
        additional: Field | None = None,
        extra: Callable[[Checker, YMap, Path, str], None] | None = None,
        closed: bool = True,
    ) -> None:
        self.name = name
        self.fields = fields
        self.required = tuple(required)
        self.patterned = [(re.compile(p), f) for p, f in patterned]
        self.extensions = extensions
        self.additional = additional
        self.extra = extra
        self.closed = closed

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not isinstance(node, dict):
            ck.error("structure-type", f"{_label(path)} must be {_article(self.name)}, got {kind_of(node)}", path)
            return
        # An object can be reached twice (a component checked in place, then through a $ref): once is
        # enough, and this is also what stops recursive schemas.
        seen = (id(node), id(self))
        if seen in ck._done:
            return
        ck._done.add(seen)
        version = ck.version
        for key, value in node.items():
            sub = (*path, key)
            f = self.fields.get(key)
            if f is not None:
                if f.since is not None and version < f.since:
                    ck.error(
                        "structure-version",
                        f'Property "{key}" is not expected in {_article(self.name)} before AsyncAPI '
                        f"{vtext(f.since)} (this document declares {vtext(version)})",
                        sub,
                        at_key=True,  # point at the key, like structure-unknown-property (not at its value)
                    )
                    continue
                if f.until is not None and version >= f.until:
                    ck.error(
                        "structure-version",
                        f'Property "{key}" was removed from {_article(self.name)} in AsyncAPI {vtext(f.until)}',
                        sub,
                        at_key=True,
                    )
                    continue
                spec = f.spec if type(f.spec) is not _Lazy else f.resolved()
                if type(value) in _CONTAINERS:
                    ck.visit(value, spec, sub, file)  # type: ignore[arg-type]
                else:
                    spec.check(ck, value, sub, file)  # type: ignore[union-attr]
                continue
            if self.extensions and isinstance(key, str) and key.startswith("x-"):
                if isinstance(value, dict | list):
                    ck.unchecked.append((value, sub, file))
                continue
            for pattern, pf in self.patterned:
                if pattern.search(key):
                    ck.visit(value, pf.resolved(), sub, file)
                    break
            else:
                if self.additional is not None:
                    ck.visit(value, self.additional.resolved(), sub, file)
                elif not self.closed:
                    if isinstance(value, dict | list):
                        ck.unchecked.append((value, sub, file))
                else:
                    allowed = [k for k, f in self.fields.items() if f.since is None or version >= f.since]
                    hint = _did_you_mean(key, allowed)
                    if key == "$ref":
                        ck.error(
                            "ref-not-allowed",
                            f"Referencing in this place is not allowed: {_article(self.name)}"
                            f" cannot be a $ref in AsyncAPI {vtext(version)}",
                            sub,
                            at_key=True,
                        )
                    else:
                        ck.error(
                            "structure-unknown-property",
                            f'Property "{key}" is not expected in {_article(self.name)}{hint}',
                            sub,
                            at_key=True,
                        )
        for req in self.required:
            if req not in node:
                ck.error(
                    "structure-required",
                    f'{_article(self.name, cap=True)} is missing the required property "{req}"',
                    path,
                )
        if self.extra is not None:
            self.extra(ck, node, path, file)  # type: ignore[arg-type]


class MapOf(Spec):
    def __init__(
        self,
        value: Field | Spec | Callable[[], Spec],
        *,
        key_pattern: str | None = None,
        key_desc: str = "",
        name: str = "an object",
        extensions: bool = False,
    ) -> None:
        self.value = value if isinstance(value, Field) else Field(value)
        self.key_pattern = re.compile(key_pattern) if key_pattern else None
        self.key_desc = key_desc
        self.name = name
        self.extensions = extensions

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not isinstance(node, dict):
            ck.error("structure-type", f"{_label(path)} must be {self.name}, got {kind_of(node)}", path)
            return
        spec = self.value.resolved()
        for key, value in node.items():
            sub = (*path, key)
            if self.extensions and key.startswith("x-"):
                continue
            if self.key_pattern is not None and not self.key_pattern.search(key):
                ck.error("structure-key", f"key {key!r} is not {self.key_desc}", sub, at_key=True)
            if type(value) in _CONTAINERS:
                ck.visit(value, spec, sub, file)
            else:
                spec.check(ck, value, sub, file)


class ListOf(Spec):
    def __init__(
        self,
        item: Spec | Callable[[], Spec],
        *,
        min_items: int = 0,
        unique: bool = False,
        name: str = "an array",
    ) -> None:
        self.item = Field(item)
        self.min_items = min_items
        self.unique = unique
        self.name = name

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not isinstance(node, list):
            ck.error("structure-type", f"{_label(path)} must be {self.name}, got {kind_of(node)}", path)
            return
        if len(node) < self.min_items:
            ck.error("structure-min-items", f"{_label(path)} must have at least {self.min_items} item(s)", path)
        spec = self.item.resolved()
        for i, value in enumerate(node):
            if type(value) in _CONTAINERS:
                ck.visit(value, spec, (*path, i), file)
            else:
                spec.check(ck, value, (*path, i), file)
        if self.unique:
            seen: set[Any] = set()
            unhashable: list[Any] = []
            for i, value in enumerate(node):
                try:
                    duplicate = value in seen
                    seen.add(value)
                except TypeError:  # objects and arrays: compare the slow way, they are rare here
                    duplicate = value in unhashable
                    unhashable.append(value)
                if duplicate:
                    ck.error("structure-unique", f"{_label(path)} has a duplicate item {value!r}", (*path, i))


class Ref(Spec):
    """A value that may also be a Reference Object (``{"$ref": ...}``)."""

    def __init__(self, inner: Spec | Callable[[], Spec], since: str | None = None) -> None:
        self._inner = Field(inner)
        self.since = _version(since)

    @property
    def inner(self) -> Spec:
        return self._inner.resolved()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if isinstance(node, dict) and "$ref" in node:
            if self.since is not None and ck.version < self.since:
                ck.error(
                    "ref-not-allowed",
                    f"Referencing in this place is not allowed: {_article(self.name)} "
                    f"can be a $ref only from AsyncAPI {vtext(self.since)}",
                    path,
                )
                return
            ck.follow(node, self.inner, path, file)
            return
        # the caller has already entered this node (Checker.visit), so check it in place
        self.inner.check(ck, node, path, file)


class OnlyRef(Spec):
    """A Reference Object and nothing else (3.x ``operation.channel``, ``channel.servers[*]``)."""

    name = "a Reference Object"

    def __init__(self, target: Spec | Callable[[], Spec]) -> None:
        self._target = Field(target)

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        if not (isinstance(node, dict) and "$ref" in node):
            ck.error(
                "structure-type",
                f"{_label(path)} must be a Reference Object ($ref), got {kind_of(node)}",
                path,
            )
            return
        ck.follow(node, self._target.resolved(), path, file)


class Either(Spec):
    """One of several shapes, chosen by a predicate on the value (no trial-and-error matching)."""

    def __init__(self, name: str, choose: Callable[[Any], Spec | None]) -> None:
        self.name = name
        self.choose = choose

    def check(self, ck: Checker, node: Any, path: Path, file: str) -> None:
        spec = self.choose(node)
        if spec is None:
            ck.error("structure-type", f"{_label(path)} must be {self.name}, got {kind_of(node)}", path)
            return
        spec.check(ck, node, path, file)  # the caller has already entered this node


class Checker:
    """Walks a document against the tables, following references; collects diagnostics."""

    def __init__(self, resolver: Resolver, version: Version) -> None:
        self.resolver = resolver
        self.version = version
        self.diagnostics: list[Diagnostic] = []
        self._done: set[tuple[int, int]] = set()
        #: subtrees the tables say nothing about (extensions, bindings, examples): still swept for $refs
        self.unchecked: list[tuple[Any, Path, str]] = []
        #: (path, node) of the containers being checked, innermost last: where a finding is located
        self._current: list[Any] = []

    def error(
        self,
        code: str,
        message: str,
        path: Path,
        *,
        at_key: bool = False,
        severity: Severity = Severity.ERROR,
    ) -> None:
        self.diagnostics.append(Diagnostic(severity, code, message, path, self._locate(path, at_key)))

    def _locate(self, path: Path, at_key: bool) -> Location | None:
        # The walker keeps a stack of (path, node) for the nodes it is inside; find the deepest known.
        for base_path, node in reversed(self._current):
            n = len(base_path)
            if path[:n] != base_path:
                continue
            rest = path[n:]
            loc = location_of(node)
            for i, key in enumerate(rest):
                last = i == len(rest) - 1
                if isinstance(node, YMap) and isinstance(key, str) and key in node:
                    loc = node.value_location(key, at_key=at_key and last) or loc
                    node = node[key]
                elif isinstance(node, YList) and isinstance(key, int) and key < len(node):
                    loc = node.value_location(key) or loc
                    node = node[key]
                else:
                    break
            return loc
        return None

    def visit(self, node: Any, spec: Spec, path: Path, file: str) -> None:
        # No memo here: a tree is visited once; only references can lead back (see follow()).
        # No try/finally either: checks report findings, they do not raise.
        if isinstance(node, dict | list):
            current = self._current
            current.append((path, node))
            spec.check(self, node, path, file)
            current.pop()
        else:
            spec.check(self, node, path, file)

    def follow(self, ref_node: dict[str, Any], spec: Spec, path: Path, file: str) -> None:
        self._current.append((path, ref_node))
        try:
            target, target_file = self.resolver.deref(ref_node, file)
        except ReferenceError_ as exc:
            self.diagnostics.append(
                Diagnostic(
                    Severity.ERROR,
                    exc.code,
                    exc.message,
                    (*path, "$ref"),
                    exc.location or self._locate((*path, "$ref"), False),
                )
            )
            return
        finally:
            self._current.pop()
        # no memo here: Obj.check remembers what it has checked, which also ends recursive schemas
        self.visit(target, spec, path, target_file)


def _label(path: Path) -> str:
    if not path:
        return "the document"
    return f'"{path[-1]}"' if isinstance(path[-1], str) else f'"{path[-2] if len(path) > 1 else ""}[{path[-1]}]"'


def _article(name: str, cap: bool = False) -> str:
    text = name if name.startswith(("a ", "an ")) else ("an " if name[:1].lower() in "aeiou" else "a ") + name
    return text[:1].upper() + text[1:] if cap else text


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


__all__ = [
    "ANY",
    "BOOL",
    "EMAIL",
    "NONNEG_INT",
    "NUM",
    "POS_NUM",
    "RUNTIME_EXPRESSION",
    "STR",
    "STR_OR_NULL",
    "URI",
    "URI_REF",
    "AnyValue",
    "Checker",
    "Either",
    "F",
    "Field",
    "ListOf",
    "MapOf",
    "Obj",
    "OnlyRef",
    "Ref",
    "Scalar",
    "Spec",
    "Str",
    "Version",
    "kind_of",
    "vtext",
]
