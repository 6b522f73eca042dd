"""Subworkflows survive a worker killed with SIGKILL: real ``dataworkflows worker``
processes on one database (SQLite file or PostgreSQL). The test process queues and reads
through its own kernel, which runs no worker. The children's step calls a local aiohttp
server (``test.call``, ``tests/support/dw_test_actions.py``) that holds every call until
the test releases it, so the parent is parked while the worker dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from dataworkflows.db.models import action_executions, execution_events, workflow_executions

SUPPORT = Path(__file__).parent / "support"


class HeldCalls:
    """A local server that records ``test.call`` requests and answers once released."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        self.arrived.set()
        await self.release.wait()
        return web.json_response({"done": body["execution"]})

    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/call"))


@pytest_asyncio.fixture
async def held() -> AsyncIterator[HeldCalls]:
    calls = HeldCalls()
    app = web.Application()
    app.router.add_post("/call", calls.handle)
    calls.server = TestServer(app, host="127.0.0.1")
    await calls.server.start_server()
    yield calls
    calls.release.set()
    await calls.server.close()


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Any:
    """``start_worker()``: a ``dataworkflows worker`` process on the test's database."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DATAWORKFLOWS_DATABASE_URL": database_url,
            "DATAWORKFLOWS_PLUGIN_MODULES": "dw_test_actions",
            "DATAWORKFLOWS_LEASE_SECONDS": "2",
            "DATAWORKFLOWS_HEARTBEAT_INTERVAL": "0.5",
            "DATAWORKFLOWS_POLL_INTERVAL": "0.2",
            "DATAWORKFLOWS_SHUTDOWN_GRACE": "2",
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("DATAWORKFLOWS_LOAD_PLUGINS", None)
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataworkflows.cli.main", "worker", "--concurrency", "4"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest_asyncio.fixture
async def control(kernel_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test's own kernel: queues and reads, runs no worker."""
    monkeypatch.syspath_prepend(str(SUPPORT))
    return await kernel_factory(plugin_modules="dw_test_actions")


async def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Re-check an async predicate (a ledger read) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def rows(kernel: Any, statement: Any) -> list[Any]:
    async with kernel.db.connect() as conn:
        return list((await conn.execute(statement)).all())


async def test_kill_9_while_the_parent_waits_runs_each_child_once(control, start_worker, held):
    await control.service.apply(
        {
            "id": "kid",
            "displayName": "kid",
            "nodes": [{"id": "call", "actionType": "test.call", "parameters": {"url": held.url()}}],
        }
    )
    await control.service.apply(
        {
            "id": "parent",
            "displayName": "parent",
            "nodes": [
                {
                    "id": "fire",
                    "actionType": "core.subworkflow",
                    "parameters": {"workflow": "kid", "waitForCompletion": False},
                },
                {"id": "wait", "actionType": "core.subworkflow", "parameters": {"workflow": "kid"}},
                {
                    "id": "after",
                    "actionType": "core.echo",
                    "parameters": {"message": "{{ nodes.wait.outputs.nodes.call.done }}"},
                },
            ],
        }
    )
    first = start_worker()
    summary, _ = await control.service.execute("parent", trigger={})
    run_id = uuid.UUID(summary["executionId"])
    t = workflow_executions

    async def parked() -> bool:
        run = await control.ledger.get_execution(run_id)
        return run["status"] == "Waiting"

    await until(parked, "the parent to park")
    await asyncio.wait_for(held.arrived.wait(), 60)  # a child's step is in flight
    assert (await control.ledger.get_execution(run_id))["lease_owner"] is None

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = start_worker()

    async def both_children_retried() -> bool:
        # the dead worker's child steps are taken over by the new worker after their lease
        return len({c["execution"] for c in held.calls if c["pid"] == second.pid}) == 2

    await until(both_children_retried, "the new worker to resume both children")
    held.release.set()
    assert await control.ledger.wait_until_final(run_id, timeout=60) == "Succeeded"

    children = await rows(
        control,
        select(t.c.id, t.c.parent_node_id, t.c.request_id, t.c.status).where(
            t.c.parent_execution_id == run_id
        ),
    )
    assert sorted((c.parent_node_id, c.request_id) for c in children) == [
        ("fire", f"{run_id}:fire"),
        ("wait", f"{run_id}:wait:1"),
    ]
    for child in children:
        assert await control.ledger.wait_until_final(child.id, timeout=60) == "Succeeded"
    # every child's step ran on the dead worker, then once more (same idempotency key)
    assert sorted(c["execution"] for c in held.calls) == sorted([str(c.id) for c in children] * 2)
    run = await control.service.get_execution(str(run_id))
    assert [(a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]] == [
        ("fire", 1, "Succeeded"),
        ("wait", 1, "Succeeded"),
        ("after", 1, "Succeeded"),
    ]
    waited = next(c for c in children if c.parent_node_id == "wait")
    assert run["actions"][2]["outputs"] == {"echo": str(waited.id)}
    events = await rows(
        control,
        select(execution_events.c.type)
        .where(execution_events.c.execution_id == run_id)
        .order_by(execution_events.c.sequence),
    )
    types = [e.type for e in events]
    assert types.count("RunSucceeded") == 1 and types.count("StepWaiting") == 1
    assert "RunWaiting" in types and "RunResumed" in types
    attempts = await rows(
        control,
        select(action_executions.c.node_id).where(action_executions.c.execution_id == run_id),
    )
    assert len(attempts) == 3  # the Waiting row was replaced by its attempt's final row
    with contextlib.suppress(ProcessLookupError):
        os.kill(second.pid, signal.SIGTERM)


