"""The kernel's HTTP API (``/api/v1``): ``/health``, plugins and the workflow lifecycle;
runs are in :mod:`.run_routes`. The reference is docs/api.md and the OpenAPI document at
``/api/v1/openapi.json`` (:mod:`dataworkflows.api.openapi`, built from the ``@spec`` each
handler declares).

Every handler is scoped to the ``X-Tenant-Id`` tenant: another tenant's workflow, run or
dead letter is a 404 exactly like a missing one. ``X-Principal`` is the actor stored with
runs and audit rows; ``X-Audit-Note`` (or a ``note`` field where the body is ours) is the
audit note.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dataworkflows import __version__
from dataworkflows.api import request_args as args
from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.api.models import (
    AuditPage,
    Health,
    PluginList,
    VersionCreated,
    VersionDetail,
    VersionPage,
    Workflow,
    WorkflowPage,
)
from dataworkflows.api.request_models import (
    ArchiveRequest,
    CreateWorkflowQuery,
    LifecycleRequest,
    PageQuery,
    PluginsQuery,
    WorkflowListQuery,
    WorkflowPatch,
)
from dataworkflows.api.route_spec import spec
from dataworkflows.common.pagination import parse_choice
from dataworkflows.db.models import WORKFLOW_STATUSES
from dataworkflows.engine.definitions import WorkflowDefinition

routes = web.RouteTableDef()

SYSTEM = ["system"]
WF = ["workflows"]


# -- system -------------------------------------------------------------------------------


@routes.get("/health")
@spec("health", role="public", tags=SYSTEM, ok={200: ("OK", Health)})
async def health(request: web.Request) -> web.Response:
    """Liveness and database check."""
    kernel = request.app[kernel_key]
    async with kernel.db.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return web.json_response(
        {"status": "ok", "version": __version__, "database": kernel.db.dialect}
    )


@routes.get("/api/v1/plugins")
@spec(
    "listPlugins",
    role="viewer",
    tags=SYSTEM,
    query=PluginsQuery,
    ok={200: ("Plugins", PluginList)},
    errors=(422,),
)
async def list_plugins(request: web.Request) -> web.Response:
    """Installed plugins, their actions and trigger types."""
    kernel = request.app[kernel_key]
    return web.json_response(
        {"plugins": kernel.plugins.describe(include_defaults=args.flag(request, "all"))}
    )


# -- workflows ----------------------------------------------------------------------------


@routes.post("/api/v1/workflows")
@spec(
    "createWorkflow",
    role="editor",
    tags=WF,
    query=CreateWorkflowQuery,
    body=WorkflowDefinition,
    ok={201: ("Created", Workflow)},
    errors=(400, 409, 413, 422),
    audited=True,
)
async def create_workflow(request: web.Request) -> web.Response:
    """Create a workflow (version 1, Draft; Active with autoActivate=true).

    The body is the workflow definition. Unknown fields, unknown action types, bad parameters,
    bad edges, cycles and bad templates are all reported at once (422 `invalid_definition`,
    `details.problems`). Workflow ids are global: an id in use anywhere is a 409
    `workflow_exists`.
    """
    kernel = request.app[kernel_key]
    auto_activate = args.flag(request, "autoActivate")
    body = await read_json_object(request)
    view = await kernel.service.create_workflow(
        body,
        auto_activate=auto_activate,
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request),
    )
    return web.json_response(
        view, status=201, headers={"Location": f"/api/v1/workflows/{view['id']}"}
    )


@routes.get("/api/v1/workflows")
@spec(
    "listWorkflows",
    role="viewer",
    tags=WF,
    query=WorkflowListQuery,
    ok={200: ("A page of workflows", WorkflowPage)},
    errors=(422,),
)
async def list_workflows(request: web.Request) -> web.Response:
    """List workflows (ordered by id)."""
    kernel = request.app[kernel_key]
    page = args.page_query(request, "workflows")
    result = await kernel.service.list_workflows(
        tenant_id=tenant(request),
        page=page,
        status=parse_choice(request.query, "status", WORKFLOW_STATUSES),
        text=request.query.get("q") or None,
    )
    return web.json_response(result)


@routes.get("/api/v1/workflows/{workflow_id}")
@spec("getWorkflow", role="viewer", tags=WF, ok={200: ("The workflow", Workflow)}, errors=(404,))
async def get_workflow(request: web.Request) -> web.Response:
    """A workflow with its current (else latest) definition."""
    kernel = request.app[kernel_key]
    view = await kernel.service.get_workflow(args.workflow_id(request), tenant_id=tenant(request))
    return web.json_response(view)


@routes.patch("/api/v1/workflows/{workflow_id}")
@spec(
    "updateWorkflow",
    role="editor",
    tags=WF,
    body=WorkflowPatch,
    ok={200: ("The workflow", Workflow)},
    errors=(400, 404, 409, 422),
    audited=True,
)
async def update_workflow(request: web.Request) -> web.Response:
    """Change metadata (displayName, description) — an UPDATE audit row."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await read_json_object(request)
    view = await kernel.service.update_workflow(
        workflow_id,
        body,
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request, body),
    )
    return web.json_response(view)


