"""Durable execution with real worker processes sharing one PostgreSQL database.

Workers are ``dataworkflows worker`` subprocesses; the test process enqueues, cancels and
inspects through its own kernel (which runs no worker). Actions that talk to the outside
call a recording aiohttp server on 127.0.0.1 (``tests/support/dw_test_actions.py``).
"""

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
from sqlalchemy import func, select, text, update

from dataworkflows.db.models import (
    action_executions,
    execution_events,
    workflow_executions,
)
from dataworkflows.testing import postgres_only

SUPPORT = Path(__file__).parent / "support"


class Workers:
    """Starts and stops ``dataworkflows worker`` processes against one database."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.database_url = database_url
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *,
        concurrency: int = 4,
        lease: float = 2.0,
        heartbeat: float = 0.5,
        max_recoveries: int = 3,
        grace: float = 30.0,
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DATAWORKFLOWS_DATABASE_URL": self.database_url,
            "DATAWORKFLOWS_PLUGIN_MODULES": "dw_test_actions",
            "DATAWORKFLOWS_LEASE_SECONDS": str(lease),
            "DATAWORKFLOWS_HEARTBEAT_INTERVAL": str(heartbeat),
            "DATAWORKFLOWS_MAX_RECOVERIES": str(max_recoveries),
            "DATAWORKFLOWS_SHUTDOWN_GRACE": str(grace),
            "DATAWORKFLOWS_POLL_INTERVAL": "0.5",
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        }
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataworkflows.cli.main",
                "worker",
                "--concurrency",
                str(concurrency),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Any:
    pool = Workers(database_url, tmp_path)
    yield pool
    pool.stop_all()


@pytest_asyncio.fixture
async def control(kernel_factory: Callable[..., Any]) -> Any:
    """The test's own kernel: enqueues and inspects, runs no worker."""
    return await kernel_factory(plugin_modules="dw_test_actions")


@pytest.fixture(autouse=True)
def _support_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SUPPORT))


class Recorder:
    """A local HTTP server that records calls and can hold them until released."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.arrived: dict[str, asyncio.Event] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self.server: TestServer | None = None

    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/call"))

    def hold_node(self, node: str) -> asyncio.Event:
        self.hold[node] = asyncio.Event()
        return self.hold[node]

    def arrival(self, node: str, count: int = 1) -> asyncio.Event:
        return self.arrived.setdefault(f"{node}#{count}", asyncio.Event())

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["key"] = request.headers.get("Idempotency-Key")
        self.calls.append(body)
        n = sum(1 for c in self.calls if c["node"] == body["node"])
        self.arrival(body["node"], n).set()
        gate = self.hold.get(body["node"])
        if gate is not None and n == 1:
            await gate.wait()
        return web.json_response({"ok": True, "node": body["node"], "attempt": body["attempt"]})

    def for_node(self, node: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["node"] == node]


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_post("/call", rec.handle)
    rec.server = TestServer(app, host="127.0.0.1")
    await rec.server.start_server()
    yield rec
    for gate in rec.hold.values():
        gate.set()
    await rec.server.close()


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition"
) -> Any:
    """Re-check an async predicate until it is truthy (polling the database, not sleeping
    in place of synchronisation: the condition is what the test waits for)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def scalar(kernel: Any, stmt: Any) -> Any:
    async with kernel.db.connect() as conn:
        return (await conn.execute(stmt)).scalar()


async def rows(kernel: Any, stmt: Any) -> list[Any]:
    async with kernel.db.connect() as conn:
        return list((await conn.execute(stmt)).all())


def three_calls(url: str, workflow_id: str = "three-calls") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Three calls",
        "nodes": [
            {"id": "a", "actionType": "test.call", "parameters": {"url": url}},
            {"id": "b", "actionType": "test.call", "parameters": {"url": url}},
            {"id": "c", "actionType": "test.call", "parameters": {"url": url}},
        ],
    }


def three_echoes() -> dict[str, Any]:
    return {
        "id": "three-echoes",
        "displayName": "Three echoes",
        "nodes": [
            {"id": n, "actionType": "core.echo", "parameters": {"message": n}} for n in "abc"
        ],
    }


