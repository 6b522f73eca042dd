"""Time partitions of the PostgreSQL ledger (ledger/partition_layout.py, partitions.py,
``dataworkflows ledger partition``): converting and back with the data intact, request ids
unique across the old and the new layout, partitions created ahead, whole partitions
dropped when every run in them is past retention and never while one is in flight."""

from __future__ import annotations

import asyncio
import json
import shlex
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

import dataworkflows_echo
from dataworkflows.common.ids import uuid7
from dataworkflows.db import migrate
from dataworkflows.db.database import sync_url
from dataworkflows.db.models import (
    action_executions,
    execution_events,
    run_variables,
    workflow_executions,
)
from dataworkflows.db.schema import metadata
from dataworkflows.ledger import partition_layout, partitions
from dataworkflows.ledger.retention import Pruner, RetentionPolicy
from dataworkflows.service.pruning import PruneLoop
from dataworkflows.testing import postgres_only

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def echo_workflow(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": "hi"}}],
    }


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)


async def enable(kernel: Any, since: datetime) -> list[str]:
    """Partition by week from ``since`` on; the weeks skipped (runs already there)."""
    async with kernel.db.begin() as conn:
        await conn.run_sync(partition_layout.enable)
        now = datetime.now(UTC)
        _made, skipped = await conn.run_sync(
            partitions.create_partitions, since, now + 2 * WEEK, WEEK
        )
    return list(skipped)


async def partition_of(kernel: Any, run_id: Any) -> str:
    async with kernel.db.connect() as conn:
        found = await conn.execute(
            sa.text("SELECT tableoid::regclass::text FROM workflow_executions WHERE id = :id"),
            {"id": uuid.UUID(str(run_id))},
        )
        return str(found.scalar_one())


async def suffixes(kernel: Any) -> list[str]:
    async with kernel.db.connect() as conn:
        return [p.suffix for p in await conn.run_sync(partitions.list_partitions)]


async def old_run(kernel: Any, at: datetime, *, status: str = "Succeeded", version: int = 1) -> Any:
    """A run of workflow ``ok`` queued at ``at`` (its id from then), with an attempt, an
    event and a run variable, written as the engine would have."""
    run_id = uuid7(at)
    ended = at + timedelta(seconds=1) if status != "Running" else None
    async with kernel.db.begin() as conn:
        await conn.execute(
            workflow_executions.insert().values(
                id=run_id,
                workflow_id="ok",
                workflow_version=version,
                request_id=f"old-{run_id}",
                status=status,
                trigger={},
                tenant_id="default",
                created_at=at,
                started_at=at,
                ended_at=ended,
            )
        )
        await conn.execute(
            action_executions.insert().values(
                id=uuid.uuid4(),
                execution_id=run_id,
                node_id="a",
                action_type="core.echo",
                attempt=1,
                status="Succeeded" if ended else "Running",
                started_at=at,
                ended_at=ended,
            )
        )
        await conn.execute(
            execution_events.insert().values(
                execution_id=run_id, sequence=1, type="RunQueued", payload={}, created_at=at
            )
        )
        await conn.execute(
            run_variables.insert().values(
                execution_id=run_id,
                key="k",
                type="string",
                value="v",
                node_id="a",
                attempt=1,
                updated_at=at,
            )
        )
    return run_id


async def count(kernel: Any, table: Any, run_ids: list[Any]) -> int:
    async with kernel.db.connect() as conn:
        found = await conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.execution_id.in_(run_ids))
        )
        return int(found.scalar_one())


def _diff(url: str) -> list[Any]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


@postgres_only
async def test_enable_and_disable_keep_every_row_and_request_ids_stay_unique(
    kernel, run_workflow, database_url
):
    before = await run_workflow(kernel, echo_workflow("ok"), request_id="r-before")
    now = datetime.now(UTC)
    # this week already has a run (a UUIDv7 id) in the old table: its partition cannot be
    # made, the week's runs keep going to the default partition
    assert await enable(kernel, now) == [partitions.slot(now, WEEK).suffix]
    # the old run is in the default partition (the old table), readable as before
    assert await partition_of(kernel, before["id"]) == "workflow_executions_default"
    again = await kernel.service.get_execution(before["id"])
    assert again["status"] == "Succeeded" and len(again["actions"]) == 1

    after = await run_workflow(kernel, echo_workflow("ok"), request_id="r-after")
    assert await partition_of(kernel, after["id"]) == "workflow_executions_default"
    assert uuid.UUID(after["id"]).version == 7
    next_week = await old_run(kernel, now + WEEK)
    next_suffix = partitions.slot(now + WEEK, WEEK).suffix
    assert await partition_of(kernel, next_week) == f"workflow_executions{next_suffix}"
    # a request id taken before or after partitioning returns the run that holds it
    for request_id, holder in (("r-before", before), ("r-after", after)):
        summary, created = await kernel.service.execute("ok", trigger={}, request_id=request_id)
        assert summary["executionId"] == holder["id"] and not created
    async with kernel.db.connect() as conn:
        runs = (
            await conn.execute(sa.select(sa.func.count()).select_from(workflow_executions))
        ).scalar_one()
    assert runs == 3

    with pytest.raises(partition_layout.PartitioningError, match="already partitioned"):
        async with kernel.db.begin() as conn:
            await conn.run_sync(partition_layout.enable)

    async with kernel.db.begin() as conn:
        await conn.run_sync(partition_layout.disable)
        assert not await conn.run_sync(partition_layout.is_partitioned)
    assert await asyncio.to_thread(_diff, database_url) == []
    for run_id in (before["id"], after["id"], str(next_week)):
        read = await kernel.service.get_execution(run_id)
        assert read["status"] == "Succeeded" and len(read["actions"]) == 1
    # and the plain table's unique index is back in charge of request ids
    summary, created = await kernel.service.execute("ok", trigger={}, request_id="r-after")
    assert summary["executionId"] == after["id"] and not created
    third = await run_workflow(kernel, echo_workflow("ok"))
    assert third["status"] == "Succeeded"


