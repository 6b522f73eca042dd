"""Reading workflows: a tenant's workflows, their versions and definitions, and their
audit log (docs/api.md). :class:`~dataworkflows.service.store.WorkflowStore` extends
:class:`WorkflowReads` with the lifecycle writes. Every read is scoped to a tenant:
another tenant's workflow is "not found" (``stored_definitions`` alone, for re-encryption,
sees every tenant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, or_, select

from dataworkflows.common.clock import Clock
from dataworkflows.common.errors import NotFound
from dataworkflows.db.database import Database
from dataworkflows.db.lifecycle_models import workflow_audit_log
from dataworkflows.db.models import workflow_definitions, workflows

#: ids of kernel-owned workflows (:mod:`dataworkflows.service.commands`) start with it; no
#: user workflow id can (``ID_PATTERN``), and lists leave them out
KERNEL_OWNED_PREFIX = "~"


def workflow_not_found(workflow_id: str) -> NotFound:
    return NotFound(f"no workflow {workflow_id!r}", code="workflow_not_found")


def version_not_found(workflow_id: str, version: int) -> NotFound:
    return NotFound(f"workflow {workflow_id!r} has no version {version}", code="version_not_found")


class WorkflowReads:
    """The read side of the workflow store."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        #: decrypts the secret parameters of a stored definition (set by the kernel; see
        #: :class:`dataworkflows.secrets.fields.DefinitionSecrets`)
        self.open_definition: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    async def _row(
        self, conn: Any, workflow_id: str, tenant_id: str, *, lock: bool = False
    ) -> dict[str, Any]:
        """The workflow's row (404 when the tenant has none); ``lock``: FOR UPDATE, for
        a lifecycle change (SQLite serialises writers anyway)."""
        stmt = select(workflows).where(
            workflows.c.id == workflow_id, workflows.c.tenant_id == tenant_id
        )
        if lock and not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).one_or_none()
        if row is None:
            raise workflow_not_found(workflow_id)
        return dict(row._mapping)

    async def get(self, workflow_id: str, tenant_id: str) -> dict[str, Any]:
        async with self.db.connect() as conn:
            return await self._row(conn, workflow_id, tenant_id)

    async def list(
        self,
        tenant_id: str,
        limit: int = 100,
        *,
        after: str | None = None,
        status: str | None = None,
        text: str | None = None,
    ) -> list[dict[str, Any]]:
        """The tenant's workflows ordered by id, after the id ``after``; ``status`` filters
        exactly, ``text`` is a case-insensitive substring of the id or the display name."""
        t = workflows
        stmt = select(t).where(
            t.c.tenant_id == tenant_id, t.c.id.not_like(f"{KERNEL_OWNED_PREFIX}%")
        )
        if after is not None:
            stmt = stmt.where(t.c.id > after)
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        if text:
            needle = text.lower()
            stmt = stmt.where(
                or_(
                    func.lower(t.c.id).contains(needle, autoescape=True),
                    func.lower(t.c.display_name).contains(needle, autoescape=True),
                )
            )
        async with self.db.connect() as conn:
            rows = await conn.execute(stmt.order_by(t.c.id).limit(limit))
        return [dict(r._mapping) for r in rows]

    async def version_with_checksum(self, workflow_id: str, checksum: str) -> int | None:
        """The version of ``workflow_id`` whose definition has this checksum, if any."""
        t = workflow_definitions
        statement = select(t.c.version).where(
            t.c.workflow_id == workflow_id, t.c.checksum == checksum
        )

        async def query(conn: Any) -> int | None:
            return (await conn.execute(statement)).scalar_one_or_none()

        return await self.db.read(query)

    async def definition(
        self, workflow_id: str, version: int, *, opened: bool = True
    ) -> dict[str, Any]:
        """A version's definition: as the actions need it (secret parameters decrypted),
        or with ``opened=False`` as stored (secret parameters sealed)."""
        t = workflow_definitions
        statement = select(t.c.definition).where(
            t.c.workflow_id == workflow_id, t.c.version == version
        )

        async def query(conn: Any) -> Any:
            return (await conn.execute(statement)).one_or_none()

        row = await self.db.read(query, "loading a definition")
        if row is None:
            raise version_not_found(workflow_id, version)
        if opened and self.open_definition is not None:
            return self.open_definition(dict(row.definition))
        return dict(row.definition)

    async def stored_definitions(self) -> list[dict[str, Any]]:
        """Every version's ``workflow_id``, ``version`` and stored ``definition`` (for
        re-encrypting secret parameters; every tenant)."""
        t = workflow_definitions
        async with self.db.connect() as conn:
            rows = await conn.execute(select(t.c.workflow_id, t.c.version, t.c.definition))
            return [dict(r._mapping) for r in rows]

    async def versions(
        self, workflow_id: str, tenant_id: str, *, after: int | None = None, limit: int = 100
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the workflow row, its versions without definitions, oldest first)."""
        t = workflow_definitions
        async with self.db.connect() as conn:
            row = await self._row(conn, workflow_id, tenant_id)
            stmt = select(t.c.version, t.c.checksum, t.c.created_at, t.c.created_by).where(
                t.c.workflow_id == workflow_id
            )
            if after is not None:
                stmt = stmt.where(t.c.version > after)
            rows = await conn.execute(stmt.order_by(t.c.version).limit(limit))
            return row, [dict(r._mapping) for r in rows]

    async def version(
        self, workflow_id: str, tenant_id: str, version: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the workflow row, one version with its definition)."""
        t = workflow_definitions
        async with self.db.connect() as conn:
            row = await self._row(conn, workflow_id, tenant_id)
            found = (
                await conn.execute(
                    select(t).where(t.c.workflow_id == workflow_id, t.c.version == version)
                )
            ).one_or_none()
        if found is None:
            raise version_not_found(workflow_id, version)
        return row, dict(found._mapping)

    async def audit_log(
        self, workflow_id: str, tenant_id: str, *, before: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The workflow's audit rows, newest first, with ids below ``before``."""
        t = workflow_audit_log
        async with self.db.connect() as conn:
            await self._row(conn, workflow_id, tenant_id)
            stmt = select(t).where(t.c.tenant_id == tenant_id, t.c.workflow_id == workflow_id)
            if before is not None:
                stmt = stmt.where(t.c.id < before)
            rows = await conn.execute(stmt.order_by(t.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]
