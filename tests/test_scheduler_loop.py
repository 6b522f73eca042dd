"""The scheduler's loop: it sleeps until the earliest due time, wakes on a change, and
stays exactly-once with replicas that do not tick in step.

Every test runs the real loop (:meth:`Kernel.start_scheduler`) on a
:class:`~dataworkflows.common.clock.FakeClock`: the scheduler sleeps on that clock, so moving
the clock past a deadline wakes it at once, and no test waits for real time. Tests
synchronise on the scheduler's own sleep counter (:meth:`Scheduler.wait_for_sleep`,
:meth:`Scheduler.wait_idle`), never on a sleep.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dataworkflows.common.clock import FakeClock
from dataworkflows.db.models import workflow_executions
from dataworkflows.testing import postgres_only

WORKFLOW = {
    "id": "ticker",
    "displayName": "Ticker",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "tick"}}],
}


def utc(*args: int, **kwargs: int) -> datetime:
    return datetime(*args, tzinfo=UTC, **kwargs)  # type: ignore[misc]


async def scheduled_times(kernel: Any) -> list[str]:
    """The ``scheduledTime`` of every run of the workflow, in order."""
    t = workflow_executions
    async with kernel.db.connect() as conn:
        rows = await conn.execute(select(t.c.trigger).where(t.c.workflow_id == "ticker"))
        return sorted(r.trigger["scheduledTime"] for r in rows)


async def schedule(kernel: Any, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return dict(
        await kernel.triggers.create("ticker", {"type": "schedule", "config": config, **extra})
    )


async def started(kernel: Any) -> datetime | None:
    """Start the kernel's scheduler loop; return the deadline of its first idle sleep
    (on PostgreSQL, once it also listens for changes from other processes)."""
    kernel.start_scheduler()
    if not kernel.db.is_sqlite:
        await asyncio.wait_for(kernel.scheduler.listening.wait(), 30)
    return await kernel.scheduler.wait_idle()


async def test_sleeps_until_the_earliest_due_time_and_not_a_tick_longer(
    kernel_factory: Any,
) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await kernel.service.apply(WORKFLOW)
    await schedule(kernel, {"cron": "0 13 * * *"})
    await schedule(kernel, {"cron": "*/5 * * * *"})  # the earliest: 12:05
    await schedule(kernel, {"cron": "* * * * *"}, enabled=False)  # disabled: never due
    await kernel.triggers.create("ticker", {"type": "webhook", "config": {}})  # not time-based
    scheduler = kernel.scheduler
    assert await started(kernel) == utc(2026, 1, 1, 12, 5)
    assert scheduler.next_due == utc(2026, 1, 1, 12, 5)
    assert clock.sleepers == [utc(2026, 1, 1, 12, 5)]

    # a millisecond before the due time it is still asleep: the clock woke nobody
    sleeps = scheduler.sleeps
    clock.set(utc(2026, 1, 1, 12, 4, 59, microsecond=999_000))
    assert scheduler.asleep and scheduler.sleeping_until == utc(2026, 1, 1, 12, 5)
    assert await scheduled_times(kernel) == []

    # at the due time it wakes, fires once and sleeps until the next fire time
    clock.set(utc(2026, 1, 1, 12, 5))
    assert await scheduler.wait_for_sleep(sleeps) == utc(2026, 1, 1, 12, 10)
    assert scheduler.sleeps == sleeps + 1 and scheduler.last_wake == "due"
    assert await scheduled_times(kernel) == ["2026-01-01T12:05:00Z"]


async def test_a_schedule_change_wakes_the_scheduler(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await kernel.service.apply(WORKFLOW)
    scheduler = kernel.scheduler
    assert await started(kernel) == utc(2026, 1, 1, 13, 0, 30)  # nothing due: max_sleep

    # created: the scheduler looks again at once, no time passes
    sleeps = scheduler.sleeps
    trigger = await schedule(kernel, {"cron": "*/10 * * * *"})
    assert await scheduler.wait_idle() == utc(2026, 1, 1, 12, 10)
    assert scheduler.last_wake == "change" and scheduler.sleeps > sleeps
    assert clock.now() == utc(2026, 1, 1, 12, 0, 30)

    # updated to an earlier schedule
    await kernel.triggers.update("ticker", trigger["id"], {"config": {"cron": "*/2 * * * *"}})
    assert await scheduler.wait_idle() == utc(2026, 1, 1, 12, 2)
    assert scheduler.last_wake == "change"

    # disabled: nothing is due any more
    await kernel.triggers.set_enabled("ticker", trigger["id"], False)
    assert await scheduler.wait_idle() == utc(2026, 1, 1, 13, 0, 30)
    assert scheduler.next_due is None

    # enabled again: due from now on
    await kernel.triggers.set_enabled("ticker", trigger["id"], True)
    assert await scheduler.wait_idle() == utc(2026, 1, 1, 12, 2)

    # and it fires at that time
    sleeps = scheduler.sleeps
    clock.set(utc(2026, 1, 1, 12, 2))
    assert await scheduler.wait_for_sleep(sleeps) == utc(2026, 1, 1, 12, 4)
    assert await scheduled_times(kernel) == ["2026-01-01T12:02:00Z"]


async def test_a_trigger_state_write_does_not_wake_the_scheduler(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await kernel.service.apply(WORKFLOW)
    trigger = await schedule(kernel, {"cron": "*/10 * * * *"})
    await started(kernel)
    await kernel.triggers.set_state(trigger["id"], {"seen": 1})  # not a schedule change
    assert kernel.scheduler.asleep and not kernel.scheduler._wake.is_set()


async def test_a_lease_held_elsewhere_is_a_wake_up_time_not_a_busy_loop(
    kernel_factory: Any,
) -> None:
    """A due trigger another scheduler holds: sleep until its lease ends (it may have died
    holding it), then process it."""
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    other = await kernel_factory(clock=clock, scheduler_lease=20)
    kernel = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await kernel.service.apply(WORKFLOW)
    await schedule(kernel, {"cron": "* * * * *"})
    clock.set(utc(2026, 1, 1, 12, 1, 1))
    row = (await other.scheduler._due(other.scheduler.time_based_types(), clock.now()))[0]
    assert await other.scheduler._claim(row, clock.now())  # ... and "other" dies here
    assert await started(kernel) == utc(2026, 1, 1, 12, 1, 21)
    sleeps = kernel.scheduler.sleeps
    clock.set(utc(2026, 1, 1, 12, 1, 21))
    assert await kernel.scheduler.wait_for_sleep(sleeps) == utc(2026, 1, 1, 12, 2)
    assert await scheduled_times(kernel) == ["2026-01-01T12:01:00Z"]


@postgres_only
async def test_a_change_in_another_process_wakes_the_scheduler_by_notify(
    kernel_factory: Any,
) -> None:
    """Two kernels on one PostgreSQL database stand for two processes: the one that
    creates the trigger does not share its in-process listeners with the other."""
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    api_side = await kernel_factory(clock=clock)
    scheduler_side = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await api_side.service.apply(WORKFLOW)
    scheduler = scheduler_side.scheduler
    assert await started(scheduler_side) == utc(2026, 1, 1, 13, 0, 30)
    sleeps = scheduler.sleeps
    await schedule(api_side, {"cron": "*/10 * * * *"})
    assert await scheduler.wait_for_sleep(sleeps) == utc(2026, 1, 1, 12, 10)
    assert scheduler.last_wake == "change"


async def test_two_schedulers_out_of_step_fire_each_due_time_once(kernel_factory: Any) -> None:
    """Two replicas whose clocks differ (up to 30 s) and whose wake-ups interleave at
    random, sometimes at the same moment: every fire time starts exactly one run. The
    claim and the request id ``trg:<trigger>:<fire time>`` make it so, not timing."""
    start = utc(2026, 1, 1, 12, 0, 30)
    clocks = [FakeClock(start), FakeClock(start)]
    kernels = [await kernel_factory(clock=c, scheduler_max_sleep=3600) for c in clocks]
    await kernels[0].service.apply(WORKFLOW)
    await schedule(kernels[0], {"cron": "* * * * *", "misfirePolicy": "catchUpAll"})
    for kernel in kernels:
        assert await started(kernel) == utc(2026, 1, 1, 12, 1)

    async def advance(i: int, seconds: float) -> None:
        scheduler, clock = kernels[i].scheduler, clocks[i]
        sleeps = scheduler.sleeps
        clock.advance(seconds)
        if scheduler.sleeping_until is not None and scheduler.sleeping_until <= clock.now():
            await scheduler.wait_for_sleep(sleeps)

    rng = random.Random(13)
    end = start + timedelta(minutes=30)
    while min(c.now() for c in clocks) < end:
        step = rng.uniform(5, 40)
        if rng.random() < 0.3:  # both at once: they race for the same claim
            lead = max(c.now() for c in clocks)
            await asyncio.gather(
                *(advance(i, (lead - c.now()).total_seconds() + step) for i, c in enumerate(clocks))
            )
            continue
        i = rng.randrange(2)
        other = clocks[1 - i].now()
        ahead = (clocks[i].now() + timedelta(seconds=step) - other).total_seconds()
        await advance(i, step if ahead <= 30 else max(0.0, step - (ahead - 30)))
    final = max(c.now() for c in clocks)
    await asyncio.gather(
        *(advance(i, (final - c.now()).total_seconds()) for i, c in enumerate(clocks))
    )
    times = await scheduled_times(kernels[0])
    minutes = int((final - utc(2026, 1, 1, 12, 1)).total_seconds() // 60) + 1
    expected = [
        (utc(2026, 1, 1, 12, 1) + timedelta(minutes=m)).isoformat().replace("+00:00", "Z")
        for m in range(minutes)
    ]
    assert times == expected  # each due time exactly once, none missing
