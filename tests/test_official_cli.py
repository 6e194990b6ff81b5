"""Differential test: our verdict against the official AsyncAPI CLI's on documents we break on purpose.

The corpus test compares verdicts on real documents, which are almost all valid; this one makes sure we
also agree on *invalid* documents, one broken rule at a time, in both major versions. The official CLI
(@asyncapi/cli 6.2.0 on Node 24) is installed from npm into a cache folder by
``benchmarks/official_cli.py``, the same peer the benchmark measures (about a minute the first time).
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchmarks.official_cli import OfficialCli

from tidings.asyncapi import check_file

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "user-service.asyncapi.yaml"

V3: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "Orders", "version": "1.0.0"},
    "servers": {"prod": {"host": "broker.example.com", "protocol": "amqp"}},
    "channels": {
        "orderPlaced": {
            "address": "order.placed",
            "messages": {
                "OrderPlaced": {
                    "payload": {
                        "type": "object",
                        "properties": {"order_id": {"type": "integer"}},
                        "required": ["order_id"],
                    }
                }
            },
        }
    },
    "operations": {
        "sendOrderPlaced": {
            "action": "send",
            "channel": {"$ref": "#/channels/orderPlaced"},
            "messages": [{"$ref": "#/channels/orderPlaced/messages/OrderPlaced"}],
        }
    },
}

Mutation = Callable[[dict[str, Any]], None]


def _seed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SEED.read_text())
    return data


def _set(path: list[str], value: Any) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _delete(path: list[str]) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


CASES: list[tuple[str, Callable[[], dict[str, Any]], Mutation | None]] = [
    ("v2-seed-valid", _seed, None),
    ("v2-missing-title", _seed, _delete(["info", "title"])),
    ("v2-unknown-field", _seed, _set(["info", "colour"], "blue")),
    ("v2-server-no-protocol", _seed, _delete(["servers", "production", "protocol"])),
    ("v2-bad-ref", _seed, _set(["channels", "user.created", "publish", "message"], {"$ref": "#/nope"})),
    ("v2-security-undeclared", _seed, _set(["servers", "production", "security"], [{"token": []}])),
    ("v2-duplicate-operation-id", _seed, _set(["channels", "user.updated", "publish", "operationId"], "onUserCreated")),
    ("v2-undeclared-parameter", _seed, _set(["channels", "user.{id}.renamed"], {"publish": {"message": {}}})),
    (
        "v2-example-mismatch",
        _seed,
        _set(["components", "messages", "UserDeleted", "examples"], [{"payload": {"user_id": "seven"}}]),
    ),
    ("v2-server-variable-undeclared", _seed, _set(["servers", "production", "url"], "{host}:9092")),
    (
        "v2-tags-on-2.2-server",
        _seed,
        lambda d: (d.update(asyncapi="2.2.0"), d["servers"]["production"].update(tags=[{"name": "x"}])),
    ),
    ("v2-unsupported-version", _seed, _set(["asyncapi"], "1.2.0")),
    (
        "v2-undeclared-parameter-with-map",
        _seed,
        _set(
            ["channels", "user.{id}.renamed"],
            {"parameters": {"other": {"schema": {"type": "string"}}}, "publish": {"message": {}}},
        ),
    ),
    ("v2-server-variable-missing-from-map", _seed, _set(["servers", "production", "url"], "{host}:{port}")),
    (
        "v2-server-variables-partial",
        _seed,
        lambda d: d["servers"]["production"].update(url="{host}:{port}", variables={"host": {"default": "localhost"}}),
    ),
    (
        "v2-variable-default-not-in-enum",
        _seed,
        lambda d: d["servers"]["production"].update(
            url="{host}:9092", variables={"host": {"default": "a", "enum": ["b", "c"]}}
        ),
    ),
    ("v2-channel-unknown-server", _seed, _set(["channels", "user.created", "servers"], ["staging"])),
    ("v2-json-schema-bad-type", _seed, _set(["components", "schemas", "UserDeletedPayload", "type"], "obj")),
    ("v3-valid", lambda: copy.deepcopy(V3), None),
    ("v3-bad-action", lambda: copy.deepcopy(V3), _set(["operations", "sendOrderPlaced", "action"], "publish")),
    ("v3-missing-channel", lambda: copy.deepcopy(V3), _delete(["operations", "sendOrderPlaced", "channel"])),
    (
        "v3-dangling-channel-ref",
        lambda: copy.deepcopy(V3),
        _set(["operations", "sendOrderPlaced", "channel"], {"$ref": "#/channels/nope"}),
    ),
    ("v3-server-no-host", lambda: copy.deepcopy(V3), _delete(["servers", "prod", "host"])),
    ("v3-unknown-field", lambda: copy.deepcopy(V3), _set(["channels", "orderPlaced", "topic"], "x")),
    (
        "v3-address-parameter-with-map",
        lambda: copy.deepcopy(V3),
        lambda d: d["channels"]["orderPlaced"].update(address="order.{id}.placed", parameters={"other": {}}),
    ),
    (
        "v3-message-not-in-channel",
        lambda: copy.deepcopy(V3),
        lambda d: (
            d.setdefault("components", {}).update(messages={"Other": {"payload": {"type": "string"}}}),
            d["operations"]["sendOrderPlaced"].update(messages=[{"$ref": "#/components/messages/Other"}]),
        ),
    ),
]

#: cases where we deliberately say "invalid" and the official CLI says "valid", with the reason
DELIBERATE: dict[str, str] = {}


@pytest.fixture(scope="module")
def cli(official_asyncapi_cli: OfficialCli) -> OfficialCli:
    return official_asyncapi_cli


@pytest.mark.official_cli
def test_verdicts_agree_with_official_cli(cli: OfficialCli, tmp_path: Path) -> None:
    files: list[tuple[str, Path]] = []
    for name, make, mutate in CASES:
        doc = make()
        if mutate is not None:
            mutate(doc)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append((name, path))

    def official(path: Path) -> int:
        done = subprocess.run(cli.validate_argv(path), capture_output=True, timeout=120, env=cli.env(), check=False)
        return done.returncode

    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(lambda item: official(item[1]), files))

    disagreements = []
    for (name, path), theirs in zip(files, verdicts, strict=True):
        ours = 0 if check_file(path).valid else 1
        if ours != theirs and name not in DELIBERATE:
            disagreements.append(f"{name}: tidings {ours}, official {theirs}")
    assert not disagreements, "\n".join(disagreements)
    # the cases are not all trivially valid or invalid
    assert sorted(set(verdicts)) == [0, 1]
