"""The database handle: write transactions stay atomic whatever reads did before them,
and SQLite connections carry the durability the settings ask for."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from dataworkflows.db.database import Database
from dataworkflows.settings import Settings, SettingsError
from dataworkflows.testing import postgres_only

_XID = text("SELECT pg_current_xact_id()::text")


@postgres_only
async def test_reads_autocommit_and_writes_after_them_are_one_transaction(database_url):
    db = Database(database_url, pool_size=1)  # one connection: the read's is the write's
    try:
        async with db.connect() as conn:
            first = (await conn.execute(_XID)).scalar_one()
            second = (await conn.execute(_XID)).scalar_one()
            read_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert first != second  # each read statement is its own transaction
        async with db.begin() as conn:
            write_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            first = (await conn.execute(_XID)).scalar_one()
            second = (await conn.execute(_XID)).scalar_one()
        assert write_pid == read_pid  # the same pooled connection
        assert first == second  # no autocommit leaked from the read: one transaction
    finally:
        await db.dispose()


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _synchronous(db: Database) -> tuple[int, int]:
    """``PRAGMA synchronous`` on a read connection and inside a write transaction."""
    async with db.connect() as conn:
        read = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
    async with db.begin() as conn:
        write = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
    return read, write


@sqlite_only
@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 2), ({"DATAWORKFLOWS_SQLITE_SYNCHRONOUS": "normal"}, 1)],
    ids=["default-FULL", "NORMAL"],
)
async def test_sqlite_synchronous_is_in_force_on_live_connections(
    database_url: str, kernel_factory: Any, environ: dict[str, str], expected: int
) -> None:
    """FULL (2) by default, so a commit that returned survives a power loss; NORMAL (1)
    when asked for through the setting. Checked on the kernel's own connections."""
    settings = Settings.from_env(environ)
    kernel = await kernel_factory(sqlite_synchronous=settings.sqlite_synchronous)
    assert await _synchronous(kernel.db) == (expected, expected)


def test_sqlite_synchronous_setting_is_checked() -> None:
    assert Settings.from_env({}).sqlite_synchronous == "FULL"
    normal = Settings.from_env({"DATAWORKFLOWS_SQLITE_SYNCHRONOUS": " Normal "})
    assert normal.sqlite_synchronous == "NORMAL"
    with pytest.raises(SettingsError, match="DATAWORKFLOWS_SQLITE_SYNCHRONOUS"):
        Settings.from_env({"DATAWORKFLOWS_SQLITE_SYNCHRONOUS": "OFF"})


async def test_a_non_durable_transaction_skips_the_flush_for_itself_only(
    database_url: str, kernel_factory: Any
) -> None:
    """``begin(durable=False)`` (the scheduler's leases) commits without waiting for the
    disk; the connection is back to the durable setting for the next transaction."""
    kernel = await kernel_factory()
    db: Database = kernel.db
    if db.is_sqlite:
        show, durable, volatile = text("PRAGMA synchronous"), 2, 1
    else:
        show, durable, volatile = text("SHOW synchronous_commit"), "on", "off"
    async with db.begin(durable=False) as conn:
        assert (await conn.execute(show)).scalar_one() == volatile
        await conn.execute(text("CREATE TABLE volatile_probe (x INTEGER)"))
    async with db.begin() as conn:
        assert (await conn.execute(show)).scalar_one() == durable
        await conn.execute(text("INSERT INTO volatile_probe VALUES (1)"))  # committed above
    async with db.connect() as conn:
        assert (await conn.execute(show)).scalar_one() == durable


def test_a_renamed_setting_warns_instead_of_doing_nothing_silently(caplog) -> None:
    from dataworkflows.settings import Settings

    with caplog.at_level("WARNING", logger="dataworkflows.settings"):
        settings = Settings.from_env({"DATAWORKFLOWS_SCHEDULER_INTERVAL": "5"})
    assert "DATAWORKFLOWS_SCHEDULER_INTERVAL is no longer read: use " in caplog.text
    assert "DATAWORKFLOWS_SCHEDULER_MAX_SLEEP" in caplog.text
    assert "scheduler_interval" not in settings.extra  # not handed to plugins either
