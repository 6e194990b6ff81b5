"""``tidings dlq list|show|replay|purge`` as a user runs it: a child process against an embedded broker
file that a real app dead-lettered into, and against RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliRun
from tidings.app import App
from tidings.events.event import Event
from tidings.reliability.retry import RetryPolicy

SEED = Path(__file__).resolve().parent.parent / "examples" / "user-service.asyncapi.yaml"
Cli = Callable[..., CliRun]


class UserCreated(Event, type="user.created", version="1.0"):
    user_id: int
    email: str
    name: str


class CardDeclinedError(Exception):
    pass


async def fill(url: str, ok: set[int] | None = None) -> list[int]:
    """Publish users 1..6: 2 and 4 hit a declined card, 5 a missing key; the rest are handled.
    Returns the user ids handled (``ok`` lists ids that succeed this time, e.g. after the fix)."""
    app = App(url, name="user-service", asyncapi=SEED)
    handled: list[int] = []
    settled = asyncio.Event()
    expected = 6 if ok is None else len(ok)

    @app.subscriber("user.created", group="billing", retry=RetryPolicy(2, base_delay=0.01, jitter=0))
    async def charge(event: UserCreated) -> None:
        if ok is None or event.user_id not in ok:
            if event.user_id in (2, 4):
                raise CardDeclinedError(f"user {event.user_id}")
            if event.user_id == 5:
                raise KeyError("address")
        handled.append(event.user_id)
        if (len(handled) == 3 and ok is None) or len(handled) == expected:
            settled.set()

    async with app:
        if ok is None:
            for user_id in range(1, 7):
                await app.publish(UserCreated(user_id=user_id, email=f"u{user_id}@example.com", name="U"))
        await asyncio.wait_for(settled.wait(), 20)
        if ok is None:
            for _ in range(250):
                if len(await app.broker.dead_letters()) == 3:
                    break
                await asyncio.sleep(0.02)
    return handled


def listed(cli: Cli, url: str, *args: str) -> list[dict[str, object]]:
    run = cli("dlq", "list", "--broker", url, "-f", "json", *args)
    assert run.returncode == 0, run.output
    found: list[dict[str, object]] = json.loads(run.stdout)
    return found


def test_list_show_replay_and_purge_on_the_embedded_broker(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    assert sorted(asyncio.run(fill(url))) == [1, 3, 6]

    everything = listed(cli, url)
    assert sorted(d["body"]["user_id"] for d in everything) == [2, 4, 5]  # type: ignore[index]
    assert {d["details"]["x-tidings-error-type"] for d in everything} == {  # type: ignore[index]
        "test_dlq_cli.CardDeclinedError",
        "KeyError",
    }
    table = cli("dlq", "list", "--broker", url)
    assert table.returncode == 0
    assert "3 dead letters on sqlite:///" in table.stdout
    assert "CardDeclinedError" in table.stdout
    assert "distinct failures" in table.stdout  # two cards declined at the same place: one failure

    declined = listed(cli, url, "--error-type", "CardDeclinedError")
    assert sorted(d["body"]["user_id"] for d in declined) == [2, 4]  # type: ignore[index]
    shown = cli("dlq", "show", str(declined[0]["id"]), "--broker", url)
    assert shown.returncode == 0
    assert "x-tidings-traceback-digest" in shown.stdout
    assert '"user_id": 2' in shown.stdout

    # the card problem is fixed: replay those two; they are handled, once each
    replayed = cli("dlq", "replay", "--error-type", "CardDeclinedError", "--broker", url)
    assert replayed.returncode == 0, replayed.output
    assert "2 dead letters replayed to their channels" in replayed.stdout
    assert sorted(asyncio.run(fill(url, ok={2, 4}))) == [2, 4]
    assert [d["body"]["user_id"] for d in listed(cli, url)] == [5]  # type: ignore[index]

    purged = cli("dlq", "purge", "--all", "--broker", url)
    assert purged.returncode == 0
    assert "1 dead letter purged" in purged.stdout
    assert listed(cli, url) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge"], "needs a selection"),
        (["replay", "--all", "--group", "billing"], "ambiguous"),
        (["show"], "takes one ID"),
    ],
)
def test_dangerous_or_incomplete_requests_are_refused(cli: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    run = cli("dlq", *args, "--broker", f"sqlite:///{tmp_path / 'events.db'}")
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_unreachable_broker_is_one_line_without_the_password(cli: Cli) -> None:
    from tidings.testing.services import free_port

    run = cli("dlq", "list", "--broker", f"amqp://guest:s3cret@127.0.0.1:{free_port()}/?connect_timeout=1")
    assert run.returncode in (1, 2)
    assert "s3cret" not in run.output
    assert "Traceback" not in run.output
    assert len(run.stderr.strip().splitlines()) == 1
