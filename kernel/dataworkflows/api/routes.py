"""The kernel's HTTP API (``/api/v1``) and ``/health``; the reference is docs/api.md and
the OpenAPI document at ``/api/v1/openapi.json`` (:mod:`dataworkflows.api.openapi`).

Every handler is scoped to the ``X-Tenant-Id`` tenant: another tenant's workflow, run or
dead letter is a 404 exactly like a missing one. ``X-Principal`` is the actor stored with
runs and audit rows; ``X-Audit-Note`` (or a ``note`` field where the body is ours) is the
audit note.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from aiohttp import web

from dataworkflows import __version__
from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import audit_note, correlation_id, principal, tenant
from dataworkflows.common.errors import Unprocessable
from dataworkflows.common.pagination import MAX_INT, parse_choice, parse_page, parse_time
from dataworkflows.db.models import RUN_STATUSES, WORKFLOW_STATUSES
from dataworkflows.engine.definitions import ID_PATTERN
from dataworkflows.service.audit import check_note
from dataworkflows.service.workflow_reads import workflow_not_found

routes = web.RouteTableDef()

TRUE = {"1", "true", "yes"}
FALSE = {"0", "false", "no", ""}
_WORKFLOW_ID = re.compile(ID_PATTERN)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise Unprocessable(
        f"query parameter {name} must be true or false",
        code="invalid_query",
        details={"parameter": name, "value": raw[:100]},
    )


def _tenant(request: web.Request) -> str:
    return tenant(request)


def _principal(request: web.Request) -> str | None:
    return principal(request)


def _workflow_id(request: web.Request) -> str:
    """The path's workflow id; one no workflow can have is simply not found."""
    workflow_id = request.match_info["workflow_id"]
    if not _WORKFLOW_ID.fullmatch(workflow_id):
        raise workflow_not_found(workflow_id[:200])
    return workflow_id


def _no_unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Unprocessable(
            f"unknown fields: {', '.join(unknown)}",
            code="invalid_request",
            details={"fields": unknown},
        )


def _note(request: web.Request, body: dict[str, Any] | None = None) -> str | None:
    """The audit note: the body's ``note`` if given, else the ``X-Audit-Note`` header."""
    if body is not None and body.get("note") is not None:
        return check_note(body["note"])
    return audit_note(request)


def _version_field(body: dict[str, Any]) -> int | None:
    version = body.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise Unprocessable(
            "version must be a positive integer",
            code="invalid_request",
            details={"path": "$.version"},
        )
    return version


def _page_query(request: web.Request, kind: str) -> Any:
    return parse_page(request.query, kind)