async def status_of(kernel: Any, execution_id: str) -> str:
    return str(
        await scalar(
            kernel,
            select(workflow_executions.c.status).where(
                workflow_executions.c.id == uuid.UUID(execution_id)
            ),
        )
    )


async def owner_pid(kernel: Any, execution_id: str) -> int:
    """The pid of the worker that claimed the run last (from its RunStarted/RunResumed event)."""
    payloads = await rows(
        kernel,
        select(execution_events.c.payload)
        .where(
            execution_events.c.execution_id == uuid.UUID(execution_id),
            execution_events.c.type.in_(["RunStarted", "RunResumed"]),
        )
        .order_by(execution_events.c.sequence),
    )
    return int(payloads[-1][0]["owner"].split(":")[1])


@postgres_only
async def test_three_workers_share_300_runs_none_lost_none_twice(control, workers):
    await control.service.apply(three_echoes())
    procs = [workers.start(concurrency=4) for _ in range(3)]

    async def all_listening() -> bool:
        return all("started" in workers.output(p) for p in procs)

    await wait_for(all_listening, what="three workers to start")
    ids = []
    for i in range(300):
        summary, _ = await control.service.execute("three-echoes", trigger={"i": i})
        ids.append(summary["executionId"])

    async def all_done() -> bool:
        n = await scalar(
            control,
            select(func.count())
            .select_from(workflow_executions)
            .where(workflow_executions.c.status.in_(["Succeeded", "Failed", "Cancelled"])),
        )
        return n == 300

    await wait_for(all_done, timeout=120, what="300 runs to finish")
    statuses = await rows(
        control,
        select(workflow_executions.c.status, func.count()).group_by(workflow_executions.c.status),
    )
    assert dict(statuses) == {"Succeeded": 300}
    per_run = await rows(
        control,
        select(
            action_executions.c.execution_id, action_executions.c.node_id, func.count()
        ).group_by(action_executions.c.execution_id, action_executions.c.node_id),
    )
    assert len(per_run) == 900 and all(count == 1 for *_k, count in per_run)
    assert {str(r[0]) for r in per_run} == set(ids)
    owners = await rows(
        control, select(execution_events.c.payload).where(execution_events.c.type == "RunStarted")
    )
    # the runs were shared (which worker takes how many is up to the race for claims)
    assert len({p[0]["owner"] for p in owners}) >= 2
    terminal = await scalar(
        control,
        select(func.count())
        .select_from(execution_events)
        .where(execution_events.c.type == "RunSucceeded"),
    )
    assert terminal == 300
    assert all(p.poll() is None for p in procs)


