"""partition ledger: what opt-in time partitioning of the PostgreSQL ledger needs

The ``execution_requests`` table (on both backends; empty unless partitioned) and, on
PostgreSQL, the trigger function that keeps request ids unique through it. Partitioning
itself is switched on by ``dataworkflows ledger partition --enable`` (it locks and
converts the three ledger tables: an operator's decision, not a migration's); the
downgrade converts a partitioned ledger back first. See docs/partitioning.md.

Revision ID: 0020_partition_ledger
Revises: 0019_templates
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_partition_ledger"
down_revision: str | Sequence[str] | None = "0019_templates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: kept literal (migrations must not change when the code does)
_CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION dataworkflows_execution_request() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution_requests (workflow_id, request_id, execution_id)
    VALUES (NEW.workflow_id, NEW.request_id, NEW.id)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;  -- the request id is taken: skip the run, as ON CONFLICT DO NOTHING
    END IF;
    RETURN NEW;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "execution_requests",
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "request_id", name=op.f("pk_execution_requests")),
    )
    op.create_index(
        op.f("ix_execution_requests__execution_id"),
        "execution_requests",
        ["execution_id"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE_FUNCTION)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from dataworkflows.ledger import partition_layout

        if partition_layout.is_partitioned(bind):
            partition_layout.disable(bind)
        op.execute("DROP FUNCTION IF EXISTS dataworkflows_execution_request()")
    op.drop_index(op.f("ix_execution_requests__execution_id"), table_name="execution_requests")
    op.drop_table("execution_requests")
