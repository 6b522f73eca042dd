"""The scheduler: fires time-based triggers (``schedule``, ...) when they are due.

The kernel knows no cron: it asks each time-based :class:`~dataworkflows.TriggerType`
when a trigger fires next (:meth:`~dataworkflows.TriggerType.next_fire_time`) and how to
treat late fire times (:meth:`~dataworkflows.TriggerType.fire_policy`).

Exactly once per fire time, with any number of scheduler processes on one database:

1. A trigger's row holds its cursor, ``next_fire_at``: the first fire time not yet
   processed. :meth:`Scheduler.tick` selects enabled triggers whose cursor is due.
2. A scheduler *claims* a due trigger with one conditional UPDATE (lease owner and expiry,
   only if the cursor is unchanged and nobody else holds an unexpired lease). Only one
   process wins; the others move on.
3. The winner plans the fire times between the cursor and now (misfire policy), starts
   one run per fire time with the request id ``trg:<triggerId>:<fire time>`` (unique per
   workflow in the ledger, so even a second processing of the same window, after a crash
   or an expired lease, cannot start a second run), then advances the cursor, adds the
   counters and drops the lease in one UPDATE.

Nothing here depends on timing: the loop (:meth:`Scheduler.run`) sleeps until the earliest
time a tick can have work, or until a schedule changes, so replicas wake at their own
pace, and two of them waking for the same fire time simply race for the claim.

All times come from the kernel's clock, and the loop sleeps on it
(:meth:`~dataworkflows.common.clock.Clock.sleep_until`), so tests drive the scheduler with a
:class:`~dataworkflows.common.clock.FakeClock` -- calling :meth:`Scheduler.tick` or running the
real loop -- without waiting for real time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from dataworkflows.common import tracecontext
from dataworkflows.common.clock import Clock, iso_utc
from dataworkflows.common.counter import WaitableCounter
from dataworkflows.common.errors import ApiError
from dataworkflows.db.listen import listen_forever
from dataworkflows.db.models import workflows
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.service.fire_plan import plan_fires
from dataworkflows.service.triggers import SCHEDULE_CHANNEL, TriggerService
from dataworkflows.triggers import FirePolicy, FireResult, TriggerType

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one :meth:`Scheduler.tick` did (for tests and logs)."""

    processed: int = 0
    started: int = 0
    duplicates: int = 0
    not_activated: int = 0
    skipped: int = 0
    errors: int = 0
    executions: list[str] = field(default_factory=list)


