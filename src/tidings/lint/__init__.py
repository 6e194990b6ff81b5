"""``tidings lint``: Spectral's AsyncAPI rules and the event-design rules of our guide.

>>> from tidings.lint import lint_file, load_config
>>> result = lint_file("examples/user-service.asyncapi.yaml", load_config())   # doctest: +SKIP
>>> sorted({d.code for d in result.diagnostics})                                 # doctest: +SKIP
['asyncapi-defaultContentType', 'asyncapi-id', ..., 'tidings-payload-event-type', 'tidings-payload-version']

Where things are:

- :mod:`~tidings.lint.registry`: what a rule is (a plain function, described by :func:`rule`), the
  :class:`RuleContext` it receives, and the :class:`Registry` of rules;
- :mod:`~tidings.lint.spectral`: Spectral's AsyncAPI rules (the official CLI's codes and severities);
- :mod:`~tidings.lint.guide` and :mod:`~tidings.lint.naming`: the guide's event-design rules;
- :mod:`~tidings.lint.config`: ``[tool.tidings.lint]`` / ``.tidings.yaml``, custom rules, entry points;
- :mod:`~tidings.lint.runner`: validation, then the rules.

A custom rule is a function of a :class:`RuleContext` that yields findings::

    from tidings.lint import rule

    @rule("no-internal-channels", severity="error", description="No x-internal channels.")
    def no_internal_channels(ctx):
        for channel in ctx.model.channels.values():
            if channel.raw.get("x-internal"):
                yield ctx.report("internal channels do not belong in a public contract", channel.path)

and is added with ``custom = ["mypkg.rules:no_internal_channels"]`` in the configuration, or by an entry
point in the group ``tidings.lint_rules``.
"""

from __future__ import annotations

from tidings.lint.config import ENTRY_POINT_GROUP, LintConfig, builtin_registry, find_config, load_config
from tidings.lint.registry import Registry, Rule, RuleContext, RuleFunc, rule
from tidings.lint.runner import RULE_FAILED, lint_document, lint_file

__all__ = [
    "ENTRY_POINT_GROUP",
    "RULE_FAILED",
    "LintConfig",
    "Registry",
    "Rule",
    "RuleContext",
    "RuleFunc",
    "builtin_registry",
    "find_config",
    "lint_document",
    "lint_file",
    "load_config",
    "rule",
]
