"""Retention (ledger/retention.py, service/pruning.py, ``dataworkflows ledger``): finished
runs past their policy are deleted with their attempts and events, in batches; runs in
flight and dead-lettered runs are kept; a dry run changes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import dataworkflows_echo
from dataworkflows.db.models import (
    action_executions,
    dead_letters,
    execution_events,
    workflow_executions,
    workflows,
)
from dataworkflows.kernel import Kernel
from dataworkflows.ledger.retention import Pruner, RetentionPolicy
from dataworkflows.service.pruning import PruneLoop
from dataworkflows.settings import Settings

DAY = timedelta(days=1)


def echo_workflow(workflow_id: str, *, fail: bool = False) -> dict[str, Any]:
    parameters: dict[str, Any] = {"message": "hi"}
    if fail:
        parameters.update(failAlways=True, failureKind="permanent")
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": parameters}],
    }


async def counts(kernel: Any) -> dict[str, int]:
    async with kernel.db.connect() as conn:
        out = {}
        for table in (workflow_executions, action_executions, execution_events, dead_letters):
            out[table.name] = (
                await conn.execute(sa.select(sa.func.count()).select_from(table))
            ).scalar_one()
        return out


async def run_ids(kernel: Any) -> set[str]:
    async with kernel.db.connect() as conn:
        rows = await conn.execute(sa.select(workflow_executions.c.id))
        return {str(r) for r in rows.scalars()}


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)


async def dead_letter(kernel: Any, run_id: str, *, requeued: bool) -> None:
    now = datetime.now(UTC)
    async with kernel.db.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=uuid.uuid4(),
                execution_id=uuid.UUID(run_id),
                workflow_id="bad",
                tenant_id="default",
                reason="recovered too often",
                created_at=now,
                requeued_at=now if requeued else None,
            )
        )


async def test_age_rules_keep_failed_runs_longer_and_never_touch_runs_in_flight(
    kernel, run_workflow
):
    ok = await run_workflow(kernel, echo_workflow("ok"))
    bad = await run_workflow(kernel, echo_workflow("bad", fail=True))
    bad_waiting = await run_workflow(kernel, echo_workflow("bad", fail=True))
    bad_requeued = await run_workflow(kernel, echo_workflow("bad", fail=True))
    await dead_letter(kernel, bad_waiting["id"], requeued=False)
    await dead_letter(kernel, bad_requeued["id"], requeued=True)
    await kernel.stop_worker()
    pending, _ = await kernel.service.execute("ok", trigger={})  # queued, never started
    assert (ok["status"], bad["status"]) == ("Succeeded", "Failed")
    before = await counts(kernel)
    now = datetime.now(UTC)
    pruner = Pruner(kernel.db, RetentionPolicy(days=30, failed_days=90), batch_size=500)

    assert (await pruner.prune(now + 10 * DAY)).runs == 0

    dry = await pruner.prune(now + 40 * DAY, dry_run=True)
    assert dry.as_dict() == {
        "dryRun": True,
        "runs": 1,
        "rows": {"workflow_executions": 1, "action_executions": 1, "execution_events": 4},
        "batches": 0,
        "partitions": [],
    }
    assert await counts(kernel) == before  # a dry run deletes nothing

    done = await pruner.prune(now + 40 * DAY)
    assert (done.runs, done.rows, done.batches) == (
        1,
        {"action_executions": 1, "execution_events": 4},
        1,
    )
    left = await run_ids(kernel)
    assert ok["id"] not in left
    assert {bad["id"], bad_waiting["id"], bad_requeued["id"], pending["executionId"]} <= left
    after = await counts(kernel)
    assert after["action_executions"] == before["action_executions"] - 1
    assert after["execution_events"] == before["execution_events"] - 4

    # past the failed runs' 90 days: both go but the one whose dead letter is waiting
    done = await pruner.prune(now + 100 * DAY)
    assert done.runs == 2
    assert await run_ids(kernel) == {bad_waiting["id"], pending["executionId"]}
    assert (await counts(kernel))["dead_letters"] == 1  # the requeued one went with its run


async def test_max_runs_keeps_the_newest_per_workflow_in_batches(kernel, run_workflow):
    first = [await run_workflow(kernel, echo_workflow("many")) for _ in range(5)]
    other = await run_workflow(kernel, echo_workflow("few"))
    pruner = Pruner(kernel.db, RetentionPolicy(days=0, failed_days=0, max_runs=2), batch_size=2)
    pauses = 0

    async def pause(took: float) -> None:
        nonlocal pauses
        assert took > 0
        pauses += 1

    report = await pruner.prune(datetime.now(UTC), pause=pause)
    assert (report.runs, report.batches) == (3, 2)
    assert pauses == 1  # between the two batches, not after the last
    assert await run_ids(kernel) == {first[3]["id"], first[4]["id"], other["id"]}


async def test_no_rule_no_deletion(kernel, run_workflow):
    await run_workflow(kernel, echo_workflow("ok"))
    pruner = Pruner(kernel.db, RetentionPolicy(days=0, failed_days=0, max_runs=0))
    report = await pruner.prune(datetime.now(UTC) + 10_000 * DAY)
    assert report.runs == 0 and len(await run_ids(kernel)) == 1


class Later:
    """The real time, 40 days on."""

    def now(self) -> datetime:
        return datetime.now(UTC) + 40 * DAY


async def test_the_background_loop_prunes_and_survives_a_failing_pass(kernel, run_workflow):
    ok = await run_workflow(kernel, echo_workflow("ok"))
    pruner = Pruner(kernel.db, RetentionPolicy(days=30), batch_size=10)
    loop = PruneLoop(pruner, Later(), interval=0.01)  # type: ignore[arg-type]
    real_prune = pruner.prune
    calls = 0

    async def flaky_prune(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        return await real_prune(*args, **kwargs)

    pruner.prune = flaky_prune  # type: ignore[method-assign]
    task = asyncio.create_task(loop.run())
    async with loop.cycle_done:
        await asyncio.wait_for(loop.cycle_done.wait_for(lambda: loop.cycles >= 2), 30)
    loop.stop()
    await asyncio.wait_for(task, 10)
    assert ok["id"] not in await run_ids(kernel)


async def test_serve_starts_the_pruner_unless_switched_off(kernel_factory):
    on = await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)
    task = on.start_pruner()
    assert task is not None and not task.done()
    off = await kernel_factory(
        plugins=[dataworkflows_echo], entrypoints=False, prune_interval_seconds=0
    )
    assert off.start_pruner() is None


def test_cli_ledger_stats_and_prune(cli, database_url):
    async def two_runs() -> None:
        kernel = Kernel(Settings(database_url=database_url), extra_plugins=[dataworkflows_echo])
        await kernel.start()
        try:
            await kernel.service.apply(echo_workflow("cli"))
            for _ in range(2):
                summary, _ = await kernel.service.execute("cli", trigger={})
                kernel.start_worker()
                await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
        finally:
            await kernel.close()

    asyncio.run(two_runs())
    result = cli("ledger", "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["tables"]["workflow_executions"]["rows"] == 2
    assert stats["tables"]["action_executions"]["rows"] == 2
    assert stats["runsByStatus"] == {"Succeeded": 2}
    size = stats["tables"]["execution_events"]["bytes"]
    assert size is None or size > 0
    result = cli("ledger", "stats")
    assert "workflow_executions" in result.output and "Succeeded 2" in result.output

    result = cli("ledger", "prune", "--dry-run", "--max-runs", "1", "--days", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("would delete 1 run(s), 1 attempt(s), 4 event(s)")
    result = cli("ledger", "prune", "--max-runs", "1", "--days", "0", "--json")
    assert json.loads(result.output)["runs"] == 1
    result = cli("ledger", "stats", "--json")
    assert json.loads(result.output)["runsByStatus"] == {"Succeeded": 1}
    result = cli("ledger", "prune", "--max-runs", "-1")
    assert result.exit_code == 2 and "-1" in result.output


async def test_a_workflow_s_own_retention_wins_and_follows_its_current_version(
    kernel, run_workflow
):
    forever = {**echo_workflow("forever"), "retention": {"days": 0, "failedDays": 0}}
    short = {**echo_workflow("short"), "retention": {"days": 1}}
    runs = {
        name: await run_workflow(kernel, definition)
        for name, definition in (
            ("default", echo_workflow("default")),
            ("forever", forever),
            ("short", short),
        )
    }
    pruner = Pruner(kernel.db, RetentionPolicy(days=30, failed_days=90))
    now = datetime.now(UTC)
    assert (await pruner.prune(now + 2 * DAY)).runs == 1
    assert runs["short"]["id"] not in await run_ids(kernel)
    assert (await pruner.prune(now + 1000 * DAY)).runs == 1  # the default one
    assert await run_ids(kernel) == {runs["forever"]["id"]}

    # a version without ``retention`` puts the workflow back on the engine's policy
    await kernel.service.apply({**echo_workflow("forever"), "description": "v2"})
    assert (await pruner.prune(now + 1000 * DAY)).runs == 1
    assert await run_ids(kernel) == set()


async def test_a_bad_retention_is_refused_at_publish(kernel):
    from dataworkflows.common.errors import Unprocessable

    with pytest.raises(Unprocessable) as caught:
        await kernel.service.apply(
            {**echo_workflow("bad"), "retention": {"days": -1, "maxRuns": 1.5, "weeks": 2}}
        )
    paths = sorted(p["path"] for p in caught.value.details["problems"])
    assert paths == ["$.retention.days", "$.retention.maxRuns", "$.retention.weeks"]
    async with kernel.db.connect() as conn:
        stored = await conn.execute(sa.select(sa.func.count()).select_from(workflows))
        assert stored.scalar_one() == 0
