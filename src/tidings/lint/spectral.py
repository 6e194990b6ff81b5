"""Spectral's AsyncAPI rules, for AsyncAPI 2.x and 3.x.

Two rulesets go by that name, and we follow both:

- the one the official AsyncAPI CLI runs (``@asyncapi/parser``'s ruleset, itself run by Spectral): its
  codes and default severities are used as they are (``asyncapi-info-contact``, ``asyncapi2-tags``,
  ``asyncapi2-message-messageId``...), so findings can be compared one to one with the CLI's (see
  ``tests/test_lint_corpus.py``);
- Spectral's built-in ``spectral:asyncapi`` ruleset, for the rules the CLI lacks
  (``asyncapi-operation-description``, ``asyncapi-tag-description``, ``asyncapi-tags-alphabetical``,
  ``asyncapi-parameter-description``, ``asyncapi-server-not-example-com``).

Rules that Spectral marks ``recommended: false`` are off unless the configuration turns them on.
Rules whose subject validation already reports as an error (channel parameters, server variables,
security requirements, message examples, unique ids, headers of type object) are not repeated here.

Deliberate differences from the CLI (``tests/test_lint_corpus.py`` exempts the first from its
comparison; the others never occur in the corpus and have tests of their own in
``tests/test_lint_spectral.py``):

1. The CLI runs its recommended rules on 2.x documents only ("validation for AsyncAPI v3 is still WIP");
   we run them on 3.x too. Where a 2.x rule's subject moved in 3.x, the 3.x rule is named like the
   parser's own 3.x rules: ``asyncapi3-tags`` (``info.tags``), ``asyncapi3-server-no-trailing-slash``
   (``host``), ``asyncapi3-server-no-empty-variable`` (``host``, ``pathname``),
   ``asyncapi3-channel-no-trailing-slash`` (``address``), ``asyncapi3-tags-uniqueness``,
   ``asyncapi3-schema-default``, ``asyncapi3-schema-examples``. In 3.x, ``asyncapi-unused-component``
   also covers security schemes (3.x refers to them with ``$ref``).
2. ``asyncapi2-tags``: an empty ``tags: []`` is reported too (Spectral's ``truthy`` takes ``[]`` as true,
   although the rule asks for a non-empty array).
3. ``asyncapi-unused-component``: a component counts as used when a ``$ref`` points at it *or inside it*
   (``#/components/schemas/Order/properties/id``); Spectral only counts references to the component itself.
4. ``asyncapi2-schema-default`` / ``-examples``: string values are checked too (the CLI skips every
   string default and example).
5. ``asyncapi-info-license-url`` (off by default) is only reported when there is a license; a missing
   license is ``asyncapi-info-license``'s finding.
6. ``asyncapi2-tags-uniqueness`` also checks server tags (as Spectral's built-in ruleset does).

Not a difference, a representation: an object defined in another file is reported where this document
refers to it (every path is a path in the linted document); the CLI gives its path inside the other file.
Spectral's built-in names for the rules we run under the CLI's codes (``asyncapi-tags-uniqueness``...)
are accepted in the configuration: see :data:`SPECTRAL_ALIASES`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from tidings.asyncapi.diagnostics import Diagnostic, Path, dotted
from tidings.asyncapi.document import LATEST_VERSION
from tidings.asyncapi.schemas import bundle_schema, compile_schema, plain_data
from tidings.asyncapi.spec2 import _is_asyncapi_format
from tidings.asyncapi.validate import explain_schema_error
from tidings.lint.helpers import as_dict, as_list, closest_path, iter_items, referenced_paths, truthy
from tidings.lint.registry import BUILTIN, RuleContext

SPECTRAL = ("spectral",)

#: Spectral's built-in ``spectral:asyncapi`` names for rules we run under the CLI's code, so a
#: configuration written for Spectral (``disable = ["asyncapi-tags-uniqueness"]``) works here too
SPECTRAL_ALIASES: dict[str, tuple[str, ...]] = {
    "asyncapi-tags": ("asyncapi2-tags", "asyncapi3-tags"),
    "asyncapi-3-tags": ("asyncapi3-tags",),
    "asyncapi-tags-uniqueness": ("asyncapi2-tags-uniqueness", "asyncapi3-tags-uniqueness"),
    "asyncapi-3-tags-uniqueness": ("asyncapi3-tags-uniqueness",),
    "asyncapi-channel-no-trailing-slash": (
        "asyncapi2-channel-no-trailing-slash",
        "asyncapi3-channel-no-trailing-slash",
    ),
    "asyncapi-3-channel-no-trailing-slash": ("asyncapi3-channel-no-trailing-slash",),
    "asyncapi-server-no-trailing-slash": ("asyncapi2-server-no-trailing-slash", "asyncapi3-server-no-trailing-slash"),
    "asyncapi-3-server-no-trailing-slash": ("asyncapi3-server-no-trailing-slash",),
    "asyncapi-server-no-empty-variable": ("asyncapi2-server-no-empty-variable", "asyncapi3-server-no-empty-variable"),
    "asyncapi-3-server-no-empty-variable": ("asyncapi3-server-no-empty-variable",),
    "asyncapi-operation-operationId": ("asyncapi2-operation-operationId",),
    "asyncapi-message-messageId": ("asyncapi2-message-messageId",),
    "asyncapi-payload-default": ("asyncapi2-schema-default", "asyncapi3-schema-default"),
    "asyncapi-schema-default": ("asyncapi2-schema-default", "asyncapi3-schema-default"),
    "asyncapi-payload-examples": ("asyncapi2-schema-examples", "asyncapi3-schema-examples"),
    "asyncapi-schema-examples": ("asyncapi2-schema-examples", "asyncapi3-schema-examples"),
    "asyncapi-3-operation-description": ("asyncapi-operation-description",),
    "asyncapi-3-tag-description": ("asyncapi-tag-description",),
    "asyncapi-3-tags-alphabetical": ("asyncapi-tags-alphabetical",),
    "asyncapi-3-server-not-example-com": ("asyncapi-server-not-example-com",),
}
#: rules that are also the guide's advice ("operations with ids and descriptions")
SPECTRAL_AND_GUIDE = ("spectral", "guide")

rule = BUILTIN.rule


# -- walking the document as Spectral's JSONPath "given" expressions do --------------------------------
def get(ctx: RuleContext, *path: str | int) -> Any:
    """The value at ``path``, references followed at every step; ``None`` if absent."""
    node = ctx.data
    for key in path:
        node = ctx.deref(node)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return None
    return ctx.deref(node)


def v2_operations(ctx: RuleContext, *, components: bool = True) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``$.channels[*][publish,subscribe]`` (and ``$.components.channels[*]...``) of a 2.x document."""
    bases: tuple[Path, ...] = (("channels",), ("components", "channels")) if components else (("channels",),)
    for base in bases:
        for name, channel in iter_items(get(ctx, *base)):
            channel = ctx.deref(channel)
            for verb in ("publish", "subscribe"):
                op = ctx.deref(as_dict(channel).get(verb))
                if isinstance(op, dict):
                    yield (*base, name, verb), op


