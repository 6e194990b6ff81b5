"""``tidings store stats|read|tail|scavenge`` and ``tidings projection rebuild|status`` as a user runs them: a child
process against an SQLite event store file that the test filled, a projection module written next to it."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import CliRun
from tidings.eventstore.base import EventStore, NewEvent, StreamMetadata

Cli = Callable[..., CliRun]


def sqlite_store(path: Path) -> EventStore:
    from tidings.eventstore.sqlite import SqliteEventStore

    store: EventStore = SqliteEventStore(path)
    return store


def event(event_type: str, **data: Any) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event_type, orjson.dumps(data))


async def fill(path: Path) -> None:
    """Users 1..5 created and logging in (user i logs in i times), an order, and two streams that a scavenge
    gives up: one deleted, one kept to its last event."""
    async with sqlite_store(path) as store:
        for user in range(1, 6):
            await store.append(f"user-{user}", [event("user.created", user_id=user, email=f"u{user}@example.com")])
        for user in range(1, 6):
            await store.append(f"user-{user}", [event("user.logged_in", user_id=user) for _ in range(user)])
        await store.append("order-1", [event("order.placed", order_id=1, total=12.5)])
        await store.append("temp-1", [event("temp.noted", n=n, pad="x" * 2000) for n in range(40)])
        await store.delete_stream("temp-1", hard=True)
        await store.append("gauge-1", [event("gauge.read", n=n, pad="y" * 2000) for n in range(30)])
        await store.set_stream_metadata("gauge-1", StreamMetadata(max_count=1))


#: 5 created + 15 logins + 1 order + 40 temp + 30 gauge
EVENTS = 91
HANDLED = 20


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    path = tmp_path / "events.db"
    asyncio.run(fill(path))
    return f"sqlite:///{path}"


PROJECTION = '''
"""A read model of users and their logins, for the CLI tests."""

import json
import os

from tidings.events.event import Event
from tidings.eventstore.projection import Projection, handles


class UserCreated(Event, type="user.created"):
    user_id: int
    email: str


class UserLogins(Projection):
    name = "user-logins"

    def setup(self, db):
        db.execute("CREATE TABLE IF NOT EXISTS logins (user_id INTEGER PRIMARY KEY, email TEXT, n INTEGER)")

    def reset(self, db):
        db.execute("DROP TABLE IF EXISTS logins")

    @handles(UserCreated)
    def created(self, db, event):
        db.execute("INSERT INTO logins VALUES (?, ?, 0)", (event.user_id, event.email))

    @handles("user.logged_in")
    def logged_in(self, db, event):
        if os.environ.get("FAIL_ON_LOGIN"):
            raise ValueError("the read model is broken")
        user_id = json.loads(event.data)["user_id"]
        db.execute("UPDATE logins SET n = n + 1 WHERE user_id = ?", (user_id,))


logins = UserLogins()
not_a_projection = 42
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "read_models.py").write_text(textwrap.dedent(PROJECTION), encoding="utf-8")
    (tmp_path / "broken_models.py").write_text("import json\nraise RuntimeError('boom at import')\n", encoding="utf-8")
    return tmp_path


# -- store --


def test_stats(cli: Cli, store_url: str) -> None:
    run = cli("store", "stats", "--store", store_url)
    assert run.returncode == 0, run.output
    lines = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in run.stdout.splitlines() if "│" in line}
    assert lines["streams"] == "7"  # the hard-deleted stream does not count
    assert lines["events"] == str(EVENTS)
    assert lines["last position"] == str(EVENTS)
    assert "KiB" in lines["size"]
    assert store_url.removeprefix("sqlite:///") in run.stdout
    print(f"\nstore stats: {run.seconds * 1000:.0f} ms")


def test_read(cli: Cli, store_url: str) -> None:
    run = cli("store", "read", "user-3", "--store", store_url)
    assert run.returncode == 0, run.output
    assert run.stdout.startswith("user-3: version 4, 4 events shown")
    assert run.stdout.count("user.logged_in 1.0") == 3
    assert "1  user.created 1.0" in run.stdout
    assert '"email": "u3@example.com"' in run.stdout  # pretty: indented JSON
    assert '  "user_id": 3' in run.stdout

    run = cli("store", "read", "user-5", "--store", store_url, "--backwards", "--limit", "2")
    assert run.returncode == 0, run.output
    versions = [line.split()[0] for line in run.stdout.splitlines()[1:] if "user.logged_in" in line]
    assert versions == ["6", "5"]
    run = cli("store", "read", "user-5", "--store", store_url, "--from", "5")
    assert [line.split()[0] for line in run.stdout.splitlines() if "user.logged_in" in line] == ["5", "6"]

    run = cli("store", "read", "nobody-1", "--store", store_url)
    assert run.returncode == 1
    assert "has no events" in run.stdout
    run = cli("store", "read", "temp-1", "--store", store_url)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "deleted" in run.stderr
    assert "Traceback" not in run.output


def test_tail_from_a_position(cli: Cli, store_url: str) -> None:
    run = cli("store", "tail", "--store", store_url, "--from", "5", "--count", "4")
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["6", "7", "8", "9"]
    assert all("user.logged_in" in line for line in lines)
    assert "user-1@2" in lines[0]
    assert "4 events" in run.stderr
    run = cli("store", "tail", "--store", store_url, "--from", "0", "--type", "order.placed", "--count", "1")
    assert run.returncode == 0, run.output
    assert "order-1@1" in run.stdout
    assert '{"order_id":1,"total":12.5}' in run.stdout


def spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    env.update(NO_COLOR="1", PYTHONIOENCODING="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "tidings", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def test_tail_follows_live_events_then_stops_on_sigterm(store_url: str) -> None:
    path = Path(store_url.removeprefix("sqlite:///"))
    tail = spawn("store", "tail", "--store", store_url, "--count", "3")
    try:
        assert tail.stderr is not None
        assert f"after position {EVENTS}" in tail.stderr.readline()  # following from the end

        async def more() -> float:
            async with sqlite_store(path) as store:
                started = time.perf_counter()
                for n in range(3):
                    await store.append("live-1", [event("live.happened", n=n)])
            return started

        started = asyncio.run(more())
        out, err = tail.communicate(timeout=20)
        seconds = time.perf_counter() - started
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    assert [line.split()[3] for line in out.splitlines()] == ["live-1@1", "live-1@2", "live-1@3"]
    assert "3 events" in err

    # without --count it follows until interrupted: SIGTERM (what a service manager sends) ends it with 0
    tail = spawn("store", "tail", "--store", store_url)
    try:
        assert tail.stderr is not None
        assert "Ctrl-C to stop" in tail.stderr.readline()
        time.sleep(0.2)
        tail.send_signal(signal.SIGTERM)
        out, err = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    assert "0 events" in err
    assert "Traceback" not in err
    print(
        f"\nstore tail: 3 live events printed (and the process exited) {seconds * 1000:.0f} ms after the first append"
    )


def test_scavenge(cli: Cli, store_url: str) -> None:
    run = cli("store", "scavenge", "--store", store_url)
    assert run.returncode == 0, run.output
    assert "69 events removed" in run.stdout  # the deleted stream's 40 and 29 of the 30 kept to 1
    assert f"events {EVENTS} → {EVENTS - 69}" in run.stdout
    before, after = run.stdout.split("size ")[1].split(" → ")
    before_bytes = int(before.split("(")[1].split()[0].replace(",", ""))
    after_bytes = int(after.split("(")[1].split()[0].replace(",", "")) if "(" in after else int(after.split()[0])
    assert after_bytes < before_bytes
    run = cli("store", "scavenge", "--store", store_url)
    assert "0 events removed" in run.stdout
    print(f"\nstore scavenge: {before.strip()} → {after.strip()}")


# -- projection --


def logins(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT user_id, email, n FROM logins ORDER BY user_id").fetchall()


def test_projection_rebuild_and_status(cli: Cli, store_url: str, project: Path) -> None:
    db = project / "read.db"
    db_url = f"sqlite:///{db}"
    run = cli("projection", "status", "read_models:UserLogins", "--store", store_url, "--db", db_url, cwd=project)
    assert run.returncode == 0, run.output
    assert "never run" in run.stdout
    assert f"{HANDLED} events to apply" in run.stdout
    assert not db.exists()  # asking created nothing

    run = cli("projection", "rebuild", "read_models:UserLogins", "--store", store_url, "--db", db_url, cwd=project)
    assert run.returncode == 0, run.output
    assert f"rebuilt user-logins into {db_url}: {HANDLED} events applied in" in run.stdout
    expected = [(user, f"u{user}@example.com", user) for user in range(1, 6)]
    assert logins(db) == expected

    # again, through the instance, in batches of 3: the same read model, not doubled
    args = ("read_models:logins", "--store", store_url, "--db", db_url)
    run = cli("projection", "rebuild", *args, "--batch", "3", cwd=project)
    assert run.returncode == 0, run.output
    assert logins(db) == expected
    run = cli("projection", "status", *args, cwd=project)
    assert run.returncode == 0, run.output
    assert "up to date" in run.stdout
    assert f"checkpoint    │ {EVENTS}" in run.stdout
    print(f"\nprojection rebuild: {run.seconds * 1000:.0f} ms for the whole command")


def test_errors_are_one_line(cli: Cli, store_url: str, project: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'read.db'}"
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("store", "stats", "--store", "kafka://x"), 2, "not an event store URL"),
        (("store", "stats", "--store", f"sqlite:///{tmp_path / 'missing.db'}"), 1, "no event store at"),
        (("store", "stats"), 2, "--store"),
        (("store",), 2, "ACTION"),
        (("store", "read", "--store", store_url), 2, "STREAM"),
        (("store", "read", "user-1", "--store", store_url, "--limit", "-1"), 2, "cannot be negative"),
        (("store", "stats", "--store", "postgresql://u:hunter2@127.0.0.1:1/db"), 1, "***"),
        (("projection", "rebuild", "nowhere:P", "--store", store_url, "--db", db_url), 2, "no module named 'nowhere'"),
        (("projection", "rebuild", "read_models", "--store", store_url, "--db", db_url), 2, "MODULE:ATTR must be"),
        (("projection", "rebuild", "read_models:Nope", "--store", store_url, "--db", db_url), 2, "no attribute"),
        (("projection", "rebuild", "read_models:not_a_projection", "--store", store_url, "--db", db_url), 2, "int"),
        (("projection", "rebuild", "broken_models:P", "--store", store_url, "--db", db_url), 2, "boom at import"),
        (("projection", "rebuild", "read_models:logins", "--store", store_url, "--db", "mysql://x"), 2, "read-model"),
        (("projection", "status", "read_models:logins", "--store", "nope://", "--db", db_url), 2, "event store URL"),
    ]
    for args, code, words in cases:
        run = cli(*args, cwd=project)
        assert run.returncode == code, (args, run.output)
        assert words in run.stderr, (args, run.stderr)
        assert run.stderr.count("\n") == 1, (args, run.stderr)
        assert "Traceback" not in run.output
        assert "hunter2" not in run.output


def test_a_failing_projection_is_exit_1_and_leaves_the_checkpoint(
    cli: Cli, store_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project / "read.db"
    args = ("read_models:logins", "--store", store_url, "--db", f"sqlite:///{db}")
    monkeypatch.setenv("FAIL_ON_LOGIN", "1")
    run = cli("projection", "rebuild", *args, cwd=project)
    assert run.returncode == 1
    assert "ValueError: the read model is broken" in run.stderr
    assert "position 6" in run.stderr
    assert run.stderr.count("\n") == 1
    monkeypatch.delenv("FAIL_ON_LOGIN")
    run = cli("projection", "status", *args, cwd=project)
    assert "checkpoint    │ 0" in run.stdout  # the reset committed, the failed batch did not
    assert f"{HANDLED} events to apply" in run.stdout
