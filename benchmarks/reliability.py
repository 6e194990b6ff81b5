"""Reliability benchmark: what idempotent consumers and the transactional outbox cost, side by side in one run.

Consuming (the same App pipeline each time: the guide's document bound, so every event is checked against
its schema, a typed handler, ``prefetch=256``; events of about 200 bytes published beforehand):

- **no idempotency**: the pipeline alone, the reference;
- **memory / SQLite / Redis / PostgreSQL store**: ``subscriber(..., idempotency=store)``, which looks each
  event up before the handler and marks it after (both durable before the ack, batched by group commit);
- **SQLite inbox**: ``inbox=True``, the handler's write and the mark in one transaction per event; its
  reference is the same handler writing its effect to SQLite in a transaction of its own.

on the embedded broker (``sqlite://``, the default, which alone runs at about 100,000 events/s here) and on
RabbitMQ (durable quorum queue, persistent messages, publisher confirms). Publishing: ``app.publish_many``
in batches of 100 against ``outbox.add`` in the caller's transactions of 100 events plus the relay
publishing them (until the broker confirmed the last).

Target (issue #5): idempotency costs at most 25% of throughput (ratio ≥ 0.75).

    python benchmarks/reliability.py            # full: 20,000 events on the embedded broker, 5,000 on RabbitMQ
    python benchmarks/reliability.py --quick    # a smoke run
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from _common import (  # benchmarks/ is on sys.path: it is the folder of the script being run
    MIN_ROUNDS,
    PG_DSN,
    Report,
    argument_parser,
    console,
    load_summary,
    machine_summary,
    new_table,
    print_verdicts,
)
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tidings.app import App, EventContext
from tidings.events import Event
from tidings.redact import redact_url
from tidings.reliability.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    PostgresIdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
)
from tidings.reliability.outbox import Outbox, OutboxRelay

BENCHMARK = "reliability"
PROJECT = Path(__file__).resolve().parent.parent
DOCUMENT = PROJECT / "examples" / "user-service.asyncapi.yaml"
AMQP_URL = os.environ.get("TIDINGS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("TIDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFETCH = 256
TARGET = 0.75


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


@dataclass(frozen=True)
class Plan:
    rounds: int
    embedded: int
    rabbitmq: int
    outbox: int


FULL = Plan(rounds=3, embedded=20_000, rabbitmq=5_000, outbox=20_000)
QUICK = Plan(rounds=3, embedded=2_000, rabbitmq=500, outbox=2_000)


def events(count: int) -> list[UserCreated]:
    return [UserCreated(user_id=i, email=f"user{i}@example.com", name=f"User number {i}") for i in range(count)]


# ---------------------------------------------------------------------------------------------------------------
# Consuming


StoreFactory = Callable[[Path], IdempotencyStore | None]


@dataclass(frozen=True)
class Consumer:
    name: str
    detail: str
    store: StoreFactory
    inbox: bool = False
    #: the handler writes an effect to SQLite (the inbox and its reference)
    effect: bool = False
    #: the contender this one is compared with
    reference: str = "no idempotency"


CONSUMERS = [
    Consumer("no idempotency", "the pipeline alone", lambda _: None),
    Consumer("memory store", "bounded, in this process", lambda _: MemoryIdempotencyStore()),
    Consumer(
        "SQLite store",
        "WAL, synchronous=NORMAL, marks committed before the ack",
        lambda d: SqliteIdempotencyStore(d / "dedupe.db"),
    ),
    Consumer(
        "Redis store",
        "SET NX PX per mark, one round trip per batch",
        lambda _: RedisIdempotencyStore(REDIS_URL, prefix=f"tidings-bench:{uuid.uuid4().hex}:"),
    ),
    Consumer(
        "PostgreSQL store",
        "marks committed before the ack",
        lambda _: PostgresIdempotencyStore(PG_DSN, table=f"tidings_bench_{uuid.uuid4().hex[:10]}"),
    ),
    Consumer("effect, no idempotency", "the handler's write, a transaction per event", lambda _: None, effect=True),
    Consumer(
        "SQLite inbox",
        "the handler's write and the mark in one transaction per event",
        lambda d: SqliteIdempotencyStore(d / "effects.db"),
        inbox=True,
        effect=True,
        reference="effect, no idempotency",
    ),
]


async def consume_round(
    url: str, consumer: Consumer, count: int, folder: Path, cleanup: list[Callable[[], Awaitable[None]]]
) -> float:
    """Events per second, from the consumer's start to its last handled event."""
    store = consumer.store(folder)
    effects = folder / "effects.db"
    with sqlite3.connect(effects) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT, user_id INTEGER)")
    writer = None
    if consumer.effect and not consumer.inbox:  # the same durability as the inbox's connection
        writer = sqlite3.connect(effects, isolation_level=None)
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA synchronous = NORMAL")
    app = App(url, name="billing", asyncapi=DOCUMENT)
    handled = [0]
    done = asyncio.Event()

    @app.subscriber("user.created", group="billing", prefetch=PREFETCH, idempotency=store, inbox=consumer.inbox)
    async def charge(event: UserCreated, context: EventContext) -> None:
        if context.connection is not None:
            context.connection.execute("INSERT INTO effects VALUES (?, ?)", (context.envelope.event_id, event.user_id))
        elif writer is not None:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO effects VALUES (?, ?)", (context.envelope.event_id, event.user_id))
            writer.execute("COMMIT")
        handled[0] += 1
        if handled[0] == count:
            done.set()

    async with app:  # the group exists before the events are published
        pass
    async with App(url, name="user-service", asyncapi=DOCUMENT) as publisher:
        batch = events(count)
        for first in range(0, count, 1_000):
            await publisher.publish_many(batch[first : first + 1_000])
    start = time.perf_counter()
    async with app:
        await asyncio.wait_for(done.wait(), 600)
        seconds = time.perf_counter() - start
    if writer is not None:
        writer.close()
    if store is not None:
        await store.close()
        if isinstance(store, PostgresIdempotencyStore):
            cleanup.append(lambda table=store.table: drop_table(table))
    return count / seconds


