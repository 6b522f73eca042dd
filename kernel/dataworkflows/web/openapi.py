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
from dataworkflows.db.lifecycle_models import AUDIT_ACTIONS
from dataworkflows.db.models import RUN_STATUSES, STEP_STATUSES, WORKFLOW_STATUSES
from dataworkflows.definitions import ID_PATTERN, WorkflowDefinition
from dataworkflows.pagination import DEFAULT_LIMIT, MAX_LIMIT
from dataworkflows.web.keys import kernel_key

openapi_routes = web.RouteTableDef()

JSON_TYPE = "application/json"
_SCHEMA_PREFIX = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _SCHEMA_PREFIX + name}


def _param_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_TS = {"type": "string", "format": "date-time"}
_OBJ = {"type": "object"}
_ANY_OBJ = {"type": "object", "additionalProperties": True}


def _object(
    properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _page_of(item: str) -> dict[str, Any]:
    return _object(
        {"items": {"type": "array", "items": _ref(item)}, "nextCursor": _nullable(_STR)},
    )


EXAMPLE_DEFINITION = {
    "id": "simple-echo",
    "displayName": "Simple Echo Workflow",
    "startNode": "echo1",
    "nodes": [
        {"id": "echo1", "actionType": "core.echo", "parameters": {"message": "Hello"}},
        {"id": "echo2", "actionType": "core.echo", "parameters": {"message": "World"}},
    ],
}
EXAMPLE_WORKFLOW = {
    "id": "simple-echo",
    "displayName": "Simple Echo Workflow",
    "description": None,
    "status": "Active",
    "currentVersion": 2,
    "latestVersion": 2,
    "createdAt": "2026-11-29T12:00:00Z",
    "updatedAt": "2026-11-29T12:05:00Z",
}
EXAMPLE_EXECUTION_ID = "0b6f1c2e-8f7a-4e57-9d0c-2f4b2d7e9a10"


def _schemas(action_types: list[str]) -> dict[str, Any]:
    generated = WorkflowDefinition.model_json_schema(
        by_alias=True, ref_template=_SCHEMA_PREFIX + "{model}"
    )
    definitions = generated.pop("$defs", {})
    if action_types:  # what this server accepts: the installed plugins' action types
        definitions["Node"]["properties"]["actionType"]["enum"] = action_types
    generated["example"] = EXAMPLE_DEFINITION
    workflow_props = {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "displayName": _STR,
        "description": _nullable(_STR),
        "status": {"type": "string", "enum": list(WORKFLOW_STATUSES)},
        "currentVersion": _nullable(_INT),
        "latestVersion": _INT,
        "createdAt": _TS,
        "updatedAt": _TS,
        "definition": _ref("WorkflowDefinition"),
    }
    trigger_fields = {
        "type": _STR,
        "name": _nullable(_STR),
        "config": _ANY_OBJ,
        "enabled": {"type": "boolean"},
        "activationCondition": _nullable(_STR),
    }
    version_props = {
        "workflowId": _STR,
        "version": _INT,
        "checksum": _STR,
        "createdAt": _TS,
        "createdBy": _nullable(_STR),
        "current": {"type": "boolean"},
        "latest": {"type": "boolean"},
    }
    execution_props = {
        "id": {"type": "string", "format": "uuid"},
        "workflowId": _STR,
        "workflowVersion": _INT,
        "requestId": _STR,
        "status": {"type": "string", "enum": list(RUN_STATUSES)},
        "error": _nullable(_ANY_OBJ),
        "principal": _nullable(_STR),
        "correlationId": _nullable(_STR),
        "createdAt": _TS,
        "startedAt": _nullable(_TS),
        "endedAt": _nullable(_TS),
        # a run of an unpublished version (dataworkflows run without --publish)
        "testRun": {"type": "boolean"},
    }
    return {
        **definitions,
        "WorkflowDefinition": generated,
        "Error": {
            **_object(
                {"code": _STR, "message": _STR, "details": {}},
                ["code", "message"],
            ),
            "example": {
                "code": "workflow_not_found",
                "message": "no workflow 'nope'",
            },
        },
        "Health": _object(
            {"status": {"const": "ok"}, "version": _STR, "database": _STR}, closed=False
        ),
        "PluginList": _object({"plugins": {"type": "array", "items": _ANY_OBJ}}, closed=False),
        "Workflow": {
            **_object(workflow_props, [k for k in workflow_props if k != "definition"]),
            "example": EXAMPLE_WORKFLOW,
        },
        "WorkflowPage": _page_of("Workflow"),
        "WorkflowPatch": {
            **_object(
                {
                    "displayName": {"type": "string", "minLength": 1, "maxLength": 1000},
                    "description": _nullable({"type": "string", "maxLength": 10000}),
                    "note": _nullable({"type": "string", "maxLength": 1000}),
                },
                [],
            ),
            "example": {"displayName": "Nightly report", "note": "renamed for the ops team"},
        },
        "LifecycleRequest": {
            **_object(
                {
                    "version": {"type": "integer", "minimum": 1},
                    "note": _nullable({"type": "string", "maxLength": 1000}),
                },
                [],
            ),
            "example": {"version": 2, "note": "ship the retry fix"},
        },
        "ArchiveRequest": _object({"note": _nullable({"type": "string", "maxLength": 1000})}, []),
        "VersionCreated": _object({"workflowId": _STR, "version": _INT}),
        "Version": _object(version_props),
        "VersionDetail": _object({**version_props, "definition": _ref("WorkflowDefinition")}),
        "VersionPage": _page_of("Version"),
        "AuditEntry": {
            **_object(
                {
                    "id": _INT,
                    "workflowId": _STR,
                    "version": _nullable(_INT),
                    "action": {"type": "string", "enum": list(AUDIT_ACTIONS)},
                    "actor": _nullable(_STR),
                    "note": _nullable(_STR),
                    "diff": _nullable(_ANY_OBJ),
                    "correlationId": _nullable(_STR),
                    "createdAt": _TS,
                }
            ),
            "example": {
                "id": 7,
                "workflowId": "simple-echo",
                "version": 1,
                "action": "ROLLBACK",
                "actor": "alice",
                "note": "v2 breaks the report",
                "diff": {"fromVersion": 2, "toVersion": 1},
                "correlationId": "4bf92f3577b34da6",
                "createdAt": "2026-11-29T12:10:00Z",
            },
        },
        "AuditPage": _page_of("AuditEntry"),
        "ExecuteRequest": {
            **_object(
                {
                    "trigger": _ANY_OBJ,
                    "requestId": {"type": "string", "minLength": 1, "maxLength": 200},
                },
                [],
            ),
            "example": {"trigger": {"source": "manual", "userId": "u-123"}, "requestId": "r-1"},
        },
        "RunAccepted": {
            **_object(
                {
                    "executionId": {"type": "string", "format": "uuid"},
                    "status": {"type": "string", "enum": list(RUN_STATUSES)},
                    "statusUrl": _STR,
                }
            ),
            "example": {
                "executionId": EXAMPLE_EXECUTION_ID,
                "status": "Pending",
                "statusUrl": f"/api/v1/executions/{EXAMPLE_EXECUTION_ID}",
            },
        },
        "ActionAttempt": _object(
            {
                "id": {"type": "string", "format": "uuid"},
                "nodeId": _STR,
                "actionType": _STR,
                "attempt": _INT,
                "status": {"type": "string", "enum": list(STEP_STATUSES)},
                "parameters": _nullable(_ANY_OBJ),
                "outputs": _nullable(_ANY_OBJ),
                "error": _nullable(_ANY_OBJ),
                "startedAt": _nullable(_TS),
                "endedAt": _nullable(_TS),
            }
        ),
        "Execution": _object(
            {
                **execution_props,
                "trigger": _ANY_OBJ,
                "actions": {"type": "array", "items": _ref("ActionAttempt")},
            }
        ),
        "ExecutionSummary": _object({**execution_props, "statusUrl": _STR}),
        "ExecutionPage": _page_of("ExecutionSummary"),
        "Event": _object(
            {
                "sequence": _INT,
                "type": _STR,
                "nodeId": _nullable(_STR),
                "payload": _ANY_OBJ,
                "createdAt": _TS,
            }
        ),
        "EventPage": _page_of("Event"),
        "CancelResult": _object(
            {
                "executionId": {"type": "string", "format": "uuid"},
                "status": {"type": "string", "enum": ["Cancelled", "Running"]},
                "cancelRequested": {"type": "boolean"},
                "statusUrl": _STR,
            }
        ),
        "DeadLetter": _object(
            {
                "id": {"type": "string", "format": "uuid"},
                "executionId": {"type": "string", "format": "uuid"},
                "workflowId": _STR,
                "reason": _STR,
                "details": _nullable(_ANY_OBJ),
                "createdAt": _TS,
                "requeuedAt": _nullable(_TS),
                "requeuedExecutionId": _nullable({"type": "string", "format": "uuid"}),
            }
        ),
        "DeadLetterPage": _page_of("DeadLetter"),
        # -- triggers (web/trigger_routes.py; docs/triggers.md) ------------------------
        "TriggerRequest": {
            **_object(trigger_fields, ["type"]),
            "example": {
                "type": "webhook",
                "name": "Ticket events",
                "config": {"deliveryIdHeader": "X-Delivery-Id"},
                "activationCondition": "trigger.body.action != 'ping'",
            },
        },
        "TriggerPatch": {
            **_object(trigger_fields, []),
            "example": {"enabled": False, "config": {"deliveryIdHeader": None}},
        },
        "TriggerReplace": _object(trigger_fields, ["config"]),
        "Trigger": _object(
            {
                "id": _STR,
                "workflowId": _STR,
                "type": _STR,
                "enabled": {"type": "boolean"},
                "status": _STR,
            },
            closed=False,
        ),
        "TriggerList": _page_of("Trigger"),
        # -- credentials and resource links (web/connector_routes.py) -------------------
        "CredentialRequest": {
            **_object(
                {
                    "name": _STR,
                    "secret": _STR,
                    "description": _nullable(_STR),
                    "allowedHosts": {"type": "array", "items": _STR},
                },
                ["name", "secret"],
            ),
            "example": {
                "name": "chat-bot",
                "secret": "xoxb-...",
                "allowedHosts": ["api.example.com"],
            },
        },
        "CredentialUpdate": _object(
            {
                "name": _STR,
                "secret": _STR,
                "description": _nullable(_STR),
                "allowedHosts": {"type": "array", "items": _STR},
            },
            ["secret"],
        ),
        "Credential": _object(
            {
                "name": _STR,
                "tenantId": _STR,
                "description": _nullable(_STR),
                "allowedHosts": {"type": "array", "items": _STR},
                "keyId": _nullable(_STR),
                "createdAt": _TS,
                "updatedAt": _TS,
                "createdBy": _nullable(_STR),
                "updatedBy": _nullable(_STR),
            },
            ["name", "tenantId"],
            closed=False,
        ),
        "CredentialList": _page_of("Credential"),
        "ResourceLink": _object(
            {
                "system": _STR,
                "type": _STR,
                "externalId": _STR,
                "url": _nullable(_STR),
                "key": _nullable(_STR),
                "workflowId": _STR,
                "executionId": _nullable(_STR),
                "nodeId": _STR,
                "createdAt": _nullable(_TS),
            },
            ["system", "type", "externalId"],
            closed=False,
        ),
        "ResourceLinkList": _object({"items": {"type": "array", "items": _ref("ResourceLink")}}),
    }


_VISIBLE_ASCII = r"^[!-~]{1,200}$"


def _parameters() -> dict[str, Any]:
    def header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": schema,
        }

    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": schema,
        }

    return {
        "TenantId": header(
            "X-Tenant-Id",
            "The tenant (loose mode: trusted as sent). Everything is scoped to it; another "
            "tenant's objects are 404. Default `default`.",
            {"type": "string", "pattern": _VISIBLE_ASCII},
        ),
        "Principal": header(
            "X-Principal",
            "Who acts: stored with runs and audit rows.",
            {"type": "string", "pattern": r"^[ -~]{0,200}$"},
        ),
        "CorrelationId": header(
            "Correlation-Id",
            "Echoed on the response, stored with runs and audit rows, present in every log "
            "line of the request and the run. Generated when absent or malformed.",
            {"type": "string", "pattern": _VISIBLE_ASCII},
        ),
        "IdempotencyKey": header(
            "Idempotency-Key",
            "Replays the first successful response for 24 h instead of doing the work again; "
            "the same key with a different request is a 422.",
            {"type": "string", "pattern": r"^[!-~]{1,255}$"},
        ),
        "AuditNote": header(
            "X-Audit-Note",
            "A note stored with the audit row of the change (a body `note` wins).",
            {"type": "string", "pattern": r"^[ -~]{0,1000}$"},
        ),
        "Limit": query(
            "limit",
            f"Page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        ),
        "Cursor": query(
            "cursor",
            "The `nextCursor` of the previous page (opaque).",
            {"type": "string"},
        ),
    }


_COMMON = [_param_ref("TenantId"), _param_ref("Principal"), _param_ref("CorrelationId")]
_PAGE = [_param_ref("Limit"), _param_ref("Cursor")]


def _path(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        **({"description": description} if description else {}),
    }


_WORKFLOW_ID = _path("workflow_id", {"type": "string", "pattern": ID_PATTERN}, "Workflow id")
_EXECUTION_ID = _path("execution_id", {"type": "string", "format": "uuid"}, "Execution id")


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_ERROR_TEXT = {
    400: "Malformed request (bad JSON, empty body, invalid header)",
    404: "Not found (or another tenant's)",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Body over the configured limit",
    422: "Invalid input; details say where",
}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Correlation-Id": {"$ref": "#/components/headers/CorrelationId"}},
        "content": {JSON_TYPE: {"schema": schema}},
    }


