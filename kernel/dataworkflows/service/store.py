"""Workflows, their versioned definitions and their lifecycle (docs/api.md).

Lifecycle: ``Draft`` → ``Active`` (publish) → ``Archived``.

| operation | allowed from | result |
|---|---|---|
| publish (a version, default the latest) | Draft, Active | Active, that version current |
| rollback (an earlier version) | Active | Active, the earlier version current |
| archive | Draft, Active | Archived (in-flight runs go on; no new runs) |
| new version, metadata change | Draft, Active | status unchanged |

Anything else is a 409 ``invalid_state`` whose details carry the current status. Every
change appends its audit row in the same transaction (:mod:`dataworkflows.service.audit`).
Every method is scoped to a tenant: another tenant's workflow is "not found".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, null, select, update
from sqlalchemy.exc import IntegrityError

from dataworkflows.common.errors import Conflict
from dataworkflows.db.models import workflow_definitions, workflows
from dataworkflows.service.audit import (
    ARCHIVE,
    CREATE,
    PUBLISH,
    ROLLBACK,
    UPDATE,
    VERSION,
    AuditContext,
    definition_diff,
    published_versions,
    write_audit,
)
from dataworkflows.service.workflow_reads import WorkflowReads, version_not_found

NO_AUDIT = AuditContext()

#: which statuses each lifecycle operation may start from
ALLOWED_FROM = {
    "publish": ("Draft", "Active"),
    "rollback": ("Active",),
    "archive": ("Draft", "Active"),
    "addVersion": ("Draft", "Active"),
    "update": ("Draft", "Active"),
}


def _check_transition(row: dict[str, Any], operation: str) -> None:
    allowed = ALLOWED_FROM[operation]
    if row["status"] not in allowed:
        raise Conflict(
            f"workflow {row['id']!r} is {row['status']}; {operation} needs {' or '.join(allowed)}",
            code="invalid_state",
            details={"status": row["status"], "operation": operation, "allowedFrom": allowed},
        )


class WorkflowStore(WorkflowReads):
    """The workflow lifecycle: create, add versions, publish, roll back, archive, rename
    (each with its audit row); the reads are :class:`WorkflowReads`."""

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
        audit: AuditContext | None = None,
    ) -> dict[str, Any]:
        """Insert a workflow with version 1 (published at once if ``publish``).

        Workflow ids are global (docs/api.md, "Tenants"): an id taken in any tenant is a
        409 ``workflow_exists`` that says nothing about the other tenant.
        """
        audit = audit or AuditContext(actor=actor)
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
                        retention=_retention(definition) if publish else null(),
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
                base = {"tenant_id": tenant_id, "workflow_id": workflow_id, "audit": audit}
                await write_audit(
                    conn,
                    **base,
                    action=CREATE,
                    version=1,
                    diff=definition_diff(None, definition)
                    | {"status": "Active" if publish else "Draft"},
                    now=now,
                )
                if publish:
                    await write_audit(
                        conn,
                        **base,
                        action=PUBLISH,
                        version=1,
                        diff={"fromVersion": None, "toVersion": 1, "fromStatus": "Draft"},
                        now=now,
                    )
        except IntegrityError:
            raise Conflict(
                f"a workflow with id {workflow_id!r} already exists; add a version to it "
                "or choose another id",
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
        audit: AuditContext | None = None,
        rename: bool = True,
    ) -> int:
        """Append version n+1; a definition identical to an existing version is a 409.

        ``rename``: the workflow takes the version's name and description (False for a
        version stored only to be test-run: what users see of the workflow stays).
        """
        audit = audit or AuditContext(actor=actor)
        now = self.clock.now()
        t = workflow_definitions
        async with self.db.begin() as conn:
            current = await self._row(conn, workflow_id, tenant_id, lock=True)
            _check_transition(current, "addVersion")
            same = (
                await conn.execute(
                    select(t.c.version).where(
                        t.c.workflow_id == workflow_id, t.c.checksum == checksum
                    )
                )
            ).scalar_one_or_none()
            if same is not None:
                raise Conflict(
                    f"this definition is identical to version {same} of {workflow_id!r}",
                    code="duplicate_version",
                    details={"workflowId": workflow_id, "version": same},
                )
            previous = (
                await conn.execute(
                    select(t.c.definition).where(
                        t.c.workflow_id == workflow_id,
                        t.c.version == current["latest_version"],
                    )
                )
            ).scalar_one_or_none()
            version = current["latest_version"] + 1
            await conn.execute(
                t.insert().values(
                    workflow_id=workflow_id,
                    version=version,
                    definition=definition,
                    checksum=checksum,
                    created_at=now,
                    created_by=actor,
                )
            )
            changes: dict[str, Any] = {"latest_version": version, "updated_at": now}
            if rename:
                changes.update(display_name=display_name, description=description)
            await conn.execute(
                update(workflows).where(workflows.c.id == workflow_id).values(changes)
            )
            await write_audit(
                conn,
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                action=VERSION,
                version=version,
                diff={"fromVersion": current["latest_version"]}
                | definition_diff(previous, definition),
                audit=audit,
                now=now,
            )
        return version

    async def publish(
        self,
        workflow_id: str,
        tenant_id: str,
        version: int | None = None,
        *,
        audit: AuditContext = NO_AUDIT,
    ) -> int:
        """Make ``version`` (default: the latest) the one new runs use; status → Active.

        Publishing the version that is already current on an Active workflow changes
        nothing (and writes no audit row). Runs in flight keep the version they pinned.
        """
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._row(conn, workflow_id, tenant_id, lock=True)
            _check_transition(current, "publish")
            target = version or current["latest_version"]
            await self._require_version(conn, workflow_id, target)
            if current["status"] == "Active" and current["current_version"] == target:
                return target
            await self._make_current(conn, workflow_id, target, now)
            await write_audit(
                conn,
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                action=PUBLISH,
                version=target,
                diff={
                    "fromVersion": current["current_version"],
                    "toVersion": target,
                    "fromStatus": current["status"],
                },
                audit=audit,
                now=now,
            )
        return target

    async def rollback_target(self, workflow_id: str, tenant_id: str) -> int:
        """The version a rollback without an explicit version goes back to: the most
        recently published version older than the current one (else current - 1)."""
        async with self.db.connect() as conn:
            row = await self._row(conn, workflow_id, tenant_id)
            _check_transition(row, "rollback")
            current = row["current_version"]
            earlier = [v for v in await published_versions(conn, workflow_id) if v < current]
        if earlier:
            return earlier[-1]
        if current <= 1:
            raise Conflict(
                f"workflow {workflow_id!r} has no version before {current} to roll back to",
                code="no_earlier_version",
                details={"status": row["status"], "currentVersion": current},
            )
        return int(current - 1)

    async def rollback(
        self, workflow_id: str, tenant_id: str, version: int, *, audit: AuditContext = NO_AUDIT
    ) -> int:
        """Publish an earlier version (``version`` < the current one) of an Active workflow."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._row(conn, workflow_id, tenant_id, lock=True)
            _check_transition(current, "rollback")
            if version >= current["current_version"]:
                raise Conflict(
                    f"rollback goes to an earlier version than the current "
                    f"{current['current_version']}; use publish for version {version}",
                    code="not_an_earlier_version",
                    details={
                        "status": current["status"],
                        "currentVersion": current["current_version"],
                        "version": version,
                    },
                )
            await self._require_version(conn, workflow_id, version)
            await self._make_current(conn, workflow_id, version, now)
            await write_audit(
                conn,
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                action=ROLLBACK,
                version=version,
                diff={"fromVersion": current["current_version"], "toVersion": version},
                audit=audit,
                now=now,
            )
        return version

    async def archive(
        self, workflow_id: str, tenant_id: str, *, audit: AuditContext = NO_AUDIT
    ) -> None:
        """Archive a workflow: it starts no new runs; runs in flight go on."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._row(conn, workflow_id, tenant_id, lock=True)
            _check_transition(current, "archive")
            await conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(status="Archived", updated_at=now)
            )
            await write_audit(
                conn,
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                action=ARCHIVE,
                version=current["current_version"],
                diff={"fromStatus": current["status"]},
                audit=audit,
                now=now,
            )

    async def update_metadata(
        self,
        workflow_id: str,
        tenant_id: str,
        changes: dict[str, Any],
        *,
        audit: AuditContext = NO_AUDIT,
    ) -> bool:
        """Change ``display_name`` / ``description``; returns False when nothing changed."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            current = await self._row(conn, workflow_id, tenant_id, lock=True)
            _check_transition(current, "update")
            diff = {
                _camel(column): {"from": current[column], "to": value}
                for column, value in changes.items()
                if current[column] != value
            }
            if not diff:
                return False
            await conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(**changes, updated_at=now)
            )
            await write_audit(
                conn,
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                action=UPDATE,
                version=current["current_version"],
                diff=diff,
                audit=audit,
                now=now,
            )
        return True

    async def _make_current(self, conn: Any, workflow_id: str, version: int, now: Any) -> None:
        t = workflow_definitions
        definition = await conn.scalar(
            select(t.c.definition).where(t.c.workflow_id == workflow_id, t.c.version == version)
        )
        await conn.execute(
            update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                status="Active",
                current_version=version,
                updated_at=now,
                retention=_retention(definition or {}),
            )
        )

    async def _require_version(self, conn: Any, workflow_id: str, version: int) -> None:
        t = workflow_definitions
        exists = (
            await conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.workflow_id == workflow_id, t.c.version == version)
            )
        ).scalar_one()
        if not exists:
            raise version_not_found(workflow_id, version)

    async def reseal_definition(
        self, workflow_id: str, version: int, definition: dict[str, Any]
    ) -> None:
        """Replace a version's stored definition by the same one with its secret
        parameters sealed anew (the only change a version ever gets; its checksum stays)."""
        t = workflow_definitions
        async with self.db.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.workflow_id == workflow_id, t.c.version == version)
                .values(definition=definition)
            )


def _camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(p.title() for p in rest)


def _retention(definition: dict[str, Any]) -> Any:
    """The definition's ``retention`` for the workflow row (SQL null when it has none)."""
    return definition.get("retention") or null()
