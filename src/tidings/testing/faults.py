"""Network faults for tests: a loopback TCP proxy that delays, swallows, cuts or refuses connections.

Put it between a client and a real service and point the client at the proxy::

    async with FaultProxy("127.0.0.1", 5672) as proxy:
        app = App(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        ...
        proxy.cut()             # every connection reset (RST) at once: clients must reconnect
        proxy.latency(0.05)     # 50 ms more on every chunk, in both directions
        proxy.heal()            # all faults off

The faults, each switchable at any time:

``latency(seconds)``
    Every chunk read from either side is written to the other ``seconds`` after it was read. The delay is
    per chunk, not per connection: chunks in flight overlap (throughput is kept, as on a long link), and the
    order within each direction is kept (a chunk never overtakes the one before it, even when the latency
    is lowered meanwhile).
``blackhole(on=True)``
    A network partition: connections stay open, new ones are accepted, and nothing goes through; the bytes
    are dropped, not buffered (what was in transit is lost, as on a real network). A peer notices only
    through its own timeouts (heartbeats, request timeouts); a FIN or a reset from either side is held back
    until the blackhole ends, as TCP would retransmit it. Dropping cuts a stream at an arbitrary byte, so a
    connection that lived through a blackhole carries a broken protocol stream: turn the blackhole off and
    :meth:`~FaultProxy.cut` in the same step (no ``await`` between them) to make the clients reconnect
    cleanly, as a real partition ends in their timeouts.
``cut()``
    Every current connection is closed abruptly on both sides, with a reset (``SO_LINGER`` 0): the clients
    see ``ECONNRESET``, the service sees the client vanish. New connections are served as before.
``refuse(on=True)``
    New connections are reset as soon as they are accepted (a service that is down, seen through a proxy
    that is up); current ones are left alone.
``heal()``
    Latency 0, no blackhole, no refusing. Connections cut are not brought back: the clients reconnect.

Counters: ``connections`` (connections accepted and forwarded, in all), ``active`` (open now), ``refused``
(reset by ``refuse``), ``cuts`` (connections reset by ``cut``; not those the proxy's own exit resets) and
``dropped`` (bytes swallowed by the blackhole). :meth:`~FaultProxy.wait_active` waits for clients to be back.

The proxy listens on loopback only (a fault injector must not be reachable from elsewhere), on a free port
unless told otherwise, and stops with its ``async with`` block: the listening socket closes and every
connection is reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct

from tidings.lifecycle import Service

__all__ = ["FaultProxy"]

#: bytes read at a time; a chunk is what latency delays and what a blackhole drops
_CHUNK = 64 * 1024
#: chunks read ahead of the writer per direction: bounds memory under latency (back-pressure beyond it)
_QUEUED = 256
#: (when it may be written, the bytes; b"" is the end of the stream)
_Item = tuple[float, bytes]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer``'s connection with a reset: SO_LINGER 0 makes close() send RST instead of FIN."""
    if writer is None:
        return
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _closed(writer: asyncio.StreamWriter | None) -> None:
    """Wait until ``writer``'s transport is gone (an unawaited close leaks it until the loop notices)."""
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Link:
    """One client connection and its connection to the target: two directions, each a reader and a writer."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_reader = reader
        self.client = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Reset both sides now (the link's task is cancelled by the caller)."""
        _reset(self.client)
        _reset(self.upstream)

    async def run(self) -> None:
        proxy = self.proxy
        try:
            try:
                up_reader, self.upstream = await asyncio.open_connection(proxy.target_host, proxy.target_port)
            except OSError:
                # the target is down: the client sees what it would see connecting to it (a reset)
                self.reset()
                return
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._direction(self.client_reader, self.upstream))
                    group.create_task(self._direction(up_reader, self.client))
            except* OSError:  # a peer reset its side (or vanished): pass it on as a reset to the other
                self.reset()
        finally:
            proxy.active -= 1
            await _closed(self.client)
            await _closed(self.upstream)

    async def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a reader and a writer joined by a queue, so that a delayed chunk does not stop reading: latency
        # delays the bytes, not the pace at which they arrive
        queue: asyncio.Queue[_Item] = asyncio.Queue(_QUEUED)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(reader, queue))
            group.create_task(self._write(queue, writer))

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue[_Item]) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(_CHUNK)
            except OSError:
                await proxy._flowing.wait()  # a reset does not cross a partition before it ends
                raise
            if not data:
                await proxy._flowing.wait()  # nor does a FIN
                await queue.put((loop.time() + proxy._latency, b""))
                return
            if proxy._blackholed:
                proxy.dropped += len(data)
                continue
            await queue.put((loop.time() + proxy._latency, data))

    async def _write(self, queue: asyncio.Queue[_Item], writer: asyncio.StreamWriter) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                await proxy._flowing.wait()
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()  # half-close: the other direction may still carry an answer
                return
            if proxy._blackholed:  # the blackhole began while the chunk was in flight: lost in transit
                proxy.dropped += len(data)
                continue
            writer.write(data)
            await writer.drain()


