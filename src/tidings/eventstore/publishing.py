"""Publishing what the event store commits: the log as the outbox, so there is never a dual write.

An event-sourced service must not append to its store and then publish to its broker as two steps: a crash
in between loses the publication, and a failed append after the publish announces what never happened. The
store's log already is a transactional outbox: an event is in it exactly when its append committed, in commit
order, with a position. :class:`LogRelay` follows the log (a catch-up subscription) and publishes each event
through an app, as :class:`~tidings.reliability.outbox.OutboxRelay` does for the outbox table:

    relay = LogRelay(store, app, name="user-service")
    await relay.run(stop)            # until stop is set; resumes from its checkpoint after a restart

- The message is the one ``app.publish`` would send for the event, with the *stored* event id (a re-send
  has the same id, so idempotent consumers absorb it), its type as the channel, its schema version, the
  time it was committed, and the correlation and causation ids of its metadata. The app's contract is
  checked: a stored event that breaks it stops the relay with the contract error (fix the document or
  the event), rather than be published broken or skipped.
- The checkpoint (the last position the broker confirmed) is kept in the store itself, in the stream
  ``$relay-<name>`` (only the newest is kept), and written after every confirmed batch. A relay that dies
  between the broker's confirmation and the checkpoint publishes that batch again: at least once.
- Events whose type starts with ``$`` (snapshots, checkpoints) are the store's own and are not published;
  ``event_types`` limits the relay to some types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from tidings.app import App, ContractError
from tidings.brokers.base import Message
from tidings.errors import describe_error
from tidings.events.codec import payload_body, payload_headers
from tidings.events.envelope import Envelope, uuid7
from tidings.eventstore.base import EventStore, NewEvent, RecordedEvent
from tidings.reliability.retry import RetryPolicy

log = logging.getLogger("tidings.eventstore.publishing")
CHECKPOINT = "$relay-checkpoint"


class LogRelay:
    """Publishes the events of ``store`` through ``app``, in log order, at least once (see the module docs)."""

    def __init__(
        self,
        store: EventStore,
        app: App,
        *,
        name: str = "default",
        event_types: Sequence[str] | None = None,
        batch: int = 500,
        backoff: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        self.store = store
        self.app = app
        self.name = name
        self.event_types = list(event_types) if event_types is not None else None
        self.batch = batch
        self.backoff = backoff
        self._backoff = RetryPolicy(base_delay=backoff[0], max_delay=backoff[1], jitter=0.5)
        self.stream = f"$relay-{name}"
        #: events published (confirmed by the broker) by this relay object
        self.sent = 0
        #: the checkpoint as this relay last read or wrote it (None: read it from the store)
        self._position: int | None = None

    async def checkpoint(self) -> int:
        """The last position the broker confirmed (0: none yet)."""
        newest = await self.store.read_stream(self.stream, backwards=True, limit=1)
        return int(orjson.loads(newest[0].data)["position"]) if newest else 0

    async def relay_once(self) -> int:
        """Publish the next batch after the checkpoint; how many events it held (0: the relay is caught up)."""
        position = self._position if self._position is not None else await self.checkpoint()
        events = await self.store.read_all(from_position=position, limit=self.batch, event_types=self.event_types)
        chosen = [e for e in events if not e.event_type.startswith("$")]
        if chosen:
            await self.app.broker.publish_many([self.message(e) for e in chosen])
            await self._save_checkpoint(events[-1].position)
            self.sent += len(chosen)
            return len(chosen)
        if len(events) == self.batch:
            # a whole page of the store's own events (snapshots...): step over it. Fewer than a page: stay,
            # or each checkpoint written would be the next page to step over, for ever
            await self._save_checkpoint(events[-1].position)
            return len(events)
        return 0

    async def run(self, stop: asyncio.Event | None = None, *, poll_interval: float = 0.2) -> None:
        """Relay until ``stop`` is set: catch up, then follow; broker failures are retried with backoff."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                moved = await self.relay_once()
            except ContractError:
                raise  # a stored event the contract refuses: retrying cannot mend it
            except Exception as exc:
                failures += 1
                delay = self._backoff.delay(failures, random.random())
                log.warning("log relay %s: %s; again in %.2f s", self.name, describe_error(exc), delay)
                await _wait(stop, delay)
                continue
            failures = 0
            if not moved:
                await _wait(stop, poll_interval)

    def message(self, event: RecordedEvent) -> Message:
        """The message ``app.publish`` would send for ``event``, with the stored id (checked by the contract)."""
        return stored_message(
            self.app,
            event.event_id,
            event.event_type,
            event.schema_version,
            event.data,
            event.metadata,
            event.recorded_at,
        )

    async def _save_checkpoint(self, position: int) -> None:
        data = orjson.dumps({"position": position})
        await self.store.append_latest(self.stream, NewEvent(uuid7(), CHECKPOINT, data))
        self._position = position


def stored_message(
    app: App,
    event_id: str,
    event_type: str,
    schema_version: str,
    data: bytes,
    metadata: bytes,
    recorded_at: float,
) -> Message:
    """The message ``app.publish`` would send for a stored event, with the stored id, checked by the app's
    contract (:class:`~tidings.app.ContractError` if it breaks it); keyed by the aggregate id of its metadata.
    The log relay and the repository's outbox both publish this, so a consumer cannot tell them apart."""
    meta: dict[str, Any] = orjson.loads(metadata) if metadata else {}
    timestamp = datetime.fromtimestamp(recorded_at, UTC).isoformat(timespec="microseconds")
    envelope = Envelope(
        event_id,
        event_type,
        timestamp.replace("+00:00", "Z"),
        schema_version,
        app.name,
        str(meta.get("correlation_id") or event_id),
        str(meta.get("causation_id") or ""),
    )
    flat = payload_body(envelope, orjson.loads(data))
    if app.contract is not None:
        app.contract.require(event_type).check(event_type, flat)
    key = meta.get("aggregate_id")
    return Message(event_type, orjson.dumps(flat), payload_headers(envelope), str(key) if key else None)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


__all__ = ["LogRelay", "stored_message"]