@routes.get("/api/v1/workflows/{workflow_id}/versions")
@spec(
    "listVersions",
    role="viewer",
    tags=WF,
    query=PageQuery,
    ok={200: ("A page of versions", VersionPage)},
    errors=(404, 422),
)
async def list_versions(request: web.Request) -> web.Response:
    """List versions, oldest first."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    page = args.page_query(request, "versions")
    result = await kernel.service.list_versions(workflow_id, tenant_id=tenant(request), page=page)
    return web.json_response(result)


@routes.post("/api/v1/workflows/{workflow_id}/versions")
@spec(
    "addVersion",
    role="editor",
    tags=WF,
    body=WorkflowDefinition,
    ok={201: ("Created", VersionCreated)},
    errors=(400, 404, 409, 413, 422),
    audited=True,
)
async def add_version(request: web.Request) -> web.Response:
    """Add version n+1 (Draft and Active workflows).

    A definition identical to an existing version (same checksum) is a 409 `duplicate_version`
    whose details name that version.
    """
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await read_json_object(request)
    result = await kernel.service.add_version(
        workflow_id,
        body,
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request),
    )
    location = f"/api/v1/workflows/{workflow_id}/versions/{result['version']}"
    return web.json_response(result, status=201, headers={"Location": location})


@routes.get(r"/api/v1/workflows/{workflow_id}/versions/{version:\d+}")
@spec("getVersion", role="viewer", tags=WF, ok={200: ("The version", VersionDetail)}, errors=(404,))
async def get_version(request: web.Request) -> web.Response:
    """One version with its definition."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    version = int(request.match_info["version"])
    view = await kernel.service.get_version(workflow_id, version, tenant_id=tenant(request))
    return web.json_response(view)


#: What publish, rollback and archive declare alike.
_LIFECYCLE: dict[str, Any] = {
    "tags": WF,
    "body_required": False,
    "ok": {200: ("The workflow", Workflow)},
    "errors": (400, 404, 409, 422),
    "audited": True,
}


async def _lifecycle_body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    body = await read_json_object(request, required=False)
    args.no_unknown_fields(body, fields)
    return body


@routes.post("/api/v1/workflows/{workflow_id}/publish")
@spec("publishWorkflow", role="editor", body=LifecycleRequest, **_LIFECYCLE)
async def publish_workflow(request: web.Request) -> web.Response:
    """Publish the latest (or a given) version: Draft/Active → Active.

    Runs in flight keep the version they started with. Archived → 409 `invalid_state`
    (details.status).
    """
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await _lifecycle_body(request, {"version", "note"})
    view = await kernel.service.publish(
        workflow_id,
        version=args.version_field(body),
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request, body),
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/rollback")
@spec("rollbackWorkflow", role="editor", body=LifecycleRequest, **_LIFECYCLE)
async def rollback_workflow(request: web.Request) -> web.Response:
    """Publish an earlier version (default: the one published before the current one).

    Only Active workflows roll back; the version must be lower than the current one.
    """
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await _lifecycle_body(request, {"version", "note"})
    view = await kernel.service.rollback(
        workflow_id,
        version=args.version_field(body),
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request, body),
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/archive")
@spec("archiveWorkflow", role="editor", body=ArchiveRequest, **_LIFECYCLE)
async def archive_workflow(request: web.Request) -> web.Response:
    """Archive: Draft/Active → Archived (no new runs; runs in flight go on)."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    body = await _lifecycle_body(request, {"note"})
    view = await kernel.service.archive(
        workflow_id,
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request, body),
    )
    return web.json_response(view)


@routes.get("/api/v1/workflows/{workflow_id}/audit")
@spec(
    "workflowAudit",
    role="viewer",
    tags=WF,
    query=PageQuery,
    ok={200: ("A page of audit rows", AuditPage)},
    errors=(404, 422),
)
async def workflow_audit(request: web.Request) -> web.Response:
    """The workflow's audit trail, newest first."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    page = args.page_query(request, "audit")
    result = await kernel.service.get_audit(workflow_id, tenant_id=tenant(request), page=page)
    return web.json_response(result)
