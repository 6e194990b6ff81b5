"""Shared fixtures: where things are, writing small documents, running the ``tidings`` CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the shared conformance corpus; a user's clone does not have it, so tests that need it skip
CORPUS_DIR = (REPO_ROOT / ".." / "shared" / "corpus" / "asyncapi").resolve()
SEED = REPO_ROOT / "examples" / "user-service.asyncapi.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS_DIR / "oracle.tsv").is_file():
        pytest.skip(f"conformance corpus not found at {CORPUS_DIR}")
    return CORPUS_DIR


@pytest.fixture(scope="session")
def seed_file() -> Path:
    return SEED


WriteYaml = Callable[..., Path]


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """``write_yaml("a.yaml", text)`` writes dedented ``text`` under ``tmp_path`` (folders created) and
    returns the path; ``raw=True`` writes ``text`` (str or bytes) exactly as given."""

    def write(name: str, text: str | bytes, *, raw: bool = False) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text if raw else textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    #: wall-clock seconds from start to exit
    seconds: float
    #: peak resident set size of the child, in bytes
    max_rss: int

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


#: Imported by every child at start-up (through PYTHONPATH) to report its own peak RSS at exit.
_SITECUSTOMIZE = """\
import atexit
import os


def _report_peak_rss():
    target = os.environ.get("TIDINGS_TEST_PEAK_RSS_FILE")
    if not target:
        return
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return
    with open(target, "w", encoding="ascii") as out:
        out.write(str(kb * 1024))


atexit.register(_report_peak_rss)
"""


def run_tidings(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 20.0) -> CliRun:
    """Run ``python -m tidings ARGS`` in a child process and measure its wall time and peak RSS.

    Peak RSS: the child reports its own ``VmHWM`` at exit (a ``sitecustomize`` put on its PYTHONPATH).
    ``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN`` is no good on Linux: exec carries the parent's
    high-water mark over into the child, so every child of a big pytest process would look big. It is
    only the fallback where ``/proc`` is missing. A timer kills the child if it runs past ``timeout``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch, "site")
        site.mkdir()
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
        peak_file = Path(scratch, "peak-rss")
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
        env.update(
            NO_COLOR="1",
            PYTHONIOENCODING="utf-8",
            PYTHONPATH=os.pathsep.join(filter(None, [os.fspath(site), env.get("PYTHONPATH")])),
            TIDINGS_TEST_PEAK_RSS_FILE=os.fspath(peak_file),
        )
        with tempfile.TemporaryFile(dir=scratch) as out, tempfile.TemporaryFile(dir=scratch) as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tidings", *map(os.fspath, args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
            )
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            killer = threading.Timer(timeout, kill)
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            seconds = time.monotonic() - start
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
        if peak_file.exists():
            max_rss = int(peak_file.read_text(encoding="ascii"))
        else:  # ru_maxrss is in kilobytes on Linux, bytes on macOS
            max_rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    if timed_out.is_set():
        pytest.fail(f"tidings {' '.join(map(str, args))} did not finish within {timeout} s")
    return CliRun(proc.returncode, stdout, stderr, seconds, max_rss)


@pytest.fixture
def cli() -> Callable[..., CliRun]:
    if not hasattr(os, "wait4"):
        pytest.skip("needs os.wait4 (POSIX)")
    return run_tidings


# -- real services (issue #4 onwards): unreachable means skipped, or failed under CI=true --

RABBITMQ_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    from tidings.testing.services import require

    require("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str] | None:
    """Run ``rabbitmqctl ARGS``; None if it is not installed here."""
    if shutil.which("rabbitmqctl") is None:
        return None
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def rabbitmq_vhost_url(url: str, prefix: str) -> Iterator[str]:
    """``url`` on a virtual host of its own, named ``PREFIX-<random>``, deleted on exit with all it holds.

    Without ``rabbitmqctl`` (or when it cannot add the virtual host: a RabbitMQ elsewhere) it is ``url`` itself,
    except under ``CI=true``, where that fails the tests (``unavailable``) rather than sharing a virtual host."""
    from tidings.testing.services import unavailable

    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    made = rabbitmqctl("add_vhost", vhost)
    if made is None or made.returncode != 0:
        why = "rabbitmqctl is not installed" if made is None else f"rabbitmqctl add_vhost failed: {made.stderr.strip()}"
        if os.environ.get("CI") == "true":
            unavailable(f"no RabbitMQ virtual host of the tests' own: {why}")
        yield url
        return
    try:
        user = urlsplit(url).username or "guest"
        permitted = rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        assert permitted is not None
        assert permitted.returncode == 0, permitted.stderr
        yield f"{url.rstrip('/')}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbitmq_vhost(rabbitmq_url: str) -> Iterator[str]:
    """The RabbitMQ URL on a virtual host of its own for this session (deleted at the end with all it holds),
    so reliability tests leave no queues behind on the shared broker (see :func:`rabbitmq_vhost_url`)."""
    with rabbitmq_vhost_url(rabbitmq_url, "tidings-session") as url:
        yield url


#: the test PostgreSQL database (trust authentication); each test works in a schema of its own
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def drop_pg_schema(schema: str) -> None:
    """Drop ``schema`` and all it holds from the test database (nothing if it is not there)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _pg_schema() -> Iterator[str]:
    from tidings.testing.services import require

    require("PostgreSQL", "127.0.0.1", 5432)
    schema = f"tidings_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name on the test PostgreSQL database for this test; the schema dropped (CASCADE) after."""
    yield from _pg_schema()


@pytest.fixture(scope="class")
def pg_class_schema() -> Iterator[str]:
    """:func:`pg_schema`, shared by the tests of a class."""
    yield from _pg_schema()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Tansu (Kafka-protocol) broker started for this test session."""
    from tidings.testing.services import tansu

    with tansu() as address:
        yield address


@pytest.fixture(scope="session")
def official_asyncapi_cli() -> object:
    """The official AsyncAPI CLI, installed from npm into a cache folder on first use (the oracle of the
    conformance tests); a failed install skips, or fails under ``CI=true``."""
    from benchmarks.official_cli import official_cli

    from tidings.testing.services import unavailable

    try:
        return official_cli()
    except SystemExit as exc:  # npm missing or the install failed
        unavailable(f"the official AsyncAPI CLI could not be installed: {exc}")
