"""Broker URLs from a document's ``servers``: 2.x url, 3.x host + pathname, variables, credentials kept out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidings.app import App
from tidings.asyncapi import load_document
from tidings.asyncapi.model import build_model
from tidings.brokers.servers import broker_url_for_server
from tidings.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "user-service.asyncapi.yaml"

V3 = """
asyncapi: 3.0.0
info: {title: t, version: 1.0.0}
servers:
  mqtt: {host: mqtt.example.com, protocol: mqtt}
  rabbit:
    host: 'rabbit.example.com:{port}'
    pathname: /orders
    protocol: amqp
    variables:
      port: {enum: ['5672', '5671']}
  kafka-tls: {host: 'k1.example.com:9093', protocol: kafka-secure}
  leaky: {host: 'bob:hunter2@rabbit.example.com', protocol: amqp}
"""


def model_of(write_yaml, text: str):  # type: ignore[no-untyped-def]
    return build_model(load_document(write_yaml("doc.yaml", text)))


def test_the_guides_2x_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDINGS_BROKER_USERNAME", raising=False)
    model = build_model(load_document(SEED))
    assert broker_url_for_server(model) == "kafka://kafka.example.com:9092"
    assert broker_url_for_server(model, "production") == "kafka://kafka.example.com:9092"


def test_3x_host_pathname_variables_and_protocols(write_yaml, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TIDINGS_BROKER_USERNAME", raising=False)
    model = model_of(write_yaml, V3)
    assert broker_url_for_server(model) == "amqp://rabbit.example.com:5672/orders"  # the first tidings speaks
    assert broker_url_for_server(model, "rabbit", variables={"port": "5671"}) == "amqp://rabbit.example.com:5671/orders"
    assert broker_url_for_server(model, "kafka-tls") == "kafka+ssl://k1.example.com:9093"
    url = broker_url_for_server(model, "rabbit", username="svc", password="p@ss/word")
    assert url == "amqp://svc:p%40ss%2Fword@rabbit.example.com:5672/orders"


def test_credentials_come_from_the_environment_never_the_document(write_yaml, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model = model_of(write_yaml, V3)
    monkeypatch.setenv("TIDINGS_BROKER_USERNAME", "svc")
    monkeypatch.setenv("TIDINGS_BROKER_PASSWORD", "s3cret")
    assert broker_url_for_server(model, "rabbit").startswith("amqp://svc:s3cret@")
    with pytest.raises(UsageError, match="credentials in its url") as caught:
        broker_url_for_server(model, "leaky")
    assert "hunter2" not in str(caught.value)


def test_unknown_server_and_unsupported_protocol(write_yaml) -> None:  # type: ignore[no-untyped-def]
    model = model_of(write_yaml, V3)
    with pytest.raises(UsageError, match=r"no server 'nope'.*kafka-tls"):
        broker_url_for_server(model, "nope")
    with pytest.raises(UsageError, match="speaks 'mqtt'"):
        broker_url_for_server(model, "mqtt")


def test_an_app_takes_its_broker_from_the_documents_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_BROKER_USERNAME", "svc")
    monkeypatch.setenv("TIDINGS_BROKER_PASSWORD", "s3cret")
    app = App.from_asyncapi(SEED, server="production")
    assert type(app.broker).__name__ == "KafkaBroker"
    assert app.broker.url.startswith("kafka+sasl://svc")  # credentials travel over SASL
    assert "s3cret" not in app.broker.url
    assert App.from_asyncapi(os.fspath(SEED)).broker.url == "memory://"


def test_a_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tidings.brokers.base import broker_from_url

    monkeypatch.delitem(sys.modules, "tidings.brokers.rabbitmq", raising=False)
    monkeypatch.setitem(sys.modules, "aio_pika", None)  # as if `pip install tidings` without the extra
    with pytest.raises(UsageError, match=r"pip install 'tidings\[rabbitmq\]'") as caught:
        broker_from_url("amqp://guest:s3cret@127.0.0.1:5672/")
    assert "s3cret" not in str(caught.value)
