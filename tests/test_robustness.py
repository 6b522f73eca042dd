"""No shared fate: a run's bad value, a dropped connection or its own bookkeeping harms no
other run (issue "Core robustness").

Every batched path is tested with a poisoned item beside healthy ones, on both backends.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.common.errors import Unprocessable
from dataworkflows.db.database import libpq_url
from dataworkflows.db.models import action_executions, workflow_executions
from dataworkflows.ledger.run_ledger import StepRecord, UnwritableRecord
from dataworkflows.testing import postgres_only, record_batch_sizes


class Poison(Action):
    """Waits until ``gate`` lets it go, then succeeds, or returns the bad value it is told to."""

    type = "test.poison"

    class Params(BaseModel):
        kind: str = "ok"

    plugin: PoisonPlugin

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        plugin = type(self).plugin
        plugin.calls[(ctx.execution_id, ctx.node_id)] += 1
        await plugin.arrived(ctx.node_id)
        if params.kind == "datetime":
            return ActionResult.failed(
                "refused", code="bad_thing", details={"when": datetime.now(UTC)}
            )
        if params.kind == "nul":
            return ActionResult.succeeded({"text": "a\x00b"})
        if params.kind == "log-poison":  # lines no database stores as they are
            ctx.log.info("unprintable: %s", Unprintable())
            ctx.log.info("nul: a\x00b, lone surrogate: \ud800")
        return ActionResult.succeeded({"ok": True, "node": ctx.node_id})


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class PoisonPlugin:
    """Registers :class:`Poison`; lets the first node of ``expected`` runs go together."""

    __name__ = "poison-plugin"

    def __init__(self, expected: int = 0) -> None:
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.expected = expected
        self.kernel: Any = None
        self.waiting = 0
        self.gate = asyncio.Event()
        self.events: list[Any] = []
        #: set on every committed event (lets a test wait for progress without polling)
        self.progress = asyncio.Event()
        action = type("BoundPoison", (Poison,), {"plugin": self})
        self.action = action

    async def arrived(self, node_id: str) -> None:
        if node_id != "a" or not self.expected:
            return
        self.waiting += 1
        if self.waiting >= self.expected:
            self.gate.set()
        await self.gate.wait()

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(self.action)

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)
        self.progress.set()

    def succeeded(self) -> int:
        return sum(1 for e in self.events if str(e.type) == "RunSucceeded")

    async def wait_until_succeeded(self, count: int) -> None:
        while self.succeeded() < count:
            self.progress.clear()
            await self.progress.wait()


TWO_STEPS = {
    "id": "two-steps",
    "displayName": "Two steps",
    "nodes": [
        {
            "id": "a",
            "actionType": "test.poison",
            "parameters": {"kind": "{{ trigger.kind }}"},
            "retry": {"maxAttempts": 1},
        },
        {"id": "b", "actionType": "test.poison", "parameters": {}},
    ],
}


async def _run_together(kernel: Any, kinds: list[str]) -> list[str]:
    """Start one run per kind at once; wait until all are final; return their ids."""
    await kernel.service.apply(TWO_STEPS)
    kernel.start_worker()
    summaries = await asyncio.gather(
        *(kernel.service.execute("two-steps", trigger={"kind": kind}) for kind in kinds)
    )
    ids = [s["executionId"] for s, _ in summaries]
    for run_id in ids:
        await kernel.ledger.wait_until_final(uuid.UUID(run_id), timeout=60)
    return ids


async def _twenty_healthy_runs_and(
    kernel_factory: Any, kind: str
) -> tuple[PoisonPlugin, list[int], dict[str, Any]]:
    """21 runs whose first steps end together, the 11th with the poisoned value ``kind``;
    checks the 20 healthy ones (Succeeded, each step once); returns the 11th."""
    plugin = PoisonPlugin(expected=21)
    kernel = await kernel_factory(plugins=[plugin], worker_concurrency=32)
    sizes = record_batch_sizes(kernel)
    plugin.kernel = kernel
    ids = await _run_together(kernel, ["ok"] * 10 + [kind] + ["ok"] * 10)
    runs = [await kernel.service.get_execution(i) for i in ids]
    bad = runs.pop(10)
    assert [r["status"] for r in runs] == ["Succeeded"] * 20
    for run in runs:  # each step exactly once: one call, one row
        assert [(a["nodeId"], a["status"]) for a in run["actions"]] == [
            ("a", "Succeeded"),
            ("b", "Succeeded"),
        ]
        assert plugin.calls[(run["id"], "a")] == plugin.calls[(run["id"], "b")] == 1
    return plugin, sizes, dict(bad)


async def test_an_unserialisable_result_fails_only_its_own_run(kernel_factory) -> None:
    _plugin, sizes, bad = await _twenty_healthy_runs_and(kernel_factory, "datetime")
    assert bad["status"] == "Failed"
    assert bad["error"]["code"] == "unserializable_result"
    assert bad["error"]["nodeId"] == "a"
    assert [(a["nodeId"], a["status"], a["error"]["code"]) for a in bad["actions"]] == [
        ("a", "Failed", "unserializable_result")
    ]
    assert max(sizes) > 1, "the runs' step writes never shared a batch: nothing was tested"


async def test_a_value_the_database_refuses_fails_only_its_own_run(kernel_factory, backend):
    """NUL in a JSON string: PostgreSQL's jsonb refuses it at INSERT time, after the value
    passed every check, so the shared batch fails and is split item by item. SQLite
    stores it."""
    plugin, sizes, bad = await _twenty_healthy_runs_and(kernel_factory, "nul")
    if backend == "sqlite":
        assert bad["status"] == "Succeeded"
        assert bad["actions"][0]["outputs"] == {"text": "a\x00b"}
    else:
        assert bad["status"] == "Failed"
        assert bad["error"]["code"] == "unserializable_result"
        assert "\\u0000" in bad["error"]["message"] or "0000" in bad["error"]["message"]
        # the refused attempt still has its row, without the value
        assert [(a["nodeId"], a["status"], a["outputs"]) for a in bad["actions"]] == [
            ("a", "Failed", None)
        ]
        assert plugin.calls[(bad["id"], "b")] == 0
        assert sizes.count(1) >= 1 and max(sizes) > 1  # split after a shared batch


async def test_a_poisoned_log_line_fails_nothing(kernel_factory):
    """Step log lines whose message cannot be formatted, or that hold NUL or a lone
    surrogate, are stored cleaned in the shared batch: every run, this one too, succeeds."""
    plugin, sizes, bad = await _twenty_healthy_runs_and(kernel_factory, "log-poison")
    assert bad["status"] == "Succeeded"
    assert max(sizes) > 1, "the runs' step writes never shared a batch: nothing was tested"
    logs = await plugin.kernel.service.execution_logs(bad["id"])
    assert [(line["nodeId"], line["level"], line["message"]) for line in logs["items"]] == [
        ("a", "INFO", "<the log message could not be formatted: RuntimeError>"),
        ("a", "INFO", "nul: a\ufffdb, lone surrogate: \ufffd"),
    ]


async def test_the_ledger_refuses_an_unstorable_step_before_it_joins_a_batch(kernel) -> None:
    await kernel.service.apply(TWO_STEPS | {"nodes": [{"id": "a", "actionType": "core.echo"}]})
    summary, _ = await kernel.service.execute("two-steps", trigger={})
    run = await kernel.ledger.claim("me")
    assert run is not None and run.id_str == summary["executionId"]
    sequence = run.next_sequence
    now = kernel.clock.now()
    bad = StepRecord("a", "core.echo", 1, "Succeeded", {}, {"at": now}, None, now, now)
    with pytest.raises(UnwritableRecord) as caught:
        await kernel.ledger.record_step(run, bad)
    assert caught.value.code == "unserializable_result"
    assert caught.value.path == "$.nodes.a.outputs"
    assert run.next_sequence == sequence  # nothing numbered, nothing written
    assert await kernel.ledger.list_actions(run.id) == []


async def test_an_unstorable_trigger_is_refused_alone(kernel_factory, backend) -> None:
    """Enqueue batches: a NaN (refused before the batch) and a NUL (refused by
    PostgreSQL inside it) next to healthy enqueues."""
    kernel = await kernel_factory(plugins=[PoisonPlugin()])
    await kernel.service.apply(TWO_STEPS)
    triggers: list[dict[str, Any]] = [{"kind": "ok", "n": i} for i in range(10)]
    triggers[3] = {"kind": "ok", "x": float("nan")}
    triggers[6] = {"kind": "ok", "x": "a\x00b"}
    results = await asyncio.gather(
        *(kernel.service.execute("two-steps", trigger=t) for t in triggers),
        return_exceptions=True,
    )
    nan = results[3]
    assert isinstance(nan, Unprocessable) and nan.code == "unwritable_value"
    assert nan.details == {"path": "$.trigger"}
    if backend == "postgresql":
        nul = results[6]
        assert isinstance(nul, Unprocessable) and nul.code == "unwritable_value"
    healthy = [r for i, r in enumerate(results) if i not in (3, 6)]
    assert all(isinstance(r, tuple) and r[1] for r in healthy), healthy
    async with kernel.db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(workflow_executions))).scalar()
    assert count == (9 if backend == "sqlite" else 8)


@postgres_only
async def test_500_runs_while_every_connection_is_terminated_10_times(kernel_factory) -> None:
    """pg_terminate_backend on every engine connection, ten times while 500 runs go: each
    run Succeeds, each step ran once, no run was recovered (each was claimed once)."""
    plugin = PoisonPlugin()
    kernel = await kernel_factory(
        plugins=[plugin], lease_seconds=10.0, heartbeat_interval=1.0, poll_interval=0.1
    )
    await kernel.service.apply(TWO_STEPS)
    kernel.start_worker()
    url = libpq_url(kernel.db.url)

    async def enqueue(i: int) -> str:
        summary, _ = await kernel.service.execute("two-steps", trigger={"kind": "ok", "i": i})
        return str(summary["executionId"])

    ids: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        for round_ in range(10):
            # 50 clients enqueue; when 20 of their runs are done, every connection of the
            # engine (pool, LISTEN) is terminated while the others are enqueued or running
            first = len(ids)
            clients = [asyncio.create_task(enqueue(first + i)) for i in range(50)]
            await asyncio.wait_for(plugin.wait_until_succeeded(first + 20), 60)
            cursor = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            row = await cursor.fetchone()
            assert row is not None and row[0] > 0, f"round {round_}: nothing to terminate"
            ids += await asyncio.gather(*clients)
    for run_id in ids:
        await kernel.ledger.wait_until_final(uuid.UUID(run_id), timeout=120)
    async with kernel.db.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    workflow_executions.c.status,
                    workflow_executions.c.recovery_count,
                    workflow_executions.c.fencing_token,
                    func.count(),
                ).group_by(
                    workflow_executions.c.status,
                    workflow_executions.c.recovery_count,
                    workflow_executions.c.fencing_token,
                )
            )
        ).all()
        per_step = (
            await conn.execute(
                select(action_executions.c.execution_id, action_executions.c.node_id, func.count())
                .group_by(action_executions.c.execution_id, action_executions.c.node_id)
                .having(func.count() != 1)
            )
        ).all()
    assert [tuple(r) for r in rows] == [("Succeeded", 0, 1, 500)]
    assert per_step == []
    assert len(plugin.calls) == 1000 and set(plugin.calls.values()) == {1}
    assert plugin.succeeded() == 500  # every committed end reached the observer once


async def test_renewal_proves_the_fencing_token(kernel, simple_echo) -> None:
    await kernel.service.apply(simple_echo)
    await kernel.service.execute("simple-echo", trigger={})
    first = await kernel.ledger.claim("me")
    assert first is not None
    async with kernel.db.begin() as conn:  # the lease expires; the same owner claims again
        await conn.execute(workflow_executions.update().values(lease_expires_at=kernel.clock.now()))
    second = await kernel.ledger.claim("me")
    assert second is not None and second.fencing_token == first.fencing_token + 1
    assert await kernel.ledger.renew("me", [first, second]) == [first]


async def test_no_task_is_left_behind_after_close(kernel_factory, simple_echo) -> None:
    plugin = PoisonPlugin()
    kernel = await kernel_factory(plugins=[plugin])
    before = asyncio.all_tasks()
    await kernel.service.apply(simple_echo)
    await kernel.service.apply(TWO_STEPS)
    kernel.start_worker()
    kernel.start_scheduler()
    ids = []
    for i in range(20):
        summary, _ = await kernel.service.execute(
            "two-steps" if i % 2 else "simple-echo", trigger={"kind": "ok"}
        )
        ids.append(summary["executionId"])
    pending, _ = await kernel.service.execute("simple-echo", trigger={})
    await kernel.ledger.request_cancel(uuid.UUID(pending["executionId"]))
    for run_id in ids:
        await kernel.ledger.wait_until_final(uuid.UUID(run_id), timeout=30)
    await kernel.close()
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), [t.get_name() for t in left]


async def test_the_group_commit_queue_is_bounded(kernel_factory, simple_echo) -> None:
    kernel = await kernel_factory(ledger_queue_limit=8)
    await kernel.service.apply(simple_echo)
    enqueues = kernel.ledger._enqueues
    high = 0
    write = enqueues._write

    async def watching(items: list[Any]) -> Any:
        nonlocal high
        high = max(high, enqueues.pending)
        return await write(items)

    enqueues._write = watching
    results = await asyncio.gather(
        *(kernel.service.execute("simple-echo", trigger={"i": i}) for i in range(200))
    )
    assert all(created for _, created in results)
    assert 1 < high <= 8
    assert enqueues.pending == 0
    async with kernel.db.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM workflow_executions"))
        ).scalar() == 200


@postgres_only
async def test_a_connection_killed_in_the_middle_of_a_step_write_costs_no_recovery(
    kernel_factory,
) -> None:
    """The server ends the connection while the step INSERT runs: the writer tries again on
    a fresh connection; the run neither waits for its lease nor spends a recovery."""
    plugin = PoisonPlugin()
    kernel = await kernel_factory(plugins=[plugin])
    kills: list[int] = []

    @sa_event.listens_for(kernel.db.engine.sync_engine, "before_cursor_execute")
    def kill_once(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO action_executions") and not kills:
            pid = conn.connection.dbapi_connection.info.backend_pid
            kills.append(pid)
            with psycopg.connect(libpq_url(kernel.db.url), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))

    ids = await _run_together(kernel, ["ok"])
    run = await kernel.service.get_execution(ids[0])
    assert kills, "no step write was interrupted: nothing was tested"
    assert run["status"] == "Succeeded"
    assert [(a["nodeId"], a["attempt"]) for a in run["actions"]] == [("a", 1), ("b", 1)]
    async with kernel.db.connect() as conn:
        row = (
            await conn.execute(
                select(workflow_executions.c.recovery_count, workflow_executions.c.fencing_token)
            )
        ).one()
    assert tuple(row) == (0, 1)


async def test_a_commit_whose_answer_was_lost_is_not_written_twice(kernel_factory) -> None:
    """The COMMIT went through but its answer was lost with the connection (simulated: the
    first write of the run raises a connection error after committing). The writer tries
    again, finds its rows and writes nothing twice; observers see every event once."""
    plugin = PoisonPlugin()
    kernel = await kernel_factory(plugins=[plugin])
    ledger = kernel.ledger
    write = ledger._write_batch
    lost: list[int] = []

    async def commit_then_lose_the_answer(batch: list[Any]) -> Any:
        results = await write(batch)
        if not lost:
            lost.append(len(batch))
            raise sa_exc.OperationalError(
                "COMMIT", {}, ConnectionResetError("connection lost"), connection_invalidated=True
            )
        return results

    ledger._step_writes._write = commit_then_lose_the_answer
    ids = await _run_together(kernel, ["ok"])
    run = await kernel.service.get_execution(ids[0])
    assert lost == [1]
    assert run["status"] == "Succeeded"
    assert [(a["nodeId"], a["attempt"]) for a in run["actions"]] == [("a", 1), ("b", 1)]
    stored = [(e["sequence"], e["type"]) for e in await ledger.list_events(uuid.UUID(ids[0]))]
    seen = [(e.sequence, str(e.type)) for e in plugin.events if e.durable]  # not live starts
    assert (
        seen
        == stored
        == [
            (1, "RunQueued"),
            (2, "RunStarted"),
            (3, "StepSucceeded"),
            (4, "StepSucceeded"),
            (5, "RunSucceeded"),
        ]
    )
