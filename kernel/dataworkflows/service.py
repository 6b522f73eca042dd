"""Use cases shared by the HTTP API, the CLI and trigger plugins.

Every method validates first and writes after, so a rejected request changes nothing.
Results are plain dicts in the API's camelCase shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dataworkflows.definitions import WorkflowDefinition, checksum, validate_definition
from dataworkflows.errors import Conflict, NotFound, Unprocessable
from dataworkflows.ledger import RunLedger
from dataworkflows.plugins import PluginSet
from dataworkflows.store import WorkflowStore
from dataworkflows.templating import TemplateEngine


class WorkflowService:
    def __init__(
        self,
        *,
        store: WorkflowStore,
        ledger: RunLedger,
        plugins: PluginSet,
        templates: TemplateEngine,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.plugins = plugins
        self.templates = templates
        self._on_enqueued = on_enqueued

    # -- definitions ----------------------------------------------------------------------

    def validate(self, raw: Any) -> WorkflowDefinition:
        """Parse and check a definition; raises a 422 listing every problem."""
        definition, problems = validate_definition(raw, self.plugins, self.templates)
        if problems or definition is None:
            raise Unprocessable(
                f"the workflow definition has {len(problems)} problem(s)",
                code="invalid_definition",
                details={"problems": [p.as_dict() for p in problems]},
            )
        return definition

    async def create_workflow(
        self,
        raw: Any,
        *,
        auto_activate: bool = False,
        tenant_id: str = "default",
        actor: str | None = None,
    ) -> dict[str, Any]:
        definition = self.validate(raw)
        row = await self.store.create(
            workflow_id=definition.id,
            display_name=definition.display_name,
            description=definition.description,
            definition=raw,
            checksum=checksum(raw),
            tenant_id=tenant_id,
            actor=actor,
            publish=auto_activate,
        )
        return workflow_view(row, raw)

    async def add_version(
        self, workflow_id: str, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        definition = self.validate(raw)
        if definition.id != workflow_id:
            raise Unprocessable(
                f"the definition's id {definition.id!r} does not match workflow {workflow_id!r}",
                code="invalid_definition",
                details={
                    "problems": [
                        {
                            "path": "$.id",
                            "code": "id_mismatch",
                            "message": f"expected {workflow_id!r}",
                        }
                    ]
                },
            )
        version = await self.store.add_version(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            display_name=definition.display_name,
            description=definition.description,
            definition=raw,
            checksum=checksum(raw),
            actor=actor,
        )
        return {"workflowId": workflow_id, "version": version}

    async def publish(
        self, workflow_id: str, *, version: int | None = None, tenant_id: str = "default"
    ) -> dict[str, Any]:
        row = await self.store.get(workflow_id, tenant_id)
        target = version or row["latest_version"]
        # Re-check at publish time: plugins may have been removed since the version was saved.
        self.validate(await self.store.definition(workflow_id, target))
        await self.store.publish(workflow_id, tenant_id, target)
        return await self.get_workflow(workflow_id, tenant_id=tenant_id)

    async def apply(
        self, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        """Create the workflow, or add a version if it changed, and publish it."""
        definition = self.validate(raw)
        try:
            existing = await self.store.get(definition.id, tenant_id)
        except NotFound:
            return await self.create_workflow(
                raw, auto_activate=True, tenant_id=tenant_id, actor=actor
            )
        try:
            version = (
                await self.add_version(definition.id, raw, tenant_id=tenant_id, actor=actor)
            )["version"]
        except Conflict as exc:
            if exc.code != "duplicate_version":
                raise
            version = exc.details["version"]
        if existing["status"] != "Active" or existing["current_version"] != version:
            await self.store.publish(definition.id, tenant_id, version)
        return await self.get_workflow(definition.id, tenant_id=tenant_id)

    async def get_workflow(self, workflow_id: str, *, tenant_id: str = "default") -> dict[str, Any]:
        row = await self.store.get(workflow_id, tenant_id)
        version = row["current_version"] or row["latest_version"]
        return workflow_view(row, await self.store.definition(workflow_id, version))

    async def list_workflows(self, *, tenant_id: str = "default") -> list[dict[str, Any]]:
        return [workflow_view(row) for row in await self.store.list(tenant_id)]

    # -- runs -----------------------------------------------------------------------------

    async def execute(
        self,
        workflow_id: str,
        *,
        trigger: dict[str, Any] | None = None,
        request_id: str | None = None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Enqueue a run of the workflow's published version. Returns (run summary, created)."""
        if trigger is not None and not isinstance(trigger, dict):
            raise Unprocessable(
                "trigger must be a JSON object",
                code="invalid_request",
                details={"path": "$.trigger"},
            )
        if request_id is not None and (
            not isinstance(request_id, str) or not request_id or len(request_id) > 200
        ):
            raise Unprocessable(
                "requestId must be a non-empty string of at most 200 characters",
                code="invalid_request",
                details={"path": "$.requestId"},
            )
        row = await self.store.get(workflow_id, tenant_id)
        if row["status"] != "Active" or row["current_version"] is None:
            raise Conflict(
                f"workflow {workflow_id!r} is {row['status']}; only Active workflows execute",
                code="workflow_not_active",
                details={"status": row["status"]},
            )
        execution, created = await self.ledger.enqueue(
            workflow_id=workflow_id,
            workflow_version=row["current_version"],
            trigger=trigger or {},
            request_id=request_id,
            tenant_id=tenant_id,
            principal=principal,
            correlation_id=correlation_id,
        )
        if created:
            self._on_enqueued()
        return run_summary(execution), created

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        key = _uuid(execution_id)
        row = await self.ledger.get_execution(key)
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", code="execution_not_found")
        actions = await self.ledger.list_actions(key)
        return execution_view(row, actions)

    async def get_events(self, execution_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        key = _uuid(execution_id)
        if await self.ledger.get_execution(key) is None:
            raise NotFound(f"no execution {execution_id!r}", code="execution_not_found")
        return [event_view(e) for e in await self.ledger.list_events(key, after=after)]


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no execution {value!r}", code="execution_not_found") from None


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def workflow_view(row: dict[str, Any], definition: dict[str, Any] | None = None) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "displayName": row["display_name"],
        "description": row["description"],
        "status": row["status"],
        "currentVersion": row["current_version"],
        "latestVersion": row["latest_version"],
        "createdAt": _ts(row["created_at"]),
        "updatedAt": _ts(row["updated_at"]),
    }
    if definition is not None:
        view["definition"] = definition
    return view


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "executionId": str(row["id"]),
        "status": row["status"],
        "statusUrl": f"/api/v1/executions/{row['id']}",
    }


def execution_view(row: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "workflowId": row["workflow_id"],
        "workflowVersion": row["workflow_version"],
        "requestId": row["request_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "error": row["error"],
        "principal": row["principal"],
        "correlationId": row["correlation_id"],
        "createdAt": _ts(row["created_at"]),
        "startedAt": _ts(row["started_at"]),
        "endedAt": _ts(row["ended_at"]),
        "actions": [action_view(a) for a in actions],
    }


def action_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "nodeId": row["node_id"],
        "actionType": row["action_type"],
        "attempt": row["attempt"],
        "status": row["status"],
        "parameters": row["parameters"],
        "outputs": row["outputs"],
        "error": row["error"],
        "startedAt": _ts(row["started_at"]),
        "endedAt": _ts(row["ended_at"]),
    }


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "sequence": row["sequence"],
        "type": row["type"],
        "nodeId": row["node_id"],
        "payload": row["payload"],
        "createdAt": _ts(row["created_at"]),
    }
