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

from typing import Any

from aiohttp import web

from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.api.request_models import PageQuery
from dataworkflows.api.route_spec import spec
from dataworkflows.api.trigger_models import (
    Trigger,
    TriggerList,
    TriggerPatch,
    TriggerReplace,
    TriggerRequest,
)
from dataworkflows.common.pagination import parse_page

trigger_routes = web.RouteTableDef()

BASE = "/api/v1/workflows/{workflow_id}/triggers"
TAGS = ["triggers"]
#: What enable and disable declare alike.
_SWITCH: dict[str, Any] = {
    "tags": TAGS,
    "ok": {200: ("The trigger", Trigger)},
    "errors": (404, 409),
}


@trigger_routes.post(BASE)
@spec(
    "createTrigger",
    role="editor",
    tags=TAGS,
    body=TriggerRequest,
    ok={201: ("Created", Trigger)},
    errors=(400, 404, 409, 422, 503),
)
async def create_trigger(request: web.Request) -> web.Response:
    """Attach a trigger (webhook, schedule, ...) to a workflow.

    `config` follows the trigger type's schema (`GET /api/v1/plugins`). Fields the type
    declares secret (`writeOnly: true`) are encrypted at rest and answered as `"**********"`;
    without a secret key a config holding one is a 503 `secret_key_missing` and nothing is
    written.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.triggers.create(
        request.match_info["workflow_id"],
        body,
        tenant_id=tenant(request),
        actor=principal(request),
    )
    location = f"/api/v1/workflows/{view['workflowId']}/triggers/{view['id']}"
    return web.json_response(view, status=201, headers={"Location": location})


@trigger_routes.get(BASE)
@spec(
    "listTriggers",
    role="viewer",
    tags=TAGS,
    query=PageQuery,
    ok={200: ("A page of triggers, oldest first", TriggerList)},
    errors=(404, 422),
)
async def list_triggers(request: web.Request) -> web.Response:
    """The workflow's triggers."""
    kernel = request.app[kernel_key]
    result = await kernel.triggers.list(
        request.match_info["workflow_id"],
        tenant_id=tenant(request),
        page=parse_page(request.query, "triggers"),
    )
    return web.json_response(result)


@trigger_routes.get(BASE + "/{trigger_id}")
@spec("getTrigger", role="viewer", tags=TAGS, ok={200: ("The trigger", Trigger)}, errors=(404,))
async def get_trigger(request: web.Request) -> web.Response:
    """One trigger with its counters."""
    kernel = request.app[kernel_key]
    view = await kernel.triggers.get(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        tenant_id=tenant(request),
    )
    return web.json_response(view)


async def _update(request: web.Request, *, replace: bool) -> web.Response:
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.triggers.update(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        body,
        tenant_id=tenant(request),
        replace=replace,
    )
    return web.json_response(view)


@trigger_routes.patch(BASE + "/{trigger_id}")
@spec(
    "patchTrigger",
    role="editor",
    tags=TAGS,
    body=TriggerPatch,
    ok={200: ("The trigger", Trigger)},
    errors=(400, 404, 409, 422, 503),
)
async def patch_trigger(request: web.Request) -> web.Response:
    """Change fields of a trigger (config is a JSON merge patch)."""
    return await _update(request, replace=False)


@trigger_routes.put(BASE + "/{trigger_id}")
@spec(
    "replaceTrigger",
    role="editor",
    tags=TAGS,
    body=TriggerReplace,
    ok={200: ("The trigger", Trigger)},
    errors=(400, 404, 409, 422, 503),
)
async def put_trigger(request: web.Request) -> web.Response:
    """Replace a trigger's config (and the fields given)."""
    return await _update(request, replace=True)


@trigger_routes.post(BASE + "/{trigger_id}/enable")
@spec("enableTrigger", role="editor", **_SWITCH)
async def enable_trigger(request: web.Request) -> web.Response:
    """Switch a trigger on."""
    return await _set_enabled(request, True)


@trigger_routes.post(BASE + "/{trigger_id}/disable")
@spec("disableTrigger", role="editor", **_SWITCH)
async def disable_trigger(request: web.Request) -> web.Response:
    """Switch a trigger off."""
    return await _set_enabled(request, False)


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    kernel = request.app[kernel_key]
    view = await kernel.triggers.set_enabled(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        enabled,
        tenant_id=tenant(request),
    )
    return web.json_response(view)


@trigger_routes.delete(BASE + "/{trigger_id}")
@spec("deleteTrigger", role="editor", tags=TAGS, ok={204: ("Deleted", None)}, errors=(404,))
async def delete_trigger(request: web.Request) -> web.Response:
    """Delete a trigger."""
    kernel = request.app[kernel_key]
    await kernel.triggers.delete(
        request.match_info["workflow_id"],
        request.match_info["trigger_id"],
        tenant_id=tenant(request),
    )
    return web.Response(status=204)
