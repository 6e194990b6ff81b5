"""``tidings store`` and ``tidings projection``: look into an event store, and rebuild read models from it.

    tidings store stats    --store URL                 streams, events, last position, size on disk
    tidings store read     STREAM --store URL          a stream's events (--backwards, --limit N, --from VERSION)
    tidings store tail     --store URL                 follow the log live (--from POSITION, --type, --count N)
    tidings store scavenge --store URL                 remove what retention and deletes gave up; sizes before/after
    tidings projection rebuild MODULE:ATTR --store URL --db URL     reset the read model and apply the whole log
    tidings projection status  MODULE:ATTR --store URL --db URL     its checkpoint against the log's last position

``--store``: ``sqlite:///events.db``, ``postgresql://user@host/db[?schema=name]`` (``memory://`` works but is
empty). ``--db``: where the read model lives, ``sqlite:///read.db`` or ``postgresql://...[?schema=name]``.
``MODULE:ATTR`` names a :class:`~tidings.eventstore.projection.Projection` subclass or instance, imported from
the current folder as ``tidings run`` imports an app.

``tail`` stops on Ctrl-C or SIGTERM with exit code 0 (following is what it was asked to do, stopping is how
it ends), or after ``--count`` events. Errors are one line: exit 2 for a bad URL, module or argument, 1 for what
the store or the database said.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from tidings.eventstore.base import EventStore, RecordedEvent
    from tidings.eventstore.projection import Projection


def add_parser(commands: Any) -> None:
    """Register ``tidings store`` and ``tidings projection``."""
    store = commands.add_parser(
        "store",
        help="look into an event store: stats, read a stream, tail the log, scavenge",
        description="Look into the event store at --store: its stats, a stream's events, the log followed live, "
        "or a scavenge (remove what retention and deletes gave up).",
    )
    actions = store.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(store))
    p = actions.add_parser("stats", help="streams, events, last position and size on disk")
    _store_option(p)
    p.set_defaults(run=run_store)
    p = actions.add_parser("read", help="the events of one stream")
    p.add_argument("stream", metavar="STREAM", help="the stream, e.g. user-42")
    _store_option(p)
    p.add_argument("--backwards", action="store_true", help="newest first")
    p.add_argument("--limit", type=_count, metavar="N", help="at most N events")
    p.add_argument("--from", dest="start", type=_count, metavar="VERSION", help="start at this version")
    p.set_defaults(run=run_store)
    p = actions.add_parser("tail", help="follow the log live until Ctrl-C")
    _store_option(p)
    p.add_argument(
        "--from", dest="start", type=_count, metavar="POSITION", help="after this position (default: the end)"
    )
    p.add_argument(
        "--type", dest="types", action="append", metavar="TYPE", help="only events of this type (repeatable)"
    )
    p.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    p.set_defaults(run=run_store)
    p = actions.add_parser("scavenge", help="remove the events retention and deletes gave up, and the space")
    _store_option(p)
    p.set_defaults(run=run_store)

    projection = commands.add_parser(
        "projection",
        help="rebuild a projection's read model, or show how far behind it is",
        description="Projections: read models updated from the event store's log. MODULE:ATTR names a Projection "
        "subclass or instance, imported from the current folder (e.g. projections:UserCounts).",
    )
    actions = projection.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(projection))
    for action, text in (
        ("rebuild", "empty the read model and apply the whole log again, with a progress bar"),
        ("status", "the projection's checkpoint against the log's last position"),
    ):
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("projection", metavar="MODULE:ATTR", help="the projection, e.g. projections:UserCounts")
        _store_option(p)
        p.add_argument("--db", required=True, metavar="URL", help="the read model's database: sqlite:///read.db, ...")
        if action == "rebuild":
            p.add_argument("--batch", type=_count, default=500, metavar="N", help="events per transaction (500)")
        p.set_defaults(run=run_projection)


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, metavar="URL", help="event store URL, e.g. sqlite:///events.db")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text}")
    return value


def _open_store(url: str) -> EventStore:
    """The store ``url`` names; an SQLite file must exist (a typo must not create an empty store and report it)."""
    from tidings.cli.common import require_sqlite_file
    from tidings.eventstore.urls import store_from_url

    store = store_from_url(url)  # UsageError for a bad URL, before the file is looked at
    require_sqlite_file(url, "event store")
    return store


def run_store(args: argparse.Namespace) -> int:
    from tidings.cli.common import consoles, one_line_errors

    console, errors = consoles("psycopg")

    def work() -> int:
        store = _open_store(args.store)
        return asyncio.run(_store_action(args, store, console, errors))

    return one_line_errors(f"tidings store {args.action}", errors, work)


async def _store_action(args: argparse.Namespace, store: EventStore, console: Console, errors: Console) -> int:
    from tidings.redact import redact_url

    url = redact_url(args.store)
    async with store:
        if args.action == "stats":
            return await _stats(store, url, console)
        if args.action == "read":
            return await _read(args, store, console)
        if args.action == "tail":
            return await _tail(args, store, url, console, errors)
        return await _scavenge(store, url, console)


async def _stats(store: EventStore, url: str, console: Console) -> int:
    from rich.table import Table

    stats = await store.stats()
    table = Table(show_header=False, show_edge=False, title=f"event store {url}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("streams", f"{stats.streams:,}")
    table.add_row("events", f"{stats.events:,}")
    table.add_row("last position", f"{stats.last_position:,}")
    table.add_row("size", _size(stats.size))
    console.print(table)
    return 0


async def _read(args: argparse.Namespace, store: EventStore, console: Console) -> int:
    events = await store.read_stream(args.stream, from_version=args.start, backwards=args.backwards, limit=args.limit)
    version = await store.stream_version(args.stream)
    if version == 0:
        console.print(f"stream {args.stream!r} has no events", markup=False)
        return 1
    shown = f"{len(events)} event{'s' if len(events) != 1 else ''}"
    console.print(f"[bold]{_escape(args.stream)}[/bold]: version {version}, {shown} shown")
    for event in events:
        console.print()
        console.print(
            f"[bold]{event.version}[/bold]  [cyan]{_escape(event.event_type)}[/cyan] {_escape(event.schema_version)}"
            f"  {_when(event.recorded_at)}  [dim]position {event.position}  id {_escape(event.event_id)}[/dim]"
        )
        console.print(_pretty(event.data), markup=False)
        if event.metadata not in (b"{}", b""):
            console.print(f"[dim]metadata[/dim] {_escape(_compact(event.metadata, 400))}")
    return 0


async def _tail(args: argparse.Namespace, store: EventStore, url: str, console: Console, errors: Console) -> int:
    import signal

    start = args.start if args.start is not None else (await store.stats()).last_position
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    errors.print(f"following {url} after position {start} (Ctrl-C to stop)", markup=False)
    events = store.subscribe(from_position=start, event_types=args.types or None)
    stopping = asyncio.ensure_future(stop.wait())
    seen = 0
    try:
        while args.count is None or seen < args.count:
            upcoming = asyncio.ensure_future(_next(events))
            await asyncio.wait({upcoming, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not upcoming.done():  # interrupted: that is how following ends
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)
                break
            event = upcoming.result()
            if event is None:
                break
            seen += 1
            console.print(_line(event))
    finally:
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    errors.print(f"{seen} event{'s' if seen != 1 else ''}", markup=False)
    return 0


async def _next(events: Any) -> RecordedEvent | None:
    try:
        event: RecordedEvent = await anext(events)
    except StopAsyncIteration:
        return None
    return event


async def _scavenge(store: EventStore, url: str, console: Console) -> int:
    before = await store.stats()
    started = time.perf_counter()
    with console.status("scavenging…"):
        removed = await store.scavenge()
    seconds = time.perf_counter() - started
    after = await store.stats()
    console.print(
        f"scavenged {url}: {removed:,} event{'s' if removed != 1 else ''} removed in {seconds:.2f} s; "
        f"events {before.events:,} → {after.events:,}; size {_size(before.size)} → {_size(after.size)}",
        markup=False,
    )
    return 0


# -- projections --


def run_projection(args: argparse.Namespace) -> int:
    from tidings.cli.common import consoles, one_line_errors
    from tidings.eventstore.projection import target_from_url

    console, errors = consoles("psycopg")

    def work() -> int:
        projection = _load_projection(args.projection)
        target = target_from_url(args.db)
        store = _open_store(args.store)
        act = _rebuild if args.action == "rebuild" else _status
        return asyncio.run(act(args, store, projection, target, console))

    return one_line_errors(f"tidings projection {args.action}", errors, work)


def _load_projection(spec: str) -> Projection:
    """The projection ``spec`` names: an instance, or a subclass instantiated without arguments."""
    from tidings.cli.main import _load_app
    from tidings.errors import UsageError, describe_error
    from tidings.eventstore.projection import Projection

    try:
        found = _load_app(spec)
    except UsageError as exc:
        raise UsageError(str(exc).replace("APP must be", "MODULE:ATTR must be").replace("main:app", "m:Proj")) from None
    except Exception as exc:  # the module is there but fails to import: say so on one line, no traceback
        raise UsageError(f"cannot import {spec.partition(':')[0]!r}: {describe_error(exc)}") from None
    if isinstance(found, Projection):
        return found
    if isinstance(found, type) and issubclass(found, Projection):
        try:
            return found()
        except Exception as exc:
            raise UsageError(f"{spec}: {found.__name__}() failed: {describe_error(exc)}") from None
    what = f"the class {found.__name__}" if isinstance(found, type) else f"of type {type(found).__name__}"
    raise UsageError(f"{spec} is {what}, not a Projection (a subclass of tidings.eventstore.projection.Projection)")


async def _rebuild(
    args: argparse.Namespace, store: EventStore, projection: Projection, target: Any, console: Any
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tidings.eventstore.projection import ProjectionRunner

    runner = ProjectionRunner(store, projection, target, batch=args.batch)
    async with store:
        total = (await store.stats()).last_position
        started = time.perf_counter()
        try:
            with Progress(
                TextColumn(f"rebuilding {_escape(runner.name)}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,  # piped or logged: the closing line says it all
            ) as progress:
                task = progress.add_task("rebuild", total=total or None)

                def show(done: int, last: int) -> None:
                    progress.update(task, completed=done, total=last or None)

                applied = await runner.rebuild(progress=show)
        finally:
            await runner.close()
        seconds = time.perf_counter() - started
    console.print(
        f"rebuilt {runner.name} into {target}: {applied:,} event{'s' if applied != 1 else ''} applied in "
        f"{seconds:.2f} s (checkpoint {runner.position:,}, log position {max(total, runner.position or 0):,})",
        markup=False,
    )
    return 0


async def _status(
    args: argparse.Namespace, store: EventStore, projection: Projection, target: Any, console: Any
) -> int:
    from rich.table import Table

    from tidings.eventstore.projection import ProjectionRunner

    runner = ProjectionRunner(store, projection, target)
    async with store:
        try:
            status = await runner.status()
        finally:
            await runner.close()
    table = Table(show_header=False, show_edge=False, title=f"projection {status.name}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("read model", _escape(str(target)))
    table.add_row("handles", _escape(", ".join(projection.event_types())))
    table.add_row("checkpoint", "never run" if status.checkpoint is None else f"{status.checkpoint:,}")
    table.add_row("last position", f"{status.last_position:,}")
    behind = f"{status.behind:,}{'' if status.exact else '+'} event{'s' if status.behind != 1 else ''} to apply"
    table.add_row("behind", "up to date" if status.behind == 0 else behind)
    table.add_row("updated", "-" if status.updated_at is None else _when(status.updated_at))
    console.print(table)
    return 0


# -- formatting --


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _when(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(sep=" ", timespec="milliseconds").replace("+00:00", "Z")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit} ({size:,} B)"


def _pretty(data: bytes) -> str:
    """The body as indented JSON; as text if it is not JSON (the store never parses bodies)."""
    import orjson

    try:
        return orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


def _compact(data: bytes, width: int) -> str:
    import orjson

    try:
        text = orjson.dumps(orjson.loads(data)).decode()
    except orjson.JSONDecodeError:
        text = data.decode("utf-8", "replace")
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(event: RecordedEvent) -> Any:
    from rich.text import Text

    return Text.assemble(
        (f"{event.position:>6}", "dim"),
        "  ",
        _when(event.recorded_at),
        "  ",
        (f"{event.stream_id}@{event.version}", "bold"),
        "  ",
        (event.event_type, "cyan"),
        "  ",
        _compact(event.data, 200),
    )
