"""What the API shows of a trigger: its config with secrets masked, its status
(enabled, disabled, plugin missing, config invalid, setup incomplete), what it started
and what it did not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError
from sqlalchemy import func, select

from dataworkflows.common.clock import iso_utc
from dataworkflows.db.database import Database
from dataworkflows.db.models import workflow_executions
from dataworkflows.secrets.fields import safe_errors
from dataworkflows.secrets.keys import SecretKeyError
from dataworkflows.triggers import REQUEST_PREFIX

if TYPE_CHECKING:
    from dataworkflows.plugin_api import PluginAPI
    from dataworkflows.plugins.manager import PluginSet
    from dataworkflows.secrets.fields import SecretFields
    from dataworkflows.triggers import TriggerType


class TriggerSource(Protocol):
    """What a view needs of the trigger service: the plugins, the database, and opening a
    stored config (:class:`~dataworkflows.service.trigger_secrets.TriggerSecrets`)."""

    db: Database
    plugins: PluginSet
    plugin_api: PluginAPI | None

    def secret_fields(self, cls: type[TriggerType], row: Mapping[str, Any]) -> SecretFields: ...

    def open_config(self, fields: SecretFields, config: Any) -> Any: ...


async def run_stats(db: Database, row: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """How many runs a trigger started, and the newest one."""
    t = workflow_executions
    prefix = f"{REQUEST_PREFIX}{row['id']}:"
    where = (
        t.c.workflow_id == row["workflow_id"],
        t.c.request_id.startswith(prefix, autoescape=True),
    )
    async with db.connect() as conn:
        count = (await conn.execute(select(func.count()).where(*where))).scalar_one()
        last = None
        if count:
            last = (
                await conn.execute(
                    select(t.c.id, t.c.status, t.c.created_at)
                    .where(*where)
                    .order_by(t.c.created_at.desc())
                    .limit(1)
                )
            ).one_or_none()
    if last is None:
        return count, None
    return count, {
        "executionId": str(last.id),
        "status": last.status,
        "createdAt": iso_utc(last.created_at),
    }


async def trigger_view(triggers: TriggerSource, row: Mapping[str, Any]) -> dict[str, Any]:
    """The API's JSON shape of a trigger (secrets redacted)."""
    entry = triggers.plugins.triggers.get(row["type"])
    config: dict[str, Any] | None = None
    info: dict[str, Any] = {}
    config_error = None
    model: Any = None
    if entry is not None:
        fields = triggers.secret_fields(entry.cls, row)
        try:
            model = entry.cls.Config.model_validate(triggers.open_config(fields, row["config"]))
        except SecretKeyError as exc:
            config_error = {
                "code": "secret_key_missing",
                "message": f"the trigger's secret fields cannot be decrypted: {exc}",
            }
        except ValidationError as exc:
            config_error = {
                "code": "invalid_config",
                "message": "the stored config no longer matches the type's schema: "
                + safe_errors(exc, "$.config"),
            }
        else:
            config = fields.mask(model.model_dump(mode="json", by_alias=True))
            info = entry.cls.describe(row["id"], model)
    problems: list[dict[str, str]] = []
    if entry is None:
        status = "pluginMissing"
    elif config_error is not None:
        status = "invalidConfig"
    else:
        status = "enabled" if row["enabled"] else "disabled"
        if triggers.plugin_api is not None and model is not None:
            problems = await entry.cls.check(model, triggers.plugin_api, row["tenant_id"])
        if problems:
            missing = any(p.get("code") == "secret_missing" for p in problems)
            status = "secretMissing" if missing else "setupIncomplete"
    runs, last_execution = await run_stats(triggers.db, row)
    view: dict[str, Any] = {
        "id": row["id"],
        "workflowId": row["workflow_id"],
        "type": row["type"],
        "name": row["name"],
        "enabled": row["enabled"],
        "status": status,
        "pluginMissing": entry is None,
        "plugin": (
            {
                "name": entry.plugin.name,
                "distribution": entry.plugin.distribution,
                "version": entry.plugin.version,
            }
            if entry is not None
            else None
        ),
        "config": config,
        "activationCondition": row["activation_condition"],
        "info": info,
        "timeBased": bool(entry and entry.cls.time_based),
        "nextFireAt": iso_utc(row["next_fire_at"]) if entry is not None else None,
        "stats": {
            "runs": runs,
            "notActivated": row["not_activated_count"],
            "conditionErrors": row["condition_error_count"],
            "skipped": row["skipped_count"],
        },
        "lastEventAt": iso_utc(row["last_event_at"]),
        "lastExecution": last_execution,
        "lastError": config_error or row["last_error"],
        "problems": problems,
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "createdBy": row["created_by"],
    }
    if entry is None:
        view["message"] = (
            f"the plugin providing trigger type {row['type']!r} is not installed: "
            "this trigger does not fire; reinstall the plugin or delete the trigger"
        )
    return view
