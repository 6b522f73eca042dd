"""Templates (docs/templates.md): document template sets under ``/api/v1/templates`` and
workflow templates under ``/api/v1/workflow-templates``, scoped to the ``X-Tenant-Id``
tenant like every kernel route.

| method | path | |
|---|---|---|
| POST | ``/templates`` | create a template set (version 1) → 201 |
| GET | ``/templates`` | list sets |
| GET | ``/templates/{id}`` | a set (``?version=``, default the latest) |
| POST | ``/templates/{id}/versions`` | add version n+1 → 201 |
| POST | ``/templates/{id}/render`` | preview a template with data (default sample data) |
| DELETE | ``/templates/{id}`` | delete a set → 204 |
| POST | ``/workflow-templates`` | create → 201 |
| GET | ``/workflow-templates[/{id}]`` | list / one |
| PUT | ``/workflow-templates/{id}`` | replace |
| DELETE | ``/workflow-templates/{id}`` | delete → 204 |
| POST | ``/workflow-templates/{id}/instantiate`` | ``{config}`` → a Draft workflow, 201 |
"""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.api.models import Workflow
from dataworkflows.api.request_models import PageQuery
from dataworkflows.api.route_spec import spec
from dataworkflows.api.template_models import (
    RenderedDocumentView,
    TemplateSet,
    TemplateSetPage,
    TemplateSetQuery,
    WorkflowTemplate,
    WorkflowTemplatePage,
)
from dataworkflows.common.pagination import MAX_INT, parse_int
from dataworkflows.service.template_bodies import (
    InstantiateRequest,
    RenderRequest,
    TemplateSetRequest,
    TemplateSetVersionRequest,
    WorkflowTemplateRequest,
)

template_routes = web.RouteTableDef()

SETS = "/api/v1/templates"
ONE_SET = SETS + "/{template_set_id}"
WFT = "/api/v1/workflow-templates"
ONE_WFT = WFT + "/{workflow_template_id}"
DOC_TAGS = ["templates"]
WFT_TAGS = ["workflow templates"]


# -- document template sets ----------------------------------------------------------------


@template_routes.post(SETS)
@spec(
    "createTemplateSet",
    role="editor",
    tags=DOC_TAGS,
    body=TemplateSetRequest,
    ok={201: ("Created", TemplateSet)},
    errors=(400, 409, 413, 422),
)
async def create_template_set(request: web.Request) -> web.Response:
    """Create a document template set (version 1).

    Every template is checked: syntax errors, dunder reads such as `''.__class__`
    (`unsafe_template`) and loops that must overrun the budget are all reported at once
    (422 `invalid_template_set`, `details.problems`). An id in use in the tenant is a 409
    `template_set_exists`.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.documents.create(body, tenant_id=tenant(request), actor=principal(request))
    return web.json_response(view, status=201, headers={"Location": f"{SETS}/{view['id']}"})


@template_routes.get(SETS)
@spec(
    "listTemplateSets",
    role="viewer",
    tags=DOC_TAGS,
    query=PageQuery,
    ok={200: ("A page of template sets", TemplateSetPage)},
    errors=(422,),
)
async def list_template_sets(request: web.Request) -> web.Response:
    """List document template sets (ordered by id)."""
    kernel = request.app[kernel_key]
    result = await kernel.documents.list(
        tenant_id=tenant(request), page_request=args.page_query(request, "templates")
    )
    return web.json_response(result)


@template_routes.get(ONE_SET)
@spec(
    "getTemplateSet",
    role="viewer",
    tags=DOC_TAGS,
    query=TemplateSetQuery,
    ok={200: ("The template set", TemplateSet)},
    errors=(404, 422),
)
async def get_template_set(request: web.Request) -> web.Response:
    """A template set with the templates of its latest version (or `?version=`)."""
    kernel = request.app[kernel_key]
    version = parse_int(request.query, "version", 1, MAX_INT)
    view = await kernel.documents.get(
        request.match_info["template_set_id"], tenant_id=tenant(request), version=version
    )
    return web.json_response(view)


@template_routes.post(ONE_SET + "/versions")
@spec(
    "addTemplateSetVersion",
    role="editor",
    tags=DOC_TAGS,
    body=TemplateSetVersionRequest,
    ok={201: ("Created", TemplateSet)},
    errors=(400, 404, 409, 413, 422),
)
async def add_template_set_version(request: web.Request) -> web.Response:
    """Add version n+1 of a template set (the whole set: every template and sample data).

    A version identical to the latest is a 409 `duplicate_version`.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.documents.add_version(
        request.match_info["template_set_id"],
        body,
        tenant_id=tenant(request),
        actor=principal(request),
    )
    location = f"{SETS}/{view['id']}?version={view['version']}"
    return web.json_response(view, status=201, headers={"Location": location})


