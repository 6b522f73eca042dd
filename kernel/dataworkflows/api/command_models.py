"""The bodies of ``POST /api/v1/commands`` (:mod:`.command_routes`), as pydantic models
for the OpenAPI document; the service checks the input itself
(:mod:`dataworkflows.service.commands`)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from dataworkflows.api.models import EXAMPLE_EXECUTION_ID, ApiModel, RunStatus, omittable
from dataworkflows.engine.definitions import ID_PATTERN

CommandName = Literal["action.run", "workflow.run"]
_REQUEST_ID = omittable(
    min_length=1,
    max_length=200,
    description="The run's request id: the same one returns the first run (default: "
    "derived from the Idempotency-Key, else new)",
)


class ActionRunPayload(ApiModel):
    """``action.run``: one action of an installed type, with its parameters."""

    action_type: str = Field(description="An installed action type (GET /api/v1/plugins)")
    parameters: dict[str, Any] = omittable(
        description="The action's parameters, checked against its schema; used as data "
        "(never rendered as templates). Secret parameters are refused."
    )
    request_id: str = _REQUEST_ID


class WorkflowRunPayload(ApiModel):
    """``workflow.run``: a run of an Active workflow's published version."""

    workflow_id: str = Field(pattern=ID_PATTERN)
    trigger: dict[str, Any] = omittable(description="What templates read as `trigger`")
    request_id: str = _REQUEST_ID


class CommandRequest(ApiModel):
    """A command: what to run, and the correlation id its events will carry."""

    model_config = {
        "json_schema_extra": {
            "example": {
                "command": "action.run",
                "correlationId": "order-1042",
                "payload": {"actionType": "core.echo", "parameters": {"message": "hi"}},
            }
        }
    }

    command: CommandName
    correlation_id: str = omittable(
        pattern=r"^[\x21-\x7e]{1,200}$",
        description="Wins over the Correlation-Id header (default: the header's, else new)",
    )
    payload: ActionRunPayload | WorkflowRunPayload


class CommandAccepted(ApiModel):
    """A queued command: its run and the correlation id its events carry."""

    model_config = {
        "json_schema_extra": {
            "example": {
                "command": "action.run",
                "correlationId": "order-1042",
                "workflowId": "~command.core.echo.5f1d0c8e2a7b3c4d",
                "executionId": EXAMPLE_EXECUTION_ID,
                "status": "Pending",
                "statusUrl": f"/api/v1/executions/{EXAMPLE_EXECUTION_ID}",
                "eventsUrl": f"/api/v1/executions/{EXAMPLE_EXECUTION_ID}/events",
            }
        }
    }

    command: CommandName
    correlation_id: str | None = Field(
        description="The run's correlation id (null only for an earlier run that had none)"
    )
    workflow_id: str = Field(description="The workflow run (`~command.…` for action.run)")
    execution_id: UUID
    status: RunStatus
    status_url: str
    events_url: str
