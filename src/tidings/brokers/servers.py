"""A broker URL from the ``servers`` section of an AsyncAPI document (2.x ``url``, 3.x ``host`` + ``pathname``).

The document says where the broker is and which protocol it speaks; it must not say the password. So
credentials come from the caller (or the environment: ``TIDINGS_BROKER_USERNAME`` and
``TIDINGS_BROKER_PASSWORD``), never from the document, and the URL built here is only ever shown redacted::

    url = broker_url_for_server(model, "production")          # kafka://kafka.example.com:9092
    app = App.from_asyncapi("asyncapi.yaml", server="production")

Server variables (``{port}``) take the value given by the caller, else the variable's ``default``, else its
first ``enum`` value. Protocols: ``amqp``/``amqps`` (RabbitMQ), ``kafka``/``kafka-secure`` (TLS), plus the
URL schemes tidings itself knows (``sqlite``, ``memory``), for documents of local set-ups.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from tidings.asyncapi.model import Model, Server
from tidings.errors import UsageError

#: AsyncAPI protocol -> tidings URL scheme
_SCHEMES = {
    "amqp": "amqp",
    "amqps": "amqps",
    "kafka": "kafka",
    "kafka-secure": "kafka+ssl",
    "sqlite": "sqlite",
    "memory": "memory",
}
_VARIABLE = re.compile(r"\{([^{}]+)\}")


def choose_server(model: Model, name: str | None = None) -> Server:
    """The server called ``name``; without a name, the first one whose protocol tidings can speak."""
    if name is not None:
        try:
            return model.servers[name]
        except KeyError:
            known = ", ".join(sorted(model.servers)) or "none"
            raise UsageError(f"the document has no server {name!r} (its servers: {known})") from None
    for server in model.servers.values():
        if server.protocol.lower() in _SCHEMES:
            return server
    protocols = ", ".join(sorted({s.protocol for s in model.servers.values()})) or "no servers at all"
    raise UsageError(f"no server in the document speaks a protocol tidings supports ({protocols})")


def broker_url_for_server(
    model: Model,
    name: str | None = None,
    *,
    variables: Mapping[str, str] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """The broker URL for a server of the document (see the module documentation)."""
    server = choose_server(model, name)
    protocol = server.protocol.lower()
    scheme = _SCHEMES.get(protocol)
    if scheme is None:
        raise UsageError(
            f"server {server.name!r} speaks {server.protocol!r}, which tidings has no broker for "
            f"(supported: {', '.join(sorted(_SCHEMES))})"
        )
    address = _substitute(server, variables or {})
    if "://" in address:  # 2.x documents often write the scheme into the url
        address = address.split("://", 1)[1]
    parts = urlsplit(f"//{address}")
    if parts.username or parts.password:
        raise UsageError(
            f"server {server.name!r} has credentials in its url: a document must not carry them; "
            "remove them and pass username/password (or set TIDINGS_BROKER_USERNAME/TIDINGS_BROKER_PASSWORD)"
        )
    username = username if username is not None else os.environ.get("TIDINGS_BROKER_USERNAME")
    password = password if password is not None else os.environ.get("TIDINGS_BROKER_PASSWORD")
    userinfo = ""
    if username:
        userinfo = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
        # Kafka carries credentials only over SASL: the scheme says so (SASL over TLS for kafka-secure)
        scheme = {"kafka": "kafka+sasl", "kafka+ssl": "kafka+sasl_ssl"}.get(scheme, scheme)
    return f"{scheme}://{userinfo}{address}"


def _substitute(server: Server, given: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in given:
            return given[name]
        spec = server.variables.get(name, {})
        if "default" in spec:
            return str(spec["default"])
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            return str(enum[0])
        raise UsageError(f"server {server.name!r}: variable {{{name}}} has no value and no default: pass it")

    return _VARIABLE.sub(value, server.url)


__all__ = ["broker_url_for_server", "choose_server"]
