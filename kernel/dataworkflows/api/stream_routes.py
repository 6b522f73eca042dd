"""``GET /api/v1/events/stream``: run events as Server-Sent Events, live (docs/api.md).

Every input is checked before the stream starts (bad input: the usual ``{code, message,
details}`` error and no stream); then :class:`~dataworkflows.service.event_stream.EventStream`
pumps events until the client goes or the server shuts down.
"""

from __future__ import annotations

import contextlib
import re
import uuid

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import tenant
from dataworkflows.api.models import ApiModel, omittable
from dataworkflows.api.route_spec import spec
from dataworkflows.common.errors import BadRequest, Unprocessable
from dataworkflows.engine.definitions import ID_PATTERN
from dataworkflows.ledger.event_feed import FeedCursor, FeedFilter
from dataworkflows.service.event_stream import OPENED, EventStream, start_cursor

stream_routes = web.RouteTableDef()

_CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,200}")
_CURSOR_PATTERN = r"^(0|\d{1,19}-\d{1,19})$"
LAST_EVENT_ID = "Last-Event-ID"


class StreamQuery(ApiModel):
    """Which events to stream (filters combine; always the caller's tenant only)."""

    execution_id: uuid.UUID = omittable(description="Only this run's events")
    workflow_id: str = omittable(pattern=ID_PATTERN, description="Only this workflow's runs")
    correlation_id: str = omittable(
        pattern=r"^[!-~]{1,200}$", description="Only runs started with this correlation id"
    )
    after: str = omittable(
        pattern=_CURSOR_PATTERN,
        description=(
            "Start after this event `id` (as `Last-Event-ID`, which wins when both are "
            "given); `0`: from the first event. Default: the whole history of an "
            "`executionId` filter's run, else only events committed from now on."
        ),
    )


def _invalid(parameter: str, message: str) -> Unprocessable:
    return Unprocessable(message, code="invalid_query", details={"parameter": parameter})


def _filter(request: web.Request) -> FeedFilter:
    query = request.query
    execution_id = None
    if "executionId" in query:
        try:
            execution_id = uuid.UUID(query["executionId"])
        except ValueError:
            raise _invalid("executionId", "executionId is not a UUID") from None
    workflow_id = query.get("workflowId")
    if workflow_id is not None and not args.WORKFLOW_ID.fullmatch(workflow_id):
        raise _invalid("workflowId", "workflowId is not a valid workflow id")
    correlation_id = query.get("correlationId")
    if correlation_id is not None and not _CORRELATION_ID.fullmatch(correlation_id):
        raise _invalid("correlationId", "correlationId must be 1-200 visible ASCII characters")
    return FeedFilter(tenant(request), execution_id, workflow_id, correlation_id)


def _resume(request: web.Request) -> str | None:
    """Where the client resumes: ``Last-Event-ID`` (400 if malformed), else ``after``."""
    header = request.headers.get(LAST_EVENT_ID)
    if header:
        if header.strip() != "0":
            try:
                FeedCursor.parse(header)
            except ValueError:
                raise BadRequest(
                    "header Last-Event-ID must be an event id of this stream",
                    code="invalid_header",
                    details={"header": LAST_EVENT_ID},
                ) from None
        return header.strip()
    after = request.query.get("after")
    if after is not None and not re.fullmatch(_CURSOR_PATTERN, after):
        raise _invalid("after", "after must be an event id of this stream, or 0")
    return after


@stream_routes.get("/api/v1/events/stream")
@spec(
    "streamEvents",
    role="viewer",
    tags=["executions"],
    query=StreamQuery,
    ok={200: ("Server-Sent Events, until the client disconnects", {"type": "string"})},
    errors=(400, 404, 422),
    media_type="text/event-stream",
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Run events as they are committed (Server-Sent Events), plus live step starts.

    Each frame: `id` (resume with `Last-Event-ID`: no gap, no duplicate), `event` (the
    type) and `data` (JSON: executionId, workflowId, sequence, type, nodeId, payload,
    createdAt, durable, correlationId). Live `StepStarted` frames (durable false, no id)
    come from a worker in the API's own process. `: ping` comments every
    `DATAWORKFLOWS_SSE_PING_SECONDS`. An `executionId` of no run of the tenant is 404.
    """
    kernel = request.app[kernel_key]
    where = _filter(request)
    resume = _resume(request)
    hub = kernel.events
    subscription = hub.subscribe(where)  # before the first read: no wake-up is missed
    try:
        cursor = await start_cursor(hub, where, resume)  # 404 for another tenant's run
        await hub.announce()  # other processes' writers NOTIFY from now on
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # proxies (nginx) must not buffer the stream
            }
        )
        await response.prepare(request)
        await response.write(OPENED)
        stream = EventStream(
            hub, subscription, cursor, ping_seconds=kernel.settings.sse_ping_seconds
        )

        def is_open() -> bool:
            transport = request.transport
            return transport is not None and not transport.is_closing()

        with contextlib.suppress(ConnectionResetError):
            await stream.run(response.write, is_open)
    finally:
        hub.unsubscribe(subscription)
    return response
