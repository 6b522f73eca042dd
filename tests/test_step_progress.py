"""Steps in flight are visible (engine/step_progress.py): a live ``StepStarted`` at once, a
durable ``Running`` row + ``StepStarted`` once a step outlasts the threshold — readable by
another process — replaced (same id, same attempt) by the attempt's own row; short steps
cost no extra write."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import select, update

import dataworkflows_echo
from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.db.models import action_executions, workflow_executions
from dataworkflows.ledger.run_ledger import StepRecord


class Hold(Action):
    """Waits until the test releases it (or the run is cancelled)."""

    type = "test.hold"
    started: ClassVar[asyncio.Event]
    release: ClassVar[asyncio.Event]

    class Params(BaseModel):
        pass

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        Hold.started.set()
        await Hold.release.wait()  # a cancelled run cancels this task
        return ActionResult.succeeded({"held": True})


class Watcher:
    """Registers ``test.hold`` and records every event; signals durable StepStarted."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.durable_started = asyncio.Event()
        Hold.started = asyncio.Event()
        Hold.release = asyncio.Event()

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Hold)

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)
        if event.durable and str(event.type) == "StepStarted":
            self.durable_started.set()


FLOW = {
    "id": "slow-then-quick",
    "displayName": "slow then quick",
    "nodes": [
        {"id": "slow", "actionType": "test.hold"},
        {"id": "quick", "actionType": "core.echo", "parameters": {"message": "hi"}},
    ],
}


async def _kernels(kernel_factory: Any, after: float) -> tuple[Any, Any, Watcher]:
    watcher = Watcher()
    worker = await kernel_factory(
        plugins=[watcher, dataworkflows_echo], entrypoints=False, step_started_after_seconds=after
    )
    # another process on the same database: it runs nothing, it only reads
    reader = await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)
    return worker, reader, watcher


async def test_a_long_step_shows_as_running_in_another_process(kernel_factory, api_factory):
    worker, reader, watcher = await _kernels(kernel_factory, after=0.05)
    api = await api_factory(reader, run_worker=False)
    await worker.service.apply(FLOW)
    summary, _ = await worker.service.execute("slow-then-quick", trigger={})
    run_id = summary["executionId"]
    worker.start_worker()

    await asyncio.wait_for(Hold.started.wait(), 30)
    live = [e for e in watcher.events if not e.durable]
    # published when the attempt began, before any write about it
    assert [(str(e.type), e.node_id, e.payload["attempt"]) for e in live] == [
        ("StepStarted", "slow", 1)
    ]
    assert live[0].sequence == 2  # after RunStarted; a live event takes no number

    await asyncio.wait_for(watcher.durable_started.wait(), 30)
    resp = await api.get(f"/api/v1/executions/{run_id}")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "Running"
    [running] = body["actions"]
    assert (running["nodeId"], running["attempt"], running["status"]) == ("slow", 1, "Running")
    assert running["startedAt"] is not None and running["endedAt"] is None
    assert datetime.fromisoformat(running["startedAt"]) == live[0].created_at
    events = await (await api.get(f"/api/v1/executions/{run_id}/events")).json()
    started = [e for e in events["items"] if e["type"] == "StepStarted"]
    assert [(e["nodeId"], e["payload"]["attempt"]) for e in started] == [("slow", 1)]
    assert started[0]["payload"]["startedAt"]

    Hold.release.set()
    assert await worker.ledger.wait_until_final(uuid.UUID(run_id), 30) == "Succeeded"
    body = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    assert [(a["nodeId"], a["attempt"], a["status"]) for a in body["actions"]] == [
        ("slow", 1, "Succeeded"),
        ("quick", 1, "Succeeded"),
    ]
    final = body["actions"][0]
    assert final["id"] == running["id"]  # the Running row was replaced, not duplicated
    assert final["startedAt"] == running["startedAt"] and final["endedAt"] is not None
    events = await (await api.get(f"/api/v1/executions/{run_id}/events")).json()
    assert [(e["type"], e["nodeId"]) for e in events["items"]] == [
        ("RunQueued", None),
        ("RunStarted", None),
        ("StepStarted", "slow"),
        ("StepSucceeded", "slow"),
        ("StepSucceeded", "quick"),  # short: its start was live only
        ("RunSucceeded", None),
    ]
    assert [e["sequence"] for e in events["items"]] == [1, 2, 3, 4, 5, 6]


async def _commits_of_one_run(
    kernel: Any, definition: dict[str, Any], count_commits: Any
) -> tuple[int, Any]:
    """Commits made while the conductor executes one claimed run (no background loops)."""
    await kernel.service.apply(definition)
    summary, _ = await kernel.service.execute(definition["id"], trigger={})
    claimed = await kernel.ledger.claim("test")
    assert claimed is not None and claimed.id_str == summary["executionId"]
    with count_commits(kernel) as commits:
        assert await kernel.conductor.execute(claimed) == "Succeeded"
    return commits.count, await kernel.service.get_execution(summary["executionId"])


ECHO_TWICE = {
    "id": "echo-twice",
    "displayName": "echo twice",
    "nodes": [
        {"id": "one", "actionType": "core.echo", "parameters": {"message": "1"}},
        {"id": "two", "actionType": "core.echo", "parameters": {"message": "2"}},
    ],
}


