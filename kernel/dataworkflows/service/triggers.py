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

The service is split by responsibility: CRUD here, what plugins use at fire time in
:mod:`~dataworkflows.service.trigger_events`, secret fields in
:mod:`~dataworkflows.service.trigger_secrets`, checks of what clients send in
:mod:`~dataworkflows.service.trigger_validation`, the API's view in
:mod:`~dataworkflows.service.trigger_views`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select, update

from dataworkflows.common.clock import Clock
from dataworkflows.common.errors import NotFound
from dataworkflows.common.pagination import DEFAULT_LIMIT, PageRequest, encode_cursor
from dataworkflows.db.database import Database
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.engine.templating import TemplateEngine
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.secrets.credential_resolver import CredentialService
from dataworkflows.secrets.fields import safe_errors
from dataworkflows.service.store import WorkflowStore
from dataworkflows.service.trigger_events import TriggerEvents
from dataworkflows.service.trigger_secrets import TriggerSecrets
from dataworkflows.service.trigger_validation import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    check_fields,
    invalid_trigger,
    merge_patch,
    problem,
    validate_condition,
    validate_config,
)
from dataworkflows.service.trigger_views import trigger_view
from dataworkflows.service.workflows import WorkflowService
from dataworkflows.triggers import TriggerType

log = logging.getLogger(__name__)

#: PostgreSQL channel announcing that a time-based trigger's next fire time was written
#: (created, updated, enabled, disabled), so schedulers in other processes look again
SCHEDULE_CHANNEL = "dataworkflows_schedule"


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

    def trigger_type(self, type_name: str) -> type[TriggerType] | None:
        """The installed trigger type of that name, or None (its plugin is missing)."""
        entry = self.plugins.triggers.get(type_name)
        return entry.cls if entry else None

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
            raise invalid_trigger(
                [problem("$", "invalid_type", "the trigger must be a JSON object")]
            )
        problems: list[dict[str, str]] = []
        check_fields(raw, CREATE_FIELDS, problems)
        type_name = raw.get("type")
        cls = self.trigger_type(type_name) if isinstance(type_name, str) else None
        if not isinstance(type_name, str):
            problems.append(problem("$.type", "required", "type is required (a trigger type)"))
        elif cls is None:
            problems.append(
                problem(
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
            config = validate_config(cls, config_raw, self.clock, problems)
            fields = self.secret_fields(cls, {"tenant_id": tenant_id, "id": trigger_id})
            self._check_masks(fields, config_raw, problems)
        validate_condition(self.templates, raw.get("activationCondition"), problems)
        if problems or cls is None:
            raise invalid_trigger(problems)
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
        return await trigger_view(self, await self._row(workflow_id, trigger_id, tenant_id))

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
        items = [await trigger_view(self, row) for row in found]
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
            raise invalid_trigger([problem("$", "invalid_type", "the body must be a JSON object")])
        problems: list[dict[str, str]] = []
        allowed = UPDATE_FIELDS | {"type"}
        check_fields(raw, allowed, problems)
        if "type" in raw and raw["type"] != row["type"]:
            problems.append(
                problem(
                    "$.type",
                    "immutable",
                    "a trigger's type cannot change; delete it and create a new one",
                )
            )
        if replace and "config" not in raw:
            problems.append(problem("$.config", "required", "PUT needs the whole config"))
        cls = self.trigger_type(row["type"])
        values: dict[str, Any] = {}
        config = None
        config_changed = "config" in raw and isinstance(raw["config"], dict)
        if config_changed:
            new_raw = raw["config"]
            if cls is None:
                problems.append(
                    problem(
                        "$.config",
                        "plugin_missing",
                        f"the plugin providing trigger type {row['type']!r} is not installed; "
                        "its config cannot be validated (only enable, disable and delete work)",
                    )
                )
            else:
                fields = self.secret_fields(cls, row)
                old = self._open_for_api(fields, row["config"])
                new_raw = fields.keep_masked(new_raw if replace else merge_patch(old, new_raw), old)
                config = validate_config(cls, new_raw, self.clock, problems)
                self._check_masks(fields, new_raw, problems)
                if config is not None:
                    values["config"] = self._seal(fields, new_raw)
        if "activationCondition" in raw:
            validate_condition(self.templates, raw["activationCondition"], problems)
            values["activation_condition"] = raw["activationCondition"]
        if problems:
            raise invalid_trigger(problems)
        if "name" in raw:
            values["name"] = raw["name"]
        enabled = raw.get("enabled", row["enabled"])
        values["enabled"] = enabled
        now = self.clock.now()
        if cls is not None and cls.time_based and (config_changed or enabled != row["enabled"]):
            if config is None:
                opened = self._open_for_api(self.secret_fields(cls, row), row["config"])
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
            return await trigger_view(self, row)
        values: dict[str, Any] = {"enabled": enabled, "updated_at": self.clock.now()}
        cls = self.trigger_type(row["type"])
        if cls is not None and cls.time_based:
            if enabled:
                opened = self._open_for_api(self.secret_fields(cls, row), row["config"])
                try:
                    config = cls.Config.model_validate(opened)
                except ValidationError as exc:
                    raise invalid_trigger(
                        [problem("$.config", "invalid_config", safe_errors(exc, "$.config"))]
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


__all__ = ["SCHEDULE_CHANNEL", "TriggerService"]
