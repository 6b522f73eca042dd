"""Spans of runs and attempts (SQLite, and PostgreSQL when configured): the tree of a run
with a retry and a failure, a run resumed by another process, a poisoned span beside a
healthy run."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode
from sqlalchemy import update

import dataworkflows_echo
import dataworkflows_tracing
from dataworkflows.common import tracecontext
from dataworkflows.db.models import workflow_executions
from dataworkflows_tracing.spans import run_ids

from .conftest import in_memory_provider

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"

RETRY_THEN_FAIL = {
    "id": "retry-then-fail",
    "displayName": "A retry, then a failure",
    "nodes": [
        {
            "id": "flaky",
            "actionType": "core.echo",
            "parameters": {"message": "hi", "failAttempts": 1},
            "retry": {"maxAttempts": 2, "initialDelay": 0.01, "jitter": False},
        },
        {
            "id": "broken",
            "actionType": "core.echo",
            "parameters": {"failAlways": True, "failureKind": "permanent"},
        },
    ],
}


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    for group in named.values():
        group.sort(key=lambda s: s.attributes.get("dataworkflows.attempt", 0))
    return named


async def tracing_kernel(kernel_factory: Any, **settings: Any) -> Any:
    return await kernel_factory(
        plugins=[dataworkflows_echo, dataworkflows_tracing], entrypoints=False, **settings
    )


class Starts(SpanProcessor):
    """A processor that counts ``on_start`` calls (the SDK's own ones ignore them)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


@pytest.mark.parametrize("path", ["direct", "through the SDK's tracer"])
async def test_a_run_with_a_retry_and_a_failure_is_one_tree(
    kernel_factory: Any, run_workflow: Any, spans: Any, path: str
) -> None:
    """The same spans whether they go straight to the SDK's processors' ``on_end`` or,
    because another processor wants ``on_start``, through the SDK's tracer."""
    starts = Starts()
    if path != "direct":
        provider, spans = in_memory_provider()
        provider.add_span_processor(starts)
        dataworkflows_tracing.use_tracer_provider(provider)
    kernel = await tracing_kernel(kernel_factory)
    run = await run_workflow(kernel, RETRY_THEN_FAIL)
    assert run["status"] == "Failed"
    execution = uuid.UUID(run["id"])
    tracer = dataworkflows_tracing.current_tracer()
    assert tracer is not None
    assert (tracer._direct() is not None) is (path == "direct")
    assert len(starts.started) == (0 if path == "direct" else 4)

    named = by_name(list(spans.get_finished_spans()))
    assert sorted(named) == ["run retry-then-fail", "step broken", "step flaky"]
    (root,) = named["run retry-then-fail"]
    # a run started without a trace context is a root whose trace id is the execution id
    assert root.parent is None
    assert root.context.trace_id == execution.int
    assert root.context.span_id == run_ids(str(execution))[1]
    assert root.attributes == {
        "dataworkflows.execution.id": str(execution),
        "dataworkflows.workflow.id": "retry-then-fail",
        "dataworkflows.workflow.version": 1,
        "dataworkflows.outcome": "Failed",
        "dataworkflows.error.code": "simulated_failure",
    }
    assert root.status.status_code is StatusCode.ERROR

    first, second = named["step flaky"]
    (broken,) = named["step broken"]
    for step in (first, second, broken):
        assert step.parent is not None and step.parent.span_id == root.context.span_id
        assert step.context.trace_id == root.context.trace_id
        assert step.attributes["dataworkflows.execution.id"] == str(execution)
        assert step.attributes["dataworkflows.action.type"] == "core.echo"
        assert root.start_time <= step.start_time <= step.end_time <= root.end_time
    assert [
        (s.attributes["dataworkflows.node.id"], s.attributes["dataworkflows.attempt"])
        for s in (first, second, broken)
    ] == [("flaky", 1), ("flaky", 2), ("broken", 1)]
    assert first.attributes["dataworkflows.outcome"] == "RetriableFailure"
    assert first.attributes["dataworkflows.error.code"] == "simulated_failure"
    assert first.status.status_code is StatusCode.ERROR
    assert "simulated failure (attempt 1)" in str(first.status.description)
    assert second.attributes["dataworkflows.outcome"] == "Succeeded"
    assert "dataworkflows.error.code" not in second.attributes
    assert second.status.status_code is StatusCode.UNSET
    assert broken.attributes["dataworkflows.outcome"] == "Failed"
    assert broken.status.status_code is StatusCode.ERROR
    assert first.end_time <= second.start_time <= second.end_time <= broken.start_time


async def test_a_run_resumed_by_another_process_continues_its_span(
    kernel_factory: Any, spans: Any
) -> None:
    """The first process dies holding the run: its span was never exported. The process
    that resumes the run opens the span with the same ids, from the stored trace context
    and the run's first start, and exports it once, when the run ends."""
    kernel = await tracing_kernel(kernel_factory)
    await kernel.service.apply({**RETRY_THEN_FAIL, "nodes": RETRY_THEN_FAIL["nodes"][:1]})
    context = tracecontext.parse(f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "vendor=one")
    with tracecontext.bind(context):  # as the execute route does for its request
        summary, _ = await kernel.service.execute("retry-then-fail", trigger={})
    execution = summary["executionId"]

    claimed = await kernel.ledger.claim("process-a")  # RunStarted in "process A"
    assert claimed is not None and claimed.id_str == execution
    tracer_a = dataworkflows_tracing.current_tracer()
    assert tracer_a is not None
    traceparent_a = tracer_a.headers(execution, "flaky", 1)["traceparent"]  # type: ignore[index]

    # process A dies; process B has a tracer of its own
    provider_b, exported_b = in_memory_provider()
    dataworkflows_tracing.use_tracer_provider(provider_b)
    async with kernel.db.begin() as conn:
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id == uuid.UUID(execution))
            .values(lease_expires_at=kernel.clock.now())
        )
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(execution), 30)

    assert list(spans.get_finished_spans()) == []  # process A exported nothing
    named = by_name(list(exported_b.get_finished_spans()))
    (root,) = named["run retry-then-fail"]
    assert f"00-{PARENT_TRACE}-{root.context.span_id:016x}-01" == traceparent_a
    assert root.context.trace_id == int(PARENT_TRACE, 16)
    assert root.parent is not None and root.parent.span_id == int(PARENT_SPAN, 16)
    assert root.parent.is_remote
    assert root.context.trace_state.to_header() == "vendor=one"
    assert root.attributes["dataworkflows.run.recovery_count"] == 1
    assert root.attributes["dataworkflows.outcome"] == "Succeeded"
    assert [e.name for e in root.events] == ["resumed"]
    events = await kernel.service.get_events(execution)
    started = next(e for e in events if e["type"] == "RunStarted")
    assert started["payload"]["traceContext"] == context
    first_start = datetime.fromisoformat(started["createdAt"].replace("Z", "+00:00"))
    assert root.start_time == int(first_start.timestamp() * 1_000_000_000)
    # the attempt lost with process A (its start unknown here), then the one B ran
    lost, ran = named["step flaky"]
    assert lost.attributes["dataworkflows.error.code"] == "worker_lost"
    assert lost.attributes["dataworkflows.step.start_unknown"] is True
    assert lost.start_time == lost.end_time
    assert ran.attributes["dataworkflows.outcome"] == "Succeeded"
    assert {lost.parent.span_id, ran.parent.span_id} == {root.context.span_id}  # type: ignore[union-attr]


