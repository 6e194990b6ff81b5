"""Findings about a document: one value type, three renderings (human text, JSON, SARIF 2.1.0).

A :class:`Diagnostic` says how bad (severity), which rule (code), what (message), where in the data
(JSON path) and where in the source (file:line:column).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

from tidings.errors import Location
from tidings.redact import redact_url

Path = tuple[str | int, ...]


class Severity(enum.IntEnum):
    """Ordered so that ``min()`` over diagnostics gives the worst; values match Spectral's."""

    ERROR = 0
    WARNING = 1
    INFO = 2
    HINT = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        aliases = {"warn": "warning", "information": "info"}
        name = aliases.get(text.lower(), text.lower())
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}: use error, warning, info or hint") from None


class Diagnostic:
    """One finding. Immutable; equal when severity, code, message, path and location are."""

    __slots__ = ("code", "location", "message", "path", "severity", "suggestion")

    severity: Severity
    code: str
    message: str
    path: Path
    location: Location | None
    #: a suggested fix in words (``rename to user.created``); empty when there is none
    suggestion: str

    def __init__(
        self,
        severity: Severity,
        code: str,
        message: str,
        path: Path = (),
        location: Location | None = None,
        suggestion: str = "",
    ) -> None:
        # Messages quote the document (keys, addresses); a newline or escape sequence in one must not
        # turn one finding into several lines, or forge another, in any output.
        if not message.isprintable():
            message = _printable(message)
        if suggestion and not suggestion.isprintable():
            suggestion = _printable(suggestion)
        set_ = object.__setattr__
        set_(self, "severity", severity)
        set_(self, "code", code)
        set_(self, "message", message)
        set_(self, "path", tuple(path))
        set_(self, "location", location)
        set_(self, "suggestion", suggestion)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Diagnostic is immutable: use with_severity() or a new Diagnostic ({name})")

    def _key(self) -> tuple[Any, ...]:
        return (self.severity, self.code, self.message, self.path, self.location)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Diagnostic) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Diagnostic({self.severity!r}, {self.code!r}, {self.message!r}, {self.path!r}, "
            f"{self.location!r}, {self.suggestion!r})"
        )

    def with_severity(self, severity: Severity) -> Diagnostic:
        return Diagnostic(severity, self.code, self.message, self.path, self.location, self.suggestion)

    @property
    def json_path(self) -> str:
        return pointer(self.path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity.label,
            "code": self.code,
            "message": redact_url(self.message),
            "path": self.json_path,
        }
        if self.location is not None:
            out["file"] = self.location.file
            out["line"] = self.location.line
            out["column"] = self.location.column
        if self.suggestion:
            out["suggestion"] = self.suggestion
        return out


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 JSON pointer for ``path``."""
    if not path:
        return ""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def dotted(path: Iterable[str | int]) -> str:
    """``channels.user/signedup.publish``: a path as people write it in prose."""
    return ".".join(str(p) for p in path)


def sort_key(d: Diagnostic) -> tuple[str, int, int, int, str]:
    loc = d.location
    return (loc.file if loc else "", loc.line if loc else 0, loc.column if loc else 0, d.severity, d.code)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def to_sarif(results: Sequence[tuple[str, Sequence[Diagnostic]]], tool: str, version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; ``results`` pairs each input file with its diagnostics."""
    level = {
        Severity.ERROR: "error",
        Severity.WARNING: "warning",
        Severity.INFO: "note",
        Severity.HINT: "note",
    }
    rules: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for file, diagnostics in results:
        for d in diagnostics:
            rules.setdefault(d.code, {"id": d.code})
            loc = d.location
            physical: dict[str, Any] = {"artifactLocation": {"uri": loc.file if loc else file}}
            if loc is not None:
                physical["region"] = {"startLine": loc.line, "startColumn": loc.column}
            out.append(
                {
                    "ruleId": d.code,
                    "level": level[d.severity],
                    "message": {"text": redact_url(d.message)},
                    "locations": [
                        {
                            "physicalLocation": physical,
                            "logicalLocations": [{"fullyQualifiedName": d.json_path}],
                        }
                    ],
                }
            )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": tool,
                        "version": version,
                        "informationUri": "https://github.com/tidings-dev/tidings",
                        "rules": list(rules.values()),
                    }
                },
                "results": out,
            }
        ],
    }


__all__ = ["Diagnostic", "Path", "Severity", "dotted", "has_errors", "pointer", "sort_key", "to_sarif"]
