"""Spans of runs and attempts, built from run events (OpenTelemetry SDK).

* ``RunStarted`` / ``RunResumed`` open the run's span, ``run <workflowId>``: a child of
  the W3C trace context the run was queued with (the event's ``traceContext``), or a trace
  root. Its ids do not depend on the process: a root's trace id *is* the execution id
  (``uuid.hex``), and the span id is a hash of it. So a run resumed by another process
  after a crash opens a span with the same ids, starting when the run first started
  (``startedAt``); the span the dead process held was never exported, and the process
  that sees the run end exports it, once. A graceful hand-over (worker shut down) is
  the same: spans still open when a process exits are dropped, not exported.
* A live ``StepStarted`` (``durable`` False, at once when an attempt begins) opens the
  attempt's span, ``step <nodeId>``, child of the run's span; the attempt's end
  (``StepSucceeded``, ``StepFailed``, ``StepRetrying``, ``StepCancelled``) ends it. An
  end without a start seen here (an attempt lost with its worker, a node cancelled before
  it began) gets a span of no length at the time of the end.
* ``RunSucceeded`` / ``RunFailed`` / ``RunCancelled`` end the run's span. A run cancelled
  before it started has no span.

Attributes (``dataworkflows.*``): ``execution.id``, ``workflow.id``, ``workflow.version``
(run), ``node.id``, ``action.type``, ``attempt`` (steps), ``outcome`` (the final status)
and ``error.code``; failures also set the span status to ERROR with the error message
(already redacted by the ledger).
"""

from __future__ import annotations

import hashlib
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dataworkflows.events import TERMINAL_RUN_EVENTS, EventType, RunEvent

#: runs whose span is open in this process before the oldest is forgotten (a run this
#: process lost to another one never ends here)
MAX_OPEN_RUNS = 10_000
_STEP_ENDS = frozenset(
    {
        EventType.STEP_SUCCEEDED,
        EventType.STEP_FAILED,
        EventType.STEP_RETRYING,
        EventType.STEP_CANCELLED,
    }
)
_ERRORS = frozenset({"Failed", "RetriableFailure", "TimedOut"})
#: (trace id, span id) the next span gets instead of random ones (see RunIds)
_FORCED: ContextVar[tuple[int, int] | None] = ContextVar("dw_forced_ids", default=None)


class RunIds(IdGenerator):
    """The provider's id generator, except while a run's span is started: that span gets
    the ids :func:`run_ids` derives from the execution id."""

    def __init__(self, fallback: IdGenerator) -> None:
        self.fallback = fallback

    def generate_span_id(self) -> int:
        forced = _FORCED.get()
        return forced[1] if forced else self.fallback.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()
        return forced[0] if forced else self.fallback.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return self.fallback.is_trace_id_random()


def run_ids(execution_id: str) -> tuple[int, int]:
    """(trace id of a root run, span id of the run) for an execution id."""
    try:
        raw = uuid.UUID(execution_id).bytes
    except ValueError:
        raw = hashlib.blake2b(execution_id.encode(), digest_size=16).digest()
    span_id = int.from_bytes(hashlib.blake2b(raw, digest_size=8, person=b"dw-run").digest())
    return int.from_bytes(raw) or 1, span_id or 1


@dataclass
class _OpenRun:
    span: Span
    #: attempt spans by (node id, attempt)
    steps: dict[tuple[str, int], Span] = field(default_factory=dict)