async def test_kill_9_before_the_parent_parks_keeps_its_wait(control, start_worker, held):
    """The worker dies after the child and the ``Waiting`` row are committed, while the
    parent still runs a branch beside the wait (so it has not parked): the next worker
    resumes the parent, retries the lost branch, keeps waiting on the same child."""
    call = {"actionType": "test.call", "parameters": {"url": held.url()}}
    await control.service.apply(
        {"id": "kid", "displayName": "kid", "nodes": [{"id": "call", **call}]}
    )
    await control.service.apply(
        {
            "id": "forked",
            "displayName": "forked",
            "startNode": "start",
            "nodes": [
                {
                    "id": "start",
                    "actionType": "core.echo",
                    "parameters": {"message": "go"},
                    "edges": [{"targetNode": "wait"}, {"targetNode": "side"}],
                },
                {"id": "wait", "actionType": "core.subworkflow", "parameters": {"workflow": "kid"}},
                {"id": "side", **call},
            ],
        }
    )
    first = start_worker()
    summary, _ = await control.service.execute("forked", trigger={})
    run_id = uuid.UUID(summary["executionId"])

    async def both_held() -> bool:
        return len({c["execution"] for c in held.calls}) == 2  # the child's and side's

    await until(both_held, "the child's step and the side branch to be in flight")
    run = await control.ledger.get_execution(run_id)
    assert run["status"] == "Running"  # not parked: its side branch runs
    waiting = await rows(
        control,
        select(action_executions.c.status).where(
            action_executions.c.execution_id == run_id, action_executions.c.node_id == "wait"
        ),
    )
    assert [w.status for w in waiting] == ["Waiting"]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = start_worker()

    async def resumed_both() -> bool:
        return len({c["execution"] for c in held.calls if c["pid"] == second.pid}) == 2

    await until(resumed_both, "the new worker to resume the parent's branch and the child")
    held.release.set()
    assert await control.ledger.wait_until_final(run_id, timeout=60) == "Succeeded"
    t = workflow_executions
    children = await rows(control, select(t.c.request_id).where(t.c.parent_execution_id == run_id))
    assert [c.request_id for c in children] == [f"{run_id}:wait:1"]
    run = await control.service.get_execution(str(run_id))
    assert sorted((a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]) == [
        ("side", 1, "RetriableFailure"),
        ("side", 2, "Succeeded"),
        ("start", 1, "Succeeded"),
        ("wait", 1, "Succeeded"),
    ]
    side_lost = next(a for a in run["actions"] if a["nodeId"] == "side" and a["attempt"] == 1)
    assert side_lost["error"]["code"] == "worker_lost"