@postgres_only
async def test_kill_9_during_step_2_resumes_on_another_worker(control, workers, recorder):
    await control.service.apply(three_calls(recorder.url()))
    recorder.hold_node("b")
    first = workers.start(concurrency=1)
    summary, _ = await control.service.execute("three-calls", trigger={})
    run_id = summary["executionId"]
    await asyncio.wait_for(recorder.arrival("b").wait(), 30)
    assert await owner_pid(control, run_id) == first.pid
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    workers.start(concurrency=1)

    assert await control.ledger.wait_until_final(uuid.UUID(run_id), timeout=60) == "Succeeded"
    assert [len(recorder.for_node(n)) for n in "abc"] == [1, 2, 1]
    keys = {c["key"] for c in recorder.for_node("b")}
    assert keys == {f"{run_id}:b"}, "both attempts of b carry the same idempotency key"
    run = await control.service.get_execution(run_id)
    assert [(a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]] == [
        ("a", 1, "Succeeded"),
        ("b", 1, "RetriableFailure"),
        ("b", 2, "Succeeded"),
        ("c", 1, "Succeeded"),
    ]
    assert run["actions"][1]["error"]["code"] == "worker_lost"
    events = await control.service.get_events(run_id)
    assert [e["type"] for e in events].count("RunSucceeded") == 1
    assert sum(e["type"] in ("RunSucceeded", "RunFailed", "RunCancelled") for e in events) == 1
    seqs = [e["sequence"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


@postgres_only
async def test_zombie_worker_writes_are_rejected(control, workers, recorder):
    await control.service.apply(three_calls(recorder.url()))
    held = recorder.hold_node("b")
    zombie = workers.start(concurrency=1, lease=1.5, heartbeat=0.3)
    summary, _ = await control.service.execute("three-calls", trigger={})
    run_id = summary["executionId"]
    await asyncio.wait_for(recorder.arrival("b").wait(), 30)
    os.kill(zombie.pid, signal.SIGSTOP)
    workers.start(concurrency=1, lease=1.5, heartbeat=0.3)
    # the second worker takes the run over after the lease expires and finishes it
    assert await control.ledger.wait_until_final(uuid.UUID(run_id), timeout=60) == "Succeeded"
    before = await rows(
        control,
        select(action_executions.c.node_id, action_executions.c.attempt, action_executions.c.status)
        .where(action_executions.c.execution_id == uuid.UUID(run_id))
        .order_by(action_executions.c.node_id, action_executions.c.attempt),
    )
    # wake the zombie and answer its stale call: whatever it tries to write is rejected
    os.kill(zombie.pid, signal.SIGCONT)
    held.set()

    async def zombie_gave_up() -> bool:
        out = workers.output(zombie)
        return "write rejected" in out or "lease lost" in out

    await wait_for(zombie_gave_up, timeout=30, what="the zombie to notice it lost the run")
    after = await rows(
        control,
        select(action_executions.c.node_id, action_executions.c.attempt, action_executions.c.status)
        .where(action_executions.c.execution_id == uuid.UUID(run_id))
        .order_by(action_executions.c.node_id, action_executions.c.attempt),
    )
    assert after == before
    assert [tuple(r) for r in after if r[0] == "b"] == [
        ("b", 1, "RetriableFailure"),
        ("b", 2, "Succeeded"),
    ]
    assert await status_of(control, run_id) == "Succeeded"
    terminal = await scalar(
        control,
        select(func.count())
        .select_from(execution_events)
        .where(
            execution_events.c.execution_id == uuid.UUID(run_id),
            execution_events.c.type.in_(["RunSucceeded", "RunFailed", "RunCancelled"]),
        ),
    )
    assert terminal == 1


@postgres_only
async def test_a_step_that_kills_its_worker_ends_in_dead_letters(control, workers, api_factory):
    await control.service.apply(
        {
            "id": "crashy",
            "displayName": "Crashes its worker",
            "nodes": [{"id": "boom", "actionType": "test.crash"}],
        }
    )
    summary, _ = await control.service.execute("crashy", trigger={"x": 1})
    run_id = summary["executionId"]
    crashes = 0
    while await status_of(control, run_id) != "Failed":
        proc = workers.start(concurrency=1, lease=0.5, heartbeat=0.2, max_recoveries=2)

        async def exited_or_dead_lettered(proc: Any = proc) -> bool:
            return proc.poll() is not None or await status_of(control, run_id) == "Failed"

        await wait_for(exited_or_dead_lettered, what="a crash or the dead letter")
        if proc.poll() is not None:
            assert proc.returncode == 3, workers.output(proc)
            crashes += 1
        assert crashes <= 5, "the run kept looping instead of being dead-lettered"
    assert await control.ledger.wait_until_final(uuid.UUID(run_id), timeout=30) == "Failed"
    assert crashes == 3  # first claim + 2 recoveries crash; the 3rd recovery is over the limit
    run = await control.service.get_execution(run_id)
    assert run["error"]["code"] == "recovery_limit"
    # every attempt that started has a row (max_recoveries + 1), the last one too; none of
    # them has a start time, since none was recorded before its worker died
    assert [(a["attempt"], a["status"], a["error"]["code"]) for a in run["actions"]] == [
        (1, "RetriableFailure", "worker_lost"),
        (2, "RetriableFailure", "worker_lost"),
        (3, "Failed", "worker_lost"),
    ]
    assert [a["startedAt"] for a in run["actions"]] == [None, None, None]
    assert all(a["endedAt"] for a in run["actions"])
    workers.stop_all()  # no worker left to take the requeued run: it stays Pending
    api = await api_factory(control, run_worker=False)
    letters = (await (await api.get("/api/v1/dead-letters")).json())["items"]
    assert [d["executionId"] for d in letters] == [run_id]
    resp = await api.post(f"/api/v1/dead-letters/{letters[0]['id']}/requeue")
    assert resp.status == 202
    new_id = (await resp.json())["executionId"]
    assert new_id != run_id and await status_of(control, new_id) == "Pending"
    again = await api.post(f"/api/v1/dead-letters/{letters[0]['id']}/requeue")
    assert again.status == 409
    assert (await api.post(f"/api/v1/dead-letters/{uuid.uuid4()}/requeue")).status == 404


async def test_recovery_never_changes_a_finished_run(kernel, run_workflow, simple_echo):
    run = await run_workflow(kernel, simple_echo)
    run_id = uuid.UUID(run["id"])
    async with kernel.db.begin() as conn:  # pretend an old lease is still lying around
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id == run_id)
            .values(lease_owner="ghost", lease_expires_at=kernel.clock.now())
        )
    assert await kernel.ledger.claim("recoverer") is None
    after = await kernel.service.get_execution(run["id"])
    assert after == run


