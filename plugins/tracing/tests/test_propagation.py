"""W3C trace context in and out (SQLite, and PostgreSQL when configured): a caller's
``traceparent`` continues in the run's spans (execute route, webhook intake), the calls of
``http.request``, Slack and monday carry the attempt's span, and with no ``OTEL_*``
variable nothing is traced and no header is sent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import pytest

import dataworkflows_echo
import dataworkflows_http
import dataworkflows_monday
import dataworkflows_slack
import dataworkflows_tracing
import dataworkflows_webhook
from dataworkflows.common import tracecontext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
ECHO = {
    "id": "echo",
    "displayName": "Echo",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "hi"}}],
}
PLUGINS = [dataworkflows_echo, dataworkflows_http, dataworkflows_slack, dataworkflows_monday]


async def make_kernel(kernel_factory: Any, **extra: str) -> Any:
    return await kernel_factory(
        plugins=[*PLUGINS, dataworkflows_webhook, dataworkflows_tracing],
        entrypoints=False,
        extra={"http_allow_networks": "127.0.0.1/32", **extra},
    )


def spans_of(exporter: Any, execution_id: str) -> dict[str, Any]:
    return {
        s.name: s
        for s in exporter.get_finished_spans()
        if s.attributes["dataworkflows.execution.id"] == execution_id
    }


async def test_the_execute_route_continues_the_callers_trace(
    kernel_factory: Any, api_factory: Any, spans: Any
) -> None:
    kernel = await make_kernel(kernel_factory)
    api = await api_factory(kernel, run_worker=False)  # queued Pending, claimed later
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=ECHO)).status == 201
    headers = {"traceparent": f"00-{TRACE}-{CALLER}-01", "tracestate": "vendor=1,other=2"}
    resp = await api.post("/api/v1/workflows/echo/execute", json={}, headers=headers)
    assert resp.status == 202, await resp.text()
    execution = (await resp.json())["executionId"]
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(execution), 30)

    named = spans_of(spans, execution)
    run, step = named["run echo"], named["step say"]
    assert run.context.trace_id == step.context.trace_id == int(TRACE, 16)
    assert run.parent.span_id == int(CALLER, 16) and run.parent.is_remote
    assert run.context.trace_state.to_header() == "vendor=1,other=2"
    assert step.parent.span_id == run.context.span_id
    events = await (await api.get(f"/api/v1/executions/{execution}/events")).json()
    started = next(e for e in events["items"] if e["type"] == "RunStarted")
    assert started["payload"]["traceContext"] == {
        "traceparent": f"00-{TRACE}-{CALLER}-01",
        "tracestate": "vendor=1,other=2",
    }
    assert started["payload"]["version"] == 1


@pytest.mark.parametrize(
    "traceparent",
    [
        "not-a-traceparent",
        f"00-{'0' * 32}-{CALLER}-01",  # all-zero trace id
        f"ff-{TRACE}-{CALLER}-01",  # version ff is invalid
        f"00-{TRACE.upper()}-{CALLER}-01",  # upper case
        f"00-{TRACE}-{CALLER}-01-extra",  # version 00 has exactly four fields
    ],
)
async def test_an_invalid_traceparent_is_ignored_and_the_run_is_a_root(
    kernel_factory: Any, api_factory: Any, spans: Any, traceparent: str
) -> None:
    kernel = await make_kernel(kernel_factory)
    api = await api_factory(kernel)
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=ECHO)).status == 201
    resp = await api.post(
        "/api/v1/workflows/echo/execute",
        json={},
        headers={"traceparent": traceparent, "tracestate": "vendor=1"},
    )
    assert resp.status == 202, await resp.text()  # never refused for its trace headers
    execution = (await resp.json())["executionId"]
    await kernel.ledger.wait_until_final(uuid.UUID(execution), 30)
    run = spans_of(spans, execution)["run echo"]
    assert run.parent is None and run.context.trace_id == uuid.UUID(execution).int
    events = await kernel.service.get_events(execution)
    assert "traceContext" not in events[1]["payload"]


def test_a_newer_version_is_read_as_version_00() -> None:
    newer = f"01-{TRACE}-{CALLER}-01-future-field"
    assert tracecontext.parse(newer, "a=1") == {
        "traceparent": f"00-{TRACE}-{CALLER}-01",
        "tracestate": "a=1",
    }
    assert tracecontext.parse(f"00-{TRACE}-{CALLER}-01", "x" * 513) == {
        "traceparent": f"00-{TRACE}-{CALLER}-01"
    }
    assert tracecontext.parse(None, "a=1") is None


async def test_a_webhook_delivery_continues_the_callers_trace(
    kernel_factory: Any, api_factory: Any, spans: Any
) -> None:
    kernel = await make_kernel(kernel_factory)
    api = await api_factory(kernel)  # the worker takes the run at once (no claim)
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=ECHO)).status == 201
    resp = await api.post("/api/v1/workflows/echo/triggers", json={"type": "webhook"})
    assert resp.status == 201, await resp.text()
    trigger = await resp.json()
    resp = await api.post(
        f"/hooks/{trigger['id']}", json={}, headers={"traceparent": f"00-{TRACE}-{CALLER}-00"}
    )
    assert resp.status == 202, await resp.text()
    execution = (await resp.json())["executionId"]
    await kernel.ledger.wait_until_final(uuid.UUID(execution), 30)
    # the caller did not sample its trace: the run's spans are not recorded either
    assert spans_of(spans, execution) == {}
    events = await kernel.service.get_events(execution)
    started = next(e for e in events if e["type"] == "RunStarted")
    assert started["payload"]["traceContext"] == {"traceparent": f"00-{TRACE}-{CALLER}-00"}


def call(node: str, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call-{node}",
        "displayName": "Calls out",
        "nodes": [{"id": node, "actionType": action, "parameters": parameters}],
    }


async def test_outgoing_calls_carry_the_attempts_span(
    kernel_factory: Any, run_workflow: Any, http_server: Any, spans: Any
) -> None:
    """``http.request``, Slack and monday send ``traceparent``: the run's trace, the
    attempt's span as the parent. A traceparent the workflow sets itself wins."""
    kernel = await make_kernel(
        kernel_factory,
        slack_base_url=http_server.url("/api/"),
        monday_api_url=http_server.url("/v2"),
    )
    await kernel.credentials.store.put("default", "slack", "xoxb-test-token")
    await kernel.credentials.store.put("default", "monday", "monday-test-token")
    http_server.reply("GET", "/ping", json={"pong": True}, repeat=True)
    http_server.reply(
        "POST",
        "/api/chat.postMessage",
        json={"ok": True, "channel": "C1", "ts": "1.2", "message": {"text": "hi"}},
    )
    http_server.reply("POST", "/v2", json={"data": {"boards": []}})
    definitions = [
        call("ping", "http.request", {"url": http_server.url("/ping")}),
        call("post", "slack.post-message", {"channel": "C1", "text": "hi"}),
        call("items", "monday.get-items", {"boardId": "123"}),
    ]
    paths = ["/ping", "/api/chat.postMessage", "/v2"]
    for definition, path in zip(definitions, paths, strict=True):
        run = await run_workflow(kernel, definition)
        (received,) = [r for r in http_server.requests if r.path == path]
        node = definition["nodes"][0]["id"]
        step = spans_of(spans, run["id"])[f"step {node}"]
        assert step.context.trace_id == uuid.UUID(run["id"]).int
        context = step.context  # sampled (and, W3C level 2, a random trace id): 03
        expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        assert received.headers["traceparent"] == expected
        assert context.trace_flags.sampled

    own = call("own", "http.request", {"url": http_server.url("/ping"), "headers": {}})
    own["nodes"][0]["parameters"]["headers"] = {"TraceParent": f"00-{TRACE}-{CALLER}-01"}
    await run_workflow(kernel, own)
    sent = [v for k, v in http_server.requests[-1].headers.items() if k.lower() == "traceparent"]
    assert sent == [f"00-{TRACE}-{CALLER}-01"]


