"""Triggers: their management API, and the one path by which an event starts a run.

Every event, whether a webhook delivery or a schedule's fire time, goes through
:meth:`TriggerService.start`: the trigger must be enabled and its workflow Active, its
``activationCondition`` (a sandboxed Jinja2 expression over the payload, as ``trigger``)
must be true, and then a run is queued with a request id unique per (trigger, event key),
so that a redelivered event or a second scheduler process never starts a second run.
Non-activations are counted on the trigger row and shown by the API.

Runs a trigger started carry its id in two places: the request id
(``trg:<triggerId>:<key>``, which is how the API counts them) and the payload
(``trigger.triggerId``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from pydantic import ValidationError
from sqlalchemy import and_, func, or_, select, update

from dataworkflows.common.clock import Clock
from dataworkflows.common.errors import NotFound, Unprocessable
from dataworkflows.common.pagination import DEFAULT_LIMIT, PageRequest, encode_cursor
from dataworkflows.common.validation_messages import friendly_errors, json_path
from dataworkflows.db.database import Database
from dataworkflows.db.models import workflow_executions
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.engine.templating import TemplateEngine
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.secrets.credentials import CredentialService, SecretKeyError
from dataworkflows.secrets.fields import (
    safe_errors,
)
from dataworkflows.service.store import WorkflowStore
from dataworkflows.service.trigger_events import TriggerEvents
from dataworkflows.service.trigger_secrets import TriggerSecrets, _problem
from dataworkflows.service.workflows import WorkflowService
from dataworkflows.triggers import REQUEST_PREFIX, TriggerType

log = logging.getLogger(__name__)

#: PostgreSQL channel announcing that a time-based trigger's next fire time was written
#: (created, updated, enabled, disabled), so schedulers in other processes look again
SCHEDULE_CHANNEL = "dataworkflows_schedule"

CREATE_FIELDS = {"type", "config", "name", "enabled", "activationCondition"}
UPDATE_FIELDS = {"config", "name", "enabled", "activationCondition"}


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _invalid(problems: list[dict[str, str]]) -> Unprocessable:
    return Unprocessable(
        f"the trigger has {len(problems)} problem(s)",
        code="invalid_trigger",
        details={"problems": problems},
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, ``null`` removes a key."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class TriggerService(TriggerSecrets, TriggerEvents):
    """Trigger CRUD for the API, and firing for plugins and the scheduler."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        plugins: PluginSet,
        templates: TemplateEngine,
        store: WorkflowStore,
        service: WorkflowService,
        credentials: CredentialService | None = None,
    ) -> None:
        self.db = db
        self.credentials = credentials
        self.clock = clock
        self.plugins = plugins
        self.templates = templates
        self.store = store
        self.service = service
        self._schedule_listeners: list[Callable[[], None]] = []
        #: the kernel's PluginAPI, handed to :meth:`TriggerType.check` (set by the kernel)
        self.plugin_api: Any = None

    def on_schedule_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in this process, after the commit) whenever a time-based
        trigger's next fire time is written by this service; other processes hear of it
        through ``NOTIFY`` on :data:`SCHEDULE_CHANNEL` (PostgreSQL)."""
        self._schedule_listeners.append(listener)

    def _schedule_changed(self) -> None:
        for listener in self._schedule_listeners:
            listener()

    # -- validation -----------------------------------------------------------------------

    def trigger_type(self, type_name: str) -> type[TriggerType] | None:
        """The installed trigger type of that name, or None (its plugin is missing)."""
        entry = self.plugins.triggers.get(type_name)
        return entry.cls if entry else None

    def _validate_config(
        self, cls: type[TriggerType], raw: Any, problems: list[dict[str, str]]
    ) -> Any:
        try:
            config = cls.Config.model_validate(raw)
        except ValidationError as exc:
            for loc, message, _kind in friendly_errors(exc, cls.Config):
                problems.append(_problem(json_path(loc, "$.config"), "invalid_config", message))
            return None
        if cls.time_based:
            try:
                cls.next_fire_time(config, self.clock.now())
            except Exception as exc:
                problems.append(
                    _problem("$.config", "invalid_config", f"{type(exc).__name__}: {exc}")
                )
                return None
        return config

    def _validate_condition(self, source: Any, problems: list[dict[str, str]]) -> None:
        if source is None:
            return
        if not isinstance(source, str) or not source.strip():
            problems.append(
                _problem(
                    "$.activationCondition",
                    "invalid_condition",
                    "activationCondition must be a non-empty string or null",
                )
            )
            return
        try:
            self._compile_condition(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                _problem(
                    "$.activationCondition",
                    "invalid_condition",
                    f"condition syntax error: {exc.message}",
                )
            )

    @staticmethod
    def _check_fields(raw: Any, allowed: set[str], problems: list[dict[str, str]]) -> None:
        for name in sorted(set(raw) - allowed):
            problems.append(_problem(f"$.{name}", "unknown_field", f"unknown field {name!r}"))
        if "name" in raw and raw["name"] is not None and not isinstance(raw["name"], str):
            problems.append(_problem("$.name", "invalid_type", "name must be a string or null"))
        if "enabled" in raw and not isinstance(raw["enabled"], bool):
            problems.append(_problem("$.enabled", "invalid_type", "enabled must be true or false"))
        if "config" in raw and not isinstance(raw["config"], dict):
            problems.append(_problem("$.config", "invalid_type", "config must be a JSON object"))

    # -- conditions -----------------------------------------------------------------------

    def _compile_condition(self, source: str) -> Any:
        # the engine's (LRU-bounded) cache; an activation condition is an edge condition
        return self.templates.compile_condition(source)

    async def evaluate_condition(self, source: str, payload: Mapping[str, Any]) -> bool:
        """Evaluate an activation condition with the payload as ``trigger``, under the
        template budget and off the event loop when it is not cheap.

        Raises :class:`~dataworkflows.engine.templating.TemplateError` with a readable message
        when it cannot be evaluated (undefined names, sandbox refusals, errors inside the
        expression); :class:`~dataworkflows.engine.templating.TemplateBudgetExceeded` past its
        budget.
        """
        return await self.templates.evaluate_condition_async(
            source, {"trigger": payload}, "$.activationCondition"
        )

    # -- CRUD -----------------------------------------------------------------------------

    async def create(
        self,
        workflow_id: str,
        raw: Any,
        *,
        tenant_id: str = "default",
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Create a trigger on a workflow; 404 unknown workflow, 422 invalid trigger."""
        await self.store.get(workflow_id, tenant_id)  # 404 first
        if not isinstance(raw, dict):
            raise _invalid([_problem("$", "invalid_type", "the trigger must be a JSON object")])
        problems: list[dict[str, str]] = []
        self._check_fields(raw, CREATE_FIELDS, problems)
        type_name = raw.get("type")
        cls = self.trigger_type(type_name) if isinstance(type_name, str) else None
        if not isinstance(type_name, str):
            problems.append(_problem("$.type", "required", "type is required (a trigger type)"))
        elif cls is None:
            problems.append(
                _problem(
                    "$.type",
                    "unknown_trigger_type",
                    f"no installed plugin provides trigger type {type_name!r}; installed: "
                    + (", ".join(sorted(self.plugins.triggers)) or "none"),
                )
            )
        config_raw = raw.get("config", {})
        config = None
        trigger_id = str(uuid.uuid4())
        if cls is not None and isinstance(config_raw, dict):
            config = self._validate_config(cls, config_raw, problems)
            fields = self._fields(cls, {"tenant_id": tenant_id, "id": trigger_id})
            self._check_masks(fields, config_raw, problems)
        self._validate_condition(raw.get("activationCondition"), problems)
        if problems or cls is None:
            raise _invalid(problems)
        enabled = raw.get("enabled", True)
        now = self.clock.now()
        stored_config = self._seal(fields, config_raw)
        async with self.db.begin() as conn:
            await conn.execute(
                workflow_triggers.insert().values(
                    id=trigger_id,
                    workflow_id=workflow_id,
                    tenant_id=tenant_id,
                    type=type_name,
                    name=raw.get("name"),
                    config=stored_config,
                    activation_condition=raw.get("activationCondition"),
                    enabled=enabled,
                    state={},
                    next_fire_at=self._next_fire(cls, config, now) if enabled else None,
                    lease_owner=None,
                    lease_until=None,
                    not_activated_count=0,
                    condition_error_count=0,
                    skipped_count=0,
                    last_event_at=None,
                    last_error=None,
                    created_at=now,
                    updated_at=now,
                    created_by=actor,
                )
            )
            if cls.time_based and enabled:
                await self.db.notify(conn, SCHEDULE_CHANNEL)
        if cls.time_based and enabled:
            self._schedule_changed()
        return await self.get(workflow_id, trigger_id, tenant_id=tenant_id)

    def _next_fire(self, cls: type[TriggerType], config: Any, after: datetime) -> datetime | None:
        if not cls.time_based:
            return None
        when = cls.next_fire_time(config, after)
        return when.astimezone(UTC) if when is not None else None

    async def _row(self, workflow_id: str, trigger_id: str, tenant_id: str) -> dict[str, Any]:
        t = workflow_triggers
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(t).where(
                        t.c.id == trigger_id,
                        t.c.workflow_id == workflow_id,
                        t.c.tenant_id == tenant_id,
                    )
                )
            ).one_or_none()
        if row is None:
            # tell an unknown workflow apart from an unknown trigger
            await self.store.get(workflow_id, tenant_id)
            raise NotFound(
                f"workflow {workflow_id!r} has no trigger {trigger_id!r}",
                code="trigger_not_found",
            )
        return dict(row._mapping)

    async def get(
        self, workflow_id: str, trigger_id: str, *, tenant_id: str = "default"
    ) -> dict[str, Any]:
        return await self.view(await self._row(workflow_id, trigger_id, tenant_id))

    async def list(
        self,
        workflow_id: str,
        *,
        tenant_id: str = "default",
        page: PageRequest | None = None,
    ) -> dict[str, Any]:
        """A page (``{items, nextCursor}``) of the workflow's triggers, oldest first."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        await self.store.get(workflow_id, tenant_id)
        t = workflow_triggers
        query = select(t).where(t.c.workflow_id == workflow_id, t.c.tenant_id == tenant_id)
        if page.after is not None:
            created, trigger_id = page.after
            query = query.where(
                or_(t.c.created_at > created, and_(t.c.created_at == created, t.c.id > trigger_id))
            )
        async with self.db.connect() as conn:
            rows = await conn.execute(query.order_by(t.c.created_at, t.c.id).limit(page.limit + 1))
            found = [dict(r._mapping) for r in rows]
        more = len(found) > page.limit
        found = found[: page.limit]
        items = [await self.view(row) for row in found]
        last = found[-1] if found else None
        next_cursor = (
            encode_cursor("triggers", [last["created_at"], last["id"]]) if more and last else None
        )
        return {"items": items, "nextCursor": next_cursor}

    async def update(
        self,
        workflow_id: str,
        trigger_id: str,
        raw: Any,
        *,
        tenant_id: str = "default",
        replace: bool = False,
    ) -> dict[str, Any]:
        """Change a trigger. ``replace`` (PUT): ``config`` is required and replaces the
        stored one. Otherwise (PATCH) ``config`` is an RFC 7396 merge patch, so secrets
        need not be sent again. The type cannot change (delete and create instead)."""
        row = await self._row(workflow_id, trigger_id, tenant_id)
        if not isinstance(raw, dict):
            raise _invalid([_problem("$", "invalid_type", "the body must be a JSON object")])
        problems: list[dict[str, str]] = []
        allowed = UPDATE_FIELDS | {"type"}
        self._check_fields(raw, allowed, problems)
        if "type" in raw and raw["type"] != row["type"]:
            problems.append(
                _problem(
                    "$.type",
                    "immutable",
                    "a trigger's type cannot change; delete it and create a new one",
                )
            )
        if replace and "config" not in raw:
            problems.append(_problem("$.config", "required", "PUT needs the whole config"))
        cls = self.trigger_type(row["type"])
        values: dict[str, Any] = {}
        config = None
        config_changed = "config" in raw and isinstance(raw["config"], dict)
        if config_changed:
            new_raw = raw["config"]
            if cls is None:
                problems.append(
                    _problem(
                        "$.config",
                        "plugin_missing",
                        f"the plugin providing trigger type {row['type']!r} is not installed; "
                        "its config cannot be validated (only enable, disable and delete work)",
                    )
                )
            else:
                fields = self._fields(cls, row)
                old = self._open_for_api(fields, row["config"])
                new_raw = fields.keep_masked(new_raw if replace else merge_patch(old, new_raw), old)
                config = self._validate_config(cls, new_raw, problems)
                self._check_masks(fields, new_raw, problems)
                if config is not None:
                    values["config"] = self._seal(fields, new_raw)
        if "activationCondition" in raw:
            self._validate_condition(raw["activationCondition"], problems)
            values["activation_condition"] = raw["activationCondition"]
        if problems:
            raise _invalid(problems)
        if "name" in raw:
            values["name"] = raw["name"]
        enabled = raw.get("enabled", row["enabled"])
        values["enabled"] = enabled
        now = self.clock.now()
        if cls is not None and cls.time_based and (config_changed or enabled != row["enabled"]):
            if config is None:
                opened = self._open_for_api(self._fields(cls, row), row["config"])
                config = cls.Config.model_validate(opened)
            values["next_fire_at"] = self._next_fire(cls, config, now) if enabled else None
            values["lease_owner"] = None
            values["lease_until"] = None
        values["updated_at"] = now
        await self._write(trigger_id, values)
        return await self.get(workflow_id, trigger_id, tenant_id=tenant_id)

    async def set_enabled(
        self, workflow_id: str, trigger_id: str, enabled: bool, *, tenant_id: str = "default"
    ) -> dict[str, Any]:
        """Enable or disable. Enabling a time-based trigger schedules it from now on:
        fire times that passed while it was disabled are not caught up."""
        row = await self._row(workflow_id, trigger_id, tenant_id)
        if row["enabled"] == enabled:
            return await self.view(row)
        values: dict[str, Any] = {"enabled": enabled, "updated_at": self.clock.now()}
        cls = self.trigger_type(row["type"])
        if cls is not None and cls.time_based:
            if enabled:
                opened = self._open_for_api(self._fields(cls, row), row["config"])
                try:
                    config = cls.Config.model_validate(opened)
                except ValidationError as exc:
                    raise _invalid(
                        [_problem("$.config", "invalid_config", safe_errors(exc, "$.config"))]
                    ) from None
                values["next_fire_at"] = self._next_fire(cls, config, self.clock.now())
            else:
                values["next_fire_at"] = None
            values["lease_owner"] = None
            values["lease_until"] = None
        await self._write(trigger_id, values)
        return await self.get(workflow_id, trigger_id, tenant_id=tenant_id)

    async def delete(
        self, workflow_id: str, trigger_id: str, *, tenant_id: str = "default"
    ) -> None:
        await self._row(workflow_id, trigger_id, tenant_id)
        t = workflow_triggers
        async with self.db.begin() as conn:
            await conn.execute(t.delete().where(t.c.id == trigger_id))

    async def _write(self, trigger_id: str, values: dict[str, Any]) -> None:
        t = workflow_triggers
        rescheduled = "next_fire_at" in values
        async with self.db.begin() as conn:
            result = await conn.execute(update(t).where(t.c.id == trigger_id).values(**values))
            if rescheduled and result.rowcount == 1:
                await self.db.notify(conn, SCHEDULE_CHANNEL)
        if result.rowcount != 1:
            raise NotFound(f"no trigger {trigger_id!r}", code="trigger_not_found")
        if rescheduled:
            self._schedule_changed()

    # -- views ----------------------------------------------------------------------------

    async def run_stats(self, row: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """How many runs a trigger started, and the newest one."""
        t = workflow_executions
        prefix = f"{REQUEST_PREFIX}{row['id']}:"
        where = (
            t.c.workflow_id == row["workflow_id"],
            t.c.request_id.startswith(prefix, autoescape=True),
        )
        async with self.db.connect() as conn:
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
            "createdAt": _ts(last.created_at),
        }

    async def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The API's JSON shape of a trigger (secrets redacted)."""
        entry = self.plugins.triggers.get(row["type"])
        config: dict[str, Any] | None = None
        info: dict[str, Any] = {}
        config_error = None
        model: Any = None
        if entry is not None:
            fields = self._fields(entry.cls, row)
            try:
                model = entry.cls.Config.model_validate(self._open(fields, row["config"]))
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
            if self.plugin_api is not None and model is not None:
                problems = await entry.cls.check(model, self.plugin_api, row["tenant_id"])
            if problems:
                missing = any(p.get("code") == "secret_missing" for p in problems)
                status = "secretMissing" if missing else "setupIncomplete"
        runs, last_execution = await self.run_stats(row)
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
            "nextFireAt": _ts(row["next_fire_at"]) if entry is not None else None,
            "stats": {
                "runs": runs,
                "notActivated": row["not_activated_count"],
                "conditionErrors": row["condition_error_count"],
                "skipped": row["skipped_count"],
            },
            "lastEventAt": _ts(row["last_event_at"]),
            "lastExecution": last_execution,
            "lastError": config_error or row["last_error"],
            "problems": problems,
            "createdAt": _ts(row["created_at"]),
            "updatedAt": _ts(row["updated_at"]),
            "createdBy": row["created_by"],
        }
        if entry is None:
            view["message"] = (
                f"the plugin providing trigger type {row['type']!r} is not installed: "
                "this trigger does not fire; reinstall the plugin or delete the trigger"
            )
        return view


__all__ = ["TriggerService", "merge_patch"]
