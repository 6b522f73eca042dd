"""W3C trace context (``traceparent`` / ``tracestate``) of the request being handled.

The kernel does no tracing itself; it keeps the trace context a caller sent so that a
tracing plugin, in whatever process runs the run, can continue the caller's trace. The
API binds the headers of every request (:func:`bind`, from a middleware, so plugin routes
such as the webhook intake are covered too); queuing a run stores what is bound in this
task with the run (``workflow_executions.trace_context``); tracing plugins receive it in
the ``traceContext`` payload of ``RunStarted`` / ``RunResumed``. Runs queued outside a
request (the scheduler) have none: a fresh trace root.

Headers that do not follow https://www.w3.org/TR/trace-context/ are ignored, as the
recommendation says (the request itself is not refused): ``tracestate`` is kept only with
a valid ``traceparent``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

#: ``version-traceid-parentid-flags``, lower-case hex; version ``ff`` is invalid
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
#: the longest ``tracestate`` kept (W3C: propagate at least 512 characters)
MAX_TRACESTATE = 512
_TRACESTATE = re.compile(r"[\x20-\x7e]*")

trace_context_var: ContextVar[dict[str, str] | None] = ContextVar("dw_trace_context", default=None)


def parse(traceparent: str | None, tracestate: str | None = None) -> dict[str, str] | None:
    """``{"traceparent": ..., "tracestate"?: ...}`` from the two header values, or None
    when ``traceparent`` is missing or invalid.

    A version above ``00`` is read as ``00`` (its first four fields; the recommendation
    says so for versions it does not know) and stored as ``00``. An all-zero trace id or
    parent id is invalid. ``tracestate`` is kept when it is printable ASCII of at most
    :data:`MAX_TRACESTATE` characters, else dropped.
    """
    if not traceparent:
        return None
    value = traceparent.strip()
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    rest = value[match.end() :]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    context = {"traceparent": f"00-{trace_id}-{parent_id}-{flags}"}
    state = (tracestate or "").strip()
    if state and len(state) <= MAX_TRACESTATE and _TRACESTATE.fullmatch(state):
        context["tracestate"] = state
    return context


def from_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """:func:`parse` of a request's ``traceparent`` and ``tracestate`` headers (several
    ``tracestate`` headers are one list, joined by commas)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        states = getall("tracestate", [])
        tracestate = ",".join(states) if states else None
    else:
        tracestate = headers.get("tracestate")
    return parse(headers.get("traceparent"), tracestate)


def current() -> dict[str, str] | None:
    """The trace context bound in this task (see :func:`bind`), or None."""
    return trace_context_var.get()


@contextmanager
def bind(context: dict[str, str] | None) -> Iterator[None]:
    """Bind ``context`` (None: no trace context) for the duration of the block."""
    token = trace_context_var.set(context)
    try:
        yield
    finally:
        trace_context_var.reset(token)
