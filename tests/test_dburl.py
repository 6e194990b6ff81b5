"""Database URLs, read the same way by the broker, the event store, projections, the outbox and the CLI."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tidings.dburl import postgres_dsn, sqlite_file
from tidings.errors import UsageError
from tidings.eventstore.projection import target_from_url
from tidings.eventstore.urls import store_from_url


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///events.db", "events.db"),
        ("sqlite:////var/lib/events.db", "/var/lib/events.db"),
        ("sqlite:///my%20events.db", "my events.db"),
        ("sqlite://host/events.db", None),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:events.db", None),
    ],
)
def test_sqlite_file(url: str, path: str | None) -> None:
    assert sqlite_file(urlsplit(url)) == path


def test_postgres_dsn_takes_out_only_its_option_and_keeps_the_rest_encoded() -> None:
    url = "postgres://app:p%40ss@db:5432/shop?schema=es&options=-c%20search_path%3Da%26b&sslmode=require"
    dsn, schema = postgres_dsn(urlsplit(url), "schema")
    assert schema == "es"
    assert dsn == "postgresql://app:p%40ss@db:5432/shop?options=-c%20search_path%3Da%26b&sslmode=require"
    assert postgres_dsn(urlsplit("postgresql://db/shop"), "schema") == ("postgresql://db/shop", None)


def test_the_store_and_the_read_model_read_urls_alike() -> None:
    store = store_from_url("postgresql+psycopg://db/shop?schema=es&sslmode=require")
    assert (store.dsn, store.schema) == ("postgresql://db/shop?sslmode=require", "es")  # type: ignore[attr-defined]
    target = target_from_url("postgresql+psycopg://db/shop?schema=es&sslmode=require")
    assert (target.dsn, target.schema) == ("postgresql://db/shop?sslmode=require", "es")  # type: ignore[attr-defined]
    for read in (store_from_url, target_from_url):
        with pytest.raises(UsageError, match="is a file"):
            read("sqlite:///:memory:")
