"""Alembic owns the schema: up → down → up works and the models match the migrations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from dataworkflows.db import migrate
from dataworkflows.db.database import sync_url
from dataworkflows.db.schema import metadata

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _diff(url: str) -> list[Any]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


async def test_upgrade_downgrade_upgrade_and_no_drift(database_url: str) -> None:
    # the fixture's database is already at head
    assert migrate.is_up_to_date(database_url)
    assert await asyncio.to_thread(_diff, database_url) == []
    assert {
        "workflows",
        "workflow_definitions",
        "workflow_executions",
        "action_executions",
        "execution_events",
    } <= _tables(database_url)

    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    assert _tables(database_url) == set()
    assert not migrate.is_up_to_date(database_url)

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert migrate.is_up_to_date(database_url)
    assert await asyncio.to_thread(_diff, database_url) == []


def test_migrations_ship_with_the_package() -> None:
    location = migrate.migrations_dir()
    assert (location / "env.py").is_file()
    assert list((location / "versions").glob("*.py"))


async def test_constraints_hold(kernel: Any, simple_echo: dict[str, Any]) -> None:
    """The seed plan's constraints are real database constraints, not just app checks."""
    import uuid

    from sqlalchemy import insert, text
    from sqlalchemy.exc import IntegrityError

    from dataworkflows.db.models import (
        action_executions,
        workflow_definitions,
        workflow_executions,
        workflows,
    )

    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    now = kernel.clock.now()
    db = kernel.db

    async def fails(stmt: Any) -> None:
        with pytest.raises(IntegrityError):
            async with db.begin() as conn:
                await conn.execute(stmt)

    await fails(
        insert(workflows).values(
            id="bad",
            display_name="x",
            status="Weird",
            latest_version=0,
            created_at=now,
            updated_at=now,
        )
    )
    # (workflow_id, checksum) unique
    row = {"workflow_id": "simple-echo", "definition": {}, "created_at": now}
    async with db.connect() as conn:
        checksum = (await conn.execute(text("SELECT checksum FROM workflow_definitions"))).scalar()
    await fails(insert(workflow_definitions).values(version=2, checksum=checksum, **row))
    # (workflow_id, request_id) unique
    run = {
        "workflow_id": "simple-echo",
        "workflow_version": 1,
        "request_id": "r1",
        "status": "Pending",
        "trigger": {},
        "tenant_id": "default",
        "created_at": now,
    }
    async with db.begin() as conn:
        await conn.execute(insert(workflow_executions).values(id=uuid.uuid4(), **run))
    await fails(insert(workflow_executions).values(id=uuid.uuid4(), **run))
    await fails(
        insert(workflow_executions).values(
            id=uuid.uuid4(), **{**run, "request_id": "r2", "status": "Done"}
        )
    )
    # an execution must reference an existing definition version
    await fails(
        insert(workflow_executions).values(
            id=uuid.uuid4(), **{**run, "request_id": "r3", "workflow_version": 9}
        )
    )

    # action executions cascade with their execution
    exec_id = uuid.uuid4()
    async with db.begin() as conn:
        await conn.execute(
            insert(workflow_executions).values(id=exec_id, **{**run, "request_id": "r4"})
        )
        await conn.execute(
            insert(action_executions).values(
                id=uuid.uuid4(),
                execution_id=exec_id,
                node_id="n",
                action_type="core.echo",
                attempt=1,
                status="Succeeded",
            )
        )
    await fails(
        insert(action_executions).values(
            id=uuid.uuid4(),
            execution_id=exec_id,
            node_id="n",
            action_type="core.echo",
            attempt=1,
            status="Bogus",
        )
    )
    async with db.begin() as conn:
        await conn.execute(workflow_executions.delete().where(workflow_executions.c.id == exec_id))
    async with db.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM action_executions"))).scalar()
    assert left == 0


async def test_kernel_refuses_an_out_of_date_schema_unless_told_to_migrate(
    database_url: str,
) -> None:
    from dataworkflows.kernel import Kernel, SchemaOutOfDate
    from dataworkflows.settings import Settings

    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    kernel = Kernel(Settings(database_url=database_url, auto_migrate=False), entrypoints=False)
    try:
        with pytest.raises(SchemaOutOfDate, match="dataworkflows db upgrade"):
            await kernel.start()
    finally:
        await kernel.close()
    kernel = Kernel(Settings(database_url=database_url, auto_migrate=True), entrypoints=False)
    try:
        await kernel.start()
        assert migrate.is_up_to_date(database_url)
    finally:
        await kernel.close()


def test_the_history_has_one_head() -> None:
    """Feature branches are merged: `db upgrade` and `db current` speak of one revision."""
    assert len(migrate.head_revisions()) == 1
