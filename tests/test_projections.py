"""Projections: set-up, catch-up in batches, live follow, rebuild, the event-type filter, ``$`` types skipped,
two runners refused, and exactly-once proved with a real crash: a child process SIGKILLed mid-batch, restarted,
must leave a read model identical to one built without a crash.

The read model (``Counts``) is deliberately not idempotent: ``logins = logins + 1`` per ``user.logged_in`` and
one row per applied event in ``applied`` (no unique key), so an event applied twice shows as a difference and
a skipped one as a missing row. It runs on the memory and SQLite event stores, into SQLite and PostgreSQL
targets (PostgreSQL at 127.0.0.1:5432, database ``test``; a schema of its own per test, dropped after).

Run as a script, this file is the crash test's child: ``python test_projections.py KIND STORE TARGET BATCH``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import PG_DSN, drop_pg_schema
from tidings.errors import UsageError
from tidings.events.event import Event
from tidings.eventstore.aggregate import Upcasters
from tidings.eventstore.base import ANY, EventStore, NewEvent, RecordedEvent
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.projection import (
    PostgresTarget,
    Projection,
    ProjectionConflict,
    ProjectionError,
    ProjectionRunner,
    SqliteTarget,
    Target,
    handles,
    target_from_url,
)

KILL_AT = "TIDINGS_TEST_PROJECTION_KILL_AT"
USERS = 37
NAMESPACE = uuid.UUID("6f1d3c1e-8b1a-4c55-9a0e-2f6a0c7e9d11")


class UserCreated(Event, type="user.created"):
    user_id: int
    email: str


# -- the projection under test --

_handled_in_this_process = 0


def _tick() -> None:
    """The crash hook: SIGKILL this process at its N-th handled event (``TIDINGS_TEST_PROJECTION_KILL_AT``)."""
    global _handled_in_this_process
    _handled_in_this_process += 1
    if os.environ.get(KILL_AT) == str(_handled_in_this_process):
        os.kill(os.getpid(), signal.SIGKILL)


class Counts(Projection):
    """Users and their logins; ``applied`` lists the position of every event applied (duplicates would show)."""

    name = "counts"

    def __init__(self, ph: str = "?", prefix: str = "") -> None:
        self.ph = ph  # the driver's placeholder: ? for sqlite3, %s for psycopg
        self.users = f"{prefix}users"
        self.applied = f"{prefix}applied"

    def setup(self, db: Any) -> None:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.users} (user_id BIGINT PRIMARY KEY, email TEXT NOT NULL, "
            "logins BIGINT NOT NULL DEFAULT 0)"
        )
        db.execute(f"CREATE TABLE IF NOT EXISTS {self.applied} (position BIGINT NOT NULL, kind TEXT NOT NULL)")

    def reset(self, db: Any) -> None:
        db.execute(f"DROP TABLE IF EXISTS {self.users}")
        db.execute(f"DROP TABLE IF EXISTS {self.applied}")

    @handles(UserCreated)
    def created(self, db: Any, event: UserCreated) -> None:
        _tick()
        db.execute(
            f"INSERT INTO {self.users} (user_id, email) VALUES ({self.ph}, {self.ph})", (event.user_id, event.email)
        )
        db.execute(f"INSERT INTO {self.applied} VALUES (-1, {self.ph})", (f"created {event.user_id}",))

    @handles("user.logged_in")
    def logged_in(self, db: Any, event: RecordedEvent) -> None:
        _tick()
        user_id = orjson.loads(event.data)["user_id"]
        db.execute(f"UPDATE {self.users} SET logins = logins + 1 WHERE user_id = {self.ph}", (user_id,))
        db.execute(f"INSERT INTO {self.applied} VALUES ({self.ph}, 'login')", (event.position,))


def log_events(count: int, start: int = 0) -> list[tuple[str, NewEvent]]:
    """A deterministic log (same ids every time): users created then logging in, with ``$snapshot:user`` events
    and ``order.placed`` events (handled by nobody) mixed in."""
    created = {i % USERS for i in range(start) if i % 50 != 49 and i % 10 != 7}
    out: list[tuple[str, NewEvent]] = []
    for i in range(start, start + count):
        event_id = str(uuid.uuid5(NAMESPACE, str(i)))
        user = i % USERS
        if i % 50 == 49:
            body = orjson.dumps({"version": 1, "state": {}})
            out.append((f"$snapshot-user-{user}", NewEvent(event_id, "$snapshot:user", body)))
        elif i % 10 == 7:
            out.append((f"order-{i}", NewEvent(event_id, "order.placed", orjson.dumps({"order_id": i}))))
        elif user not in created:
            created.add(user)
            body = orjson.dumps({"user_id": user, "email": f"u{user}@example.com"})
            out.append((f"user-{user}", NewEvent(event_id, "user.created", body)))
        else:
            out.append((f"user-{user}", NewEvent(event_id, "user.logged_in", orjson.dumps({"user_id": user}))))
    return out


async def fill(store: EventStore, count: int, start: int = 0) -> None:
    events = log_events(count, start)
    for offset in range(0, len(events), 100):
        await store.append_many([(stream, [event], ANY) for stream, event in events[offset : offset + 100]])


def handled_count(count: int, start: int = 0) -> int:
    return sum(1 for _, event in log_events(count, start) if event.event_type.startswith("user."))


def dump_sqlite(path: Path, prefix: str = "") -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        users = conn.execute(f"SELECT user_id, email, logins FROM {prefix}users ORDER BY user_id").fetchall()
        applied = conn.execute(f"SELECT position, kind FROM {prefix}applied ORDER BY position, kind").fetchall()
    return users, applied


async def last_handled(store: EventStore) -> int:
    """The position of the last event Counts handles: where a live runner's checkpoint ends up at least (live, it
    hears of no other event, so it cannot move past the unhandled ones after it as its catch-up does)."""
    [last] = await store.read_all(backwards=True, limit=1, event_types=Counts.event_types())
    return last.position


def sqlite_checkpoint(path: Path, name: str = "counts") -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT position FROM tidings_projections WHERE name = ?", (name,)).fetchone()
    return int(row[0])


def sqlite_store_class() -> Any:
    from tidings.eventstore.sqlite import SqliteEventStore

    return SqliteEventStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    made: EventStore = MemoryEventStore() if request.param == "memory" else sqlite_store_class()(tmp_path / "events.db")
    async with made:
        yield made


@pytest.fixture
def target(tmp_path: Path) -> Iterator[SqliteTarget]:
    made = SqliteTarget(tmp_path / "read.db")
    yield made
    made.close()


async def reference(store: EventStore, tmp_path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The read model built in one go (batch = everything), to compare others with."""
    path = tmp_path / f"reference-{uuid.uuid4().hex[:6]}.db"
    async with ProjectionRunner(store, Counts(), SqliteTarget(path), batch=100_000) as runner:
        await runner.catch_up()
    return dump_sqlite(path)


