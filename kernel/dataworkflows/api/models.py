"""The JSON bodies the API answers with, as pydantic models (camelCase on the wire).

They mirror the ``*_view`` functions of the service layer (``service/views.py``,
``service/trigger_views.py``, ``secrets/credentials.py``,
``ledger/resources.py``) and are the OpenAPI component schemas of those responses;
``tests/test_api_models.py`` validates real responses against them so they cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from dataworkflows.db.lifecycle_models import AUDIT_ACTIONS
from dataworkflows.db.models import RUN_STATUSES, STEP_STATUSES, WORKFLOW_STATUSES
from dataworkflows.engine.definitions import ID_PATTERN, WorkflowDefinition

WorkflowStatus = Literal[WORKFLOW_STATUSES]  # type: ignore[valid-type]
RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]
StepStatus = Literal[STEP_STATUSES]  # type: ignore[valid-type]
AuditAction = Literal[AUDIT_ACTIONS]  # type: ignore[valid-type]
Json = dict[str, Any]

EXAMPLE_EXECUTION_ID = "0b6f1c2e-8f7a-4e57-9d0c-2f4b2d7e9a10"


class ApiModel(BaseModel):
    """A closed camelCase JSON object (snake_case in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _example(example: Json) -> ConfigDict:
    return ConfigDict(json_schema_extra={"example": example})


def _no_default(schema: Json) -> None:
    schema.pop("default", None)


def omittable(**kwargs: Any) -> Any:
    """A field that may be left out but is never ``null`` when present."""
    return Field(default=None, json_schema_extra=_no_default, **kwargs)


def page_of(item: type[BaseModel], name: str) -> type[ApiModel]:
    """``{items: [item], nextCursor}``: one page of a keyset-paginated list."""
    return create_model(
        name,
        __base__=ApiModel,
        __doc__=f"A page of {item.__name__} (pass ``nextCursor`` as ``cursor`` for the next).",
        items=(list[item], ...),  # type: ignore[valid-type]
        next_cursor=(str | None, ...),
    )


class Error(BaseModel):
    """Every error: a stable ``code``, a message, and ``details`` where they help."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"code": "workflow_not_found", "message": "no workflow 'nope'"}
        },
    )

    code: str
    message: str
    details: Any = None


# -- system -------------------------------------------------------------------------------


class Health(BaseModel):
    """Liveness: the version and the database dialect."""

    status: Literal["ok"]
    version: str
    database: str


class PluginAction(ApiModel):
    """An action type and the JSON schema of its parameters."""

    type: str
    title: str | None
    parameters_schema: Json


class PluginTrigger(ApiModel):
    """A trigger type and the JSON schema of its config."""

    type: str
    title: str | None
    config_schema: Json


class Plugin(ApiModel):
    """An installed plugin with what it provides."""

    name: str
    distribution: str | None
    version: str | None
    actions: list[PluginAction]
    triggers: list[PluginTrigger]


class PluginList(ApiModel):
    """The installed plugins."""

    plugins: list[Plugin]


# -- workflows ----------------------------------------------------------------------------


class Workflow(ApiModel):
    """A workflow; ``definition`` (the current, else latest one) where a single workflow is
    answered."""

    model_config = _example(
        {
            "id": "simple-echo",
            "displayName": "Simple Echo Workflow",
            "description": None,
            "status": "Active",
            "currentVersion": 2,
            "latestVersion": 2,
            "createdAt": "2026-11-29T12:00:00Z",
            "updatedAt": "2026-11-29T12:05:00Z",
        }
    )

    id: str = Field(pattern=ID_PATTERN)
    display_name: str
    description: str | None
    status: WorkflowStatus
    current_version: int | None
    latest_version: int
    created_at: datetime
    updated_at: datetime
    definition: WorkflowDefinition = omittable()


class VersionCreated(ApiModel):
    """The version a new definition became."""

    workflow_id: str
    version: int


class Version(ApiModel):
    """One version of a workflow."""

    workflow_id: str
    version: int
    checksum: str
    created_at: datetime
    created_by: str | None
    current: bool
    latest: bool


class VersionDetail(Version):
    """One version with its definition."""

    definition: WorkflowDefinition


class AuditEntry(ApiModel):
    """One row of a workflow's audit trail."""

    model_config = _example(
        {
            "id": 7,
            "workflowId": "simple-echo",
            "version": 1,
            "action": "ROLLBACK",
            "actor": "alice",
            "note": "v2 breaks the report",
            "diff": {"fromVersion": 2, "toVersion": 1},
            "correlationId": "4bf92f3577b34da6",
            "createdAt": "2026-11-29T12:10:00Z",
        }
    )

    id: int
    workflow_id: str
    version: int | None
    action: AuditAction
    actor: str | None
    note: str | None
    diff: Json | None
    correlation_id: str | None
    created_at: datetime


# -- runs ---------------------------------------------------------------------------------


class RunAccepted(ApiModel):
    """A queued run and where to follow it."""

    model_config = _example(
        {
            "executionId": EXAMPLE_EXECUTION_ID,
            "status": "Pending",
            "statusUrl": f"/api/v1/executions/{EXAMPLE_EXECUTION_ID}",
        }
    )

    execution_id: UUID
    status: RunStatus
    status_url: str


class _RunFields(ApiModel):
    id: UUID
    workflow_id: str
    workflow_version: int
    request_id: str
    status: RunStatus
    error: Json | None
    principal: str | None
    correlation_id: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    test_run: bool = Field(description="A run of an unpublished version (run without --publish)")
    parent_execution_id: UUID | None = Field(
        default=None, description="The run whose subworkflow node started this one (null: none)"
    )
    parent_node_id: str | None = Field(default=None, description="That node of the parent run")
    root_execution_id: UUID | None = Field(
        default=None, description="The top-level run of this run's tree (null: this run is one)"
    )
    depth: int = Field(default=0, description="0 for a top-level run, its parent's depth + 1")


class ActionAttempt(ApiModel):
    """One attempt of one node."""

    id: UUID
    node_id: str
    action_type: str
    attempt: int
    status: StepStatus
    parameters: Json | None
    outputs: Json | None
    error: Json | None
    started_at: datetime | None
    ended_at: datetime | None


class Execution(_RunFields):
    """A run with its trigger payload and every attempt of every node."""

    trigger: Json
    actions: list[ActionAttempt]


class ExecutionSummary(_RunFields):
    """A run in a list (GET the run for its trigger and attempts)."""

    status_url: str


class Event(ApiModel):
    """One event of a run."""

    sequence: int
    type: str
    node_id: str | None
    payload: Json
    created_at: datetime


class CancelResult(ApiModel):
    """A cancelled run (Pending) or one asked to stop (Running)."""

    execution_id: UUID
    status: Literal["Cancelled", "Running"]
    cancel_requested: bool
    status_url: str


class DeadLetter(ApiModel):
    """A run the engine gave up on."""

    id: UUID
    execution_id: UUID
    workflow_id: str
    reason: str
    details: Json | None
    created_at: datetime
    requeued_at: datetime | None
    requeued_execution_id: UUID | None


class ResourceLink(ApiModel):
    """An external object a step created (a ticket, a message, ...)."""

    system: str
    type: str
    external_id: str
    url: str | None
    key: str | None
    workflow_id: str
    execution_id: str | None
    node_id: str
    created_at: datetime | None


class Credential(ApiModel):
    """A credential's metadata (never its secret)."""

    name: str
    tenant_id: str
    description: str | None
    allowed_hosts: list[str]
    key_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    created_by: str | None
    updated_by: str | None


class LogLine(ApiModel):
    """One line an action wrote to ``ctx.log`` (secrets redacted)."""

    time: datetime
    level: str
    message: str
    node_id: str
    attempt: int


class ExecutionLogs(ApiModel):
    """A run's step logs: every kept line of the selected attempts, in the order they ran."""

    model_config = _example(
        {
            "items": [
                {
                    "time": "2026-12-07T09:30:00.120Z",
                    "level": "INFO",
                    "message": "posting to #ops",
                    "nodeId": "notify",
                    "attempt": 1,
                }
            ]
        }
    )

    items: list[LogLine]


class RunVariable(ApiModel):
    """A run variable an action set with ``ctx.set_variable`` (the last value per key)."""

    key: str
    type: Literal["string", "number", "boolean", "json"]
    value: Any = Field(description="the value, with its JSON type (a number stays a number)")
    node_id: str
    attempt: int
    updated_at: datetime


class ExecutionVariables(ApiModel):
    """A run's variables, by key; templates of later nodes read them as `vars.<key>`."""

    model_config = _example(
        {
            "items": [
                {
                    "key": "orderTotal",
                    "type": "number",
                    "value": 1250.5,
                    "nodeId": "price",
                    "attempt": 1,
                    "updatedAt": "2026-12-07T09:30:00.120Z",
                }
            ]
        }
    )

    items: list[RunVariable]


class ExecutionChildren(ApiModel):
    """The runs a run started with subworkflow nodes (with ``recursive``: its whole tree,
    parents before their children), oldest first within a level."""

    items: list[ExecutionSummary]


class ResourceLinkList(ApiModel):
    """The resource links of a run."""

    items: list[ResourceLink]


WorkflowPage = page_of(Workflow, "WorkflowPage")
VersionPage = page_of(Version, "VersionPage")
AuditPage = page_of(AuditEntry, "AuditPage")
ExecutionPage = page_of(ExecutionSummary, "ExecutionPage")
EventPage = page_of(Event, "EventPage")
DeadLetterPage = page_of(DeadLetter, "DeadLetterPage")
CredentialList = page_of(Credential, "CredentialList")