def _operation(
    operation_id: str,
    summary: str,
    *,
    tags: list[str],
    ok: dict[int, tuple[str, str | None]],
    description: str = "",
    params: list[dict[str, Any]] | None = None,
    body: tuple[str, bool] | None = None,
    errors: tuple[int, ...] = (),
    audited: bool = False,
) -> dict[str, Any]:
    """One operation. ``ok``: status → (description, schema name or None for no body);
    ``body``: (schema name, required)."""
    parameters = [*_COMMON, *(params or [])]
    responses: dict[str, Any] = {}
    for status, (text, schema) in ok.items():
        if schema is None:
            responses[str(status)] = {
                "description": text,
                "headers": {"Correlation-Id": {"$ref": "#/components/headers/CorrelationId"}},
            }
        else:
            responses[str(status)] = _json_response(text, _ref(schema))
    for status in errors:
        responses[str(status)] = _json_response(_ERROR_TEXT[status], _ref("Error"))
    responses["default"] = _json_response("Any other error", _ref("Error"))
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": tags,
        "parameters": parameters,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if audited:
        op["parameters"].append(_param_ref("AuditNote"))
    if body is not None:
        name, required = body
        op["requestBody"] = {
            "required": required,
            "content": {JSON_TYPE: {"schema": _ref(name)}},
        }
    return op


