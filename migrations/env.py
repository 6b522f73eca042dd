"""Alembic environment for the DataWorkflows kernel.

Run through ``dataworkflows db upgrade`` (or ``dataworkflows.db.migrate``), which passes the
database URL in ``config.attributes["database_url"]`` — or a live connection in
``config.attributes["connection"]``. One history serves SQLite and PostgreSQL: batch mode
on SQLite, named constraints everywhere.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from dataworkflows.db.schema import metadata as target_metadata_all

config = context.config
target_metadata = target_metadata_all


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes.get("database_url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.attributes["database_url"], poolclass=pool.NullPool)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Batch mode rebuilds tables; foreign keys must not fire while it does.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
