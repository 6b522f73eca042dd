"""Converting the PostgreSQL ledger to time partitions and back (docs/partitioning.md).

``enable`` turns ``workflow_executions`` (by ``id``), ``action_executions`` and
``execution_events`` (by ``execution_id``) into tables partitioned by range of the run id
(a UUIDv7, so a range of ids is a range of time). The existing tables become the three
*default* partitions as they are, with no copy: rows written before (random version-4
ids) stay there and are pruned by batched deletes; runs queued from then on land in the
time partitions. ``disable`` copies everything back into plain tables (the schema of
the migrations' head); migration 0020's downgrade runs it.

What a partitioned table cannot keep, and what replaces it:

* the unique ``(workflow_id, request_id)`` of runs → the ``execution_requests`` table,
  filled and checked by a BEFORE INSERT trigger (a taken request id skips the row, as
  ``ON CONFLICT DO NOTHING`` did);
* the foreign keys from attempts and events to their run → none: they are partitioned by
  the same key and ranges, a run's rows live in partitions of the same range and go
  with it (the pruner deletes children first, the engine writes them only for runs it
  holds). Foreign keys from the other tables (dead letters, run variables, resource
  links) stay.

Both run in one transaction on a synchronous connection (``AsyncConnection.run_sync``
from the CLI, the migration's own connection in Alembic) and lock the three tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import UniqueConstraint, text
from sqlalchemy.schema import CreateIndex, CreateTable

from dataworkflows.db.models import action_executions, execution_events, workflow_executions

#: the partitioned tables and their partition key, parent first
PARTITIONED = (
    (workflow_executions, "id"),
    (action_executions, "execution_id"),
    (execution_events, "execution_id"),
)
#: the trigger that keeps request ids unique on a partitioned ledger
REQUEST_TRIGGER = "workflow_executions_request"
_EVENT_SEQUENCE = "execution_events_id_seq"
_REQUEST_INDEX = "ix_workflow_executions__workflow_id_request_id"


class PartitioningError(Exception):
    """The ledger cannot be converted as asked (already so, or not PostgreSQL)."""


def is_partitioned(conn: Any) -> bool:
    """Whether ``workflow_executions`` is a partitioned table (False on SQLite)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table"
            " WHERE partrelid = to_regclass('workflow_executions'))"
        )
    )
    return bool(found.scalar())


def enable(conn: Any) -> None:
    """Partition the three tables by run id; the old tables become the default partitions.

    Creates no time partition: :func:`dataworkflows.ledger.partitions.create_partitions`
    does (the CLI calls it right after)."""
    _require_postgresql(conn)
    if is_partitioned(conn):
        raise PartitioningError("the ledger is already partitioned")
    _lock(conn)
    side = _drop_side_foreign_keys(conn)
    triggers = _drop_triggers(conn)
    for table, _key in PARTITIONED[1:]:
        for name in _names(conn, _FKS_TO_RUNS, table.name):
            _run(conn, f'ALTER TABLE {table.name} DROP CONSTRAINT "{name}"')
    for table, key in PARTITIONED:
        _rename_with_indexes(conn, table.name, f"{table.name}_default")
        _run(
            conn,
            f"CREATE TABLE {table.name} (LIKE {table.name}_default"
            f" INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE ({key})",
        )
        # the old key first (lookups by it alone still use the index), then the partition key
        primary = ", ".join(dict.fromkeys([*table.primary_key.columns.keys(), key]))
        if primary != ", ".join(table.primary_key.columns.keys()):  # built again on attach
            _run(conn, f"ALTER TABLE {table.name}_default DROP CONSTRAINT pk_{table.name}_default")
        _run(
            conn, f"ALTER TABLE {table.name} ADD CONSTRAINT pk_{table.name} PRIMARY KEY ({primary})"
        )
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint) and key in constraint.columns.keys():
                columns = ", ".join(constraint.columns.keys())
                _run(
                    conn,
                    f"ALTER TABLE {table.name} ADD CONSTRAINT {constraint.name} UNIQUE ({columns})",
                )
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(CreateIndex(index))
        _run(conn, f"ALTER TABLE {table.name} ATTACH PARTITION {table.name}_default DEFAULT")
        # the old table's other foreign keys (to workflow definitions), now the parent's
        # (not AddConstraint: it would leave the model's constraint out of a later CREATE)
        others = conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE contype = 'f' AND conrelid = to_regclass(:table)"
                " AND confrelid <> to_regclass('workflow_executions') ORDER BY 1"
            ),
            {"table": f"{table.name}_default"},
        ).all()
        for name, definition in others:
            _run(conn, f'ALTER TABLE {table.name} ADD CONSTRAINT "{name}" {definition}')
    # the request-id lookup of a repeated enqueue (unique through execution_requests)
    _run(conn, f"CREATE INDEX {_REQUEST_INDEX} ON workflow_executions (workflow_id, request_id)")
    _run(conn, f"ALTER SEQUENCE {_EVENT_SEQUENCE} OWNED BY execution_events.id")
    _restore(conn, triggers + side)
    _run(conn, "DELETE FROM execution_requests")
    _run(
        conn,
        "INSERT INTO execution_requests (workflow_id, request_id, execution_id)"
        " SELECT workflow_id, request_id, id FROM workflow_executions",
    )
    _run(
        conn,
        f"CREATE TRIGGER {REQUEST_TRIGGER} BEFORE INSERT ON workflow_executions"
        " FOR EACH ROW EXECUTE FUNCTION dataworkflows_execution_request()",
    )


