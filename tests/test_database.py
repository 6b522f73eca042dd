"""The database handle: write transactions stay atomic whatever reads did before them."""

from __future__ import annotations

from sqlalchemy import text

from dataworkflows.db.database import Database
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
