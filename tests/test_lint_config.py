"""Lint configuration: pyproject.toml and .tidings.yaml, discovery, errors, custom rules, entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tidings.asyncapi import LoadOptions
from tidings.asyncapi.diagnostics import Diagnostic, Severity
from tidings.errors import UsageError
from tidings.lint import ENTRY_POINT_GROUP, LintConfig, lint_file, load_config

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "examples" / "user-service.asyncapi.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def lint_seed(config: LintConfig) -> list[Diagnostic]:
    return lint_file(SEED, config, LoadOptions(root=str(REPO))).diagnostics


def levels(diagnostics: list[Diagnostic]) -> dict[str, set[Severity]]:
    out: dict[str, set[Severity]] = {}
    for d in diagnostics:
        out.setdefault(d.code, set()).add(d.severity)
    return out


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, made the current folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_without_configuration_every_default_rule_runs(project: Path) -> None:
    config = load_config()
    assert config.source is None
    found = levels(lint_seed(config))
    assert found["asyncapi-id"] == {Severity.WARNING}
    assert found["tidings-payload-version"] == {Severity.WARNING}
    assert "asyncapi-tag-description" not in found  # off by default


def test_pyproject_disables_and_relevels(project: Path) -> None:
    write(
        project / "pyproject.toml",
        """
        [project]
        name = "demo"

        [tool.tidings.lint]
        disable = ["asyncapi-id"]
        enable = ["asyncapi-info-license-url"]

        [tool.tidings.lint.rules]
        asyncapi-info-contact = "error"
        asyncapi-info-license = "off"
        tidings-payload-version = "hint"
        """,
    )
    config = load_config()
    assert config.source == str(project / "pyproject.toml")
    found = levels(lint_seed(config))
    assert "asyncapi-id" not in found
    assert "asyncapi-info-license" not in found
    assert found["asyncapi-info-contact"] == {Severity.ERROR}
    assert found["tidings-payload-version"] == {Severity.HINT}
    assert found["asyncapi-defaultContentType"] == {Severity.WARNING}


def test_tidings_yaml_with_a_lint_section(project: Path) -> None:
    write(
        project / ".tidings.yaml",
        """
        lint:
          disable: [guide]          # a tag stands for all its rules
          rules:
            asyncapi-id: off        # YAML reads a bare off as false
            asyncapi-info-contact: info
        """,
    )
    found = levels(lint_seed(load_config()))
    assert not [c for c in found if c.startswith("tidings-")]
    assert "asyncapi-operation-description" not in found  # tagged guide as well as spectral
    assert "asyncapi-id" not in found
    assert found["asyncapi-info-contact"] == {Severity.INFO}


def test_tidings_yaml_keys_may_sit_at_the_top_level(project: Path) -> None:
    write(project / ".tidings.yml", "disable: [asyncapi-id]\n")
    assert "asyncapi-id" not in levels(lint_seed(load_config()))


def test_the_nearest_configuration_upwards_wins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "pyproject.toml", '[tool.tidings.lint]\ndisable = ["asyncapi-id"]\n')
    nested = project / "services" / "users"
    write(nested / "pyproject.toml", '[project]\nname = "users"\n')  # no lint table: keep looking upwards
    monkeypatch.chdir(nested)
    assert load_config().source == str(project / "pyproject.toml")
    write(nested / ".tidings.yaml", "lint:\n  disable: [asyncapi-servers]\n")
    config = load_config()
    assert config.source == str(nested / ".tidings.yaml")
    found = levels(lint_seed(config))
    assert "asyncapi-servers" not in found
    assert "asyncapi-id" in found  # only the nearest file counts


def test_an_explicit_config_file_is_used_as_is(project: Path, tmp_path: Path) -> None:
    write(project / ".tidings.yaml", "lint:\n  disable: [asyncapi-id]\n")
    other = write(tmp_path / "elsewhere" / "lint.yaml", "lint:\n  disable: [asyncapi-servers]\n")
    found = levels(lint_seed(load_config(other)))
    assert "asyncapi-servers" not in found
    assert "asyncapi-id" in found


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "pyproject.toml",
            '[tool.tidings.lint]\ndisable = ["asyncapi-idd"]\n',
            r'pyproject\.toml: \[tool\.tidings\.lint\] disable: unknown rule code "asyncapi-idd" '
            r'\(did you mean "asyncapi-id"\?\)',
        ),
        (
            "pyproject.toml",
            '[tool.tidings.lint.rules]\nno-such-rule = "error"\n',
            r'pyproject\.toml: \[tool\.tidings\.lint\.rules\]: unknown rule code "no-such-rule"',
        ),
        (
            ".tidings.yaml",
            "lint:\n  rules:\n    asyncapi-id: loud\n",
            r'\.tidings\.yaml: lint: rules: asyncapi-id: "loud" is not a level',
        ),
        (".tidings.yaml", "lint:\n  disabled: [asyncapi-id]\n", r'\.tidings\.yaml: lint: unknown key "disabled"'),
        (".tidings.yaml", "lint:\n  disable: asyncapi-id: x\n", r"\.tidings\.yaml: not valid YAML"),
        ("pyproject.toml", "[tool.tidings.lint\n", r"pyproject\.toml: not valid TOML"),
        (".tidings.yaml", "lint:\n  custom: [no_such_module_xyz:rule]\n", r"cannot import no_such_module_xyz"),
    ],
)
def test_configuration_mistakes_are_one_line_usage_errors(project: Path, name: str, text: str, expected: str) -> None:
    write(project / name, text)
    with pytest.raises(UsageError, match=expected) as excinfo:
        load_config()
    assert "\n" not in str(excinfo.value)
    assert str(project / name) in str(excinfo.value)


def test_a_missing_explicit_config_file_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="no such configuration file"):
        load_config(project / "nope.toml")


CUSTOM_RULES = '''
    """Team rules for our AsyncAPI documents."""

    from tidings.lint import rule


    @rule("team-channel-description", severity="error", description="Channels are described.")
    def channel_description(ctx):
        for channel in ctx.model.channels.values():
            if not channel.description:
                yield ctx.report(f"channel {channel.key} has no description", channel.path)


    def title_mentions_team(ctx):
        """The title names the owning team."""
        if "Team" not in (ctx.model.title or ""):
            yield ctx.report("say which team owns this API", ("info", "title"))
'''


def test_custom_rules_by_configuration(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "team_rules_a.py", CUSTOM_RULES)
    monkeypatch.delitem(sys.modules, "team_rules_a", raising=False)
    write(
        project / "pyproject.toml",
        """
        [tool.tidings.lint]
        custom = ["team_rules_a:channel_description", "team_rules_a:title_mentions_team"]

        [tool.tidings.lint.rules]
        title-mentions-team = "info"
        """,
    )
    config = load_config()
    assert config.registry.get("team-channel-description") is not None
    found = lint_seed(config)
    assert [(d.severity, d.json_path) for d in found if d.code == "title-mentions-team"] == [
        (Severity.INFO, "/info/title")
    ]
    assert not [d for d in found if d.code == "team-channel-description"]  # the seed describes its channels
    monkeypatch.delitem(sys.modules, "team_rules_a")


def test_a_custom_module_is_imported_only_when_the_configuration_names_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(project / "team_rules_b.py", CUSTOM_RULES)
    monkeypatch.delitem(sys.modules, "team_rules_b", raising=False)
    write(project / ".tidings.yaml", "lint:\n  disable: [asyncapi-id]\n")
    load_config()
    assert "team_rules_b" not in sys.modules
    write(project / ".tidings.yaml", "lint:\n  custom: [team_rules_b]\n")  # a module: all its @rule functions
    config = load_config()
    assert "team_rules_b" in sys.modules
    assert config.registry.get("team-channel-description") is not None
    assert config.registry.get("title-mentions-team") is None  # not described with @rule
    monkeypatch.delitem(sys.modules, "team_rules_b")


def test_custom_rule_codes_must_not_collide(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "team_rules_c.py", "def asyncapi_id(ctx):\n    return []\n")
    monkeypatch.delitem(sys.modules, "team_rules_c", raising=False)
    write(project / ".tidings.yaml", "lint:\n  custom: ['team_rules_c:asyncapi_id']\n")
    with pytest.raises(UsageError, match='rule code "asyncapi-id" is already taken'):
        load_config()
    monkeypatch.delitem(sys.modules, "team_rules_c")


def test_custom_rules_by_entry_point(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    write(
        site / "ep_rules_pkg.py",
        """
        def no_servers_named_test(ctx):
            for name in ctx.model.servers:
                if name == "test":
                    yield ctx.report("a server named test", ("servers", name))
            yield ctx.report("entry point rule ran", ())
        """,
    )
    write(site / "ep_rules_pkg-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: ep-rules-pkg\nVersion: 1.0\n")
    write(
        site / "ep_rules_pkg-1.0.dist-info" / "entry_points.txt",
        f"[{ENTRY_POINT_GROUP}]\nno-test-servers = ep_rules_pkg:no_servers_named_test\n",
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "ep_rules_pkg", raising=False)
    config = load_config()
    rule = config.registry.get("no-test-servers")
    assert rule is not None
    assert rule.severity is Severity.WARNING
    assert [d.message for d in lint_seed(config) if d.code == "no-test-servers"] == ["entry point rule ran"]
    assert load_config(entry_points=False).registry.get("no-test-servers") is None
    monkeypatch.delitem(sys.modules, "ep_rules_pkg")


@pytest.mark.parametrize(
    "toml",
    [
        '[tool.tidings.lint]\ndisable = ["asyncapi-id"]\n',
        '[tool]\ntidings.lint.disable = ["asyncapi-id"]\n',
        '[tool]\ntidings = { lint = { disable = ["asyncapi-id"] } }\n',
        '[tool.tidings]\nlint = { disable = ["asyncapi-id"] }\n',
    ],
)
def test_every_toml_spelling_of_the_table_is_found(project: Path, toml: str) -> None:
    write(project / "pyproject.toml", '[project]\nname = "demo"\nscripts = { tidings = "x:y" }\n\n' + toml)
    config = load_config()
    assert config.source == str(project / "pyproject.toml")
    assert "asyncapi-id" not in levels(lint_seed(config))


def test_spectral_builtin_rule_names_are_accepted(project: Path) -> None:
    write(
        project / ".tidings.yaml",
        """
        lint:
          disable: [asyncapi-tags]                  # Spectral's name for asyncapi2-tags / asyncapi3-tags
          rules:
            asyncapi-message-messageId: error       # Spectral's name for asyncapi2-message-messageId
        """,
    )
    found = levels(lint_seed(load_config()))
    assert "asyncapi2-tags" not in found
    assert found["asyncapi2-message-messageId"] == {Severity.ERROR}
