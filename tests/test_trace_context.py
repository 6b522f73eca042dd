"""The kernel's side of tracing, with no tracing plugin: the W3C trace context of the
request that queues a run is stored with it and handed to observers in ``RunStarted`` /
``RunResumed``; actions get propagation headers from the ``propagation_headers`` hook."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.common import tracecontext
from dataworkflows.common.clock import FakeClock
from dataworkflows.db.models import workflow_executions

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ECHO = {
    "id": "echo",
    "displayName": "Echo",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "hi"}}],
}


class Observer:
    __name__ = "observer"

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)


@pytest.mark.parametrize("claimed_at_enqueue", [True, False])
async def test_the_requests_trace_context_is_stored_and_reaches_observers(
    kernel_factory: Any, api_factory: Any, claimed_at_enqueue: bool
) -> None:
    observer = Observer()
    kernel = await kernel_factory(plugins=[observer])
    api = await api_factory(kernel, run_worker=claimed_at_enqueue)
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=ECHO)).status == 201
    headers = {"traceparent": TRACEPARENT, "tracestate": "a=1"}
    resp = await api.post("/api/v1/workflows/echo/execute", json={}, headers=headers)
    assert resp.status == 202
    execution = (await resp.json())["executionId"]
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(execution), 30)

    async with kernel.db.connect() as conn:
        stored = (
            await conn.execute(
                workflow_executions.select().where(workflow_executions.c.id == uuid.UUID(execution))
            )
        ).one()
    assert stored.trace_context == {"traceparent": TRACEPARENT, "tracestate": "a=1"}
    (started,) = [e for e in observer.events if str(e.type) == "RunStarted"]
    assert started.payload["traceContext"] == stored.trace_context
    assert started.payload["version"] == 1
    # a live StepStarted names the action type (its durable twin does not need to)
    live = [e for e in observer.events if not e.durable]
    assert [(e.node_id, e.payload["actionType"]) for e in live] == [("say", "core.echo")]


async def test_a_run_queued_outside_a_request_has_no_trace_context(kernel_factory: Any) -> None:
    observer = Observer()
    kernel = await kernel_factory(plugins=[observer])
    await kernel.service.apply(ECHO)
    summary, _ = await kernel.service.execute("echo", trigger={})
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
    (started,) = [e for e in observer.events if str(e.type) == "RunStarted"]
    assert "traceContext" not in started.payload


class Headers:
    """``propagation_headers`` implementations, and an action that reports what it got."""

    def __init__(self, name: str, answer: Any) -> None:
        self.__name__ = name
        self.answer = answer
        self.calls: list[tuple[str, str, int]] = []

    @hookimpl
    def propagation_headers(self, execution_id: str, node_id: str, attempt: int) -> Any:
        self.calls.append((execution_id, node_id, attempt))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Report(Action):
    type = "test.report-headers"

    class Params(BaseModel):
        pass

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        return ActionResult.succeeded({"headers": ctx.propagation_headers()})


class ReportPlugin:
    __name__ = "report"

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Report)


REPORT = {
    "id": "report",
    "displayName": "Report",
    "nodes": [{"id": "r", "actionType": "test.report-headers"}],
}


async def test_actions_get_the_merged_headers_of_every_plugin(
    kernel_factory: Any, run_workflow: Any
) -> None:
    first = Headers("first", {"traceparent": "from-first", "x-one": "1"})
    second = Headers("second", {"traceparent": "from-second", "x-two": "2"})
    kernel = await kernel_factory(plugins=[ReportPlugin(), first, second], entrypoints=False)
    run = await run_workflow(kernel, REPORT)
    assert run["actions"][0]["outputs"]["headers"] == {
        "traceparent": "from-first",  # the first plugin to name a header wins
        "x-one": "1",
        "x-two": "2",
    }
    assert first.calls == [(run["id"], "r", 1)]


async def test_a_failing_implementation_gives_no_header_and_the_step_goes_on(
    kernel_factory: Any, run_workflow: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Headers("broken", RuntimeError("boom"))
    kernel = await kernel_factory(plugins=[ReportPlugin(), broken], entrypoints=False)
    with caplog.at_level(logging.ERROR):
        run = await run_workflow(kernel, REPORT)
    assert run["status"] == "Succeeded"
    assert run["actions"][0]["outputs"]["headers"] == {}
    assert "a propagation_headers hook failed" in caplog.text


async def test_without_an_implementation_or_a_kernel_there_are_no_headers(
    kernel_factory: Any, run_workflow: Any
) -> None:
    kernel = await kernel_factory(plugins=[ReportPlugin()], entrypoints=False)
    run = await run_workflow(kernel, REPORT)
    assert run["actions"][0]["outputs"]["headers"] == {}
    ctx = ActionContext(
        execution_id="e",
        workflow_id="w",
        workflow_version=1,
        node_id="n",
        attempt=1,
        idempotency_key="e:n",
        trigger={},
        http=None,  # type: ignore[arg-type]
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        cancelled=asyncio.Event(),
    )
    assert ctx.propagation_headers() == {}


async def test_a_scheduled_run_is_a_trace_root_even_from_a_traced_caller(
    kernel_factory: Any,
) -> None:
    """The scheduler's loop was started while a request's trace context was bound (its
    task inherits it): the runs it fires have none all the same."""
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC))
    kernel = await kernel_factory(clock=clock, scheduler_max_sleep=3600)
    await kernel.service.apply(ECHO)
    await kernel.triggers.create("echo", {"type": "schedule", "config": {"cron": "*/5 * * * *"}})
    with tracecontext.bind(tracecontext.parse(TRACEPARENT)):
        kernel.start_scheduler()
    if not kernel.db.is_sqlite:
        await asyncio.wait_for(kernel.scheduler.listening.wait(), 30)
    due = await kernel.scheduler.wait_idle()
    sleeps = kernel.scheduler.sleeps
    clock.set(due)
    await kernel.scheduler.wait_for_sleep(sleeps)
    async with kernel.db.connect() as conn:
        rows = (await conn.execute(workflow_executions.select())).all()
    assert [(r.workflow_id, r.trace_context) for r in rows] == [("echo", None)]
