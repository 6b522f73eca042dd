"""The OpenAPI 3.1 document of the HTTP API (``/api/v1/openapi.json``) and a human page
rendered from it (``/api/v1/docs``, :mod:`.openapi_html`).

The document is built per request from the application's real router: every route it
serves appears. A kernel route's operation comes from what its handler declares with
:func:`~dataworkflows.api.route_spec.spec` (operationId, summary from the docstring, query,
body and response models); the component schemas are generated from those pydantic models
(:mod:`.models`, :mod:`.request_models`, :mod:`.trigger_models`) and the workflow
definition models. A route a plugin added (``register_routes``) gets a generic operation.
``tests/test_openapi.py`` fails when a kernel route declares nothing or a declaration has
no route, so the document cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from dataworkflows import __version__
from dataworkflows.api.auth import CONSOLE_NAME_PREFIX as _CONSOLE_PREFIX
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import IDEMPOTENT_METHODS
from dataworkflows.api.openapi_html import render_html
from dataworkflows.api.openapi_parts import (
    COMMON_HEADERS,
    HEADERS,
    JSON_TYPE,
    add_links,
    model_schemas,
    param_ref,
    query_parameters,
    ref,
)
from dataworkflows.api.route_spec import ERROR_TEXT, PATH_PARAMETERS, RouteSpec, spec, spec_of
from dataworkflows.common.access import DEFAULT_ACCESS, PUBLIC, SCRAPE, access_of

openapi_routes = web.RouteTableDef()

_CORRELATION_HEADER = {"Correlation-Id": {"$ref": "#/components/headers/CorrelationId"}}


#: resource-name prefix of the web console's HTML pages (``dataworkflows.console``), which
#: are not part of the JSON API and stay out of its document (docs/console.md lists them)
CONSOLE_NAME_PREFIX = _CONSOLE_PREFIX


def served_routes(app: web.Application) -> list[web.AbstractRoute]:
    """The app's API routes: HEAD twins, catch-alls and the console's pages left out."""
    return [
        route
        for route in app.router.routes()
        if route.method not in ("HEAD", "*")
        and route.resource is not None
        and not (route.resource.name or "").startswith(CONSOLE_NAME_PREFIX)
    ]


def route_keys(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, canonical path) of every route the app serves (HEAD twins left out)."""
    return {(route.method, route.resource.canonical) for route in served_routes(app)}  # type: ignore[union-attr]


def _path_names(path: str) -> list[str]:
    return re.findall(r"{([^}:]+)}", path)


def _path_parameter(name: str) -> dict[str, Any]:
    schema, description = PATH_PARAMETERS.get(name, ({"type": "string"}, ""))
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        **({"description": description} if description else {}),
    }


def _response(description: str, media_type: str, schema: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "headers": _CORRELATION_HEADER}
    if schema is not None:
        body = ref(schema.__name__) if isinstance(schema, type) else schema
        response["content"] = {media_type: {"schema": body}}
    return response


def operation(method: str, path: str, declared: RouteSpec) -> dict[str, Any]:
    """The OpenAPI operation of a kernel route from what its handler declared."""
    parameters = [*COMMON_HEADERS, *(_path_parameter(n) for n in _path_names(path))]
    if declared.query is not None:
        parameters += query_parameters(declared.query)
    if declared.audited:
        parameters.append(param_ref("AuditNote"))
    if method in IDEMPOTENT_METHODS:
        parameters.append(param_ref("IdempotencyKey"))
    responses = {
        str(status): _response(text, declared.media_type, schema)
        for status, (text, schema) in declared.ok.items()
    }
    for status in declared.errors:
        responses[str(status)] = _response(ERROR_TEXT[status], JSON_TYPE, ref("Error"))
    responses["default"] = _response("Any other error", JSON_TYPE, ref("Error"))
    op: dict[str, Any] = {
        "operationId": declared.operation_id,
        "summary": declared.summary,
        "tags": list(declared.tags),
        "parameters": parameters,
        "responses": responses,
        **security_of(declared.role),
    }
    if declared.description:
        op["description"] = declared.description
    if declared.body is not None:
        op["requestBody"] = {
            "required": declared.body_required,
            "content": {JSON_TYPE: {"schema": ref(declared.body.__name__)}},
        }
    return op


