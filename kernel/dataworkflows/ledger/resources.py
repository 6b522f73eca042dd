"""Resource links: what external objects steps created, and the lookup re-runs use.

An action returns :class:`~dataworkflows.ResourceLink` values with its successful result;
the ledger writes them in the same transaction as the step (:func:`insert_links`), one row
per workflow + system + type + external id (recording the same object again keeps the
first row). ``ctx.resources.find(system, type, key=...)`` looks them up for the workflow
of the run, so a re-run with the same input can return what an earlier run created
instead of creating it a second time. ``GET /api/v1/executions/{id}/resources`` lists the
links a run recorded.

Limits: two runs racing on the same input may both find nothing and both create; the
lookup prevents duplicates across re-runs and retries, not between concurrent runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from dataworkflows.actions import ResourceLink, Resources
from dataworkflows.db.connector_models import workflow_resource_links
from dataworkflows.db.database import Database

_LIMITS = {"system": 100, "type": 100, "external_id": 500, "key": 200}


def link_rows(
    links: Iterable[ResourceLink],
    *,
    workflow_id: str,
    tenant_id: str,
    execution_id: uuid.UUID | None,
    node_id: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """Rows for ``workflow_resource_links`` (over-long values are cut to the columns)."""
    rows = []
    for link in links:
        rows.append(
            {
                "id": uuid.uuid4(),
                "workflow_id": workflow_id,
                "tenant_id": tenant_id,
                "execution_id": execution_id,
                "node_id": node_id,
                "system": str(link.system)[: _LIMITS["system"]],
                "type": str(link.type)[: _LIMITS["type"]],
                "external_id": str(link.external_id)[: _LIMITS["external_id"]],
                "url": link.url,
                "key": None if link.key is None else str(link.key)[: _LIMITS["key"]],
                "created_at": now,
            }
        )
    return rows


async def insert_links(conn: Any, db: Database, rows: list[dict[str, Any]]) -> None:
    """Insert link rows in the caller's transaction; already-known objects are skipped."""
    if not rows:
        return
    stmt = (
        db.insert(workflow_resource_links)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["workflow_id", "system", "type", "external_id"])
    )
    await conn.execute(stmt)


def link_view(row: dict[str, Any]) -> dict[str, Any]:
    """The API shape of a stored link."""
    created = row["created_at"]
    return {
        "system": row["system"],
        "type": row["type"],
        "externalId": row["external_id"],
        "url": row["url"],
        "key": row["key"],
        "workflowId": row["workflow_id"],
        "executionId": str(row["execution_id"]) if row["execution_id"] else None,
        "nodeId": row["node_id"],
        "createdAt": created.isoformat().replace("+00:00", "Z") if created else None,
    }


class ResourceStore:
    """Reads of ``workflow_resource_links`` (writes go through the ledger)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def for_workflow(self, workflow_id: str) -> RunResources:
        """``ctx.resources`` for an attempt of a run of ``workflow_id``."""
        return RunResources(self, workflow_id)

    async def find(
        self,
        workflow_id: str,
        system: str,
        type: str,
        *,
        key: str | None = None,
        external_id: str | None = None,
    ) -> ResourceLink | None:
        if key is None and external_id is None:
            raise ValueError("find() needs a key or an external_id")
        t = workflow_resource_links
        query = select(t).where(
            t.c.workflow_id == workflow_id, t.c.system == system, t.c.type == type
        )
        if key is not None:
            query = query.where(t.c.key == key)
        if external_id is not None:
            query = query.where(t.c.external_id == external_id)
        query = query.order_by(t.c.created_at.desc(), t.c.id).limit(1)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        return ResourceLink(row.system, row.type, row.external_id, row.url, row.key)

    async def list_for_execution(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        t = workflow_resource_links
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(t)
                .where(t.c.execution_id == execution_id)
                .order_by(t.c.created_at, t.c.node_id, t.c.system, t.c.type, t.c.external_id)
            )
        return [dict(r._mapping) for r in rows]


class RunResources(Resources):
    """``ctx.resources``: lookups limited to the run's workflow."""

    def __init__(self, store: ResourceStore, workflow_id: str) -> None:
        self._store = store
        self.workflow_id = workflow_id

    async def find(
        self,
        system: str,
        type: str,
        *,
        key: str | None = None,
        external_id: str | None = None,
    ) -> ResourceLink | None:
        return await self._store.find(
            self.workflow_id, system, type, key=key, external_id=external_id
        )