async def test_a_claim_takes_no_more_runs_than_its_limit(kernel, simple_echo):
    """PostgreSQL once ran the claim's ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``
    again for later rows and took every claimable run; ``claim()`` then returned the
    first and left the others Running under an owner that did not know it held them."""
    await kernel.service.apply(simple_echo)
    ids = set()
    for i in range(5):
        summary, _ = await kernel.service.execute("simple-echo", trigger={"i": i})
        ids.add(uuid.UUID(summary["executionId"]))

    async def running() -> dict[uuid.UUID, str]:
        async with kernel.db.connect() as conn:
            rows = await conn.execute(
                select(workflow_executions.c.id, workflow_executions.c.lease_owner).where(
                    workflow_executions.c.status == "Running"
                )
            )
            return dict(rows.all())

    two = await kernel.ledger.claim_many("a", 2)
    assert len(two) == 2
    assert await running() == {run.id: "a" for run in two}
    one = await kernel.ledger.claim("b")
    assert one is not None and one.id not in {run.id for run in two}
    assert await running() == {run.id: "a" for run in two} | {one.id: "b"}
    rest = await kernel.ledger.claim_many("c", 10)
    assert {run.id for run in rest} == ids - {run.id for run in two} - {one.id}


async def test_a_stale_claim_cannot_write(kernel, simple_echo):
    from dataworkflows.ledger.run_ledger import RunFinish, StaleRunError

    await kernel.service.apply(simple_echo)
    summary, _ = await kernel.service.execute("simple-echo", trigger={})
    first = await kernel.ledger.claim("first")
    assert first is not None
    async with kernel.db.begin() as conn:  # first's lease expires
        await conn.execute(update(workflow_executions).values(lease_expires_at=kernel.clock.now()))
    second = await kernel.ledger.claim("second")
    assert second is not None and second.id == first.id
    assert second.fencing_token == first.fencing_token + 1 and second.recovered
    with pytest.raises(StaleRunError):
        await kernel.ledger.finish(first, RunFinish("Succeeded"))
    await kernel.ledger.finish(second, RunFinish("Failed", {"code": "x", "message": "y"}))
    with pytest.raises(StaleRunError):
        await kernel.ledger.finish(second, RunFinish("Succeeded"))
    assert await status_of(kernel, summary["executionId"]) == "Failed"