def security_of(level: str) -> dict[str, Any]:
    """An operation's ``security`` and ``x-required-role`` for its access level
    (docs/auth.md): none for ``public``, the scrape token for ``scrape``, else a bearer
    token (API token or JWT) whose role is at least ``level``."""
    if level == PUBLIC:
        return {"security": [], "x-required-role": PUBLIC}
    scheme = "scrapeToken" if level == SCRAPE else "bearerAuth"
    return {"security": [{scheme: []}], "x-required-role": level}


#: the document's security schemes (strict mode; loose mode also accepts X-Tenant-Id)
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API token (dwt_...) or JWT",
        "description": (
            "Strict mode: an API token (`dataworkflows tokens create`) or a JWT; the "
            "tenant and role come from it. Each operation's `x-required-role` is the least "
            "role it needs (viewer < runner < editor < admin). Loose mode: the "
            "`X-Tenant-Id` / `X-Principal` headers, role admin. See docs/auth.md."
        ),
    },
    "scrapeToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "Strict mode: the value of DATAWORKFLOWS_SCRAPE_TOKEN (/metrics).",
    },
}


def _plugin_operation(method: str, path: str, handler: Any) -> dict[str, Any]:
    """A generic operation for a route a plugin added (its docstring is the summary)."""
    doc = inspect.getdoc(handler) or ""
    summary = doc.splitlines()[0] if doc else f"{method} {path} (provided by a plugin)"
    op: dict[str, Any] = {
        "operationId": "plugin_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_"),
        "summary": summary,
        "description": (doc + "\n\n" if doc else "") + "Served by a plugin (`register_routes`).",
        "tags": ["plugins"],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_names(path)
        ],
        "responses": {"default": {"description": "Defined by the plugin"}},
        **security_of(access_of(handler) or DEFAULT_ACCESS),
    }
    if method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return op


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    by_id: dict[str, dict[str, Any]] = {}
    models = []
    for route in served_routes(app):
        path = route.resource.canonical  # type: ignore[union-attr]
        declared = spec_of(route.handler)
        if declared is None:
            op = _plugin_operation(route.method, path, route.handler)
        else:
            op = operation(route.method, path, declared)
            models.extend(declared.models)
        paths.setdefault(path, {})[route.method.lower()] = op
        by_id[op["operationId"]] = op
    add_links(by_id)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DataWorkflows API",
            "version": __version__,
            "description": (
                "Workflow lifecycle, runs and their ledger. Errors are always "
                "`{code, message, details?}`. Lists are keyset-paginated: `limit` and the "
                "opaque `cursor` from `nextCursor`. See docs/api.md."
            ),
        },
        "tags": [
            {"name": "workflows", "description": "Definitions, versions, lifecycle, audit"},
            {"name": "executions", "description": "Runs, events, cancellation, dead letters"},
            {"name": "commands", "description": "Run an action or a workflow by command"},
            {"name": "triggers", "description": "What starts runs"},
            {"name": "credentials", "description": "Write-only secrets of a tenant"},
            {"name": "templates", "description": "Document template sets, preview"},
            {
                "name": "workflow templates",
                "description": "Parameterised definitions that instantiate Draft workflows",
            },
            {"name": "system", "description": "Health, plugins, this document"},
            {"name": "plugins", "description": "Routes added by installed plugins"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": model_schemas(models, sorted(app[kernel_key].plugins.actions)),
            "parameters": HEADERS,
            "securitySchemes": SECURITY_SCHEMES,
            "headers": {
                "CorrelationId": {
                    "description": "The request's correlation id (given or generated)",
                    "schema": {"type": "string"},
                }
            },
        },
    }


@openapi_routes.get("/api/v1/openapi.json")
@spec("openapi", role="public", tags=["system"], ok={200: ("The document", {"type": "object"})})
async def openapi_document(request: web.Request) -> web.Response:
    """This OpenAPI document."""
    return web.json_response(build_document(request.app))


@openapi_routes.get("/api/v1/docs")
@spec(
    "docs",
    role="public",
    tags=["system"],
    ok={200: ("An HTML page", {"type": "string"})},
    media_type="text/html",
)
async def docs_page(request: web.Request) -> web.Response:
    """Human-readable API reference (HTML)."""
    return web.Response(text=render_html(build_document(request.app)), content_type="text/html")
