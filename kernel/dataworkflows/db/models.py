"""The kernel's tables. Alembic owns the schema: every change here needs a migration
(``tests/test_migrations.py`` fails on drift).

Table names are snake_case plurals of the seed plan's tables (Workflows → ``workflows``,
ActionExecutions → ``action_executions``) so that PostgreSQL needs no quoting.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dataworkflows.db.commit_order import current_xid
from dataworkflows.db.types import BigIntKey, JSONType, UTCDateTime

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "ix": "ix_%(table_name)s__%(column_0_N_name)s",
    "uq": "uq_%(table_name)s__%(column_0_N_name)s",
    "ck": "ck_%(table_name)s__%(constraint_name)s",
    "fk": "fk_%(table_name)s__%(column_0_name)s__%(referred_table_name)s",
}

WORKFLOW_STATUSES = ("Draft", "Active", "Archived")
#: ``Waiting``: parked while a child run it waits on runs (no worker holds it; the child's
#: end makes it ``Pending`` again, see dataworkflows.ledger.children)
RUN_STATUSES = ("Pending", "Running", "Waiting", "Succeeded", "Failed", "Cancelled")
FINAL_RUN_STATUSES = ("Succeeded", "Failed", "Cancelled")
#: the rows of the fair-claim index: the queue (Pending) and runs under a lease (Running)
CLAIM_ORDER_WHERE = "status IN ('Pending', 'Running')"
STEP_STATUSES = (
    "Running",
    "Waiting",  # a subworkflow node waiting on its child run (outputs: childExecutionId)
    "Succeeded",
    "Failed",
    "RetriableFailure",
    "TimedOut",
    "Skipped",
    "Cancelled",
)

#: the stored types of run variables (dataworkflows.common.run_variables.TYPES)
RUN_VARIABLE_TYPES = ("string", "number", "boolean", "json")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime()}


class Workflow(Base):
    """A workflow: its identity and lifecycle state. Definitions are versioned apart."""

    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint(_in("status", WORKFLOW_STATUSES), name="status"),
        Index(None, "tenant_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(200), default="default")
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="Draft")
    #: the published version runs start from (None until first publish)
    current_version: Mapped[int | None] = mapped_column(Integer)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: the current version's ``retention`` (null: the engine's policy), for the pruner
    retention: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class WorkflowDefinition(Base):
    """One immutable version of a workflow's definition JSON."""

    __tablename__ = "workflow_definitions"
    __table_args__ = (UniqueConstraint("workflow_id", "checksum"),)

    workflow_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]]
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))


class WorkflowExecution(Base):
    """One run of a workflow, pinned to the version it started with."""

    __tablename__ = "workflow_executions"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        ForeignKeyConstraint(
            ["workflow_id", "workflow_version"],
            ["workflow_definitions.workflow_id", "workflow_definitions.version"],
            ondelete="RESTRICT",
        ),
        UniqueConstraint("workflow_id", "request_id"),
        Index("ix_workflow_executions__workflow_newest", "workflow_id", "created_at"),
        Index(None, "status", "created_at"),
        Index(None, "status", "lease_expires_at"),
        # fair claiming (ledger/statements.py claim_statement): the queue in tenant order
        Index(
            "ix_workflow_executions__claim_order",
            "tenant_id",
            "created_at",
            "id",
            # the window reads the claimable test from the index alone (index-only scan)
            postgresql_include=["status", "lease_expires_at"],
            postgresql_where=text(CLAIM_ORDER_WHERE),
            sqlite_where=text(CLAIM_ORDER_WHERE),
        ),
        Index(None, "parent_execution_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    workflow_version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[dict[str, Any]]
    error: Mapped[dict[str, Any] | None]
    tenant_id: Mapped[str] = mapped_column(String(200), default="default")
    principal: Mapped[str | None] = mapped_column(String(200))
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # -- the queue: who holds the run, until when, and under which fencing token ---------
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    #: increases on every claim; a write carrying an older token is rejected
    fencing_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: claims of a run whose previous owner's lease had expired
    recovery_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: a run of a version that was not published (``dataworkflows run`` without --publish)
    test_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: the W3C trace context of the request that queued the run (``{"traceparent",
    #: "tracestate"?}``), for tracing plugins in any process; null: none was given
    trace_context: Mapped[dict[str, Any] | None]
    # -- the run tree (subworkflows, dataworkflows.ledger.children) ------------------------
    #: the run whose node started this one, and that node (null: a top-level run)
    parent_execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    parent_node_id: Mapped[str | None] = mapped_column(String(200))
    #: the top-level run of the tree (null: this run is one)
    root_execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: 0 for a top-level run, parent's depth + 1 for a child
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the parent waits on this run: its end wakes the parent (``Waiting`` -> ``Pending``)
    wakes_parent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: how many waited-on children of this run have ended (the park check compares it)
    child_wakeups: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ActionExecution(Base):
    """One attempt of one node in one run."""

    __tablename__ = "action_executions"
    __table_args__ = (
        CheckConstraint(_in("status", STEP_STATUSES), name="status"),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        Index(None, "execution_id", "node_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflow_executions.id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(String(200))
    action_type: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20))
    parameters: Mapped[dict[str, Any] | None]
    outputs: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    #: what the action wrote to ``ctx.log`` in this attempt: ``[{time, level, message}]``
    #: (capped and redacted, see engine/step_logs.py); null when it wrote nothing
    logs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)


class ExecutionEvent(Base):
    """Append-only history of a run; ``sequence`` increases by one per run."""

    __tablename__ = "execution_events"
    __table_args__ = (
        UniqueConstraint("execution_id", "sequence"),
        Index(None, "commit_xid", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflow_executions.id", ondelete="CASCADE")
    )
    sequence: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    node_id: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    #: the writing transaction's id, set by every INSERT (0 on SQLite and for rows written
    #: before it existed): ``(commit_xid, id)`` is the commit-ordered cursor of the live
    #: stream (see dataworkflows.db.commit_order)
    commit_xid: Mapped[int] = mapped_column(BigInteger, default=current_xid(), server_default="0")


class DeadLetter(Base):
    """A run the engine gave up on (recovered too often); it can be requeued as a new run."""

    __tablename__ = "dead_letters"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflow_executions.id", ondelete="CASCADE"), unique=True
    )
    workflow_id: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str] = mapped_column(String(200), default="default")
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    requeued_at: Mapped[datetime | None]
    requeued_execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class RunVariable(Base):
    """A run variable an action set (``ctx.set_variable``); one row per run and key.

    Written with the step row of the attempt that set it (upsert by key); ``updated_at``
    is taken inside that write. See :mod:`dataworkflows.common.run_variables`.
    """

    __tablename__ = "run_variables"
    __table_args__ = (CheckConstraint(_in("type", RUN_VARIABLE_TYPES), name="type"),)

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflow_executions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    #: the value itself as JSON (a number stays a number)
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    #: the node and attempt that set it last
    node_id: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class EventStreamWatcher(Base):
    """An API process with live event streams open (PostgreSQL): while one is here and its
    ``until`` has not passed, inserting events NOTIFYs ``dataworkflows_events`` (the trigger
    of migration 0012); otherwise writers send no NOTIFY at all."""

    __tablename__ = "event_stream_watchers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime]


workflows = Workflow.__table__
workflow_definitions = WorkflowDefinition.__table__
workflow_executions = WorkflowExecution.__table__
action_executions = ActionExecution.__table__
execution_events = ExecutionEvent.__table__
dead_letters = DeadLetter.__table__
run_variables = RunVariable.__table__
event_stream_watchers = EventStreamWatcher.__table__
