"""The building blocks of the OpenAPI document: component schemas (from the pydantic
models where they exist), shared parameters and the helpers that write one operation.
:mod:`dataworkflows.api.openapi_operations` uses them for every kernel route.
"""

from __future__ import annotations

from typing import Any

from dataworkflows.common.pagination import DEFAULT_LIMIT, MAX_LIMIT
from dataworkflows.db.lifecycle_models import AUDIT_ACTIONS
from dataworkflows.db.models import RUN_STATUSES, STEP_STATUSES, WORKFLOW_STATUSES
from dataworkflows.engine.definitions import ID_PATTERN, WorkflowDefinition

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
