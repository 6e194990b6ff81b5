"""Keeping secrets out of everything tidings prints, logs or writes.

A broker URL like ``amqp://app:s3cret@rabbit:5672/`` carries a password; anywhere such a URL is shown
(errors, diagnostics, metrics labels, generated documents) it goes through :func:`redact_url` first.
"""

from __future__ import annotations

import re

# scheme://user:password@host  or  scheme://token@host  (no parsing: must also work on templates
# such as "{user}:{password}@{host}" and on strings that are not valid URLs)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::[^@/\s]*)?@")
# a secret word anywhere in a parameter's name: password=, sasl.password=, ssl_key_password=, token_file=...
_SECRET_PARAMS = re.compile(
    r"(?i)([?&][\w.]*(?:password|passwd|pwd|token|secret|access_key|api_key|apikey)[\w.]*=)[^&#\s]*"
)


# libpq's key/value form of a connection string: host=db password=s3cret, or password='it\'s quoted'
# (a word of its own, after the start or a space: in a URL's query the secret parameters above take it)
_KEY_VALUE_PASSWORD = re.compile(r"(?i)((?:^|(?<=\s))password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redact_url(text: str) -> str:
    """``text`` with any password in a URL's userinfo, secret-looking query parameters, and a ``password=``
    of a key/value connection string (PostgreSQL's ``host=db password=...``) masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["user"] else f"{m['scheme']}***@", text)
    text = _SECRET_PARAMS.sub(r"\1***", text)
    return _KEY_VALUE_PASSWORD.sub(r"\1***", text)


__all__ = ["redact_url"]
