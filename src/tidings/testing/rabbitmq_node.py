"""A RabbitMQ node of a test's own: its own node name, ports and data folder, on loopback, killed at will.

Tests that crash the broker cannot touch the machine's shared RabbitMQ (other tests, other sessions use it).
:class:`RabbitMQNode` starts a second node of the installed ``rabbitmq-server`` beside it::

    with rabbitmq_node(tmp_path / "rabbitmq") as node:     # started; killed on exit, whatever happens
        app = App(node.url + "?exchange=orders", name="orders")
        ...
        node.kill()       # SIGKILL, like a crash or the OOM killer: no goodbye to the clients, no flush
        node.start()      # same node name, data folder and port: durable queues and confirmed messages are back

Everything the node reads or writes is under ``folder``:

==========================  ==============================================================================
``home/.erlang.cookie``     its own Erlang cookie (``HOME`` points here for the node and :meth:`ctl`)
``rabbitmq.conf``           its configuration (the machine's ``/etc/rabbitmq`` files are not read)
``rabbitmq-env.conf``       empty: ``/etc/rabbitmq/rabbitmq-env.conf`` would set the shared node's name
``enabled_plugins``         ``[].``: no plugins, no management listener to collide with the shared node's
``data/``                   the Mnesia, quorum-queue and message-store files (``RABBITMQ_MNESIA_BASE``)
``log/``                    the node's log file and ``console.log`` (its stdout and stderr)
==========================  ==============================================================================

The AMQP listener and the Erlang distribution listener are on 127.0.0.1, on ports chosen free once and kept
for the node's life, so that clients reconnect to the same address after a restart. Only the shared
``epmd`` (port 4369) is common to both nodes; it is not ours to stop.

Requirements: ``rabbitmq-server`` and Erlang installed (Debian/Ubuntu: ``apt-get install rabbitmq-server``);
without them :meth:`RabbitMQNode.start` raises :class:`RabbitMQNotInstalled`, which a test turns into a skip
with :func:`tidings.testing.services.unavailable`. Processes are found through ``/proc`` on Linux; elsewhere
the node's process group is signalled.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tidings.errors import TidingsError
from tidings.testing.services import free_port

#: where Debian/Ubuntu and the RPM packages keep the real scripts: their ``/usr/sbin/rabbitmq-server`` is a
#: wrapper that, run as root, switches to the ``rabbitmq`` user (whose HOME, cookie and files are the shared
#: node's), and we could not signal the node it starts
_PACKAGED_SCRIPTS = (Path("/usr/lib/rabbitmq/bin"),)


#: run beside each node: its stdin is a pipe from this process, so it reads EOF when this process ends, however
#: it ends (SIGKILL, a CI timeout), and then kills the node, which would otherwise outlive the test for good (it
#: runs in a session of its own). kill() and stop() end the watchdog first.
_WATCHDOG = """
import os, signal, sys
sys.stdin.buffer.read()
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except ProcessLookupError:
    pass
"""


class RabbitMQNodeError(TidingsError):
    """The test node could not be started or stopped; the message ends with the tail of its output."""


class RabbitMQNotInstalled(RabbitMQNodeError):
    """``rabbitmq-server`` is not installed on this machine."""


def rabbitmq_scripts() -> Path | None:
    """The folder of the real ``rabbitmq-server`` script (the one beside ``rabbitmq-env``), or ``None``."""
    candidates = list(_PACKAGED_SCRIPTS)
    found = shutil.which("rabbitmq-server")
    if found is not None:
        # Homebrew, the generic-unix tarball: a symlink to .../sbin/rabbitmq-server, next to rabbitmq-env
        candidates.append(Path(os.path.realpath(found)).parent)
    for folder in candidates:
        if (folder / "rabbitmq-server").is_file() and (folder / "rabbitmq-env").is_file():
            return folder
    return None


def _speaks_amqp(port: int, timeout: float = 1.0) -> bool:
    """Whether the node answers the AMQP 0-9-1 protocol header with ``Connection.Start``.

    An open port is not enough: the listener is the last thing RabbitMQ starts, but a port can also be open
    on a node that is going down. ``Connection.Start`` comes from a node that accepts clients (it created its
    default user before it started listening).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = b""
            while len(frame) < 11:  # frame header (type, channel, size) + class id + method id
                chunk = sock.recv(11 - len(frame))
                if not chunk:
                    return False
                frame += chunk
    except OSError:
        return False
    # method frame (1) on channel 0, class 10 (connection), method 10 (start)
    return frame[0] == 1 and frame[1:3] == b"\x00\x00" and frame[7:11] == b"\x00\x0a\x00\x0a"


