"""What trigger plugins use: look a trigger up, start a run for an event (activation
condition, idempotent request id), count what started nothing, keep per-trigger state.
Part of :class:`~dataworkflows.service.triggers.TriggerService`, which inherits
:class:`TriggerEvents`; the CRUD stays in that module, the API views are
:mod:`dataworkflows.service.trigger_views`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update

from dataworkflows.common.errors import Conflict, NotFound
from dataworkflows.db.models import workflow_executions, workflows
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.engine.templating import TemplateBudgetExceeded, TemplateError
from dataworkflows.secrets.keys import SecretKeyError
from dataworkflows.triggers import REQUEST_PREFIX, FireResult, TriggerHandle, request_id_for

log = logging.getLogger(__name__)


class TriggerEvents:
    """Triggers at work: handles, events, counters and state."""

    # -- what plugins use -----------------------------------------------------------------

    async def handle(self, trigger_id: str) -> TriggerHandle | None:
        """The trigger with that id, or None if it does not exist, its plugin is missing or
        its stored config no longer validates."""
        if not isinstance(trigger_id, str) or len(trigger_id) > 64:
            return None
        t, w = workflow_triggers, workflows
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(t, w.c.status.label("workflow_status"))
                    .join(w, w.c.id == t.c.workflow_id)
                    .where(t.c.id == trigger_id)
                )
            ).one_or_none()
        if row is None:
            return None
        return self.handle_from_row(dict(row._mapping))

    def handle_from_row(self, row: Mapping[str, Any]) -> TriggerHandle | None:
        cls = self.trigger_type(row["type"])
        if cls is None:
            return None
        try:
            config = cls.Config.model_validate(
                self.open_config(self.secret_fields(cls, row), row["config"])
            )
        except SecretKeyError as exc:
            log.error("trigger %s: its secret fields cannot be decrypted: %s", row["id"], exc)
            return None
        except ValidationError:
            log.warning("trigger %s: stored config no longer validates", row["id"])
            return None
        return TriggerHandle(
            id=row["id"],
            workflow_id=row["workflow_id"],
            tenant_id=row["tenant_id"],
            type=row["type"],
            config=config,
            enabled=row["enabled"],
            workflow_active=row["workflow_status"] == "Active",
            activation_condition=row["activation_condition"],
        )

    async def start(
        self,
        handle: TriggerHandle,
        event: Mapping[str, Any],
        *,
        key: str | None = None,
        principal: str | None = None,
        correlation_id: str | None = None,
        count: bool = True,
    ) -> FireResult:
        """Evaluate the activation condition and queue a run for one event.

        ``key`` identifies the event (a delivery id, a fire time): the same key twice gives
        the first run back (``outcome == "duplicate"``). Raises
        :class:`~dataworkflows.common.errors.NotFound` for a disabled trigger and
        :class:`~dataworkflows.common.errors.Conflict` (409) when the workflow is not Active.
        ``count=False`` leaves counting non-activations to the caller (the scheduler
        counts them in the write that advances the trigger).
        """
        if not handle.enabled:
            raise NotFound(f"trigger {handle.id!r} is disabled", code="trigger_not_found")
        if not isinstance(event, Mapping):
            raise TypeError("a trigger event must be a JSON object (a mapping)")
        if not handle.workflow_active:
            raise Conflict(
                f"workflow {handle.workflow_id!r} is not Active; its triggers start no runs",
                code="workflow_not_active",
                details={"workflowId": handle.workflow_id},
            )
        payload = {**event, "triggerId": handle.id, "triggerType": handle.type}
        if handle.activation_condition:
            result: FireResult | None = None
            try:
                if not await self.evaluate_condition(handle.activation_condition, payload):
                    result = FireResult("notActivated", reason="conditionFalse")
            except TemplateError as exc:
                budget = isinstance(exc, TemplateBudgetExceeded)
                result = FireResult(
                    "conditionError",
                    reason="conditionError",
                    error={
                        "code": exc.code if budget else "condition_error",
                        "message": exc.message,
                        "details": {"path": exc.path, "triggerId": handle.id},
                    },
                )
            if result is not None:
                if count:
                    await self.count(handle.id, result)
                return result
        summary, created = await self.service.execute(
            handle.workflow_id,
            trigger=json.loads(json.dumps(payload)),
            request_id=request_id_for(handle.id, key or uuid.uuid4().hex),
            tenant_id=handle.tenant_id,
            principal=principal or f"trigger:{handle.id}",
            correlation_id=correlation_id,
            redelivery_may_differ=True,
        )
        return FireResult("started" if created else "duplicate", summary["executionId"])

    async def record_error(self, trigger_id: str, error: dict[str, Any]) -> None:
        """Set the trigger's ``lastError`` (an event it could not handle)."""
        t = workflow_triggers
        async with self.db.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id == trigger_id)
                .values(last_error=error, last_event_at=self.clock.now())
            )

    async def count(self, trigger_id: str, *results: FireResult) -> None:
        """Add outcomes that started no run to the trigger's counters."""
        t = workflow_triggers
        values = self.counter_values(results)
        if not values:
            return
        values["last_event_at"] = self.clock.now()
        async with self.db.begin() as conn:
            await conn.execute(update(t).where(t.c.id == trigger_id).values(**values))

    @staticmethod
    def counter_values(results: Any) -> dict[str, Any]:
        """Column updates (``x = x + n``) counting a batch of outcomes."""
        t = workflow_triggers
        not_activated = sum(1 for r in results if r.outcome == "notActivated")
        errors = [r for r in results if r.outcome == "conditionError"]
        skipped = sum(int(r.details.get("count", 1)) for r in results if r.outcome == "skipped")
        values: dict[str, Any] = {}
        if not_activated:
            values["not_activated_count"] = t.c.not_activated_count + not_activated
        if errors:
            values["condition_error_count"] = t.c.condition_error_count + len(errors)
            values["last_error"] = errors[-1].error
        if skipped:
            values["skipped_count"] = t.c.skipped_count + skipped
        return values

    async def has_active_run(self, handle: TriggerHandle) -> bool:
        """True while a run this trigger started is Pending or Running."""
        t = workflow_executions
        async with self.db.connect() as conn:
            found = (
                await conn.execute(
                    select(t.c.id)
                    .where(
                        t.c.workflow_id == handle.workflow_id,
                        t.c.status.in_(("Pending", "Running")),
                        t.c.request_id.startswith(f"{REQUEST_PREFIX}{handle.id}:", autoescape=True),
                    )
                    .limit(1)
                )
            ).first()
        return found is not None

    async def get_state(self, trigger_id: str) -> dict[str, Any]:
        t = workflow_triggers
        async with self.db.connect() as conn:
            state = (
                await conn.execute(select(t.c.state).where(t.c.id == trigger_id))
            ).one_or_none()
        if state is None:
            raise NotFound(f"no trigger {trigger_id!r}", code="trigger_not_found")
        return dict(state[0] or {})

    async def set_state(self, trigger_id: str, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise TypeError("trigger state must be a JSON object")
        data = json.loads(json.dumps(dict(state)))  # JSON only; raises TypeError otherwise
        await self._write(trigger_id, {"state": data})
