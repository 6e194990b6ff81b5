"""SQLite under real faults: busy (another process holds the write lock), full (the file system has no space
left) and I/O errors, for the embedded broker, the inbox idempotency store and the outbox relay.

Each fails closed (nothing acknowledged, nothing marked sent, nothing half-written), says so in one line (never
a traceback), and recovers once the condition clears. No sqlite3 call is mocked; the faults are real:

*busy*      a child process (``sys.executable -c``) runs ``BEGIN IMMEDIATE`` on the file and holds it until told.
*full*      the file lives on a tmpfs of a few MiB (mounted by the test: needs root) that a filler file fills up
            to ``ENOSPC``; deleting the filler clears it.
*I/O error* the file lives on an ext4 image on a loop device (needs root, ``mkfs.ext4``); ``EXT4_IOC_SHUTDOWN``
            makes every later read and write of that file system fail with ``EIO`` (what a dying disk does).
            ``os.sync()`` first, so what was committed before is on the image. Clearing it is an operator's
            repair: unmount, mount again, and reopen (a connection to a shut-down file system stays dead).

The broker's busy timeout is a constant (30 s, no URL option): the tests set it to 0.3 s through the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import tidings.brokers.sqlite as sqlite_broker
from tidings.app import App, EventContext
from tidings.brokers.base import Broker, BrokerError, Delivery, Message
from tidings.brokers.sqlite import SqliteBroker
from tidings.events.event import Event
from tidings.reliability.idempotency import SqliteIdempotencyStore, StoreError
from tidings.reliability.outbox import Outbox, OutboxError, OutboxRelay
from tidings.reliability.retry import RetryPolicy
from tidings.testing.services import unavailable
from tidings.testing.wrap import BrokerWrapper

BUSY = 0.3  # the broker's busy timeout in these tests (seconds)


class Paid(Event, type="fault.paid"):
    order_id: int


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text
    return text


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(db: Path, sql: str, *params: Any) -> Any:
    return rows(db, sql, *params)[0][0]


def event_ids(db: Path) -> list[str]:
    """The event ids of the broker's log, in order."""
    return [orjson.loads(body)["event_id"] for (body,) in rows(db, "SELECT body FROM tidings_log ORDER BY position")]


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def tracebacks(caplog: pytest.LogCaptureFixture) -> int:
    """Log records that carry a traceback (``exc_info``): what an operator sees as a multi-line error."""
    return sum(1 for record in caplog.records if record.exc_info)


# -- the faults ----------------------------------------------------------------------------------------------------

HOLDER = r"""
import signal, sqlite3, sys
signal.alarm(120)  # never outlives its test
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "lock":
        conn.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
    elif line.strip() == "unlock":
        conn.execute("ROLLBACK")
        print("unlocked", flush=True)
conn.close()
"""


