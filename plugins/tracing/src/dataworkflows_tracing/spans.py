"""Spans of runs and attempts, built from run events (OpenTelemetry SDK).

Every span is made whole when it ends — its ids and start are taken when it starts, its
attributes set and checked once — instead of a live SDK span updated along the way.

* ``RunStarted`` / ``RunResumed`` open the run's span, ``run <workflowId>``: a child of
  the W3C trace context the run was queued with (the event's ``traceContext``), or a trace
  root. Its ids do not depend on the process: a root's trace id *is* the execution id
  (``uuid.hex``), and the span id is a hash of it. So a run resumed by another process
  after a crash opens a span with the same ids, starting when the run first started
  (``startedAt``); the span the dead process held was never exported, and the process
  that sees the run end exports it, once. A graceful hand-over (worker shut down) is
  the same: spans still open when a process exits are dropped, not exported. The
  provider's sampler decides once per run, when it starts; its attempts follow that
  decision (as the default ``ParentBased`` sampler would).
* A live ``StepStarted`` (``durable`` False, at once when an attempt begins) starts the
  attempt's span, ``step <nodeId>``, child of the run's span: its id and start time are
  taken then (``traceparent`` of the attempt's outgoing calls names it); it ends with the
  attempt (``StepSucceeded``, ``StepFailed``, ``StepRetrying``, ``StepCancelled``). An
  end without a start seen here (an attempt lost with its worker, a node cancelled before
  it began) gets a span of no length at the time of the end; an attempt still open when
  its run ends ends with the run.
* ``RunSucceeded`` / ``RunFailed`` / ``RunCancelled`` end the run's span. A run cancelled
  before it started has no span.

Ended spans go straight to the provider's processors' ``on_end`` when they are the SDK's
batch and simple processors (whose ``on_start`` does nothing); with any other processor
they are started and ended through the SDK's tracer, so that it sees ``on_start`` too.

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
from importlib import metadata
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
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
    """A run in flight: its span is made when it ends, from what its start said."""

    name: str
    context: SpanContext
    #: the remote parent (the trace context the run was queued with), None for a root
    parent: SpanContext | None
    attributes: dict[str, Any]
    start: int | None
    events: list[Event]
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
        self._scope = InstrumentationScope(scope, _version())
        self._tracer = provider.get_tracer(scope, self._scope.version)
        self._runs: dict[str, _OpenRun] = {}
        self._propagator = TraceContextTextMapPropagator()
        #: the provider's processors when :meth:`_direct` last looked, and its answer
        self._seen: object = None
        self._direct_to: Any = None

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
        remote = trace.get_current_span(
            self._propagator.extract(payload.get("traceContext") or {})
        ).get_span_context()
        parent = remote if remote.is_valid else None
        resumed = event.type is EventType.RUN_RESUMED
        attributes: dict[str, Any] = {
            "dataworkflows.execution.id": event.execution_id,
            "dataworkflows.workflow.id": event.workflow_id,
        }
        if payload.get("version") is not None:
            attributes["dataworkflows.workflow.version"] = payload["version"]
        if resumed:
            attributes["dataworkflows.run.recovery_count"] = payload.get("recoveryCount", 0)
        root_trace, span_id = run_ids(event.execution_id)
        trace_id = root_trace if parent is None else parent.trace_id
        name = f"run {event.workflow_id}"
        # the sampler decides once per run; its attempts follow (as ParentBased does)
        sampled = self.provider.sampler.should_sample(
            _as_parent(parent), trace_id, name, SpanKind.INTERNAL, attributes
        )
        context = SpanContext(
            trace_id,
            span_id,
            is_remote=False,
            trace_flags=TraceFlags(
                TraceFlags.SAMPLED if sampled.decision.is_sampled() else TraceFlags.DEFAULT
            ),
            trace_state=sampled.trace_state,
        )
        started = payload.get("startedAt") if resumed else None
        events = []
        if resumed:
            events.append(
                Event("resumed", {"owner": str(payload.get("owner"))}, _ns(event.created_at))
            )
        if len(self._runs) >= MAX_OPEN_RUNS:
            self._runs.pop(next(iter(self._runs)))
        self._runs[event.execution_id] = _OpenRun(
            name, context, parent, attributes, _ns(started or event.created_at), events
        )

    def _end_run(self, event: RunEvent) -> None:
        run = self._runs.pop(event.execution_id, None)
        if run is None:
            return
        end = _ns(event.created_at)
        for (node_id, attempt), step in run.steps.items():  # ends not seen here
            self._emit_step(run, event, node_id, attempt, step, end, None)
        payload = event.payload
        status = payload.get("status", str(event.type).removeprefix("Run"))
        error = payload.get("error")
        run.attributes.update(_outcome(status, error))
        self._emit(
            run.name,
            run.context,
            run.parent,
            run.attributes,
            run.start,
            end,
            status,
            error,
            run.events,
        )

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
        """The span of one attempt. ``step`` None: its start was not seen here, a span of
        no length; ``ended`` None: its end was not seen either (the run ended first)."""
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
        context = SpanContext(
            run.context.trace_id,
            span_id,
            is_remote=False,
            trace_flags=run.context.trace_flags,
            trace_state=run.context.trace_state,
        )
        start = end if step is None else step.start
        self._emit(f"step {node_id}", context, run.context, attributes, start, end, status, error)

    # -- spans ----------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start: int | None,
        end: int | None,
        status: str,
        error: Any,
        events: list[Event] | None = None,
    ) -> None:
        """Hand a finished span to the provider's processors.

        A span is made whole when it ends (its attributes set and checked once). When the
        provider's processors are the SDK's batch and simple ones, whose ``on_start`` does
        nothing, it goes to their ``on_end`` as a ``ReadableSpan`` at once (a few µs);
        otherwise it is started and ended through the SDK's tracer, so that every
        processor sees ``on_start`` too. Unsampled runs make no span."""
        if not context.trace_flags.sampled:
            return
        processor = self._direct()
        if processor is not None:
            processor.on_end(
                ReadableSpan(
                    name,
                    context,
                    parent,
                    self.provider.resource,
                    attributes,
                    events or (),
                    (),
                    SpanKind.INTERNAL,
                    None,
                    _status(status, error),
                    start,
                    end,
                    self._scope,
                )
            )
            return
        token = _FORCED.set((context.trace_id, context.span_id))
        try:
            span = self._tracer.start_span(
                name,
                context=trace.set_span_in_context(NonRecordingSpan(parent))
                if parent
                else Context(),
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                start_time=start,
            )
        finally:
            _FORCED.reset(token)
        for item in events or ():
            span.add_event(item.name, item.attributes, item.timestamp)
        span.set_status(_status(status, error))
        span.end(end_time=end)

    def _direct(self) -> Any:
        """The provider's processor when spans may go straight to ``on_end``, else None."""
        active = getattr(self.provider, "_active_span_processor", None)
        processors = getattr(active, "_span_processors", None)
        if processors is not self._seen:
            self._seen = processors
            direct = processors is not None and all(
                type(p) in (BatchSpanProcessor, SimpleSpanProcessor) for p in processors
            )
            self._direct_to = active if direct else None
        return self._direct_to


def _outcome(status: str, error: Any) -> dict[str, str]:
    attributes = {"dataworkflows.outcome": status}
    code = error.get("code") if isinstance(error, dict) else None
    if code:
        attributes["dataworkflows.error.code"] = str(code)
    return attributes


_UNSET = Status(StatusCode.UNSET)


def _status(status: str, error: Any) -> Status:
    if status not in _ERRORS:
        return _UNSET
    message = error.get("message") if isinstance(error, dict) else None
    return Status(StatusCode.ERROR, str(message or status)[:500])


def _as_parent(parent: SpanContext | None) -> Context | None:
    """The context a sampler gets for a run: its remote parent's, or None for a root."""
    return None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))


def _version() -> str | None:
    try:
        return metadata.version("dataworkflows-tracing")
    except metadata.PackageNotFoundError:
        return None
