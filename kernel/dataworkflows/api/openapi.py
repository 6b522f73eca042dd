"""The OpenAPI 3.1 document of the HTTP API (``/api/v1/openapi.json``) and a human page
rendered from it (``/api/v1/docs``, plain server-side HTML, no scripts).

The document is built per request from the application's real router: every route it
serves appears, with the hand-written operation of :data:`OPERATIONS` for the kernel's own
routes and a generic operation for routes a plugin added (``register_routes``). The
workflow definition schema is generated from the pydantic models that validate it.
``tests/test_openapi.py`` fails when a kernel route has no entry in :data:`OPERATIONS` or an
entry has no route, so the document cannot drift from the code.
"""

from __future__ import annotations

import html
import inspect
import json
import re
from typing import Any

from aiohttp import web

from dataworkflows import __version__
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.openapi_operations import (
    OPERATIONS,
)
from dataworkflows.api.openapi_parts import (
    _STR,
    _parameters,
    _path,
    _schemas,
)

openapi_routes = web.RouteTableDef()


def route_keys(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, canonical path) of every route the app serves (HEAD twins left out)."""
    keys = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        keys.add((route.method, route.resource.canonical))
    return keys


def _plugin_operation(method: str, path: str, handler: Any) -> dict[str, Any]:
    """A generic operation for a route a plugin added (its docstring is the summary)."""
    doc = inspect.getdoc(handler) or ""
    summary = doc.splitlines()[0] if doc else f"{method} {path} (provided by a plugin)"
    names = re.findall(r"{([^}:]+)}", path)
    op: dict[str, Any] = {
        "operationId": "plugin_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_"),
        "summary": summary,
        "description": (doc + "\n\n" if doc else "") + "Served by a plugin (`register_routes`).",
        "tags": ["plugins"],
        "parameters": [_path(name, _STR) for name in names],
        "responses": {"default": {"description": "Defined by the plugin"}},
    }
    if method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return op


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        path = route.resource.canonical
        key = (route.method, path)
        op = OPERATIONS.get(key) or _plugin_operation(route.method, path, route.handler)
        paths.setdefault(path, {})[route.method.lower()] = op
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
            {"name": "triggers", "description": "What starts runs"},
            {"name": "credentials", "description": "Write-only secrets of a tenant"},
            {"name": "system", "description": "Health, plugins, this document"},
            {"name": "plugins", "description": "Routes added by installed plugins"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(sorted(app[kernel_key].plugins.actions)),
            "parameters": _parameters(),
            "headers": {
                "CorrelationId": {
                    "description": "The request's correlation id (given or generated)",
                    "schema": {"type": "string"},
                }
            },
        },
    }


@openapi_routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.json_response(build_document(request.app))


@openapi_routes.get("/api/v1/docs")
async def docs_page(request: web.Request) -> web.Response:
    """The API reference as one HTML page (rendered from the OpenAPI document)."""
    return web.Response(text=render_html(build_document(request.app)), content_type="text/html")


# -- the HTML page ------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.op{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.method{font-weight:bold;display:inline-block;min-width:4.5em}
code,pre{background:#f6f6f6;border-radius:4px}pre{padding:.6em;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
"""


def _resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if not ref:
        return item
    node: Any = document
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return dict(node)


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else schema.get("type", "")


def render_html(document: dict[str, Any]) -> str:
    """A self-contained HTML reference of ``document`` (no scripts, no external assets)."""
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(document['info']['title'])} <small>{e(document['info']['version'])}</small></h1>",
        f"<p>{e(document['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a></p>",
    ]
    schemas = document["components"]["schemas"]
    for tag in document["tags"]:
        ops = [
            (path, method, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if op["tags"][0] == tag["name"]
        ]
        if not ops:
            continue
        out.append(f"<h2 id='{e(tag['name'])}'>{e(tag['name'])}</h2>")
        out.append(f"<p>{e(tag['description'])}</p>")
        for path, method, op in ops:
            out.append(f"<div class='op' id='{e(op['operationId'])}'>")
            out.append(
                f"<p><span class='method'>{e(method.upper())}</span> <code>{e(path)}</code>"
                f" — {e(op['summary'])}</p>"
            )
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            params = [_resolve(document, p) for p in op.get("parameters", [])]
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
                for p in params:
                    out.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                        f"<td>{e(p.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                schema = next(iter(body["content"].values()))["schema"]
                name = _schema_name(schema)
                out.append(f"<p>Body: <code>{e(name)}</code></p>")
                example = schemas.get(name, {}).get("example")
                if example is not None:
                    out.append(f"<pre>{e(json.dumps(example, indent=2))}</pre>")
            out.append("<p>Responses: ")
            out.append(
                ", ".join(
                    f"<code>{e(status)}</code> {e(resp.get('description', ''))}"
                    for status, resp in op["responses"].items()
                )
            )
            out.append("</p></div>")
    out.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        out.append(f"<h3 id='schema-{e(name)}'>{e(name)}</h3>")
        shown = {k: v for k, v in schema.items() if k != "example"}
        out.append(f"<pre>{e(json.dumps(shown, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