class Poison(SpanProcessor):
    """A span processor that fails on the spans of one run."""

    def __init__(self) -> None:
        self.execution: str | None = None

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.attributes.get("dataworkflows.execution.id") == self.execution:
            raise RuntimeError("poisoned span")


async def test_a_failed_span_beside_a_healthy_run(
    kernel_factory: Any, run_workflow: Any, spans: Any
) -> None:
    """A run whose spans cannot be made (a failing processor) runs as usual, and so does
    the run beside it, whose spans are complete; a failed run's spans say it failed."""
    provider, exporter = in_memory_provider()
    poison = Poison()
    provider.add_span_processor(poison)
    dataworkflows_tracing.use_tracer_provider(provider)
    kernel = await tracing_kernel(kernel_factory)
    healthy = {**RETRY_THEN_FAIL, "id": "healthy", "nodes": RETRY_THEN_FAIL["nodes"][:1]}
    await kernel.service.apply(healthy)
    await kernel.service.apply(RETRY_THEN_FAIL)
    poisoned, _ = await kernel.service.execute("retry-then-fail", trigger={})
    fine, _ = await kernel.service.execute("healthy", trigger={})
    poison.execution = poisoned["executionId"]
    kernel.start_worker()
    for run in (poisoned, fine):
        await kernel.ledger.wait_until_final(uuid.UUID(run["executionId"]), 30)
    statuses = [
        (await kernel.service.get_execution(run["executionId"]))["status"]
        for run in (poisoned, fine)
    ]
    assert statuses == ["Failed", "Succeeded"]
    traced = {
        str(s.attributes["dataworkflows.execution.id"]) for s in exporter.get_finished_spans()
    }
    assert traced == {fine["executionId"]}
    named = by_name(list(exporter.get_finished_spans()))
    assert sorted(named) == ["run healthy", "step flaky"]
    assert [s.attributes["dataworkflows.outcome"] for s in named["step flaky"]] == [
        "RetriableFailure",
        "Succeeded",
    ]
    assert named["run healthy"][0].status.status_code is StatusCode.UNSET


async def test_an_unsampled_run_makes_no_span(
    kernel_factory: Any, run_workflow: Any, spans: Any
) -> None:
    """``OTEL_TRACES_SAMPLER`` is honoured: the provider's sampler decides once per run and
    its attempts follow (here it drops everything)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    dataworkflows_tracing.use_tracer_provider(provider)
    kernel = await tracing_kernel(kernel_factory)
    run = await run_workflow(kernel, {**RETRY_THEN_FAIL, "nodes": RETRY_THEN_FAIL["nodes"][:1]})
    assert run["status"] == "Succeeded"
    assert exporter.get_finished_spans() == ()
