"""subworkflows: the run tree (parent, root, depth) and the Waiting statuses

Revision ID: 0018_subworkflows
Revises: 0017_rate_limits_fair_claims
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_subworkflows"
down_revision: str | Sequence[str] | None = "0017_rate_limits_fair_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUN_OLD = ("Pending", "Running", "Succeeded", "Failed", "Cancelled")
_RUN_NEW = ("Pending", "Running", "Waiting", "Succeeded", "Failed", "Cancelled")
_STEP_OLD = (
    "Running",
    "Succeeded",
    "Failed",
    "RetriableFailure",
    "TimedOut",
    "Skipped",
    "Cancelled",
)
_STEP_NEW = ("Running", "Waiting", *_STEP_OLD[1:])


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_execution_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("parent_node_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("root_execution_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("wakes_parent", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("child_wakeups", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_executions__parent_execution_id"),
            ["parent_execution_id"],
            unique=False,
        )
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint("status", _in(_RUN_NEW))
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint("status", _in(_STEP_NEW))


def downgrade() -> None:
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint("status", _in(_STEP_OLD))
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint("status", _in(_RUN_OLD))
        batch_op.drop_index(batch_op.f("ix_workflow_executions__parent_execution_id"))
        batch_op.drop_column("child_wakeups")
        batch_op.drop_column("wakes_parent")
        batch_op.drop_column("depth")
        batch_op.drop_column("root_execution_id")
        batch_op.drop_column("parent_node_id")
        batch_op.drop_column("parent_execution_id")
