"""Running the rules: validation first, then every active rule on the document's model."""

from __future__ import annotations

import os
from typing import Any

from tidings.asyncapi import CheckResult, check_file
from tidings.asyncapi.diagnostics import Diagnostic, Severity
from tidings.asyncapi.document import SUPPORTED_VERSIONS, Document
from tidings.asyncapi.model import build_model
from tidings.asyncapi.refs import LoadOptions
from tidings.lint.config import LintConfig
from tidings.lint.registry import RuleContext

#: the code of the finding that stands for a rule that raised instead of reporting
RULE_FAILED = "lint-rule-failed"


def lintable(doc: Document) -> bool:
    """Whether ``doc`` is an AsyncAPI document of a version the rules understand."""
    return isinstance(doc.data, dict) and doc.version in SUPPORTED_VERSIONS


def lint_document(doc: Document, config: LintConfig | None = None) -> list[Diagnostic]:
    """The lint findings on ``doc`` (not its validation findings); ``[]`` for a document that is not
    AsyncAPI 2.x/3.x.

    Each rule's findings are re-levelled to the configured severity, and a finding reported twice (the
    same code, path and message: one object reached from two places) is kept once.
    """
    if not lintable(doc):
        return []
    config = config or LintConfig()
    model = build_model(doc)
    shared: dict[str, Any] = {}
    seen: set[tuple[str, tuple[str | int, ...], str]] = set()
    out: list[Diagnostic] = []
    for rule, severity in config.active(model.major):
        ctx = RuleContext(doc, model, rule, severity, shared)
        try:
            found = list(rule.check(ctx))
        except Exception as exc:
            # one faulty (often custom) rule must not hide every other finding; say which one failed
            found = [
                Diagnostic(
                    Severity.ERROR,
                    RULE_FAILED,
                    f'rule "{rule.code}" failed on this document: {type(exc).__name__}: {exc}',
                )
            ]
        for d in found:
            if d.code == rule.code and d.severity is not severity:
                d = d.with_severity(severity)
            key = (d.code, d.path, d.message)
            if key not in seen:
                seen.add(key)
                out.append(d)
    return out


def lint_file(
    path: str | os.PathLike[str],
    config: LintConfig | None = None,
    options: LoadOptions | None = None,
) -> CheckResult:
    """Validate ``path``, then lint it: validation's findings followed by the rules' findings.

    A file that cannot be read gives its load error only; a file that is not an AsyncAPI 2.x/3.x document
    gives validation's verdict only.
    """
    checked = check_file(path, options)
    doc = checked.document
    if doc is None or not lintable(doc):
        return checked
    return CheckResult(checked.file, doc, [*checked.diagnostics, *lint_document(doc, config)])


__all__ = ["RULE_FAILED", "lint_document", "lint_file", "lintable"]
