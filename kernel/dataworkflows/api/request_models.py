"""What the kernel routes accept, as pydantic models: request bodies (camelCase JSON) and
query parameters (a model's fields are the operation's query parameters).

The handlers check their input themselves (``routes.py``, ``connector_routes.py``); these
models describe it for the OpenAPI document and for clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from dataworkflows.api.models import ApiModel, RunStatus, WorkflowStatus, omittable
from dataworkflows.common.pagination import DEFAULT_LIMIT, MAX_INT, MAX_LIMIT
from dataworkflows.engine.definitions import ID_PATTERN
from dataworkflows.secrets.credentials import (
    HOST_PATTERN,
    MAX_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    NAME_PATTERN,
)

Flag = Literal["true", "false"]
_NOTE = Field(default=None, max_length=1000, description="Stored with the audit row")


# -- bodies -------------------------------------------------------------------------------


class WorkflowPatch(ApiModel):
    """Metadata to change (an UPDATE audit row)."""

    model_config = {
        "json_schema_extra": {
            "example": {"displayName": "Nightly report", "note": "renamed for the ops team"}
        }
    }

    display_name: str = omittable(min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=10000)
    note: str | None = _NOTE


class ArchiveRequest(ApiModel):
    """An optional audit note."""

    note: str | None = _NOTE


class LifecycleRequest(ArchiveRequest):
    """Which version (default: the latest for publish, the previous one for rollback)."""

    model_config = {"json_schema_extra": {"example": {"version": 2, "note": "ship the retry fix"}}}

    version: int = omittable(ge=1)


class ExecuteRequest(ApiModel):
    """The trigger payload templates read as ``trigger``; ``requestId`` makes it idempotent."""

    model_config = {
        "json_schema_extra": {
            "example": {"trigger": {"source": "manual", "userId": "u-123"}, "requestId": "r-1"}
        }
    }

    trigger: dict[str, Any] = omittable()
    request_id: str = omittable(min_length=1, max_length=200)


class CredentialUpdate(ApiModel):
    """A credential's secret (required: secrets are write-only) and metadata."""

    name: str = omittable(pattern=NAME_PATTERN.pattern, description="Must match the URL")
    secret: str = Field(min_length=MIN_SECRET_LENGTH, max_length=MAX_SECRET_LENGTH)
    description: str | None = None
    allowed_hosts: list[Annotated[str, Field(pattern=HOST_PATTERN.pattern)]] = omittable(
        description="Hosts it may be sent to (`*.example.com` matches subdomains; empty: any)"
    )


class CredentialRequest(CredentialUpdate):
    """A new credential."""

    model_config = {
        "json_schema_extra": {
            "example": {
                "name": "chat-bot",
                "secret": "xoxb-...",
                "allowedHosts": ["api.example.com"],
            }
        }
    }

    name: str = Field(pattern=NAME_PATTERN.pattern)


# -- query parameters ---------------------------------------------------------------------


class PageQuery(ApiModel):
    """Keyset pagination."""

    limit: int = Field(
        default=DEFAULT_LIMIT,
        ge=1,
        le=MAX_LIMIT,
        description=f"Page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    )
    cursor: str = omittable(description="The `nextCursor` of the previous page (opaque).")


class PluginsQuery(ApiModel):
    """``GET /api/v1/plugins``."""

    all: Flag = Field(default="false", description="Also list the kernel's default plugins")


class CreateWorkflowQuery(ApiModel):
    """``POST /api/v1/workflows``."""

    auto_activate: Flag = Field(default="false", description="Publish version 1 at once")


class WorkflowListQuery(PageQuery):
    """``GET /api/v1/workflows``."""

    status: WorkflowStatus = omittable(description="Filter")
    q: str = omittable(
        max_length=200, description="Case-insensitive text in the id or display name"
    )


class RunListQuery(PageQuery):
    """The runs of a workflow."""

    status: RunStatus = omittable(description="Filter")
    from_: datetime = omittable(alias="from", description="Created at or after")
    to: datetime = omittable(description="Created before")


class ExecutionListQuery(RunListQuery):
    """The tenant's runs."""

    workflow_id: str = omittable(pattern=ID_PATTERN, description="Filter")


class LogQuery(ApiModel):
    """Which attempts' log lines."""

    node_id: str = omittable(pattern=ID_PATTERN, description="Only this node's lines")
    attempt: int = omittable(ge=1, le=MAX_INT, description="Only this attempt's lines")


class ChildrenQuery(ApiModel):
    """Which runs below a run."""

    recursive: bool = Field(
        default=False, description="The whole tree below the run, not only its children"
    )


class EventQuery(PageQuery):
    """The events of a run."""

    after: int = Field(
        default=0, ge=0, le=MAX_INT, description="Only events after this sequence number"
    )
