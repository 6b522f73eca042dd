"""The table partitioning needs (docs/partitioning.md).

A partitioned table's unique constraints must include its partition key, so the
partitioned ``workflow_executions`` (partitioned by run id) cannot keep its unique
``(workflow_id, request_id)``: this small plain table keeps that promise instead. It is
empty unless the PostgreSQL ledger is partitioned (``dataworkflows ledger partition
--enable``); then a trigger on ``workflow_executions`` fills it on every insert and skips
the run whose request id is taken, and the pruner deletes its rows with their runs.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base


class ExecutionRequest(Base):
    """Which run holds a (workflow, request id): the idempotency of a partitioned ledger."""

    __tablename__ = "execution_requests"
    __table_args__ = (Index(None, "execution_id"),)

    workflow_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(Uuid)


execution_requests = ExecutionRequest.__table__
