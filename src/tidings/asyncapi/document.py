"""A loaded AsyncAPI document: its raw data with positions, its version, and a resolver for ``$ref``.

>>> doc = load_document("examples/user-service.asyncapi.yaml")   # doctest: +SKIP
>>> doc.version, doc.major
('2.6.0', 2)
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from tidings.asyncapi.diagnostics import Diagnostic, Path, Severity
from tidings.asyncapi.refs import LoadOptions, Resolver
from tidings.asyncapi.source import YList, YMap
from tidings.errors import Location, ReferenceError_

if TYPE_CHECKING:
    from tidings.asyncapi.model import Model

SUPPORTED_VERSIONS = ("2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.4.0", "2.5.0", "2.6.0", "3.0.0", "3.1.0")
LATEST_VERSION = "3.1.0"
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.\-]+)?$")


class Document:
    """One AsyncAPI document as read from disk, before any judgement of its content."""

    def __init__(self, file: str, key: str, data: Any, resolver: Resolver) -> None:
        self.file = file
        #: absolute path (or URL) used as the base for relative references
        self.key = key
        self.data = data
        self.resolver = resolver
        #: the unified model, once :func:`tidings.asyncapi.model.build_model` has built it
        self.model: Model | None = None

    def __repr__(self) -> str:
        return f"Document({self.file!r}, asyncapi={self.version!r})"

    @property
    def version(self) -> str | None:
        v = self.data.get("asyncapi") if isinstance(self.data, dict) else None
        return v if isinstance(v, str) else None

    @property
    def version_tuple(self) -> tuple[int, int, int] | None:
        m = _VERSION.match(self.version or "")
        return (int(m[1]), int(m[2]), int(m[3])) if m else None

    @property
    def major(self) -> int | None:
        v = self.version_tuple
        return v[0] if v else None

    def deref(self, node: Any, file: str | None = None) -> Any:
        """``node`` with any chain of references followed; raises :class:`ReferenceError_`."""
        base = self.resolver.file_of(node, file or self.key)
        value, _ = self.resolver.deref(node, base)
        return value

    def try_deref(self, node: Any) -> Any:
        """Like :meth:`deref`, but ``None`` when the reference is broken (already reported elsewhere)."""
        try:
            return self.deref(node)
        except ReferenceError_:
            return None

    def location(self, path: Path, *, at_key: bool = False) -> Location | None:
        """Where the value at ``path`` is written, following references along the way."""
        node: Any = self.data
        loc: Location | None = getattr(node, "loc", None)
        for i, key in enumerate(path):
            if isinstance(node, dict) and "$ref" in node and key not in node:
                resolved = self.try_deref(node)
                if resolved is None:
                    return loc
                node = resolved
            last = i == len(path) - 1
            if isinstance(node, YMap) and isinstance(key, str) and key in node:
                loc = node.value_location(key, at_key=at_key and last) or loc
                node = node[key]
            elif isinstance(node, YList) and isinstance(key, int) and 0 <= key < len(node):
                loc = node.value_location(key) or loc
                node = node[key]
            else:
                return loc
        return loc

    def diagnostic(
        self,
        severity: Severity,
        code: str,
        message: str,
        path: Path,
        *,
        at_key: bool = False,
        suggestion: str = "",
    ) -> Diagnostic:
        return Diagnostic(severity, code, message, path, self.location(path, at_key=at_key), suggestion)


def load_document(path: str | os.PathLike[str], options: LoadOptions | None = None) -> Document:
    """Read, parse and index one document; raise :class:`~tidings.errors.SourceError` if unreadable.

    Duplicate keys do not stop the load: they become diagnostics on the returned document.
    """
    options = options or LoadOptions()
    display = os.fspath(path)
    key = os.path.abspath(display)
    root = options.root or _default_root(key)
    resolver = Resolver(options, root)
    data = resolver.load_file(key, display)
    return Document(display, key, data, resolver)


def _default_root(key: str) -> str:
    """The project folder (the current one) when it holds the document, else the document's own folder.

    A current folder of ``/`` or the home folder is no project: there the document's folder is the fence.
    """
    cwd = os.path.realpath(os.getcwd())
    real = os.path.realpath(key)
    too_wide = cwd in (os.path.sep, os.path.realpath(os.path.expanduser("~")))
    if not too_wide and os.path.commonpath([real, cwd]) == cwd:
        return cwd
    return os.path.dirname(key)


def duplicate_key_diagnostics(doc: Document) -> list[Diagnostic]:
    return [
        Diagnostic(
            Severity.ERROR,
            "duplicate-key",
            f'duplicate key "{name}" (first written at line {first.line}); only the last one counts',
            (),
            second,
        )
        for name, first, second in doc.resolver.duplicates
    ]


__all__ = ["LATEST_VERSION", "SUPPORTED_VERSIONS", "Document", "duplicate_key_diagnostics", "load_document"]
