"""Runs over HTTP: start one, list, read, follow events, cancel; dead letters.

Scoped to the ``X-Tenant-Id`` tenant like every kernel route (:mod:`.routes`).
"""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import correlation_id, principal, tenant
from dataworkflows.api.models import (
    CancelResult,
    DeadLetterPage,
    EventPage,
    Execution,
    ExecutionChildren,
    ExecutionLogs,
    ExecutionPage,
    ExecutionVariables,
    RunAccepted,
)
from dataworkflows.api.request_models import (
    ChildrenQuery,
    EventQuery,
    ExecuteRequest,
    ExecutionListQuery,
    LogQuery,
    PageQuery,
    RunListQuery,
)
from dataworkflows.api.route_spec import spec
from dataworkflows.common.errors import Unprocessable
from dataworkflows.common.pagination import MAX_INT, parse_choice, parse_int, parse_time
from dataworkflows.db.models import RUN_STATUSES

run_routes = web.RouteTableDef()

RUNS = ["executions"]
WF_RUNS = ["workflows", "executions"]


@run_routes.post("/api/v1/workflows/{workflow_id}/execute")
@spec(
    "executeWorkflow",
    role="runner",
    tags=WF_RUNS,
    body=ExecuteRequest,
    body_required=False,
    ok={202: ("Queued (or the earlier run of the same requestId)", RunAccepted)},
    errors=(400, 404, 409, 413, 422),
)
async def execute_workflow(request: web.Request) -> web.Response:
    """Start a run of the published version.

    The run pins the version current now. The same `requestId` returns the first run. Draft or
    Archived → 409 `workflow_not_active`.
    """
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await read_json_object(request, required=False)
    args.no_unknown_fields(body, {"trigger", "requestId"})
    request_id = body.get("requestId")
    if request_id is None:
        request_id = args.request_id_from_key(request)
    summary, _created = await kernel.service.execute(
        workflow_id,
        trigger=body.get("trigger"),
        request_id=request_id,
        tenant_id=tenant(request),
        principal=principal(request),
        correlation_id=correlation_id(request),
    )
    return web.json_response(summary, status=202, headers={"Location": summary["statusUrl"]})


async def _list_executions(request: web.Request, workflow_id: str | None) -> web.Response:
    kernel = request.app[kernel_key]
    page = args.page_query(request, "executions")
    result = await kernel.service.list_executions(
        tenant_id=tenant(request),
        page=page,
        workflow_id=workflow_id,
        status=parse_choice(request.query, "status", RUN_STATUSES),
        created_from=parse_time(request.query, "from"),
        created_to=parse_time(request.query, "to"),
    )
    return web.json_response(result)


@run_routes.get("/api/v1/workflows/{workflow_id}/executions")
@spec(
    "listWorkflowExecutions",
    role="viewer",
    tags=WF_RUNS,
    query=RunListQuery,
    ok={200: ("A page of runs", ExecutionPage)},
    errors=(404, 422),
)
async def workflow_executions(request: web.Request) -> web.Response:
    """The workflow's runs, newest first."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    await kernel.store.get(workflow_id, tenant(request))  # 404 for another tenant's
    return await _list_executions(request, workflow_id)


# -- executions ---------------------------------------------------------------------------


@run_routes.get("/api/v1/executions")
@spec(
    "listExecutions",
    role="viewer",
    tags=RUNS,
    query=ExecutionListQuery,
    ok={200: ("A page of runs", ExecutionPage)},
    errors=(422,),
)
async def list_executions(request: web.Request) -> web.Response:
    """The tenant's runs, newest first."""
    workflow_id = request.query.get("workflowId") or None
    if workflow_id is not None and not args.WORKFLOW_ID.fullmatch(workflow_id):
        raise Unprocessable(
            "workflowId is not a valid workflow id",
            code="invalid_query",
            details={"parameter": "workflowId"},
        )
    return await _list_executions(request, workflow_id)


@run_routes.get("/api/v1/executions/{execution_id}")
@spec("getExecution", role="viewer", tags=RUNS, ok={200: ("The run", Execution)}, errors=(404,))
async def get_execution(request: web.Request) -> web.Response:
    """A run with every attempt of every node."""
    kernel = request.app[kernel_key]
    view = await kernel.service.get_execution(
        request.match_info["execution_id"], tenant_id=tenant(request), replica=True
    )
    return web.json_response(view)


