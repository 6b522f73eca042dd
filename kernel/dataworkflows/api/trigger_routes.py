"""Trigger management: ``/api/v1/workflows/{workflow_id}/triggers`` (docs/triggers.md).

| method | path | |
|---|---|---|
| POST | ``/triggers`` | create (``{type, config, name?, enabled?, activationCondition?}``) → 201 |
| GET | ``/triggers`` | list → ``{"items": [...]}`` |
| GET | ``/triggers/{id}`` | one trigger, with its counters and ``pluginMissing`` |
| PATCH | ``/triggers/{id}`` | change fields; ``config`` is a JSON merge patch |
| PUT | ``/triggers/{id}`` | replace ``config`` (and the fields given) |
| POST | ``/triggers/{id}/enable``, ``/disable`` | switch on or off |
| DELETE | ``/triggers/{id}`` | delete → 204 |
"""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.common.pagination import parse_page

trigger_routes = web.RouteTableDef()

BASE = "/api/v1/workflows/{workflow_id}/triggers"


def _tenant(request: web.Request) -> str:
    return request.headers.get("X-Tenant-Id") or "default"


@trigger_routes.post(BASE)
async def create_trigger(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.triggers.create(
        request.match_info["workflow_id"],
        body,
        tenant_id=_tenant(request),
        actor=request.headers.get("X-Principal") or None,
    )
    location = f"/api/v1/workflows/{view['workflowId']}/triggers/{view['id']}"
    return web.json_response(view, status=201, headers={"Location": location})


@trigger_routes.get(BASE)
async def list_triggers(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    result = await kernel.triggers.list(
        request.match_info["workflow_id"],
        tenant_id=_tenant(request),
        page=parse_page(request.query, "triggers"),
    )
    return web.json_response(result)


@trigger_routes.get(BASE + "/{trigger_id}")
async def get_trigger(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.triggers.get(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        tenant_id=_tenant(request),
    )
    return web.json_response(view)


async def _update(request: web.Request, *, replace: bool) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.triggers.update(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        body,
        tenant_id=_tenant(request),
        replace=replace,
    )
    return web.json_response(view)


@trigger_routes.patch(BASE + "/{trigger_id}")
async def patch_trigger(request: web.Request) -> web.Response:
    return await _update(request, replace=False)


@trigger_routes.put(BASE + "/{trigger_id}")
async def put_trigger(request: web.Request) -> web.Response:
    return await _update(request, replace=True)


@trigger_routes.post(BASE + "/{trigger_id}/enable")
async def enable_trigger(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


@trigger_routes.post(BASE + "/{trigger_id}/disable")
async def disable_trigger(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.triggers.set_enabled(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        enabled,
        tenant_id=_tenant(request),
    )
    return web.json_response(view)


@trigger_routes.delete(BASE + "/{trigger_id}")
async def delete_trigger(request: web.Request) -> web.Response:
    kernel = request.app[kernel_key]
    await kernel.triggers.delete(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        tenant_id=_tenant(request),
    )
    return web.Response(status=204)
