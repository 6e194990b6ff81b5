"""Conformance: our valid/invalid verdict on 195 real AsyncAPI documents equals the official CLI's.

The corpus (``../shared/corpus/asyncapi`` from the repository root) holds the AsyncAPI project's own examples
for every spec version and the verdict of ``@asyncapi/cli`` 6.2.0 for each; see its README. A user's clone
does not have it, so these tests skip there.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import CORPUS_DIR
from tidings.asyncapi import CheckResult, LoadOptions, Severity, check_file

ORACLE = CORPUS_DIR / "oracle.tsv"

#: Files where we disagree with the official CLI on purpose, and why.
DELIBERATE = {
    **{
        f"asyncapi-spec-examples/{tag}/examples/kraken-websocket-request-reply-{name}-asyncapi.yml": (
            "the message examples violate their payload schemas (status 'unsubscribed' is not in the status "
            "enum, pair is a string where the schema says array, depth 42 is not in the depth enum); the "
            "official CLI does not validate 3.x message examples, we do"
        )
        for tag in ("master", "v3.0.0")
        for name in ("message-filter-in-reply", "multiple-channels")
    }
}

#: Files where the oracle's only error sits at line 1 of *another* file (the referenced fragment
#: ``common/messages.yaml``, where the CLI cannot place a broken ``$ref``); we point into that same file,
#: at the reference itself.
ORACLE_AT_LINE_1_OF_OTHER_FILE = {
    f"asyncapi-spec-examples/{tag}/examples/social-media/comments-service/asyncapi.yaml" for tag in ("v2.3.0", "v2.4.0")
}


def _oracle_rows() -> list[dict[str, str]]:
    if not ORACLE.is_file():
        return []
    with ORACLE.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


ROWS = _oracle_rows()
NO_CORPUS = pytest.mark.skip(reason=f"conformance corpus not found at {CORPUS_DIR}")
ALL_FILES = [r["file"] for r in ROWS] or [pytest.param("(no corpus)", marks=NO_CORPUS)]
INVALID_FILES = [r["file"] for r in ROWS if r["cli_exit_code"] == "1"] or [pytest.param("(no corpus)", marks=NO_CORPUS)]
EXIT_CODE = {r["file"]: int(r["cli_exit_code"]) for r in ROWS}


@functools.cache
def _check(name: str) -> CheckResult:
    return check_file(CORPUS_DIR / name, LoadOptions(root=os.fspath(CORPUS_DIR)))


def _errors(result: CheckResult) -> list[Any]:
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def _describe(result: CheckResult) -> str:
    return "\n".join(f"  {d.location}: [{d.code}] {d.message}" for d in _errors(result)) or "  (no errors)"


def test_corpus_is_complete(corpus_dir: Path) -> None:
    assert len(ROWS) == 195
    missing = [r["file"] for r in ROWS if not (corpus_dir / r["file"]).is_file()]
    assert not missing


def test_deliberate_disagreements_exist_in_the_oracle(corpus_dir: Path) -> None:
    for name in DELIBERATE:
        assert EXIT_CODE.get(name) == 0, f"{name} is no longer a file the official CLI accepts: update DELIBERATE"
    for name in ORACLE_AT_LINE_1_OF_OTHER_FILE:
        assert EXIT_CODE.get(name) == 1


@pytest.mark.parametrize("name", ALL_FILES)
def test_verdict_matches_official_cli(name: str) -> None:
    result = _check(name)
    ours = 0 if result.valid else 1
    if name in DELIBERATE:
        assert ours == 1, f"expected our deliberate disagreement ({DELIBERATE[name]}), but we call it valid"
        codes = {d.code for d in _errors(result)}
        assert codes == {"message-examples"}, (
            f"the disagreement must come only from message examples, got:\n{_describe(result)}"
        )
        return
    assert ours == EXIT_CODE[name], (
        f"official CLI says {'invalid' if EXIT_CODE[name] else 'valid'}, we say "
        f"{'invalid' if ours else 'valid'}:\n{_describe(result)}"
    )


def _oracle_errors(name: str) -> list[dict[str, Any]]:
    path = CORPUS_DIR / "oracle-diagnostics" / (name.replace("/", "__") + ".json")
    return [d for d in json.loads(path.read_text(encoding="utf-8")) if d["severity"] == 0]


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _prefix_related(ours: list[str], theirs: list[str]) -> bool:
    """One path is a prefix of the other; an empty path (the whole document) only matches another empty one."""
    short, long_ = sorted((ours, theirs), key=len)
    if not short:
        return not long_
    return long_[: len(short)] == short


@pytest.mark.parametrize("name", INVALID_FILES)
def test_error_locations_agree_with_official_cli(name: str) -> None:
    result = _check(name)
    main = os.fspath(CORPUS_DIR / name)
    ours = [d for d in _errors(result) if d.location is not None]
    assert ours, f"no located errors:\n{_describe(result)}"
    theirs = _oracle_errors(name)
    assert theirs
    matches = []
    for o in theirs:
        o_file = os.fspath(CORPUS_DIR / o["source"])
        o_line = o["range"]["start"]["line"] + 1
        o_path = [str(p) for p in o["path"]]
        for d in ours:
            assert d.location is not None
            same_line = _same_file(d.location.file, o_file) and d.location.line == o_line
            same_path = _same_file(o_file, main) and _prefix_related([str(p) for p in d.path], o_path)
            other_file_line_1 = (
                name in ORACLE_AT_LINE_1_OF_OTHER_FILE
                and o_line == 1
                and not _same_file(o_file, main)
                and _same_file(d.location.file, o_file)
            )
            if same_line or same_path or other_file_line_1:
                matches.append((d, o))
    assert matches, (
        f"none of our errors is where the official CLI puts one.\nours:\n{_describe(result)}\ntheirs:\n"
        + "\n".join(f"  {o['source']}:{o['range']['start']['line'] + 1} {o['path']} [{o['code']}]" for o in theirs)
    )


def test_deliberate_disagreements_point_at_the_examples(corpus_dir: Path) -> None:
    """Both kraken subscriptionStatus examples are reported, inside the file, under their example."""
    for name in DELIBERATE:
        errors = _errors(_check(name))
        assert errors
        reported = set()
        for d in errors:
            assert d.location is not None
            assert _same_file(d.location.file, os.fspath(corpus_dir / name))
            i = d.path.index("examples")
            reported.add(d.path[i + 1])
            assert d.path[i + 2] == "payload"
        assert reported == {0, 1}
