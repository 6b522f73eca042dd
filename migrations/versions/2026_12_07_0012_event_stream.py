"""event stream: commit-ordered cursor and a NOTIFY per transaction that writes events

``commit_xid``: the writing transaction's id, filled by every INSERT of the kernel
(``dataworkflows.db.commit_order.current_xid``); 0 for the rows already there, which are
all committed, so they sort before every new one. ``(commit_xid, id)`` is indexed: the
live stream reads in that order (docs/observability.md, "Live stream").

PostgreSQL: a statement-level trigger NOTIFYs ``dataworkflows_events`` when events are
inserted while some API process streams events (a row of ``event_stream_watchers`` whose
``until`` has not passed; it renews it while its streams are open). PostgreSQL folds
identical notifications of one transaction into one, so a batch of step writes (group
commit) sends one NOTIFY, delivered when it commits, with no extra round trip for the
writer. With no stream open anywhere nothing is sent: every NOTIFY makes each listening
connection of the database (workers, schedulers) read the queue in a transaction of its own.

Revision ID: 0012_event_stream
Revises: 0011_trace_context
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_event_stream"
down_revision: str | Sequence[str] | None = "0011_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the channel of dataworkflows.ledger.records.EVENTS_CHANNEL (kept literal: migrations
#: must not change when the code does)
_CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION dataworkflows_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM event_stream_watchers WHERE until > now()) THEN
        PERFORM pg_notify('dataworkflows_events', '');
    END IF;
    RETURN NULL;
END;
$$
"""
_CREATE_TRIGGER = """
CREATE TRIGGER execution_events_notify
AFTER INSERT ON execution_events
FOR EACH STATEMENT EXECUTE FUNCTION dataworkflows_events_notify()
"""


def upgrade() -> None:
    op.create_table(
        "event_stream_watchers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_stream_watchers")),
    )
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("commit_xid", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            batch_op.f("ix_execution_events__commit_xid_id"), ["commit_xid", "id"], unique=False
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE_FUNCTION)
        op.execute(_CREATE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS execution_events_notify ON execution_events")
        op.execute("DROP FUNCTION IF EXISTS dataworkflows_events_notify()")
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_execution_events__commit_xid_id"))
        batch_op.drop_column("commit_xid")
    op.drop_table("event_stream_watchers")