class LockHolder:
    """Another process, which takes (:meth:`lock`) and gives back (:meth:`unlock`) a SQLite file's write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.held = False
        self._expect_sync("ready")

    def _expect_sync(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == word, f"lock holder said {line!r}, not {word!r}"

    async def _tell(self, command: str, answer: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        # in a thread: the child may wait for a lock this process holds, which the event loop must release
        await asyncio.to_thread(self._expect_sync, answer)

    async def lock(self) -> None:
        await self._tell("lock", "locked")
        self.held = True

    async def unlock(self) -> None:
        await self._tell("unlock", "unlocked")
        self.held = False

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the child ends its loop and exits, releasing what it held
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def holders() -> Iterator[Callable[[Path], LockHolder]]:
    made: list[LockHolder] = []

    def make(path: Path) -> LockHolder:
        holder = LockHolder(path)
        made.append(holder)
        return holder

    yield make
    for holder in made:
        holder.close()


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (mount)")


def _unmount(point: Path) -> None:
    if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)  # something still open: detach it


class SmallDisk:
    """A tmpfs of ``size`` that :meth:`fill` fills to ENOSPC and :meth:`clear` empties again."""

    def __init__(self, root: Path, size: str) -> None:
        self.root = root
        root.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True, text=True
        )
        if done.returncode != 0:
            unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        self.filler = root / "filler"

    def fill(self) -> int:
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                written += os.write(fd, b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        fd = os.open(self.filler, os.O_WRONLY | os.O_APPEND)  # the last few bytes of the last page too
        try:
            while True:
                written += os.write(fd, b"\0")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        return written

    def clear(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    _need_root("a small tmpfs")
    disk = SmallDisk(tmp_path / "small", "8m")
    try:
        yield disk
    finally:
        _unmount(disk.root)


EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_LOGFLUSH = 1


class FailingDisk:
    """An ext4 file system on a loop device; :meth:`fail` shuts it down (every I/O: EIO), :meth:`repair` remounts."""

    def __init__(self, root: Path) -> None:
        self.image = root / "disk.img"
        self.root = root / "ext4"
        self.root.mkdir()
        with open(self.image, "wb") as image:
            image.truncate(16 << 20)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], capture_output=True, text=True)
        if made.returncode != 0:
            unavailable(f"cannot make an ext4 image: {made.stderr.strip()}")
        self.mounted = False
        self._mount()

    def _mount(self) -> None:
        done = subprocess.run(["mount", "-o", "loop", str(self.image), str(self.root)], capture_output=True, text=True)
        if done.returncode != 0:
            unavailable(f"cannot mount an ext4 image on a loop device: {done.stderr.strip()}")
        self.mounted = True

    def fail(self) -> None:
        os.sync()  # what was committed is on the image: the fault starts now, it is not a power cut
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_LOGFLUSH))
        finally:
            os.close(fd)

    def repair(self) -> None:
        """Unmount (every connection to it must be closed: the unmount fails otherwise) and mount again."""
        done = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
        assert done.returncode == 0, f"still in use after its components closed: {done.stderr.strip()}"
        self.mounted = False
        self._mount()


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[FailingDisk]:
    _need_root("an ext4 loop device")
    if shutil.which("mkfs.ext4") is None:
        unavailable("mkfs.ext4 is not installed")
    disk = FailingDisk(tmp_path)
    try:
        yield disk
    finally:
        if disk.mounted:
            _unmount(disk.root)


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_broker, "_BUSY_TIMEOUT", BUSY)


# -- helpers ---------------------------------------------------------------------------------------------------------


def messages(first: int, count: int, size: int = 32) -> list[Message]:
    producer = App("memory://", name="shop")
    out = []
    for i in range(first, first + count):
        message, _ = producer._prepare(Paid(order_id=i), None, None, None, None, None)
        out.append(Message(message.channel, message.body + b" " * size, message.headers, message.key))
    return out


def ids_of(batch: Iterable[Message]) -> list[str]:
    return [orjson.loads(message.body)["event_id"] for message in batch]


class Receiver:
    """A consumer group that records each delivery's event id and acks it."""

    def __init__(self) -> None:
        self.got: list[str] = []

    async def handle(self, delivery: Delivery) -> None:
        self.got.append(orjson.loads(delivery.message.body)["event_id"])
        await delivery.ack()


async def publish_refused(publish: Awaitable[None]) -> str:
    with pytest.raises(BrokerError) as caught:
        await publish
    return one_line(caught.value)


# -- (a) the embedded broker ------------------------------------------------------------------------------------------


