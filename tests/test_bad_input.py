"""Hostile and broken input: every case ends in a one-line error, exit code 1, quickly, in bounded memory.

The CLI runs as a real subprocess (``python -m tidings validate FILE``) so that a crash, a hang, a memory
blow-up or a side effect of the document cannot hide behind the test process; each run's wall time and
peak RSS are measured for that child alone (see ``conftest.run_tidings``).
"""

from __future__ import annotations

import os
import random
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRun, WriteYaml
from tidings.asyncapi import LoadOptions, Severity, check_file

MAX_SECONDS = 2.0
MAX_RSS = 200 * 1024 * 1024

DIAG = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error \[(?P<code>[\w-]+)\] (?P<message>\S.*)$")

Cli = Callable[..., CliRun]


def _diagnostic_lines(run: CliRun) -> list[re.Match[str]]:
    return [m for line in run.stdout.splitlines() if (m := DIAG.match(line))]


def assert_refused(run: CliRun, file: str, code: str, *, line: int | None = None, fatal: bool = True) -> re.Match[str]:
    """The run failed cleanly: exit 1, fast, small, no traceback, and exactly one error naming ``file``.

    ``fatal``: the file could not be read at all, so the whole output is that one line plus the summary.
    """
    assert run.returncode == 1, run.output
    assert run.seconds < MAX_SECONDS, f"took {run.seconds:.2f} s"
    assert run.max_rss < MAX_RSS, f"peak RSS {run.max_rss / 2**20:.0f} MB"
    assert "Traceback" not in run.output
    assert run.stderr == ""
    found = _diagnostic_lines(run)
    assert len(found) == 1, run.stdout
    m = found[0]
    assert m["file"] == file, run.stdout
    assert m["code"] == code, run.stdout
    if line is not None:
        assert int(m["line"]) == line, run.stdout
    assert int(m["line"]) >= 1
    assert int(m["col"]) >= 1
    if fatal:
        assert run.stdout.splitlines() == [m.group(0), f"✖ {file}: 1 error"]
    return m


# --- unreadable or hostile text --------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_the_classic_324_bytes() -> None:
    assert len(BILLION_LAUGHS.encode()) == 324
    assert BILLION_LAUGHS.count("\n") == 9


def test_python_object_tag_is_refused_without_side_effect(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "tag.yaml").write_text(
        f'asyncapi: 2.6.0\ninfo: !!python/object/apply:os.system ["echo pwned > {marker}"]\n', encoding="utf-8"
    )
    run = cli("validate", "tag.yaml", cwd=tmp_path)
    m = assert_refused(run, "tag.yaml", "yaml-tag", line=2)
    assert "python/object/apply" in m["message"]
    assert not marker.exists()


def test_billion_laughs_alias_bomb(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "lol.yaml").write_text(BILLION_LAUGHS, encoding="utf-8")
    assert_refused(cli("validate", "lol.yaml", cwd=tmp_path), "lol.yaml", "alias-bomb")


def test_hundred_thousand_nested_brackets(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert_refused(cli("validate", "deep.yaml", cwd=tmp_path), "deep.yaml", "too-deep", line=1)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- " * 100_000 + "x\n", id="block-sequences"),
        pytest.param("".join(" " * i + "a:\n" for i in range(1500)) + " " * 1500 + "b: 1\n", id="block-mappings"),
        pytest.param("{a: " * 5000 + "1" + "}" * 5000, id="flow-mappings"),
    ],
)
def test_other_deep_nesting_is_refused(cli: Cli, tmp_path: Path, text: str) -> None:
    (tmp_path / "deep.yaml").write_text(text, encoding="utf-8")
    assert_refused(cli("validate", "deep.yaml", cwd=tmp_path), "deep.yaml", "too-deep")


