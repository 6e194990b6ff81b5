"""Property: whatever a document is mutated into, ``check_file`` answers with diagnostics, quickly.

Real documents (the conformance corpus, when present, and the seed) are damaged at the data level
(delete a key, change a value's type, insert junk keys, replace a subtree with a ``$ref`` to a random
pointer) and then at the text level (duplicate a key line, truncate at a random byte, flip bytes). The
mutant is written next to its original in a copy of the corpus, so its relative ``$ref``s still resolve.
No exception may escape, every finding must be a well-formed one-line :class:`Diagnostic`, and no
example may take long.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS_DIR, SEED
from tidings.asyncapi import CheckResult, Diagnostic, LoadOptions, Severity, check_file
from tidings.errors import DocumentError

EXAMPLES = "asyncapi-spec-examples"


def _sources() -> list[str]:
    """Documents to mutate, relative to the copied tree: the seed always, the corpus when present."""
    names = ["seed/user-service.asyncapi.yaml"]
    corpus = CORPUS_DIR / EXAMPLES
    if corpus.is_dir():
        names += sorted(
            p.relative_to(CORPUS_DIR).as_posix()
            for p in corpus.rglob("*")
            if p.suffix in (".yml", ".yaml", ".json") and p.is_file()
        )
    return names


SOURCES = _sources()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mutants")
    (root / "seed").mkdir()
    shutil.copy(SEED, root / "seed" / SEED.name)
    if (CORPUS_DIR / EXAMPLES).is_dir():
        shutil.copytree(CORPUS_DIR / EXAMPLES, root / EXAMPLES)
    return root


@functools.cache
def _original(root: Path, name: str) -> Any:
    """The document as plain data (None when it is not even YAML: then only text mutations apply)."""
    text = (root / name).read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None


# --- data-level mutations --------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(node: Any, path: Path_ = ()) -> list[Path_]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _get(node: Any, path: Path_) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _pointer(path: Path_) -> str:
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


JUNK_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["{x}", "#/", "$ref", "2.6.0", "3.0.0", "application/json", "${x}", "~1", "%00"]),
    # fresh containers each time (st.just would share one object, which later mutations would change)
    st.builds(list),
    st.builds(dict),
    st.builds(lambda: {"$ref": "#"}),
    st.builds(lambda: [{"$ref": "#/"}]),
)
JUNK_KEYS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["$ref", "x-junk", "oneOf", "payload", "examples", "servers", "channels", "{id}", "", "~", "/", "asyncapi"]
    ),
)
REF_TARGETS = st.sampled_from(
    [
        "#",
        "#/",
        "#/nowhere",
        "#/components/schemas",
        "#/channels/~1",
        "#/%7B",
        "./missing.yaml#/a",
        "../../../../etc/passwd",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "../common/messages.yaml#/commentChanged",
        "./asyncapi.yaml",
    ]
)


@st.composite
def mutated(draw: st.DrawFn, root: Path) -> tuple[str, bytes]:
    name = draw(st.sampled_from(SOURCES))
    original = _original(root, name)
    if original is None:
        text = (root / name).read_bytes()
    else:
        data = _copy(original)
        for _ in range(draw(st.integers(0, 3))):
            paths = _paths(data)
            kind = draw(st.sampled_from(["delete", "retype", "junk", "ref"]))
            path = draw(st.sampled_from(paths))
            target = _get(data, path)
            if kind == "delete":
                if isinstance(target, dict) and target:
                    del target[draw(st.sampled_from(list(target)))]
                elif isinstance(target, list) and target:
                    del target[draw(st.integers(0, len(target) - 1))]
            elif kind == "retype":
                data = _set(data, path, draw(JUNK_VALUES))
            elif kind == "junk":
                if isinstance(target, dict):
                    target[draw(JUNK_KEYS)] = draw(JUNK_VALUES)
                elif isinstance(target, list):
                    target.insert(draw(st.integers(0, len(target))), draw(JUNK_VALUES))
            else:
                ref = draw(st.one_of(REF_TARGETS, st.sampled_from(paths).map(_pointer), st.text(max_size=15)))
                data = _set(data, path, {"$ref": ref})
        text = b""
        if draw(st.booleans()):
            with contextlib.suppress(orjson.JSONEncodeError):  # an integer beyond 64 bits: YAML it is
                text = orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2)
        if not text:
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    # text-level mutations
    if draw(st.booleans()):
        lines = text.split(b"\n")
        keyed = [i for i, line in enumerate(lines) if b":" in line and not line.lstrip().startswith(b"#")]
        if keyed:
            i = draw(st.sampled_from(keyed))
            lines.insert(i + 1, lines[i])
            text = b"\n".join(lines)
    if text and draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    if text and draw(st.integers(0, 4)) == 0:
        flipped = bytearray(text)
        for _ in range(draw(st.integers(1, 8))):
            flipped[draw(st.integers(0, len(flipped) - 1))] ^= draw(st.integers(1, 255))
        text = bytes(flipped)
    return name, text


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    raise TypeError


def _assert_well_formed(result: CheckResult) -> None:
    assert isinstance(result, CheckResult)
    for d in result.diagnostics:
        assert isinstance(d, Diagnostic), d
        assert isinstance(d.severity, Severity)
        assert isinstance(d.code, str)
        assert d.code
        assert " " not in d.code
        assert isinstance(d.message, str)
        assert d.message.strip(), d
        assert "\n" not in d.message, d.message
        assert "Traceback" not in d.message
        if d.location is not None:
            assert d.location.line >= 1
            assert d.location.column >= 1
        assert isinstance(d.path, tuple)
    if result.document is None:
        assert [d.severity for d in result.diagnostics] == [Severity.ERROR]
    assert result.valid == (
        result.document is not None and not any(d.severity is Severity.ERROR for d in result.diagnostics)
    )


@pytest.mark.timeout(120)
@settings(
    max_examples=150,
    deadline=datetime.timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_documents_only_ever_yield_diagnostics(tree: Path, data: st.DataObject) -> None:
    name, text = data.draw(mutated(tree))
    mutant = (tree / name).with_name("_mutant_" + (tree / name).name)
    mutant.write_bytes(text)
    try:
        result = check_file(mutant, LoadOptions(root=os.fspath(tree)))
    except DocumentError as exc:  # pragma: no cover - reported as a failure with context
        pytest.fail(f"check_file raised {exc!r} instead of returning a diagnostic")
    _assert_well_formed(result)


def test_unmutated_sources_are_well_formed(tree: Path) -> None:
    """The baseline: every source checks cleanly as is (this also warms the parse cache)."""
    for name in SOURCES:
        _assert_well_formed(check_file(tree / name, LoadOptions(root=os.fspath(tree))))