def disable(conn: Any) -> None:
    """Copy the partitioned tables back into plain ones (as the migrations create them)."""
    _require_postgresql(conn)
    if not is_partitioned(conn):
        raise PartitioningError("the ledger is not partitioned")
    _lock(conn)
    side = _drop_side_foreign_keys(conn)
    _run(conn, f"DROP TRIGGER IF EXISTS {REQUEST_TRIGGER} ON workflow_executions")
    triggers = _drop_triggers(conn)
    _run(conn, f"ALTER SEQUENCE {_EVENT_SEQUENCE} RENAME TO {_EVENT_SEQUENCE}_partitioned")
    for table, _key in PARTITIONED:
        _rename_with_indexes(conn, table.name, f"{table.name}_partitioned")
    for table, _key in PARTITIONED:
        conn.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(CreateIndex(index))
        columns = ", ".join(table.columns.keys())
        _run(
            conn,
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.name}_partitioned",
        )
    _run(
        conn,
        f"SELECT setval('{_EVENT_SEQUENCE}',"
        " COALESCE((SELECT max(id) FROM execution_events), 0) + 1, false)",
    )
    for table, _key in reversed(PARTITIONED):
        _run(conn, f"DROP TABLE {table.name}_partitioned")
    _restore(conn, triggers + side)
    _run(conn, "DELETE FROM execution_requests")


# -- catalog helpers ----------------------------------------------------------------------

_FKS_TO_RUNS = """
SELECT c.conname FROM pg_constraint c
WHERE c.contype = 'f' AND c.conrelid = to_regclass(:table)
  AND c.confrelid = to_regclass('workflow_executions')
"""


def _require_postgresql(conn: Any) -> None:
    if conn.dialect.name != "postgresql":
        raise PartitioningError("partitioning is for PostgreSQL; SQLite keeps batched deletes")


def _lock(conn: Any) -> None:
    names = ", ".join(t.name for t, _ in PARTITIONED)
    _run(conn, f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")


def _run(conn: Any, sql: str) -> None:
    conn.exec_driver_sql(sql)


def _names(conn: Any, sql: str, table: str) -> list[str]:
    return [row[0] for row in conn.execute(text(sql), {"table": table})]


def _drop_side_foreign_keys(conn: Any) -> list[str]:
    """Drop the foreign keys of the other tables that reference runs; their re-creating
    statements (they are added back to the new ``workflow_executions``)."""
    rows = conn.execute(
        text(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c WHERE c.contype = 'f'"
            " AND c.confrelid = to_regclass('workflow_executions')"
            " AND c.conrelid NOT IN (SELECT to_regclass(n) FROM unnest(CAST(:mine AS text[])) n)"
            " AND c.conparentid = 0 ORDER BY 1, 2"
        ),
        {"mine": [t.name for t, _ in PARTITIONED]},
    ).all()
    restore = []
    for table, name, definition in rows:
        _run(conn, f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    return restore


def _drop_triggers(conn: Any) -> list[str]:
    """Drop the user triggers of the three tables; their CREATE statements."""
    rows = conn.execute(
        text(
            "SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgname <> :mine"
            " AND t.tgrelid IN (SELECT to_regclass(n) FROM unnest(CAST(:tables AS text[])) n)"
            " ORDER BY 1, 2"
        ),
        {"mine": REQUEST_TRIGGER, "tables": [t.name for t, _ in PARTITIONED]},
    ).all()
    for table, name, _definition in rows:
        _run(conn, f'DROP TRIGGER "{name}" ON {table}')
    return [definition for _table, _name, definition in rows]


def _restore(conn: Any, statements: list[str]) -> None:
    for statement in statements:
        _run(conn, statement)


def _rename_with_indexes(conn: Any, table: str, new: str) -> None:
    """Rename ``table`` and its indexes and constraints (``<name>`` → ``<name>_<suffix>``),
    freeing the names for the table that takes its place."""
    suffix = new[len(table) :]
    constraints = _names(
        conn,
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:table)"
        " AND contype IN ('p', 'u') ORDER BY 1",
        table,
    )
    for name in constraints:
        _run(conn, f'ALTER TABLE {table} RENAME CONSTRAINT "{name}" TO "{name}{suffix}"')
    indexes = _names(
        conn,
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(:table) ORDER BY 1",
        table,
    )
    for name in indexes:
        if not name.endswith(suffix):
            _run(conn, f'ALTER INDEX "{name}" RENAME TO "{name}{suffix}"')
    _run(conn, f"ALTER TABLE {table} RENAME TO {new}")
