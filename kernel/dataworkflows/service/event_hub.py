"""One process's fan-out of run events to its live streams (``GET /events/stream``).

Streams do not read events from here: they read the ledger's commit-ordered feed
(:mod:`dataworkflows.ledger.event_feed`), which is what makes them resumable. The hub only
tells them *when* to read, and hands them the live events nothing durable carries:

* in this process, the kernel's observer fan-out (``on_run_event``) calls
  :meth:`EventHub.publish` for every event: a durable one wakes every stream, a live one
  (``durable`` False: a step that just started) is queued to every stream;
* on PostgreSQL, one shared ``LISTEN`` connection per process (opened with the first
  stream, closed with the kernel) wakes every stream when any process commits events (the
  NOTIFY of migration 0012), and when it (re)connects. Writers NOTIFY only while some
  process announces open streams (a row of ``event_stream_watchers``, renewed every
  :data:`WATCH_RENEW` seconds while this process has streams, withdrawn after its last
  one): with no stream open anywhere, writing events costs no NOTIFY;
* a poll every ``poll_interval`` seconds catches what nothing announced (another process
  on SQLite, a notification lost while the listener reconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict

from dataworkflows.db.database import Database
from dataworkflows.db.listen import listen_forever
from dataworkflows.events import RunEvent
from dataworkflows.ledger.event_feed import EventFeed, FeedFilter, RunScope
from dataworkflows.ledger.records import EVENTS_CHANNEL

log = logging.getLogger(__name__)

#: live events a stream keeps while it is behind (then the oldest are dropped: they are
#: hints, the durable events that follow them are never dropped)
MAX_LIVE_BACKLOG = 1000
#: runs whose tenant, workflow and correlation id the hub remembers (live events)
SCOPE_CACHE = 4096
#: seconds between renewals of this process's announcement that it streams events, and
#: how long one announcement lasts (a process that dies leaves it behind that long)
WATCH_RENEW, WATCH_LEASE = 10.0, 30.0


class Subscription:
    """One stream's mailbox: a wake-up flag and the live events it has not taken yet."""

    def __init__(self, where: FeedFilter) -> None:
        self.where = where
        self.wake = asyncio.Event()
        self.live: list[RunEvent] = []
        #: set when the process shuts down: the stream ends
        self.closed = False

    def take_live(self) -> list[RunEvent]:
        """The live events queued so far (the queue is emptied)."""
        taken, self.live = self.live, []
        return taken


class EventHub:
    """Wakes this process's streams; one per kernel."""

    def __init__(self, db: Database, *, poll_interval: float = 1.0) -> None:
        self.db = db
        self.feed = EventFeed(db)
        #: seconds between reads of an idle stream that nothing woke
        self.poll_interval = poll_interval
        self._subscriptions: set[Subscription] = set()
        self._listener: asyncio.Task[None] | None = None
        self._scopes: OrderedDict[uuid.UUID, RunScope] = OrderedDict()
        #: set each time the LISTEN connection is in place (tests wait on it)
        self.listening = asyncio.Event()
        self._watcher_id = uuid.uuid4().hex
        self._watch_task: asyncio.Task[None] | None = None
        #: loop time until which this process's announcement needs no renewal
        self._watched_until = 0.0

    @property
    def subscribers(self) -> int:
        """Streams open in this process."""
        return len(self._subscriptions)

    def subscribe(self, where: FeedFilter) -> Subscription:
        """A new stream's subscription (take it before the stream's first read)."""
        subscription = Subscription(where)
        self._subscriptions.add(subscription)
        if not self.db.is_sqlite and (self._listener is None or self._listener.done()):
            self.listening.clear()
            self._listener = asyncio.create_task(
                listen_forever(
                    self.db.listen_url,
                    [EVENTS_CHANNEL],
                    lambda _channel, _payload: self.wake_all(),
                    on_listening=self._on_listening,
                ),
                name="dataworkflows-event-listener",
            )
        return subscription

    async def announce(self) -> None:
        """Make sure writers NOTIFY while this process streams (PostgreSQL; call after
        :meth:`subscribe`, before the stream's first read). A failure is logged: the
        streams then rely on the poll until the next renewal."""
        if self.db.is_sqlite:
            return
        if asyncio.get_running_loop().time() >= self._watched_until:
            await self._renew()
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(
                self._keep_announcing(), name="dataworkflows-event-watch"
            )

    async def _renew(self) -> None:
        try:
            await self.feed.watch(self._watcher_id, WATCH_LEASE)
        except Exception:
            log.warning("could not announce the event streams of this process", exc_info=True)
            return
        self._watched_until = asyncio.get_running_loop().time() + WATCH_RENEW

    async def _keep_announcing(self) -> None:
        """Renew the announcement while streams are open; withdraw it after the last."""
        while True:
            await asyncio.sleep(WATCH_RENEW)
            if self._subscriptions:
                await self._renew()
                continue
            self._watched_until = 0.0
            await self._withdraw()
            if not self._subscriptions:
                return
            await self._renew()  # a stream opened while it was withdrawn

    async def _withdraw(self) -> None:
        try:
            await self.feed.unwatch(self._watcher_id)
        except Exception:
            log.warning("could not withdraw the event streams' announcement", exc_info=True)

    def unsubscribe(self, subscription: Subscription) -> None:
        """A stream ended (the LISTEN connection stays for the next one until :meth:`close`)."""
        self._subscriptions.discard(subscription)

    def publish(self, event: RunEvent) -> None:
        """An event of this process (the observer fan-out; never raises, never waits)."""
        if not self._subscriptions:
            return
        if event.durable:
            self.wake_all()
            return
        for subscription in self._subscriptions:
            if len(subscription.live) >= MAX_LIVE_BACKLOG:
                del subscription.live[0]
            subscription.live.append(event)
            subscription.wake.set()

    def wake_all(self) -> None:
        """Tell every stream to read the feed again."""
        for subscription in self._subscriptions:
            subscription.wake.set()

    def _on_listening(self) -> None:
        self.listening.set()
        self.wake_all()  # what was committed while nobody listened

    async def scope(self, execution_id: uuid.UUID) -> RunScope | None:
        """A run's tenant, workflow and correlation id (remembered; None if no run)."""
        found = self._scopes.get(execution_id)
        if found is not None:
            self._scopes.move_to_end(execution_id)
            return found
        found = await self.feed.run_scope(execution_id)
        if found is not None:
            self._scopes[execution_id] = found
            while len(self._scopes) > SCOPE_CACHE:
                self._scopes.popitem(last=False)
        return found

    def close_streams(self) -> None:
        """End every open stream (the server is shutting down)."""
        for subscription in self._subscriptions:
            subscription.closed = True
            subscription.wake.set()

    async def close(self) -> None:
        """End the streams, stop listening and withdraw the announcement."""
        self.close_streams()
        tasks = [task for task in (self._listener, self._watch_task) if task is not None]
        self._listener = self._watch_task = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watched_until:
            self._watched_until = 0.0
            await self._withdraw()
