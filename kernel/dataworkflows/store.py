"""Workflows and their versioned definitions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from dataworkflows.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import workflow_definitions, workflows
from dataworkflows.errors import Conflict, NotFound


class WorkflowStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(
        self,
        *,
        workflow_id: str,
        display_name: str,
        description: str | None,
        definition: dict[str, Any],
        checksum: str,
        tenant_id: str,
        actor: str | None,
        publish: bool,
    ) -> dict[str, Any]:
        """Insert a workflow with version 1 (published at once if ``publish``)."""
        now = self.clock.now()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    workflows.insert().values(
                        id=workflow_id,
                        tenant_id=tenant_id,
                        display_name=display_name,
                        description=description,
                        status="Active" if publish else "Draft",
                        current_version=1 if publish else None,
                        latest_version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    workflow_definitions.insert().values(
                        workflow_id=workflow_id,
                        version=1,
                        definition=definition,
                        checksum=checksum,
                        created_at=now,
                        created_by=actor,
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"workflow {workflow_id!r} already exists; add a version instead",
                code="workflow_exists",
                details={"workflowId": workflow_id},
            ) from None
        return await self.get(workflow_id, tenant_id)

    async def add_version(
        self,
        *,
        workflow_id: str,
        tenant_id: str,
        display_name: str,
        description: str | None,
        definition: dict[str, Any],
        checksum: str,
        actor: str | None,
    ) -> int:
        """Append version n+1; a definition identical to an existing version is a 409."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._locked_row(conn, workflow_id, tenant_id)
            same = (
                await conn.execute(
                    select(workflow_definitions.c.version).where(
                        workflow_definitions.c.workflow_id == workflow_id,
                        workflow_definitions.c.checksum == checksum,
                    )
                )
            ).scalar_one_or_none()
            if same is not None:
                raise Conflict(
                    f"this definition is identical to version {same} of {workflow_id!r}",
                    code="duplicate_version",
                    details={"workflowId": workflow_id, "version": same},
                )
            version = current["latest_version"] + 1
            await conn.execute(
                workflow_definitions.insert().values(
                    workflow_id=workflow_id,
                    version=version,
                    definition=definition,
                    checksum=checksum,
                    created_at=now,
                    created_by=actor,
                )
            )
            await conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(
                    latest_version=version,
                    display_name=display_name,
                    description=description,
                    updated_at=now,
                )
            )
        return version

    async def publish(self, workflow_id: str, tenant_id: str, version: int | None = None) -> int:
        """Make ``version`` (default: the latest) the one new runs use; status → Active."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._locked_row(conn, workflow_id, tenant_id)
            if current["status"] == "Archived":
                raise Conflict(
                    f"workflow {workflow_id!r} is Archived and cannot be published",
                    code="invalid_state",
                    details={"status": current["status"]},
                )
            target = version or current["latest_version"]
            exists = (
                await conn.execute(
                    select(func.count())
                    .select_from(workflow_definitions)
                    .where(
                        workflow_definitions.c.workflow_id == workflow_id,
                        workflow_definitions.c.version == target,
                    )
                )
            ).scalar_one()
            if not exists:
                raise NotFound(
                    f"workflow {workflow_id!r} has no version {target}",
                    code="version_not_found",
                )
            await conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(status="Active", current_version=target, updated_at=now)
            )
        return target

    async def _locked_row(self, conn: Any, workflow_id: str, tenant_id: str) -> dict[str, Any]:
        stmt = select(workflows).where(
            workflows.c.id == workflow_id, workflows.c.tenant_id == tenant_id
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).one_or_none()
        if row is None:
            raise NotFound(f"no workflow {workflow_id!r}", code="workflow_not_found")
        return dict(row._mapping)

    async def get(self, workflow_id: str, tenant_id: str) -> dict[str, Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(workflows).where(
                        workflows.c.id == workflow_id, workflows.c.tenant_id == tenant_id
                    )
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no workflow {workflow_id!r}", code="workflow_not_found")
        return dict(row._mapping)

    async def list(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(workflows)
                .where(workflows.c.tenant_id == tenant_id)
                .order_by(workflows.c.id)
                .limit(limit)
            )
        return [dict(r._mapping) for r in rows]

    async def definition(self, workflow_id: str, version: int) -> dict[str, Any]:
        t = workflow_definitions
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(t.c.definition).where(
                        t.c.workflow_id == workflow_id, t.c.version == version
                    )
                )
            ).one_or_none()
        if row is None:
            raise NotFound(
                f"workflow {workflow_id!r} has no version {version}", code="version_not_found"
            )
        return dict(row.definition)
