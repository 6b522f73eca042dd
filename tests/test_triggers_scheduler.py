"""The kernel's scheduler on a controlled clock: exactly once, misfires, overlap, DST.

No test here waits for real time: a shared :class:`FakeClock` moves when told to and the
tests call :meth:`Scheduler.tick` themselves (except the one checking ``serve``'s loop).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from dataworkflows.common.clock import FakeClock
from dataworkflows.db.models import workflow_executions
from dataworkflows.service.fire_plan import plan_fires
from dataworkflows.triggers import FirePolicy
from dataworkflows_schedule import Schedule, ScheduleConfig

WORKFLOW = {
    "id": "ticker",
    "displayName": "Ticker",
    "nodes": [
        {
            "id": "say",
            "actionType": "core.echo",
            "parameters": {"message": "run for {{ trigger.scheduledTime }}"},
        }
    ],
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def runs(kernel: Any, workflow_id: str = "ticker") -> list[dict[str, Any]]:
    t = workflow_executions
    async with kernel.db.connect() as conn:
        rows = await conn.execute(
            select(t.c.id, t.c.status, t.c.trigger, t.c.request_id)
            .where(t.c.workflow_id == workflow_id)
            .order_by(t.c.created_at)
        )
        return [dict(r._mapping) for r in rows]


async def active_runs(kernel: Any) -> int:
    t = workflow_executions
    async with kernel.db.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(t.c.status.in_(("Pending", "Running")))
                )
            ).scalar_one()
        )


async def scheduled(kernel: Any, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    await kernel.service.apply(WORKFLOW)
    return dict(
        await kernel.triggers.create("ticker", {"type": "schedule", "config": config, **extra})
    )


async def test_three_schedulers_sixty_minutes_exactly_sixty_runs(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernels = [await kernel_factory(clock=clock) for _ in range(3)]
    trigger = await scheduled(kernels[0], {"cron": "* * * * *"})
    assert trigger["nextFireAt"] == "2026-01-01T12:01:00Z"
    started = 0
    # 60 simulated minutes in 20 s steps; all three instances tick concurrently each step
    for _ in range(180):
        clock.advance(20)
        reports = await asyncio.gather(*(k.scheduler.tick() for k in kernels))
        started += sum(r.started for r in reports)
        assert sum(r.errors for r in reports) == 0
    assert clock.now() == utc(2026, 1, 1, 13, 0, 30)
    found = await runs(kernels[0])
    assert started == len(found) == 60
    times = sorted(r["trigger"]["scheduledTime"] for r in found)
    assert times == [
        (utc(2026, 1, 1, 12, 1) + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")
        for i in range(60)
    ]
    assert len({r["request_id"] for r in found}) == 60
    view = await kernels[1].triggers.get("ticker", trigger["id"])
    assert view["stats"]["runs"] == 60
    assert view["nextFireAt"] == "2026-01-01T13:01:00Z"


async def test_a_second_processing_of_the_same_window_starts_nothing(
    kernel_factory: Any,
) -> None:
    """A scheduler that dies after starting runs but before advancing the cursor: once its
    lease expires another one processes the window again and gets duplicates only."""
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    a = await kernel_factory(clock=clock, scheduler_lease=20)
    b = await kernel_factory(clock=clock, scheduler_lease=20)
    trigger = await scheduled(a, {"cron": "* * * * *", "misfirePolicy": "catchUpAll"})
    clock.advance(minutes=3)  # 12:03:30: 12:01, 12:02 misfired, 12:03 on time
    row = (await a.scheduler._due(a.scheduler.time_based_types(), clock.now()))[0]
    assert await a.scheduler._claim(row, clock.now())
    handle = a.triggers.handle_from_row(row)
    policy = Schedule.fire_policy(handle.config)
    plan = plan_fires(Schedule, handle.config, row["next_fire_at"], clock.now(), policy)
    for when, catch_up in plan.fire:  # "a" fires, then dies before releasing
        await a.scheduler._fire(Schedule, handle, policy, when, catch_up, clock.now())
    assert len(await runs(a)) == 3
    assert (await b.scheduler.tick()).processed == 0  # the lease holds
    clock.advance(21)  # 12:03:51: the lease has expired, no new fire time yet
    report = await b.scheduler.tick()
    assert (report.processed, report.started, report.duplicates) == (1, 0, 3)
    assert len(await runs(a)) == 3
    view = await b.triggers.get("ticker", trigger["id"])
    assert view["nextFireAt"] == "2026-01-01T12:04:00Z"


@pytest.mark.parametrize(
    ("policy", "expected_runs", "expected_skipped"),
    [("skip", 0, 10), ("catchUpOne", 1, 9), ("catchUpAll", 10, 0)],
)
async def test_misfire_policies_after_ten_minutes_down(
    kernel_factory: Any, policy: str, expected_runs: int, expected_skipped: int
) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    trigger = await scheduled(
        kernel, {"cron": "* * * * *", "misfirePolicy": policy, "misfireGraceSeconds": 10}
    )
    clock.set(utc(2026, 1, 1, 12, 1, 5))
    assert (await kernel.scheduler.tick()).started == 1  # 12:01, on time
    # down from 12:01:05 to 12:11:30: 12:02 ... 12:11 (10 fire times) were missed
    clock.set(utc(2026, 1, 1, 12, 11, 30))
    report = await kernel.scheduler.tick()
    assert report.started == expected_runs
    assert report.skipped == expected_skipped
    found = await runs(kernel)
    assert len(found) == 1 + expected_runs
    catch_ups = [r["trigger"] for r in found[1:]]
    assert all(p["catchUp"] is True and p["firedAt"] == "2026-01-01T12:11:30Z" for p in catch_ups)
    if policy == "catchUpOne":
        assert catch_ups[0]["scheduledTime"] == "2026-01-01T12:11:00Z"
    view = await kernel.triggers.get("ticker", trigger["id"])
    assert view["stats"]["skipped"] == expected_skipped
    assert view["nextFireAt"] == "2026-01-01T12:12:00Z"
    # back to normal: the next minute fires on time under every policy
    clock.set(utc(2026, 1, 1, 12, 12, 1))
    assert (await kernel.scheduler.tick()).started == 1
    assert (await runs(kernel))[-1]["trigger"]["catchUp"] is False


async def test_catch_up_is_bounded_by_window_and_count(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    await scheduled(
        kernel,
        {
            "cron": "* * * * *",
            "misfirePolicy": "catchUpAll",
            "misfireGraceSeconds": 10,
            "catchUpWindowSeconds": 300,
        },
    )
    clock.set(utc(2026, 1, 2, 12, 0, 30))  # a day later
    report = await kernel.scheduler.tick()
    # only fire times within the last 5 minutes are caught up: 11:56 ... 12:00
    assert report.started == 5
    assert sorted(r["trigger"]["scheduledTime"] for r in await runs(kernel)) == [
        f"2026-01-02T11:{m}:00Z" for m in (56, 57, 58, 59)
    ] + ["2026-01-02T12:00:00Z"]

    config = ScheduleConfig.model_validate(
        {"cron": "* * * * *", "misfirePolicy": "catchUpAll", "maxCatchUp": 3}
    )
    plan = plan_fires(
        Schedule,
        config,
        utc(2026, 1, 1, 12, 1),
        utc(2026, 1, 1, 12, 11, 30),
        Schedule.fire_policy(config),
    )
    # 12:01 ... 12:10 misfired (the three latest are caught up); 12:11 is on time
    assert plan.fire == [
        (utc(2026, 1, 1, 12, 8), True),
        (utc(2026, 1, 1, 12, 9), True),
        (utc(2026, 1, 1, 12, 10), True),
        (utc(2026, 1, 1, 12, 11), False),
    ]
    assert plan.skipped == 7 and plan.next_fire_at == utc(2026, 1, 1, 12, 12)


def test_plan_fires_on_time_and_misfired() -> None:
    config = ScheduleConfig.model_validate({"intervalSeconds": 60})
    policy = FirePolicy(misfire="skip", misfire_grace=timedelta(seconds=60))
    # 12:01 is 30 s late: on time within the default grace
    plan = plan_fires(Schedule, config, utc(2026, 1, 1, 12, 1), utc(2026, 1, 1, 12, 1, 30), policy)
    assert plan.fire == [(utc(2026, 1, 1, 12, 1), False)]
    assert plan.skipped == 0 and plan.next_fire_at == utc(2026, 1, 1, 12, 2)


async def test_overlap_skip_never_has_two_runs_at_once(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    trigger = await scheduled(kernel, {"cron": "* * * * *", "overlapPolicy": "skip"})
    skipped = 0
    for minute in range(1, 31):
        clock.advance(60)
        skipped += (await kernel.scheduler.tick()).skipped
        assert await active_runs(kernel) <= 1
        if minute % 3 == 0:  # the run started earlier finishes now and then
            while await kernel.worker.run_once():
                pass
            assert await active_runs(kernel) == 0
    found = await runs(kernel)
    # a run starts at minutes 1, 4, 7, ...: the two fire times in between are skipped
    assert len(found) == 10 and skipped == 20
    view = await kernel.triggers.get("ticker", trigger["id"])
    assert view["stats"] == {"runs": 10, "notActivated": 0, "conditionErrors": 0, "skipped": 20}


async def test_overlap_allow_starts_every_fire_time(kernel_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    await scheduled(kernel, {"cron": "* * * * *", "overlapPolicy": "allow"})
    for _ in range(5):
        clock.advance(60)
        await kernel.scheduler.tick()
    assert await active_runs(kernel) == 5


async def test_spring_forward_as_documented(kernel_factory: Any) -> None:
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z
    clock = FakeClock(utc(2026, 3, 8, 5, 0, 30))  # 00:00:30 EST
    kernel = await kernel_factory(clock=clock)
    await kernel.service.apply(WORKFLOW)
    daily = await kernel.triggers.create(
        "ticker",
        {"type": "schedule", "config": {"cron": "30 2 * * *", "timezone": "America/New_York"}},
    )
    quarterly = await kernel.triggers.create(
        "ticker",
        {"type": "schedule", "config": {"cron": "*/15 * * * *", "timezone": "America/New_York"}},
    )
    for _ in range(3 * 60):  # tick every minute for 3 real hours, until 04:00 EDT
        clock.advance(60)
        await kernel.scheduler.tick()
    by_trigger: dict[str, list[str]] = {daily["id"]: [], quarterly["id"]: []}
    for run in await runs(kernel):
        by_trigger[run["trigger"]["triggerId"]].append(run["trigger"]["localScheduledTime"])
    # the fixed-time job whose 02:30 does not exist runs once, at the jump
    assert by_trigger[daily["id"]] == ["2026-03-08T03:00:00-04:00"]
    # the wildcard job follows real time: no 02:xx, 15 minutes between 01:45 and 03:00
    assert by_trigger[quarterly["id"]] == [
        "2026-03-08T00:15:00-05:00",
        "2026-03-08T00:30:00-05:00",
        "2026-03-08T00:45:00-05:00",
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T01:15:00-05:00",
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-08T03:45:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]


async def test_fall_back_as_documented(kernel_factory: Any) -> None:
    # New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00Z
    clock = FakeClock(utc(2026, 11, 1, 4, 0, 30))  # 00:00:30 EDT
    kernel = await kernel_factory(clock=clock)
    await kernel.service.apply(WORKFLOW)
    daily = await kernel.triggers.create(
        "ticker",
        {"type": "schedule", "config": {"cron": "30 1 * * *", "timezone": "America/New_York"}},
    )
    half_hourly = await kernel.triggers.create(
        "ticker",
        {"type": "schedule", "config": {"cron": "*/30 * * * *", "timezone": "America/New_York"}},
    )
    for _ in range(4 * 60):  # until 03:00 EST
        clock.advance(60)
        await kernel.scheduler.tick()
    by_trigger: dict[str, list[str]] = {daily["id"]: [], half_hourly["id"]: []}
    for run in await runs(kernel):
        by_trigger[run["trigger"]["triggerId"]].append(run["trigger"]["localScheduledTime"])
    # the fixed-time job runs once, at the first 01:30
    assert by_trigger[daily["id"]] == ["2026-11-01T01:30:00-04:00"]
    # the wildcard job runs in both 01:xx hours: every 30 real minutes
    assert by_trigger[half_hourly["id"]] == [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


async def test_only_active_enabled_workflows_fire_and_conditions_count(
    kernel_factory: Any,
) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    trigger = await scheduled(
        kernel,
        {"cron": "* * * * *", "data": {"only": "even"}},
        activationCondition="trigger.scheduledTime[14:16] | int is even",
    )
    for _ in range(4):  # 12:01 .. 12:04: two even minutes
        clock.advance(60)
        await kernel.scheduler.tick()
    assert len(await runs(kernel)) == 2
    view = await kernel.triggers.get("ticker", trigger["id"])
    assert view["stats"]["notActivated"] == 2
    payload = (await runs(kernel))[0]["trigger"]
    assert payload["data"] == {"only": "even"}
    assert payload["schedule"] == {"cron": "* * * * *"}
    assert payload["timezone"] == "UTC"

    # disabled: nothing fires, and enabling does not catch up what passed meanwhile
    await kernel.triggers.set_enabled("ticker", trigger["id"], False)
    clock.advance(minutes=10)
    assert (await kernel.scheduler.tick()).processed == 0
    view = await kernel.triggers.set_enabled("ticker", trigger["id"], True)
    assert view["nextFireAt"] == "2026-01-01T12:15:00Z"

    # a workflow that is not Active: its fire times are skipped, not queued for later
    async with kernel.db.begin() as conn:
        from dataworkflows.db.models import workflows

        await conn.execute(
            workflows.update().where(workflows.c.id == "ticker").values(status="Draft")
        )
    clock.set(utc(2026, 1, 1, 12, 16, 5))
    report = await kernel.scheduler.tick()
    assert (report.processed, report.started, report.skipped) == (1, 0, 2)
    assert len(await runs(kernel)) == 2


async def test_schedule_runs_succeed_with_scheduled_time_in_templates(
    kernel_factory: Any,
) -> None:
    clock = FakeClock(utc(2026, 1, 1, 8, 59, 30))
    kernel = await kernel_factory(clock=clock)
    await scheduled(kernel, {"cron": "0 9 * * *", "timezone": "Europe/Berlin"})
    clock.set(utc(2026, 1, 2, 8, 0, 1))  # 09:00:01 in Berlin
    report = await kernel.scheduler.tick()
    assert report.started == 1
    assert await kernel.worker.run_once()
    run = await kernel.service.get_execution(report.executions[0])
    assert run["status"] == "Succeeded"
    assert run["actions"][0]["outputs"] == {"echo": "run for 2026-01-02T08:00:00Z"}
    assert run["trigger"]["localScheduledTime"] == "2026-01-02T09:00:00+01:00"


async def test_serve_runs_the_scheduler_loop(kernel_factory: Any, api_factory: Any) -> None:
    clock = FakeClock(utc(2026, 1, 1, 12, 0, 30))
    kernel = await kernel_factory(clock=clock)
    api = await api_factory(kernel)  # create_app: API + worker + scheduler
    await kernel.service.apply(WORKFLOW)
    resp = await api.post(
        "/api/v1/workflows/ticker/triggers",
        json={"type": "schedule", "config": {"cron": "* * * * *"}},
    )
    trigger = await resp.json()
    assert trigger["info"] == {"schedule": "cron '* * * * *' in UTC (wildcard)"}
    assert trigger["timeBased"] and trigger["nextFireAt"] == "2026-01-01T12:01:00Z"
    clock.advance(60)
    await kernel.scheduler.wait_for_ticks(1)
    found = await runs(kernel)
    assert len(found) == 1
    assert await kernel.ledger.wait_until_final(found[0]["id"], 30) == "Succeeded"
    await api.close()
    assert kernel._scheduler_task is None  # stopped with the app


async def test_scheduler_with_no_time_based_types_does_nothing(kernel_factory: Any) -> None:
    kernel = await kernel_factory(entrypoints=False)
    report = await kernel.scheduler.tick()
    assert report.processed == 0
    assert uuid.UUID(hex=kernel.scheduler.instance_id)


async def test_scheduler_loop_stops_even_before_its_first_tick(kernel_factory: Any) -> None:
    kernel = await kernel_factory(scheduler_max_sleep=3600)
    task = kernel.start_scheduler()
    await kernel.stop_scheduler()  # the task had not run yet: it must still end
    assert task.done()
    kernel.start_scheduler()  # and it can be started again
    await kernel.scheduler.wait_for_ticks(1)
    await kernel.stop_scheduler()


async def test_scheduled_time_reaches_templates_as_execution_scheduled_time(
    kernel_factory: Any,
) -> None:
    clock = FakeClock(utc(2026, 3, 2, 8, 59, 50))
    kernel = await kernel_factory(clock=clock)
    await kernel.service.apply(
        {
            "id": "ticker",
            "displayName": "Ticker",
            "nodes": [
                {
                    "id": "say",
                    "actionType": "core.echo",
                    "parameters": {"message": "due {{ execution.scheduledTime }}"},
                }
            ],
        }
    )
    await kernel.triggers.create("ticker", {"type": "schedule", "config": {"cron": "0 9 * * *"}})
    clock.advance(20)
    assert (await kernel.scheduler.tick()).started == 1
    (run,) = await runs(kernel)
    kernel.start_worker()
    assert await kernel.ledger.wait_until_final(run["id"], timeout=30) == "Succeeded"
    view = await kernel.service.get_execution(str(run["id"]))
    assert view["actions"][0]["outputs"] == {"echo": "due 2026-03-02T09:00:00Z"}
