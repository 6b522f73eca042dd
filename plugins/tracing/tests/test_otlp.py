"""The lean OTLP encoder writes what the SDK's encoder writes, and the OTLP/HTTP exporter
the ``OTEL_*`` variables configure delivers a run's spans to a collector (a local
recording server speaking ``POST /v1/traces``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

import dataworkflows_echo
import dataworkflows_tracing
from dataworkflows_tracing.otlp import LeanOTLPSpanExporter, encode_spans


def spans() -> list[ReadableSpan]:
    resource = Resource.create({"service.name": "dw", "host.count": 2})
    scope = InstrumentationScope("dataworkflows_tracing", "0.1.0")
    other = InstrumentationScope("other")
    parent = SpanContext(5, 9, True, TraceFlags(1))
    made = [
        ReadableSpan(
            name="run wf",
            context=SpanContext(5, 6, False, TraceFlags(1), TraceState([("vendor", "1")])),
            parent=parent,
            resource=resource,
            attributes={
                "s": "välue",
                "b": True,
                "f": False,
                "i": -3,
                "big": 2**40,
                "x": 1.5,
                "ls": ("a", "b"),
                "li": [1, 2],
                "long": "y" * 300,
            },
            events=[Event("resumed", {"owner": "o"}, 123)],
            links=[Link(SpanContext(7, 8, True, TraceState([("k", "v")])), {"k": "v"})],
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, "boom"),
            start_time=10,
            end_time=2**62,
            instrumentation_scope=scope,
        ),
        ReadableSpan(
            name="step a",
            context=SpanContext(5, 11, False, TraceFlags(0)),
            parent=SpanContext(5, 6, False, TraceFlags(1)),
            resource=resource,
            attributes={"dataworkflows.attempt": 1},
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.OK),
            start_time=11,
            end_time=12,
            instrumentation_scope=scope,
        ),
        ReadableSpan(
            name="root",
            context=SpanContext(99, 100, False, TraceFlags(1)),
            resource=resource,
            start_time=1,
            end_time=1,
            instrumentation_scope=other,
        ),
    ]
    return made


def test_the_lean_encoder_writes_what_the_sdks_encoder_writes() -> None:
    lean = ExportTraceServiceRequest()
    lean.ParseFromString(encode_spans(spans()))
    assert lean == sdk_encode(spans())
    assert encode_spans([]) == b""


async def test_the_otlp_exporter_delivers_a_runs_spans(
    kernel_factory: Any, run_workflow: Any, http_server: Any, monkeypatch: Any, spans: Any
) -> None:
    http_server.reply(
        "POST", "/v1/traces", body=b"", headers={"Content-Type": "application/x-protobuf"}
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_server.url("/").rstrip("/"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k1")
    assert dataworkflows_tracing.configure_from_env() is True
    tracer = dataworkflows_tracing.current_tracer()
    assert tracer is not None
    exporters = [p.span_exporter for p in tracer.provider._active_span_processor._span_processors]
    assert [type(e) for e in exporters] == [LeanOTLPSpanExporter]
    kernel = await kernel_factory(
        plugins=[dataworkflows_echo, dataworkflows_tracing], entrypoints=False
    )
    run = await run_workflow(
        kernel,
        {
            "id": "exported",
            "displayName": "Exported",
            "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": 1}}],
        },
    )
    # the exporter's thread posts to the server on this event loop: do not block it
    assert await asyncio.to_thread(tracer.provider.force_flush)
    (request,) = [r for r in http_server.requests if r.path == "/v1/traces"]
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["x-api-key"] == "k1"
    received = ExportTraceServiceRequest()
    received.ParseFromString(request.body)
    (resource_spans,) = received.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "dataworkflows"
    names = sorted(s.name for scope in resource_spans.scope_spans for s in scope.spans)
    assert names == ["run exported", "step say"]
    trace_ids = {s.trace_id for scope in resource_spans.scope_spans for s in scope.spans}
    assert trace_ids == {uuid.UUID(run["id"]).bytes}


async def test_the_sdk_is_set_up_when_the_engine_starts_not_at_the_first_run(
    spans: Any, monkeypatch: Any, kernel_factory: Any
) -> None:
    # a fresh process: the OTEL_* variables not read yet
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setattr(dataworkflows_tracing._state, "configured", False)
    monkeypatch.setattr(dataworkflows_tracing._state, "tracer", None)
    kernel = await kernel_factory(
        plugins=[dataworkflows_echo, dataworkflows_tracing], entrypoints=False
    )
    assert not dataworkflows_tracing._state.configured  # starting the kernel is not enough
    kernel.engine_start()  # what `serve` and `worker` do before claiming a run
    assert dataworkflows_tracing._state.configured
    tracer = dataworkflows_tracing._state.tracer
    assert tracer is not None
    kernel.engine_start()  # once per kernel: the same tracer
    assert dataworkflows_tracing._state.tracer is tracer