def v2_messages(ctx: RuleContext) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Operation messages (each ``oneOf`` item for a ``oneOf`` message) and ``$.components.messages.*``."""
    for path, op in v2_operations(ctx):
        message = ctx.deref(op.get("message"))
        if not isinstance(message, dict):
            continue
        if "oneOf" in message:
            for i, item in enumerate(as_list(message["oneOf"])):
                item = ctx.deref(item)
                if isinstance(item, dict):
                    yield (*path, "message", "oneOf", i), item
        else:
            yield (*path, "message"), message
    for name, message in iter_items(get(ctx, "components", "messages")):
        message = ctx.deref(message)
        if isinstance(message, dict):
            yield ("components", "messages", name), message


def v3_operations(ctx: RuleContext) -> Iterator[tuple[Path, dict[str, Any]]]:
    for base in (("operations",), ("components", "operations")):
        for name, op in iter_items(get(ctx, *base)):
            op = ctx.deref(op)
            if isinstance(op, dict):
                yield (*base, name), op


def v3_messages(ctx: RuleContext) -> Iterator[tuple[Path, dict[str, Any]]]:
    for name, channel in iter_items(get(ctx, "channels")):
        for key, message in iter_items(as_dict(ctx.deref(channel)).get("messages")):
            message = ctx.deref(message)
            if isinstance(message, dict):
                yield ("channels", name, "messages", key), message
    for name, message in iter_items(get(ctx, "components", "messages")):
        message = ctx.deref(message)
        if isinstance(message, dict):
            yield ("components", "messages", name), message


def traits(ctx: RuleContext, path: Path, obj: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for i, trait in enumerate(as_list(obj.get("traits"))):
        trait = ctx.deref(trait)
        if isinstance(trait, dict):
            yield (*path, "traits", i), trait


def with_traits(ctx: RuleContext, obj: dict[str, Any], field: str) -> Any:
    """``obj[field]`` after its traits are applied (a trait's value replaces the object's), as the
    parser's ``mergeTraits`` does."""
    value = obj.get(field)
    for _, trait in traits(ctx, (), obj):
        if field in trait:
            value = trait[field]
    return value


