"""Printing diagnostics for people (text, with the source line) and for machines (JSON, SARIF)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tidings import __version__
from tidings.asyncapi.diagnostics import Diagnostic, Severity, sort_key, to_sarif
from tidings.redact import redact_url

_STYLE = {
    Severity.ERROR: "\x1b[31m",
    Severity.WARNING: "\x1b[33m",
    Severity.INFO: "\x1b[36m",
    Severity.HINT: "\x1b[2m",
}
_RESET = "\x1b[0m"


class FileResult:
    """One file's findings, as the reports print them."""

    def __init__(
        self, file: str, diagnostics: list[Diagnostic] | None = None, version: str | None = None, fatal: bool = False
    ) -> None:
        self.file = file
        self.diagnostics: list[Diagnostic] = diagnostics if diagnostics is not None else []
        self.version = version
        #: set when the file could not be read at all
        self.fatal = fatal

    @property
    def errors(self) -> int:
        return sum(d.severity is Severity.ERROR for d in self.diagnostics)

    @property
    def ok(self) -> bool:
        return self.errors == 0


def _use_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


class _Lines:
    def __init__(self) -> None:
        self._cache: dict[str, list[str] | None] = {}

    def get(self, file: str, line: int) -> str | None:
        if file not in self._cache:
            try:
                with open(file, "rb") as fh:
                    data = fh.read(64 * 1024 * 1024)
                self._cache[file] = data.decode("utf-8", "replace").splitlines()
            except OSError:
                self._cache[file] = None
        lines = self._cache[file]
        if lines is None or not 0 < line <= len(lines):
            return None
        return lines[line - 1]


def _printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``).

    Messages quote the document (a key, a channel address), and a document may hold a key such as
    ``"x\\nfake.yaml:1:1: error ..."`` or an ANSI escape: printed raw, one finding would become several
    lines, forge findings, or drive the terminal. JSON and SARIF escape on their own.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def render_text(
    results: Sequence[FileResult],
    stream: TextIO | None = None,
    *,
    verb: str = "valid",
    show_source: bool = True,
) -> None:
    out = stream or sys.stdout
    colour = _use_colour(out)
    lines = _Lines()

    def paint(text: str, style: str) -> str:
        return f"{style}{text}{_RESET}" if colour else text

    for result in results:
        for d in sorted(result.diagnostics, key=sort_key):
            where = _printable(str(d.location) if d.location else result.file)
            label = paint(d.severity.label, _STYLE[d.severity])
            out.write(f"{where}: {label} [{_printable(d.code)}] {_printable(redact_url(d.message))}")
            if d.path and not result.fatal:
                out.write(paint(f"  ({_printable(d.json_path)})", "\x1b[2m"))
            out.write("\n")
            if d.suggestion:
                out.write(f"    suggestion: {_printable(d.suggestion)}\n")
            if show_source and d.location is not None and not result.fatal:
                src = lines.get(d.location.file, d.location.line)
                if src is not None and len(src) <= 300:
                    gutter = f"{d.location.line:>6} | "
                    # documents may carry credentials in server URLs: never echo them
                    out.write(paint(gutter, "\x1b[2m") + redact_url(src) + "\n")
                    out.write(" " * (len(gutter) + d.location.column - 1) + paint("^", _STYLE[d.severity]) + "\n")
        counts = {s: sum(d.severity is s for d in result.diagnostics) for s in Severity}
        if result.ok:
            extra = _counts(counts, skip_errors=True)
            mark = paint("✔", "\x1b[32m")
            version = f" (AsyncAPI {result.version})" if result.version else ""
            out.write(f"{mark} {_printable(result.file)} is {verb}{version}{extra}\n")
        else:
            mark = paint("✖", "\x1b[31m")
            out.write(f"{mark} {_printable(result.file)}: {_counts(counts, skip_errors=False).strip(' ,()')}\n")


def _counts(counts: dict[Severity, int], *, skip_errors: bool) -> str:
    parts = []
    for sev in Severity:
        n = counts[sev]
        if n and not (skip_errors and sev is Severity.ERROR):
            parts.append(f"{n} {sev.label}{'s' if n != 1 else ''}")
    if not parts:
        return ""
    return " (" + ", ".join(parts) + ")" if skip_errors else ", ".join(parts)


def render_json(results: Sequence[FileResult], stream: TextIO | None = None) -> None:
    import orjson  # only the machine formats need it; keeps the text path's start-up short

    payload: list[dict[str, Any]] = [
        {
            "file": r.file,
            "valid": r.ok,
            "asyncapi": r.version,
            "diagnostics": [d.to_dict() for d in sorted(r.diagnostics, key=sort_key)],
        }
        for r in results
    ]
    (stream or sys.stdout).write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")


def render_sarif(results: Sequence[FileResult], stream: TextIO | None = None) -> None:
    import orjson

    log = to_sarif([(r.file, sorted(r.diagnostics, key=sort_key)) for r in results], "tidings", __version__)
    (stream or sys.stdout).write(orjson.dumps(log, option=orjson.OPT_INDENT_2).decode() + "\n")


__all__ = ["FileResult", "render_json", "render_sarif", "render_text"]