async def test_off_when_no_otel_variable_is_set(
    kernel_factory: Any, run_workflow: Any, http_server: Any, spans: Any
) -> None:
    assert dataworkflows_tracing.configure_from_env({}) is False
    assert dataworkflows_tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is False
    kernel = await make_kernel(kernel_factory)
    http_server.reply("GET", "/ping", json={"pong": True})
    ping = call("ping", "http.request", {"url": http_server.url("/ping")})
    run = await run_workflow(kernel, ping)
    assert run["status"] == "Succeeded"
    assert "traceparent" not in {k.lower() for k in http_server.requests[0].headers}
    assert spans.get_finished_spans() == ()
    assert dataworkflows_tracing.propagation_headers(run["id"], "ping", 1) is None


def test_off_imports_no_opentelemetry() -> None:
    """With no OTEL_* variable the plugin handles events without loading the SDK."""
    script = """
import sys
from datetime import UTC, datetime
import dataworkflows_tracing
from dataworkflows.events import EventType, RunEvent
event = RunEvent("e", "w", 1, EventType.RUN_STARTED, datetime.now(UTC))
dataworkflows_tracing.on_run_event(event)
assert dataworkflows_tracing.propagation_headers("e", "n", 1) is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_otel_variables_turn_tracing_on() -> None:
    from dataworkflows_tracing.config import exporter_names, provider_from_env

    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "dataworkflows"
    provider.shutdown()
    assert provider_from_env({"OTEL_TRACES_EXPORTER": "no-such-exporter"}) is None


async def test_a_child_runs_span_is_below_its_parents_attempt(
    kernel_factory: Any, run_workflow: Any, spans: Any
) -> None:
    """A subworkflow's run continues the parent's trace, below the attempt that started it
    (waited on or not)."""
    import dataworkflows_subworkflow

    kernel = await kernel_factory(
        plugins=[dataworkflows_echo, dataworkflows_subworkflow, dataworkflows_tracing],
        entrypoints=False,
    )
    await kernel.service.apply(ECHO)
    parent = {
        "id": "parent",
        "displayName": "Parent",
        "nodes": [
            {"id": "wait", "actionType": "core.subworkflow", "parameters": {"workflow": "echo"}},
            {
                "id": "fire",
                "actionType": "core.subworkflow",
                "parameters": {"workflow": "echo", "waitForCompletion": False},
            },
        ],
    }
    run = await run_workflow(kernel, parent)
    assert run["status"] == "Succeeded"
    fired = run["actions"][1]["outputs"]["executionId"]
    assert await kernel.ledger.wait_until_final(uuid.UUID(fired), 30) == "Succeeded"
    mine = spans_of(spans, run["id"])
    for node, child_id in (("wait", run["actions"][0]["outputs"]["executionId"]), ("fire", fired)):
        step = mine[f"step {node}"]
        # the run's end is readable in the ledger a moment before observers hear of it
        deadline = asyncio.get_running_loop().time() + 10
        while "run echo" not in spans_of(spans, child_id):
            assert asyncio.get_running_loop().time() < deadline, f"no span of run {child_id}"
            await asyncio.sleep(0.01)
        child = spans_of(spans, child_id)["run echo"]
        assert child.context.trace_id == step.context.trace_id == uuid.UUID(run["id"]).int
        assert child.parent is not None and child.parent.span_id == step.context.span_id
