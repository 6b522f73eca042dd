"""The workflow audit log: who changed what, when, and why.

Every create, new version, publish, archive, rollback and metadata change appends one row
to ``workflow_audit_log`` *in the transaction of the change* (:func:`write_audit`), so the
trail can neither miss a change nor record one that was rolled back. Rows are never
updated or deleted (except with their workflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from dataworkflows.common.clock import iso_utc
from dataworkflows.common.errors import Unprocessable
from dataworkflows.db.lifecycle_models import workflow_audit_log

CREATE, VERSION, PUBLISH, ARCHIVE, ROLLBACK, UPDATE = (
    "CREATE",
    "VERSION",
    "PUBLISH",
    "ARCHIVE",
    "ROLLBACK",
    "UPDATE",
)
MAX_NOTE = 1000


@dataclass(frozen=True)
class AuditContext:
    """Who asks for a change and why: the request's principal, note and correlation id."""

    actor: str | None = None
    note: str | None = None
    correlation_id: str | None = None


def check_note(note: Any, path: str = "$.note") -> str | None:
    """A note must be a string of at most :data:`MAX_NOTE` characters (None: no note)."""
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise Unprocessable(
            f"note must be a string of at most {MAX_NOTE} characters",
            code="invalid_request",
            details={"path": path},
        )
    return note or None


async def write_audit(
    conn: Any,
    *,
    tenant_id: str,
    workflow_id: str,
    action: str,
    version: int | None,
    diff: dict[str, Any] | None,
    audit: AuditContext,
    now: datetime,
) -> None:
    """Append one audit row inside the caller's (writing) transaction."""
    await conn.execute(
        workflow_audit_log.insert().values(
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            version=version,
            action=action,
            actor=audit.actor,
            diff=diff,
            note=audit.note,
            correlation_id=audit.correlation_id,
            created_at=now,
        )
    )


async def published_versions(conn: Any, workflow_id: str) -> list[int]:
    """Versions that were ever made current (publish, rollback, create with autoActivate),
    oldest first."""
    t = workflow_audit_log
    rows = await conn.execute(
        select(t.c.version)
        .where(
            t.c.workflow_id == workflow_id,
            t.c.action.in_((PUBLISH, ROLLBACK)),
            t.c.version.is_not(None),
        )
        .order_by(t.c.id)
    )
    return [r.version for r in rows]


def definition_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A short summary of how definition ``new`` differs from ``old``.

    ``{"changedFields": [...top-level keys...], "nodesAdded": [...], "nodesRemoved": [...],
    "nodesChanged": [...]}`` (node ids); against no previous definition, the node count.
    """
    new_nodes = _nodes(new)
    if old is None:
        return {"nodes": len(new_nodes)}
    old_nodes = _nodes(old)
    keys = (set(old) | set(new)) - {"nodes"}
    return {
        "changedFields": sorted(k for k in keys if old.get(k) != new.get(k)),
        "nodesAdded": [n for n in new_nodes if n not in old_nodes],
        "nodesRemoved": [n for n in old_nodes if n not in new_nodes],
        "nodesChanged": [n for n in new_nodes if n in old_nodes and new_nodes[n] != old_nodes[n]],
    }


def _nodes(definition: dict[str, Any]) -> dict[str, Any]:
    nodes = definition.get("nodes")
    if not isinstance(nodes, list):
        return {}
    return {str(n.get("id")): n for n in nodes if isinstance(n, dict)}


def audit_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workflowId": row["workflow_id"],
        "version": row["version"],
        "action": row["action"],
        "actor": row["actor"],
        "note": row["note"],
        "diff": row["diff"],
        "correlationId": row["correlation_id"],
        "createdAt": iso_utc(row["created_at"]),
    }
