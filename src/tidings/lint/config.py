"""Lint configuration: which rules run, at which severity, and which custom rules to add.

Read from ``--config FILE``, or else from the first of these found from the current folder upwards:
``.tidings.yaml`` / ``.tidings.yml`` (a ``lint:`` section, or the keys at the top level), or a
``pyproject.toml`` that has a ``[tool.tidings.lint]`` table::

    [tool.tidings.lint]
    disable = ["asyncapi-id", "guide"]            # rule codes, or a tag (spectral, guide) for all its rules;
                                                  # Spectral's own names (asyncapi-tags-uniqueness) work too
    enable = ["asyncapi-tag-description"]         # turn on a rule that is off by default
    custom = ["mypkg.rules:no_internal_channels"] # plain Python functions ("module" alone: all its @rule functions)

    [tool.tidings.lint.rules]
    asyncapi-info-contact = "off"                 # or "error", "warning", "info", "hint", "on"

``rules`` is applied last, so it overrides ``disable`` and ``enable``. Custom rules can also come from
installed packages, through the entry point group ``tidings.lint_rules`` (the entry point's name is the
rule's code unless the function carries a :func:`~tidings.lint.rule` description).

Every mistake (an unknown key, an unknown rule code, a module that does not import) is a
:class:`~tidings.errors.UsageError` naming the file and the key, so the CLI exits with status 2.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from tidings.asyncapi.diagnostics import Severity
from tidings.errors import UsageError
from tidings.lint.registry import BUILTIN, RULE_ATTRIBUTE, Registry, Rule

ENTRY_POINT_GROUP = "tidings.lint_rules"
YAML_NAMES = (".tidings.yaml", ".tidings.yml")
KEYS = ("disable", "enable", "rules", "custom")
# a pyproject.toml worth parsing mentions tool.tidings; parsing every pyproject.toml met on the way up
# would cost a TOML import on every run
_MENTIONS_TIDINGS = re.compile(r"(?m)^\s*\[\s*tool\s*\.\s*tidings\b|^\s*tidings\s*\.\s*lint\b|^\s*tidings\s*=\s*\{")


def builtin_registry() -> Registry:
    """The rules shipped with tidings (importing their modules registers them)."""
    from tidings.lint import guide, spectral  # noqa: F401  (imported for their @rule registrations)

    return BUILTIN


@dataclass(frozen=True)
class LintConfig:
    """The rules of one lint run and the severity each one runs at (``None``: off)."""

    registry: Registry = field(default_factory=builtin_registry)
    severities: Mapping[str, Severity | None] = field(default_factory=dict)
    #: the file this configuration was read from, if any
    source: str | None = None

    def severity_of(self, rule: Rule) -> Severity | None:
        if rule.code in self.severities:
            return self.severities[rule.code]
        return rule.severity if rule.enabled else None

    def active(self, major: int | None = None) -> list[tuple[Rule, Severity]]:
        """The rules that run (on a document of AsyncAPI ``major`` version), with their severity."""
        out: list[tuple[Rule, Severity]] = []
        for r in self.registry:
            severity = self.severity_of(r)
            if severity is not None and (major is None or major in r.versions):
                out.append((r, severity))
        return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    start: str | os.PathLike[str] | None = None,
    entry_points: bool = True,
) -> LintConfig:
    """The configuration in ``path``, or found from ``start`` (default: the current folder) upwards;
    the built-in rules (plus entry-point rules) at their default severities when there is none."""
    registry = builtin_registry().copy()
    if entry_points:
        _add_entry_point_rules(registry)
    if path is not None:
        file = os.fspath(path)
        if not os.path.isfile(file):
            raise UsageError(f"{file}: no such configuration file")
        table = _read(file, explicit=True)
    else:
        found = find_config(start)
        if found is None:
            return LintConfig(registry)
        file, table = found
    return _apply(table or {}, registry, file)


def find_config(start: str | os.PathLike[str] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The nearest configuration from ``start`` upwards, as (file, lint table)."""
    folder = os.path.abspath(os.fspath(start) if start is not None else os.getcwd())
    while True:
        for name in YAML_NAMES:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate, _read(candidate, explicit=True) or {}
        candidate = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(candidate):
            table = _read(candidate, explicit=False)
            if table is not None:
                return candidate, table
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _read(file: str, *, explicit: bool) -> dict[str, Any] | None:
    """The lint table of ``file``; ``None`` for a pyproject.toml without one (when not named explicitly)."""
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: cannot read the configuration: {exc}") from None
    if file.endswith(".toml"):
        if not explicit and not _MENTIONS_TIDINGS.search(text):
            return None
        import tomllib  # only when there is something to read: the import costs start-up time

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{file}: not valid TOML: {exc}") from None
        tool = data.get("tool")
        tidings = tool.get("tidings") if isinstance(tool, dict) else None
        table = tidings.get("lint") if isinstance(tidings, dict) else None
        if table is None:
            return {} if explicit else None
        if not isinstance(table, dict):
            raise UsageError(f"{file}: [tool.tidings.lint] must be a table")
        return table
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{file}: not valid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{file}: the configuration must be a mapping (with a lint: section)")
    if "lint" in data:
        if data["lint"] is None:
            return {}
        if not isinstance(data["lint"], dict):
            raise UsageError(f"{file}: lint: must be a mapping")
        return data["lint"]
    return data