# -- declaring projections --


def test_handlers_are_collected_and_dollar_types_refused() -> None:
    assert Counts.event_types() == ["user.created", "user.logged_in"]
    with pytest.raises(UsageError, match=r"\$ are the event store's own"):
        handles("$snapshot:user")
    with pytest.raises(UsageError, match="handled by both"):

        class Twice(Projection):
            name = "twice"

            @handles("a")
            def one(self, db: Any, event: RecordedEvent) -> None: ...

            @handles("a")
            def two(self, db: Any, event: RecordedEvent) -> None: ...

    class Nameless(Projection):
        @handles("a")
        def one(self, db: Any, event: RecordedEvent) -> None: ...

    class Idle(Projection):
        name = "idle"

    store = MemoryEventStore()
    with pytest.raises(UsageError, match="has no name"):
        ProjectionRunner(store, Nameless(), SqliteTarget(":memory:"))
    with pytest.raises(UsageError, match="handles no event type"):
        ProjectionRunner(store, Idle, SqliteTarget(":memory:"))
    with pytest.raises(UsageError, match="batch must be"):
        ProjectionRunner(store, Counts(), SqliteTarget(":memory:"), batch=0)


def test_target_urls() -> None:
    assert isinstance(target_from_url("sqlite:///read.db"), SqliteTarget)
    pg = target_from_url("postgresql://app:secret@db:5432/app?schema=reads&sslmode=disable")
    assert isinstance(pg, PostgresTarget)
    assert pg.schema == "reads"
    assert pg.dsn == "postgresql://app:secret@db:5432/app?sslmode=disable"
    assert "secret" not in str(pg)
    for bad in ("sqlite:///:memory:", "sqlite://", "redis://x", "read.db"):
        with pytest.raises(UsageError):
            target_from_url(bad)
    with pytest.raises(UsageError, match="plain SQL name"):
        SqliteTarget("x.db", checkpoints="a; DROP TABLE b")


