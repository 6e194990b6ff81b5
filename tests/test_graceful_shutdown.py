"""Graceful shutdown under load: `tidings run` gets SIGTERM mid-stream on the SQLite broker.

In-flight handlers finish and are acknowledged, intake stops, the process exits 0; a second worker then
takes the rest. Every job is done exactly once: nothing acknowledged is lost, nothing unfinished was
acknowledged (which would have lost it), and nothing finished was left unacknowledged (which would have
run it twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tidings.app import App
from tidings.events.event import Event

JOBS = 300

SERVICE = """\
import asyncio, os
from tidings.app import App
from tidings.events.event import Event

class JobRequested(Event, type="job.requested"):
    n: int

app = App(os.environ["TEST_BROKER"], name="worker", shutdown_timeout=20)

@app.subscriber("job.requested", group="workers", prefetch=8)
async def work(event: JobRequested) -> None:
    await asyncio.sleep(0.02)  # real work takes time: SIGTERM will find handlers in flight
    with open(os.environ["TEST_DONE"], "a") as done:
        done.write(f"{event.n}\\n")
"""


class JobRequested(Event, type="job.requested"):
    n: int


def _done(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the worker")


def _worker(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tidings", "run", "service:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_finishes_in_flight_work_and_loses_nothing(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'events.db'}"
    done = tmp_path / "done.txt"
    (tmp_path / "service.py").write_text(SERVICE)
    env = {**os.environ, "TEST_BROKER": broker, "TEST_DONE": str(done)}

    async def publish_all() -> None:
        async with App(broker, name="producer") as producer:
            for n in range(JOBS):
                await producer.publish(JobRequested(n=n))

    asyncio.run(publish_all())

    first = _worker(tmp_path, env)
    try:
        _wait_for(lambda: len(_done(done)) >= 40, 60)
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output
    assert "stopped cleanly" in output
    after_first = _done(done)
    assert 40 <= len(after_first) < JOBS, "the worker should have been stopped mid-stream"

    second = _worker(tmp_path, env)
    try:
        _wait_for(lambda: len(_done(done)) >= JOBS, 60)
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output
    finished = _done(done)
    assert sorted(finished) == list(range(JOBS)), "every job exactly once"
