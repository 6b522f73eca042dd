"""One live stream of run events as Server-Sent Events (``GET /api/v1/events/stream``).

A stream reads the ledger's commit-ordered feed (:mod:`dataworkflows.ledger.event_feed`)
after its cursor, writes each event as an SSE frame whose ``id`` is the event's cursor,
and waits for its :class:`~dataworkflows.service.event_hub.Subscription` to be woken (or
the poll interval, or the keep-alive). A client that reconnects with ``Last-Event-ID``
gets exactly the events after the last one it received.

Live events (a ``StepStarted`` the moment an attempt begins in this process; see
:class:`~dataworkflows.events.RunEvent`) are sent without an ``id`` (they do not move the
cursor, and a resumed stream does not repeat them), right after the durable event they
follow (their ``sequence``), so a run's events keep their order on the stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dataworkflows.common.clock import iso_utc
from dataworkflows.common.errors import NotFound
from dataworkflows.events import RunEvent
from dataworkflows.ledger.event_feed import START, FeedCursor, FeedFilter, RunScope
from dataworkflows.service.event_hub import EventHub, Subscription
from dataworkflows.service.views import event_view

#: writes bytes to the client (raises ConnectionResetError once it has gone)
Write = Callable[[bytes], Awaitable[None]]
#: the first and the longest wait of a stream whose next events are held back by an older
#: transaction still open (seconds; doubled each time)
_HELD_BACK_FIRST, _HELD_BACK_MAX = 0.02, 1.0
#: runs whose last sent sequence a stream remembers (to place live events; a forgotten
#: run's live events wait until the stream has caught up)
_RUNS_REMEMBERED = 4096


def frame(event_type: str, data: dict[str, Any], cursor: FeedCursor | None) -> bytes:
    """One SSE frame: ``id`` (durable events only), ``event``, one ``data`` line."""
    head = f"id: {cursor.token}\n" if cursor is not None else ""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event_type}\ndata: {body}\n\n".encode()


PING = b": ping\n\n"
#: the first bytes of a stream (a comment: clients know it is open)
OPENED = b": stream open\n\n"


def durable_data(row: dict[str, Any]) -> dict[str, Any]:
    """An ``execution_events`` row (with its run's workflow and correlation id) as data."""
    return {
        "executionId": str(row["execution_id"]),
        "workflowId": row["workflow_id"],
        **event_view(row),
        "durable": True,
        "correlationId": row["correlation_id"],
    }


def live_data(event: RunEvent, scope: RunScope) -> dict[str, Any]:
    """A live event of this process as data (``durable`` false)."""
    return {
        "executionId": event.execution_id,
        "workflowId": event.workflow_id,
        "sequence": event.sequence,
        "type": str(event.type),
        "nodeId": event.node_id,
        "payload": event.payload,
        "createdAt": iso_utc(event.created_at),
        "durable": False,
        "correlationId": scope.correlation_id,
    }


async def start_cursor(hub: EventHub, where: FeedFilter, resume: str | None) -> FeedCursor:
    """Where a new stream starts: after ``resume`` (a ``Last-Event-ID``, or ``0`` for the
    beginning) if given; else the whole history of a run filter's run; else from now.

    Raises :class:`NotFound` when the run filter names no run of the tenant (checked
    before the stream starts, like every other check).
    """
    if where.execution_id is not None:
        scope = await hub.scope(where.execution_id)
        if scope is None or scope.tenant_id != where.tenant_id:
            raise NotFound(f"no execution {str(where.execution_id)!r}", code="execution_not_found")
    if resume is not None:
        return START if resume == "0" else FeedCursor.parse(resume)
    if where.execution_id is not None:
        return START
    return await hub.feed.head()


class EventStream:
    """Pumps one subscription's events to one client until it goes or the server stops."""

    def __init__(
        self,
        hub: EventHub,
        subscription: Subscription,
        cursor: FeedCursor,
        *,
        ping_seconds: float,
    ) -> None:
        self.hub = hub
        self.subscription = subscription
        self.cursor = cursor
        self.ping_seconds = ping_seconds
        #: live events waiting for the durable event they follow (arrival order)
        self._pending: list[RunEvent] = []
        #: the last durable sequence this stream sent, by run
        self._sent: dict[str, int] = {}

    async def run(self, write: Write, is_open: Callable[[], bool]) -> None:
        """Send events until the client disconnects (``write`` raises or ``is_open``
        turns false) or the hub closes the stream."""
        loop = asyncio.get_running_loop()
        subscription = self.subscription
        last_write = loop.time()
        held_back_wait = 0.0

        async def send(data: bytes) -> None:
            nonlocal last_write
            await write(data)
            last_write = loop.time()

        while not subscription.closed and is_open():
            subscription.wake.clear()
            # taken before the read: each of them arrived before the read began
            self._pending.extend(subscription.take_live())
            page = await self.hub.feed.read(self.cursor, subscription.where)
            await self._release(send, lambda e: self._sent.get(e.execution_id, 0) >= e.sequence)
            for cursor, row in page.events:
                await send(frame(row["type"], durable_data(row), cursor))
                self.cursor = cursor
                run, sequence = str(row["execution_id"]), row["sequence"]
                self._sent.pop(run, None)  # most recent last: the oldest are forgotten first
                self._sent[run] = sequence
                if len(self._sent) > _RUNS_REMEMBERED:
                    del self._sent[next(iter(self._sent))]
                await self._release(
                    send, lambda e, r=run, s=sequence: e.execution_id == r and e.sequence <= s
                )
            if page.full:
                continue
            if page.held_back:
                held_back_wait = min(max(held_back_wait * 2, _HELD_BACK_FIRST), _HELD_BACK_MAX)
            else:
                # caught up with everything committed before this read began: each pending
                # live event follows durable events this stream has sent (or that were
                # before its start), since it was published after they committed
                held_back_wait = 0.0
                await self._release(send, lambda _event: True)
            timeout = min(self.hub.poll_interval, held_back_wait or self.hub.poll_interval)
            timeout = min(timeout, max(last_write + self.ping_seconds - loop.time(), 0.0))
            try:
                await asyncio.wait_for(subscription.wake.wait(), timeout)
            except TimeoutError:
                pass
            if loop.time() - last_write >= self.ping_seconds and is_open():
                await send(PING)

    async def _release(
        self,
        send: Callable[[bytes], Awaitable[None]],
        ready: Callable[[RunEvent], bool],
    ) -> None:
        """Send (in arrival order) the pending live events that are ``ready`` and pass the
        filter; the others stay pending."""
        if not self._pending:
            return
        keep: list[RunEvent] = []
        for event in self._pending:
            if not ready(event):
                keep.append(event)
                continue
            scope = await self.hub.scope(uuid.UUID(event.execution_id))
            if scope is not None and self.subscription.where.admits(scope):
                await send(frame(str(event.type), live_data(event, scope), None))
        self._pending = keep