class Scheduler:
    """The kernel's scheduler loop. One per kernel; any number per database.

    :meth:`run` ticks, then sleeps on the kernel's clock until the earliest time at which
    a tick can have work: the first due fire time of an enabled time-based trigger, or the
    end of a lease another scheduler holds (it may have died). A change of a trigger's
    schedule wakes it at once: in this process through
    :meth:`TriggerService.on_schedule_change`, from other processes through ``NOTIFY``
    (PostgreSQL). ``max_sleep`` bounds every sleep, for changes no notification reports
    (another process on SQLite, a jump of the wall clock).
    """

    def __init__(
        self,
        triggers: TriggerService,
        clock: Clock,
        *,
        max_sleep: float = 60.0,
        lease: float = 60.0,
        batch: int = 100,
        retry_delay: float = 1.0,
    ) -> None:
        self.triggers = triggers
        self.clock = clock
        self.max_sleep = timedelta(seconds=max_sleep)
        self.lease = timedelta(seconds=lease)
        self.batch = batch
        #: the shortest sleep after a tick that failed (no busy loop on a broken database)
        self.retry_delay = timedelta(seconds=retry_delay)
        #: identifies this scheduler in the leases it takes
        self.instance_id = uuid.uuid4().hex
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._started_ticks = 0
        self._completed = WaitableCounter()
        self._sleeps = WaitableCounter()
        #: the earliest time a tick may find work, as last computed (None: nothing scheduled)
        self.next_due: datetime | None = None
        #: the deadline of the current (or last) sleep: ``next_due`` bounded by ``max_sleep``
        self.sleeping_until: datetime | None = None
        #: True while :meth:`run` sleeps
        self.asleep = False
        #: why the last sleep ended: ``"due"`` (its deadline), ``"change"`` (a notification)
        self.last_wake: str | None = None
        #: set once this scheduler LISTENs for changes from other processes (PostgreSQL)
        self.listening = asyncio.Event()
        triggers.on_schedule_change(self.wake)

    # -- the loop -------------------------------------------------------------------------

    @property
    def sleeps(self) -> int:
        """How many times :meth:`run` has gone to sleep (see :meth:`wait_for_sleep`)."""
        return self._sleeps.value

    def wake(self) -> None:
        """Tick again now (a schedule changed); safe to call at any time."""
        self._wake.set()

    async def run(self) -> None:
        """Tick, sleep until the next due time or a change, repeat until :meth:`stop`."""
        listener = None
        if not self.triggers.db.is_sqlite:
            listener = asyncio.create_task(
                listen_forever(
                    self.triggers.db.listen_url,
                    [SCHEDULE_CHANNEL],
                    lambda _channel, _payload: self.wake(),
                    on_listening=self._on_listening,
                    retry_delay=self.retry_delay.total_seconds(),
                ),
                name="scheduler-listen",
            )
        try:
            while not self._stop.is_set():
                self._wake.clear()
                failed = False
                try:
                    failed = (await self.tick()).errors > 0
                except Exception:
                    failed = True
                    log.exception("scheduler tick failed; trying again shortly")
                deadline = await self._deadline(failed)
                if self._stop.is_set():
                    break
                self.sleeping_until = deadline
                self.asleep = True
                self._sleeps.bump()
                try:
                    woken = await self.clock.sleep_until(deadline, self._wake)
                finally:
                    self.asleep = False
                self.last_wake = "change" if woken else "due"
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            self.listening.clear()

    def _on_listening(self) -> None:
        self.listening.set()
        self.wake()  # notifications may have been missed while not listening

    async def _deadline(self, failed: bool) -> datetime:
        """When the next tick is due: the earliest due time, at most ``max_sleep`` away,
        and at least ``retry_delay`` away after a failure."""
        now = self.clock.now()
        try:
            self.next_due = await self.next_due_time(now)
        except Exception:
            log.exception("scheduler: reading the next due time failed")
            self.next_due, failed = None, True
        deadline = now + self.max_sleep
        if self.next_due is not None:
            deadline = min(deadline, self.next_due)
        if failed:
            deadline = max(deadline, now + self.retry_delay)
        return deadline

    async def next_due_time(self, now: datetime) -> datetime | None:
        """The earliest time at which :meth:`tick` may find a trigger to process: the
        first cursor of an enabled trigger of an installed time-based type that nobody
        holds, or the first end of a lease held on one (None: neither exists)."""
        types = sorted(self.time_based_types())
        if not types:
            return None
        t = workflow_triggers
        scheduled = (
            t.c.enabled.is_(True),
            t.c.next_fire_at.is_not(None),
            t.c.type.in_(types),
        )
        free = select(func.min(t.c.next_fire_at)).where(
            *scheduled, or_(t.c.lease_until.is_(None), t.c.lease_until <= now)
        )
        held = select(func.min(t.c.lease_until)).where(*scheduled, t.c.lease_until > now)
        async with self.triggers.db.connect() as conn:
            row = (await conn.execute(select(free.scalar_subquery(), held.scalar_subquery()))).one()
        found = [when for when in row if when is not None]
        return min(found) if found else None

    def stop(self) -> None:
        """Make :meth:`run` return after the tick in progress (also before it started)."""
        self._stop.set()
        self._wake.set()

    def rearm(self) -> None:
        """Allow :meth:`run` to be started again after :meth:`stop`."""
        self._stop.clear()

    async def wait_for_ticks(self, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``count`` ticks that *start* after this call have finished.

        Lets tests that run the real loop (``dataworkflows serve``) wait on the scheduler
        instead of sleeping.
        """
        await self._completed.reached(self._started_ticks + count, timeout)

    async def wait_for_sleep(self, after: int, timeout: float = 30.0) -> datetime | None:
        """Wait until :meth:`run` has gone to sleep more than ``after`` times (compare
        :attr:`sleeps`); returns the deadline of that sleep. For tests on a
        :class:`~dataworkflows.common.clock.FakeClock`: no real time needs to pass."""
        await self._sleeps.reached(after + 1, timeout)
        return self.sleeping_until

    async def wait_idle(self, timeout: float = 30.0) -> datetime | None:
        """Wait until :meth:`run` sleeps with no wake-up pending (a change it was told of
        is processed); returns the deadline of that sleep."""
        async with asyncio.timeout(timeout):
            while not self.asleep or self._wake.is_set():
                await self._sleeps.reached(self.sleeps + 1, timeout)
        return self.sleeping_until

    # -- one tick -------------------------------------------------------------------------

    def time_based_types(self) -> dict[str, type[TriggerType]]:
        return {
            name: entry.cls
            for name, entry in self.triggers.plugins.triggers.items()
            if entry.cls.time_based
        }

    async def tick(self) -> TickReport:
        """Process every trigger due at the clock's current time; returns what happened.

        Triggers whose type's plugin is not installed are left alone (they stay due and
        fire, under their misfire policy, once the plugin is back). The runs it starts are
        trace roots: no request's W3C trace context, whoever started the loop or the tick.
        """
        with tracecontext.bind(None):
            return await self._tick()

    async def _tick(self) -> TickReport:
        self._started_ticks += 1
        report = TickReport()
        try:
            types = self.time_based_types()
            if types:
                now = self.clock.now()
                for row in await self._due(types, now):
                    try:
                        await self._process(row, types[row["type"]], now, report)
                    except Exception:
                        report.errors += 1
                        log.exception("scheduler: trigger %s failed", row["id"])
        finally:
            self._completed.bump()
        return report

    async def _due(
        self, types: dict[str, type[TriggerType]], now: datetime
    ) -> list[dict[str, Any]]:
        t, w = workflow_triggers, workflows
        async with self.triggers.db.connect() as conn:
            rows = await conn.execute(
                select(t, w.c.status.label("workflow_status"))
                .join(w, w.c.id == t.c.workflow_id)
                .where(
                    t.c.enabled.is_(True),
                    t.c.next_fire_at.is_not(None),
                    t.c.next_fire_at <= now,
                    t.c.type.in_(sorted(types)),
                    or_(t.c.lease_until.is_(None), t.c.lease_until <= now),
                )
                .order_by(t.c.next_fire_at)
                .limit(self.batch)
            )
            return [dict(r._mapping) for r in rows]

    async def _claim(self, row: dict[str, Any], now: datetime) -> bool:
        # Not durable (no fsync / WAL flush on the way to a fire): a lease lost to a power
        # loss only makes the trigger due again, and request ids make its runs duplicates.
        t = workflow_triggers
        async with self.triggers.db.begin(durable=False) as conn:
            result = await conn.execute(
                update(t)
                .where(
                    t.c.id == row["id"],
                    t.c.enabled.is_(True),
                    t.c.next_fire_at == row["next_fire_at"],
                    or_(t.c.lease_until.is_(None), t.c.lease_until <= now),
                )
                .values(lease_owner=self.instance_id, lease_until=now + self.lease)
            )
        return bool(result.rowcount == 1)

    async def _release(self, trigger_id: str, values: dict[str, Any]) -> bool:
        t = workflow_triggers
        async with self.triggers.db.begin() as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.id == trigger_id, t.c.lease_owner == self.instance_id)
                .values(**values)
            )
        return bool(result.rowcount == 1)

    async def _process(
        self, row: dict[str, Any], cls: type[TriggerType], now: datetime, report: TickReport
    ) -> None:
        if not await self._claim(row, now):
            return  # another scheduler has it
        report.processed += 1
        handle = self.triggers.handle_from_row(row)
        if handle is None:
            # the stored config no longer validates: keep the lease until it expires
            await self._release(
                row["id"],
                {
                    "last_error": {
                        "code": "invalid_config",
                        "message": "the stored config no longer matches the trigger type's "
                        "schema; update the trigger",
                    }
                },
            )
            report.errors += 1
            return
        try:
            policy = cls.fire_policy(handle.config)
            plan = plan_fires(cls, handle.config, row["next_fire_at"], now, policy)
            results: list[FireResult] = []
            if plan.skipped:
                results.append(
                    FireResult("skipped", reason="misfire", details={"count": plan.skipped})
                )
            for fire_time, catch_up in plan.fire:
                results.append(await self._fire(cls, handle, policy, fire_time, catch_up, now))
        except Exception as exc:
            log.exception("scheduler: firing trigger %s failed", row["id"])
            # keep the cursor and the lease: the window is processed again once the lease
            # expires, and request ids make runs already started come back as duplicates
            await self._release(
                row["id"],
                {"last_error": {"code": "fire_failed", "message": f"{type(exc).__name__}: {exc}"}},
            )
            report.errors += 1
            return
        values = TriggerService.counter_values(results)
        values.update(
            next_fire_at=plan.next_fire_at,
            lease_owner=None,
            lease_until=None,
            last_event_at=now,
        )
        await self._release(row["id"], values)
        for result in results:
            if result.outcome == "started":
                report.started += 1
                report.executions.append(str(result.execution_id))
            elif result.outcome == "duplicate":
                report.duplicates += 1
            elif result.outcome in ("notActivated", "conditionError"):
                report.not_activated += 1
            elif result.outcome == "skipped":
                report.skipped += int(result.details.get("count", 1))

    async def _fire(
        self,
        cls: type[TriggerType],
        handle: Any,
        policy: FirePolicy,
        fire_time: datetime,
        catch_up: bool,
        now: datetime,
    ) -> FireResult:
        key = iso_utc(fire_time)
        if not handle.workflow_active:
            return FireResult("skipped", reason="workflowNotActive", details={"fireTime": key})
        if policy.overlap == "skip" and await self.triggers.has_active_run(handle):
            return FireResult("skipped", reason="overlap", details={"fireTime": key})
        event = {
            **cls.event(handle.config, fire_time),
            "scheduledTime": key,
            "firedAt": iso_utc(now),
            "catchUp": catch_up,
        }
        try:
            return await self.triggers.start(handle, event, key=key, count=False)
        except ApiError as exc:  # e.g. the workflow was deactivated a moment ago
            return FireResult(
                "skipped", reason=exc.code, details={"fireTime": key, "message": exc.message}
            )
