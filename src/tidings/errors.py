"""The one error tree of tidings.

Every error a user can meet derives from :class:`TidingsError` and says what to do next::

    TidingsError
     ├── UsageError                 bad command-line or API arguments (exit code 2)
     └── DocumentError              an AsyncAPI document could not be read at all (exit code 1)
          ├── SourceError           not a readable YAML/JSON text: size, encoding, syntax, depth, aliases, tags
          └── ReferenceError_       a ``$ref`` that cannot or may not be followed

(The value types on the path of ``tidings validate`` are NamedTuples and plain classes, not dataclasses:
importing :mod:`dataclasses` pulls in :mod:`inspect`, ~12 ms of a ~80 ms command.)

Findings inside a document that *could* be read are not exceptions: they are
:class:`tidings.asyncapi.diagnostics.Diagnostic` values, collected and reported together.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class TidingsError(Exception):
    """Root of every error raised by tidings."""


def one_line(error: BaseException | str) -> str:
    """An error's text folded onto one line, without its closing period (a message goes on after it with
    "; what to do"); the error's type name when it has no text."""
    text = " ".join(str(error).split()).rstrip(".")
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")


def describe_error(error: BaseException) -> str:
    """``TypeName: message`` on one line, for logs, reasons and headers (a multi-line message is folded)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class UsageError(TidingsError):
    """The caller asked for something that cannot be done as asked (exit code 2)."""


class Location(NamedTuple):
    """A place in a source file; ``line`` and ``column`` are 1-based."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Locatable(Protocol):
    """Anything that knows where it starts: a parsed mapping or sequence."""

    @property
    def loc(self) -> Location: ...


class DocumentError(TidingsError):
    """A document could not be read; carries where, so the CLI can print ``file:line:col: message``."""

    code = "document-error"

    def __init__(self, message: str, location: Location | Locatable | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # a node may be given instead of its location: the Location is then built only on error
        self.location: Location | None = (
            location.loc if location is not None and not isinstance(location, Location) else location
        )
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class SourceError(DocumentError):
    """The bytes are not a document we can read safely (too big, binary, bad YAML, bomb, tag...)."""

    code = "source-error"


class ReferenceError_(DocumentError):
    """A ``$ref`` points somewhere that does not exist or that the load policy forbids."""

    code = "invalid-ref"


__all__ = [
    "DocumentError",
    "Location",
    "ReferenceError_",
    "SourceError",
    "TidingsError",
    "UsageError",
    "describe_error",
    "one_line",
]
