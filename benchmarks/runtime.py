"""Benchmark: publish → typed, validated handler, on tidings' brokers, FastStream 0.7 and the bare floor.

What is measured, all in this one process and one run, the contenders' rounds interleaved (floor, tidings on
``memory://`` with the contract on, with it off, FastStream, floor, ...) so that a change in the machine's load
falls on all of them alike:

- **floor**: ``UserCreatedPayload.model_validate(orjson.loads(body))`` over the very bodies tidings puts on the
  wire (302 B each: the guide's flat JSON, envelope fields beside the event's), no framework at all. The model
  has the event's three fields and ignores the others (pydantic's default), the cheapest honest reading.
  A second, informational floor adds the publishing side (``model_dump`` + ``orjson.dumps``).
- **tidings memory://**: ``await app.publish(UserCreated(...))`` → ``async def handler(event: UserCreated)``,
  the app bound to the guide's document ``examples/user-service.asyncapi.yaml``, so that each event is checked
  against the channel's JSON Schema (formats uuid, date-time, email on) when it is published and again when it
  is received; the same with no document bound (contract off). Every event gets a fresh envelope (UUID v7,
  timestamp, correlation id), is encoded with orjson, queued, decoded, validated into the typed event and
  acknowledged. The publisher awaits ``broker.join()`` after every window of 1,000 publishes, so that no more
  than 1,000 events are queued at once.
- **FastStream 0.7 ``TestRabbitBroker``**: ``await broker.publish(UserCreated(...), queue="user.created")`` →
  ``async def handler(event: UserCreated)`` (the same pydantic model), through FastStream's whole broker
  pipeline (encode, the in-memory "fake producer", parse, decode, fast-depends/pydantic validation,
  acknowledgement middleware). Its fastest honest settings: ``logger=None`` (no log line per message; tidings
  writes none either), ``graceful_timeout=None`` (no tracking of running handlers), no middlewares, orjson
  (FastStream picks it up when installed). ``TestRabbitBroker`` calls the handler inside ``publish``; it has no
  queue to bound.
- **tidings sqlite://**: durable events published and consumed through one SQLite file (the broker's own
  durability settings are printed with the table), with publishes in concurrent windows so that the broker can
  batch them into one transaction; measured as published events/s and as published-and-consumed events/s.
  When ``tidings.brokers.sqlite`` does not exist yet, the row says so.
- **latency**: one event at a time (publish, wait until the handler has run, next): the time from calling
  publish to the handler's first line; median and 99th percentile.
- **memory over a long run**: tidings ``memory://`` with the contract on for 1,000,000 events (200,000 with
  ``--quick``) in a fresh child process: the RSS and the objects the garbage collector tracks, after a full
  collection, at checkpoints (100k, 500k, 1M), then a traced window of 20,000 more events (5,000 with
  ``--quick``) under tracemalloc: what they allocated and is still held after them, and which lines hold it.
  Flat means the RSS grows by less than 16 MiB from the first checkpoint to the last and the traced window
  keeps less than 16 B per event.

Targets (issue #3): ``memory://`` ≥ 0.5x the floor and ≥ 50x FastStream's ``TestRabbitBroker``; ``sqlite://``
≥ 20,000 durable events/s published and consumed; memory flat over 1,000,000 events.

Ratios are speed ratios tidings/peer (> 1: tidings is faster). Absolute events/s on a shared 2-core machine
drift from run to run; the ratios from one run are what to compare. Peers come from the ``bench`` extra:
``.venv/bin/pip install -e '.[bench]'``.

    .venv/bin/python benchmarks/runtime.py [--quick] [--json PATH] [--profile]
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from _common import (  # benchmarks/ is on sys.path: it is the folder of the script being run
    MIN_ROUNDS,
    Report,
    Stats,
    argument_parser,
    console,
    format_bytes,
    format_seconds,
    load_summary,
    machine_summary,
    new_table,
    speed_ratio,
)
from pydantic import BaseModel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tidings.app.application import App
from tidings.events.codec import encode
from tidings.events.envelope import new_envelope
from tidings.events.event import Event

BENCHMARK = "runtime"
PROJECT = Path(__file__).resolve().parent.parent
DOCUMENT = PROJECT / "examples" / "user-service.asyncapi.yaml"
CHANNEL = "user.created"

FLOOR = "floor"
FLOOR_ROUND_TRIP = "floor-round-trip"
MEMORY_ON = "tidings-memory-contract"
MEMORY_OFF = "tidings-memory"
FASTSTREAM = "faststream"
SQLITE_FLOOR = "sqlite-floor"
SQLITE_ON = "tidings-sqlite-contract"
SQLITE_OFF = "tidings-sqlite"
SQLITE_TWO = "tidings-sqlite-two-processes"
SQLITES = (SQLITE_OFF, SQLITE_ON, SQLITE_TWO)
#: the sqlite:// row the 20,000/s target is read from: a producer and a consumer process, as the embedded
#: broker is meant to be used (one process is one core under the GIL: its rows are shown beside it)
SQLITE_TARGET_ROW = SQLITE_TWO

TARGET_FLOOR = 0.5
TARGET_FASTSTREAM = 50.0
TARGET_SQLITE = 20_000.0
#: flat memory: RSS growth from the first checkpoint to the last, and what the traced window keeps per event
FLAT_RSS_BYTES = 16 * 1024 * 1024
FLAT_HELD_PER_EVENT = 16
#: publishes between two ``broker.join()`` on memory://: at most this many events are queued at once
WINDOW = 1_000
#: events made up front and published round-robin (so that making events is not what is timed)
POOL = 1_000


class UserCreated(Event, type="user.created", version="1.0"):
    """The guide's event: tidings' typed event class, and FastStream's handler model too (it is pydantic)."""

    user_id: int
    email: str
    name: str


class UserCreatedPayload(BaseModel):
    """The floor's model: the same three fields; the envelope fields in the body are ignored."""

    user_id: int
    email: str
    name: str


def make_events(count: int = POOL) -> list[UserCreated]:
    return [UserCreated(user_id=i, email=f"user{i}@example.com", name=f"User {i}") for i in range(count)]