def _children() -> dict[int, list[int]] | None:
    """Parent pid -> child pids of every process, from ``/proc`` (``None`` where there is no ``/proc``)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    tree: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, hence the last ")"
        fields = stat.rpartition(")")[2].split()
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int] | None:
    tree = _children()
    if tree is None:
        return None
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it waits for its new parent, init, to collect its exit status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class RabbitMQNode:
    """A RabbitMQ node of its own under ``folder``, on loopback: see the module documentation.

    ``name``: the Erlang node name (default ``tidings-test-<random>@localhost``); it is part of where the
    data lives, so it is kept across restarts. The ports are chosen on the first :meth:`start` and kept.
    """

    def __init__(self, folder: Path, *, name: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.name = name or f"tidings-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = 0
        self.dist_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._scripts: Path | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RabbitMQNode({self.name!r}, port={self.port}, {state})"

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/``: guest may log in, as it is on loopback."""
        if not self.port:
            raise RabbitMQNodeError(f"RabbitMQ node {self.name} was never started: it has no port yet")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path:
        """The node's own log (boot, connections, queue recovery)."""
        return self.folder / "log" / f"{self.name}.log"

    # -- lifecycle --

    def start(self, timeout: float = 60.0) -> None:
        """Start the node and return once it answers AMQP on :attr:`port`; idempotent.

        Raises :class:`RabbitMQNotInstalled` without ``rabbitmq-server``, :class:`RabbitMQNodeError` if it
        exits or does not answer within ``timeout`` seconds (it is then killed; the message quotes its output).
        """
        if self.running:
            return
        self._process = None  # (exited on its own)
        self._unwatch()
        if self._scripts is None:
            scripts = rabbitmq_scripts()
            if scripts is None:
                raise RabbitMQNotInstalled(
                    "rabbitmq-server is not installed (Debian/Ubuntu: apt-get install rabbitmq-server; "
                    "macOS: brew install rabbitmq)"
                )
            self._scripts = scripts
            self._prepare()
        console = self.folder / "log" / "console.log"
        with console.open("ab") as output:
            output.write(f"\n--- starting {self.name} at {time.strftime('%H:%M:%S')} ---\n".encode())
            output.flush()
            # a session of its own: one signal to the group reaches the wrapper shell and the VM, and the
            # terminal's Ctrl-C does not
            self._process = subprocess.Popen(
                [str(self._scripts / "rabbitmq-server")],
                cwd=self.folder,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._watch(self._process.pid)
        deadline = time.monotonic() + timeout
        while not _speaks_amqp(self.port, timeout=0.5):
            code = self._process.poll()
            if code is not None:
                self._process = None
                self._unwatch()
                raise RabbitMQNodeError(
                    f"RabbitMQ node {self.name} exited with code {code} while starting{self._tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitMQNodeError(
                    f"RabbitMQ node {self.name} did not answer on 127.0.0.1:{self.port} within {timeout:g} s"
                    f"{self._tail()}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the node, as a crash would: no clean shutdown, clients see their connections drop.

        Returns once its processes are gone (``erl_child_setup`` and the port programs, which run in sessions
        of their own, are killed too rather than left to notice). Idempotent.
        """
        process = self._process
        if process is None:
            return
        self._process = None
        self._unwatch()
        if process.poll() is not None:
            return
        pids = _descendants(process.pid)
        if pids is None:  # no /proc: the group holds the wrapper and the VM; the VM's helpers exit on EOF
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        # the VM and its helpers first: the wrapper shell then collects the VM's exit status and ends by
        # itself, so no dead VM is left to init as a zombie
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._wait_gone(pids, 10.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (SIGTERM: the wrapper asks the VM to shut down); killed after ``timeout`` s."""
        process = self._process
        if process is None:
            return
        if process.poll() is not None:
            self._process = None
            self._unwatch()
            return
        pids = _descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._process = None
        self._unwatch()
        if pids is not None:
            self._wait_gone(pids, 5.0)

    def restart(self, *, crash: bool = False, timeout: float = 60.0) -> None:
        """Stop (``crash=True``: :meth:`kill`) and start again, with the same name, data folder and port."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -q -n NODE args...`` against this node (same cookie); returns its output.

        Raises :class:`RabbitMQNodeError` with the output if it fails.
        """
        if self._scripts is None:
            raise RabbitMQNodeError(f"RabbitMQ node {self.name} was never started")
        result = subprocess.run(
            [str(self._scripts / "rabbitmqctl"), "-q", "-n", self.name, *args],
            cwd=self.folder,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        if result.returncode:
            raise RabbitMQNodeError(f"rabbitmqctl {' '.join(args)} on {self.name} exited {result.returncode}: {output}")
        return result.stdout.decode(errors="replace")

    # -- the watchdog --

    def _watch(self, pid: int) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # (Ctrl-C in the terminal must not end it before the test's cleanup ran)
        )

    def _unwatch(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        watchdog.kill()  # before its pipe closes: EOF would make it kill the node
        watchdog.wait()
        if watchdog.stdin is not None:
            watchdog.stdin.close()

    # -- the files and the environment --

    def _prepare(self) -> None:
        home = self.folder / "home"
        for folder in (home, self.folder / "data", self.folder / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            # the shared node's cookie is the rabbitmq user's: a cookie of our own keeps the two nodes (and
            # their CLIs) from talking to each other, and needs no access to another user's files. Erlang
            # refuses a cookie file that others may read.
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq.conf").write_text(
            "# a test node: see tidings.testing.rabbitmq_node\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        if not self.port:
            self.port = free_port()
        if not self.dist_port:
            self.dist_port = free_port()

    def _environment(self) -> dict[str, str]:
        # the caller's RABBITMQ_* would point this node at the shared one's name, files or ports
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.folder / "home"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.folder / "data"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_PID_FILE=str(self.folder / "rabbitmq.pid"),
            # the distribution listener on loopback too (the shared node's env file does the same for it)
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.folder / "log" / "console.log", self.log_file):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip().splitlines()[-lines:]
                parts.append(f"\n--- {path} ---\n" + "\n".join(text))
        return "".join(parts)

    @staticmethod
    def _wait_gone(pids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in pids if _alive(pid)]
            if not left:
                return
            if time.monotonic() > deadline:
                for pid in left:  # a helper that ignored its EOF (stop) or outlived the kill
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)


@contextlib.contextmanager
def rabbitmq_node(folder: Path, *, name: str | None = None, timeout: float = 60.0) -> Iterator[RabbitMQNode]:
    """Start a :class:`RabbitMQNode` under ``folder``; it is killed on exit, whatever happened.

    Killed, not stopped: the data folder is the test's own and is thrown away, so a clean shutdown would
    only cost seconds.
    """
    node = RabbitMQNode(folder, name=name)
    try:
        node.start(timeout)
        yield node
    finally:
        node.kill()


__all__ = ["RabbitMQNode", "RabbitMQNodeError", "RabbitMQNotInstalled", "rabbitmq_node", "rabbitmq_scripts"]
