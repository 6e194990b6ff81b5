"""Lint rules: plain functions from a :class:`RuleContext` to diagnostics, described by a decorator.

A rule is an ordinary function, so it can be called and tested on its own::

    from tidings.lint import rule

    @rule("no-x-internal", severity="warning", description="Channels must not be marked internal.")
    def no_x_internal(ctx):
        for channel in ctx.model.channels.values():
            if channel.raw.get("x-internal"):
                yield ctx.report("internal channels do not belong in a public contract", channel.path)

:func:`rule` only *describes* a function (code, default severity, description, tags); a
:class:`Registry` is what a lint run reads. The built-in rules register themselves in :data:`BUILTIN`
with :meth:`Registry.rule`; custom rules are added by :mod:`tidings.lint.config` from entry points
(group ``tidings.lint_rules``) or from the ``custom`` list of the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tidings.asyncapi.diagnostics import Diagnostic, Path, Severity
from tidings.asyncapi.document import Document
from tidings.asyncapi.model import Model
from tidings.lint.helpers import definition_path

RuleFunc = Callable[["RuleContext"], Iterable[Diagnostic]]
F = TypeVar("F", bound=RuleFunc)

#: the attribute :func:`rule` sets on a function it describes
RULE_ATTRIBUTE = "__tidings_rule__"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule function and what the linter needs to know about it."""

    code: str
    severity: Severity
    description: str
    check: RuleFunc
    tags: frozenset[str] = frozenset()
    #: off unless the configuration turns it on (Spectral's ``recommended: false`` rules)
    enabled: bool = True
    #: the AsyncAPI major versions the rule applies to
    versions: frozenset[int] = frozenset({2, 3})

    def __call__(self, ctx: RuleContext) -> Iterable[Diagnostic]:
        return self.check(ctx)


def rule(
    code: str,
    *,
    severity: Severity | str = Severity.WARNING,
    description: str = "",
    tags: Iterable[str] = (),
    enabled: bool = True,
    versions: Iterable[int] = (2, 3),
) -> Callable[[F], F]:
    """Describe ``fn`` as the rule ``code``; the function is returned unchanged (and still callable)."""
    level = severity if isinstance(severity, Severity) else Severity.parse(severity)

    def describe(fn: F) -> F:
        doc = (fn.__doc__ or "").strip().splitlines()
        meta = Rule(
            code,
            level,
            description or (doc[0] if doc else code),
            fn,
            frozenset(tags),
            enabled,
            frozenset(versions),
        )
        setattr(fn, RULE_ATTRIBUTE, meta)
        return fn

    return describe


def rule_of(fn: Any, *, code: str | None = None) -> Rule:
    """The :class:`Rule` for a function: its :func:`rule` description, or defaults for a plain function
    (code from ``code`` or the function name, ``create_user_names`` -> ``create-user-names``; warning)."""
    if isinstance(fn, Rule):
        return fn
    meta = getattr(fn, RULE_ATTRIBUTE, None)
    if isinstance(meta, Rule):
        return meta
    if not callable(fn):
        raise TypeError(f"{fn!r} is not a function")
    name = code or getattr(fn, "__name__", "").replace("_", "-")
    if not name:
        raise TypeError(f"{fn!r} has no name: give it a code with @tidings.lint.rule(...)")
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return Rule(name, Severity.WARNING, doc[0] if doc else name, fn)


class Registry:
    """An ordered set of rules, keyed by code."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for r in rules:
            self.add(r)

    def rule(
        self,
        code: str,
        *,
        severity: Severity | str = Severity.WARNING,
        description: str = "",
        tags: Iterable[str] = (),
        enabled: bool = True,
        versions: Iterable[int] = (2, 3),
    ) -> Callable[[F], F]:
        """Like :func:`rule`, and also add the function to this registry."""
        describe = rule(code, severity=severity, description=description, tags=tags, enabled=enabled, versions=versions)

        def register(fn: F) -> F:
            self.add(describe(fn))
            return fn

        return register

    def add(self, fn: Any, *, code: str | None = None) -> Rule:
        """Add a rule function (described or plain); a code already taken is a :class:`ValueError`."""
        r = rule_of(fn, code=code)
        if r.code in self._rules:
            raise ValueError(f'rule code "{r.code}" is already taken by {_origin(self._rules[r.code].check)}')
        self._rules[r.code] = r
        return r

    def get(self, code: str) -> Rule | None:
        return self._rules.get(code)

    def codes(self) -> list[str]:
        return list(self._rules)

    def copy(self) -> Registry:
        return Registry(self._rules.values())

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __contains__(self, code: object) -> bool:
        return code in self._rules

    def __len__(self) -> int:
        return len(self._rules)


def _origin(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


#: the rules shipped with tidings; filled when :mod:`tidings.lint.spectral` and :mod:`tidings.lint.guide`
#: are imported (see :func:`tidings.lint.runner.builtin_registry`)
BUILTIN = Registry()


@dataclass(slots=True)
class RuleContext:
    """What a rule sees: the document, its model, and :meth:`report` to build findings.

    One context is made per rule and document; ``shared`` is common to all rules on one document, for
    facts worth computing once (see :meth:`memo`).
    """

    document: Document
    model: Model
    rule: Rule
    severity: Severity
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        """The document's raw data (mappings and lists that remember their positions)."""
        return self.document.data

    @property
    def major(self) -> int:
        return self.model.major

    def deref(self, node: Any) -> Any:
        """``node`` with references followed; ``None`` for a broken reference (validation reports it)."""
        if isinstance(node, dict) and "$ref" in node:
            return self.document.try_deref(node)
        return node

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per document for all rules."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]

    def report(
        self,
        message: str,
        path: Sequence[str | int],
        *,
        at_key: bool = False,
        suggestion: str = "",
        follow_refs: bool = True,
    ) -> Diagnostic:
        """A finding of this rule at ``path``.

        With ``follow_refs`` (the default), a path that runs through a ``$ref`` to another part of the
        document is reported where the object is defined (``components/messages/UserCreated`` rather
        than each channel that uses it), as Spectral does; so one object used in many places gives one
        finding. Objects defined in another file are reported where this document refers to them.
        """
        where: Path = tuple(path)
        if follow_refs:
            where = definition_path(self.document, where) or where
        return self.document.diagnostic(
            self.severity, self.rule.code, message, where, at_key=at_key, suggestion=suggestion
        )


__all__ = ["BUILTIN", "RULE_ATTRIBUTE", "Registry", "Rule", "RuleContext", "RuleFunc", "rule", "rule_of"]