def wire_bodies(count: int) -> list[bytes]:
    """What tidings publishes for ``count`` events: each with its own envelope (id, timestamp)."""
    events = make_events(min(count, POOL))
    return [
        encode(new_envelope(CHANNEL, "1.0", source="user-service"), events[i % len(events)].model_dump(mode="json"))[0]
        for i in range(count)
    ]


@dataclass(frozen=True)
class Plan:
    rounds: int
    #: events per timed round
    floor_events: int
    memory_events: int
    faststream_events: int
    sqlite_events: int
    #: sequential events for the latency figures
    latency_events: int
    faststream_latency_events: int
    sqlite_latency_events: int
    #: memory-over-a-long-run checkpoints (events handled)
    checkpoints: tuple[int, ...]
    #: events run under tracemalloc after the last checkpoint, to find what a run keeps per event
    traced_events: int
    #: concurrent publishes per window on sqlite:// (what the broker may batch into one transaction)
    sqlite_window: int = 1_000
    #: the subscriber's prefetch on sqlite:// (claims of up to this many messages per transaction)
    sqlite_prefetch: int = 256


FULL = Plan(
    rounds=5,
    floor_events=200_000,
    memory_events=100_000,
    faststream_events=3_000,
    sqlite_events=50_000,
    latency_events=5_000,
    faststream_latency_events=500,
    sqlite_latency_events=300,
    checkpoints=(100_000, 500_000, 1_000_000),
    traced_events=20_000,
)
QUICK = Plan(
    rounds=3,
    floor_events=50_000,
    memory_events=10_000,
    faststream_events=300,
    sqlite_events=10_000,
    latency_events=1_000,
    faststream_latency_events=100,
    sqlite_latency_events=100,
    checkpoints=(20_000, 100_000, 200_000),
    traced_events=5_000,
)


# --------------------------------------------------------------------------------------------------------------
# Contenders: each one round = (seconds for ``count`` events); setup and teardown are not timed.


@dataclass
class Contender:
    name: str
    label: str
    #: what was measured: message, validation, durability... (shown under the label)
    what: str
    events: int
    run: Callable[[int], Awaitable[float]] | None
    latency: Callable[[int], Awaitable[list[float]]] | None = None
    latency_events: int = 0
    #: why there is no figure (peer missing, broker not written yet...)
    unavailable: str = ""
    samples: list[float] = field(default_factory=list)
    #: sqlite://: seconds until the last publish returned (``samples``: until the last event was handled)
    publish_samples: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    message_size: int = 0

    @property
    def stats(self) -> Stats | None:
        return Stats(tuple(self.samples)) if self.samples else None

    @property
    def rate(self) -> float | None:
        """Median events/s."""
        stats = self.stats
        return self.events / stats.median if stats else None


async def floor_round(count: int, bodies: list[bytes]) -> float:
    validate = UserCreatedPayload.model_validate
    loads = orjson.loads
    n = len(bodies)
    start = time.perf_counter()
    for i in range(count):
        validate(loads(bodies[i % n]))
    return time.perf_counter() - start


async def floor_latency(count: int, bodies: list[bytes]) -> list[float]:
    validate = UserCreatedPayload.model_validate
    loads = orjson.loads
    out = []
    for i in range(count):
        start = time.perf_counter()
        validate(loads(bodies[i % len(bodies)]))
        out.append(time.perf_counter() - start)
    return out


async def floor_round_trip_round(count: int) -> float:
    """model_dump + orjson.dumps, then orjson.loads + model_validate: both ends, still no framework."""
    events = make_events()
    validate = UserCreatedPayload.model_validate
    loads, dumps = orjson.loads, orjson.dumps
    start = time.perf_counter()
    for i in range(count):
        validate(loads(dumps(events[i % POOL].model_dump(mode="json"))))
    return time.perf_counter() - start


SQLITE_FLOOR_SCHEMA = """
CREATE TABLE log (position INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, key TEXT, headers TEXT,
                  created_at REAL NOT NULL, body BLOB NOT NULL);
CREATE INDEX log_channel ON log (channel, position);
CREATE TABLE cursors (grp TEXT PRIMARY KEY, position INTEGER NOT NULL);
INSERT INTO cursors VALUES ('email-service', 0);
"""