@postgres_only
async def test_the_migration_downgrade_converts_a_partitioned_ledger_back(
    kernel, run_workflow, database_url
):
    run = await run_workflow(kernel, echo_workflow("ok"))
    await enable(kernel, datetime.now(UTC))
    await kernel.stop_worker()
    await asyncio.to_thread(migrate.downgrade, database_url, "0015_workflow_retention")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            assert not partition_layout.is_partitioned(conn)
            assert conn.execute(sa.text("SELECT id FROM workflow_executions")).scalar_one() == (
                uuid.UUID(run["id"])
            )
            assert sa.inspect(conn).has_table("execution_requests") is False
    finally:
        engine.dispose()
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await asyncio.to_thread(_diff, database_url) == []


@postgres_only
async def test_maintenance_creates_partitions_ahead_and_the_default_catches_the_rest(
    kernel,
):
    await kernel.service.apply(echo_workflow("ok"))  # no run yet: this week can be made
    now = datetime.now(UTC)
    async with kernel.db.begin() as conn:
        await conn.run_sync(partition_layout.enable)
        await conn.run_sync(partitions.create_partitions, now, now, WEEK)
    assert await suffixes(kernel) == [partitions.slot(now, WEEK).suffix]
    created = await partitions.maintain(kernel.db, now)
    assert created == [
        partitions.slot(now + k * WEEK, WEEK).suffix for k in range(1, partitions.AHEAD + 1)
    ]
    assert await partitions.maintain(kernel.db, now) == []  # nothing missing any more
    # a run far outside every partition is still written: into the default partition
    far = await old_run(kernel, now + 400 * DAY)
    assert await partition_of(kernel, far) == "workflow_executions_default"
    # and a range holding such a run is not created (PostgreSQL would refuse it)
    async with kernel.db.begin() as conn:
        made, skipped = await conn.run_sync(
            partitions.create_partitions, now + 400 * DAY, now + 400 * DAY, WEEK
        )
    assert (made, skipped) == ([], [partitions.slot(now + 400 * DAY, WEEK).suffix])


@postgres_only
async def test_the_pruner_drops_a_whole_partition_only_when_every_run_in_it_goes(
    kernel, run_workflow
):
    recent = await run_workflow(kernel, echo_workflow("ok"))
    await kernel.stop_worker()  # its claims would only make the drop wait and retry
    now = datetime.now(UTC)
    await enable(kernel, now - 10 * WEEK)
    old_at = partitions.slot(now - 8 * WEEK, WEEK).start + DAY
    other_at = partitions.slot(now - 6 * WEEK, WEEK).start + DAY
    doomed = [await old_run(kernel, old_at + k * timedelta(minutes=1)) for k in range(5)]
    # the other range: four finished runs and one in flight (queued long ago, still running)
    others = [await old_run(kernel, other_at + k * timedelta(minutes=1)) for k in range(4)]
    in_flight = await old_run(kernel, other_at + timedelta(hours=1), status="Running")
    old_suffix = partitions.slot(old_at, WEEK).suffix
    other_suffix = partitions.slot(other_at, WEEK).suffix
    assert {old_suffix, other_suffix} <= set(await suffixes(kernel))

    pruner = Pruner(kernel.db, RetentionPolicy(days=30, failed_days=90), batch_size=3)
    dry = await pruner.prune(now, dry_run=True)
    assert dry.runs == 9 and dry.partitions == [] and old_suffix in await suffixes(kernel)

    report = await pruner.prune(now)
    assert report.partitions == [old_suffix]  # never the one with a run in flight
    assert report.runs == 9
    assert report.rows == {"action_executions": 9, "execution_events": 9}
    assert report.batches == 2  # the other range's four finished runs, 3 + 1
    names = await suffixes(kernel)
    assert old_suffix not in names and other_suffix in names
    for table in (action_executions, execution_events, run_variables):
        assert await count(kernel, table, [*doomed, *others]) == 0
    # the run in flight and the recent run are whole
    assert await partition_of(kernel, in_flight) == f"workflow_executions{other_suffix}"
    assert await count(kernel, action_executions, [in_flight]) == 1
    assert await count(kernel, run_variables, [in_flight]) == 1
    assert (await kernel.service.get_execution(recent["id"]))["status"] == "Succeeded"
    async with kernel.db.connect() as conn:
        requests = await conn.execute(
            sa.text("SELECT count(*) FROM execution_requests WHERE execution_id = ANY(:ids)"),
            {"ids": doomed},
        )
        assert requests.scalar_one() == 0
        left = await conn.execute(
            sa.text("SELECT count(*) FROM execution_requests WHERE execution_id = ANY(:ids)"),
            {"ids": others},
        )
        assert left.scalar_one() == 0  # the batched deletes take them too
    # a pruned run's request id is free again (as with the plain table's unique index)
    summary, created = await kernel.service.execute("ok", trigger={}, request_id=f"old-{others[0]}")
    assert created and summary["executionId"] != str(others[0])

    # once it has finished and aged out, its partition goes whole at the next prune
    async with kernel.db.begin() as conn:
        await conn.execute(
            workflow_executions.update()
            .where(workflow_executions.c.id == in_flight)
            .values(status="Succeeded", ended_at=other_at + timedelta(hours=2))
        )
    report = await pruner.prune(now)
    assert (report.partitions, report.runs) == ([other_suffix], 1)