async def test_short_steps_cost_no_extra_write(kernel_factory, count_commits):
    default = await kernel_factory(
        plugins=[dataworkflows_echo], entrypoints=False, step_started_after_seconds=1.0
    )
    commits, run = await _commits_of_one_run(default, ECHO_TWICE, count_commits)
    assert commits == 2  # one per step; the run's end rides in the last one
    assert [a["status"] for a in run["actions"]] == ["Succeeded", "Succeeded"]

    # the counter sees the extra writes when there are some: with a threshold of 0 every
    # start is written (the action runs as a task, so the 0 s timer fires first)
    watcher = Watcher()
    eager = await kernel_factory(
        plugins=[watcher, dataworkflows_echo], entrypoints=False, step_started_after_seconds=0
    )
    commits, run = await _commits_of_one_run(eager, ECHO_TWICE, count_commits)
    durable = [e for e in watcher.events if e.durable and str(e.type) == "StepStarted"]
    assert [e.node_id for e in durable] == ["one", "two"]
    assert commits == 4  # each step's Running row, then its own row
    assert [(a["nodeId"], a["status"]) for a in run["actions"]] == [
        ("one", "Succeeded"),
        ("two", "Succeeded"),
    ]


async def test_a_cancelled_step_replaces_its_running_row(kernel_factory):
    worker, reader, watcher = await _kernels(kernel_factory, after=0.0)
    await worker.service.apply(FLOW)
    summary, _ = await worker.service.execute("slow-then-quick", trigger={})
    worker.start_worker()
    await asyncio.wait_for(watcher.durable_started.wait(), 30)
    running = await reader.service.get_execution(summary["executionId"])
    assert [a["status"] for a in running["actions"]] == ["Running"]
    await worker.service.cancel(summary["executionId"])
    run_id = uuid.UUID(summary["executionId"])
    assert await worker.ledger.wait_until_final(run_id, 30) == "Cancelled"
    run = await reader.service.get_execution(summary["executionId"])
    [row] = run["actions"]
    assert (row["id"], row["attempt"], row["status"]) == (
        running["actions"][0]["id"],
        1,
        "Cancelled",
    )
    assert row["startedAt"] == running["actions"][0]["startedAt"]


async def test_a_running_row_left_by_a_dead_worker_becomes_its_lost_attempt(kernel_factory):
    kernel = await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)
    await kernel.service.apply(ECHO_TWICE)
    summary, _ = await kernel.service.execute("echo-twice", trigger={})
    ghost = await kernel.ledger.claim("ghost")
    assert ghost is not None
    began = kernel.clock.now() - timedelta(seconds=5)
    await kernel.ledger.record_steps(
        ghost,
        [StepRecord("one", "core.echo", 1, "Running", {"message": "1"}, None, None, began, None)],
    )
    async with kernel.db.begin() as conn:  # the ghost's lease runs out
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id == ghost.id)
            .values(lease_expires_at=kernel.clock.now())
        )
    kernel.start_worker()
    assert await kernel.ledger.wait_until_final(ghost.id, 30) == "Succeeded"
    run = await kernel.service.get_execution(summary["executionId"])
    assert [(a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]] == [
        ("one", 1, "RetriableFailure"),
        ("one", 2, "Succeeded"),
        ("two", 1, "Succeeded"),
    ]
    lost = run["actions"][0]
    assert lost["error"]["code"] == "worker_lost"
    # its start is known (its Running row said when): not null, not invented
    assert lost["startedAt"] is not None
    async with kernel.db.connect() as conn:
        statuses = (
            (
                await conn.execute(
                    select(action_executions.c.status).where(
                        action_executions.c.execution_id == ghost.id
                    )
                )
            )
            .scalars()
            .all()
        )
    assert "Running" not in statuses and len(statuses) == 3


def test_cli_shows_a_running_step_with_its_start(cli, database_url):
    """``runs show`` lists the Running attempt; ``runs watch`` prints its StepStarted with
    the start time (the run is driven by hand through the ledger, as another process would)."""
    from dataworkflows.kernel import Kernel
    from dataworkflows.ledger.run_ledger import RunFinish
    from dataworkflows.settings import Settings

    began = datetime(2026, 12, 7, 9, 30, 0, tzinfo=UTC)

    async def with_kernel(work: Any) -> Any:
        kernel = Kernel(Settings(database_url=database_url), extra_plugins=[dataworkflows_echo])
        await kernel.start()
        try:
            return await work(kernel)
        finally:
            await kernel.close()

    async def start(kernel: Any) -> Any:
        await kernel.service.apply(ECHO_TWICE)
        await kernel.service.execute("echo-twice", trigger={})
        run = await kernel.ledger.claim("elsewhere")
        await kernel.ledger.record_steps(
            run, [StepRecord("one", "core.echo", 1, "Running", {}, None, None, began, None)]
        )
        return run

    run = asyncio.run(with_kernel(start))
    shown = cli("runs", "show", run.id_str)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"one\s+core\.echo\s+1\s+Running", shown.output), shown.output

    async def finish(kernel: Any) -> None:
        end = began + timedelta(seconds=3)
        done = [
            StepRecord("one", "core.echo", 1, "Succeeded", {}, {"echo": "1"}, None, began, end),
            StepRecord("two", "core.echo", 1, "Succeeded", {}, {"echo": "2"}, None, end, end),
        ]
        await kernel.ledger.record_steps(run, done, RunFinish("Succeeded"))

    asyncio.run(with_kernel(finish))
    watched = cli("runs", "watch", run.id_str)
    assert watched.exit_code == 0, watched.output
    assert "StepStarted one (attempt 1) running since 2026-12-07T09:30:00Z" in watched.output
    assert re.findall(r"\] (\w+)", watched.output) == [
        "RunQueued",
        "RunStarted",
        "StepStarted",
        "StepSucceeded",
        "StepSucceeded",
        "RunSucceeded",
    ]
    assert len(re.findall(r"^one\s", watched.output, re.M)) == 1  # one row for the attempt
