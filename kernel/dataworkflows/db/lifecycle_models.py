"""Tables of the workflow lifecycle API (docs/api.md): the audit log and idempotency keys.

Also one extra index on ``workflow_executions`` — ``(tenant_id, created_at)`` — that the
tenant-wide execution list (``GET /api/v1/executions``, newest first) walks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base, workflow_executions
from dataworkflows.db.types import BigIntKey

AUDIT_ACTIONS = ("CREATE", "VERSION", "PUBLISH", "ARCHIVE", "ROLLBACK", "UPDATE")
IDEMPOTENCY_STATES = ("pending", "done")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class WorkflowAuditEntry(Base):
    """One change to a workflow, written in the transaction of the change (append-only).

    ``id`` increases with every row, so "newest first" is ``ORDER BY id DESC``.
    """

    __tablename__ = "workflow_audit_log"
    __table_args__ = (
        CheckConstraint(_in("action", AUDIT_ACTIONS), name="action"),
        Index(None, "tenant_id", "workflow_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("workflows.id", ondelete="CASCADE")
    )
    #: the version the change is about (the new, published or rolled-back-to version)
    version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    #: the ``X-Principal`` of the request (None: anonymous)
    actor: Mapped[str | None] = mapped_column(String(200))
    #: a short machine-readable summary of what changed
    diff: Mapped[dict[str, Any] | None]
    note: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a tenant used: reserved before the request runs, then the
    response to replay. The primary key makes concurrent duplicates collide in the database,
    across every server process."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint(_in("state", IDEMPOTENCY_STATES), name="state"),
        Index(None, "expires_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of method, path, query and canonical body
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10))
    #: identifies the request holding a pending reservation
    lock_token: Mapped[str] = mapped_column(String(64))
    #: a pending reservation older than this may be taken over (its server died)
    locked_until: Mapped[datetime]
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None]
    response_headers: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


# the tenant-wide execution list, newest first
Index(
    "ix_workflow_executions__tenant_id_created_at",
    workflow_executions.c.tenant_id,
    workflow_executions.c.created_at,
)

workflow_audit_log = WorkflowAuditEntry.__table__
idempotency_keys = IdempotencyKey.__table__