def missing(ctx: RuleContext, message: str, path: Path) -> Diagnostic:
    """A finding for an absent field at ``path``, reported at its nearest existing parent."""
    return ctx.report(message, closest_path(ctx.data, path))


# -- the AsyncAPI object ------------------------------------------------------------------------------
@rule(
    "asyncapi-latest-version",
    severity="info",
    description="Checking if the AsyncAPI document is using the latest version.",
    tags=SPECTRAL,
)
def latest_version(ctx: RuleContext) -> Iterator[Diagnostic]:
    if ctx.document.version != LATEST_VERSION:
        yield ctx.report(
            f'The latest version of AsyncAPI is not used: update to "{LATEST_VERSION}" when you can.', ("asyncapi",)
        )


@rule("asyncapi-id", description='AsyncAPI document should have "id" field.', tags=SPECTRAL)
def document_id(ctx: RuleContext) -> Iterator[Diagnostic]:
    if not truthy(as_dict(ctx.data).get("id")):
        yield missing(
            ctx,
            'AsyncAPI document should have an "id" field: a URI naming the application, '
            'e.g. "urn:example:user-service".',
            ("id",),
        )


@rule(
    "asyncapi-defaultContentType",
    description='AsyncAPI document should have "defaultContentType" field.',
    tags=SPECTRAL,
)
def default_content_type(ctx: RuleContext) -> Iterator[Diagnostic]:
    if not truthy(as_dict(ctx.data).get("defaultContentType")):
        yield missing(
            ctx,
            'AsyncAPI document should have a "defaultContentType" field, e.g. "application/json".',
            ("defaultContentType",),
        )


@rule(
    "asyncapi-servers",
    description='AsyncAPI document should have non-empty "servers" object.',
    tags=SPECTRAL,
)
def servers(ctx: RuleContext) -> Iterator[Diagnostic]:
    value = ctx.deref(as_dict(ctx.data).get("servers"))
    if not isinstance(value, dict) or not value:
        yield missing(ctx, 'AsyncAPI document should have a non-empty "servers" object.', ("servers",))


@rule("asyncapi2-tags", description='AsyncAPI object should have non-empty "tags" array.', tags=SPECTRAL, versions=(2,))
def root_tags(ctx: RuleContext) -> Iterator[Diagnostic]:
    value = as_dict(ctx.data).get("tags")
    if not truthy(value) or value == []:
        yield missing(ctx, 'AsyncAPI object should have a non-empty "tags" array.', ("tags",))


@rule("asyncapi3-tags", description='Info object should have non-empty "tags" array.', tags=SPECTRAL, versions=(3,))
def info_tags(ctx: RuleContext) -> Iterator[Diagnostic]:
    value = as_dict(get(ctx, "info")).get("tags")
    if not truthy(value) or value == []:
        yield missing(ctx, 'Info object should have a non-empty "tags" array.', ("info", "tags"))


# -- info ------------------------------------------------------------------------------------------------
@rule(
    "asyncapi-info-description",
    description='Info "description" should be present and non-empty string.',
    tags=SPECTRAL,
)
def info_description(ctx: RuleContext) -> Iterator[Diagnostic]:
    if not truthy(as_dict(get(ctx, "info")).get("description")):
        yield missing(ctx, 'Info "description" should be present and a non-empty string.', ("info", "description"))


