"""Secrets in documents (passwords in server URLs) never reach the output, in any format."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import invoke

from tidings.redact import redact_url

DOC = """\
asyncapi: 2.6.0
info:
  title: Secrets
  version: 1.0.0
servers:
  prod:
    url: amqp://admin:hunter2@rabbit:5672/{vhost}
    protocol: amqp
    variables:
      other: {default: x}
channels: {}
"""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        # PostgreSQL's key/value connection strings, quoted or not
        ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password='it\\'s a secret' port=5432", "host=db password=*** port=5432"),
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("https://h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
        ("kafka.example.com:9092", "kafka.example.com:9092"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_password_in_server_url_is_never_printed(tmp_path: Path, fmt: str) -> None:
    doc = tmp_path / "secrets.yaml"
    doc.write_text(DOC)
    result = invoke(["validate", "--format", fmt, str(doc)])
    assert result.exit_code == 1, result.output
    assert "server-variables" in result.output
    assert "hunter2" not in result.output
    assert "admin:***@rabbit" in result.output


def test_secret_parameters_with_prefixes_are_masked() -> None:
    url = "kafka+sasl_ssl://bob@k1:9093/?ssl_key_password=hunter2&sasl.password=hunter3&token_file=h4&x=1"
    redacted = redact_url(url)
    assert "hunter2" not in redacted
    assert "hunter3" not in redacted
    assert "h4" not in redacted
    assert "x=1" in redacted