@postgres_only
async def test_a_partition_is_not_dropped_while_a_writer_holds_it(kernel, run_workflow):
    await run_workflow(kernel, echo_workflow("ok"))
    await kernel.stop_worker()
    now = datetime.now(UTC)
    await enable(kernel, now - 10 * WEEK)
    old_at = partitions.slot(now - 8 * WEEK, WEEK).start + DAY
    run_id = await old_run(kernel, old_at)
    suffix = partitions.slot(old_at, WEEK).suffix
    pruner = Pruner(kernel.db, RetentionPolicy(days=30), batch_size=10)
    # another transaction updates the run's row: the drop gives up within its lock timeout
    async with kernel.db.begin() as holder:
        await holder.execute(
            workflow_executions.update()
            .where(workflow_executions.c.id == run_id)
            .values(error=None)
        )
        report = await asyncio.wait_for(pruner.prune(now, max_batches=0), timeout=30)
        assert report.partitions == [] and report.runs == 0
    assert suffix in await suffixes(kernel)
    report = await pruner.prune(now)
    assert report.partitions == [suffix]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_partition_on_sqlite_is_a_clear_error(cli):
    result = cli("ledger", "partition", "--enable")
    assert result.exit_code != 0
    assert "partitioning is for PostgreSQL" in result.output
    usage = cli("ledger", "partition", "--interval-days", "3")
    assert usage.exit_code == 2 and "--interval-days goes with --enable" in usage.output


@postgres_only
def test_cli_partition_enable_list_and_disable(cli):
    result = cli("ledger", "partition", "--enable", "--interval-days", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["partitioned"] and report["intervalDays"] == 1
    assert len(report["partitions"]) == partitions.AHEAD + 1
    again = cli("ledger", "partition", "--enable")
    assert again.exit_code == 1 and "already partitioned" in again.output
    off = cli("ledger", "partition", "--disable")
    assert off.exit_code == 0 and "not partitioned" in off.output


def walkthrough() -> list[tuple[list[str], str]]:
    """docs/partitioning.md, "Walk-through": each ``$ dataworkflows`` command with the
    first line it prints."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "partitioning.md").read_text()
    section = text.split("## Walk-through", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    steps = []
    for index, line in enumerate(block):
        if line.startswith("$ dataworkflows "):
            steps.append((shlex.split(line[len("$ dataworkflows ") :]), block[index + 1]))
    return steps


@postgres_only
def test_the_walkthrough_in_the_docs(cli):
    steps = walkthrough()
    assert len(steps) == 3
    for args, first_line in steps:
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert first_line in result.output.splitlines(), (args, result.output)


async def test_migration_0020_up_and_down_on_a_plain_ledger(database_url):
    def tables() -> set[str]:
        engine = create_engine(sync_url(database_url))
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    assert "execution_requests" in tables()
    await asyncio.to_thread(migrate.downgrade, database_url, "0015_workflow_retention")
    assert "execution_requests" not in tables()
    assert "workflow_executions" in tables()
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert "execution_requests" in tables()
    assert await asyncio.to_thread(_diff, database_url) == []


@postgres_only
async def test_the_background_pruner_keeps_partitions_ahead(kernel):
    await kernel.service.apply(echo_workflow("ok"))
    now = datetime.now(UTC)
    async with kernel.db.begin() as conn:
        await conn.run_sync(partition_layout.enable)
        await conn.run_sync(partitions.create_partitions, now, now, WEEK)
    loop = PruneLoop(Pruner(kernel.db, RetentionPolicy()), kernel.clock, interval=3600)
    await loop.cycle()
    assert loop.cycles == 1
    expected = [partitions.slot(now + k * WEEK, WEEK).suffix for k in range(partitions.AHEAD + 1)]
    assert await suffixes(kernel) == expected
