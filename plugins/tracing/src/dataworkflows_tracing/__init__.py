"""OpenTelemetry traces of runs and steps, built from the ``on_run_event`` hook.

One span per run (``run <workflowId>``) and one per attempt of a step (``step <nodeId>``),
children of the run's span; the run's span continues the W3C trace context of the request
that queued the run, and the ``propagation_headers`` hook hands each attempt's
``traceparent`` to the actions that call other services (docs/observability.md#traces).

Off unless the standard ``OTEL_*`` variables ask for an exporter (``OTEL_TRACES_EXPORTER``
other than ``none``, or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``): then nothing of the
OpenTelemetry SDK is imported and each hook call returns at once. Tests and embedders
install a tracer provider of their own with :func:`use_tracer_provider`.

Entry point only: the SDK is imported by :mod:`dataworkflows_tracing.spans` and
:mod:`dataworkflows_tracing.config` when tracing is on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dataworkflows import hookimpl

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from dataworkflows.events import RunEvent
    from dataworkflows_tracing.spans import RunTracer

log = logging.getLogger(__name__)

#: the plugin-API versions this plugin works with (``on_engine_start`` is 1.2)
dataworkflows_api = ">=1.2,<2"
#: it registers no action or trigger type (see `dataworkflows plugins`)
dataworkflows_actions: dict[str, str] = {}
dataworkflows_triggers: dict[str, str] = {}


class _State:
    """The process's tracer: None while tracing is off."""

    tracer: RunTracer | None = None
    #: False until the OTEL_* variables were read (at engine start, or the first hook call)
    configured: bool = False
    #: the provider :func:`configure_from_env` made (shut down when replaced)
    owned: TracerProvider | None = None


_state = _State()


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """(Re)configure tracing from the ``OTEL_*`` variables (default: ``os.environ``);
    returns whether tracing is on. Called by itself when the engine starts (or at the first
    hook call); spans still open are forgotten. See :mod:`dataworkflows_tracing.config`
    for the variables."""
    from dataworkflows_tracing.config import enabled, provider_from_env

    env = os.environ if environ is None else environ
    provider = provider_from_env(env) if enabled(env) else None
    use_tracer_provider(provider)
    _state.owned = provider
    return provider is not None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace runs with ``provider`` from now on (None: tracing off), whatever the ``OTEL_*``
    variables say, until :func:`configure_from_env` is called.

    For tests and for applications that build their own SDK set-up, e.g.::

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        dataworkflows_tracing.use_tracer_provider(provider)

    The provider's id generator is wrapped so that a run's span has the same id in every
    process (:class:`dataworkflows_tracing.spans.RunIds`). Spans still open under the
    previous provider are forgotten, never exported.
    """
    owned, _state.owned = _state.owned, None
    if owned is not None and owned is not provider:
        owned.shutdown()  # exports what it holds, stops its export thread
    if provider is None:
        _state.tracer = None
    else:
        from dataworkflows_tracing.spans import RunTracer

        _state.tracer = RunTracer(provider)
    _state.configured = True


def current_tracer() -> RunTracer | None:
    """The process's :class:`~dataworkflows_tracing.spans.RunTracer`, or None when off."""
    if not _state.configured:
        configure_from_env()
    return _state.tracer


@hookimpl
def on_engine_start() -> None:
    """Read the ``OTEL_*`` variables and, when tracing is on, import the SDK and start the
    exporter now, so that the first run does not pay for it (a few hundred ms)."""
    current_tracer()


@hookimpl
def on_run_event(event: RunEvent) -> None:
    """Open and end the spans of runs and attempts (nothing when tracing is off)."""
    tracer = _state.tracer if _state.configured else current_tracer()
    if tracer is None:
        return
    try:
        tracer.observe(event)
    except Exception:  # tracing must never disturb a run, nor the observers after it
        log.exception("tracing: run %s, event %s not traced", event.execution_id, event.type)


@hookimpl
def propagation_headers(execution_id: str, node_id: str, attempt: int) -> Any:
    """``traceparent`` (and ``tracestate``) naming the attempt's span, or None when off."""
    tracer = _state.tracer if _state.configured else current_tracer()
    if tracer is None:
        return None
    return tracer.headers(execution_id, node_id, attempt)