@rule("asyncapi-info-contact", description='Info object should have "contact" object.', tags=SPECTRAL)
def info_contact(ctx: RuleContext) -> Iterator[Diagnostic]:
    if not truthy(as_dict(get(ctx, "info")).get("contact")):
        yield missing(ctx, 'Info object should have a "contact" object (name, url, email).', ("info", "contact"))


@rule(
    "asyncapi-info-contact-properties",
    description='Contact object should have "name", "url" and "email" fields.',
    tags=SPECTRAL,
)
def info_contact_properties(ctx: RuleContext) -> Iterator[Diagnostic]:
    info = as_dict(get(ctx, "info"))
    if "contact" not in info:
        return
    contact = as_dict(ctx.deref(info["contact"]))
    absent = [f for f in ("name", "url", "email") if not truthy(contact.get(f))]
    if absent:
        yield ctx.report(
            f'Contact object should have "name", "url" and "email" fields; missing: {", ".join(absent)}.',
            ("info", "contact"),
        )


@rule("asyncapi-info-license", description='Info object should have "license" object.', tags=SPECTRAL)
def info_license(ctx: RuleContext) -> Iterator[Diagnostic]:
    if not truthy(as_dict(get(ctx, "info")).get("license")):
        yield missing(ctx, 'Info object should have a "license" object.', ("info", "license"))


@rule(
    "asyncapi-info-license-url",
    description='License object should have "url" field.',
    tags=SPECTRAL,
    enabled=False,
)
def info_license_url(ctx: RuleContext) -> Iterator[Diagnostic]:
    license_ = get(ctx, "info", "license")
    if isinstance(license_, dict) and not truthy(license_.get("url")):
        yield missing(ctx, 'License object should have a "url" field.', ("info", "license", "url"))


# -- servers ---------------------------------------------------------------------------------------------
def _server_fields(ctx: RuleContext, fields: Iterable[str]) -> Iterator[tuple[Path, str]]:
    for name, server in iter_items(get(ctx, "servers")):
        server = as_dict(ctx.deref(server))
        for f in fields:
            value = server.get(f)
            if isinstance(value, str):
                yield ("servers", name, f), value


@rule(
    "asyncapi2-server-no-empty-variable",
    description="Server URL should not have empty variable substitution pattern.",
    tags=SPECTRAL,
    versions=(2,),
)
def server_no_empty_variable_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, url in _server_fields(ctx, ("url",)):
        if "{}" in url:
            yield ctx.report(f'Server URL "{url}" has an empty variable "{{}}": name it or remove it.', path)


@rule(
    "asyncapi3-server-no-empty-variable",
    description="Server host and pathname should not have empty variable substitution pattern.",
    tags=SPECTRAL,
    versions=(3,),
)
def server_no_empty_variable_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, value in _server_fields(ctx, ("host", "pathname")):
        if "{}" in value:
            yield ctx.report(f'Server {path[-1]} "{value}" has an empty variable "{{}}": name it or remove it.', path)


@rule(
    "asyncapi2-server-no-trailing-slash",
    description="Server URL should not end with slash.",
    tags=SPECTRAL,
    versions=(2,),
)
def server_no_trailing_slash_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, url in _server_fields(ctx, ("url",)):
        if url.endswith("/"):
            yield ctx.report(f'Server URL "{url}" should not end with a slash.', path)


@rule(
    "asyncapi3-server-no-trailing-slash",
    description="Server host should not end with slash.",
    tags=SPECTRAL,
    versions=(3,),
)
def server_no_trailing_slash_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, host in _server_fields(ctx, ("host",)):
        if host.endswith("/"):
            yield ctx.report(f'Server host "{host}" should not end with a slash.', path)