def _post(op: dict[str, Any]) -> dict[str, Any]:
    """A creating/changing POST or PATCH: takes an Idempotency-Key."""
    op["parameters"].append(_param_ref("IdempotencyKey"))
    return op


W = "/api/v1/workflows/{workflow_id}"
T = W + "/triggers"
_WF = ["workflows"]
_RUNS = ["executions"]

#: Every kernel route: (METHOD, path as aiohttp's canonical form) → OpenAPI operation.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): _operation(
        "health", "Liveness and database check", tags=["system"], ok={200: ("OK", "Health")}
    ),
    ("GET", "/api/v1/plugins"): _operation(
        "listPlugins",
        "Installed plugins, their actions and trigger types",
        tags=["system"],
        params=[
            _query(
                "all",
                {"type": "string", "enum": ["true", "false"]},
                "Also list the kernel's default plugins",
            )
        ],
        ok={200: ("Plugins", "PluginList")},
        errors=(422,),
    ),
    ("GET", "/api/v1/openapi.json"): _operation(
        "openapi", "This OpenAPI document", tags=["system"], ok={200: ("The document", None)}
    ),
    ("GET", "/api/v1/docs"): _operation(
        "docs",
        "Human-readable API reference (HTML)",
        tags=["system"],
        ok={200: ("An HTML page", None)},
    ),
    ("POST", "/api/v1/workflows"): _post(
        _operation(
            "createWorkflow",
            "Create a workflow (version 1, Draft; Active with autoActivate=true)",
            description="The body is the workflow definition. Unknown fields, unknown action "
            "types, bad parameters, bad edges, cycles and bad templates are all reported at once "
            "(422 `invalid_definition`, `details.problems`). Workflow ids are global: an id in "
            "use anywhere is a 409 `workflow_exists`.",
            tags=_WF,
            params=[
                _query(
                    "autoActivate",
                    {"type": "string", "enum": ["true", "false"]},
                    "Publish version 1 at once",
                )
            ],
            body=("WorkflowDefinition", True),
            ok={201: ("Created", "Workflow")},
            errors=(400, 409, 413, 422),
            audited=True,
        )
    ),
    ("GET", "/api/v1/workflows"): _operation(
        "listWorkflows",
        "List workflows (ordered by id)",
        tags=_WF,
        params=[
            *_PAGE,
            _query("status", {"type": "string", "enum": list(WORKFLOW_STATUSES)}, "Filter"),
            _query(
                "q",
                {"type": "string", "maxLength": 200},
                "Case-insensitive text in the id or display name",
            ),
        ],
        ok={200: ("A page of workflows", "WorkflowPage")},
        errors=(422,),
    ),
    ("GET", W): _operation(
        "getWorkflow",
        "A workflow with its current (else latest) definition",
        tags=_WF,
        params=[_WORKFLOW_ID],
        ok={200: ("The workflow", "Workflow")},
        errors=(404,),
    ),
    ("PATCH", W): _post(
        _operation(
            "updateWorkflow",
            "Change metadata (displayName, description) — an UPDATE audit row",
            tags=_WF,
            params=[_WORKFLOW_ID],
            body=("WorkflowPatch", True),
            ok={200: ("The workflow", "Workflow")},
            errors=(400, 404, 409, 422),
            audited=True,
        )
    ),
    ("GET", W + "/versions"): _operation(
        "listVersions",
        "List versions, oldest first",
        tags=_WF,
        params=[_WORKFLOW_ID, *_PAGE],
        ok={200: ("A page of versions", "VersionPage")},
        errors=(404, 422),
    ),
    ("POST", W + "/versions"): _post(
        _operation(
            "addVersion",
            "Add version n+1 (Draft and Active workflows)",
            description="A definition identical to an existing version (same checksum) is a 409 "
            "`duplicate_version` whose details name that version.",
            tags=_WF,
            params=[_WORKFLOW_ID],
            body=("WorkflowDefinition", True),
            ok={201: ("Created", "VersionCreated")},
            errors=(400, 404, 409, 413, 422),
            audited=True,
        )
    ),
    ("GET", W + "/versions/{version}"): _operation(
        "getVersion",
        "One version with its definition",
        tags=_WF,
        params=[_WORKFLOW_ID, _path("version", {"type": "integer", "minimum": 1})],
        ok={200: ("The version", "VersionDetail")},
        errors=(404,),
    ),
    ("POST", W + "/publish"): _post(
        _operation(
            "publishWorkflow",
            "Publish the latest (or a given) version: Draft/Active → Active",
            description="Runs in flight keep the version they started with. Archived → 409 "
            "`invalid_state` (details.status).",
            tags=_WF,
            params=[_WORKFLOW_ID],
            body=("LifecycleRequest", False),
            ok={200: ("The workflow", "Workflow")},
            errors=(400, 404, 409, 422),
            audited=True,
        )
    ),
    ("POST", W + "/rollback"): _post(
        _operation(
            "rollbackWorkflow",
            "Publish an earlier version (default: the one published before the current one)",
            description="Only Active workflows roll back; the version must be lower than the "
            "current one.",
            tags=_WF,
            params=[_WORKFLOW_ID],
            body=("LifecycleRequest", False),
            ok={200: ("The workflow", "Workflow")},
            errors=(400, 404, 409, 422),
            audited=True,
        )
    ),
    ("POST", W + "/archive"): _post(
        _operation(
            "archiveWorkflow",
            "Archive: Draft/Active → Archived (no new runs; runs in flight go on)",
            tags=_WF,
            params=[_WORKFLOW_ID],
            body=("ArchiveRequest", False),
            ok={200: ("The workflow", "Workflow")},
            errors=(400, 404, 409, 422),
            audited=True,
        )
    ),
    ("GET", W + "/audit"): _operation(
        "workflowAudit",
        "The workflow's audit trail, newest first",
        tags=_WF,
        params=[_WORKFLOW_ID, *_PAGE],
        ok={200: ("A page of audit rows", "AuditPage")},
        errors=(404, 422),
    ),
    ("POST", W + "/execute"): _post(
        _operation(
            "executeWorkflow",
            "Start a run of the published version",
            description="The run pins the version current now. The same `requestId` returns the "
            "first run. Draft or Archived → 409 `workflow_not_active`.",
            tags=_WF + _RUNS,
            params=[_WORKFLOW_ID],
            body=("ExecuteRequest", False),
            ok={202: ("Queued (or the earlier run of the same requestId)", "RunAccepted")},
            errors=(400, 404, 409, 413, 422),
        )
    ),
    ("GET", W + "/executions"): _operation(
        "listWorkflowExecutions",
        "The workflow's runs, newest first",
        tags=_WF + _RUNS,
        params=[
            _WORKFLOW_ID,
            *_PAGE,
            _query("status", {"type": "string", "enum": list(RUN_STATUSES)}, "Filter"),
            _query("from", {"type": "string", "format": "date-time"}, "Created at or after"),
            _query("to", {"type": "string", "format": "date-time"}, "Created before"),
        ],
        ok={200: ("A page of runs", "ExecutionPage")},
        errors=(404, 422),
    ),
    ("GET", "/api/v1/executions"): _operation(
        "listExecutions",
        "The tenant's runs, newest first",
        tags=_RUNS,
        params=[
            *_PAGE,
            _query("workflowId", {"type": "string", "pattern": ID_PATTERN}, "Filter"),
            _query("status", {"type": "string", "enum": list(RUN_STATUSES)}, "Filter"),
            _query("from", {"type": "string", "format": "date-time"}, "Created at or after"),
            _query("to", {"type": "string", "format": "date-time"}, "Created before"),
        ],
        ok={200: ("A page of runs", "ExecutionPage")},
        errors=(422,),
    ),
    ("GET", "/api/v1/executions/{execution_id}"): _operation(
        "getExecution",
        "A run with every attempt of every node",
        tags=_RUNS,
        params=[_EXECUTION_ID],
        ok={200: ("The run", "Execution")},
        errors=(404,),
    ),
    ("GET", "/api/v1/executions/{execution_id}/events"): _operation(
        "executionEvents",
        "The run's events in order",
        tags=_RUNS,
        params=[
            _EXECUTION_ID,
            _query(
                "after",
                {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                "Only events after this sequence number",
            ),
            *_PAGE,
        ],
        ok={200: ("A page of events", "EventPage")},
        errors=(404, 422),
    ),
    ("POST", "/api/v1/executions/{execution_id}/cancel"): _post(
        _operation(
            "cancelExecution",
            "Cancel a run (Pending: at once → 200; Running: requested → 202)",
            tags=_RUNS,
            params=[_EXECUTION_ID],
            ok={200: ("Cancelled", "CancelResult"), 202: ("Cancel requested", "CancelResult")},
            errors=(404, 409),
        )
    ),
    ("GET", "/api/v1/executions/{execution_id}/resources"): _operation(
        "executionResources",
        "External resources the run's steps created (resource links)",
        tags=_RUNS,
        params=[_EXECUTION_ID],
        ok={200: ("The links", "ResourceLinkList")},
        errors=(404,),
    ),
    ("GET", "/api/v1/dead-letters"): _operation(
        "listDeadLetters",
        "Runs the engine gave up on, newest first",
        tags=_RUNS,
        params=_PAGE,
        ok={200: ("A page of dead letters", "DeadLetterPage")},
        errors=(422,),
    ),
    ("POST", "/api/v1/dead-letters/{dead_letter_id}/requeue"): _post(
        _operation(
            "requeueDeadLetter",
            "Queue a new run with the dead run's version and trigger",
            tags=_RUNS,
            params=[_path("dead_letter_id", {"type": "string", "format": "uuid"})],
            ok={202: ("Queued", "RunAccepted")},
            errors=(404, 409),
        )
    ),
    # -- triggers -------------------------------------------------------------------------
    ("POST", T): _post(
        _operation(
            "createTrigger",
            "Attach a trigger (webhook, schedule, ...) to a workflow",
            description="`config` follows the trigger type's schema (`GET /api/v1/plugins`). "
            "Fields the type declares secret (`writeOnly: true`) are encrypted at rest and "
            'answered as `"**********"`; without a secret key a config holding one is a 503 '
            "`secret_key_missing` and nothing is written.",
            tags=["triggers"],
            params=[_WORKFLOW_ID],
            body=("TriggerRequest", True),
            ok={201: ("Created", "Trigger")},
            errors=(400, 404, 409, 422),
        )
    ),
    ("GET", T): _operation(
        "listTriggers",
        "The workflow's triggers",
        tags=["triggers"],
        params=[_WORKFLOW_ID, *_PAGE],
        ok={200: ("A page of triggers, oldest first", "TriggerList")},
        errors=(404, 422),
    ),
    ("GET", T + "/{trigger_id}"): _operation(
        "getTrigger",
        "One trigger with its counters",
        tags=["triggers"],
        params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
        ok={200: ("The trigger", "Trigger")},
        errors=(404,),
    ),
    ("PATCH", T + "/{trigger_id}"): _post(
        _operation(
            "patchTrigger",
            "Change fields of a trigger (config is a JSON merge patch)",
            tags=["triggers"],
            params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
            body=("TriggerPatch", True),
            ok={200: ("The trigger", "Trigger")},
            errors=(400, 404, 409, 422),
        )
    ),
    ("PUT", T + "/{trigger_id}"): _operation(
        "replaceTrigger",
        "Replace a trigger's config (and the fields given)",
        tags=["triggers"],
        params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
        body=("TriggerReplace", True),
        ok={200: ("The trigger", "Trigger")},
        errors=(400, 404, 409, 422),
    ),
    ("POST", T + "/{trigger_id}/enable"): _post(
        _operation(
            "enableTrigger",
            "Switch a trigger on",
            tags=["triggers"],
            params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
            ok={200: ("The trigger", "Trigger")},
            errors=(404, 409),
        )
    ),
    ("POST", T + "/{trigger_id}/disable"): _post(
        _operation(
            "disableTrigger",
            "Switch a trigger off",
            tags=["triggers"],
            params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
            ok={200: ("The trigger", "Trigger")},
            errors=(404, 409),
        )
    ),
    ("DELETE", T + "/{trigger_id}"): _operation(
        "deleteTrigger",
        "Delete a trigger",
        tags=["triggers"],
        params=[_WORKFLOW_ID, _path("trigger_id", _STR)],
        ok={204: ("Deleted", None)},
        errors=(404,),
    ),
    # -- credentials ----------------------------------------------------------------------
    ("POST", "/api/v1/credentials"): _post(
        _operation(
            "createCredential",
            "Store a write-only secret for the tenant",
            tags=["credentials"],
            body=("CredentialRequest", True),
            ok={201: ("Created", "Credential")},
            errors=(400, 409, 422),
        )
    ),
    ("GET", "/api/v1/credentials"): _operation(
        "listCredentials",
        "The tenant's credentials (never the secrets)",
        tags=["credentials"],
        params=_PAGE,
        ok={200: ("A page of credentials, by name", "CredentialList")},
        errors=(422,),
    ),
    ("GET", "/api/v1/credentials/{name}"): _operation(
        "getCredential",
        "One credential's metadata",
        tags=["credentials"],
        params=[_path("name", _STR)],
        ok={200: ("The credential", "Credential")},
        errors=(404,),
    ),
    ("PUT", "/api/v1/credentials/{name}"): _operation(
        "putCredential",
        "Create or replace a credential (the secret is required: it is write-only)",
        tags=["credentials"],
        params=[_path("name", _STR)],
        body=("CredentialUpdate", True),
        ok={200: ("Replaced", "Credential"), 201: ("Created", "Credential")},
        errors=(400, 409, 422),
    ),
    ("DELETE", "/api/v1/credentials/{name}"): _operation(
        "deleteCredential",
        "Delete a credential",
        tags=["credentials"],
        params=[_path("name", _STR)],
        ok={204: ("Deleted", None)},
        errors=(404,),
    ),
}