async def drop_table(table: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')


async def delete_exchange(name: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{name}.billing.user.created", f"{name}.unrouted", f"{name}.dead-letters"):
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
                channel = await connection.channel()
        for exchange in (name, f"{name}.dead-letters", f"{name}.retry"):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
                channel = await connection.channel()


# ---------------------------------------------------------------------------------------------------------------
# Publishing through the outbox


async def publish_round(url: str, count: int, folder: Path, through_outbox: bool) -> float:
    """Events per second, from the first event handed over to the broker's confirmation of the last."""
    app = App(url, name="user-service", asyncapi=DOCUMENT)
    batch = events(count)
    async with app:
        if not through_outbox:
            start = time.perf_counter()
            for first in range(0, count, 100):
                await app.publish_many(batch[first : first + 100])
            return count / (time.perf_counter() - start)
        db = folder / "app.db"
        outbox = Outbox(app)
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            outbox.create_table(conn)
        start = time.perf_counter()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA synchronous = NORMAL")
        for first in range(0, count, 100):
            with conn:  # the caller's transaction: its own writes would go here too
                for event in batch[first : first + 100]:
                    outbox.add(conn, event)
        conn.close()
        async with OutboxRelay(db, app.broker, batch=500, poll_interval=0.01) as relay:
            while await relay.relay_once():
                pass
        return count / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class Row:
    broker: str
    name: str
    detail: str
    rates: list[float]
    reference: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def run_all(plan: Plan, progress: Progress) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    cleanup: list[Callable[[], Awaitable[None]]] = []
    task = progress.add_task("", total=None)
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as scratch:
        for round_no in range(plan.rounds):
            # interleaved: a change in the machine's load during the run falls on every contender alike
            for broker, count in (("embedded", plan.embedded), ("RabbitMQ", plan.rabbitmq)):
                for consumer in CONSUMERS:
                    if broker == "RabbitMQ" and consumer.name in ("memory store", "Redis store"):
                        continue  # the broker sets the pace there: the durable stores tell the story
                    progress.update(task, description=f"round {round_no + 1}/{plan.rounds}: {broker}, {consumer.name}")
                    folder = Path(scratch, uuid.uuid4().hex)
                    folder.mkdir()
                    exchange = f"bench-reliability-{uuid.uuid4().hex[:8]}"
                    url = (
                        f"sqlite:///{folder / 'broker.db'}"
                        if broker == "embedded"
                        else f"{AMQP_URL}?exchange={exchange}"
                    )
                    try:
                        rate = await consume_round(url, consumer, count, folder, cleanup)
                    finally:
                        if broker == "RabbitMQ":
                            await delete_exchange(exchange)
                    row = rows.setdefault(
                        (broker, consumer.name), Row(broker, consumer.name, consumer.detail, [], consumer.reference)
                    )
                    row.rates.append(rate)
            for through_outbox in (False, True):
                name = "outbox + relay" if through_outbox else "publish_many"
                progress.update(task, description=f"round {round_no + 1}/{plan.rounds}: publishing, {name}")
                folder = Path(scratch, uuid.uuid4().hex)
                folder.mkdir()
                rate = await publish_round(f"sqlite:///{folder / 'broker.db'}", plan.outbox, folder, through_outbox)
                detail = (
                    "outbox.add in the caller's transactions of 100, the relay publishing in batches of 500"
                    if through_outbox
                    else "batches of 100, each confirmed"
                )
                rows.setdefault(("publishing", name), Row("publishing", name, detail, [], "publish_many")).rates.append(
                    rate
                )
    for job in cleanup:
        with contextlib.suppress(Exception):
            await job()
    return list(rows.values())


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    assert plan.rounds >= MIN_ROUNDS
    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    console.print(
        f"Brokers: sqlite:// (a file per round), RabbitMQ at {redact_url(AMQP_URL)}; stores: Redis at "
        f"{redact_url(REDIS_URL)}, PostgreSQL at {redact_url(PG_DSN)}; the guide's document bound (contract on)"
    )
    started = time.perf_counter()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )
    with progress:
        rows = asyncio.run(run_all(plan, progress))
    console.print(f"Measured in {time.perf_counter() - started:.0f} s; {load_summary()} at the end")
    by_key = {(r.broker, r.name): r for r in rows}
    report = Report(BENCHMARK)
    verdicts: list[tuple[str, bool]] = []
    for broker, count in (("embedded", plan.embedded), ("RabbitMQ", plan.rabbitmq), ("publishing", plan.outbox)):
        table = new_table(
            f"{broker}: {count:,} events" + ("" if broker == "publishing" else " consumed"),
            caption=f"events/s: median of {plan.rounds} rounds (min–max); ratio: this ÷ its reference",
        )
        table.add_column("contender")
        table.add_column("events/s", justify="right")
        table.add_column("ratio", justify="right")
        for row in (r for r in rows if r.broker == broker):
            reference = by_key[(broker, row.reference)]
            ratio = row.median / reference.median
            rate = f"{row.median:,.0f}\n[dim]{min(row.rates):,.0f}–{max(row.rates):,.0f}[/dim]"
            mark = ""
            if row is not reference:
                report.add_ratio(f"{broker} {row.reference}", f"{row.name} events/s", ratio)
                if "store" in row.name or "inbox" in row.name:
                    ok = ratio >= TARGET
                    verdicts.append((f"{broker}: {row.name} ≥ {TARGET}x {row.reference} ({ratio:.2f}x)", ok))
                    mark = " ✔" if ok else " ✘"
            report.add_result(f"{broker} {row.name}", row.median, "events/s", higher_is_better=True)
            table.add_row(
                f"{row.name}\n[dim]{row.detail}[/dim]", rate, f"{ratio:.2f}x{mark}" if row is not reference else ""
            )
        console.print(table)
    print_verdicts("Targets (issue #5: idempotency costs at most 25% of throughput):", verdicts, report, args.json)


if __name__ == "__main__":
    main()
