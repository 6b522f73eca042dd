"""Every kernel route's OpenAPI operation (:data:`OPERATIONS`), with the links between them.

``tests/test_openapi.py`` fails when a kernel route has no entry here or an entry has no
route, so this table cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from dataworkflows.api.openapi_parts import (
    _EXECUTION_ID,
    _PAGE,
    _STR,
    _WORKFLOW_ID,
    JSON_TYPE,
    _operation,
    _path,
    _post,
    _query,
)
from dataworkflows.db.models import RUN_STATUSES, WORKFLOW_STATUSES
from dataworkflows.engine.definitions import ID_PATTERN

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
