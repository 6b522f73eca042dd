"""The trigger API's bodies as pydantic models: what ``service/triggers.py`` answers
(``TriggerService.view``) and what the trigger routes accept (docs/triggers.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from dataworkflows.api.models import ApiModel, RunStatus, omittable, page_of

Json = dict[str, Any]
TriggerStatus = Literal[
    "enabled", "disabled", "pluginMissing", "invalidConfig", "secretMissing", "setupIncomplete"
]


class TriggerPlugin(ApiModel):
    """The plugin that provides the trigger type."""

    name: str
    distribution: str | None
    version: str | None


class TriggerStats(ApiModel):
    """What the trigger's events came to."""

    runs: int
    not_activated: int
    condition_errors: int
    skipped: int


class LastExecution(ApiModel):
    """The newest run the trigger started."""

    execution_id: UUID
    status: RunStatus
    created_at: datetime | None


class Trigger(ApiModel):
    """A trigger with its state and counters; secret config fields read ``"**********"``."""

    id: str
    workflow_id: str
    type: str
    name: str | None
    enabled: bool
    status: TriggerStatus
    plugin_missing: bool
    plugin: TriggerPlugin | None
    config: Json | None = Field(description="Null when the stored config cannot be read")
    activation_condition: str | None
    info: Json
    time_based: bool
    next_fire_at: datetime | None
    stats: TriggerStats
    last_event_at: datetime | None
    last_execution: LastExecution | None
    last_error: Json | None
    problems: list[dict[str, str]]
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    message: str = omittable(description="Only when the plugin providing the type is missing")


TriggerList = page_of(Trigger, "TriggerList")


class TriggerPatch(ApiModel):
    """Fields to change; ``config`` is a JSON merge patch (``null`` removes a field)."""

    model_config = {
        "json_schema_extra": {"example": {"enabled": False, "config": {"deliveryIdHeader": None}}}
    }

    type: str = omittable()
    name: str | None = None
    config: Json = omittable()
    enabled: bool = omittable()
    activation_condition: str | None = None


class TriggerRequest(TriggerPatch):
    """A new trigger: ``config`` follows the type's schema (``GET /api/v1/plugins``)."""

    model_config = {
        "json_schema_extra": {
            "example": {
                "type": "webhook",
                "name": "Ticket events",
                "config": {"deliveryIdHeader": "X-Delivery-Id"},
                "activationCondition": "trigger.body.action != 'ping'",
            }
        }
    }

    type: str


class TriggerReplace(TriggerPatch):
    """A trigger's whole config (and the other fields given)."""

    model_config = {"json_schema_extra": {}}

    config: Json