def test_fifty_megabyte_file(cli: Cli, tmp_path: Path) -> None:
    line = b"# " + b"x" * 97 + b"\n"
    with (tmp_path / "big.yaml").open("wb") as fh:
        fh.write(b"asyncapi: 2.6.0\n")
        fh.write(line * (50 * 1024 * 1024 // len(line)))
    assert (tmp_path / "big.yaml").stat().st_size >= 50 * 1000 * 1000
    m = assert_refused(cli("validate", "big.yaml", cwd=tmp_path), "big.yaml", "too-large", line=1)
    assert "--max-size" in m["message"]


def test_peak_rss_measurement_is_live(cli: Cli, tmp_path: Path) -> None:
    """The harness check: reading a 60 MB document (allowed with --max-size) shows up as a big peak RSS,
    so the bound asserted everywhere else measures the child and can fail."""
    line = b"# " + b"x" * 97 + b"\n"
    with (tmp_path / "big.yaml").open("wb") as fh:
        fh.write(b"asyncapi: 2.6.0\n")
        fh.write(line * (60 * 1024 * 1024 // len(line)))
    run = cli("validate", "--max-size", str(100 * 1024 * 1024), "big.yaml", cwd=tmp_path)
    assert run.returncode == 1  # no info, no channels
    assert run.max_rss > 100 * 1024 * 1024, f"peak RSS {run.max_rss / 2**20:.0f} MB"


def test_binary_file(cli: Cli, tmp_path: Path) -> None:
    data = bytearray(random.Random(1234).randbytes(64 * 1024))
    data[100] = 0
    (tmp_path / "blob.yaml").write_bytes(bytes(data))
    assert_refused(cli("validate", "blob.yaml", cwd=tmp_path), "blob.yaml", "binary-file", line=1)


def test_empty_file(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_bytes(b"")
    assert_refused(cli("validate", "empty.yaml", cwd=tmp_path), "empty.yaml", "empty-file", line=1)


def test_yaml_syntax_error_has_line_and_column(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "asyncapi: 2.6.0\ninfo:\n  title: x\n   version: 1\nchannels: {}\n", encoding="utf-8"
    )
    m = assert_refused(cli("validate", "bad.yaml", cwd=tmp_path), "bad.yaml", "yaml-syntax", line=4)
    assert int(m["col"]) > 1


def test_control_character_is_a_one_line_error_with_position(cli: Cli, tmp_path: Path) -> None:
    """libyaml's reader errors are not "marked" errors: their text spans two lines and has no line:column."""
    (tmp_path / "ctl.yaml").write_bytes("asyncapi: 2.6.0\ninfo:\n  title: é\x7f\n".encode())
    m = assert_refused(cli("validate", "ctl.yaml", cwd=tmp_path), "ctl.yaml", "yaml-syntax", line=3)
    assert int(m["col"]) == 11
    assert "#x007f" in m["message"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"asyncapi: 2.6.0\ninfo: \xff\xfe\n", "binary-file", id="not-utf8"),
        pytest.param(b"   \n\n# only a comment\n", "empty-file", id="comment-only"),
        pytest.param(b"a: 1\n---\nb: 2\n", "multi-document", id="two-documents"),
        pytest.param(b"info: !!python/name:os.system ''\n", "yaml-tag", id="python-name"),
        pytest.param(b"info: !!python/object/new:dict {}\n", "yaml-tag", id="python-new"),
        pytest.param(b"info: !custom {}\n", "yaml-tag", id="local-tag"),
        pytest.param(b"info: *nowhere\n", "yaml-alias", id="unknown-alias"),
        pytest.param(b"? [a, b]\n: 1\n", "complex-key", id="complex-key"),
        pytest.param(b"a: !!int abc\n", "yaml-tag", id="tag-mismatch"),
    ],
)
def test_more_unreadable_texts_in_process(write_yaml: WriteYaml, data: bytes, code: str) -> None:
    result = check_file(write_yaml("x.yaml", data))
    assert result.document is None
    assert [d.code for d in result.diagnostics] == [code]
    assert result.diagnostics[0].location is not None
    assert "\n" not in result.diagnostics[0].message


# --- references that must not be followed ----------------------------------------------------------------

REF_DOC = """\
asyncapi: 2.6.0
info:
  title: T
  version: 1.0.0
channels:
  user/signedup:
    subscribe:
      message:
        payload:
          $ref: '{ref}'
"""


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        pytest.param("../../../../etc/passwd", "ref-outside-root", id="dot-dot"),
        pytest.param("file:///etc/passwd", "ref-outside-root", id="file-url"),
        pytest.param("/etc/passwd", "ref-outside-root", id="absolute-path"),
        pytest.param("http://169.254.169.254/latest/meta-data/", "ref-remote-refused", id="metadata-url"),
    ],
)
def test_reference_out_of_bounds_is_refused(cli: Cli, tmp_path: Path, ref: str, code: str) -> None:
    (tmp_path / "spec.yaml").write_text(REF_DOC.format(ref=ref), encoding="utf-8")
    run = cli("validate", "spec.yaml", cwd=tmp_path)
    m = assert_refused(run, "spec.yaml", code, line=10, fatal=False)
    assert int(m["col"]) == 11
    assert "root:" not in run.stdout  # /etc/passwd's content never shows up


def test_symlink_out_of_the_folder_is_refused(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").symlink_to("/etc/passwd")
    (tmp_path / "spec.yaml").write_text(REF_DOC.format(ref="./schema.yaml"), encoding="utf-8")
    run = cli("validate", "spec.yaml", cwd=tmp_path)
    assert_refused(run, "spec.yaml", "ref-outside-root", line=10, fatal=False)
    assert "root:" not in run.stdout


class _NoNetwork:
    """Stands in for the socket layer: records and refuses every attempt to resolve or connect."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        monkeypatch.setattr(socket.socket, "connect", self._refuse("connect"))
        monkeypatch.setattr(socket.socket, "connect_ex", self._refuse("connect_ex"))
        monkeypatch.setattr(socket, "getaddrinfo", self._refuse("getaddrinfo"))
        monkeypatch.setattr(socket, "create_connection", self._refuse("create_connection"))

    def _refuse(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(name)
            raise OSError(f"test: network access attempted ({name})")

        return refuse


def test_metadata_reference_opens_no_socket(monkeypatch: pytest.MonkeyPatch, write_yaml: WriteYaml) -> None:
    net = _NoNetwork(monkeypatch)
    spec = write_yaml("spec.yaml", REF_DOC.format(ref="http://169.254.169.254/latest/meta-data/"))
    result = check_file(spec)
    assert [d.code for d in result.diagnostics] == ["ref-remote-refused"]
    assert net.attempts == []
    # Control: the guard does see an attempt when remote references are switched on.
    allowed = check_file(spec, LoadOptions(allow_remote=True, remote_timeout=1.0))
    assert net.attempts, "the socket guard did not notice a network attempt"
    assert not allowed.valid
    assert [d.code for d in allowed.diagnostics] == ["invalid-ref"]


def test_relative_ref_from_a_remote_base_is_not_fetched(monkeypatch: pytest.MonkeyPatch, write_yaml: WriteYaml) -> None:
    net = _NoNetwork(monkeypatch)
    spec = write_yaml("spec.yaml", REF_DOC.format(ref="https://example.com/schemas/a.yaml"))
    result = check_file(spec)
    assert {d.code for d in result.diagnostics} == {"ref-remote-refused"}
    assert net.attempts == []


@pytest.mark.parametrize("ref", ["ftp://example.com/a.yaml", "gopher://x/y", "data:text/plain,hi"])
def test_other_schemes_are_refused(monkeypatch: pytest.MonkeyPatch, write_yaml: WriteYaml, ref: str) -> None:
    net = _NoNetwork(monkeypatch)
    result = check_file(write_yaml("spec.yaml", REF_DOC.format(ref=ref)))
    assert not result.valid
    assert net.attempts == []


@pytest.mark.parametrize("ref", ['"\\0"', '"./a\\0.yaml#/x"', "'./a%00.yaml'", "'file:///etc/passwd%00.yaml'"])
def test_nul_in_a_file_reference(write_yaml: WriteYaml, ref: str) -> None:
    """A NUL in a path makes os.path/open raise ValueError; it must become a diagnostic."""
    result = check_file(write_yaml("spec.yaml", REF_DOC.format(ref="REF").replace("'REF'", ref)))
    assert not result.valid
    assert {d.code for d in result.diagnostics} <= {"invalid-ref", "ref-outside-root"}
    [d] = result.diagnostics
    assert d.location is not None
    assert d.location.line == 10


CYCLE_DOC = """\
asyncapi: 2.6.0
info:
  title: T
  version: 1.0.0
channels:
  user/signedup:
    subscribe:
      message:
        payload:
          $ref: '#/components/schemas/A'
components:
  schemas:
{schemas}
"""


def test_self_referencing_ref(cli: Cli, tmp_path: Path) -> None:
    schemas = "    A:\n      $ref: '#/components/schemas/A'"
    (tmp_path / "spec.yaml").write_text(CYCLE_DOC.format(schemas=schemas), encoding="utf-8")
    run = cli("validate", "spec.yaml", cwd=tmp_path)
    assert_refused(run, "spec.yaml", "circular-ref", line=14, fatal=False)


def test_two_cycle_of_refs(cli: Cli, tmp_path: Path) -> None:
    schemas = "    A:\n      $ref: '#/components/schemas/B'\n    B:\n      $ref: '#/components/schemas/A'"
    (tmp_path / "spec.yaml").write_text(CYCLE_DOC.format(schemas=schemas), encoding="utf-8")
    run = cli("validate", "spec.yaml", cwd=tmp_path)
    assert run.returncode == 1
    assert run.seconds < MAX_SECONDS
    assert "Traceback" not in run.output
    found = _diagnostic_lines(run)
    assert found
    assert {m["code"] for m in found} == {"circular-ref"}
    assert {int(m["line"]) for m in found} <= {14, 16}


def test_cycle_through_a_pointer_that_passes_a_ref(write_yaml: WriteYaml) -> None:
    """``#/components/schemas/A/properties`` must walk *through* A's $ref, which leads back to A."""
    schemas = "    A:\n      $ref: '#/components/schemas/A/properties'"
    result = check_file(write_yaml("spec.yaml", CYCLE_DOC.format(schemas=schemas)))
    assert not result.valid
    assert {d.code for d in result.diagnostics} <= {"circular-ref", "invalid-ref"}


def test_cycle_across_two_files(write_yaml: WriteYaml) -> None:
    write_yaml("a.yaml", "X:\n  $ref: './b.yaml#/Y'\n")
    write_yaml("b.yaml", "Y:\n  $ref: './a.yaml#/X'\n")
    spec = write_yaml("spec.yaml", REF_DOC.format(ref="./a.yaml#/X"))
    result = check_file(spec)
    assert not result.valid
    assert {d.code for d in result.diagnostics} == {"circular-ref"}


# --- the other promises --------------------------------------------------------------------------------


def test_duplicate_keys_name_both_lines(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "dup.yaml").write_text(
        "asyncapi: 2.6.0\ninfo:\n  title: x\n  version: '1'\n  title: y\nchannels: {}\n", encoding="utf-8"
    )
    run = cli("validate", "dup.yaml", cwd=tmp_path)
    m = assert_refused(run, "dup.yaml", "duplicate-key", line=5, fatal=False)
    assert "title" in m["message"]
    assert "line 3" in m["message"]


def test_duplicate_keys_in_a_referenced_file(write_yaml: WriteYaml) -> None:
    write_yaml("schemas.yaml", "S:\n  type: string\n  type: integer\n")
    result = check_file(write_yaml("spec.yaml", REF_DOC.format(ref="./schemas.yaml#/S")))
    [d] = result.diagnostics
    assert d.code == "duplicate-key"
    assert d.location is not None
    assert d.location.file.endswith("schemas.yaml")
    assert d.location.line == 3
    assert "line 2" in d.message


MULTI_MAIN = """\
asyncapi: 2.6.0
info:
  title: Multi-file
  version: 1.0.0
channels:
  user/created:
    subscribe:
      message:
        $ref: './common/messages.yaml#/UserCreated'
"""
MULTI_MESSAGES = """\
UserCreated:
  name: UserCreated
  payload:
    $ref: './schemas.yaml#/User'
  examples:
    - payload: {id: 1, address: {city: Paris}}
"""
MULTI_SCHEMAS = """\
User:
  type: object
  properties:
    id: {type: integer}
    address:
      $ref: '#/Address'
Address:
  type: object
  properties:
    city: {type: string}
"""


def test_relative_multi_file_spec_validates(cli: Cli, tmp_path: Path, write_yaml: WriteYaml) -> None:
    write_yaml("main.yaml", MULTI_MAIN)
    write_yaml("common/messages.yaml", MULTI_MESSAGES)
    write_yaml("common/schemas.yaml", MULTI_SCHEMAS)
    run = cli("validate", "main.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert run.stdout.startswith("✔ main.yaml is valid")
    # From another folder, naming the file by a longer path, it is still valid (refs are file-relative).
    run = cli("validate", tmp_path / "main.yaml", cwd=tmp_path / "common")
    assert run.returncode == 0, run.output


def test_refs_inside_refs_are_followed(write_yaml: WriteYaml) -> None:
    """A wrong example reaches the schema through three files; the finding points into the right one."""
    main = write_yaml("main.yaml", MULTI_MAIN)
    write_yaml("common/messages.yaml", MULTI_MESSAGES.replace("city: Paris", "city: 42"))
    write_yaml("common/schemas.yaml", MULTI_SCHEMAS)
    result = check_file(main)
    [d] = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert d.code == "message-examples"
    assert d.location is not None
    assert d.location.file.endswith(os.path.join("common", "messages.yaml"))
    assert d.location.line == 6
    # and a broken pointer in the third file is reported there
    write_yaml("common/schemas.yaml", MULTI_SCHEMAS.replace("'#/Address'", "'#/Adress'"))
    result = check_file(main)
    assert [d.code for d in result.diagnostics] == ["invalid-ref"]
    assert "Adress" in result.diagnostics[0].message


CIRCULAR_SCHEMA = """\
asyncapi: 3.0.0
info:
  title: Trees
  version: 1.0.0
channels:
  trees:
    address: trees
    messages:
      tree:
        payload:
          $ref: '#/components/schemas/Tree'
        examples:
          - payload: {name: root, children: [{name: a, children: []}, {name: b, children: [{name: {example}}]}]}
components:
  schemas:
    Tree:
      type: object
      required: [name]
      properties:
        name: {type: string}
        children:
          type: array
          items:
            $ref: '#/components/schemas/Tree'
"""


def test_circular_schema_is_fine(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "trees.yaml").write_text(CIRCULAR_SCHEMA.replace("{example}", "c"), encoding="utf-8")
    run = cli("validate", "trees.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert run.seconds < MAX_SECONDS


def test_circular_schema_is_really_checked(write_yaml: WriteYaml) -> None:
    result = check_file(write_yaml("trees.yaml", CIRCULAR_SCHEMA.replace("{example}", "7")))
    [d] = result.diagnostics
    assert d.code == "message-examples"
    assert d.location is not None
    assert d.location.line == 13


def test_allow_outside_root(cli: Cli, tmp_path: Path, write_yaml: WriteYaml) -> None:
    write_yaml("shared/schema.yaml", "type: object\nproperties:\n  x: {type: integer}\n")
    write_yaml("spec/spec.yaml", REF_DOC.format(ref="../shared/schema.yaml"))
    spec_dir = tmp_path / "spec"
    refused = cli("validate", "spec.yaml", cwd=spec_dir)
    assert_refused(refused, "spec.yaml", "ref-outside-root", line=10, fatal=False)
    allowed = cli("validate", "--allow-outside-root", "spec.yaml", cwd=spec_dir)
    assert allowed.returncode == 0, allowed.output
    # --root widens the fence without switching it off
    widened = cli("validate", "--root", "..", "spec.yaml", cwd=spec_dir)
    assert widened.returncode == 0, widened.output


def test_default_root_is_the_current_folder_when_it_holds_the_document(
    cli: Cli, tmp_path: Path, write_yaml: WriteYaml
) -> None:
    write_yaml("shared/schema.yaml", "type: object\n")
    write_yaml("spec/spec.yaml", REF_DOC.format(ref="../shared/schema.yaml"))
    (tmp_path / "elsewhere").mkdir()
    # run from the project: the project is the fence, and shared/ is inside it
    assert cli("validate", "spec/spec.yaml", cwd=tmp_path).returncode == 0
    # run from an unrelated folder: the document's own folder is the fence
    run = cli("validate", tmp_path / "spec" / "spec.yaml", cwd=tmp_path / "elsewhere")
    assert run.returncode == 1
    assert "[ref-outside-root]" in run.stdout


def test_missing_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    run = cli("validate", "nope.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.output
    assert run.stderr.strip() == "nope.yaml: error: no such file"


def test_folder_instead_of_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    run = cli("validate", "d", cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.output
    assert "folder" in run.stderr


def test_a_pipe_or_device_is_refused_not_waited_on(cli: Cli, tmp_path: Path) -> None:
    """A FIFO given as the document would block a plain read forever; a device would never end."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert_refused(cli("validate", "pipe.yaml", cwd=tmp_path), "pipe.yaml", "unreadable", line=1)
    assert_refused(cli("validate", "/dev/zero", cwd=tmp_path), "/dev/zero", "unreadable", line=1)