def _ns(value: datetime | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(value.timestamp() * 1_000_000_000)


class RunTracer:
    """The open spans of this process's runs, fed with every run event."""

    def __init__(self, provider: TracerProvider) -> None:
        if not isinstance(provider.id_generator, RunIds):
            provider.id_generator = RunIds(provider.id_generator)
        from dataworkflows_tracing import __name__ as scope

        self.provider = provider
        self._tracer = provider.get_tracer(scope)
        self._runs: dict[str, _OpenRun] = {}
        self._propagator = TraceContextTextMapPropagator()

    # -- events ---------------------------------------------------------------------------

    def observe(self, event: RunEvent) -> None:
        """Open or end the spans ``event`` concerns."""
        kind = event.type
        if kind is EventType.STEP_STARTED:
            if not event.durable:
                self._start_step(event)
        elif kind in _STEP_ENDS:
            self._end_step(event)
        elif kind is EventType.RUN_STARTED or kind is EventType.RUN_RESUMED:
            self._start_run(event)
        elif kind in TERMINAL_RUN_EVENTS:
            self._end_run(event)

    def headers(self, execution_id: str, node_id: str, attempt: int) -> dict[str, str] | None:
        """W3C headers naming the attempt's span (the run's if the attempt has none)."""
        run = self._runs.get(execution_id)
        if run is None:
            return None
        span = run.steps.get((node_id, attempt), run.span)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    # -- runs -----------------------------------------------------------------------------

    def _start_run(self, event: RunEvent) -> None:
        if event.execution_id in self._runs:
            return
        payload = event.payload
        parent = self._propagator.extract(payload.get("traceContext") or {})
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = Context()  # a root (not the caller's current span, if any)
        resumed = event.type is EventType.RUN_RESUMED
        attributes: dict[str, Any] = {
            "dataworkflows.execution.id": event.execution_id,
            "dataworkflows.workflow.id": event.workflow_id,
        }
        if payload.get("version") is not None:
            attributes["dataworkflows.workflow.version"] = payload["version"]
        if resumed:
            attributes["dataworkflows.run.recovery_count"] = payload.get("recoveryCount", 0)
        started = payload.get("startedAt") if resumed else None
        token = _FORCED.set(run_ids(event.execution_id))
        try:
            span = self._tracer.start_span(
                f"run {event.workflow_id}",
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                start_time=_ns(started or event.created_at),
            )
        finally:
            _FORCED.reset(token)
        if resumed:
            span.add_event("resumed", {"owner": str(payload.get("owner"))}, _ns(event.created_at))
        if len(self._runs) >= MAX_OPEN_RUNS:
            self._runs.pop(next(iter(self._runs)))
        self._runs[event.execution_id] = _OpenRun(span)

    def _end_run(self, event: RunEvent) -> None:
        run = self._runs.pop(event.execution_id, None)
        if run is None:
            return
        end = _ns(event.created_at)
        for span in run.steps.values():  # attempts whose end was not seen here
            span.end(end_time=end)
        status = event.payload.get("status", str(event.type).removeprefix("Run"))
        self._outcome(run.span, status, event.payload.get("error"))
        run.span.end(end_time=end)

    # -- attempts -------------------------------------------------------------------------

    def _start_step(self, event: RunEvent) -> None:
        run = self._runs.get(event.execution_id)
        if run is None or event.node_id is None:
            return
        attempt = int(event.payload.get("attempt", 1))
        run.steps[(event.node_id, attempt)] = self._step_span(
            run, event, attempt, _ns(event.created_at)
        )

    def _end_step(self, event: RunEvent) -> None:
        run = self._runs.get(event.execution_id)
        if run is None or event.node_id is None:
            return
        attempt = int(event.payload.get("attempt", 1))
        end = _ns(event.created_at)
        span = run.steps.pop((event.node_id, attempt), None)
        if span is None:  # its start was not seen here: a span of no length
            span = self._step_span(run, event, attempt, end)
            span.set_attribute("dataworkflows.step.start_unknown", True)
        self._outcome(span, event.payload.get("status", ""), event.payload.get("error"))
        span.end(end_time=end)

    def _step_span(self, run: _OpenRun, event: RunEvent, attempt: int, start: int | None) -> Span:
        attributes: dict[str, Any] = {
            "dataworkflows.execution.id": event.execution_id,
            "dataworkflows.workflow.id": event.workflow_id,
            "dataworkflows.node.id": str(event.node_id),
            "dataworkflows.attempt": attempt,
        }
        action_type = event.payload.get("actionType")
        if action_type:
            attributes["dataworkflows.action.type"] = action_type
        return self._tracer.start_span(
            f"step {event.node_id}",
            context=trace.set_span_in_context(run.span),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )

    @staticmethod
    def _outcome(span: Span, status: str, error: Any) -> None:
        span.set_attribute("dataworkflows.outcome", status)
        code = error.get("code") if isinstance(error, dict) else None
        if code:
            span.set_attribute("dataworkflows.error.code", str(code))
        if status in _ERRORS:
            message = error.get("message") if isinstance(error, dict) else None
            span.set_status(Status(StatusCode.ERROR, str(message or status)[:500]))