# -- catching up --


async def test_setup_is_idempotent_and_starts_at_zero(store: EventStore, target: SqliteTarget) -> None:
    runner = ProjectionRunner(store, Counts(), target)
    assert await runner.start() == 0
    assert await runner.start() == 0  # setup twice: CREATE ... IF NOT EXISTS, the checkpoint row kept
    assert target.checkpoint("counts") is not None
    assert target.checkpoint("another") is None
    await runner.close()
    assert dump_sqlite(Path(target.path)) == ([], [])
    assert SqliteTarget(Path(target.path).with_name("never.db")).checkpoint("counts") is None
    assert not Path(target.path).with_name("never.db").exists()  # asking created nothing


async def test_catch_up_in_batches_then_only_new_events(
    store: EventStore, target: SqliteTarget, tmp_path: Path
) -> None:
    await fill(store, 400)
    batches: list[tuple[int, int]] = []
    async with ProjectionRunner(store, Counts(), target, batch=64) as runner:
        started = time.perf_counter()
        applied = await runner.catch_up(progress=lambda done, total: batches.append((done, total)))
        seconds = time.perf_counter() - started
        handled = handled_count(400)
        assert applied == handled
        # ceil(handled / 64) transactions of events, then the final (empty) read
        assert len(batches) == -(-handled // 64) + 1
        assert batches[-1] == (400, 400)  # the checkpoint moved past the trailing events nobody handles
        assert runner.position == 400 == sqlite_checkpoint(Path(target.path))
        assert await runner.catch_up() == 0
        await fill(store, 100, start=400)
        assert await runner.catch_up() == handled_count(100, 400)
        assert runner.position == 500
    users, applied_rows = dump_sqlite(Path(target.path))
    assert (users, applied_rows) == await reference(store, tmp_path)
    assert len(users) == USERS
    assert sum(row[2] for row in users) == sum(1 for _, e in log_events(500) if e.event_type == "user.logged_in")
    print(f"\ncatch-up ({type(store).__name__}): {applied} events in {len(batches) - 1} batches in {seconds:.3f} s")


class _Spy(MemoryEventStore):
    """Records what the runner asks the store for."""

    def __init__(self) -> None:
        super().__init__()
        self.filters: list[Sequence[str] | None] = []

    async def read_all(self, **kwargs: Any) -> list[RecordedEvent]:
        if not kwargs.get("backwards"):  # (a backwards read of one event finds the log's end)
            self.filters.append(kwargs.get("event_types"))
        return await super().read_all(**kwargs)


async def test_only_the_handled_types_are_read_and_dollar_types_skipped(target: SqliteTarget) -> None:
    seen: list[str] = []

    class Logins(Projection):
        name = "logins"

        @handles("user.logged_in")
        def login(self, db: Any, event: RecordedEvent) -> None:
            seen.append(event.event_type)

    # a projection cannot declare a $ type; if one got into its handlers anyway, the runner still skips it
    Logins.__handlers__["$snapshot:user"] = (None, Logins.login)
    async with _Spy() as store:
        await fill(store, 300)
        async with ProjectionRunner(store, Logins(), target, batch=50) as runner:
            applied = await runner.catch_up()
    assert {tuple(f or ()) for f in store.filters} == {("$snapshot:user", "user.logged_in")}
    assert set(seen) == {"user.logged_in"}
    assert applied == len(seen) == sum(1 for _, e in log_events(300) if e.event_type == "user.logged_in")
    assert sqlite_checkpoint(Path(target.path), "logins") == 300  # past the skipped and unread events


async def test_event_models_are_upcast_and_validated(target: SqliteTarget) -> None:
    class Renamed(Event, type="user.renamed", version="2.0"):
        user_id: int
        name: str

    upcasters = Upcasters()

    @upcasters.register("user.renamed", "1.0", "2.0")
    def _full_name(data: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": data["user_id"], "name": f"{data['first']} {data['last']}"}

    names: list[str] = []

    class Names(Projection):
        name = "names"

        @handles(Renamed)
        def renamed(self, db: Any, event: Renamed) -> None:
            names.append(event.name)

    Names.upcasters = upcasters
    async with MemoryEventStore() as store:
        old = NewEvent(str(uuid.uuid4()), "user.renamed", b'{"user_id": 1, "first": "Ada", "last": "L"}', b"{}", "1.0")
        new = NewEvent(str(uuid.uuid4()), "user.renamed", b'{"user_id": 1, "name": "Ada Lovelace"}', b"{}", "2.0")
        await store.append("user-1", [old, new])
        async with ProjectionRunner(store, Names(), target) as runner:
            assert await runner.catch_up() == 2
        assert names == ["Ada L", "Ada Lovelace"]
        Names.upcasters = None  # a 1.0 event without its upcaster: the batch fails, says what to register
        bad = SqliteTarget(Path(target.path).with_name("bad.db"))
        async with ProjectionRunner(store, Names(), bad) as runner:
            with pytest.raises(ProjectionError, match=r"register an upcaster from 1\.0") as caught:
                await runner.catch_up()
            assert "position 1" in str(caught.value)
            checkpoint = bad.checkpoint("names")
            assert checkpoint is not None
            assert checkpoint.position == 0


async def test_a_failing_handler_rolls_its_batch_back(store: EventStore, target: SqliteTarget, tmp_path: Path) -> None:
    await fill(store, 200)

    class Fragile(Counts):
        fail_at: int | None = 120

        @handles("user.logged_in")
        def logged_in(self, db: Any, event: RecordedEvent) -> None:
            if event.position == self.fail_at:
                raise RuntimeError("disk on fire")
            super().logged_in(db, event)

    projection = Fragile()
    async with ProjectionRunner(store, projection, target, batch=30) as runner:
        with pytest.raises(
            ProjectionError, match=r"RuntimeError: disk on fire .* rolled back, the checkpoint stays at"
        ) as caught:
            await runner.catch_up()
        assert "position 120" in str(caught.value)
        checkpoint = sqlite_checkpoint(Path(target.path))
        assert 0 < checkpoint < 120
        _, applied = dump_sqlite(Path(target.path))
        assert max(row[0] for row in applied) <= checkpoint  # nothing of the failed batch
        projection.fail_at = None  # fixed: the next run takes it from the checkpoint
        await runner.catch_up()
    assert dump_sqlite(Path(target.path)) == await reference(store, tmp_path)


async def test_a_handler_that_commits_is_caught(target: SqliteTarget) -> None:
    class Committing(Counts):
        @handles("user.logged_in")
        def logged_in(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
            db.commit()

    async with MemoryEventStore() as store:
        await fill(store, 60)
        async with ProjectionRunner(store, Committing(), target) as runner:
            with pytest.raises(ProjectionError, match="a handler committed"):
                await runner.catch_up()


async def test_two_runners_of_one_projection_conflict(store: EventStore, target: SqliteTarget) -> None:
    await fill(store, 200)
    first = ProjectionRunner(store, Counts(), target, batch=20)
    second = ProjectionRunner(store, Counts(), SqliteTarget(target.path), batch=20)
    try:
        await first.start()
        await second.start()
        await second.catch_up()  # moves the checkpoint the first runner thinks is at 0
        with pytest.raises(ProjectionConflict, match="another runner"):
            await first.catch_up()
        assert len(dump_sqlite(Path(target.path))[1]) == handled_count(200)  # nothing applied twice
    finally:
        await first.close()
        await second.close()


# -- live --


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_run_follows_live_and_commits_on_batch_size_idle_and_stop(
    store: EventStore, target: SqliteTarget, tmp_path: Path
) -> None:
    await fill(store, 100)
    stop = asyncio.Event()
    # idle and max_delay long: only a full batch (or the stop) commits
    runner = ProjectionRunner(store, Counts(), target, batch=10, idle=30, max_delay=30)
    task = asyncio.create_task(runner.run(stop))
    await wait_for(lambda: runner.position == 100)
    live = [(s, e) for s, e in log_events(300, 100) if e.event_type.startswith("user.")][:25]
    started = time.perf_counter()
    for stream, event in live:
        await store.append(stream, [event])
    last = (await store.stats()).last_position
    positions = [e.position for e in await store.read_all(from_position=100, limit=100)]
    await wait_for(lambda: runner.position == positions[19])  # two full batches of 10
    latency = time.perf_counter() - started
    await asyncio.sleep(0.2)
    assert runner.position == positions[19]  # the other 5 wait: no idle time yet
    stop.set()
    applied = await asyncio.wait_for(task, 10)
    assert runner.position == last  # the received events were committed on the way out
    assert applied == handled_count(100) + 25
    await runner.close()

    # a short idle time: a lone event commits promptly
    stop = asyncio.Event()
    runner = ProjectionRunner(store, Counts(), target, batch=500, idle=0.02, max_delay=0.2)
    task = asyncio.create_task(runner.run(stop))
    await wait_for(lambda: runner.position == last)
    stream, event = next((s, e) for s, e in log_events(300, 200) if e.event_type == "user.logged_in")
    started = time.perf_counter()
    written = await store.append(stream, [event])
    await wait_for(lambda: runner.position == written.last_position)
    idle_latency = time.perf_counter() - started
    stop.set()
    assert await asyncio.wait_for(task, 10) == 1
    await runner.close()
    users, applied_rows = dump_sqlite(Path(target.path))
    assert (users, applied_rows) == await reference(store, tmp_path)
    print(
        f"\nlive ({type(store).__name__}): 20 events committed {latency * 1000:.0f} ms after the first append "
        f"(batch 10); a lone event {idle_latency * 1000:.0f} ms (idle 20 ms)"
    )


async def test_a_cancelled_runner_carries_on_from_what_was_committed(
    store: EventStore, target: SqliteTarget, tmp_path: Path
) -> None:
    await fill(store, 300)

    class Slow(Counts):
        @handles("user.logged_in")
        def logged_in(self, db: Any, event: RecordedEvent) -> None:
            time.sleep(0.002)  # a batch takes ~40 ms: the cancel lands while a worker thread is in one
            super().logged_in(db, event)

    runner = ProjectionRunner(store, Slow(), target, batch=20)
    task = asyncio.create_task(runner.run(asyncio.Event()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.position is None  # unknown: the cancelled batch's thread may still commit
    await runner.catch_up()  # reads the checkpoint again (after that thread): no conflict, nothing twice
    await runner.close()
    assert dump_sqlite(Path(target.path)) == await reference(store, tmp_path)


async def test_run_ends_when_the_store_closes(target: SqliteTarget) -> None:
    store = MemoryEventStore()
    await store.start()
    await fill(store, 30)
    runner = ProjectionRunner(store, Counts(), target, idle=0.01)
    task = asyncio.create_task(runner.run(asyncio.Event()))
    await wait_for(lambda: runner.position == 30)
    await store.close()
    assert await asyncio.wait_for(task, 5) == handled_count(30)
    await runner.close()


# -- rebuilding --


async def test_rebuild_from_zero_with_progress(store: EventStore, target: SqliteTarget, tmp_path: Path) -> None:
    await fill(store, 600)
    expected = await reference(store, tmp_path)
    async with ProjectionRunner(store, Counts(), target, batch=100) as runner:
        await runner.catch_up()
        with sqlite3.connect(target.path) as conn:  # the read model goes wrong (a bug, fixed since)
            conn.execute("UPDATE users SET logins = 0")
        seen: list[tuple[int, int]] = []
        started = time.perf_counter()
        applied = await runner.rebuild(progress=lambda done, total: seen.append((done, total)))
        seconds = time.perf_counter() - started
    assert applied == handled_count(600)
    assert seen[-1] == (600, 600)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert dump_sqlite(Path(target.path)) == expected
    print(f"\nrebuild ({type(store).__name__}): {applied} events in {seconds:.3f} s")


async def test_a_rebuild_that_fails_midway_restarts_cleanly(
    store: EventStore, target: SqliteTarget, tmp_path: Path
) -> None:
    await fill(store, 300)
    expected = await reference(store, tmp_path)

    class Flaky(Counts):
        broken = False

        @handles("user.logged_in")
        def logged_in(self, db: Any, event: RecordedEvent) -> None:
            if self.broken and event.position > 150:
                raise RuntimeError("crash")
            super().logged_in(db, event)

    projection = Flaky()
    async with ProjectionRunner(store, projection, target, batch=40) as runner:
        await runner.catch_up()
        projection.broken = True
        with pytest.raises(ProjectionError):
            await runner.rebuild()
        checkpoint = sqlite_checkpoint(Path(target.path))
        _, applied = dump_sqlite(Path(target.path))
        assert 0 < checkpoint <= 150
        assert max(row[0] for row in applied) <= checkpoint  # the read model is the reset one plus whole batches
        projection.broken = False
        await runner.catch_up()  # resume where the rebuild got to
    assert dump_sqlite(Path(target.path)) == expected

    class NoReset(Projection):
        name = "no-reset"

        @handles("user.created")
        def created(self, db: Any, event: RecordedEvent) -> None: ...

    async with ProjectionRunner(store, NoReset(), target) as runner:
        with pytest.raises(UsageError, match="define reset"):
            await runner.rebuild()


async def test_status_counts_what_is_left(target: SqliteTarget) -> None:
    async with MemoryEventStore() as store:
        await fill(store, 200)
        runner = ProjectionRunner(store, Counts(), target, batch=50)
        status = await runner.status()
        assert status.checkpoint is None
        assert (status.last_position, status.behind, status.exact) == (200, handled_count(200), True)
        assert (await runner.status(count_limit=10)).exact is False
        await runner.catch_up()
        status = await runner.status()
        assert (status.checkpoint, status.behind, status.last_position) == (200, 0, 200)
        assert status.updated_at is not None
        assert abs(status.updated_at - time.time()) < 60
        await runner.close()


# -- exactly once, across a real crash --


async def _child(kind: str, store_path: str, target_path: str, batch: int) -> int:
    """The crash test's child: catch up (memory: the same deterministic log rebuilt first)."""
    made: EventStore
    if kind == "memory":
        made = MemoryEventStore()
    else:
        from tidings.eventstore.sqlite import SqliteEventStore

        made = SqliteEventStore(store_path)
    async with made:
        if kind == "memory":
            await fill(made, int(store_path))
        async with ProjectionRunner(made, Counts(), SqliteTarget(target_path), batch=batch) as runner:
            applied = await runner.catch_up()
            print(json.dumps({"applied": applied, "position": runner.position}), flush=True)
    return 0


def _spawn(kind: str, store: str, target: Path, batch: int, kill_at: int | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at is not None:
        env[KILL_AT] = str(kill_at)
    return subprocess.run(
        [sys.executable, __file__, kind, store, str(target), str(batch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("kill_at", [137, 101])  # mid-batch, and the first event of a batch (just after a commit)
async def test_a_crash_mid_batch_applies_nothing_twice_and_skips_nothing(
    kind: str, kill_at: int, tmp_path: Path
) -> None:
    events, batch = 1000, 50
    store_arg = str(events)
    if kind == "sqlite":
        cls = sqlite_store_class()
        store_arg = str(tmp_path / "events.db")
        async with cls(store_arg) as filled:
            await fill(filled, events)
    async with MemoryEventStore() as memory:
        await fill(memory, events)
        expected = await reference(memory, tmp_path)
    target = tmp_path / "read.db"
    started = time.perf_counter()

    crashed = _spawn(kind, store_arg, target, batch, kill_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    checkpoint = sqlite_checkpoint(target)
    users, applied = dump_sqlite(target)
    committed = (kill_at - 1) // batch * batch  # whole batches before the one it died in
    assert len(applied) == committed  # nothing of the batch it died in
    assert max(row[0] for row in applied) <= checkpoint
    assert sum(row[2] for row in users) == sum(1 for row in applied if row[1] == "login")

    restarted = _spawn(kind, store_arg, target, batch, None)
    assert restarted.returncode == 0, restarted.stderr
    result = json.loads(restarted.stdout.strip().splitlines()[-1])
    seconds = time.perf_counter() - started
    assert result["applied"] == handled_count(events) - committed
    assert result["position"] == events
    assert dump_sqlite(target) == expected  # exactly the read model built without a crash
    users, applied = dump_sqlite(target)
    logins = sum(row[2] for row in users)
    print(
        f"\ncrash ({kind} store): {events} events, {handled_count(events)} handled in batches of {batch}; SIGKILL at "
        f"handled event {kill_at} → checkpoint {checkpoint} with {committed} applied; restart applied "
        f"{result['applied']}; read model == uninterrupted build ({len(users)} users, {logins} logins, "
        f"{len(applied)} rows); {seconds:.2f} s for both runs"
    )


# -- PostgreSQL --


@pytest.fixture
def pg_target(pg_schema: str) -> Iterator[PostgresTarget]:
    made = PostgresTarget(PG_DSN, schema=pg_schema, checkpoints=f"checkpoints_{uuid.uuid4().hex[:6]}")
    try:
        yield made
    finally:
        made.close()


def dump_pg(target: PostgresTarget, prefix: str = "") -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{target.schema}"'.encode())
        users = conn.execute(f"SELECT user_id, email, logins FROM {prefix}users ORDER BY user_id".encode()).fetchall()
        applied = conn.execute(
            f"SELECT position, kind FROM {prefix}applied ORDER BY position, kind".encode()
        ).fetchall()
    return [tuple(r) for r in users], [tuple(r) for r in applied]


async def test_postgres_target(pg_target: PostgresTarget, tmp_path: Path) -> None:
    async with MemoryEventStore() as store:
        await fill(store, 500)
        expected = await reference(store, tmp_path)
        runner = ProjectionRunner(store, Counts("%s"), pg_target, batch=64)
        try:
            started = time.perf_counter()
            applied = await runner.catch_up()
            seconds = time.perf_counter() - started
            assert applied == handled_count(500)
            assert dump_pg(pg_target) == expected
            checkpoint = pg_target.checkpoint("counts")
            assert checkpoint is not None
            assert checkpoint.position == 500

            # live
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await fill(store, 100, start=500)
            last = await last_handled(store)
            await wait_for(lambda: (runner.position or 0) >= last)
            stop.set()
            assert await asyncio.wait_for(task, 10) == handled_count(100, 500)

            # a second runner moves the checkpoint: the first one's next batch is refused
            other = ProjectionRunner(
                store, Counts("%s"), PostgresTarget(PG_DSN, schema=pg_target.schema, checkpoints=pg_target.checkpoints)
            )
            await fill(store, 50, start=600)
            await other.catch_up()
            await other.close()
            await fill(store, 50, start=650)
            with pytest.raises(ProjectionConflict):
                await runner.catch_up()

            # rebuild
            rebuilt = await runner.rebuild()
            assert rebuilt == handled_count(700)
            async with MemoryEventStore() as again:
                await fill(again, 700)
                assert dump_pg(pg_target) == await reference(again, tmp_path)
        finally:
            await runner.close()
    print(f"\nPostgreSQL target: {applied} events in batches of 64 in {seconds:.3f} s")


async def test_postgres_handler_cannot_commit_and_errors_are_one_line(pg_target: PostgresTarget) -> None:
    class Committing(Counts):
        @handles("user.logged_in")
        def logged_in(self, db: Any, event: RecordedEvent) -> None:
            db.commit()

    async with MemoryEventStore() as store:
        await fill(store, 60)
        async with ProjectionRunner(store, Committing("%s"), pg_target) as runner:
            with pytest.raises(ProjectionError, match="commit") as caught:
                await runner.catch_up()
            assert "\n" not in str(caught.value)
            assert runner.position is None  # read again before the next batch
            checkpoint = pg_target.checkpoint("counts")
            assert checkpoint is not None
            assert checkpoint.position == 0
    unreachable = PostgresTarget("postgresql://nobody:pw@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(ProjectionError) as caught:
        unreachable.checkpoint("counts")
    assert "pw" not in str(caught.value)


async def test_postgres_store_into_postgres_target(pg_target: PostgresTarget, tmp_path: Path) -> None:
    from tidings.eventstore.postgres import PostgresEventStore

    schema = f"tidings_proj_store_{uuid.uuid4().hex[:8]}"
    try:
        async with PostgresEventStore(PG_DSN, schema=schema) as store:
            await fill(store, 300)
            expected = await reference(store, tmp_path)
            async with ProjectionRunner(store, Counts("%s"), pg_target, batch=100) as runner:
                assert await runner.catch_up() == handled_count(300)
                stop = asyncio.Event()
                task = asyncio.create_task(runner.run(stop))
                await fill(store, 100, start=300)
                last = await last_handled(store)
                await wait_for(lambda: (runner.position or 0) >= last)
                stop.set()
                await asyncio.wait_for(task, 10)
            async with MemoryEventStore() as again:
                await fill(again, 400)
                expected = await reference(again, tmp_path)
            assert dump_pg(pg_target) == expected
    finally:
        drop_pg_schema(schema)


def test_targets_share_the_base() -> None:
    assert issubclass(SqliteTarget, Target)
    assert issubclass(PostgresTarget, Target)


if __name__ == "__main__":
    kind_, store_, target_, batch_ = sys.argv[1:5]
    sys.exit(asyncio.run(_child(kind_, store_, target_, int(batch_))))