def _links() -> None:
    """OpenAPI links: how a response's ids feed other operations (clients and fuzzers
    follow them from a created workflow to its runs)."""
    wf = {"path.workflow_id": "$response.body#/id"}
    run = {"path.execution_id": "$response.body#/executionId"}
    table: dict[tuple[str, str, str], dict[str, dict[str, str]]] = {
        ("POST", "/api/v1/workflows", "201"): {
            "getWorkflow": wf,
            "updateWorkflow": wf,
            "listVersions": wf,
            "addVersion": wf,
            "publishWorkflow": wf,
            "rollbackWorkflow": wf,
            "archiveWorkflow": wf,
            "workflowAudit": wf,
            "executeWorkflow": wf,
            "listWorkflowExecutions": wf,
            "createTrigger": wf,
            "listTriggers": wf,
        },
        ("POST", W + "/versions", "201"): {
            "getVersion": {
                "path.workflow_id": "$response.body#/workflowId",
                "path.version": "$response.body#/version",
            },
        },
        ("POST", W + "/execute", "202"): {
            "getExecution": run,
            "executionEvents": run,
            "cancelExecution": run,
            "executionResources": run,
        },
        ("POST", T, "201"): {
            name: {
                "path.workflow_id": "$response.body#/workflowId",
                "path.trigger_id": "$response.body#/id",
            }
            for name in (
                "getTrigger",
                "patchTrigger",
                "enableTrigger",
                "disableTrigger",
                "deleteTrigger",
            )
        },
        ("POST", "/api/v1/credentials", "201"): {
            name: {"path.name": "$response.body#/name"}
            for name in ("getCredential", "deleteCredential")
        },
    }
    for (method, path, status), targets in table.items():
        response = OPERATIONS[(method, path)]["responses"][status]
        response["links"] = {
            target[0].upper() + target[1:]: {"operationId": target, "parameters": params}
            for target, params in targets.items()
        }


_links()
OPERATIONS[("GET", "/api/v1/openapi.json")]["responses"]["200"]["content"] = {
    JSON_TYPE: {"schema": {"type": "object"}}
}
OPERATIONS[("GET", "/api/v1/docs")]["responses"]["200"]["content"] = {
    "text/html": {"schema": {"type": "string"}}
}


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