@run_routes.get("/api/v1/executions/{execution_id}/events")
@spec(
    "executionEvents",
    role="viewer",
    tags=RUNS,
    query=EventQuery,
    ok={200: ("A page of events", EventPage)},
    errors=(404, 422),
)
async def get_execution_events(request: web.Request) -> web.Response:
    """The run's events in order."""
    kernel = request.app[kernel_key]
    after = parse_int(request.query, "after", 0, MAX_INT, what="an event sequence number") or 0
    page = args.page_query(request, "events")
    result = await kernel.service.events_page(
        request.match_info["execution_id"], after=after, tenant_id=tenant(request), page=page
    )
    return web.json_response(result)


@run_routes.get("/api/v1/executions/{execution_id}/logs")
@spec(
    "executionLogs",
    role="viewer",
    tags=RUNS,
    query=LogQuery,
    ok={200: ("The kept log lines", ExecutionLogs)},
    errors=(404, 422),
)
async def get_execution_logs(request: web.Request) -> web.Response:
    """What the run's actions wrote to `ctx.log`, per attempt (capped, secrets redacted)."""
    kernel = request.app[kernel_key]
    attempt = parse_int(request.query, "attempt", 1, MAX_INT, what="an attempt number")
    result = await kernel.service.execution_logs(
        request.match_info["execution_id"],
        tenant_id=tenant(request),
        node_id=request.query.get("nodeId"),
        attempt=attempt,
    )
    return web.json_response(result)


@run_routes.get("/api/v1/executions/{execution_id}/variables")
@spec(
    "executionVariables",
    role="viewer",
    tags=RUNS,
    ok={200: ("The run's variables", ExecutionVariables)},
    errors=(404,),
)
async def get_execution_variables(request: web.Request) -> web.Response:
    """The variables the run's actions set (`ctx.set_variable`), by key.

    Each is the value of the last successful attempt that set it, with its type, node and
    attempt. Later nodes read them in templates as `vars.<key>`. An unknown, another
    tenant's or malformed id → 404.
    """
    kernel = request.app[kernel_key]
    result = await kernel.service.execution_variables(
        request.match_info["execution_id"], tenant_id=tenant(request)
    )
    return web.json_response(result)


@run_routes.get("/api/v1/executions/{execution_id}/children")
@spec(
    "executionChildren",
    role="viewer",
    tags=RUNS,
    query=ChildrenQuery,
    ok={200: ("The runs it started", ExecutionChildren)},
    errors=(404, 422),
)
async def get_execution_children(request: web.Request) -> web.Response:
    """The runs this run started with subworkflow nodes: each with its `parentNodeId`,
    `depth` and status. `recursive=true`: the whole tree below the run, parents before
    their children. An unknown, another tenant's or malformed id → 404."""
    kernel = request.app[kernel_key]
    recursive = parse_choice(request.query, "recursive", ("true", "false")) == "true"
    result = await kernel.service.execution_children(
        request.match_info["execution_id"], tenant_id=tenant(request), recursive=recursive
    )
    return web.json_response(result)


@run_routes.post("/api/v1/executions/{execution_id}/cancel")
@spec(
    "cancelExecution",
    role="runner",
    tags=RUNS,
    ok={200: ("Cancelled", CancelResult), 202: ("Cancel requested", CancelResult)},
    errors=(404, 409),
)
async def cancel_execution(request: web.Request) -> web.Response:
    """Cancel a run (Pending: at once → 200; Running or Waiting: requested → 202), and
    with it every run below it that has not ended (its subworkflows)."""
    kernel = request.app[kernel_key]
    result = await kernel.service.cancel(
        request.match_info["execution_id"], tenant_id=tenant(request)
    )
    return web.json_response(result, status=202 if result["status"] == "Running" else 200)


# -- dead letters -------------------------------------------------------------------------


@run_routes.get("/api/v1/dead-letters")
@spec(
    "listDeadLetters",
    role="viewer",
    tags=RUNS,
    query=PageQuery,
    ok={200: ("A page of dead letters", DeadLetterPage)},
    errors=(422,),
)
async def list_dead_letters(request: web.Request) -> web.Response:
    """Runs the engine gave up on, newest first."""
    kernel = request.app[kernel_key]
    page = args.page_query(request, "deadLetters")
    return web.json_response(
        await kernel.service.list_dead_letters(tenant_id=tenant(request), page=page)
    )


@run_routes.post("/api/v1/dead-letters/{dead_letter_id}/requeue")
@spec(
    "requeueDeadLetter",
    role="runner",
    tags=RUNS,
    ok={202: ("Queued", RunAccepted)},
    errors=(404, 409),
)
async def requeue_dead_letter(request: web.Request) -> web.Response:
    """Queue a new run with the dead run's version and trigger."""
    kernel = request.app[kernel_key]
    result = await kernel.service.requeue_dead_letter(
        request.match_info["dead_letter_id"], tenant_id=tenant(request)
    )
    return web.json_response(result, status=202, headers={"Location": result["statusUrl"]})
