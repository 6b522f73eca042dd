"""Commands over HTTP: ``POST /api/v1/commands`` (docs/api.md, "Commands"); the use case
is :mod:`dataworkflows.service.commands`."""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.command_models import CommandAccepted, CommandRequest
from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import CORRELATION_KEY, correlation_id, principal, tenant
from dataworkflows.api.route_spec import spec

command_routes = web.RouteTableDef()


@command_routes.post("/api/v1/commands")
@spec(
    "runCommand",
    role="editor",
    tags=["commands"],
    body=CommandRequest,
    ok={202: ("Queued (or the earlier run of the same requestId)", CommandAccepted)},
    errors=(400, 404, 409, 413, 422),
)
async def run_command(request: web.Request) -> web.Response:
    """Run an action (`action.run`) or a workflow (`workflow.run`); answers at once.

    The run goes through the queue like every run; its events, its terminal one included,
    carry the correlation id: the body's `correlationId`, else the `Correlation-Id` header's,
    else a new one (also sent back as the `Correlation-Id` header). An unknown command is a
    422 `unknown_command` whose details list the known ones; an unknown action type or
    parameters that break its schema are 422s, an unknown workflow a 404, a Draft or
    Archived one a 409 `workflow_not_active`. Nothing is written for a rejected command.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    result = await kernel.service.run_command(
        body,
        tenant_id=tenant(request),
        principal=principal(request),
        correlation_id=correlation_id(request),
        request_id=args.request_id_from_key(request),
    )
    if result["correlationId"]:
        request[CORRELATION_KEY] = result["correlationId"]  # the response header
    return web.json_response(result, status=202, headers={"Location": result["statusUrl"]})
