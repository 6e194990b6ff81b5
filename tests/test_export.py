"""Code-first AsyncAPI: ``App.describe()`` -> ``render()`` -> a document our validator and the official CLI accept.

The app is the guide's User Service: ``user-service`` publishes user.created / user.updated / user.deleted,
the email service handles user.created, an audit log takes every ``user.*`` event, and a directory
listens on the parameterized channel ``user.{userId}.renamed``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from benchmarks.official_cli import OfficialCli
from pydantic import BaseModel, Field
from tests.cli import invoke

from tidings.app import App, ContractError
from tidings.app.describe import channel_address
from tidings.asyncapi import check_file
from tidings.asyncapi.diagnostics import Severity
from tidings.asyncapi.export import (
    AppDescription,
    ChannelDescription,
    MessageDescription,
    OperationDescription,
    ServerDescription,
    dump,
    render,
    render_yaml,
    split_server_url,
    to_draft07,
)
from tidings.asyncapi.schemas import compile_schema
from tidings.brokers.memory import MemoryBroker
from tidings.errors import UsageError
from tidings.events.codec import Placement, encode
from tidings.events.envelope import new_envelope
from tidings.events.event import Event
from tidings.testing.harness import TestApp

Email = Annotated[str, Field(json_schema_extra={"format": "email"})]
SECRET_URL = "amqp://app:s3cret@rabbit:5672/"


class UserCreated(Event, type="user.created", version="1.0"):
    """A user signed up."""

    user_id: int
    email: Email
    name: str


class UserUpdated(Event, type="user.updated", version="1.0"):
    user_id: int
    changes: dict[str, Any]


class UserDeleted(Event, type="user.deleted", version="1.0"):
    user_id: int


class Address(BaseModel):
    street: str
    zip_code: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"]


class Dog(BaseModel):
    kind: Literal["dog"]


class UserRenamed(Event, type="user.renamed", version="2.0"):
    """A user changed their name.

    Sent on user.{userId}.renamed."""

    user_id: int
    old_name: str = Field(examples=["Jo"])
    new_name: str = Field(min_length=2)
    address: Address = Field(description="where the user lives")
    previous_address: Address | None = None
    pair: tuple[int, str]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    rank: int = Field(ge=3, le=10, multiple_of=3)


def user_service(placement: Placement = Placement.PAYLOAD, broker: MemoryBroker | str = "memory://") -> App:
    app = App(broker, name="user-service", placement=placement)
    app.publisher(UserCreated, UserUpdated, UserDeleted)

    @app.subscriber("user.created", group="email-service")
    async def send_welcome(event: UserCreated) -> None: ...

    @app.subscriber("user.*", group="audit-log")
    async def log_event(event: dict[str, Any]) -> None: ...

    @app.subscriber("user.{userId}.renamed", group="user-directory")
    async def on_renamed(event: UserRenamed) -> None: ...

    return app


def write(tmp_path: Path, name: str, document: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(dump(document), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    result = check_file(path)
    assert result.document is not None, result.diagnostics
    return [f"{d.code}: {d.message} at {d.path}" for d in result.diagnostics if d.severity == Severity.ERROR]


def validator(document: dict[str, Any], ref: str) -> Any:
    """A compiled validator for ``ref`` (``#/components/schemas/X``) inside ``document``."""
    return compile_schema({"allOf": [{"$ref": ref}], "components": document["components"]})


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# -- the User Service, both versions ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.0", "2.6"])
@pytest.mark.parametrize("placement", list(Placement))
def test_the_user_service_document_is_valid(tmp_path: Path, version: str, placement: Placement) -> None:
    document = render(user_service(placement).describe(), version)
    assert document["asyncapi"] == {"3.0": "3.0.0", "2.6": "2.6.0"}[version]
    assert errors_of(write(tmp_path, "asyncapi.yaml", document)) == []


def test_3_0_channels_operations_and_parameters() -> None:
    doc = render(user_service().describe(), "3.0")
    channels = doc["channels"]
    assert {c["address"] for c in channels.values()} == {
        "user.created",
        "user.updated",
        "user.deleted",
        "user.{segment}",
        "user.{userId}.renamed",
    }
    renamed = channels["userUserIdRenamed"]
    assert list(renamed["parameters"]) == ["userId"]
    assert list(renamed["messages"]) == ["UserRenamed"]
    # the audit log of user.* takes every user event the app knows
    pattern = channels["userSegment"]
    assert list(pattern["parameters"]) == ["segment"]
    assert "user.*" in pattern["parameters"]["segment"]["description"]
    assert list(pattern["messages"]) == ["UserCreated", "UserUpdated", "UserDeleted"]
    operations = doc["operations"]
    assert list(operations) == [
        "sendUserCreated",
        "sendUserUpdated",
        "sendUserDeleted",
        "receiveUserCreated",
        "receiveUserSegment",
        "receiveUserRenamed",
    ]
    assert operations["sendUserCreated"]["action"] == "send"
    assert operations["receiveUserCreated"] == {
        "action": "receive",
        "channel": {"$ref": "#/channels/userCreated"},
        "summary": "email-service handles user.created with send_welcome",
        "description": "Consumer group email-service receives the events of user.created and handles them with "
        "send_welcome.",
        "messages": [{"$ref": "#/channels/userCreated/messages/UserCreated"}],
    }
    assert doc["servers"] == {"default": {"host": "", "protocol": "memory", "description": "the user-service broker"}}
    assert set(doc["components"]["messages"]) == {"UserCreated", "UserUpdated", "UserDeleted", "UserRenamed"}
    assert doc["components"]["messages"]["UserCreated"]["summary"] == "A user signed up."
    assert doc["components"]["messages"]["UserRenamed"]["summary"] == "A user changed their name."


def test_2_6_inverts_the_operations() -> None:
    """2.x speaks for the client: what the app sends is a `subscribe` operation, what it receives `publish`."""
    doc = render(user_service().describe(), "2.6")
    created = doc["channels"]["user.created"]
    assert created["subscribe"]["operationId"] == "sendUserCreated"
    assert created["publish"]["operationId"] == "receiveUserCreated"
    assert created["subscribe"]["message"] == {"$ref": "#/components/messages/UserCreated"}
    assert "publish" not in doc["channels"]["user.updated"]
    pattern = doc["channels"]["user.{segment}"]
    assert pattern["publish"]["message"] == {
        "oneOf": [{"$ref": f"#/components/messages/{name}"} for name in ("UserCreated", "UserUpdated", "UserDeleted")]
    }
    assert doc["channels"]["user.{userId}.renamed"]["parameters"] == {
        "userId": {"description": "the userId in the address", "schema": {"type": "string"}}
    }
    messages = doc["components"]["messages"]
    # used once: a messageId; used in several operations: none (the official tools would count it twice)
    assert messages["UserRenamed"]["messageId"] == "UserRenamed"
    assert "messageId" not in messages["UserCreated"]
    assert all(m["name"] == key for key, m in messages.items())
    operation_ids = [
        op["operationId"] for c in doc["channels"].values() for k, op in c.items() if k in ("publish", "subscribe")
    ]
    assert len(operation_ids) == len(set(operation_ids)) == 6


def test_several_receivers_of_one_channel() -> None:
    app = user_service()

    @app.subscriber("user.created", group="crm")
    async def sync_crm(event: UserCreated) -> None: ...

    v3 = render(app.describe(), "3.0")
    assert {"receiveUserCreated", "receiveUserCreated2"} <= set(v3["operations"])
    v2 = render(app.describe(), "2.6")  # one `publish` operation per 2.x channel: the receivers share it
    publish = v2["channels"]["user.created"]["publish"]
    assert publish["operationId"] == "receiveUserCreated"
    assert "email-service" in publish["summary"]
    assert "crm" in publish["summary"]


# -- payload schemas and examples -------------------------------------------------------------------


def test_payload_placement_puts_the_envelope_in_the_payload_schema() -> None:
    doc = render(user_service().describe(), "3.0")
    schema = doc["components"]["schemas"]["UserCreatedPayload"]
    props = schema["properties"]
    assert props["event_id"]["format"] == "uuid"
    assert props["event_type"]["const"] == "user.created"
    assert props["timestamp"]["format"] == "date-time"
    assert props["email"]["format"] == "email"
    assert {"version", "source", "correlation_id", "causation_id", "content_type"} <= set(props)
    assert schema["required"] == ["event_id", "event_type", "timestamp", "version", "user_id", "email", "name"]


def test_headers_placement_describes_the_cloudevents_headers() -> None:
    doc = render(user_service(Placement.HEADERS).describe(), "3.0")
    message = doc["components"]["messages"]["UserCreated"]
    assert message["headers"] == {"$ref": "#/components/schemas/UserCreatedHeaders"}
    headers = doc["components"]["schemas"]["UserCreatedHeaders"]
    assert headers["type"] == "object"
    assert headers["properties"]["ce_id"]["format"] == "uuid"
    assert headers["properties"]["ce_type"]["const"] == "user.created"
    assert headers["properties"]["ce_time"]["format"] == "date-time"
    assert set(headers["required"]) >= {"ce_specversion", "ce_id", "ce_type", "ce_source"}
    payload = doc["components"]["schemas"]["UserCreatedPayload"]
    assert set(payload["properties"]) == {"user_id", "email", "name"}  # the event's own fields only
    [example] = message["examples"]
    assert example["headers"]["ce_type"] == "user.created"


def test_cloudevents_placement_wraps_the_event_in_data() -> None:
    doc = render(user_service(Placement.CLOUDEVENTS).describe(), "3.0")
    assert doc["defaultContentType"] == "application/cloudevents+json"
    message = doc["components"]["messages"]["UserRenamed"]
    assert message["contentType"] == "application/cloudevents+json"
    payload = doc["components"]["schemas"]["UserRenamedPayload"]
    assert payload["properties"]["type"]["const"] == "user.renamed"
    assert payload["properties"]["data"]["properties"]["address"] == {
        "allOf": [{"$ref": "#/components/schemas/Address"}],
        "description": "where the user lives",
    }


@pytest.mark.parametrize("placement", list(Placement))
def test_what_the_app_sends_matches_its_own_document(placement: Placement) -> None:
    """The real encoder's output (body and headers) validates against the generated schemas."""
    doc = render(user_service(placement).describe(), "3.0")
    messages = doc["components"]["messages"]
    event = UserCreated(user_id=7, email="jo@example.com", name="Jo")
    envelope = new_envelope("user.created", "1.0", source="user-service")
    body, headers = encode(envelope, event.model_dump(mode="json"), placement)
    payload = validator(doc, messages["UserCreated"]["payload"]["$ref"])
    assert payload.is_valid(json.loads(body)), list(payload.iter_errors(json.loads(body)))
    if placement is Placement.HEADERS:
        header_schema = validator(doc, messages["UserCreated"]["headers"]["$ref"])
        assert header_schema.is_valid(headers), list(header_schema.iter_errors(headers))
    # ... and a wrong e-mail address does not
    bad, _ = encode(envelope, {**event.model_dump(mode="json"), "email": "nope"}, placement)
    assert not payload.is_valid(json.loads(bad))


@pytest.mark.parametrize("version", ["3.0", "2.6"])
@pytest.mark.parametrize("placement", list(Placement))
def test_every_message_has_an_example_valid_against_its_schemas(version: str, placement: Placement) -> None:
    doc = render(user_service(placement).describe(), version)
    for name, message in doc["components"]["messages"].items():
        [example] = message["examples"]
        payload = validator(doc, message["payload"]["$ref"])
        assert payload.is_valid(example["payload"]), (name, list(payload.iter_errors(example["payload"])))
        if "headers" in message:
            headers = validator(doc, message["headers"]["$ref"])
            assert headers.is_valid(example["headers"]), name
    renamed = doc["components"]["messages"]["UserRenamed"]["examples"][0]["payload"]
    data = renamed.get("data", renamed)
    assert data["old_name"] == "Jo"  # a field's own example is used
    assert data["rank"] in (3, 6, 9)  # bounds are respected
    assert len(data["new_name"]) >= 2


def test_pydantic_schemas_become_draft_07(tmp_path: Path) -> None:
    doc = render(user_service().describe(), "3.0")
    schemas = doc["components"]["schemas"]
    for key, value in walk(doc):
        assert key not in ("$defs", "prefixItems", "$schema"), key
        if key == "discriminator":
            assert isinstance(value, str)
        if key == "$ref":
            assert value.startswith(("#/components/", "#/channels/")), value
            if value.startswith("#/components/schemas/"):
                assert value.removeprefix("#/components/schemas/") in schemas
    props = schemas["UserRenamedPayload"]["properties"]
    assert props["pair"]["items"] == [{"type": "integer"}, {"type": "string"}]
    assert props["previous_address"]["anyOf"] == [{"$ref": "#/components/schemas/Address"}, {"type": "null"}]
    assert schemas["Address"]["properties"]["zip_code"]["type"] == ["string", "null"]
    assert props["pet"]["oneOf"] == [{"$ref": "#/components/schemas/Cat"}, {"$ref": "#/components/schemas/Dog"}]


def test_to_draft07_keyword_by_keyword() -> None:
    assert to_draft07({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None}) == {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
    }
    # an enum (or a $ref) cannot take "null" into its type: left as anyOf, which draft-07 has too
    nullable_enum = {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}]}
    assert to_draft07(nullable_enum) == nullable_enum
    assert to_draft07({"$ref": "#/$defs/A", "description": "d"}, lambda r: r.replace("$defs", "x")) == {
        "allOf": [{"$ref": "#/x/A"}],
        "description": "d",
    }
    assert to_draft07({"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}}) == {
        "type": "array",
        "additionalItems": {"type": "string"},
        "items": [{"type": "integer"}],
    }
    assert to_draft07({"dependentRequired": {"a": ["b"]}, "unevaluatedProperties": False}) == {
        "dependencies": {"a": ["b"]}
    }
    # data is not a schema: a property called "$ref" and a default holding "prefixItems" stay as they are
    odd = {"properties": {"$ref": {"type": "string"}}, "default": {"prefixItems": 1}}
    assert to_draft07(odd) == odd


class _AddressV1(BaseModel):
    line: str


class _AddressV2(BaseModel):
    street: str
    city: str


_AddressV1.__name__ = _AddressV2.__name__ = "Address"


class OrderPlaced(Event, type="order.placed"):
    ship_to: _AddressV1


class OrderShipped(Event, type="order.shipped"):
    ship_to: _AddressV2
    bill_to: _AddressV2


def test_two_different_nested_models_with_one_name_both_survive(tmp_path: Path) -> None:
    app = App(name="orders")
    app.publisher(OrderPlaced, OrderShipped)
    doc = render(app.describe(), "3.0")
    schemas = doc["components"]["schemas"]
    placed = schemas["OrderPlacedPayload"]["properties"]["ship_to"]["$ref"]
    shipped = schemas["OrderShippedPayload"]["properties"]["ship_to"]["$ref"]
    assert placed != shipped
    assert schemas[placed.rsplit("/", 1)[1]]["required"] == ["line"]
    assert schemas[shipped.rsplit("/", 1)[1]]["required"] == ["street", "city"]
    assert errors_of(write(tmp_path, "orders.yaml", doc)) == []


def test_an_untyped_subscriber_with_no_known_events_gets_an_open_message(tmp_path: Path) -> None:
    app = App(name="auditor")

    @app.subscriber("orders.#", group="audit")
    async def audit(event: dict[str, Any]) -> None: ...

    doc = render(app.describe(), "3.0")
    [channel] = doc["channels"].values()
    assert channel["address"] == "orders.{rest}"
    [message] = doc["components"]["messages"].values()
    assert (
        "const"
        not in doc["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]["properties"]["event_type"]
    )
    assert errors_of(write(tmp_path, "auditor.yaml", doc)) == []


def test_channel_address_of_patterns() -> None:
    assert channel_address("user.created") == ("user.created", ())
    assert channel_address("user.{userId}.renamed") == ("user.{userId}.renamed", ())
    address, params = channel_address("user.*.{segment}.#")
    assert address == "user.{segment2}.{segment}.{rest}"
    assert [p.name for p in params] == ["segment2", "rest"]


# -- servers and secrets ----------------------------------------------------------------------------


def test_server_urls_lose_user_and_password() -> None:
    assert split_server_url(SECRET_URL) == ("rabbit:5672", "", "amqp")
    assert split_server_url("memory://") == ("", "", "memory")
    assert split_server_url("sqlite:///var/lib/events.db") == ("", "/var/lib/events.db", "sqlite")
    assert split_server_url("sqlite:////var/lib/events.db") == ("", "/var/lib/events.db", "sqlite")
    assert split_server_url("kafka://broker:9092") == ("broker:9092", "", "kafka")
    assert split_server_url("amqps://u:p@h:5671/vhost?password=x#frag") == ("h:5671", "/vhost", "amqps")


class LeakyBroker(MemoryBroker):
    """A broker that forgets to take the password out of its URL: the document must not repeat it."""

    @property
    def url(self) -> str:
        return SECRET_URL


@pytest.mark.parametrize("version", ["3.0", "2.6"])
def test_a_password_in_the_broker_url_never_reaches_the_document(tmp_path: Path, version: str) -> None:
    for description in (
        user_service(broker=LeakyBroker()).describe(),
        AppDescription("user-service", servers=(ServerDescription("production", SECRET_URL),)),
    ):
        document = render(description, version)
        text = dump(document)
        assert "s3cret" not in text
        assert "app:" not in text
        assert "***" not in text
        [server] = document["servers"].values()
        assert server["protocol"] == "amqp"
        assert server.get("host", server.get("url")) == "rabbit:5672"
        assert errors_of(write(tmp_path, "leaky.yaml", document)) == []


@pytest.mark.parametrize(
    ("url", "protocol", "host"),
    [
        ("kafka+sasl://bob:s3cret@k1:9092", "kafka", "k1:9092"),
        ("kafka+sasl_ssl://bob:s3cret@k1:9093", "kafka-secure", "k1:9093"),
        ("kafka+ssl://k1:9093", "kafka-secure", "k1:9093"),
        ("amqps://guest:s3cret@rabbit:5671/prod", "amqps", "rabbit:5671"),
    ],
)
def test_broker_url_schemes_become_asyncapi_protocols(tmp_path: Path, url: str, protocol: str, host: str) -> None:
    document = render(AppDescription("user-service", servers=(ServerDescription("production", url),)), "3.0")
    [server] = document["servers"].values()
    assert (server["protocol"], server["host"]) == (protocol, host)
    assert "s3cret" not in dump(document)
    assert errors_of(write(tmp_path, "servers.yaml", document)) == []


# -- the neutral description on its own ----------------------------------------------------------------


def test_render_refuses_what_it_cannot_write() -> None:
    message = MessageDescription("Ping", {"type": "object"})
    with pytest.raises(UsageError, match=r"choose 3\.0 or 2\.6"):
        render(AppDescription("x"), "3.1")
    with pytest.raises(UsageError, match="letters, digits"):
        render(AppDescription("x", messages=(MessageDescription("User Created", {}),)), "3.0")
    with pytest.raises(UsageError, match="unique"):
        render(AppDescription("x", messages=(message, message)), "3.0")
    with pytest.raises(UsageError, match="not described"):
        render(AppDescription("x", channels=(ChannelDescription("ping", ("Pong",)),), messages=(message,)), "3.0")
    with pytest.raises(UsageError, match="not described"):
        render(AppDescription("x", operations=(OperationDescription("send", "ping"),)), "3.0")


def test_a_given_example_is_used_when_valid_and_replaced_when_not() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    channel = ChannelDescription("ping", ("Ping",))

    def example_of(given: dict[str, Any]) -> Any:
        message = MessageDescription("Ping", schema, example=given)
        doc = render(AppDescription("x", channels=(channel,), messages=(message,)), "3.0")
        return doc["components"]["messages"]["Ping"]["examples"][0]["payload"]

    assert example_of({"n": 42}) == {"n": 42}
    assert example_of({"n": "forty-two"}) == {"n": 1}


def test_an_example_that_cannot_be_made_valid_is_left_out() -> None:
    schema = {"type": "string", "pattern": "^[0-9]{4}$"}  # no pattern-aware synthesis: rather no example
    message = MessageDescription("Code", schema)
    doc = render(AppDescription("x", messages=(message,)), "3.0")
    assert "examples" not in doc["components"]["messages"]["Code"]


def test_the_yaml_has_no_anchors() -> None:
    text = render_yaml(user_service().describe(), "2.6")
    assert text == dump(render(user_service().describe(), "2.6"))
    assert "&id" not in text
    assert "*id" not in text


# -- the generated document works as the app's contract -------------------------------------------------


async def test_the_generated_document_binds_as_a_contract(tmp_path: Path) -> None:
    path = write(tmp_path, "asyncapi.yaml", render(user_service().describe(), "3.0"))
    app = App("memory://", name="user-service", asyncapi=path)
    async with TestApp(app) as t:
        await t.publish(UserCreated(user_id=1, email="jo@example.com", name="Jo"))
        with pytest.raises(ContractError) as caught:
            await t.publish(UserCreated(user_id=2, email="not-an-email", name="Al"))
        assert len(t.broker.published) == 1
    assert caught.value.field == "email"


# -- the command line ---------------------------------------------------------------------------------

SERVICE_MODULE = """\
from typing import Any

from tidings.app import App
from tidings.events.event import Event


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


app = App("memory://", name="user-service")
app.publisher(UserCreated)


@app.subscriber("user.*", group="audit-log")
async def log_event(event: dict[str, Any]) -> None: ...


not_an_app = 42
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A folder holding a service module (a fresh module name per test), made the current folder."""
    module = "svc_" + re.sub(r"\W", "_", request.node.name)
    (tmp_path / f"{module}.py").write_text(SERVICE_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the current folder on it
    yield module
    sys.modules.pop(module, None)


def test_cli_writes_a_valid_document(project: str, tmp_path: Path) -> None:
    result = invoke(["asyncapi", f"{project}:app", "--spec-version", "2.6", "-o", "asyncapi.yaml"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stderr
    document = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert document["asyncapi"] == "2.6.0"
    assert errors_of(tmp_path / "asyncapi.yaml") == []
    assert invoke(["validate", "asyncapi.yaml"]).exit_code == 0


def test_cli_writes_json_to_stdout(project: str) -> None:
    result = invoke(["asyncapi", f"{project}:app", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["asyncapi"] == "3.0.0"
    assert list(document["operations"]) == ["sendUserCreated", "receiveUserCreated"]


def test_cli_json_by_file_name(project: str, tmp_path: Path) -> None:
    assert invoke(["asyncapi", f"{project}:app", "-o", "doc.json"]).exit_code == 0
    assert json.loads((tmp_path / "doc.json").read_text(encoding="utf-8"))["asyncapi"] == "3.0.0"


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("{m}", "APP must be module:attribute, e.g. main:app"),
        ("{m}:", "APP must be module:attribute"),
        ("no_such_module_here:app", "no module named 'no_such_module_here'"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:not_an_app", "is of type int, not a tidings App"),
        ("{m}:UserCreated", "is the class UserCreated, not a tidings App"),
    ],
)
def test_cli_usage_errors_are_one_line(project: str, app: str, message: str) -> None:
    result = invoke(["asyncapi", app.format(m=project)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_cli_as_a_process(project: str, tmp_path: Path) -> None:
    """``python -m tidings asyncapi`` imports the app from the current folder, as a user runs it."""
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "asyncapi", f"{project}:app", "-o", "out.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert errors_of(tmp_path / "out.yaml") == []


# -- the official AsyncAPI CLI ---------------------------------------------------------------------------


@pytest.mark.official_cli
def test_the_official_cli_finds_no_errors(official_asyncapi_cli: OfficialCli, tmp_path: Path) -> None:
    documents: list[tuple[str, dict[str, Any]]] = []
    for version in ("3.0", "2.6"):
        for placement in Placement:
            documents.append(
                (f"user-service-{placement}-{version}", render(user_service(placement).describe(), version))
            )
        leaky = AppDescription("user-service", servers=(ServerDescription("production", SECRET_URL),))
        documents.append((f"secret-url-{version}", render(leaky, version)))
    files = [write(tmp_path, f"{name}.yaml", doc) for name, doc in documents]

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            official_asyncapi_cli.validate_argv(path),
            capture_output=True,
            text=True,
            timeout=120,
            env=official_asyncapi_cli.env(),
            check=False,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(run, files))
    failed = [
        f"{path.name}: exit {done.returncode}\n{textwrap.indent(done.stdout + done.stderr, '    ')}"
        for path, done in zip(files, verdicts, strict=True)
        if done.returncode != 0
    ]
    assert not failed, "\n".join(failed)
    for path in files:  # and ours agrees
        assert errors_of(path) == []