@rule(
    "asyncapi-server-not-example-com",
    description="Server URL should not point at example.com.",
    tags=SPECTRAL,
    enabled=False,
)
def server_not_example_com(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, value in _server_fields(ctx, ("url",) if ctx.major == 2 else ("host",)):
        if "example.com" in value:
            yield ctx.report(f'Server {path[-1]} "{value}" points at example.com: use the real address.', path)


# -- channels --------------------------------------------------------------------------------------------
@rule(
    "asyncapi2-channel-no-trailing-slash",
    description="Channel address should not end with slash.",
    tags=SPECTRAL,
    versions=(2,),
)
def channel_no_trailing_slash_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    for address, _ in iter_items(get(ctx, "channels")):
        if len(address) > 1 and address.endswith("/"):
            yield ctx.report(f'Channel address "{address}" should not end with a slash.', ("channels", address))


@rule(
    "asyncapi3-channel-no-trailing-slash",
    description="Channel address should not end with slash.",
    tags=SPECTRAL,
    versions=(3,),
)
def channel_no_trailing_slash_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    for name, channel in iter_items(get(ctx, "channels")):
        address = as_dict(ctx.deref(channel)).get("address")
        if isinstance(address, str) and len(address) > 1 and address.endswith("/"):
            yield ctx.report(f'Channel address "{address}" should not end with a slash.', ("channels", name, "address"))


@rule(
    "asyncapi-parameter-description",
    description='Parameter objects should have "description".',
    tags=SPECTRAL,
    enabled=False,
)
def parameter_description(ctx: RuleContext) -> Iterator[Diagnostic]:
    places: list[tuple[Path, Any]] = [
        (("components", "parameters", name), p) for name, p in iter_items(get(ctx, "components", "parameters"))
    ]
    for cname, channel in iter_items(get(ctx, "channels")):
        for name, p in iter_items(as_dict(ctx.deref(channel)).get("parameters")):
            places.append((("channels", cname, "parameters", name), p))
    for path, param in places:
        param = ctx.deref(param)
        if isinstance(param, dict) and not truthy(param.get("description")):
            yield ctx.report(f'Parameter "{path[-1]}" should have a "description".', path)


# -- operations and messages -----------------------------------------------------------------------------
@rule(
    "asyncapi-operation-description",
    description='Operation "description" should be present and non-empty string.',
    tags=SPECTRAL_AND_GUIDE,
)
def operation_description(ctx: RuleContext) -> Iterator[Diagnostic]:
    ops = v2_operations(ctx, components=False) if ctx.major == 2 else v3_operations(ctx)
    for path, op in ops:
        if path[0] == "components":
            continue  # Spectral looks at the operations in use ($.channels / $.operations) only
        if not truthy(op.get("description")):
            yield ctx.report(
                'Operation should have a "description": what it does, when, and for whom.', path, follow_refs=False
            )


@rule(
    "asyncapi2-operation-operationId",
    description='Operation should have an "operationId" field defined.',
    tags=SPECTRAL_AND_GUIDE,
    versions=(2,),
)
def operation_id(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, op in v2_operations(ctx):
        if not truthy(with_traits(ctx, op, "operationId")):
            yield ctx.report(
                'Operation should have an "operationId": code generators and documentation name it after that.',
                path,
            )


@rule(
    "asyncapi2-message-messageId",
    description='Message should have a "messageId" field defined.',
    tags=SPECTRAL,
    versions=(2,),
)
def message_id(ctx: RuleContext) -> Iterator[Diagnostic]:
    if (ctx.document.version_tuple or (0, 0, 0)) < (2, 4, 0):
        return  # messageId exists since 2.4.0
    for path, message in v2_messages(ctx):
        if not truthy(with_traits(ctx, message, "messageId")):
            yield ctx.report('Message should have a "messageId" field defined.', path)


# -- tags ------------------------------------------------------------------------------------------------
def _taggable(ctx: RuleContext) -> Iterator[tuple[Path, Any]]:
    """Every object that may carry ``tags``, with its path."""
    if ctx.major == 2:
        yield (), ctx.data
    else:
        yield ("info",), get(ctx, "info")
    for base in (("servers",), ("components", "servers")):
        for name, server in iter_items(get(ctx, *base)):
            yield (*base, name), ctx.deref(server)
    if ctx.major == 2:
        ops = list(v2_operations(ctx))
        messages = list(v2_messages(ctx))
    else:
        ops = list(v3_operations(ctx))
        messages = list(v3_messages(ctx))
        for base in (("channels",), ("components", "channels")):
            for name, channel in iter_items(get(ctx, *base)):
                yield (*base, name), ctx.deref(channel)
    for path, obj in [*ops, *messages]:
        yield path, obj
        yield from traits(ctx, path, obj)
    for kind in ("operationTraits", "messageTraits"):
        for name, trait in iter_items(get(ctx, "components", kind)):
            yield ("components", kind, name), ctx.deref(trait)


def _tags_uniqueness(ctx: RuleContext) -> Iterator[Diagnostic]:
    for path, obj in _taggable(ctx):
        tags = as_list(as_dict(obj).get("tags"))
        seen: set[Any] = set()
        for i, tag in enumerate(tags):
            name = as_dict(ctx.deref(tag)).get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                yield ctx.report(f'"tags" object contains duplicate tag name "{name}".', (*path, "tags", i, "name"))
            seen.add(name)


@rule(
    "asyncapi2-tags-uniqueness",
    severity="error",
    description="Each tag must have a unique name.",
    tags=SPECTRAL,
    versions=(2,),
)
def tags_uniqueness_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _tags_uniqueness(ctx)


@rule(
    "asyncapi3-tags-uniqueness",
    severity="error",
    description="Each tag must have a unique name.",
    tags=SPECTRAL,
    versions=(3,),
)
def tags_uniqueness_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _tags_uniqueness(ctx)


def _document_tags(ctx: RuleContext) -> tuple[Path, list[Any]]:
    path: Path = ("tags",) if ctx.major == 2 else ("info", "tags")
    return path, as_list(get(ctx, *path))


@rule("asyncapi-tag-description", description='Tag object should have "description".', tags=SPECTRAL, enabled=False)
def tag_description(ctx: RuleContext) -> Iterator[Diagnostic]:
    path, tags = _document_tags(ctx)
    for i, tag in enumerate(tags):
        tag = as_dict(ctx.deref(tag))
        if not truthy(tag.get("description")):
            yield ctx.report(f'Tag "{tag.get("name", i)}" should have a "description".', (*path, i))


@rule(
    "asyncapi-tags-alphabetical",
    description='AsyncAPI object should have alphabetical "tags".',
    tags=SPECTRAL,
    enabled=False,
)
def tags_alphabetical(ctx: RuleContext) -> Iterator[Diagnostic]:
    path, tags = _document_tags(ctx)
    raw_names = [as_dict(ctx.deref(t)).get("name") for t in tags]
    names = [n for n in raw_names if isinstance(n, str)]
    if len(names) != len(raw_names):
        return
    for a, b in itertools.pairwise(names):
        if _collate(a) > _collate(b):
            yield ctx.report(f'Tags should be in alphabetical order: "{a}" comes after "{b}".', path)
            return


def _collate(text: str) -> tuple[str, str]:
    """Close to JavaScript's ``localeCompare``: case-insensitive first, then case."""
    return text.casefold(), text


# -- components ------------------------------------------------------------------------------------------
@rule(
    "asyncapi-unused-component",
    severity="info",
    description="Potentially unused component has been detected in AsyncAPI document.",
    tags=SPECTRAL,
)
def unused_component(ctx: RuleContext) -> Iterator[Diagnostic]:
    components = as_dict(as_dict(ctx.data).get("components"))
    if not components:
        return
    used = {p[:3] for p in ctx.memo("referenced-paths", lambda: referenced_paths(ctx.document)) if len(p) >= 3}
    for kind, group in iter_items(components):
        if kind == "securitySchemes" and ctx.major == 2:
            continue  # 2.x refers to security schemes by name: see asyncapi2-unused-securityScheme
        for name, _ in iter_items(group):
            if ("components", kind, name) not in used:
                yield ctx.report(
                    f'Potentially unused component "{kind}/{name}": nothing in the document refers to it.',
                    ("components", kind, name),
                    follow_refs=False,
                )


@rule(
    "asyncapi2-unused-securityScheme",
    severity="info",
    description="Potentially unused security scheme has been detected in AsyncAPI document.",
    tags=SPECTRAL,
    versions=(2,),
)
def unused_security_scheme(ctx: RuleContext) -> Iterator[Diagnostic]:
    schemes = get(ctx, "components", "securitySchemes")
    if not isinstance(schemes, dict):
        return
    used: set[str] = set()
    requirements: list[Any] = []
    for _, server in iter_items(get(ctx, "servers")):
        requirements += as_list(as_dict(ctx.deref(server)).get("security"))
    for _, op in v2_operations(ctx, components=False):
        requirements += as_list(op.get("security"))
    for requirement in requirements:
        used.update(as_dict(requirement))
    for name in schemes:
        if name not in used:
            yield ctx.report(
                f'Potentially unused security scheme "{name}": no server or operation requires it.',
                ("components", "securitySchemes", name),
                follow_refs=False,
            )


# -- schema defaults and examples ------------------------------------------------------------------------
def _schema_targets(ctx: RuleContext) -> Iterator[Path]:
    """The schemas whose ``default`` and ``examples`` the parser checks (top level only, as it does)."""
    for name, _ in iter_items(get(ctx, "components", "schemas")):
        yield ("components", "schemas", name)
    if ctx.major == 2:
        for base in (("channels",), ("components", "channels")):
            for cname, channel in iter_items(get(ctx, *base)):
                for pname, _ in iter_items(as_dict(ctx.deref(channel)).get("parameters")):
                    yield (*base, cname, "parameters", pname, "schema")
        for name, _ in iter_items(get(ctx, "components", "parameters")):
            yield ("components", "parameters", name, "schema")
        messages: list[tuple[Path, dict[str, Any]]] = [(path, m) for path, m in v2_messages(ctx) if "oneOf" not in path]
    else:
        messages = list(v3_messages(ctx))
    for name, trait in iter_items(get(ctx, "components", "messageTraits")):
        trait = ctx.deref(trait)
        if isinstance(trait, dict):
            messages.append((("components", "messageTraits", name), trait))
    for path, message in messages:
        if "payload" not in message:
            continue
        fmt = message.get("schemaFormat")
        if ctx.major == 2:
            if fmt is None:  # the parser skips any message with an explicit schemaFormat
                yield (*path, "payload")
            continue
        payload = ctx.deref(message["payload"])
        if isinstance(payload, dict) and "schemaFormat" in payload and "schema" in payload:
            if isinstance(payload["schemaFormat"], str) and _is_asyncapi_format(payload["schemaFormat"]):
                yield (*path, "payload", "schema")
        else:
            yield (*path, "payload")


def _schema_values(ctx: RuleContext, keyword: str) -> Iterator[Diagnostic]:
    seen: set[int] = set()
    for path in _schema_targets(ctx):
        node = as_dict(get(ctx, *path[:-1])).get(str(path[-1]))
        schema = ctx.deref(node)
        if not isinstance(schema, dict) or keyword not in schema or id(schema) in seen:
            continue
        seen.add(id(schema))
        if keyword == "default":
            values: list[tuple[Path, Any]] = [(("default",), schema["default"])]
        else:
            values = [(("examples", i), v) for i, v in enumerate(as_list(schema["examples"]))]
        if not values:
            continue
        try:
            validator = compile_schema(bundle_schema(ctx.document, node))
        except (ValueError, RecursionError):
            continue  # a schema that does not compile is validation's finding
        for where, value in values:
            for error in validator.iter_errors(plain_data(ctx.deref(value))):
                inner, text = explain_schema_error(error)
                label = "default" if keyword == "default" else f"example {where[-1]}"
                yield ctx.report(
                    f"The {label} does not match its schema{' at ' + dotted(inner) if inner else ''}: {text}",
                    (*path, *where, *inner),
                )


@rule(
    "asyncapi2-schema-default",
    severity="error",
    description="Default must be valid against its defined schema.",
    tags=SPECTRAL,
    versions=(2,),
)
def schema_default_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _schema_values(ctx, "default")


@rule(
    "asyncapi2-schema-examples",
    severity="error",
    description="Examples must be valid against their defined schema.",
    tags=SPECTRAL,
    versions=(2,),
)
def schema_examples_v2(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _schema_values(ctx, "examples")


@rule(
    "asyncapi3-schema-default",
    severity="error",
    description="Default must be valid against its defined schema.",
    tags=SPECTRAL,
    versions=(3,),
)
def schema_default_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _schema_values(ctx, "default")


@rule(
    "asyncapi3-schema-examples",
    severity="error",
    description="Examples must be valid against their defined schema.",
    tags=SPECTRAL,
    versions=(3,),
)
def schema_examples_v3(ctx: RuleContext) -> Iterator[Diagnostic]:
    return _schema_values(ctx, "examples")