def _apply(table: Mapping[str, Any], registry: Registry, file: str) -> LintConfig:
    section = "[tool.tidings.lint]" if file.endswith(".toml") else "lint:"
    for key in table:
        if key not in KEYS:
            raise UsageError(f'{file}: {section} unknown key "{key}" (known: {", ".join(KEYS)})')
    for spec in _strings(table.get("custom", []), file, f"{section} custom"):
        for fn, code in _load_custom(spec, file):
            try:
                registry.add(fn, code=code)
            except (TypeError, ValueError) as exc:
                raise UsageError(f'{file}: {section} custom "{spec}": {exc}') from None
    severities: dict[str, Severity | None] = {}
    for code in _codes(table.get("disable", []), registry, file, f"{section} disable"):
        severities[code] = None
    for code in _codes(table.get("enable", []), registry, file, f"{section} enable"):
        rule = registry.get(code)
        assert rule is not None
        severities[code] = rule.severity
    rules = table.get("rules", {})
    where = "[tool.tidings.lint.rules]" if file.endswith(".toml") else "lint: rules:"
    if not isinstance(rules, dict):
        raise UsageError(f"{file}: {where} must be a table of rule code = severity")
    for key, level in rules.items():
        for code in _codes([key], registry, file, where):
            severities[code] = _level(level, registry.get(code), file, f"{where} {key}")
    return LintConfig(registry, severities, file)


def _strings(value: Any, file: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{file}: {where} must be a list of strings")
    return value


def _codes(value: Any, registry: Registry, file: str, where: str) -> list[str]:
    """Rule codes named in ``value``; a tag (``guide``, ``spectral``) stands for all its rules, and a
    Spectral built-in name (``asyncapi-tags-uniqueness``) for the rules we run under the CLI's codes."""
    from tidings.lint.spectral import SPECTRAL_ALIASES

    out: list[str] = []
    for name in _strings(value, file, where):
        if name in registry:
            out.append(name)
            continue
        if name in SPECTRAL_ALIASES:
            out.extend(SPECTRAL_ALIASES[name])
            continue
        tagged = [r.code for r in registry if name in r.tags]
        if tagged:
            out.extend(tagged)
            continue
        import difflib

        close = difflib.get_close_matches(name, registry.codes(), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise UsageError(f'{file}: {where}: unknown rule code "{name}"{hint}')
    return out


def _level(value: Any, rule: Rule | None, file: str, where: str) -> Severity | None:
    # YAML 1.1 (yaml.safe_load) reads a bare off/on as false/true
    if value is False or value == "off":
        return None
    if value is True or value == "on":
        return rule.severity if rule else None
    if isinstance(value, str):
        try:
            return Severity.parse(value)
        except ValueError:
            pass
    raise UsageError(f'{file}: {where}: "{value}" is not a level: use off, on, error, warning, info or hint')


def _load_custom(spec: str, file: str) -> list[tuple[Any, str | None]]:
    """The rule functions named by ``module:function`` (or every described function of ``module``)."""
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, os.path.dirname(os.path.abspath(file)), f'{file}: custom "{spec}"')
    if attr:
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)  # type: ignore[assignment]
            if fn is None:
                raise UsageError(f'{file}: custom "{spec}": module {module_name} has no "{attr}"')
        if not callable(fn):
            raise UsageError(f'{file}: custom "{spec}": "{attr}" is not a function')
        return [(fn, None)]
    found: list[tuple[Any, str | None]] = [
        (v, None) for v in vars(module).values() if callable(v) and hasattr(v, RULE_ATTRIBUTE)
    ]
    if not found:
        raise UsageError(f'{file}: custom "{spec}": module {module_name} has no @tidings.lint.rule functions')
    return found


def _import(name: str, folder: str, where: str) -> ModuleType:
    """Import ``name``; the configuration's own folder is searched first, so a project's local rule
    module (next to its pyproject.toml) needs no installing."""
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise UsageError(f"{where}: cannot import {name}: {type(exc).__name__}: {_one_line(exc)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _add_entry_point_rules(registry: Registry) -> None:
    if not _may_have_entry_points():
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f'entry point "{ep.name} = {ep.value}" (group {ENTRY_POINT_GROUP})'
        try:
            loaded = ep.load()
        except Exception as exc:
            raise UsageError(f"{where} cannot be loaded: {type(exc).__name__}: {_one_line(exc)}") from None
        functions: Iterable[Any] = loaded if isinstance(loaded, list | tuple) else [loaded]
        for fn in functions:
            try:
                registry.add(fn, code=None if hasattr(fn, RULE_ATTRIBUTE) else ep.name)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{where}: {exc}") from None


def _may_have_entry_points() -> bool:
    """Whether any installed distribution declares our entry point group.

    ``importlib.metadata`` takes ~40 ms to import, a third of a whole ``tidings lint`` run; reading the
    few ``entry_points.txt`` files on ``sys.path`` takes about a millisecond, so we only import it when
    one of them names the group.
    """
    for entry in sys.path:
        try:
            listing = os.scandir(entry or ".")
        except OSError:
            continue
        with listing:
            for item in listing:
                if not item.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8", errors="replace") as fh:
                        if ENTRY_POINT_GROUP in fh.read():
                            return True
                except OSError:
                    continue
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["ENTRY_POINT_GROUP", "LintConfig", "builtin_registry", "find_config", "load_config"]
