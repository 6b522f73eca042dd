"""The kernel's HTTP API (``/api/v1``) and ``/health``."""

from __future__ import annotations

from aiohttp import web

from dataworkflows import __version__
from dataworkflows.errors import Unprocessable
from dataworkflows.web.errors import read_json_object
from dataworkflows.web.keys import kernel_key

routes = web.RouteTableDef()

TRUE = {"1", "true", "yes"}
FALSE = {"0", "false", "no", ""}


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise Unprocessable(
        f"query parameter {name} must be true or false",
        code="invalid_query",
        details={"parameter": name, "value": raw},
    )


def _tenant(request: web.Request) -> str:
    return request.headers.get("X-Tenant-Id") or "default"


def _principal(request: web.Request) -> str | None:
    return request.headers.get("X-Principal") or None


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    async with kernel.db.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return web.json_response(
        {"status": "ok", "version": __version__, "database": kernel.db.dialect}
    )


@routes.get("/api/v1/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    return web.json_response(
        {"plugins": kernel.plugins.describe(include_defaults=_flag(request, "all"))}
    )


@routes.post("/api/v1/workflows")
async def create_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    auto_activate = _flag(request, "autoActivate")
    body = await read_json_object(request)
    view = await kernel.service.create_workflow(
        body, auto_activate=auto_activate, tenant_id=_tenant(request), actor=_principal(request)
    )
    return web.json_response(
        view, status=201, headers={"Location": f"/api/v1/workflows/{view['id']}"}
    )


@routes.get("/api/v1/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    return web.json_response(
        {"items": await kernel.service.list_workflows(tenant_id=_tenant(request))}
    )


@routes.get("/api/v1/workflows/{workflow_id}")
async def get_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.service.get_workflow(
        request.match_info["workflow_id"], tenant_id=_tenant(request)
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/versions")
async def add_version(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    result = await kernel.service.add_version(
        request.match_info["workflow_id"],
        body,
        tenant_id=_tenant(request),
        actor=_principal(request),
    )
    return web.json_response(result, status=201)


@routes.post("/api/v1/workflows/{workflow_id}/publish")
async def publish_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request, required=False)
    version = body.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise Unprocessable(
            "version must be a positive integer",
            code="invalid_request",
            details={"path": "$.version"},
        )
    view = await kernel.service.publish(
        request.match_info["workflow_id"], version=version, tenant_id=_tenant(request)
    )
    return web.json_response(view)


@routes.post("/api/v1/workflows/{workflow_id}/execute")
async def execute_workflow(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request, required=False)
    unknown = sorted(set(body) - {"trigger", "requestId"})
    if unknown:
        raise Unprocessable(
            f"unknown fields: {', '.join(unknown)}",
            code="invalid_request",
            details={"fields": unknown},
        )
    summary, _created = await kernel.service.execute(
        request.match_info["workflow_id"],
        trigger=body.get("trigger"),
        request_id=body.get("requestId"),
        tenant_id=_tenant(request),
        principal=_principal(request),
        correlation_id=request.headers.get("Correlation-Id"),
    )
    return web.json_response(summary, status=202, headers={"Location": summary["statusUrl"]})


@routes.get("/api/v1/executions/{execution_id}")
async def get_execution(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    return web.json_response(await kernel.service.get_execution(request.match_info["execution_id"]))


@routes.get("/api/v1/executions/{execution_id}/events")
async def get_execution_events(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise Unprocessable(
            "after must be an integer sequence number", code="invalid_query"
        ) from None
    events = await kernel.service.get_events(request.match_info["execution_id"], after=after)
    return web.json_response({"items": events})