@template_routes.post(ONE_SET + "/render")
@spec(
    "renderTemplate",
    role="viewer",
    tags=DOC_TAGS,
    body=RenderRequest,
    ok={200: ("The rendered document", RenderedDocumentView)},
    errors=(400, 404, 413, 422),
)
async def render_template(request: web.Request) -> web.Response:
    """Preview: render one template of a set with `data` (default: the sample data).

    The `core.template.render` action renders through the same code: the same data gives
    the same bytes. Errors (422): `template_undefined` (the data lacks a variable),
    `template_refused` (the sandbox refused an operation), `template_budget_exceeded`,
    `document_too_large`, `template_error`; 404 `template_set_not_found`,
    `template_not_found`, `version_not_found`.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    result = await kernel.documents.preview(
        request.match_info["template_set_id"], body, tenant_id=tenant(request)
    )
    return web.json_response(result)


@template_routes.delete(ONE_SET)
@spec("deleteTemplateSet", role="editor", tags=DOC_TAGS, ok={204: ("Deleted", None)}, errors=(404,))
async def delete_template_set(request: web.Request) -> web.Response:
    """Delete a template set with every version."""
    kernel = request.app[kernel_key]
    await kernel.documents.delete(request.match_info["template_set_id"], tenant_id=tenant(request))
    return web.Response(status=204)


# -- workflow templates ----------------------------------------------------------------------


@template_routes.post(WFT)
@spec(
    "createWorkflowTemplate",
    role="editor",
    tags=WFT_TAGS,
    body=WorkflowTemplateRequest,
    ok={201: ("Created", WorkflowTemplate)},
    errors=(400, 409, 413, 422),
)
async def create_workflow_template(request: web.Request) -> web.Response:
    """Create a workflow template: a definition with placeholders plus its config's JSON Schema.

    A schema that is not valid JSON Schema 2020-12 or a malformed placeholder is a 422
    `invalid_workflow_template` listing every problem; an id in use is a 409
    `workflow_template_exists`.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.workflow_templates.create(
        body, tenant_id=tenant(request), actor=principal(request)
    )
    return web.json_response(view, status=201, headers={"Location": f"{WFT}/{view['id']}"})


@template_routes.get(WFT)
@spec(
    "listWorkflowTemplates",
    role="viewer",
    tags=WFT_TAGS,
    query=PageQuery,
    ok={200: ("A page of workflow templates", WorkflowTemplatePage)},
    errors=(422,),
)
async def list_workflow_templates(request: web.Request) -> web.Response:
    """List workflow templates (ordered by id)."""
    kernel = request.app[kernel_key]
    result = await kernel.workflow_templates.list(
        tenant_id=tenant(request), page_request=args.page_query(request, "workflowTemplates")
    )
    return web.json_response(result)


@template_routes.get(ONE_WFT)
@spec(
    "getWorkflowTemplate",
    role="viewer",
    tags=WFT_TAGS,
    ok={200: ("The workflow template", WorkflowTemplate)},
    errors=(404,),
)
async def get_workflow_template(request: web.Request) -> web.Response:
    """One workflow template."""
    kernel = request.app[kernel_key]
    view = await kernel.workflow_templates.get(
        request.match_info["workflow_template_id"], tenant_id=tenant(request)
    )
    return web.json_response(view)


@template_routes.put(ONE_WFT)
@spec(
    "replaceWorkflowTemplate",
    role="editor",
    tags=WFT_TAGS,
    body=WorkflowTemplateRequest,
    ok={200: ("The workflow template", WorkflowTemplate)},
    errors=(400, 404, 413, 422),
)
async def replace_workflow_template(request: web.Request) -> web.Response:
    """Replace a workflow template (workflows made from it keep their definitions)."""
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.workflow_templates.replace(
        request.match_info["workflow_template_id"], body, tenant_id=tenant(request)
    )
    return web.json_response(view)


@template_routes.delete(ONE_WFT)
@spec(
    "deleteWorkflowTemplate",
    role="editor",
    tags=WFT_TAGS,
    ok={204: ("Deleted", None)},
    errors=(404,),
)
async def delete_workflow_template(request: web.Request) -> web.Response:
    """Delete a workflow template (workflows made from it stay)."""
    kernel = request.app[kernel_key]
    await kernel.workflow_templates.delete(
        request.match_info["workflow_template_id"], tenant_id=tenant(request)
    )
    return web.Response(status=204)


@template_routes.post(ONE_WFT + "/instantiate")
@spec(
    "instantiateWorkflowTemplate",
    role="editor",
    tags=WFT_TAGS,
    body=InstantiateRequest,
    ok={201: ("The new Draft workflow", Workflow)},
    errors=(400, 404, 409, 413, 422),
    audited=True,
)
async def instantiate_workflow_template(request: web.Request) -> web.Response:
    """Create a Draft workflow (version 1, with an audit row) from a template and `config`.

    The config is checked against the template's JSON Schema: 422 `invalid_config` lists
    every problem. The filled definition is validated like `POST /api/v1/workflows`
    (422 `invalid_definition`); a `workflowId` in use is a 409 `workflow_exists`.
    Nothing is written on an error.
    """
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    view = await kernel.workflow_templates.instantiate(
        request.match_info["workflow_template_id"],
        body,
        tenant_id=tenant(request),
        actor=principal(request),
        note=args.note(request),
    )
    return web.json_response(
        view, status=201, headers={"Location": f"/api/v1/workflows/{view['id']}"}
    )
