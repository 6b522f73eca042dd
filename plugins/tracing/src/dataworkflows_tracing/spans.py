"""Spans of runs and attempts, built from run events (OpenTelemetry SDK).

* ``RunStarted`` / ``RunResumed`` open the run's span, ``run <workflowId>``: a child of
  the W3C trace context the run was queued with (the event's ``traceContext``), or a trace
  root. Its ids do not depend on the process: a root's trace id *is* the execution id
  (``uuid.hex``), and the span id is a hash of it. So a run resumed by another process
  after a crash opens a span with the same ids, starting when the run first started
  (``startedAt``); the span the dead process held was never exported, and the process
  that sees the run end exports it, once. A graceful hand-over (worker shut down) is
  the same: spans still open when a process exits are dropped, not exported.
* A live ``StepStarted`` (``durable`` False, at once when an attempt begins) starts the
  attempt's span, ``step <nodeId>``, child of the run's span: its id and start time are
  taken then (``traceparent`` of the attempt's outgoing calls names it), and the SDK span
  is made, whole, when the attempt ends (``StepSucceeded``, ``StepFailed``,
  ``StepRetrying``, ``StepCancelled``): one span object and one check of its attributes,
  instead of a live span updated at its end. An end without a start seen here (an attempt
  lost with its worker, a node cancelled before it began) gets a span of no length at the
  time of the end; an attempt still open when its run ends ends with the run.
* ``RunSucceeded`` / ``RunFailed`` / ``RunCancelled`` end the run's span. A run cancelled
  before it started has no span.

Attributes (``dataworkflows.*``): ``execution.id`` (all), ``workflow.id``,
``workflow.version`` (the run's span), ``node.id``, ``action.type``, ``attempt`` (steps),
``outcome`` (the final status) and ``error.code``; failures also set the span status to
ERROR with the error message (already redacted by the ledger).
"""

from __future__ import annotations

import hashlib
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
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
class _Step:
    """An attempt in flight: its span is made when it ends, with this id and start."""

    span_id: int
    start: int | None
    action_type: str | None


@dataclass
class _OpenRun:
    span: Span
    context: SpanContext
    #: attempts in flight by (node id, attempt)
    steps: dict[tuple[str, int], _Step] = field(default_factory=dict)


def _ns(value: datetime | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # the ledger's times are UTC (SQLite gives them back naive)
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000_000)


class RunTracer:
    """The open spans of this process's runs, fed with every run event."""

    def __init__(self, provider: TracerProvider) -> None:
        if not isinstance(provider.id_generator, RunIds):
            provider.id_generator = RunIds(provider.id_generator)
        from dataworkflows_tracing import __name__ as scope

        self.provider = provider
        self._ids: RunIds = provider.id_generator  # type: ignore[assignment]
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
        context = run.context
        step = run.steps.get((node_id, attempt))
        span_id = context.span_id if step is None else step.span_id
        headers = {
            "traceparent": f"00-{context.trace_id:032x}-{span_id:016x}-{context.trace_flags:02x}"
        }
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers

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
        self._runs[event.execution_id] = _OpenRun(span, span.get_span_context())

    def _end_run(self, event: RunEvent) -> None:
        run = self._runs.pop(event.execution_id, None)
        if run is None:
            return
        end = _ns(event.created_at)
        for (node_id, attempt), step in run.steps.items():  # ends not seen here
            self._emit_step(run, event, node_id, attempt, step, end, None)
        payload = event.payload
        status = payload.get("status", str(event.type).removeprefix("Run"))
        run.span.set_attributes(_outcome(status, payload.get("error")))
        _set_error(run.span, status, payload.get("error"))
        run.span.end(end_time=end)

    # -- attempts -------------------------------------------------------------------------

    def _start_step(self, event: RunEvent) -> None:
        run = self._runs.get(event.execution_id)
        if run is None or event.node_id is None:
            return
        attempt = int(event.payload.get("attempt", 1))
        run.steps[(event.node_id, attempt)] = _Step(
            self._ids.fallback.generate_span_id(),
            _ns(event.created_at),
            event.payload.get("actionType"),
        )

    def _end_step(self, event: RunEvent) -> None:
        run = self._runs.get(event.execution_id)
        if run is None or event.node_id is None:
            return
        attempt = int(event.payload.get("attempt", 1))
        step = run.steps.pop((event.node_id, attempt), None)
        self._emit_step(run, event, event.node_id, attempt, step, _ns(event.created_at), event)

    def _emit_step(
        self,
        run: _OpenRun,
        event: RunEvent,
        node_id: str,
        attempt: int,
        step: _Step | None,
        end: int | None,
        ended: RunEvent | None,
    ) -> None:
        """Make and end the span of one attempt, all at once (cheaper than a live span:
        its attributes are set and checked once). ``step`` None: its start was not seen
        here, a span of no length; ``ended`` None: its end was not seen either (the run
        ended first)."""
        attributes: dict[str, Any] = {
            "dataworkflows.execution.id": event.execution_id,
            "dataworkflows.node.id": node_id,
            "dataworkflows.attempt": attempt,
        }
        if step is not None and step.action_type:
            attributes["dataworkflows.action.type"] = step.action_type
        if step is None:
            attributes["dataworkflows.step.start_unknown"] = True
        status, error = "", None
        if ended is not None:
            status, error = ended.payload.get("status", ""), ended.payload.get("error")
            attributes.update(_outcome(status, error))
        span_id = step.span_id if step is not None else self._ids.fallback.generate_span_id()
        token = _FORCED.set((run.context.trace_id, span_id))
        try:
            span = self._tracer.start_span(
                f"step {node_id}",
                context=trace.set_span_in_context(run.span),
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                start_time=end if step is None else step.start,
            )
        finally:
            _FORCED.reset(token)
        _set_error(span, status, error)
        span.end(end_time=end)


def _outcome(status: str, error: Any) -> dict[str, str]:
    attributes = {"dataworkflows.outcome": status}
    code = error.get("code") if isinstance(error, dict) else None
    if code:
        attributes["dataworkflows.error.code"] = str(code)
    return attributes


def _set_error(span: Span, status: str, error: Any) -> None:
    if status in _ERRORS:
        message = error.get("message") if isinstance(error, dict) else None
        span.set_status(Status(StatusCode.ERROR, str(message or status)[:500]))