def sqlite_floor_round(count: int, plan: Plan, bodies: list[bytes], path: Path, publish_samples: list[float]) -> float:
    """Raw sqlite3, no framework, the same durability as the broker's default (WAL, synchronous=NORMAL):
    each window of bodies inserted in one transaction (executemany), then read back in claims of ``prefetch``
    rows, the group's cursor committed per claim, each body decoded and validated (the floor's work)."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SQLITE_FLOOR_SCHEMA)
        headers = orjson.dumps({"content-type": "application/json"}).decode()
        validate, loads = UserCreatedPayload.model_validate, orjson.loads
        n = len(bodies)
        cursor = consumed = 0
        published = 0.0
        start = time.perf_counter()
        for base in range(0, count, plan.sqlite_window):
            begin = time.perf_counter()
            now = time.time()
            rows = [
                (CHANNEL, None, headers, now, bodies[i % n]) for i in range(base, min(count, base + plan.sqlite_window))
            ]
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO log (channel, key, headers, created_at, body) VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
            published += time.perf_counter() - begin
            while consumed < base + len(rows):
                db.execute("BEGIN IMMEDIATE")
                claimed = db.execute(
                    "SELECT position, headers, body FROM log WHERE channel = ? AND position > ? ORDER BY position "
                    "LIMIT ?",
                    (CHANNEL, cursor, plan.sqlite_prefetch),
                ).fetchall()
                cursor = claimed[-1][0]
                db.execute("UPDATE cursors SET position = ? WHERE grp = 'email-service'", (cursor,))
                db.execute("COMMIT")
                for _, _, body in claimed:
                    validate(loads(body))
                consumed += len(claimed)
        seconds = time.perf_counter() - start
    finally:
        db.close()
    publish_samples.append(published)
    return seconds


class TidingsRuntime:
    """An App on a broker URL with one typed subscriber that counts and can time what it handles."""

    def __init__(self, broker: str, *, contract: bool, prefetch: int = 16) -> None:
        self.app = App(broker, name="user-service", asyncapi=DOCUMENT if contract else None)
        self.handled = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.handler_time = 0.0

        @self.app.subscriber(CHANNEL, group="email-service", prefetch=prefetch)
        async def send_welcome(event: UserCreated) -> None:
            self.handler_time = time.perf_counter()
            self.handled += 1
            if self.handled == self.target and self.done is not None and not self.done.done():
                self.done.set_result(None)

    def expect(self, count: int) -> asyncio.Future[None]:
        self.target = self.handled + count
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    async def dead_letters(self) -> int:
        return len(await self.app.broker.dead_letters())


async def memory_round(count: int, *, contract: bool, events: list[UserCreated]) -> float:
    runtime = TidingsRuntime("memory://", contract=contract)
    app = runtime.app
    broker: Any = app.broker
    async with app:
        for event in events[:100]:  # warm: first-call set-up (pydantic, jsonschema-rs) is not the steady state
            await app.publish(event)
        await broker.join()
        warmed = runtime.handled
        publish, join = app.publish, broker.join
        start = time.perf_counter()
        for base in range(0, count, WINDOW):
            for i in range(base, min(count, base + WINDOW)):
                await publish(events[i % POOL])
            await join()
        seconds = time.perf_counter() - start
        check_handled("memory://", runtime.handled - warmed, count, await runtime.dead_letters())
    return seconds


async def tidings_latency(
    url: str, count: int, *, contract: bool, events: list[UserCreated], prefetch: int = 16
) -> list[float]:
    runtime = TidingsRuntime(url, contract=contract, prefetch=prefetch)
    app = runtime.app
    out = []
    async with app:
        for i in range(count + 10):
            done = runtime.expect(1)
            start = time.perf_counter()
            await app.publish(events[i % POOL])
            await done
            if i >= 10:  # the first few: warm-up
                out.append(runtime.handler_time - start)
    return out


def check_handled(where: str, handled: int, expected: int, dead: int) -> None:
    if handled != expected or dead:
        raise SystemExit(f"{where}: {handled:,} of {expected:,} events handled, {dead:,} dead-lettered: not measured")


# -- FastStream ------------------------------------------------------------------------------------------------


def faststream_version() -> str | None:
    try:
        import faststream.rabbit  # noqa: F401
    except ImportError:
        return None
    return metadata.version("faststream")


class FastStreamRuntime:
    def __init__(self) -> None:
        from faststream.rabbit import RabbitBroker

        self.broker = RabbitBroker(logger=None, graceful_timeout=None)
        self.handled = 0
        self.handler_time = 0.0

        @self.broker.subscriber(CHANNEL)
        async def send_welcome(event: UserCreated) -> None:
            self.handler_time = time.perf_counter()
            self.handled += 1


async def faststream_round(count: int, events: list[UserCreated]) -> float:
    from faststream.rabbit import TestRabbitBroker

    runtime = FastStreamRuntime()
    async with TestRabbitBroker(runtime.broker) as broker:
        for event in events[:20]:
            await broker.publish(event, queue=CHANNEL)
        warmed = runtime.handled
        publish = broker.publish
        start = time.perf_counter()
        for i in range(count):
            await publish(events[i % POOL], queue=CHANNEL)
        seconds = time.perf_counter() - start
        check_handled("FastStream", runtime.handled - warmed, count, 0)
    return seconds


async def faststream_latency(count: int, events: list[UserCreated]) -> list[float]:
    from faststream.rabbit import TestRabbitBroker

    runtime = FastStreamRuntime()
    out = []
    async with TestRabbitBroker(runtime.broker) as broker:
        for i in range(count + 10):
            start = time.perf_counter()
            await broker.publish(events[i % POOL], queue=CHANNEL)
            if i >= 10:
                out.append(runtime.handler_time - start)
    return out


async def faststream_message_size(events: list[UserCreated]) -> int:
    """The body FastStream sends for the event (AMQP properties beside it: correlation and message ids)."""
    from faststream._internal.parser import DefaultCodec

    broker = FastStreamRuntime().broker
    body, _ = await DefaultCodec().encode(events[0], broker.config.fd_config._serializer)
    return len(body)


# -- sqlite:// -------------------------------------------------------------------------------------------------


def sqlite_runner(
    contender: Contender, plan: Plan, events: list[UserCreated], workdir: Path, *, contract: bool
) -> Callable[[int], Awaitable[float]]:
    async def run(count: int) -> float:
        tag = f"{contender.name}-{len(contender.samples)}-{count}"
        result = await sqlite_round(count, plan, events, workdir, tag, contract=contract)
        contender.publish_samples.append(result.publish_seconds)
        return result.total_seconds

    return run


SQLITE_CONSUMER = "--sqlite-consumer"


def sqlite_consumer_child(url: str, count: int, prefetch: int) -> None:
    """The consumer process of the two-process row: says "ready" once subscribed, then the monotonic
    time (one clock for every process of the machine) at which its handler saw the ``count``-th event."""

    async def consume() -> None:
        runtime = TidingsRuntime(url, contract=True, prefetch=prefetch)
        done = runtime.expect(count)
        async with runtime.app:
            print("ready", flush=True)
            await asyncio.wait_for(done, 600)
            print(time.monotonic(), flush=True)
            dead = await runtime.dead_letters()
        print(dead, flush=True)

    asyncio.run(consume())


async def sqlite_two_process_round(
    count: int, plan: Plan, events: list[UserCreated], workdir: Path, tag: str
) -> SqliteRound:
    """A consumer process (started and subscribed before the clock starts) and this process publishing with
    ``app.publish_many`` in windows; ends when the consumer's handler has seen the last event."""
    url = f"sqlite:///{workdir / f'bench-{tag}.db'}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        SQLITE_CONSUMER,
        url,
        str(count),
        str(plan.sqlite_prefetch),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the sqlite consumer process did not start: {line!r}")
        app = App(url, name="user-service", asyncapi=DOCUMENT)
        window = plan.sqlite_window
        async with app:
            publish_many = app.publish_many
            start = time.monotonic()
            for base in range(0, count, window):
                await publish_many([events[i % POOL] for i in range(base, min(count, base + window))])
            published = time.monotonic() - start
        finished = float(await asyncio.wait_for(child.stdout.readline(), 600))
        dead = int(await asyncio.wait_for(child.stdout.readline(), 60))
        check_handled("sqlite:// two processes", count, count, dead)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return SqliteRound(published, finished - start)


