"""The ``spans`` fixture: tracing on, into an in-memory exporter, for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dataworkflows_tracing


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider that keeps every ended span in memory (exported at once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Trace into memory during the test; afterwards tracing is as the OTEL_* say (off)."""
    provider, exporter = in_memory_provider()
    dataworkflows_tracing.use_tracer_provider(provider)
    yield exporter
    dataworkflows_tracing.configure_from_env()