async def test_a_locked_broker_file_refuses_publishes_in_one_line_and_works_once_released(
    tmp_path: Path, holders: Callable[[Path], LockHolder], short_busy_timeout: None, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "broker.db"
    receiver = Receiver()
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.subscribe("fault.paid", "billing", receiver.handle)
        before = messages(0, 3)
        await broker.publish_many(before)
        await until(lambda: len(receiver.got) == 3, "the first deliveries")
        await until(lambda: scalar(db, "SELECT count(*) FROM tidings_leases") == 0, "their acks")

        holder = holders(db)
        await holder.lock()
        refused = messages(3, 5)
        started = time.monotonic()
        outcomes = await asyncio.gather(
            broker.publish(refused[0]),
            broker.publish_many(refused[1:3]),
            broker.publish(refused[3]),
            broker.publish(refused[4]),
            return_exceptions=True,
        )
        waited = time.monotonic() - started
        errors = [one_line(exc) for exc in outcomes if isinstance(exc, BaseException)]
        assert len(errors) == 4, outcomes
        assert all(error.startswith(f"sqlite broker {db}: database is locked; another connection") for error in errors)
        assert scalar(db, "SELECT count(*) FROM tidings_log") == 3  # nothing half-written
        claims_refused = tracebacks(caplog)

        await holder.unlock()
        after = messages(8, 4)
        await broker.publish_many(after)
        await until(lambda: len(receiver.got) == 7, "the deliveries after the lock")
        await asyncio.sleep(0.1)  # (a redelivery would show here)
    assert event_ids(db) == ids_of(before + after)
    assert receiver.got == ids_of(before + after)  # each once, and none of the refused ones
    print(
        f"\nbroker locked: 4 publishes (5 messages) refused in {waited:.2f} s with busy timeout {BUSY} s "
        f"({waited / BUSY:.1f} timeouts), 0 rows half-written, {len(receiver.got)} delivered once each after release, "
        f"{claims_refused} traceback log records from refused claims"
    )
    assert waited >= BUSY


async def test_a_full_disk_refuses_broker_publishes_in_one_line_and_works_once_space_is_freed(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    db = small_disk.root / "broker.db"
    receiver = Receiver()
    async with SqliteBroker(f"sqlite:///{db}") as broker:
        await broker.subscribe("fault.paid", "billing", receiver.handle)
        before = messages(0, 5)
        await broker.publish_many(before)
        await until(lambda: len(receiver.got) == 5, "the first deliveries")
        await until(lambda: scalar(db, "SELECT count(*) FROM tidings_leases") == 0, "their acks")

        filled = small_disk.fill()
        errors = [
            await publish_refused(broker.publish(messages(5, 1)[0])),
            await publish_refused(broker.publish_many(messages(6, 40, size=4000))),
        ]
        assert all(error.startswith(f"sqlite broker {db}: database or disk is full; the disk") for error in errors)
        assert scalar(db, "SELECT count(*) FROM tidings_log") == 5  # the batch of 40: none of it
        await asyncio.sleep(0.2)
        assert len(receiver.got) == 5

        small_disk.clear()
        after = messages(46, 40, size=4000)
        await broker.publish_many(after)
        await until(lambda: len(receiver.got) == 45, "the deliveries after the disk was freed")
        await asyncio.sleep(0.1)
    assert event_ids(db) == ids_of(before + after)
    assert Counter(receiver.got) == Counter(ids_of(before + after))  # each once; none of the refused
    print(
        f"\nbroker disk full: filler {filled / 1e6:.1f} MB, 2 publishes (41 messages) refused, 0 rows half-written, "
        f"{len(receiver.got)} delivered once each after freeing, {tracebacks(caplog)} traceback log records"
    )


async def test_an_io_error_under_the_broker_is_one_line_and_a_reopened_broker_carries_on(
    failing_disk: FailingDisk,
) -> None:
    db = failing_disk.root / "broker.db"
    before = messages(0, 5)
    broker = SqliteBroker(f"sqlite:///{db}")
    async with broker:
        await broker.publish_many(before)
        failing_disk.fail()
        errors = [
            await publish_refused(broker.publish(messages(5, 1)[0])),
            await publish_refused(broker.publish_many(messages(6, 3))),
        ]
    assert errors[0].startswith(f"sqlite broker {db}: disk I/O error; check")
    # the later ones read pages the dead disk cannot give back: SQLite calls that "malformed" (it is not: see below)
    assert errors[1].startswith(
        (f"sqlite broker {db}: disk I/O error; check", f"sqlite broker {db}: database disk image is malformed; ")
    )

    failing_disk.repair()
    assert scalar(db, "PRAGMA integrity_check") == "ok"
    assert event_ids(db) == ids_of(before)  # committed before the fault: kept; refused: absent
    receiver = Receiver()
    after = messages(9, 3)
    async with SqliteBroker(f"sqlite:///{db}") as reopened:
        await reopened.publish_many(after)
        await reopened.subscribe("fault.paid", "billing", receiver.handle)
        await until(lambda: len(receiver.got) == 8, "every delivery")
        await asyncio.sleep(0.1)
    assert receiver.got == ids_of(before + after)
    print(
        f"\nbroker I/O error: errors {[e.split(': ', 1)[1] for e in errors]}, integrity ok after remount, "
        f"{len(before)} kept, 4 refused and absent, {len(receiver.got)} delivered once each after reopening"
    )


# -- (b) the inbox idempotency store ------------------------------------------------------------------------------


class Inbox:
    """A consumer app whose handler writes its effect in the inbox transaction of a SQLite store at ``store_db``."""

    def __init__(self, broker_db: Path, store_db: Path, *, busy_timeout: float = 5.0, effect_size: int = 8) -> None:
        with contextlib.closing(sqlite3.connect(store_db)) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT NOT NULL, payload BLOB)")
        self.broker_db = broker_db
        self.store_db = store_db
        self.store = SqliteIdempotencyStore(store_db, busy_timeout=busy_timeout)
        self.app = App(f"sqlite:///{broker_db}?visibility_timeout=30", name="billing")
        self.attempts: list[int] = []
        self.effects_before_failure: Counter[str] = Counter()
        payload = b"p" * effect_size
        self.retry = RetryPolicy(3, base_delay=0.05, max_delay=0.1)

        @self.app.subscriber(
            "fault.paid",
            group="billing",
            idempotency=self.store,
            inbox=True,
            retry=self.retry,
        )
        async def charge(event: Paid, context: EventContext) -> None:
            self.attempts.append(context.attempt)
            context.connection.execute("INSERT INTO effects VALUES (?, ?)", (context.envelope.event_id, payload))

    async def __aenter__(self) -> Inbox:
        await self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.app.stop()
        finally:
            await self.store.close()

    async def publish(self, first: int, count: int) -> list[str]:
        envelopes = await self.app.publish_many([Paid(order_id=i) for i in range(first, first + count)])
        return [envelope.event_id for envelope in envelopes]

    def effects(self) -> Counter[str]:
        return Counter(event_id for (event_id,) in rows(self.store_db, "SELECT event_id FROM effects"))

    def unsettled(self) -> list[tuple[int, int]]:
        """(position, attempt) of the group's leases: deliveries not acknowledged."""
        return [(p, a) for p, a in rows(self.broker_db, "SELECT position, attempt FROM tidings_leases ORDER BY 1")]

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.app.subscribers)


