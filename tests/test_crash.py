"""Crash tests: a consumer SIGKILLed at each dangerous point, then restarted, on the embedded broker,
RabbitMQ and Kafka. Nothing may be lost and nothing applied twice; each test prints its figures.

The consumer (``crash_consumer.py``, its own process) writes its effect in the inbox transaction with the
event's dedupe mark. ``TIDINGS_CRASH_AT`` kills it deterministically (``tidings.testing.crash``) at
``before-handler``, ``after-effect`` (effect written, not committed), ``after-mark`` (committed, not acked)
or ``after-ack``; ``random`` kills it at a random moment while it works. ``TIDINGS_CRASH_EVENTS`` sets the
number of events (default 120).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tidings.app import App
from tidings.brokers.base import broker_from_url
from tidings.events.event import Event
from tidings.testing.crash import CRASH_POINTS, ENV

HERE = Path(__file__).resolve().parent
EVENTS = int(os.environ.get("TIDINGS_CRASH_EVENTS", "120"))
CRASH_AT = 40  # the 40th passing of the point: well inside the run, with deliveries in flight around it
TIMEOUT = 90.0


class OrderPlaced(Event, type="order.placed"):
    order_id: int


def broker_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        # a killed consumer's leases come back after the visibility timeout
        return f"sqlite:///{tmp_path / 'broker.db'}?visibility_timeout=1"
    if kind == "rabbitmq":
        return f"{request.getfixturevalue('rabbitmq_vhost')}?exchange=crash-{uuid.uuid4().hex[:8]}"
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return f"kafka://{bootstrap}?session_timeout_ms=6000&partitions=2&fetch_wait_ms=20"


async def publish(url: str, channel: str, group: str, count: int) -> None:
    declarer = App(url, name="crash-setup")

    @declarer.subscriber(channel, group=group)
    async def never(event: dict[str, object]) -> None:
        raise AssertionError("the set-up subscriber only declares the group")

    async with declarer:  # the group's queue / topic exists before anything is published
        pass
    async with App(url, name="crash-producer") as producer:
        for i in range(count):
            await producer.publish(OrderPlaced(order_id=i), channel=channel, key=f"customer-{i % 7}")


def consumer(url: str, db: Path, channel: str, group: str, crash: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash:
        env[ENV] = crash
    return subprocess.Popen(
        [sys.executable, str(HERE / "crash_consumer.py"), url, str(db), channel, group, str(EVENTS)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def effects(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM effects").fetchone()
    return int(total), int(distinct)


def finish(process: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> int:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the consumer did not finish within {timeout:g} s: {err.decode()[-2000:]}")
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"the consumer failed ({process.returncode}): {err.decode()[-2000:]}")
    return process.returncode


@pytest.mark.parametrize("point", [*CRASH_POINTS, "random"])
@pytest.mark.parametrize("kind", ["sqlite", "rabbitmq", "kafka"])
def test_a_consumer_killed_at_any_point_loses_nothing_and_applies_nothing_twice(
    kind: str, point: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = broker_url(kind, request, tmp_path)
    channel, group = f"orders.{uuid.uuid4().hex[:8]}", "billing"
    db = tmp_path / "billing.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE effects (event_id TEXT NOT NULL, pid INTEGER NOT NULL)"
        )  # no unique key: twice shows
        conn.execute("CREATE TABLE runs (pid INTEGER, duplicates INTEGER)")
    asyncio.run(publish(url, channel, group, EVENTS))

    seed = random.randrange(1_000_000)
    if point == "random":
        # killed once a random share of the work is done: a random moment, but always one inside the run
        target = random.Random(seed).randrange(1, EVENTS)
        first = consumer(url, db, channel, group, None)
        deadline = time.monotonic() + TIMEOUT
        while effects(db)[1] < target and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        first.send_signal(signal.SIGKILL)
    else:
        first = consumer(url, db, channel, group, f"{point}:{CRASH_AT}")
    first_code = finish(first)
    assert first_code == -signal.SIGKILL, "the consumer finished before it was killed"
    _, before_restart = effects(db)
    assert finish(consumer(url, db, channel, group, None)) == 0

    total, distinct = effects(db)
    with sqlite3.connect(db) as conn:
        absorbed = conn.execute("SELECT COALESCE(SUM(duplicates), 0) FROM runs").fetchone()[0]
    dead = asyncio.run(_dead_letters(url, channel))
    lost, twice = EVENTS - distinct, total - distinct
    print(
        f"\ncrash [{kind}, {point}{f', seed {seed}' if point == 'random' else ''}]: sent {EVENTS}, "
        f"effects before the restart {before_restart}, distinct effects {distinct}, duplicates absorbed {absorbed}, "
        f"dead-lettered {dead}, lost {lost}, applied twice {twice}"
    )
    assert lost == 0
    assert twice == 0
    assert dead == 0


async def _dead_letters(url: str, channel: str) -> int:
    async with broker_from_url(url) as broker:
        return sum(1 for d in await broker.dead_letters() if d.message.channel == channel)