@postgres_only
async def test_cancel_pending_and_running_from_another_process(control, workers, api_factory):
    api = await api_factory(control, run_worker=False)
    await control.service.apply(
        {
            "id": "slow",
            "displayName": "Slow",
            "nodes": [
                {"id": "wait", "actionType": "core.echo", "parameters": {"delayMs": 120000}},
                {"id": "after", "actionType": "core.echo", "parameters": {"message": "never"}},
            ],
        }
    )
    pending = (await (await api.post("/api/v1/workflows/slow/execute", json={})).json())[
        "executionId"
    ]
    resp = await api.post(f"/api/v1/executions/{pending}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "Cancelled"
    assert (await api.post(f"/api/v1/executions/{pending}/cancel")).status == 409

    running = (await (await api.post("/api/v1/workflows/slow/execute", json={})).json())[
        "executionId"
    ]
    workers.start(concurrency=2)
    await wait_for(lambda: status_is(control, running, "Running"), what="the run to start")
    resp = await api.post(f"/api/v1/executions/{running}/cancel")
    assert resp.status == 202 and (await resp.json())["status"] == "Running"
    assert await control.ledger.wait_until_final(uuid.UUID(running), timeout=30) == "Cancelled"
    run = await control.service.get_execution(running)
    assert [(a["nodeId"], a["status"]) for a in run["actions"]] == [("wait", "Cancelled")]
    body = await (await api.post(f"/api/v1/executions/{running}/cancel")).json()
    assert body["code"] == "execution_finished" and body["details"] == {"status": "Cancelled"}
    # the cancelled Pending run never started
    events = [e["type"] for e in await control.service.get_events(pending)]
    assert events == ["RunQueued", "RunCancelled"]


async def status_is(kernel: Any, execution_id: str, status: str) -> bool:
    return await status_of(kernel, execution_id) == status


@postgres_only
async def test_sigterm_during_a_long_step_lets_the_run_finish(control, workers, recorder):
    await control.service.apply(three_calls(recorder.url()))
    held = recorder.hold_node("b")
    proc = workers.start(concurrency=1, grace=30)
    summary, _ = await control.service.execute("three-calls", trigger={})
    await asyncio.wait_for(recorder.arrival("b").wait(), 30)
    proc.send_signal(signal.SIGTERM)

    async def stopping() -> bool:
        return "stopping" in workers.output(proc)

    await wait_for(stopping, what="the worker to acknowledge SIGTERM")
    # the same signal again right away, as when it goes to a whole process group and a
    # wrapper (uv run, a shell) forwards it too: still the one stop request, not a kill
    proc.send_signal(signal.SIGTERM)
    held.set()
    assert (
        await control.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30) == "Succeeded"
    )
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert [len(recorder.for_node(n)) for n in "abc"] == [1, 1, 1]


async def test_same_request_id_100_times_concurrently_creates_one_run(api, kernel, simple_echo):
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    body = {"trigger": {"n": 1}, "requestId": "once-only"}
    responses = await asyncio.gather(
        *(api.post("/api/v1/workflows/simple-echo/execute", json=body) for _ in range(100))
    )
    assert {r.status for r in responses} == {202}
    ids = {(await r.json())["executionId"] for r in responses}
    assert len(ids) == 1
    assert await scalar(kernel, select(func.count()).select_from(workflow_executions)) == 1
    assert (
        await scalar(kernel, text("SELECT count(*) FROM execution_events WHERE type = 'RunQueued'"))
        == 1
    )


async def test_execute_answers_while_the_workers_are_saturated(kernel_factory, api_factory):
    """Enqueue never waits for a worker: with every worker slot busy, execute still answers
    202 Pending while the busy run goes on (the latency itself is measured in benchmarks W3)."""
    kernel = await kernel_factory(worker_concurrency=1)
    api = await api_factory(kernel)
    slow = {
        "id": "busy",
        "displayName": "Busy",
        "nodes": [{"id": "wait", "actionType": "core.echo", "parameters": {"delayMs": 60000}}],
    }
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=slow)).status == 201
    busy = (await (await api.post("/api/v1/workflows/busy/execute", json={})).json())["executionId"]
    await wait_for(lambda: status_is(kernel, busy, "Running"), what="the only slot to be taken")
    for _ in range(20):
        resp = await api.post("/api/v1/workflows/busy/execute", json={})
        assert resp.status == 202
        assert (await resp.json())["status"] == "Pending"
    assert await status_of(kernel, busy) == "Running"
    pending = await scalar(
        kernel,
        select(func.count())
        .select_from(workflow_executions)
        .where(workflow_executions.c.status == "Pending"),
    )
    assert pending == 20
