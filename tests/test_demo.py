"""``tidings demo``: the guide's User Service end to end, on the embedded broker and on the guide's two brokers."""

from __future__ import annotations

import re

from tests.cli import Result, invoke


def summary(result: Result) -> dict[str, int]:
    counts = {}
    for line in result.stdout.splitlines():
        match = re.match(
            r"\s*(events published by user-service|handled by \S+|invalid messages dead-lettered)\W+(\d+)", line
        )
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def check(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert summary(result) == {
        "events published by user-service": 7,
        "handled by email-service": 3,
        "handled by log-service": 7,
        "invalid messages dead-lettered": 2,
    }, result.stdout
    assert result.stdout.count("Subject: Welcome!") == 3


def test_the_demo_on_the_embedded_broker() -> None:
    result = invoke(["demo"])
    check(result)
    assert "sqlite:///" in result.stdout


def test_the_demo_on_rabbitmq(rabbitmq_url: str) -> None:
    result = invoke(["demo", "--broker", rabbitmq_url])
    check(result)
    assert "guest:guest" not in result.output
    check(invoke(["demo", "--broker", rabbitmq_url]))  # again: what the first run left behind is not counted


def test_the_demo_on_kafka(kafka_bootstrap: str) -> None:
    check(invoke(["demo", "--broker", f"kafka://{kafka_bootstrap}"]))
    check(invoke(["demo", "--broker", f"kafka://{kafka_bootstrap}"]))
