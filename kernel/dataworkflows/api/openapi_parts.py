"""The hand-written parts of the OpenAPI document, where words add meaning: the common
headers, the links between operations and the example definition; and the component
schemas, generated from the pydantic models the routes declare (:mod:`.route_spec`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from dataworkflows.api.models import Error
from dataworkflows.engine.definitions import WorkflowDefinition

JSON_TYPE = "application/json"
SCHEMA_PREFIX = "#/components/schemas/"

EXAMPLE_DEFINITION = {
    "id": "simple-echo",
    "displayName": "Simple Echo Workflow",
    "startNode": "echo1",
    "nodes": [
        {"id": "echo1", "actionType": "core.echo", "parameters": {"message": "Hello"}},
        {"id": "echo2", "actionType": "core.echo", "parameters": {"message": "World"}},
    ],
}


def ref(name: str) -> dict[str, str]:
    """A ``$ref`` to a component schema."""
    return {"$ref": SCHEMA_PREFIX + name}


def param_ref(name: str) -> dict[str, str]:
    """A ``$ref`` to a component parameter."""
    return {"$ref": f"#/components/parameters/{name}"}


class _Schema(GenerateJsonSchema):
    """Pydantic's JSON schema without the generated ``title`` of every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def model_schemas(models: Iterable[type[BaseModel]], action_types: list[str]) -> dict[str, Any]:
    """Component schemas of ``models`` (and every model they use), plus ``Error`` and the
    workflow definition; the node's ``actionType`` enum lists ``action_types``."""
    unique = list(dict.fromkeys([Error, WorkflowDefinition, *models]))
    _, top = models_json_schema(
        [(m, "validation") for m in unique],
        ref_template=SCHEMA_PREFIX + "{model}",
        schema_generator=_Schema,
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    if action_types:  # what this server accepts: the installed plugins' action types
        schemas["Node"]["properties"]["actionType"]["enum"] = action_types
    schemas["WorkflowDefinition"]["example"] = EXAMPLE_DEFINITION
    return dict(sorted(schemas.items()))


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The query parameters a model's fields describe (optional unless required)."""
    schema = model.model_json_schema(ref_template=SCHEMA_PREFIX + "{model}")
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", "")
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
                **({"description": description} if description else {}),
            }
        )
    return params


_VISIBLE_ASCII = r"^[!-~]{1,200}$"


def _header(name: str, description: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


#: Request headers every operation (or some) takes: ``components.parameters``.
HEADERS = {
    "TenantId": _header(
        "X-Tenant-Id",
        "The tenant (loose mode: trusted as sent). Everything is scoped to it; another "
        "tenant's objects are 404. Default `default`.",
        _VISIBLE_ASCII,
    ),
    "Principal": _header(
        "X-Principal", "Who acts: stored with runs and audit rows.", r"^[ -~]{0,200}$"
    ),
    "CorrelationId": _header(
        "Correlation-Id",
        "Echoed on the response, stored with runs and audit rows, present in every log "
        "line of the request and the run. Generated when absent or malformed.",
        _VISIBLE_ASCII,
    ),
    "IdempotencyKey": _header(
        "Idempotency-Key",
        "Replays the first successful response for 24 h instead of doing the work again; "
        "the same key with a different request is a 422.",
        r"^[!-~]{1,255}$",
    ),
    "AuditNote": _header(
        "X-Audit-Note",
        "A note stored with the audit row of the change (a body `note` wins).",
        r"^[ -~]{0,1000}$",
    ),
}
COMMON_HEADERS = [param_ref("TenantId"), param_ref("Principal"), param_ref("CorrelationId")]

_WF = {"path.workflow_id": "$response.body#/id"}
_RUN = {"path.execution_id": "$response.body#/executionId"}
_TRIGGER = {
    "path.workflow_id": "$response.body#/workflowId",
    "path.trigger_id": "$response.body#/id",
}
_CREDENTIAL = {"path.name": "$response.body#/name"}

#: OpenAPI links: (operationId, status) → {target operationId: parameters}. How a
#: response's ids feed other operations (clients and fuzzers follow them from a created
#: workflow to its runs).
LINKS: dict[tuple[str, str], dict[str, dict[str, str]]] = {
    ("createWorkflow", "201"): {
        name: _WF
        for name in (
            "getWorkflow",
            "updateWorkflow",
            "listVersions",
            "addVersion",
            "publishWorkflow",
            "rollbackWorkflow",
            "archiveWorkflow",
            "workflowAudit",
            "executeWorkflow",
            "listWorkflowExecutions",
            "createTrigger",
            "listTriggers",
        )
    },
    ("addVersion", "201"): {
        "getVersion": {
            "path.workflow_id": "$response.body#/workflowId",
            "path.version": "$response.body#/version",
        },
    },
    **{
        (source, "202"): {
            name: _RUN
            for name in ("getExecution", "executionEvents", "cancelExecution", "executionResources")
        }
        for source in ("executeWorkflow", "runCommand")
    },
    ("createTrigger", "201"): {
        name: _TRIGGER
        for name in (
            "getTrigger",
            "patchTrigger",
            "enableTrigger",
            "disableTrigger",
            "deleteTrigger",
        )
    },
    ("createCredential", "201"): {
        name: _CREDENTIAL for name in ("getCredential", "deleteCredential")
    },
}


def add_links(operations: dict[str, dict[str, Any]]) -> None:
    """Attach :data:`LINKS` to the responses of ``operations`` (operationId → operation);
    a link to or from an operation the document lacks is a ``KeyError``."""
    for (source, status), targets in LINKS.items():
        missing = set(targets) - set(operations)
        if missing:
            raise KeyError(f"links from {source} to operations the document lacks: {missing}")
        operations[source]["responses"][status]["links"] = {
            target[0].upper() + target[1:]: {"operationId": target, "parameters": params}
            for target, params in targets.items()
        }
