"""``tidings lint`` from the command line: exit codes, --fail-on, --config, text, JSON and SARIF."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from tests.cli import invoke

REPO = Path(__file__).resolve().parents[1]
SEED = str(REPO / "examples" / "user-service.asyncapi.yaml")


@pytest.fixture(autouse=True)
def _no_colour_in_a_clean_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty folder, so no configuration of the checkout is picked up."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_the_seed_lints_clean_with_design_advice() -> None:
    result = invoke(["lint", SEED, "--root", str(REPO)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("[tidings-payload-event-type]") == 3
    assert out.count("[tidings-payload-version]") == 3
    assert 'suggestion: add property "event_type" (type: string, const: "user.created")' in out
    assert "is valid (AsyncAPI 2.6.0)" in out


def test_fail_on_warning_turns_advice_into_failure() -> None:
    result = invoke(["lint", SEED, "--root", str(REPO), "--fail-on", "warning"])
    assert result.exit_code == 1
    assert invoke(["lint", SEED, "--root", str(REPO), "--fail-on", "hint"]).exit_code == 1


def test_an_error_level_rule_fails_the_run(tmp_path: Path) -> None:
    doc = write(
        tmp_path / "api.yaml",
        """
        asyncapi: 2.6.0
        info: {title: T, version: '1'}
        tags: [{name: a}, {name: a}]
        channels: {}
        """,
    )
    result = invoke(["lint", str(doc)])
    assert result.exit_code == 1
    assert "error [asyncapi2-tags-uniqueness]" in result.stdout


def test_a_config_can_relevel_a_rule_into_a_failure(tmp_path: Path) -> None:
    config = write(tmp_path / "lint.yaml", "lint:\n  rules:\n    asyncapi-id: error\n")
    result = invoke(["lint", SEED, "--root", str(REPO), "--config", str(config)])
    assert result.exit_code == 1
    assert "error [asyncapi-id]" in result.stdout


def test_the_config_is_found_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    write(project / "pyproject.toml", '[tool.tidings.lint]\ndisable = ["guide"]\n')
    monkeypatch.chdir(project / "docs")
    result = invoke(["lint", SEED, "--root", str(REPO), "--format", "json"])
    assert result.exit_code == 0
    assert not [d for d in json.loads(result.stdout)[0]["diagnostics"] if d["code"].startswith("tidings-")]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "pyproject.toml", '[tool.tidings.lint]\ndisable = ["asyncapi-idd"]\n')
    result = invoke(["lint", SEED, "--config", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.stderr
    assert '"asyncapi-idd"' in result.stderr
    assert result.stderr.count("\n") == 1
    assert invoke(["lint", SEED, "--fail-on", "loud"]).exit_code == 2
    assert invoke(["lint", str(tmp_path / "missing.yaml")]).exit_code == 2


def test_json_output() -> None:
    result = invoke(["lint", SEED, "--root", str(REPO), "--format", "json"])
    assert result.exit_code == 0
    [report] = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["asyncapi"] == "2.6.0"
    by_code: dict[str, list[dict[str, object]]] = {}
    for d in report["diagnostics"]:
        by_code.setdefault(str(d["code"]), []).append(d)
    version = by_code["tidings-payload-version"]
    assert [d["path"] for d in version] == [
        f"/components/schemas/User{kind}Payload/properties" for kind in ("Created", "Updated", "Deleted")
    ]
    assert all(d["severity"] == "warning" and str(d["suggestion"]).startswith("add property") for d in version)
    assert by_code["asyncapi-latest-version"][0]["severity"] == "info"
    assert by_code["asyncapi-latest-version"][0]["line"] == 3


def test_sarif_output() -> None:
    result = invoke(["lint", SEED, "--root", str(REPO), "--format", "sarif"])
    assert result.exit_code == 0
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert {"tidings-payload-event-type", "tidings-payload-version", "asyncapi-id"} <= rule_ids
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["tidings-payload-version"] == "warning"
    assert levels["asyncapi-latest-version"] == "note"
    first = next(r for r in run["results"] if r["ruleId"] == "tidings-payload-event-type")
    assert first["locations"][0]["physicalLocation"]["region"]["startLine"] == 49


def test_an_invalid_document_fails_with_its_validation_errors(tmp_path: Path) -> None:
    doc = write(tmp_path / "api.yaml", "asyncapi: 2.6.0\ninfo: {title: T}\nchannels: {}\n")
    result = invoke(["lint", str(doc), "--format", "json"])
    assert result.exit_code == 1
    codes = {d["code"] for d in json.loads(result.stdout)[0]["diagnostics"]}
    assert "structure-required" in codes
    assert "asyncapi-id" in codes  # lint still runs on an invalid document


def test_a_file_that_cannot_be_read_gives_its_load_error_only(tmp_path: Path) -> None:
    doc = write(tmp_path / "api.yaml", "asyncapi: [2.6.0\n")
    result = invoke(["lint", str(doc), "--format", "json"])
    assert result.exit_code == 1
    assert [d["code"] for d in json.loads(result.stdout)[0]["diagnostics"]] == ["yaml-syntax"]