def sqlite_two_process_runner(
    contender: Contender, plan: Plan, events: list[UserCreated], workdir: Path
) -> Callable[[int], Awaitable[float]]:
    async def run(count: int) -> float:
        tag = f"{contender.name}-{len(contender.samples)}-{count}"
        result = await sqlite_two_process_round(count, plan, events, workdir, tag)
        contender.publish_samples.append(result.publish_seconds)
        return result.total_seconds

    return run


def sqlite_available() -> str:
    """'' when ``tidings.brokers.sqlite`` can be imported, else why not."""
    try:
        import tidings.brokers.sqlite  # noqa: F401
    except ImportError as exc:
        return f"not available yet: tidings.brokers.sqlite cannot be imported ({exc})"
    return ""


def sqlite_settings(broker: Any, prefetch: int) -> str:
    """The durability and batching settings the broker runs with (read from the broker and its file)."""
    import sqlite3

    from tidings.brokers import sqlite as module

    settings = getattr(broker, "_settings", None)
    synchronous = getattr(settings, "synchronous", "?")
    try:
        with sqlite3.connect(broker.path) as db:
            journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    except (sqlite3.Error, AttributeError):
        journal = "?"
    fsync = {
        "normal": "no fsync per commit: survives a process crash, not a power cut",
        "full": "fsync per commit",
    }.get(str(synchronous), "")
    batch = getattr(module, "_MAX_BATCH", None)
    return (
        f"journal_mode={journal}, synchronous={synchronous} ({fsync}); a commit before publish returns"
        + (f"; ≤ {batch:,} queued operations per transaction" if batch else "")
        + f"; subscriber prefetch {prefetch}"
    )


@dataclass
class SqliteRound:
    publish_seconds: float
    total_seconds: float


#: filled by the first sqlite:// round
SQLITE_SETTINGS: dict[str, str] = {}


async def sqlite_round(
    count: int, plan: Plan, events: list[UserCreated], workdir: Path, tag: str, *, contract: bool
) -> SqliteRound:
    """Publish ``count`` events (``plan.sqlite_window`` concurrent publishes at a time) while the subscriber
    consumes them in the same process; the round ends when the handler has seen the last one. A new file
    each round."""
    url = f"sqlite:///{workdir / f'bench-{tag}.db'}"
    runtime = TidingsRuntime(url, contract=contract, prefetch=plan.sqlite_prefetch)
    app = runtime.app
    window = plan.sqlite_window
    async with app:
        SQLITE_SETTINGS.setdefault("settings", sqlite_settings(app.broker, plan.sqlite_prefetch))
        warm = runtime.expect(50)
        await app.publish_many(events[:50])
        await asyncio.wait_for(warm, 60)
        done = runtime.expect(count)
        publish_many = app.publish_many
        start = time.perf_counter()
        for base in range(0, count, window):
            await publish_many([events[i % POOL] for i in range(base, min(count, base + window))])
        published = time.perf_counter() - start
        await asyncio.wait_for(done, 600)
        total = time.perf_counter() - start
        check_handled("sqlite://", runtime.handled - 50, count, await runtime.dead_letters())
    return SqliteRound(published, total)


# --------------------------------------------------------------------------------------------------------------
# Memory over a long run: a child process (a fresh heap, so that what this one holds does not blur the figures)

MEMORY_CHILD = "--memory-child"


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory_child(checkpoints: list[int], traced_events: int) -> dict[str, Any]:
    """Run tidings memory:// (contract on) to each checkpoint, then ``traced_events`` more under tracemalloc.

    The bulk runs without tracemalloc (which would slow it several times over); at each checkpoint, after a
    full collection: the RSS and the number of objects the collector tracks. The traced window at the end
    finds what a run keeps per event: what was allocated during the window and is still held after it.
    """
    import tracemalloc

    events = make_events()
    runtime = TidingsRuntime("memory://", contract=True)
    app = runtime.app
    broker: Any = app.broker

    async def run_to(done: int, upto: int) -> None:
        while done < upto:
            stop = min(upto, done + WINDOW)
            for i in range(done, stop):
                await app.publish(events[i % POOL])
            await broker.join()
            done = stop

    points = []
    async with app:
        await run_to(0, 100)  # warm: first-call set-up is not growth
        done = 0
        start = time.perf_counter()
        for checkpoint in checkpoints:
            await run_to(done, checkpoint)
            done = checkpoint
            elapsed = time.perf_counter() - start
            gc.collect()
            points.append({"events": done, "rss": rss_bytes(), "objects": len(gc.get_objects()), "seconds": elapsed})
        gc.collect()
        tracemalloc.start(1)
        await run_to(0, traced_events)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        check_handled(
            "memory:// long run", runtime.handled - 100, checkpoints[-1] + traced_events, await runtime.dead_letters()
        )
    sites = []
    for stat in snapshot.statistics("lineno")[:5]:
        frame = stat.traceback[0]
        sites.append(
            {"where": f"{_short_path(frame.filename)}:{frame.lineno}", "bytes": stat.size, "blocks": stat.count}
        )
    return {
        "points": points,
        "traced_events": traced_events,
        "traced_held": held,
        "sites": sites,
        "published_kept": len(getattr(broker, "published", ())),
    }


