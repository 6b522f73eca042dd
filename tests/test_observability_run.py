"""Issue #16's cross-check: one run, seen through every window the engine offers — the
metrics (``/metrics``, OpenMetrics exemplars), the trace spans (an in-memory exporter), the
structured log lines (JSON) and the stored step logs — names the same execution id in
each, and a canary secret the run handled appears in none; and a command posted with a
correlation id ends in exactly one completion event with that id on the live stream."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dataworkflows_tracing
from dataworkflows.common import logformat
from dataworkflows.db.models import execution_events
from dataworkflows.testing.sse import open_stream

SUPPORT = Path(__file__).parent / "support"
CANARY = "observed-Canary:4c1d/W+z"
TERMINAL = ("RunSucceeded", "RunFailed", "RunCancelled")

FLOW = {
    "id": "observed",
    "displayName": "observed",
    "nodes": [
        {"id": "prep", "actionType": "test.leaky", "parameters": {}},
        {
            "id": "call",
            "actionType": "test.leaky",
            "parameters": {"credential": "obs-canary"},
            "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
        },
    ],
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    dataworkflows_tracing.use_tracer_provider(provider)
    yield exporter
    dataworkflows_tracing.configure_from_env()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    logformat.configure("INFO", "json", stream)
    yield stream
    for handler in [h for h in root.handlers if getattr(h, "dw_engine_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(level)


async def test_one_run_is_the_same_in_metrics_spans_logs_and_step_logs(
    kernel_factory, api_factory, spans, json_logs, monkeypatch
):
    monkeypatch.syspath_prepend(str(SUPPORT))
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_OBS_CANARY", CANARY)
    kernel = await kernel_factory(plugin_modules="dw_log_actions")
    loaded = {info.distribution for info in kernel.plugins.plugins.values()}
    assert {"dataworkflows-metrics", "dataworkflows-tracing"} <= loaded
    api = await api_factory(kernel)
    await kernel.service.apply(FLOW)
    summary, _ = await kernel.service.execute("observed", trigger={}, correlation_id="obs-1")
    run_id = str(summary["executionId"])
    assert await kernel.ledger.wait_until_final(uuid.UUID(run_id)) == "Failed"

    # metrics: the run's end is counted, with the run as the exemplar
    resp = await api.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.status == 200
    metrics = await resp.text()
    finished = [
        line
        for line in metrics.splitlines()
        if line.startswith("dataworkflows_runs_finished_total") and 'workflow_id="observed"' in line
    ]
    assert len(finished) == 1 and f'# {{execution_id="{run_id}"}}' in finished[0], finished
    durations = [
        line
        for line in metrics.splitlines()
        if line.startswith("dataworkflows_step_duration_seconds_bucket")
        and f'execution_id="{run_id}"' in line
    ]
    assert durations  # the attempts' durations point at the run too

    # spans: the run and each attempt
    finished_spans = [s for s in spans.get_finished_spans()]
    ours = [s for s in finished_spans if s.attributes.get("dataworkflows.execution.id") == run_id]
    assert {s.name for s in ours} >= {"run observed", "step prep", "step call"}, [
        s.name for s in finished_spans
    ]
    assert len([s for s in ours if s.name == "step call"]) == 2  # both attempts

    # structured logs: the run's lines carry its id, the failure line among them
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    run_lines = [line for line in lines if line["executionId"] == run_id]
    assert any(line.get("errorCode") == "remote_refused" for line in run_lines)
    assert all(line["correlationId"] == "obs-1" for line in run_lines)

    # stored step logs, read back by the run's id
    resp = await api.get(f"/api/v1/executions/{run_id}/logs")
    step_logs = await resp.text()
    items = json.loads(step_logs)["items"]
    assert [(i["nodeId"], i["attempt"]) for i in items] == [("prep", 1), ("call", 1), ("call", 2)]

    # the canary: in none of them, though the action logged it and failed with it
    span_text = "".join(s.to_json() for s in finished_spans)
    run_json = await (await api.get(f"/api/v1/executions/{run_id}")).text()
    for name, text in {
        "metrics": metrics,
        "spans": span_text,
        "logs": json_logs.getvalue(),
        "step logs": step_logs,
        "run": run_json,
    }.items():
        assert CANARY not in text, name
    assert "[REDACTED]" in step_logs and "[REDACTED]" in span_text + json_logs.getvalue()


async def test_a_command_s_completion_event_carries_its_correlation_id_once(
    kernel_factory, api_factory
):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    correlation = f"cmd-{uuid.uuid4().hex[:8]}"
    resp = await api.post(
        "/api/v1/commands",
        json={
            "command": "action.run",
            "correlationId": correlation,
            "payload": {"actionType": "core.echo", "parameters": {"message": "hi"}},
        },
    )
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    assert answer["correlationId"] == correlation
    response, reader = await open_stream(api, correlationId=correlation, after="0")
    try:
        frames = await reader.events_until("RunSucceeded")
    finally:
        response.close()
    assert [f.data["executionId"] for f in frames] == [answer["executionId"]] * len(frames)
    ends = [f for f in frames if f.event in TERMINAL]
    assert len(ends) == 1 and ends[0].data["correlationId"] == correlation
    assert ends[0].data["payload"]["correlationId"] == correlation
    # and exactly one such event in the ledger
    async with kernel.db.connect() as conn:
        rows = await conn.execute(
            execution_events.select().where(
                execution_events.c.execution_id == uuid.UUID(answer["executionId"]),
                execution_events.c.type.in_(TERMINAL),
            )
        )
        assert len(rows.all()) == 1