# -- system -------------------------------------------------------------------------------


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness and database reachability."""
    kernel = request.app[kernel_key]
    async with kernel.db.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return web.json_response(
        {"status": "ok", "version": __version__, "database": kernel.db.dialect}
    )


@routes.get("/api/v1/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    """Installed plugins with their actions and triggers."""
    kernel = request.app[kernel_key]
    return web.json_response(
        {"plugins": kernel.plugins.describe(include_defaults=_flag(request, "all"))}
    )


# -- workflows ----------------------------------------------------------------------------


@routes.post("/api/v1/workflows")
async def create_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    auto_activate = _flag(request, "autoActivate")
    body = await read_json_object(request)
    view = await kernel.service.create_workflow(
        body,
        auto_activate=auto_activate,
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request),
    )
    return web.json_response(
        view, status=201, headers={"Location": f"/api/v1/workflows/{view['id']}"}
    )


@routes.get("/api/v1/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    page = _page_query(request, "workflows")
    result = await kernel.service.list_workflows(
        tenant_id=_tenant(request),
        page=page,
        status=parse_choice(request.query, "status", WORKFLOW_STATUSES),
        text=request.query.get("q") or None,
    )
    return web.json_response(result)


@routes.get("/api/v1/workflows/{workflow_id}")
async def get_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.service.get_workflow(_workflow_id(request), tenant_id=_tenant(request))
    return web.json_response(view)


@routes.patch("/api/v1/workflows/{workflow_id}")
async def update_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await read_json_object(request)
    view = await kernel.service.update_workflow(
        workflow_id,
        body,
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request, body),
    )
    return web.json_response(view)


@routes.get("/api/v1/workflows/{workflow_id}/versions")
async def list_versions(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    page = _page_query(request, "versions")
    result = await kernel.service.list_versions(workflow_id, tenant_id=_tenant(request), page=page)
    return web.json_response(result)


@routes.post("/api/v1/workflows/{workflow_id}/versions")
async def add_version(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await read_json_object(request)
    result = await kernel.service.add_version(
        workflow_id,
        body,
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request),
    )
    location = f"/api/v1/workflows/{workflow_id}/versions/{result['version']}"
    return web.json_response(result, status=201, headers={"Location": location})


@routes.get(r"/api/v1/workflows/{workflow_id}/versions/{version:\d+}")
async def get_version(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    version = int(request.match_info["version"])
    view = await kernel.service.get_version(workflow_id, version, tenant_id=_tenant(request))
    return web.json_response(view)


async def _lifecycle_body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    body = await read_json_object(request, required=False)
    _no_unknown_fields(body, fields)
    return body


@routes.post("/api/v1/workflows/{workflow_id}/publish")
async def publish_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await _lifecycle_body(request, {"version", "note"})
    view = await kernel.service.publish(
        workflow_id,
        version=_version_field(body),
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request, body),
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/rollback")
async def rollback_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await _lifecycle_body(request, {"version", "note"})
    view = await kernel.service.rollback(
        workflow_id,
        version=_version_field(body),
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request, body),
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/archive")
async def archive_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await _lifecycle_body(request, {"note"})
    view = await kernel.service.archive(
        workflow_id,
        tenant_id=_tenant(request),
        actor=_principal(request),
        note=_note(request, body),
    )
    return web.json_response(view)


@routes.get("/api/v1/workflows/{workflow_id}/audit")
async def workflow_audit(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    page = _page_query(request, "audit")
    result = await kernel.service.get_audit(workflow_id, tenant_id=_tenant(request), page=page)
    return web.json_response(result)


@routes.post("/api/v1/workflows/{workflow_id}/execute")
async def execute_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    body = await read_json_object(request, required=False)
    _no_unknown_fields(body, {"trigger", "requestId"})
    request_id = body.get("requestId")
    key = request.headers.get("Idempotency-Key")
    if request_id is None and key:
        # the run itself is unique per (workflow, request id): a retry whose stored
        # response was lost (its server died) still finds the first run
        request_id = "idem:" + (
            key if len(key) <= 195 else hashlib.sha256(key.encode()).hexdigest()
        )
    summary, _created = await kernel.service.execute(
        workflow_id,
        trigger=body.get("trigger"),
        request_id=request_id,
        tenant_id=_tenant(request),
        principal=_principal(request),
        correlation_id=correlation_id(request),
    )
    return web.json_response(summary, status=202, headers={"Location": summary["statusUrl"]})


async def _list_executions(request: web.Request, workflow_id: str | None) -> web.Response:
    kernel = request.app[kernel_key]
    page = _page_query(request, "executions")
    result = await kernel.service.list_executions(
        tenant_id=_tenant(request),
        page=page,
        workflow_id=workflow_id,
        status=parse_choice(request.query, "status", RUN_STATUSES),
        created_from=parse_time(request.query, "from"),
        created_to=parse_time(request.query, "to"),
    )
    return web.json_response(result)


@routes.get("/api/v1/workflows/{workflow_id}/executions")
async def workflow_executions(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    workflow_id = _workflow_id(request)
    await kernel.store.get(workflow_id, _tenant(request))  # 404 for another tenant's
    return await _list_executions(request, workflow_id)


# -- executions ---------------------------------------------------------------------------


@routes.get("/api/v1/executions")
async def list_executions(request: web.Request) -> web.Response:
    workflow_id = request.query.get("workflowId") or None
    if workflow_id is not None and not _WORKFLOW_ID.fullmatch(workflow_id):
        raise Unprocessable(
            "workflowId is not a valid workflow id",
            code="invalid_query",
            details={"parameter": "workflowId"},
        )
    return await _list_executions(request, workflow_id)


@routes.get("/api/v1/executions/{execution_id}")
async def get_execution(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.service.get_execution(
        request.match_info["execution_id"], tenant_id=_tenant(request)
    )
    return web.json_response(view)


@routes.get("/api/v1/executions/{execution_id}/events")
async def get_execution_events(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    raw = request.query.get("after", "0")
    try:
        after = int(raw)
        if not 0 <= after <= MAX_INT:
            raise ValueError
    except ValueError:
        raise Unprocessable(
            f"after must be an event sequence number from 0 to {MAX_INT}",
            code="invalid_query",
            details={"parameter": "after", "value": raw[:100]},
        ) from None
    page = _page_query(request, "events")
    result = await kernel.service.events_page(
        request.match_info["execution_id"], after=after, tenant_id=_tenant(request), page=page
    )
    return web.json_response(result)


@routes.post("/api/v1/executions/{execution_id}/cancel")
async def cancel_execution(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    result = await kernel.service.cancel(
        request.match_info["execution_id"], tenant_id=_tenant(request)
    )
    return web.json_response(result, status=202 if result["status"] == "Running" else 200)


# -- dead letters -------------------------------------------------------------------------


@routes.get("/api/v1/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    page = _page_query(request, "deadLetters")
    return web.json_response(
        await kernel.service.list_dead_letters(tenant_id=_tenant(request), page=page)
    )


@routes.post("/api/v1/dead-letters/{dead_letter_id}/requeue")
async def requeue_dead_letter(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    result = await kernel.service.requeue_dead_letter(
        request.match_info["dead_letter_id"], tenant_id=_tenant(request)
    )
    return web.json_response(result, status=202, headers={"Location": result["statusUrl"]})