class FaultProxy(Service):
    """A TCP proxy on loopback in front of ``target_host:target_port`` that injects faults (module docs)."""

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        if not _is_loopback(listen_host):
            raise ValueError(f"FaultProxy listens on loopback only, not on {listen_host!r}")
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._latency = 0.0
        self._blackholed = False
        self._refusing = False
        #: set while bytes flow (no blackhole): what holds back a FIN or a reset during a partition
        self._flowing = asyncio.Event()
        self._flowing.set()
        #: connections accepted and forwarded since the start
        self.connections = 0
        #: connections open now
        self.active = 0
        #: connections reset at once by refuse()
        self.refused = 0
        #: connections closed by cut()
        self.cuts = 0
        #: bytes swallowed by the blackhole
        self.dropped = 0

    def __repr__(self) -> str:
        where = f"{self.listen_host}:{self._listen_port if self._server is None else self.port}"
        return f"FaultProxy({where} -> {self.target_host}:{self.target_port}, active={self.active})"

    @property
    def port(self) -> int:
        """The port the proxy listens on (bound at start: a free one unless ``listen_port`` said otherwise)."""
        if self._server is None:
            raise RuntimeError("the FaultProxy is not started: use `async with FaultProxy(...) as proxy:`")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    # -- faults --

    def latency(self, seconds: float) -> None:
        """Delay every chunk from now on by ``seconds`` in both directions (0: none)."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        self._latency = float(seconds)

    def blackhole(self, on: bool = True) -> None:
        """Forward nothing (drop every byte) while on; see the module docs for ending one cleanly."""
        self._blackholed = on
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they are accepted, while on."""
        self._refusing = on

    def cut(self) -> int:
        """Reset every current connection, both sides; returns how many were cut."""
        cut = self._reset_all()
        self.cuts += cut
        return cut

    def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.reset()
            if link.task is not None:
                link.task.cancel()
        return len(links)

    def heal(self) -> None:
        """Every fault off: no latency, no blackhole, no refusing."""
        self.latency(0)
        self.blackhole(False)
        self.refuse(False)

    async def wait_active(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` connections are open (clients reconnected); TimeoutError if not."""
        async with asyncio.timeout(timeout):
            while self.active < count:
                await asyncio.sleep(0.01)

    # -- lifecycle --

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.listen_host, self._listen_port)

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        links = list(self._links)
        self._reset_all()
        await asyncio.gather(*(link.task for link in links if link.task is not None), return_exceptions=True)
        await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback, not a coroutine: the link runs in a task of our own, which close() and cut()
        # can cancel (asyncio's task for a coroutine callback is out of reach)
        if self._refusing or self._server is None:
            self.refused += 1
            _reset(writer)
            return
        link = _Link(self, reader, writer)
        self.connections += 1
        self.active += 1
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(link.run())
        link.task.add_done_callback(lambda _: self._links.discard(link))
