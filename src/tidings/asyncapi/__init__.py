"""The AsyncAPI document core: pure functions over documents, no network, no broker imports.

>>> from tidings.asyncapi import check_file
>>> result = check_file("examples/user-service.asyncapi.yaml")   # doctest: +SKIP
>>> result.valid
True
"""

from __future__ import annotations

import os

from tidings.asyncapi.diagnostics import Diagnostic, Severity, has_errors
from tidings.asyncapi.document import SUPPORTED_VERSIONS, Document, load_document
from tidings.asyncapi.model import Channel, Message, Model, Operation, Server, build_model
from tidings.asyncapi.refs import LoadOptions
from tidings.asyncapi.validate import validate
from tidings.errors import DocumentError


class CheckResult:
    """The outcome of loading and validating one file."""

    def __init__(self, file: str, document: Document | None, diagnostics: list[Diagnostic] | None = None) -> None:
        self.file = file
        self.document = document
        self.diagnostics: list[Diagnostic] = diagnostics if diagnostics is not None else []

    def __repr__(self) -> str:
        return f"CheckResult({self.file!r}, valid={self.valid}, {len(self.diagnostics)} diagnostics)"

    @property
    def valid(self) -> bool:
        return self.document is not None and not has_errors(self.diagnostics)


def check_file(path: str | os.PathLike[str], options: LoadOptions | None = None) -> CheckResult:
    """Load and validate ``path``; never raises for a bad document (the findings say what is wrong)."""
    file = os.fspath(path)
    try:
        doc = load_document(file, options)
    except DocumentError as exc:
        return CheckResult(file, None, [Diagnostic(Severity.ERROR, exc.code, exc.message, (), exc.location)])
    return CheckResult(file, doc, validate(doc))


__all__ = [
    "SUPPORTED_VERSIONS",
    "Channel",
    "CheckResult",
    "Diagnostic",
    "Document",
    "LoadOptions",
    "Message",
    "Model",
    "Operation",
    "Server",
    "Severity",
    "build_model",
    "check_file",
    "load_document",
    "validate",
]
