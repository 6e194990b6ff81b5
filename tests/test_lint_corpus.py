"""Differential test: our Spectral rules against the official AsyncAPI CLI on the 195-document corpus.

For every corpus file and every rule code of the CLI's ruleset that we implement, our findings must be
the CLI's findings: same code, same JSON path (``oracle-diagnostics/``), except for these deliberate,
documented differences (see :mod:`tidings.lint.spectral`):

``RECOMMENDED_ON_3X``
    The CLI runs its recommended rules on 2.x documents only; we run them on 3.x too. On 3.x documents
    these codes are therefore not compared (the test checks instead that they do fire there).

Representation, not a difference: the CLI reports an object defined in another file at its path inside
that file (``["likeComment"]`` in ``common/messages.yaml``); we report it where the document refers to it
(``/channels/like~1comment/subscribe/message``), so that every path is a path in the linted document.
:func:`spectral_location` maps our path to the CLI's before comparing.

The other documented differences (an empty ``tags: []``, references into a component, string defaults,
server tags) never occur in the corpus, so they need no exemption here; they have tests of their own.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tidings.asyncapi import LoadOptions, check_file
from tidings.asyncapi.diagnostics import Diagnostic
from tidings.asyncapi.document import Document
from tidings.errors import ReferenceError_
from tidings.lint import RULE_FAILED, LintConfig, lint_document, lint_file

CORPUS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "asyncapi").resolve()
pytestmark = pytest.mark.skipif(
    not (CORPUS / "oracle.tsv").is_file(), reason=f"conformance corpus not found at {CORPUS}"
)

#: the CLI's (``@asyncapi/parser``) rule codes that tidings implements as lint rules
CLI_CODES = frozenset(
    {
        "asyncapi-latest-version",
        "asyncapi-id",
        "asyncapi-defaultContentType",
        "asyncapi-info-description",
        "asyncapi-info-contact",
        "asyncapi-info-contact-properties",
        "asyncapi-info-license",
        "asyncapi-info-license-url",
        "asyncapi-servers",
        "asyncapi-unused-component",
        "asyncapi2-tags",
        "asyncapi2-tags-uniqueness",
        "asyncapi2-server-no-empty-variable",
        "asyncapi2-server-no-trailing-slash",
        "asyncapi2-channel-no-trailing-slash",
        "asyncapi2-operation-operationId",
        "asyncapi2-message-messageId",
        "asyncapi2-unused-securityScheme",
        "asyncapi2-schema-default",
        "asyncapi2-schema-examples",
    }
)
#: deliberate difference: recommended rules also run on 3.x documents (the CLI skips them there)
RECOMMENDED_ON_3X = frozenset(
    {
        "asyncapi-id",
        "asyncapi-defaultContentType",
        "asyncapi-info-description",
        "asyncapi-info-contact",
        "asyncapi-info-contact-properties",
        "asyncapi-info-license",
        "asyncapi-servers",
        "asyncapi-unused-component",
    }
)

Finding = tuple[str, str, tuple[str, ...]]  # code, file, path


def _rows() -> list[dict[str, str]]:
    if not (CORPUS / "oracle.tsv").is_file():
        return []
    with open(CORPUS / "oracle.tsv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


ROWS = _rows()
CONFIG = LintConfig()
OPTIONS = LoadOptions(root=str(CORPUS))


def spectral_location(doc: Document, path: tuple[str | int, ...]) -> tuple[str, tuple[str, ...]]:
    """Where Spectral reports the object at ``path``: following ``$ref``s, in the file that defines it."""
    resolver = doc.resolver
    node: Any = doc.data
    file = doc.key
    out: list[str | int] = []

    def follow() -> None:
        nonlocal node, file, out
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            target = resolver.resolve(node["$ref"], resolver.file_of(node, file), None)
            node, file, out = target.value, target.file, list(target.path)

    try:
        for key in path:
            if isinstance(node, dict) and "$ref" in node and key not in node:
                follow()
            node = node[key] if isinstance(node, dict | list) else None
            out.append(key)
        follow()
    except (ReferenceError_, KeyError, IndexError, TypeError):
        return doc.key, tuple(str(p) for p in path)
    return file, tuple(str(p) for p in out)


def ours(doc: Document, diagnostics: list[Diagnostic]) -> set[Finding]:
    found: set[Finding] = set()
    for d in diagnostics:
        if d.code in CLI_CODES:
            file, path = spectral_location(doc, d.path)
            found.add((d.code, os.path.normpath(file), path))
    return found


def theirs(row: dict[str, str]) -> set[Finding]:
    with open(CORPUS / "oracle-diagnostics" / (row["file"].replace("/", "__") + ".json"), encoding="utf-8") as fh:
        oracle = json.load(fh)
    own = os.path.normpath(CORPUS / row["file"])
    return {
        (
            d["code"],
            os.path.normpath(CORPUS / d["source"]) if d.get("source") else own,
            tuple(str(p) for p in d["path"]),
        )
        for d in oracle
        if d["code"] in CLI_CODES
    }


@pytest.mark.parametrize("row", ROWS, ids=[r["file"].removeprefix("asyncapi-spec-examples/") for r in ROWS])
def test_our_spectral_findings_are_the_official_clis(row: dict[str, str]) -> None:
    result = lint_file(CORPUS / row["file"], CONFIG, OPTIONS)
    assert not [d for d in result.diagnostics if d.code == RULE_FAILED]
    expected = theirs(row)
    if result.document is None:
        assert expected == set()
        return
    got = ours(result.document, result.diagnostics)
    if result.document.major == 3:
        got = {f for f in got if f[0] not in RECOMMENDED_ON_3X}
        expected = {f for f in expected if f[0] not in RECOMMENDED_ON_3X}
    assert sorted(got - expected) == [], "we report, the CLI does not"
    assert sorted(expected - got) == [], "the CLI reports, we do not"


def test_the_comparison_covers_real_findings() -> None:
    """Guard against a vacuous pass: the oracle has hundreds of findings for the codes we compare."""
    total = sum(len(theirs(row)) for row in ROWS)
    assert total > 900
    compared = {code for row in ROWS for code, _, _ in theirs(row)}
    assert compared >= {"asyncapi2-message-messageId", "asyncapi-unused-component", "asyncapi2-unused-securityScheme"}


def test_recommended_rules_do_run_on_3x_documents() -> None:
    """The deliberate difference is real: on 3.x our recommended rules report what is missing."""
    fired: set[str] = set()
    for row in ROWS:
        if not row["file"].startswith("asyncapi-spec-examples/v3.0.0/"):
            continue
        result = lint_file(CORPUS / row["file"], CONFIG, OPTIONS)
        if result.document is not None and result.document.major == 3:
            fired |= {d.code for d in result.diagnostics}
    assert {"asyncapi-info-contact", "asyncapi-info-license", "asyncapi-id"} <= fired


def test_linting_the_largest_corpus_document_is_fast() -> None:
    largest = max(
        (CORPUS / row["file"] for row in ROWS if row["file"].endswith((".yml", ".yaml"))),
        key=lambda p: p.stat().st_size,
    )
    checked = check_file(largest, OPTIONS)
    assert checked.document is not None
    best = min(_timed(lambda: lint_document(checked.document, CONFIG)) for _ in range(5))  # type: ignore[arg-type]
    assert best < 0.1, f"lint took {best * 1000:.0f} ms on {largest.name}"


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
