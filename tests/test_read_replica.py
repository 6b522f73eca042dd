"""``DATAWORKFLOWS_READ_DATABASE_URL``: the API's and console's history reads go to a
read replica; the engine's own reads and every write stay on the primary.

The "replica" here is a copy of the primary made at one moment (``CREATE DATABASE …
TEMPLATE``): a replica that stopped replaying there. What the copy lacks proves which
database answered — a run created after the copy is unknown to the history routes, while
the engine, which reads the primary, runs it to the end and the run routes that write
(cancel) still find it.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dataworkflows.db.database import Database, DatabaseURLError, libpq_url
from dataworkflows.settings import Settings, SettingsError
from dataworkflows.testing import postgres_only


def _copy_database(url: str) -> str:
    """A copy of ``url``'s database, as of now (no connection may be open to it)."""
    parsed = make_url(url)
    name = f"{parsed.database}_replica"
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(admin)) as conn:
        conn.autocommit = True
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(admin)) as conn:
        conn.autocommit = True
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


@postgres_only
async def test_history_reads_come_from_the_replica_and_the_engine_reads_the_primary(
    database_url: str, kernel_factory: Any, api_factory: Any, simple_echo: dict[str, Any]
) -> None:
    # the first run ends on the primary before the copy is taken
    primary = await kernel_factory()
    await primary.service.apply(simple_echo)
    first, _ = await primary.service.execute(simple_echo["id"], trigger={})
    primary.start_worker()
    await primary.ledger.wait_until_final(uuid.UUID(first["executionId"]), 30)
    await primary.close()
    replica_url = _copy_database(database_url)
    try:
        kernel = await kernel_factory(read_database_url=replica_url)
        assert kernel.db.has_replica
        api = await api_factory(kernel)
        second, _ = await kernel.service.execute(simple_echo["id"], trigger={})
        kernel.start_worker()
        # the engine decides on the primary: the run made after the copy runs to its end
        final = await kernel.ledger.wait_until_final(uuid.UUID(second["executionId"]), 30)
        assert final == "Succeeded"

        old = await api.get(f"/api/v1/executions/{first['executionId']}")
        assert old.status == 200 and (await old.json())["status"] == "Succeeded"
        for path in ("", "/events", "/logs", "/variables", "/children"):
            new = await api.get(f"/api/v1/executions/{second['executionId']}{path}")
            assert new.status == 404, (path, await new.text())
        listed = await (await api.get("/api/v1/executions")).json()
        assert [run["id"] for run in listed["items"]] == [first["executionId"]]
        # internal callers (the CLI after waiting for a run) read the primary
        view = await kernel.service.get_execution(second["executionId"])
        assert view["status"] == "Succeeded"
        # a write finds the run on the primary (it has ended: 409, not 404)
        cancel = await api.post(f"/api/v1/executions/{second['executionId']}/cancel")
        assert cancel.status == 409, await cancel.text()
        await kernel.close()
    finally:
        _drop_database(replica_url)


def test_a_replica_is_refused_on_sqlite() -> None:
    with pytest.raises(SettingsError, match="READ_DATABASE_URL"):
        Settings(database_url="sqlite:///x.db", read_database_url="postgresql://h/db")
    with pytest.raises(SettingsError, match="READ_DATABASE_URL"):
        Settings(database_url="postgresql://h/db", read_database_url="sqlite:///x.db")
    with pytest.raises(DatabaseURLError):
        Database("sqlite:///x.db", replica_url="postgresql://h/db")
    env = {"DATAWORKFLOWS_READ_DATABASE_URL": "postgresql://h/replica"}
    settings = Settings.from_env({"DATAWORKFLOWS_DATABASE_URL": "postgresql://h/db", **env})
    assert settings.read_database_url == "postgresql://h/replica"


def test_prepared_statements_are_off_behind_a_pooler_unless_asked_for() -> None:
    """A separate LISTEN URL is the PgBouncer recipe (docs/scaling.md); PgBouncer < 1.21
    in transaction mode cannot keep server-side prepared statements."""
    direct = Settings(database_url="postgresql://h/db")
    assert direct.effective_pg_prepared_statements is True
    pooled = Settings(
        database_url="postgresql://h:6432/db", listen_database_url="postgresql://h:5432/db"
    )
    assert pooled.effective_pg_prepared_statements is False
    env = {
        "DATAWORKFLOWS_DATABASE_URL": "postgresql://h:6432/db",
        "DATAWORKFLOWS_LISTEN_DATABASE_URL": "postgresql://h:5432/db",
        "DATAWORKFLOWS_PG_PREPARED_STATEMENTS": "true",
    }
    assert Settings.from_env(env).effective_pg_prepared_statements is True
    off = Settings.from_env({"DATAWORKFLOWS_PG_PREPARED_STATEMENTS": "false"})
    assert off.effective_pg_prepared_statements is False