def _short_path(filename: str) -> str:
    for marker in ("/site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.rsplit("/lib/python", 1)[-1]


def run_memory_child(checkpoints: tuple[int, ...], traced_events: int) -> dict[str, Any] | str:
    proc = subprocess.run(
        [sys.executable, __file__, MEMORY_CHILD, str(traced_events), *map(str, checkpoints)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the child process failed: {last[:160]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------------------------------------------
# The run


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_all(plan: Plan, progress: Progress, workdir: Path) -> tuple[list[Contender], dict[str, Any]]:
    task = progress.add_task("", total=None)
    events = make_events()
    bodies = wire_bodies(min(plan.floor_events, 20_000))
    fs_version = faststream_version()
    sqlite_missing = sqlite_available()
    size = len(bodies[0])
    contract = f"contract on: JSON Schema of {DOCUMENT.name} checked on publish and on receive (formats on)"
    contenders = [
        Contender(
            FLOOR,
            "floor: orjson.loads + model_validate",
            f"{size} B bodies (tidings' own); pydantic model of the 3 fields; no framework, no contract",
            plan.floor_events,
            lambda n: floor_round(n, bodies),
            lambda n: floor_latency(n, bodies),
            plan.latency_events,
            message_size=size,
        ),
        Contender(
            FLOOR_ROUND_TRIP,
            "floor round trip: model_dump + dumps + loads + model_validate",
            "both ends of the wire, no framework, no envelope, no contract (informational)",
            plan.floor_events,
            floor_round_trip_round,
        ),
        Contender(
            MEMORY_ON,
            "tidings memory://, contract on",
            f"{size} B (envelope in payload); typed pydantic handler; {contract}; window {WINDOW:,}",
            plan.memory_events,
            lambda n: memory_round(n, contract=True, events=events),
            lambda n: tidings_latency("memory://", n, contract=True, events=events),
            plan.latency_events,
            message_size=size,
        ),
        Contender(
            MEMORY_OFF,
            "tidings memory://, contract off",
            f"{size} B (envelope in payload); typed pydantic handler; no document bound; window {WINDOW:,}",
            plan.memory_events,
            lambda n: memory_round(n, contract=False, events=events),
            lambda n: tidings_latency("memory://", n, contract=False, events=events),
            plan.latency_events,
            message_size=size,
        ),
    ]
    if fs_version is None:
        contenders.append(
            Contender(
                FASTSTREAM,
                "FastStream TestRabbitBroker",
                "",
                plan.faststream_events,
                None,
                unavailable="not installed: .venv/bin/pip install -e '.[bench]'",
            )
        )
    else:
        fs_size = await faststream_message_size(events)
        contenders.append(
            Contender(
                FASTSTREAM,
                f"FastStream {fs_version} TestRabbitBroker",
                f"{fs_size} B body + AMQP properties; pydantic handler (same model, fast-depends); logger=None, "
                "graceful_timeout=None; no contract",
                plan.faststream_events,
                lambda n: faststream_round(n, events),
                lambda n: faststream_latency(n, events),
                plan.faststream_latency_events,
                message_size=fs_size,
            )
        )
    floor_sqlite = Contender(
        SQLITE_FLOOR,
        "floor sqlite: raw sqlite3 + orjson.loads + model_validate",
        f"{size} B bodies; WAL, synchronous=NORMAL; {plan.sqlite_window:,} rows per INSERT transaction, reads of "
        f"{plan.sqlite_prefetch} rows with the cursor committed per read; no framework, no envelope, no contract "
        "(informational)",
        plan.sqlite_events,
        None,
        message_size=size,
    )

    async def sqlite_floor_run(count: int) -> float:
        path = workdir / f"floor-{len(floor_sqlite.samples)}-{count}.db"
        return sqlite_floor_round(count, plan, bodies, path, floor_sqlite.publish_samples)

    floor_sqlite.run = sqlite_floor_run
    contenders.append(floor_sqlite)
    for name, on in ((SQLITE_OFF, False), (SQLITE_ON, True)):
        sqlite = Contender(
            name,
            f"tidings sqlite://, contract {'on' if on else 'off'}",
            f"{size} B; app.publish_many() of {plan.sqlite_window:,} events (one transaction each); subscriber in "
            "the same process and event loop: one core for both (informational)" + (f"; {contract}" if on else ""),
            plan.sqlite_events,
            None,
            unavailable=sqlite_missing,
            message_size=size,
        )
        if not sqlite_missing:
            sqlite.run = sqlite_runner(sqlite, plan, events, workdir, contract=on)
            sqlite.latency = partial(
                tidings_latency,
                f"sqlite:///{workdir / f'latency-{name}.db'}",
                contract=on,
                events=events,
                prefetch=plan.sqlite_prefetch,
            )
            sqlite.latency_events = plan.sqlite_latency_events
        contenders.append(sqlite)
    two = Contender(
        SQLITE_TWO,
        "tidings sqlite://, producer and consumer processes, contract on",
        f"{size} B; app.publish_many() of {plan.sqlite_window:,} events (one transaction each) in this process, "
        f"the subscriber (prefetch {plan.sqlite_prefetch}) in another, started before the clock; until its "
        f"handler saw the last event; {contract}",
        plan.sqlite_events,
        None,
        unavailable=sqlite_missing,
        message_size=size,
    )
    if not sqlite_missing:
        two.run = sqlite_two_process_runner(two, plan, events, workdir)
    contenders.append(two)

    measured = [c for c in contenders if c.run is not None]
    # one untimed warm-up round each (imports, first-call set-up, caches), then the timed rounds interleaved
    for contender in measured:
        progress.update(task, description=f"warm-up: {contender.label}")
        assert contender.run is not None
        await contender.run(max(1, contender.events // 10))
        contender.publish_samples.clear()
    for i in range(plan.rounds):
        for contender in measured:
            progress.update(task, description=f"round {i + 1}/{plan.rounds}: {contender.label}")
            assert contender.run is not None
            contender.samples.append(await contender.run(contender.events))
            gc.collect()
    for contender in measured:
        if contender.latency is not None:
            progress.update(task, description=f"latency, one event at a time: {contender.label}")
            contender.latencies = await contender.latency(contender.latency_events)
    extra: dict[str, Any] = {}
    if SQLITE_SETTINGS:
        extra["sqlite_settings"] = SQLITE_SETTINGS["settings"]
    progress.update(task, description=f"memory:// over {plan.checkpoints[-1]:,} events (child process)")
    extra["memory"] = await asyncio.to_thread(run_memory_child, plan.checkpoints, plan.traced_events)
    return contenders, extra


# --------------------------------------------------------------------------------------------------------------
# Reporting


def rate_cell(contender: Contender) -> str:
    stats = contender.stats
    if stats is None:
        return f"[yellow]{contender.unavailable}[/yellow]"
    n = contender.events
    return f"{n / stats.median:,.0f}\n[dim]{n / stats.max:,.0f}–{n / stats.min:,.0f}[/dim]"


def per_event_cell(contender: Contender) -> str:
    stats = contender.stats
    return format_seconds(stats.median / contender.events) if stats else "—"


def latency_cell(contender: Contender) -> str:
    if not contender.latencies:
        return "—"
    return (
        f"{format_seconds(statistics.median(contender.latencies))}\n"
        f"[dim]p99 {format_seconds(percentile(contender.latencies, 0.99))}[/dim]"
    )


def verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "—"
    ok = ratio >= target
    return f"[{'green' if ok else 'red'}]{ratio:.2f}x {'✔' if ok else '✘'}[/] [dim](≥ {target:g}x)[/dim]"


def ratios(contenders: dict[str, Contender]) -> dict[tuple[str, str], float]:
    """(tidings contender, peer) -> speed ratio of the median events/s."""
    out = {}
    for mine in (MEMORY_ON, MEMORY_OFF):
        for peer in (FLOOR, FLOOR_ROUND_TRIP, FASTSTREAM):
            a, b = contenders[mine].rate, contenders[peer].rate
            if a is not None and b is not None:
                out[(mine, peer)] = speed_ratio(a, b, higher_is_better=True)
    return out


def main_table(plan: Plan, contenders: list[Contender], extra: dict[str, Any]) -> Any:
    by_name = {c.name: c for c in contenders}
    found = ratios(by_name)
    table = new_table(
        "publish → typed, validated handler: events/s (median of rounds, min–max below), one process",
        caption=f"Rounds: {plan.rounds} timed rounds each, interleaved, after one untimed warm-up round. "
        "Per event = median round time / events. Latency: one event at a time, publish call → handler's first line "
        "(median, p99). vs floor / vs FastStream: tidings events/s ÷ theirs.",
    )
    for column in ("Contender", "Events / round", "events/s", "per event", "latency", "vs floor", "vs FastStream"):
        table.add_column(column, justify="left" if column == "Contender" else "right")
    for c in contenders:
        vs_floor = vs_fs = ""
        if (c.name, FLOOR) in found:
            vs_floor = verdict(found[(c.name, FLOOR)], TARGET_FLOOR)
            rt = found.get((c.name, FLOOR_ROUND_TRIP))
            if rt is not None:
                vs_floor += f"\n[dim]{rt:.2f}x the round trip[/dim]"
        if (c.name, FASTSTREAM) in found:
            vs_fs = verdict(found[(c.name, FASTSTREAM)], TARGET_FASTSTREAM)
        rate = rate_cell(c)
        sqlite_floor = by_name[SQLITE_FLOOR].rate
        if c.name == SQLITE_TARGET_ROW and c.rate is not None:
            vs_floor = verdict(c.rate / TARGET_SQLITE, 1.0).replace("(≥ 1x)", f"of {TARGET_SQLITE:,.0f}/s")
        elif c.name in SQLITES and c.rate is not None:
            vs_floor = f"[dim]{c.rate / TARGET_SQLITE:.2f}x of {TARGET_SQLITE:,.0f}/s on one core[/dim]"
        if c.name in SQLITES and c.rate is not None and sqlite_floor:
            vs_floor += f"\n[dim]{c.rate / sqlite_floor:.2f}x the sqlite floor[/dim]"
        if c.name in (*SQLITES, SQLITE_FLOOR) and c.rate is not None and c.publish_samples:
            pub = Stats(tuple(c.publish_samples))
            rate = f"{rate}\n[dim]published and consumed[/dim]\n{c.events / pub.median:,.0f}\n[dim]published only[/dim]"
        what = f"{c.label}\n[dim]{c.what}[/dim]" if c.what else c.label
        if c.name == SQLITE_OFF and "sqlite_settings" in extra:
            what += f"\n[dim]{extra['sqlite_settings']}[/dim]"
        table.add_row(what, f"{c.events:,}", rate, per_event_cell(c), latency_cell(c), vs_floor, vs_fs)
    return table


def memory_table(plan: Plan, memory: dict[str, Any] | str) -> Any:
    table = new_table(
        f"memory:// over a long run: {plan.checkpoints[-1]:,} events, contract on, window {WINDOW:,}, "
        "in a fresh child process",
        caption="At each checkpoint, after gc.collect(): RSS and the objects the garbage collector tracks. Traced "
        "window: tracemalloc on for the last events only; what they allocated and is still held after them. "
        f"Flat: RSS grows < {format_bytes(FLAT_RSS_BYTES)} from the first checkpoint to the last and the traced "
        f"window keeps < {FLAT_HELD_PER_EVENT} B per event.",
    )
    for column in ("Events handled", "RSS", "RSS growth\nper event", "gc objects", "events/s so far"):
        table.add_column(column, justify="right")
    if isinstance(memory, str):
        table.add_row(f"[red]{memory}[/red]", "", "", "", "")
        return table
    first = memory["points"][0]
    for point in memory["points"]:
        grown = point["rss"] - first["rss"]
        per_event = f"{grown / (point['events'] - first['events']):,.0f} B" if point is not first else ""
        table.add_row(
            f"{point['events']:,}",
            format_bytes(point["rss"]),
            f"{'+' if grown >= 0 else '−'}{format_bytes(abs(grown))}\n[dim]{per_event}[/dim]" if per_event else "—",
            f"{point['objects']:,}",
            f"{point['events'] / point['seconds']:,.0f}",
        )
    held = memory["traced_held"]
    table.add_row(
        f"traced window:\n{memory['traced_events']:,} more",
        f"held {format_bytes(held)}",
        f"[dim]{held / memory['traced_events']:,.0f} B[/dim]",
        "",
        "[dim](tracemalloc on)[/dim]",
    )
    return table


def memory_verdict(memory: dict[str, Any]) -> tuple[bool, int, float]:
    """(flat?, RSS growth from the first checkpoint to the last, bytes held per event in the traced window)."""
    growth = int(memory["points"][-1]["rss"] - memory["points"][0]["rss"])
    per_event = memory["traced_held"] / memory["traced_events"]
    return growth < FLAT_RSS_BYTES and per_event < FLAT_HELD_PER_EVENT, growth, per_event


def fill_report(report: Report, plan: Plan, contenders: list[Contender], extra: dict[str, Any]) -> None:
    for c in contenders:
        if c.rate is None or c.stats is None:
            continue
        what = f"{c.label}: {c.events} events of {c.message_size or '?'} B, median of {c.stats.rounds}"
        report.add_result(f"{what} ({c.what})", c.rate, "events/s", higher_is_better=True)
        if c.latencies:
            report.add_result(
                f"{c.label}: latency publish → handler, median of {len(c.latencies)} events",
                statistics.median(c.latencies),
                "s",
                higher_is_better=False,
            )
            report.add_result(
                f"{c.label}: latency publish → handler, p99 of {len(c.latencies)} events",
                percentile(c.latencies, 0.99),
                "s",
                higher_is_better=False,
            )
    for c in contenders:
        if c.name in (*SQLITES, SQLITE_FLOOR) and c.publish_samples:
            report.add_result(
                f"{c.label}: durable events/s published only, {c.events} events, window {plan.sqlite_window}, "
                f"median of {len(c.publish_samples)}",
                c.events / Stats(tuple(c.publish_samples)).median,
                "events/s",
                higher_is_better=True,
            )
    names = {FLOOR: "floor", FLOOR_ROUND_TRIP: "floor-round-trip", FASTSTREAM: "faststream-testrabbitbroker"}
    for (mine, peer), value in ratios({c.name: c for c in contenders}).items():
        on = "contract on" if mine == MEMORY_ON else "contract off"
        report.add_ratio(names[peer], f"memory:// events/s ({on})", value)
    by_name = {c.name: c for c in contenders}
    floor_sqlite = by_name[SQLITE_FLOOR].rate
    for name in SQLITES:
        rate = by_name[name].rate
        if rate is not None and floor_sqlite:
            on = {SQLITE_ON: "contract on", SQLITE_OFF: "contract off"}.get(name, "two processes, contract on")
            report.add_ratio(
                "sqlite-floor", f"sqlite:// durable events/s published and consumed ({on})", rate / floor_sqlite
            )
    memory = extra.get("memory")
    if isinstance(memory, dict):
        for point in memory["points"]:
            report.add_result(
                f"tidings memory:// RSS after {point['events']} events (contract on)",
                point["rss"],
                "B",
                higher_is_better=False,
            )
        _, growth, per_event = memory_verdict(memory)
        report.add_result(
            f"tidings memory:// RSS growth from {plan.checkpoints[0]} to {plan.checkpoints[-1]} events",
            growth,
            "B",
            higher_is_better=False,
        )
        report.add_result(
            f"tidings memory:// bytes held per event after a traced window of {memory['traced_events']} events",
            per_event,
            "B",
            higher_is_better=False,
        )


def print_verdicts(plan: Plan, contenders: list[Contender], extra: dict[str, Any]) -> None:
    by_name = {c.name: c for c in contenders}
    found = ratios(by_name)

    def line(text: str, ok: bool | None) -> None:
        mark = "[yellow]not measured[/yellow]" if ok is None else ("met" if ok else "[red]NOT met[/red]")
        console.print(f"  {text}: {mark}")

    console.print("Targets (issue #3):")
    r = found.get((MEMORY_ON, FLOOR))
    line(
        f"memory:// (contract on) ≥ {TARGET_FLOOR}x the floor" + (f" ({r:.2f}x)" if r else ""),
        None if r is None else r >= TARGET_FLOOR,
    )
    r = found.get((MEMORY_ON, FASTSTREAM))
    line(
        f"memory:// (contract on) ≥ {TARGET_FASTSTREAM:g}x FastStream TestRabbitBroker" + (f" ({r:.1f}x)" if r else ""),
        None if r is None else r >= TARGET_FASTSTREAM,
    )
    for name in (SQLITE_TARGET_ROW,):
        sqlite = by_name[name]
        if sqlite.rate is not None:
            line(
                f"{sqlite.label}: ≥ {TARGET_SQLITE:,.0f} durable events/s published and consumed "
                f"({sqlite.rate:,.0f}/s)",
                sqlite.rate >= TARGET_SQLITE,
            )
        else:
            line(f"sqlite:// ≥ {TARGET_SQLITE:,.0f} durable events/s ({sqlite.unavailable})", None)
            break
    memory = extra.get("memory")
    if isinstance(memory, dict):
        flat, growth, per_event = memory_verdict(memory)
        line(
            f"memory flat over {plan.checkpoints[-1]:,} events (RSS {'+' if growth >= 0 else '−'}"
            f"{format_bytes(abs(growth))} from {plan.checkpoints[0]:,} to {plan.checkpoints[-1]:,}; "
            f"{per_event:,.0f} B held per event)",
            flat,
        )
        if not flat:
            console.print(
                f"    what the traced window of {memory['traced_events']:,} events still holds (tracemalloc):"
            )
            for site in memory["sites"]:
                console.print(f"      {format_bytes(site['bytes'])} in {site['blocks']:,} blocks: {site['where']}")
            if memory.get("published_kept"):
                console.print(f"      MemoryBroker.published holds {memory['published_kept']:,} messages at the end")
    else:
        line(f"memory flat over {plan.checkpoints[-1]:,} events ({memory})", None)


# --------------------------------------------------------------------------------------------------------------
# --profile: where tidings' time goes per event on memory://


def time_per_call(fn: Callable[[], object], number: int = 20_000) -> float:
    """Best of 5 runs of ``number`` calls, in seconds per call (the steady cost, with warm caches)."""
    import timeit

    return min(timeit.repeat(fn, number=number, repeat=5)) / number


async def broker_only_round(count: int) -> float:
    """The memory broker alone: publish a ready Message, deliver it to a handler that acks, join per window."""
    from tidings.brokers.base import Message
    from tidings.brokers.memory import MemoryBroker

    broker = MemoryBroker()

    async def handle(delivery: Any) -> None:
        await delivery.ack()

    message = Message(CHANNEL, wire_bodies(1)[0], {"content-type": "application/json"})
    async with broker:
        await broker.subscribe(CHANNEL, "email-service", handle)
        start = time.perf_counter()
        for base in range(0, count, WINDOW):
            for _ in range(min(WINDOW, count - base)):
                await broker.publish(message)
            await broker.join()
        return time.perf_counter() - start


def stage_ledger() -> list[tuple[str, float | None]]:
    """Each step of the path, timed alone (µs per event); None where tidings' internals have moved on."""
    from tidings.app.contract import load_contract
    from tidings.events.codec import decode
    from tidings.events.envelope import new_envelope, utc_now, uuid7

    event = make_events()[1]
    envelope = new_envelope(CHANNEL, "1.0", source="user-service")
    data = event.model_dump(mode="json")
    body, headers = encode(envelope, data)
    received = decode(body, headers)[1]
    app = TidingsRuntime("memory://", contract=False).app
    steps: list[tuple[str, Callable[[], object]]] = [
        ("publish: event.model_dump(mode='json')", lambda: event.model_dump(mode="json")),
        ("publish: new_envelope()", lambda: new_envelope(CHANNEL, "1.0", source="user-service")),
        ("    of which uuid7()", uuid7),
        ("    of which utc_now()", utc_now),
        ("publish: encode() (envelope.to_dict + merge + orjson.dumps)", lambda: encode(envelope, data)),
        ("receive: decode() (orjson.loads + envelope)", lambda: decode(body, headers)),
        ("    of which orjson.loads", lambda: orjson.loads(body)),
        ("receive: Subscriber.parse() (strip envelope + model_validate)", lambda: app.subscribers[0].parse(received)),
        ("    of which UserCreated.model_validate", lambda: UserCreated.model_validate(data)),
    ]
    out: list[tuple[str, float | None]] = []
    for label, fn in steps:
        try:
            out.append((label, time_per_call(fn)))
        except Exception:  # an internal renamed or reshaped since this was written
            out.append((label, None))
    try:
        contract = load_contract(DOCUMENT).for_channel(CHANNEL)
        assert contract is not None
        flat = {**envelope.to_dict(), **data}
        out.append(
            (
                "contract: check() of one message (publish; receive is alike)",
                time_per_call(lambda: contract.check(CHANNEL, flat)),
            )
        )
        out.append(
            (
                "contract: {**envelope.to_dict(), **data} before the publish check",
                time_per_call(lambda: {**envelope.to_dict(), **data}),
            )
        )
    except Exception:
        out.append(("contract: check()", None))
    return out


def profile(plan: Plan) -> None:
    """Measured per-event time on memory://, each step timed alone, the memory broker alone, then cProfile."""
    import cProfile
    import pstats

    events = make_events()
    count = max(10_000, plan.memory_events // 2)

    async def measured() -> dict[str, float]:
        await memory_round(1_000, contract=True, events=events)
        out: dict[str, list[float]] = {"on": [], "off": [], "broker": []}
        for _ in range(MIN_ROUNDS):
            out["on"].append(await memory_round(count, contract=True, events=events) / count)
            out["off"].append(await memory_round(count, contract=False, events=events) / count)
            out["broker"].append(await broker_only_round(count) / count)
        return {k: min(v) for k, v in out.items()}

    totals = asyncio.run(measured())
    ledger = stage_ledger()
    table = new_table(
        f"Where tidings' time goes per event on memory:// (best of {MIN_ROUNDS} rounds of {count:,} events; steps "
        "timed alone, best of 5)",
        caption="Steps timed alone run with warm caches: in the pipeline each costs somewhat more. 'the rest' = "
        "measured − broker alone − the steps: App glue (publish/handle bodies, Incoming, context variable, "
        "middleware layers, ack) and cache misses.",
    )
    table.add_column("Step")
    table.add_column("µs / event", justify="right")
    table.add_column("share of contract on", justify="right")
    on, off, broker = totals["on"], totals["off"], totals["broker"]

    def row(label: str, seconds: float | None) -> None:
        if seconds is None:
            table.add_row(label, "[yellow]n/a (internals changed)[/yellow]", "")
        else:
            table.add_row(label, f"{seconds * 1e6:.2f}", f"{seconds / on:.0%}")

    row("[bold]measured: memory://, contract on[/bold]", on)
    row("[bold]measured: memory://, contract off[/bold]", off)
    row("memory broker alone: publish + queue + task per delivery + ack + join (no App)", broker)
    for label, seconds in ledger:
        row(label, seconds)
    steps_off = sum(s for label, s in ledger if s is not None and not label.startswith(("    ", "contract")))
    row("the rest, contract off (measured − broker − steps)", off - broker - steps_off)
    row("contract on − contract off (measured)", on - off)
    console.print(table)

    profiler = cProfile.Profile()

    async def go() -> None:
        await memory_round(1_000, contract=True, events=events)
        profiler.enable()
        await memory_round(count, contract=True, events=events)
        profiler.disable()

    asyncio.run(go())
    console.rule(f"cProfile (adds its own overhead per call): memory://, contract on, {count:,} events")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(20)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == MEMORY_CHILD:
        result = asyncio.run(memory_child([int(a) for a in sys.argv[3:]], int(sys.argv[2])))
        print(json.dumps(result))
        return
    if len(sys.argv) > 1 and sys.argv[1] == SQLITE_CONSUMER:
        sqlite_consumer_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile", action="store_true", help="instead: where tidings' time goes per event on memory:// (no peers)"
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    assert plan.rounds >= MIN_ROUNDS
    if args.profile:
        profile(plan)
        return

    from tidings import __version__ as tidings_version

    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    console.print(
        f"tidings {tidings_version}, pydantic {metadata.version('pydantic')}, orjson {metadata.version('orjson')}, "
        f"jsonschema-rs {metadata.version('jsonschema-rs')}; event: UserCreated(user_id: int, email: str, name: str) "
        f"on channel {CHANNEL!r}, contract: {DOCUMENT.relative_to(PROJECT)}"
    )
    start = time.perf_counter()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp, progress:
        contenders, extra = asyncio.run(run_all(plan, progress, Path(tmp)))
    console.print(f"Measured in {time.perf_counter() - start:.0f} s; {load_summary()} at the end")
    console.print(main_table(plan, contenders, extra))
    console.print(memory_table(plan, extra["memory"]))
    print_verdicts(plan, contenders, extra)

    if args.json:
        report = Report(BENCHMARK)
        fill_report(report, plan, contenders, extra)
        report.write_json(args.json)
        console.print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
