"""``on_run_event`` receives every committed event, on every path, exactly once and in
sequence order per run: what a recording plugin saw equals the ``execution_events`` table.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, update

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.db.models import dead_letters, execution_events, workflow_executions


class Recorder:
    """Records every event; its ``test.block`` action waits until cancelled."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.blocked = asyncio.Event()
        recorder = self

        class Block(Action):
            type = "test.block"

            class Params(BaseModel):
                pass

            async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
                recorder.blocked.set()
                await asyncio.Event().wait()  # until the run is cancelled
                return ActionResult.succeeded({})  # pragma: no cover

        self.block = Block

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(self.block)

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)


ECHO = {
    "id": "echo",
    "displayName": "Echo twice",
    "nodes": [
        {"id": "one", "actionType": "core.echo", "parameters": {"message": "1"}},
        {"id": "two", "actionType": "core.echo", "parameters": {"message": "2"}},
    ],
}
BLOCK = {"id": "block", "displayName": "Blocks", "nodes": [{"id": "b", "actionType": "test.block"}]}


async def _expire(kernel: Any, *run_ids: str) -> None:
    """The leases of these runs' (dead) workers run out."""
    async with kernel.db.begin() as conn:
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id.in_([uuid.UUID(r) for r in run_ids]))
            .values(lease_expires_at=kernel.clock.now())
        )


async def test_observers_see_exactly_the_committed_events_on_every_path(kernel_factory) -> None:
    recorder = Recorder()
    kernel = await kernel_factory(plugins=[recorder], max_recoveries=1)
    await kernel.service.apply(ECHO)
    await kernel.service.apply(BLOCK)
    service, ledger = kernel.service, kernel.ledger

    async def execute(workflow: str = "echo") -> str:
        summary, _ = await service.execute(workflow, trigger={})
        return str(summary["executionId"])

    # no worker yet: runs stay Pending until claimed by hand
    pending = await execute()
    assert await ledger.request_cancel(uuid.UUID(pending)) == "Cancelled"

    dead = await execute()  # its workers die twice (over max_recoveries=1)
    assert (await ledger.claim("ghost-1")).id_str == dead  # type: ignore[union-attr]
    await _expire(kernel, dead)
    assert (await ledger.claim("ghost-2")).id_str == dead  # type: ignore[union-attr]
    recovered = await execute()  # its worker dies once
    assert (await ledger.claim("ghost-3")).id_str == recovered  # type: ignore[union-attr]
    await _expire(kernel, dead, recovered)

    kernel.start_worker()
    plain = await execute()
    triggered, _ = await kernel.plugin_api.start_execution(
        "echo", trigger={"from": "a trigger"}, request_id="delivery-1", trigger_id="doorbell"
    )
    running = await execute("block")
    await asyncio.wait_for(recorder.blocked.wait(), 30)
    assert await ledger.request_cancel(uuid.UUID(running)) == "Running"

    for run_id in (dead, recovered, plain, triggered, running):
        await ledger.wait_until_final(uuid.UUID(run_id), timeout=30)
    async with kernel.db.connect() as conn:
        letter = (await conn.execute(select(dead_letters.c.id))).scalar_one()
    requeued = (await service.requeue_dead_letter(str(letter)))["executionId"]
    await ledger.wait_until_final(uuid.UUID(requeued), timeout=30)

    statuses = {
        run_id: (await service.get_execution(run_id))["status"]
        for run_id in (pending, dead, recovered, plain, triggered, running, requeued)
    }
    assert statuses == {
        pending: "Cancelled",
        dead: "Failed",
        recovered: "Succeeded",
        plain: "Succeeded",
        triggered: "Succeeded",
        running: "Cancelled",
        requeued: "Succeeded",
    }

    async with kernel.db.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    execution_events.c.execution_id,
                    execution_events.c.sequence,
                    execution_events.c.type,
                ).order_by(execution_events.c.execution_id, execution_events.c.sequence)
            )
        ).all()
    stored: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for row in rows:
        stored[str(row.execution_id)].append((row.sequence, row.type))
    seen: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    live: dict[str, list[tuple[int, str, str | None]]] = collections.defaultdict(list)
    for event in recorder.events:
        if event.durable:
            seen[event.execution_id].append((event.sequence, str(event.type)))
        else:  # a step's start, published at once and not written (see events.RunEvent)
            live[event.execution_id].append((event.sequence, str(event.type), event.node_id))
    assert seen == stored  # every committed event, once, in sequence order per run
    # every attempt that ran published its start live, numbered after the last durable event
    assert live[triggered] == [(2, "StepStarted", "one"), (3, "StepStarted", "two")]
    assert all(t == "StepStarted" for events in live.values() for _, t, _ in events)

    types = {run_id: [t for _, t in events] for run_id, events in stored.items()}
    assert types[pending] == ["RunQueued", "RunCancelled"]
    # claimed by three dead workers; the third claim is over the limit: the attempt the
    # last one was running gets its row, then the dead letter
    assert types[dead] == [
        *("RunQueued", "RunStarted", "RunResumed", "RunResumed"),
        *("StepFailed", "RunFailed"),
    ]
    # the attempt lost with its worker is recorded (retrying), then the run goes on
    assert types[recovered] == [
        *("RunQueued", "RunStarted", "RunResumed"),
        *("StepRetrying", "StepSucceeded", "StepSucceeded", "RunSucceeded"),
    ]
    assert types[running] == ["RunQueued", "RunStarted", "StepCancelled", "RunCancelled"]
    assert types[requeued][0] == "RunQueued" and types[requeued][-1] == "RunSucceeded"
