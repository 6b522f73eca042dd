"""W3C trace context of incoming requests (:mod:`dataworkflows.common.tracecontext`).

Installed on the whole application by :func:`~dataworkflows.api.middleware.setup_api`, so
it covers the kernel's routes (``POST /api/v1/workflows/{id}/execute``) and the routes of
plugins (the webhook intake) alike: a run queued while a request is handled stores the
request's ``traceparent`` / ``tracestate``. Invalid headers are ignored, never refused.
"""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api.errors import Handler
from dataworkflows.common import tracecontext


@web.middleware
async def trace_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's trace context (or none) while the request is handled."""
    with tracecontext.bind(tracecontext.from_headers(request.headers)):
        return await handler(request)
