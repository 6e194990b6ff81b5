"""``tidings dlq``: look at dead letters, replay them to their channel, or purge them, on any broker.

    tidings dlq list   --broker URL [filters]     a table, and the distinct failures counted
    tidings dlq show   ID --broker URL            one dead letter: its failure, headers and body
    tidings dlq replay --broker URL (filters | --all)
    tidings dlq purge  --broker URL (filters | --all)

Filters: ``--id`` (repeatable), ``--error-type`` (``PaymentDeclined`` or its full name), ``--event-type``,
``--group``; given together, all must match. ``replay`` and ``purge`` refuse to act on everything unless
``--all`` says so: a typo in a filter must not purge a queue.

A replayed message goes back to its original channel with its original headers and body (so the same
event id: idempotent consumers that did handle it skip it), and only once the broker confirmed it is it
removed from the dead letters.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tidings.brokers.base import Broker, DeadLetter, DeadLetterSelection

_ACTIONS = ("list", "show", "replay", "purge")


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "dlq",
        help="inspect, replay or purge dead letters",
        description="Inspect dead letters (list, show), send them back to their channel (replay) or drop them "
        "(purge), on the broker at --broker.",
    )
    p.add_argument("action", choices=_ACTIONS, help="what to do")
    p.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (as `list` shows them)")
    p.add_argument("--broker", required=True, metavar="URL", help="broker URL, e.g. sqlite:///events.db")
    p.add_argument("--id", dest="more_ids", action="append", default=[], metavar="ID", help="select by id")
    p.add_argument("--error-type", metavar="TYPE", help="select by error type, e.g. PaymentDeclined")
    p.add_argument("--event-type", metavar="TYPE", help="select by event type, e.g. user.created")
    p.add_argument("--group", metavar="GROUP", help="select by consumer group")
    p.add_argument("--all", action="store_true", help="replay or purge every dead letter")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(run=run_dlq)


def run_dlq(args: argparse.Namespace) -> int:
    from tidings.brokers.base import DeadLetterSelection, broker_from_url
    from tidings.cli.common import consoles, one_line_errors, require_sqlite_file
    from tidings.errors import UsageError

    console, errors = consoles("aio_pika", "aiormq")
    selection = DeadLetterSelection(
        frozenset([*args.ids, *args.more_ids]), args.error_type, args.event_type, args.group
    )
    filtered = bool(selection.ids) or any(v is not None for v in (args.error_type, args.event_type, args.group))

    def work() -> int:
        if args.action == "show" and len(selection.ids) != 1:
            raise UsageError("dlq show takes one ID (see `tidings dlq list`)")
        if args.action in ("replay", "purge") and not (filtered or args.all):
            raise UsageError(
                f"dlq {args.action} needs a selection (an ID, --error-type, --event-type, --group) or --all"
            )
        if args.action in ("replay", "purge") and filtered and args.all:
            raise UsageError("--all with a filter is ambiguous: give one or the other")
        broker = broker_from_url(args.broker)
        require_sqlite_file(args.broker, "sqlite broker")
        return asyncio.run(_act(args, broker, selection, console, errors))

    return one_line_errors("tidings dlq", errors, work)


async def _act(
    args: argparse.Namespace, broker: Broker, selection: DeadLetterSelection, console: Any, errors: Any
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    async with broker:
        if args.action in ("list", "show"):
            chosen = [dead for dead in await broker.dead_letters() if selection.matches(dead)]
            if args.action == "show":
                if not chosen:
                    errors.print(
                        f"no dead letter {next(iter(selection.ids))!r} on {broker.url} "
                        "(`tidings dlq list` shows the ids)",
                        markup=False,
                    )
                    return 1
                _show(chosen[0], args.format, console)
            else:
                _list(chosen, broker.url, args.format, console)
            return 0
        replay = args.action == "replay"
        verb = "replaying" if replay else "purging"
        # no total: counting first would read the whole dead-letter store (a topic, a queue) twice
        with Progress(
            TextColumn(f"{verb} dead letters"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
        ) as progress:
            task = progress.add_task(verb, total=None)
            done = await broker.settle_dead_letters(
                selection.matches, replay=replay, progress=lambda n: progress.update(task, completed=n)
            )
        past = "replayed to their channels" if replay else "purged"
        console.print(f"{done} dead letter{'s' if done != 1 else ''} {past} ({broker.url})", markup=False)
        return 0


def _as_dict(dead: DeadLetter) -> dict[str, Any]:
    body: Any
    try:
        body = orjson.loads(dead.message.body)
    except orjson.JSONDecodeError:
        body = dead.message.body.decode("utf-8", "replace")
    return {
        "id": dead.id,
        "channel": dead.message.channel,
        "group": dead.group,
        "event_type": dead.event_type,
        "reason": dead.reason,
        "attempts": dead.attempts,
        "details": dict(dead.details),
        "key": dead.message.key,
        "headers": dict(dead.message.headers),
        "body": body,
    }


def _list(chosen: list[DeadLetter], url: str, fmt: str, console: Any) -> None:
    from rich.table import Table

    from tidings.brokers.base import DL_LAST_FAILURE, DL_TRACEBACK

    if fmt == "json":
        console.print_json(orjson.dumps([_as_dict(dead) for dead in chosen]).decode())
        return
    if not chosen:
        console.print(f"no dead letters on {url}", markup=False)
        return
    table = Table(show_edge=False, title=f"{len(chosen)} dead letter{'s' if len(chosen) != 1 else ''} on {url}")
    for column in ("id", "channel", "group", "event type", "error", "attempts", "last failure", "reason"):
        table.add_column(column, overflow="fold", justify="right" if column == "attempts" else "left")
    for dead in chosen:
        reason = dead.reason if len(dead.reason) <= 80 else dead.reason[:77] + "..."
        table.add_row(
            dead.id,
            dead.message.channel,
            dead.group,
            dead.event_type,
            dead.error_type.rpartition(".")[2],
            str(dead.attempts),
            dead.details.get(DL_LAST_FAILURE, ""),
            reason,
        )
    console.print(table)
    # the same bug hit by many events is one failure: count them by error type and place in the code
    failures = Counter((dead.error_type or "(broker)", dead.details.get(DL_TRACEBACK, "")) for dead in chosen)
    if len(failures) < len(chosen):
        summary = Table(show_edge=False, title="distinct failures")
        for column in ("error type", "traceback digest", "dead letters"):
            summary.add_column(column, justify="right" if column == "dead letters" else "left")
        for (error_type, digest), count in failures.most_common():
            summary.add_row(error_type, digest, str(count))
        console.print(summary)


def _show(dead: DeadLetter, fmt: str, console: Any) -> None:
    record = _as_dict(dead)
    if fmt == "json":
        console.print_json(orjson.dumps(record).decode())
        return
    for name in ("id", "channel", "group", "event_type", "reason", "attempts", "key"):
        console.print(f"[bold]{name.replace('_', ' ')}[/bold]: ", record[name], sep="")
    for title in ("details", "headers"):
        if record[title]:
            console.print(f"[bold]{title}[/bold]:")
            for name, value in record[title].items():
                console.print(f"  {name}: ", value, sep="", markup=False)
    console.print("[bold]body[/bold]:")
    if isinstance(record["body"], str):
        console.print(record["body"], markup=False)
    else:
        console.print_json(orjson.dumps(record["body"]).decode())