def store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [
        r.getMessage() for r in caplog.records if r.name == "tidings.app" and "idempotency store" in r.getMessage()
    ]
    for message in found:
        assert len(message.splitlines()) == 1, message
    return found


@dataclass
class StoreFault:
    """What makes the inbox store at ``store_db`` fail, what clears it, and what the store says meanwhile."""

    name: str
    store_db: Path
    inject: Callable[[], Awaitable[None]]
    remove: Callable[[], Awaitable[None]]
    says: str  # a regular expression the store's one-line error matches
    handler_starts: bool  # whether the handler runs (to be rolled back) under the fault
    busy_timeout: float = 5.0


@pytest.fixture(params=["locked", "disk full"], ids=["locked", "disk-full"])
def store_fault(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFault:
    if request.param == "locked":
        make_holder: Callable[[Path], LockHolder] = request.getfixturevalue("holders")
        store_db = tmp_path / "inbox.db"
        holder: list[LockHolder] = []

        async def lock() -> None:
            holder.append(make_holder(store_db))
            await holder[0].lock()

        async def unlock() -> None:
            await holder[0].unlock()

        return StoreFault(
            "locked",
            store_db,
            lock,
            unlock,
            says="database is locked; another connection or process held the write lock for longer than busy_timeout",
            handler_starts=False,  # BEGIN IMMEDIATE is the first thing: the handler does not even start
            busy_timeout=0.2,
        )
    disk: SmallDisk = request.getfixturevalue("small_disk")

    async def fill() -> None:
        disk.fill()

    async def clear() -> None:
        disk.clear()

    return StoreFault(
        "disk full",
        disk.root / "inbox.db",
        fill,
        clear,
        says=r"database or disk is full; the disk \(or the file system's quota\) is full: free some space$",
        handler_starts=True,  # the commit fails: the handler's write is rolled back
    )


async def test_a_failing_store_nacks_rather_than_acks_and_applies_each_event_once_after(
    tmp_path: Path, store_fault: StoreFault, caplog: pytest.LogCaptureFixture
) -> None:
    fault = store_fault
    async with Inbox(tmp_path / "broker.db", fault.store_db, busy_timeout=fault.busy_timeout) as inbox:
        first = await inbox.publish(0, 3)
        await until(lambda: len(inbox.effects()) == 3, "the first effects")
        await fault.inject()
        held = await inbox.publish(3, 3)
        await until(lambda: min((a for _, a in inbox.unsettled()), default=0) >= 3, f"redeliveries ({fault.name})")
        unsettled = inbox.unsettled()
        assert len(unsettled) == 3  # not acknowledged
        assert set(inbox.effects()) == set(first)  # not applied
        assert await inbox.app.broker.dead_letters() == []  # not given up on
        with pytest.raises(StoreError) as caught:
            await inbox.store.mark("billing", "a-probe")  # a write (in WAL mode reads pass a write lock)
        error = one_line(caught.value)
        assert re.search(fault.says, error), error
        handler_runs = len(inbox.attempts) - len(first)
        await fault.remove()
        await until(lambda: not inbox.unsettled(), "every delivery acknowledged")
        await asyncio.sleep(0.1)
    effects = inbox.effects()
    assert effects == Counter(dict.fromkeys(first + held, 1))
    logged = store_errors(caplog)
    assert logged
    reason = fault.says.split(";")[0]
    assert all(reason in line for line in logged)
    print(
        f"\nstore {fault.name}: {len(held)} events nacked {len(logged)} times ({handler_runs} handler runs rolled "
        f"back), max attempt {max(a for _, a in unsettled)}, 0 acked, 0 dead letters; after clearing {len(effects)} "
        f"effects, each once, {inbox.duplicates} duplicates absorbed"
    )
    assert (handler_runs > 0) == fault.handler_starts


async def test_a_full_store_disk_met_by_the_handlers_own_write_is_not_dead_lettered(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    store_db = small_disk.root / "inbox.db"
    async with Inbox(tmp_path / "broker.db", store_db, effect_size=3_000_000) as inbox:
        small_disk.fill()
        held = await inbox.publish(0, 1)
        await asyncio.sleep(1.0)
        dead = await inbox.app.broker.dead_letters()
        attempts_while_full = len(inbox.attempts)
        small_disk.clear()
        await asyncio.sleep(0.5)
    print(f"\nstore disk full in the handler: attempts {inbox.attempts}, dead letters {[d.reason for d in dead]}")
    # the handler's write failed past the retry policy's last attempt (the disk was full), yet nothing was given up
    assert attempts_while_full > inbox.retry.max_attempts
    assert dead == []
    assert inbox.effects() == Counter({held[0]: 1})


async def test_an_io_error_under_the_store_nacks_and_a_restarted_consumer_applies_each_event_once(
    tmp_path: Path, failing_disk: FailingDisk, caplog: pytest.LogCaptureFixture
) -> None:
    broker_db, store_db = tmp_path / "broker.db", failing_disk.root / "inbox.db"
    async with Inbox(broker_db, store_db) as inbox:
        first = await inbox.publish(0, 3)
        await until(lambda: len(inbox.effects()) == 3, "the first effects")
        inbox.effects_before_failure = inbox.effects()
        failing_disk.fail()
        held = await inbox.publish(3, 2)
        await until(lambda: min((a for _, a in inbox.unsettled()), default=0) >= 2, "redeliveries on the failed disk")
        assert len(inbox.unsettled()) == 2
        assert await inbox.app.broker.dead_letters() == []
        with pytest.raises(StoreError) as caught:
            await inbox.store.seen("billing", held[0])
        error = one_line(caught.value)
        logged = store_errors(caplog)
        assert set(inbox.effects_before_failure) == set(first)
    handler_runs = len(inbox.attempts) - 3  # rolled back: the commit (or the BEGIN before it) failed

    failing_disk.repair()
    async with Inbox(broker_db, store_db) as restarted:
        await until(lambda: not restarted.unsettled(), "every delivery acknowledged")
        await asyncio.sleep(0.1)
        effects = restarted.effects()
    assert effects == Counter(dict.fromkeys(first + held, 1))
    assert logged
    reasons = Counter(line.split(": ", 3)[3].split(";")[0] for line in logged)
    print(
        f"\nstore I/O error: {len(held)} events nacked {len(logged)} times ({dict(reasons)}), {handler_runs} handler "
        f"runs rolled back, 0 acked, 0 dead letters; "
        f"seen() said {error.split(': ', 1)[1].split(';')[0]!r}; after remount and restart {len(effects)} effects, "
        f"each once"
    )


# -- (c) the outbox relay ------------------------------------------------------------------------------------------


class Confirming(BrokerWrapper):
    """``inner``, calling ``after`` once each ``publish_many`` was confirmed: where a fault hurts the relay most."""

    def __init__(self, inner: Broker, after: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(inner)
        self.after = after
        self.confirmed = 0

    async def publish(self, message: Message) -> None:
        await self.publish_many([message])

    async def publish_many(self, messages: Iterable[Message]) -> None:
        batch = list(messages)
        await self.inner.publish_many(batch)
        self.confirmed += len(batch)
        if self.after is not None:
            after, self.after = self.after, None
            await after()


def add_to_outbox(db: Path, count: int) -> list[str]:
    outbox = Outbox(App("memory://", name="shop"))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        outbox.create_table(conn)
        with conn:
            return [outbox.add(conn, Paid(order_id=i)).event_id for i in range(count)]


def marked_sent(db: Path) -> list[str]:
    return [
        orjson.loads(b)["event_id"] for (b,) in rows(db, "SELECT body FROM tidings_outbox WHERE sent_at IS NOT NULL")
    ]


async def relay_refused(relay: OutboxRelay, kind: type[Exception]) -> str:
    with pytest.raises(kind) as caught:
        await relay.relay_once()
    return one_line(caught.value)


async def deliver_all(broker_db: Path, ids: list[str]) -> tuple[int, int, int]:
    """Consume everything in the broker's log: (deliveries, duplicates, lost)."""
    receiver = Receiver()
    async with SqliteBroker(f"sqlite:///{broker_db}") as broker:
        await broker.subscribe("fault.paid", "audit", receiver.handle, prefetch=64)
        total = scalar(broker_db, "SELECT count(*) FROM tidings_log")
        await until(lambda: len(receiver.got) >= total, "every delivery")
        await asyncio.sleep(0.1)
    counts = Counter(receiver.got)
    assert set(counts) <= set(ids)
    return len(receiver.got), len(receiver.got) - len(counts), len(set(ids) - set(counts))


class Fault:
    """A condition of a SQLite file that :meth:`begin` starts and :meth:`end` clears."""

    disk: SmallDisk | None = None
    holder: LockHolder | None = None

    def __init__(
        self, condition: str, tmp_path: Path, request: pytest.FixtureRequest, holders: Callable[[Path], LockHolder]
    ) -> None:
        if condition == "full":
            self.disk = request.getfixturevalue("small_disk")
            self.db = self.disk.root / "app.db"
            self.expected = "database or disk is full"
        else:
            self.db = tmp_path / "app.db"
            self.holder = holders(self.db)
            self.expected = "database is locked; another connection holds the database's lock"

    async def begin(self) -> None:
        if self.disk is not None:
            await asyncio.to_thread(self.disk.fill)
        elif self.holder is not None:
            await self.holder.lock()

    async def end(self) -> None:
        if self.disk is not None:
            await asyncio.to_thread(self.disk.clear)
        elif self.holder is not None:
            await self.holder.unlock()


@pytest.mark.parametrize("moment", ["renewing-the-lease", "after-the-broker-confirmed"])
@pytest.mark.parametrize("condition", ["locked", "full"])
async def test_the_relay_marks_nothing_it_did_not_publish_when_the_outbox_database_fails(
    tmp_path: Path, condition: str, moment: str, holders: Callable[[Path], LockHolder], request: pytest.FixtureRequest
) -> None:
    fault = Fault(condition, tmp_path, request, holders)
    ids = add_to_outbox(fault.db, 30)
    broker_db = tmp_path / "broker.db"
    broker = Confirming(SqliteBroker(f"sqlite:///{broker_db}"))
    # a short lease must be renewed (a write) before each batch; a long one is fresh for the whole test
    lease = 0.3 if moment == "renewing-the-lease" else 30.0
    errors: list[str] = []
    async with broker, OutboxRelay(fault.db, broker, batch=10, timeout=0.2, lease_seconds=lease) as relay:
        assert await relay.relay_once() == 10  # one batch through before the fault
        if moment == "renewing-the-lease":
            await fault.begin()
        else:
            broker.after = fault.begin  # the fault starts once the broker confirmed the next batch, before its mark
        for _ in range(3):
            await asyncio.sleep(lease / 2 if lease < 1 else 0)
            errors.append(await relay_refused(relay, OutboxError))
            # never marked without being published: every row marked sent is in the broker's log
            assert set(marked_sent(fault.db)) <= set(event_ids(broker_db))
            assert marked_sent(fault.db) == ids[:10]
        published_during = broker.confirmed - 10
        await fault.end()
        while await relay.relay_once():
            pass
        assert await relay.pending() == 0
    assert marked_sent(fault.db) == ids
    deliveries, duplicates, lost = await deliver_all(broker_db, ids)
    doing = Counter(error.split(": ")[1].removesuffix(" failed") for error in errors)
    print(
        f"\noutbox {condition}, {moment}: errors {dict(doing)}, {published_during} messages published during the "
        f"fault, 0 marked unpublished; after: {deliveries} deliveries of {len(ids)} events, {duplicates} duplicates, "
        f"{lost} lost"
    )
    assert all(fault.expected in error for error in errors), errors
    assert lost == 0
    if moment == "renewing-the-lease":
        assert published_during == 0  # the lease could not be renewed: nothing published
        assert duplicates == 0
    else:
        # the broker confirmed the batch once; the relay keeps its ids and retries the mark, not the publish
        assert published_during == 10
        assert duplicates == 0


async def test_a_full_broker_disk_leaves_the_outbox_rows_unsent_and_each_is_delivered_once_after(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    outbox_db = tmp_path / "app.db"
    ids = add_to_outbox(outbox_db, 60)
    broker_db = small_disk.root / "broker.db"
    async with SqliteBroker(f"sqlite:///{broker_db}") as broker, OutboxRelay(outbox_db, broker, batch=20) as relay:
        assert await relay.relay_once() == 20
        small_disk.fill()
        errors = [await relay_refused(relay, BrokerError) for _ in range(3)]
        assert all(
            error.startswith(f"sqlite broker {broker_db}: database or disk is full; the disk") for error in errors
        )
        assert await relay.pending() == 40  # nothing marked
        assert marked_sent(outbox_db) == ids[:20]
        assert event_ids(broker_db) == ids[:20]  # nothing half-published
        small_disk.clear()
        while await relay.relay_once():
            pass
    deliveries, duplicates, lost = await deliver_all(broker_db, ids)
    print(
        f"\noutbox, broker disk full: 3 batches refused ({errors[0].split(': ', 1)[1]}), 40 rows left unsent; "
        f"after: {deliveries} deliveries of {len(ids)} events, {duplicates} duplicates, {lost} lost"
    )
    assert (deliveries, duplicates, lost) == (60, 0, 0)


async def test_an_io_error_under_the_outbox_database_marks_nothing_and_a_new_relay_carries_on(
    tmp_path: Path, failing_disk: FailingDisk
) -> None:
    outbox_db = failing_disk.root / "app.db"
    ids = add_to_outbox(outbox_db, 30)
    broker_db = tmp_path / "broker.db"
    async with SqliteBroker(f"sqlite:///{broker_db}") as broker:
        relay = OutboxRelay(outbox_db, broker, batch=10, timeout=0.2, name="relay-1")
        async with relay:
            assert await relay.relay_once() == 10
            failing_disk.fail()
            errors = [await relay_refused(relay, OutboxError) for _ in range(2)]
            assert event_ids(broker_db) == ids[:10]  # nothing read, nothing published
        failing_disk.repair()
        assert marked_sent(outbox_db) == ids[:10]
        # the same name (a restarted relay that names itself): its lease, left on the failed disk, is its own
        async with OutboxRelay(outbox_db, broker, batch=10, name="relay-1") as again:
            while await again.relay_once():
                pass
    deliveries, duplicates, lost = await deliver_all(broker_db, ids)
    print(
        f"\noutbox I/O error: errors {[e.split(': ', 1)[1] for e in errors]}; after remount and a new relay: "
        f"{deliveries} deliveries of {len(ids)} events, {duplicates} duplicates, {lost} lost"
    )
    assert (deliveries, duplicates, lost) == (30, 0, 0)
